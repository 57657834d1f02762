/* prunelm-shapes: writes the ShapesVQA benchmark (images + JSONL) or its long-context text
 * tasks. Exit codes: 0 done, 1 generation failed (I/O, memory), 2 bad command line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shapes.h"

static const char USAGE[] =
    "usage: prunelm-shapes --out DIR --split train|val|test [options]\n"
    "\n"
    "Writes a deterministic synthetic benchmark: the same split, seed base, count and options\n"
    "give the same pixels and JSONL on every machine (and the same PNG bytes with the same\n"
    "zlib). Items depend only on their own seed, so runs can be split with --seed-base.\n"
    "\n"
    "  --out DIR                  output directory (created if missing)\n"
    "  --split train|val|test     selects a disjoint seed range: item i of split s has seed\n"
    "                             s*1000000000000 + i (train 0, val 1, test 2)\n"
    "  --count N                  number of items (images or text prompts), default 100\n"
    "  --seed-base N              index of the first item, default 0\n"
    "  --task vqa|passkey|multikey|dialogue   default vqa\n"
    "  --questions-per-image N    vqa: questions per image, 1..16, default 3\n"
    "  --tokens N                 text tasks: target context length in tokens (~4 characters\n"
    "                             each), 64..131072; default: per item from 512..8192\n"
    "  --jobs N                   worker threads, default 1 (output does not depend on it)\n"
    "  -q, --quiet                no summary on stderr\n"
    "  -h, --help                 this text\n"
    "\n"
    "Output: DIR/<split>.jsonl and DIR/images/<split>-NNNNNN.png for vqa;\n"
    "DIR/<split>-<task>.jsonl (and DIR/images/<split>-dialogue-NNNNNN.png) for text tasks.\n";

static int usage_error(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "prunelm-shapes: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\nTry 'prunelm-shapes --help'.\n");
    return 2;
}

/* Parses a whole decimal number in [lo, hi]; 0 on anything else. */
static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+') return 0;
    for (const char *c = s; *c; c++)
        if (*c < '0' || *c > '9') return 0;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

int main(int argc, char **argv)
{
    shp_params p = shp_default_params();
    const char *out = NULL, *split = NULL;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (a[0] != '-' || a[1] != '-')
            return usage_error("unexpected argument '%s'%s", a, "");
        if (i + 1 >= argc) return usage_error("%s needs a value%s", a, "");
        const char *v = argv[++i];
        uint64_t n = 0;
        if (!strcmp(a, "--out")) {
            out = v;
        } else if (!strcmp(a, "--split")) {
            split = v;
            if (!shp_split_parse(v, &p.split))
                return usage_error("--split '%s' is not one of train, val, test%s", v, "");
        } else if (!strcmp(a, "--task")) {
            if (!shp_task_parse(v, &p.task))
                return usage_error("--task '%s' is not one of vqa, passkey, multikey, dialogue%s",
                                   v, "");
        } else if (!strcmp(a, "--count")) {
            if (!parse_u64(v, 1, SHP_SPLIT_STRIDE, &n))
                return usage_error("--count '%s' is not a number in [1, 1000000000000]%s", v, "");
            p.count = n;
        } else if (!strcmp(a, "--seed-base")) {
            if (!parse_u64(v, 0, SHP_SPLIT_STRIDE - 1, &n))
                return usage_error("--seed-base '%s' is not a number in [0, 999999999999]%s", v,
                                   "");
            p.seed_base = n;
        } else if (!strcmp(a, "--questions-per-image")) {
            if (!parse_u64(v, 1, SHP_MAX_QUESTIONS, &n))
                return usage_error("--questions-per-image '%s' is not a number in [1, 16]%s", v,
                                   "");
            p.questions_per_image = (int)n;
        } else if (!strcmp(a, "--tokens")) {
            if (!parse_u64(v, SHP_TOKENS_MIN, SHP_TOKENS_MAX, &n))
                return usage_error("--tokens '%s' is not a number in [64, 131072]%s", v, "");
            p.tokens = (int)n;
        } else if (!strcmp(a, "--jobs")) {
            if (!parse_u64(v, 1, 256, &n))
                return usage_error("--jobs '%s' is not a number in [1, 256]%s", v, "");
            p.jobs = (int)n;
        } else {
            return usage_error("unknown option '%s'%s", a, "");
        }
    }
    if (!out) return usage_error("--out DIR is required%s%s", "", "");
    if (!split) return usage_error("--split train|val|test is required%s%s", "", "");
    p.out_dir = out;

    shp_stats *stats = calloc(1, sizeof *stats);
    if (!stats) {
        fprintf(stderr, "prunelm-shapes: out of memory\n");
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    plm_error err = {{0}};
    plm_status st = shp_generate(&p, stats, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (st != PLM_OK) {
        fprintf(stderr, "prunelm-shapes: %s\n", err.msg);
        free(stats);
        return 1;
    }
    if (!quiet) {
        double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        char path[4096];
        shp_jsonl_path(&p, path, sizeof path);
        shp_buf b = {0};
        shp_stats_format(stats, &b);
        fprintf(stderr,
                "prunelm-shapes: wrote %s: %llu items, %llu questions in %.2f s (%.1f items/s)\n"
                "answers by type [questions by target size]:\n%s",
                path, (unsigned long long)stats->items, (unsigned long long)stats->questions, s,
                s > 0 ? (double)stats->items / s : 0.0, b.p ? b.p : "");
        shp_buf_free(&b);
    }
    free(stats);
    return 0;
}
