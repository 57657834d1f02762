/* prunelm bench: the numbers the speed targets are stated in — vision tower + projector time,
 * time to first token for one image and a question of a given length, decode tokens/s over a
 * fixed number of tokens, and memory — as medians over repeated runs after a warm-up. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "prunelm.h"
#include "cli.h"
#include "eval/eval.h"

static const char *HELP =
    "usage: prunelm bench [options]\n"
    "Times one image + question: the vision tower and projector, the time to first token\n"
    "(vision + prefill), and decoding a fixed number of tokens (EOS ignored); medians over\n"
    "--repeat runs after one warm-up. Prints a table; --json FILE also writes the numbers.\n"
    "  --model DIR          checkpoint (default: the bundled model)\n"
    "  --image FILE         the image (default: the bundled one)\n"
    "  --prompt-tokens N    question length in tokens, by the model's tokenizer (default 40)\n"
    "  --gen N              tokens to decode (default 256, within the context)\n"
    "  --repeat N           timed runs (default 5)\n"
    "  --prune SPEC         a pruning policy (see prunelm ask --help); several --prune run\n"
    "                       one after the other on the loaded model, one table row each\n"
    "  --kv SPEC            a KV-cache policy (see prunelm ask --help)\n"
    "  --kv-quant Q         KV storage: none or int4[:group=G,residual=R] (see prunelm ask)\n"
    "  --device cpu|cuda|auto, --threads N, --dtype stored|bf16|f16 (float32 weights rounded\n"
    "                       to 16 bits on load)\n"
    "  --json FILE          write the results as JSON (atomically)\n";

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* A question of n tokens by the model's own tokenizer: filler words added until it has them. */
static char *question(const plm_tokenizer *tok, int n)
{
    static const char *words[] = {"describe", "the", "image", "in", "detail", "and", "count",
                                  "every", "shape", "colour"};
    size_t cap = (size_t)n * 12 + 32, len = 0;
    char *q = malloc(cap);
    if (!q) return NULL;
    q[0] = '\0';
    for (int i = 0; len + 16 < cap; i++) {
        int32_t *ids = NULL;
        size_t k = 0;
        if (plm_tokenize(tok, q, len, 0, &ids, &k, NULL) != PLM_OK) break;
        free(ids);
        if ((int)k >= n) break;
        len += (size_t)snprintf(q + len, cap - len, "%s%s", i ? " " : "", words[i % 10]);
    }
    return q;
}

#define BENCH_MAX_SPECS 24

/* The medians of one setting. */
typedef struct bench_row {
    const char *prune;
    double vision_ms, compute_ms, ttft_ms, tps, dev_used; /* compute: vision + prefill */
    int vision_runs[3]; /* timed runs whose vision tower ran op by op, replayed, recorded */
    plm_timings t;
} bench_row;

/* Warm-up + repeat runs of the question under the session's current policies. */
static int bench_one(plm_session *s, const char *q, int repeat, double *vis, double *comp,
                     double *ttft, double *tps, bench_row *row)
{
    row->dev_used = -1;
    memset(row->vision_runs, 0, sizeof row->vision_runs);
    const plm_timings *t = NULL;
    for (int r = -1; r < repeat; r++) { /* run -1 warms up */
        if (plm_session_ask(s, q, NULL, NULL, NULL) != PLM_OK) {
            fprintf(stderr, "prunelm bench: %s\n", plm_last_error(s));
            return 0;
        }
        t = plm_session_timings(s);
        if (r < 0) continue;
        row->vision_runs[t->vision_graph >= 0 && t->vision_graph <= 2 ? t->vision_graph : 0]++;
        vis[r] = t->vision_ms;
        comp[r] = t->vision_ms + t->prefill_ms;
        ttft[r] = t->ttft_ms;
        tps[r] = t->decode_ms > 0 ? (t->n_generated - 1) * 1000.0 / t->decode_ms : 0;
        /* the backend only grows its buffers, so the most in use after a run is the peak */
        uint64_t used, total;
        if (plm_session_device_memory(s, &used, &total) == PLM_OK && (double)used > row->dev_used)
            row->dev_used = (double)used;
    }
    row->vision_ms = median(vis, repeat);
    row->compute_ms = median(comp, repeat);
    row->ttft_ms = median(ttft, repeat);
    row->tps = median(tps, repeat);
    row->t = *t;
    return 1;
}

static cJSON *row_json(const bench_row *r, const char *model, const char *dev, const char *kv,
                       int repeat, double rss)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(o, "device", dev);
    cJSON_AddStringToObject(o, "prune", r->prune ? r->prune : "none");
    cJSON_AddStringToObject(o, "kv", kv ? kv : "none");
    cJSON_AddNumberToObject(o, "repeat", repeat);
    cJSON_AddNumberToObject(o, "prompt_tokens", r->t.n_prompt);
    cJSON_AddNumberToObject(o, "image_tokens", r->t.n_image_tokens);
    cJSON_AddNumberToObject(o, "image_tokens_per_layer", r->t.image_tokens_avg);
    cJSON_AddNumberToObject(o, "generated_tokens", r->t.n_generated);
    cJSON_AddNumberToObject(o, "vision_ms", r->vision_ms);
    /* timed runs whose tower ran op by op / replayed its CUDA graph / recorded it first */
    cJSON_AddNumberToObject(o, "vision_runs_op_by_op", r->vision_runs[0]);
    cJSON_AddNumberToObject(o, "vision_runs_replayed", r->vision_runs[1]);
    cJSON_AddNumberToObject(o, "vision_runs_recorded", r->vision_runs[2]);
    cJSON_AddNumberToObject(o, "ttft_ms", r->ttft_ms);
    cJSON_AddNumberToObject(o, "vision_prefill_ms", r->compute_ms);
    cJSON_AddNumberToObject(o, "decode_tokens_per_s", r->tps);
    cJSON_AddNumberToObject(o, "kv_bytes", (double)r->t.kv_bytes);
    cJSON_AddNumberToObject(o, "peak_rss_bytes", rss);
    if (r->dev_used >= 0) cJSON_AddNumberToObject(o, "device_used_bytes", r->dev_used);
    return o;
}

int cmd_bench(int argc, char **argv)
{
    const char *C = "bench", *model = NULL, *image = NULL, *json = NULL, *kv = NULL;
    const char *kv_quant = NULL;
    char kv_buf[2048];
    const char *prune[BENCH_MAX_SPECS];
    int n_prune = 0;
    int prompt_tokens = 40, gen = 256, repeat = 5;
    plm_model_params mp = plm_model_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long n;
#define VALUE() if (!(v = cli_value(C, argc, argv, &i))) return CLI_USAGE
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--model")) { VALUE(); model = v;
        } else if (!strcmp(a, "--image")) { VALUE(); image = v;
        } else if (!strcmp(a, "--prune")) {
            VALUE();
            if (n_prune == BENCH_MAX_SPECS) {
                fprintf(stderr, "prunelm bench: at most %d --prune\n", BENCH_MAX_SPECS);
                return CLI_USAGE;
            }
            prune[n_prune++] = v;
        } else if (!strcmp(a, "--kv")) { VALUE(); kv = v;
        } else if (!strcmp(a, "--kv-quant")) { VALUE(); kv_quant = v;
        } else if (!strcmp(a, "--json")) { VALUE(); json = v;
        } else if (!strcmp(a, "--prompt-tokens")) {
            VALUE(); if (!cli_int(C, a, v, 1, 100000, &n)) return CLI_USAGE; prompt_tokens = (int)n;
        } else if (!strcmp(a, "--gen")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1 << 20, &n)) return CLI_USAGE; gen = (int)n;
        } else if (!strcmp(a, "--repeat")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1000, &n)) return CLI_USAGE; repeat = (int)n;
        } else if (!strcmp(a, "--threads")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1024, &n)) return CLI_USAGE; mp.n_threads = (int)n;
        } else if (!strcmp(a, "--dtype")) {
            VALUE(); if (!cli_weights_dtype(C, v, &mp.weights)) return CLI_USAGE;
        } else if (!strcmp(a, "--device")) {
            VALUE();
            mp.device = !strcmp(v, "cpu") ? PLM_DEVICE_CPU : !strcmp(v, "cuda") ? PLM_DEVICE_CUDA
                                                                                : PLM_DEVICE_AUTO;
        } else {
            fprintf(stderr, "prunelm bench: unknown argument '%s' (see prunelm bench --help)\n", a);
            return CLI_USAGE;
        }
#undef VALUE
    }
    if (!n_prune) prune[n_prune++] = NULL;
    int bad;
    kv = cli_kv_quant(C, kv, kv_quant, kv_buf, sizeof kv_buf, &bad);
    if (bad) return CLI_USAGE;
    char dm[4096], di[4096];
    if (!model) {
        cli_default_model(dm, sizeof dm);
        model = dm;
    }
    if (!image) {
        cli_default_image(di, sizeof di);
        image = di;
    }
    plm_error err;
    plm_model *m = NULL;
    plm_session *s = NULL;
    char *q = NULL;
    double *vis = calloc((size_t)repeat, sizeof *vis), *ttft = calloc((size_t)repeat, 8),
           *tps = calloc((size_t)repeat, 8), *comp = calloc((size_t)repeat, 8);
    bench_row rows[BENCH_MAX_SPECS];
    int rc = CLI_FAIL;
    plm_session_params sp = plm_session_default_params();
    sp.max_tokens = gen;
    sp.ignore_eos = 1;
    if (!vis || !ttft || !tps || !comp) goto out;
    if (plm_model_load(model, &mp, &m, &err) != PLM_OK ||
        plm_session_new(m, &sp, &s, &err) != PLM_OK) {
        fprintf(stderr, "prunelm bench: %s\n", err.msg);
        goto out;
    }
    if (!(q = question(plm_model_tokenizer(m), prompt_tokens))) goto out;
    /* every spec is checked before anything is timed */
    for (int i = 0; i < n_prune; i++)
        if (plm_session_set_prune(s, prune[i]) != PLM_OK) {
            fprintf(stderr, "prunelm bench: %s\n", plm_last_error(s));
            rc = CLI_USAGE;
            goto out;
        }
    if ((kv && plm_session_set_kv(s, kv) != PLM_OK) ||
        (plm_model_has_vision(m) && plm_session_set_image_file(s, image) != PLM_OK)) {
        fprintf(stderr, "prunelm bench: %s\n", plm_last_error(s));
        goto out;
    }
    for (int i = 0; i < n_prune; i++) {
        rows[i].prune = prune[i];
        if (plm_session_set_prune(s, prune[i]) != PLM_OK ||
            !bench_one(s, q, repeat, vis, comp, ttft, tps, &rows[i]))
            goto out;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    char *desc = plm_model_describe(m);
    const char *dev = desc && strstr(desc, "device: cuda") ? "cuda" : "cpu";
    free(desc);
    const double rss = ru.ru_maxrss * 1024.0;
    if (n_prune == 1) {
        const bench_row *r = &rows[0];
        printf("| measure (median of %d) | value |\n|---|---|\n", repeat);
        printf("| device | %s |\n| prompt tokens (image) | %d (%d) |\n", dev, r->t.n_prompt,
               r->t.n_image_tokens);
        printf("| vision tower + projector | %.2f ms |\n| time to first token | %.2f ms |\n",
               r->vision_ms, r->ttft_ms);
        printf("| of which vision + prefill (the rest: tokenizing, host work) | %.2f ms |\n",
               r->compute_ms);
        printf("| decode | %.1f tokens/s over %d tokens |\n", r->tps, r->t.n_generated);
        printf("| KV cache at the end | %.1f MiB |\n| peak host memory (RSS) | %.1f MiB |\n",
               r->t.kv_bytes / 1048576.0, rss / 1048576.0);
        if (r->dev_used >= 0)
            printf("| device memory in use after the runs (driver: context included) | %.2f GiB "
                   "|\n", r->dev_used / 1073741824.0);
    } else {
        printf("%s, %d prompt tokens, %d generated, median of %d\n\n| prune | image tokens "
               "(per layer) | vision ms | vision runs op/replayed/recorded | time to first "
               "token ms | decode tokens/s | KV MiB |\n|---|---|---|---|---|---|---|\n", dev,
               rows[0].t.n_prompt, rows[0].t.n_generated, repeat);
        for (int i = 0; i < n_prune; i++)
            printf("| `%s` | %d (%.1f) | %.2f | %d/%d/%d | %.2f | %.1f | %.1f |\n",
                   rows[i].prune ? rows[i].prune : "none", rows[i].t.n_image_tokens,
                   rows[i].t.image_tokens_avg, rows[i].vision_ms, rows[i].vision_runs[0],
                   rows[i].vision_runs[1], rows[i].vision_runs[2], rows[i].ttft_ms, rows[i].tps,
                   rows[i].t.kv_bytes / 1048576.0);
    }
    rc = CLI_OK;
    if (json) {
        /* one setting: its object (what eval/bench_vs_hf.py reads); several: an array */
        cJSON *o = n_prune == 1 ? row_json(&rows[0], model, dev, kv, repeat, rss)
                                : cJSON_CreateArray();
        for (int i = 0; n_prune > 1 && i < n_prune; i++)
            cJSON_AddItemToArray(o, row_json(&rows[i], model, dev, kv, repeat, rss));
        char *text = cJSON_Print(o);
        cJSON_Delete(o);
        if (!text || eval_write_text(json, text, &err) != PLM_OK) {
            fprintf(stderr, "prunelm bench: %s\n", text ? err.msg : "out of memory");
            rc = CLI_FAIL;
        }
        free(text);
    }
out:
    free(q);
    free(vis);
    free(ttft);
    free(tps);
    free(comp);
    plm_session_free(s);
    plm_model_free(m);
    return rc;
}
