/* The generation driver: item seeds per split, one item's JSONL lines, and a whole run written
 * atomically (JSONL to a temporary name, renamed at the end; each PNG likewise). Items are
 * independent functions of their seed, so worker threads may produce them in any order; lines
 * are written in item order, keeping the output byte-identical whatever --jobs is. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shapes.h"

/* RNG streams per item: changing how one part is drawn never shifts another. */
enum { ST_SCENE = 1, ST_BACKGROUND = 2, ST_QUESTIONS = 3, ST_TEXT = 4, ST_LENGTH = 5 };

static const char *const SPLITS[SHP_N_SPLITS] = {"train", "val", "test"};
static const char *const TASKS[SHP_N_TASKS] = {"vqa", "passkey", "multikey", "dialogue"};

const char *shp_split_name(shp_split s) { return (unsigned)s < SHP_N_SPLITS ? SPLITS[s] : "?"; }
const char *shp_task_name(shp_task t) { return (unsigned)t < SHP_N_TASKS ? TASKS[t] : "?"; }

int shp_split_parse(const char *s, shp_split *out)
{
    for (int i = 0; i < SHP_N_SPLITS; i++)
        if (strcmp(s, SPLITS[i]) == 0) {
            *out = (shp_split)i;
            return 1;
        }
    return 0;
}

int shp_task_parse(const char *s, shp_task *out)
{
    for (int i = 0; i < SHP_N_TASKS; i++)
        if (strcmp(s, TASKS[i]) == 0) {
            *out = (shp_task)i;
            return 1;
        }
    return 0;
}

uint64_t shp_item_seed(shp_split s, uint64_t index)
{
    return (uint64_t)s * SHP_SPLIT_STRIDE + index % SHP_SPLIT_STRIDE;
}

shp_params shp_default_params(void)
{
    shp_params p = {0};
    p.out_dir = ".";
    p.split = SHP_TEST;
    p.task = SHP_TASK_VQA;
    p.count = 100;
    p.questions_per_image = 3;
    p.jobs = 1;
    return p;
}

void shp_jsonl_path(const shp_params *p, char *buf, size_t n)
{
    if (p->task == SHP_TASK_VQA)
        snprintf(buf, n, "%s/%s.jsonl", p->out_dir, shp_split_name(p->split));
    else
        snprintf(buf, n, "%s/%s-%s.jsonl", p->out_dir, shp_split_name(p->split),
                 shp_task_name(p->task));
}

/* ---- stats -------------------------------------------------------------------------------- */
static shp_type_stats *stats_type(shp_stats *st, const char *type)
{
    for (int i = 0; i < st->n_types; i++)
        if (strcmp(st->type[i].name, type) == 0) return &st->type[i];
    if (st->n_types == (int)(sizeof st->type / sizeof st->type[0])) return NULL;
    shp_type_stats *t = &st->type[st->n_types++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", type);
    return t;
}

static int answer_slot(shp_type_stats *t, const char *answer)
{
    for (int a = 0; a < t->n_answers; a++)
        if (strcmp(t->answer[a], answer) == 0) return a;
    if (t->n_answers == SHP_STATS_ANSWERS) return SHP_STATS_ANSWERS - 1;
    int a = t->n_answers++;
    snprintf(t->answer[a], SHP_A_TEXT, "%s", a == SHP_STATS_ANSWERS - 1 ? "(other)" : answer);
    return a;
}

static int size_index(const char *s)
{
    for (int i = 0; i < SHP_N_SIZES; i++)
        if (strcmp(s, shp_size_name((shp_size)i)) == 0) return i;
    return 3;
}

void shp_stats_add(shp_stats *st, const char *type, const char *answer, const char *target_size)
{
    shp_type_stats *t = stats_type(st, type);
    if (!t) return;
    t->total++;
    t->by_size[size_index(target_size)]++;
    t->count[answer_slot(t, answer)]++;
}

void shp_stats_merge(shp_stats *dst, const shp_stats *src)
{
    dst->items += src->items;
    dst->questions += src->questions;
    for (int i = 0; i < src->n_types; i++) {
        const shp_type_stats *s = &src->type[i];
        shp_type_stats *d = stats_type(dst, s->name);
        if (!d) continue;
        d->total += s->total;
        for (int k = 0; k < 4; k++) d->by_size[k] += s->by_size[k];
        for (int a = 0; a < s->n_answers; a++)
            d->count[answer_slot(d, s->answer[a])] += s->count[a];
    }
}

plm_status shp_stats_format(const shp_stats *st, shp_buf *b)
{
    for (int t = 0; t < st->n_types; t++) {
        const shp_type_stats *ty = &st->type[t];
        int order[SHP_STATS_ANSWERS];
        for (int a = 0; a < ty->n_answers; a++) order[a] = a;
        for (int i = 1; i < ty->n_answers; i++) /* by count, then name: stable output */
            for (int j = i; j > 0; j--) {
                int x = order[j - 1], y = order[j];
                if (ty->count[x] > ty->count[y] ||
                    (ty->count[x] == ty->count[y] && strcmp(ty->answer[x], ty->answer[y]) <= 0))
                    break;
                order[j - 1] = y;
                order[j] = x;
            }
        PLM_TRY_SHP(shp_buf_printf(b,
                                   "  %-10s %6llu  [small %llu, medium %llu, large %llu, "
                                   "none %llu]\n   ",
                                   ty->name, (unsigned long long)ty->total,
                                   (unsigned long long)ty->by_size[0],
                                   (unsigned long long)ty->by_size[1],
                                   (unsigned long long)ty->by_size[2],
                                   (unsigned long long)ty->by_size[3]));
        for (int i = 0; i < ty->n_answers; i++)
            PLM_TRY_SHP(shp_buf_printf(b, " %s:%llu", ty->answer[order[i]],
                                       (unsigned long long)ty->count[order[i]]));
        PLM_TRY_SHP(shp_buf_puts(b, "\n"));
    }
    return PLM_OK;
}

/* ---- one item ----------------------------------------------------------------------------- */
static const int TOKEN_CHOICES[5] = {512, 1024, 2048, 4096, 8192};

static uint64_t stream(shp_task t, int role)
{
    return (uint64_t)t * 16 + (uint64_t)role;
}

/* Samples the scene of an image item and, with write_png, renders and writes it. */
static plm_status make_image(const shp_params *p, shp_task task, uint64_t seed, const char *rel,
                             int write_png, shp_scene *sc, plm_error *err)
{
    shp_rng r;
    shp_rng_seed(&r, seed, stream(task, ST_SCENE));
    shp_scene_sample(sc, seed, &r);
    if (!write_png) return PLM_OK;
    shp_image img;
    PLM_TRY_SHP(shp_image_new(&img, SHP_IMG, SHP_IMG, err));
    shp_rng_seed(&r, seed, stream(task, ST_BACKGROUND));
    shp_scene_render(sc, &img, &r);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", p->out_dir, rel);
    plm_status st = shp_png_write(path, &img, err);
    shp_image_free(&img);
    return st;
}

/* The scene as JSON ("objects": [...], "glyph": {...} | null): the ground truth behind the
 * answers, for per-patch supervision in training and for checking what pruning kept. */
static int scene_json(shp_buf *b, const shp_scene *sc)
{
    int ok = shp_buf_puts(b, ", \"objects\": [") == PLM_OK;
    for (int i = 0; ok && i < sc->n_objects; i++) {
        const shp_object *o = &sc->obj[i];
        ok = shp_buf_printf(b,
                            "%s{\"shape\": \"%s\", \"colour\": \"%s\", \"size\": \"%s\", "
                            "\"box\": [%d, %d, %d, %d]}",
                            i ? ", " : "", shp_shape_name(o->shape), shp_colour_name(o->colour),
                            shp_size_name(o->size), o->x0, o->y0, o->side, o->side) == PLM_OK;
    }
    ok = ok && shp_buf_puts(b, "], \"glyph\": ") == PLM_OK;
    const shp_glyph *g = &sc->glyph;
    if (ok && g->present)
        ok = shp_buf_printf(b,
                            "{\"char\": \"%c\", \"colour\": \"%s\", \"size\": \"%s\", "
                            "\"box\": [%d, %d, %d, %d]}",
                            g->ch, shp_colour_name(g->colour), shp_size_name(g->size), g->x0,
                            g->y0, g->w, g->h) == PLM_OK;
    else if (ok)
        ok = shp_buf_puts(b, "null") == PLM_OK;
    return ok;
}

static plm_status vqa_item(const shp_params *p, uint64_t index, uint64_t seed, shp_buf *line,
                           shp_stats *stats, int write_png, plm_error *err)
{
    const char *split = shp_split_name(p->split);
    char rel[64];
    snprintf(rel, sizeof rel, "images/%s-%06llu.png", split, (unsigned long long)index);
    shp_scene sc;
    PLM_TRY_SHP(make_image(p, SHP_TASK_VQA, seed, rel, write_png, &sc, err));
    shp_rng r;
    shp_rng_seed(&r, seed, stream(SHP_TASK_VQA, ST_QUESTIONS));
    shp_question q[SHP_MAX_QUESTIONS];
    int n = shp_questions_pick(&sc, &r, p->questions_per_image, q);
    for (int i = 0; i < n; i++) {
        int ok = shp_buf_printf(line, "{\"id\": \"%s-%06llu-q%d\", \"image\": ", split,
                                (unsigned long long)index, i) == PLM_OK &&
                 shp_buf_json_str(line, rel) == PLM_OK &&
                 shp_buf_puts(line, ", \"question\": ") == PLM_OK &&
                 shp_buf_json_str(line, q[i].text) == PLM_OK &&
                 shp_buf_puts(line, ", \"answer\": ") == PLM_OK &&
                 shp_buf_json_str(line, q[i].answer) == PLM_OK &&
                 shp_buf_printf(line,
                                ", \"type\": \"%s\", \"split\": \"%s\", \"seed\": %llu, "
                                "\"n_objects\": %d, \"target_size\": \"%s\", "
                                "\"background\": \"%s\"",
                                shp_qtype_name(q[i].type), split, (unsigned long long)seed,
                                sc.n_objects, q[i].target_size,
                                shp_bg_name(sc.background)) == PLM_OK &&
                 scene_json(line, &sc) && shp_buf_puts(line, "}\n") == PLM_OK;
        if (!ok) return shp_fail(err, PLM_E_NOMEM, "out of memory formatting item %llu",
                                 (unsigned long long)index);
        if (stats) shp_stats_add(stats, shp_qtype_name(q[i].type), q[i].answer, q[i].target_size);
    }
    if (stats) {
        stats->items++;
        stats->questions += (uint64_t)n;
    }
    return PLM_OK;
}

static plm_status text_item(const shp_params *p, uint64_t index, uint64_t seed, shp_buf *line,
                            shp_stats *stats, int write_png, plm_error *err)
{
    const char *split = shp_split_name(p->split), *task = shp_task_name(p->task);
    shp_rng r;
    shp_rng_seed(&r, seed, stream(p->task, ST_LENGTH));
    int tokens = p->tokens ? p->tokens : TOKEN_CHOICES[shp_rng_below(&r, 5)];
    shp_text_item it;
    memset(&it, 0, sizeof it);
    shp_rng_seed(&r, seed, stream(p->task, ST_TEXT));
    plm_status st = PLM_OK;
    shp_scene sc;
    shp_question q;
    char rel[64] = "";
    const char *type = task;
    if (p->task == SHP_TASK_PASSKEY) {
        st = shp_text_passkey(&it, tokens, &r, err);
    } else if (p->task == SHP_TASK_MULTIKEY) {
        st = shp_text_multikey(&it, tokens, &r, err);
    } else {
        snprintf(rel, sizeof rel, "images/%s-dialogue-%06llu.png", split,
                 (unsigned long long)index);
        st = make_image(p, p->task, seed, rel, write_png, &sc, err);
        if (st == PLM_OK) st = shp_text_dialogue(&it, tokens, &r, err);
        if (st == PLM_OK) {
            shp_rng qr;
            shp_rng_seed(&qr, seed, stream(p->task, ST_QUESTIONS));
            if (shp_questions_pick(&sc, &qr, 1, &q) == 1) { /* always: count is always asked */
                snprintf(it.question, sizeof it.question, "%s", q.text);
                snprintf(it.answer, sizeof it.answer, "%s", q.answer);
            } else {
                st = shp_fail(err, PLM_E_ARG, "item %llu: no question for its scene",
                              (unsigned long long)index);
            }
        }
    }
    if (st != PLM_OK) {
        shp_text_item_free(&it);
        return st;
    }
    int ok = shp_buf_printf(line, "{\"id\": \"%s-%s-%06llu\", ", split, task,
                            (unsigned long long)index) == PLM_OK;
    if (ok && rel[0])
        ok = shp_buf_puts(line, "\"image\": ") == PLM_OK && shp_buf_json_str(line, rel) == PLM_OK &&
             shp_buf_puts(line, ", ") == PLM_OK;
    ok = ok && shp_buf_puts(line, "\"context\": ") == PLM_OK &&
         shp_buf_json_str(line, it.context.p ? it.context.p : "") == PLM_OK &&
         shp_buf_puts(line, ", \"question\": ") == PLM_OK &&
         shp_buf_json_str(line, it.question) == PLM_OK &&
         shp_buf_puts(line, ", \"answer\": ") == PLM_OK &&
         shp_buf_json_str(line, it.answer) == PLM_OK &&
         shp_buf_printf(line,
                        ", \"type\": \"%s\", \"split\": \"%s\", \"seed\": %llu, \"tokens\": %d, "
                        "\"n_chars\": %zu, \"depth\": %d, \"n_keys\": %d",
                        type, split, (unsigned long long)seed, tokens, it.context.len,
                        it.depth_pct, it.n_keys) == PLM_OK;
    if (ok && rel[0])
        ok = shp_buf_printf(line,
                            ", \"vqa_type\": \"%s\", \"n_objects\": %d, \"target_size\": \"%s\", "
                            "\"background\": \"%s\"",
                            shp_qtype_name(q.type), sc.n_objects, q.target_size,
                            shp_bg_name(sc.background)) == PLM_OK;
    ok = ok && shp_buf_puts(line, "}\n") == PLM_OK;
    if (ok && stats) {
        char bucket[SHP_A_TEXT];
        snprintf(bucket, sizeof bucket, "tokens=%d", tokens);
        shp_stats_add(stats, type, bucket, rel[0] ? q.target_size : "none");
        if (rel[0]) shp_stats_add(stats, "dialogue/q", shp_qtype_name(q.type), q.target_size);
        stats->items++;
        stats->questions++;
    }
    shp_text_item_free(&it);
    if (!ok)
        return shp_fail(err, PLM_E_NOMEM, "out of memory formatting item %llu",
                        (unsigned long long)index);
    return PLM_OK;
}

plm_status shp_gen_item(const shp_params *p, uint64_t index, shp_buf *line, shp_stats *st,
                        int write_png, plm_error *err)
{
    if (index >= SHP_SPLIT_STRIDE)
        return shp_fail(err, PLM_E_LIMIT, "item index %llu is past the split's range of %llu",
                        (unsigned long long)index, (unsigned long long)SHP_SPLIT_STRIDE);
    uint64_t seed = shp_item_seed(p->split, index);
    if (p->task == SHP_TASK_VQA) return vqa_item(p, index, seed, line, st, write_png, err);
    return text_item(p, index, seed, line, st, write_png, err);
}

/* ---- a whole run -------------------------------------------------------------------------- */
static plm_status mkdir_p(const char *dir, plm_error *err)
{
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return shp_fail(err, PLM_E_ARG, "output directory '%s' is empty or too long", dir);
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        struct stat sb;
        if (stat(buf, &sb) != 0) {
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return shp_fail(err, PLM_E_IO, "%s: cannot create directory: %s", buf,
                                strerror(errno));
        } else if (!S_ISDIR(sb.st_mode)) {
            return shp_fail(err, PLM_E_IO, "%s: exists and is not a directory", buf);
        }
        buf[i] = c;
    }
    return PLM_OK;
}

static plm_status check_params(const shp_params *p, plm_error *err)
{
    if (!p->out_dir || !p->out_dir[0]) return shp_fail(err, PLM_E_ARG, "no output directory");
    if ((unsigned)p->split >= SHP_N_SPLITS) return shp_fail(err, PLM_E_ARG, "unknown split");
    if ((unsigned)p->task >= SHP_N_TASKS) return shp_fail(err, PLM_E_ARG, "unknown task");
    if (p->count == 0) return shp_fail(err, PLM_E_ARG, "--count must be at least 1");
    if (p->seed_base >= SHP_SPLIT_STRIDE || p->count > SHP_SPLIT_STRIDE - p->seed_base)
        return shp_fail(err, PLM_E_LIMIT,
                        "--seed-base %llu + --count %llu passes the split's %llu item indices",
                        (unsigned long long)p->seed_base, (unsigned long long)p->count,
                        (unsigned long long)SHP_SPLIT_STRIDE);
    if (p->questions_per_image < 1 || p->questions_per_image > SHP_MAX_QUESTIONS)
        return shp_fail(err, PLM_E_ARG, "--questions-per-image %d is out of range [1, %d]",
                        p->questions_per_image, SHP_MAX_QUESTIONS);
    if (p->tokens != 0 && (p->tokens < SHP_TOKENS_MIN || p->tokens > SHP_TOKENS_MAX))
        return shp_fail(err, PLM_E_ARG, "--tokens %d is out of range [%d, %d]", p->tokens,
                        SHP_TOKENS_MIN, SHP_TOKENS_MAX);
    if (p->jobs < 1 || p->jobs > 256)
        return shp_fail(err, PLM_E_ARG, "--jobs %d is out of range [1, 256]", p->jobs);
    return PLM_OK;
}

typedef struct batch {
    const shp_params *p;
    uint64_t first;  /* item index of slot 0 */
    int n;           /* items in this batch */
    int stride, offset;
    shp_buf *lines;  /* n buffers */
    plm_status *st;  /* n statuses */
    plm_error *errs; /* n messages (only read for failed items) */
    shp_stats stats;
} batch;

static void *worker(void *arg)
{
    batch *b = arg;
    for (int i = b->offset; i < b->n; i += b->stride)
        b->st[i] = shp_gen_item(b->p, b->first + (uint64_t)i, &b->lines[i], &b->stats, 1,
                                &b->errs[i]);
    return NULL;
}

enum { BATCH_PER_JOB = 32 };

plm_status shp_generate(const shp_params *p, shp_stats *stats, plm_error *err)
{
    PLM_TRY_SHP(check_params(p, err));
    PLM_TRY_SHP(mkdir_p(p->out_dir, err));
    if (p->task == SHP_TASK_VQA || p->task == SHP_TASK_DIALOGUE) {
        char img_dir[4096];
        snprintf(img_dir, sizeof img_dir, "%s/images", p->out_dir);
        PLM_TRY_SHP(mkdir_p(img_dir, err));
    }
    char path[4096], tmp[4200];
    shp_jsonl_path(p, path, sizeof path);
    const char *slash = strrchr(path, '/');
    snprintf(tmp, sizeof tmp, "%.*s.%s.tmp.%ld", (int)(slash - path + 1), path, slash + 1,
             (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return shp_fail(err, PLM_E_IO, "%s: cannot create: %s", tmp, strerror(errno));

    int jobs = p->jobs;
    int cap = jobs * BATCH_PER_JOB;
    shp_buf *lines = calloc((size_t)cap, sizeof *lines);
    plm_status *sts = calloc((size_t)cap, sizeof *sts);
    plm_error *errs = calloc((size_t)cap, sizeof *errs);
    batch *bs = calloc((size_t)jobs, sizeof *bs);
    pthread_t *th = calloc((size_t)jobs, sizeof *th);
    char *started = calloc((size_t)jobs, 1);
    plm_status st = PLM_OK;
    if (!lines || !sts || !errs || !bs || !th || !started)
        st = shp_fail(err, PLM_E_NOMEM, "out of memory for %d workers", jobs);
    for (uint64_t done = 0; st == PLM_OK && done < p->count;) {
        int n = p->count - done < (uint64_t)cap ? (int)(p->count - done) : cap;
        for (int j = 0; j < jobs; j++) {
            bs[j] = (batch){.p = p, .first = p->seed_base + done, .n = n, .stride = jobs,
                            .offset = j, .lines = lines, .st = sts, .errs = errs};
            started[j] = j > 0 && pthread_create(&th[j], NULL, worker, &bs[j]) == 0;
        }
        for (int j = 0; j < jobs; j++) /* this thread's share, and that of any not started */
            if (!started[j]) worker(&bs[j]);
        for (int j = 1; j < jobs; j++)
            if (started[j]) pthread_join(th[j], NULL);
        for (int i = 0; i < n && st == PLM_OK; i++) {
            if (sts[i] != PLM_OK) {
                st = sts[i];
                shp_fail(err, st, "%s", errs[i].msg);
            } else if (fwrite(lines[i].p, 1, lines[i].len, f) != lines[i].len) {
                st = shp_fail(err, PLM_E_IO, "%s: write failed: %s", tmp, strerror(errno));
            }
        }
        for (int i = 0; i < n; i++) lines[i].len = 0;
        for (int j = 0; j < jobs; j++)
            if (stats) shp_stats_merge(stats, &bs[j].stats);
        done += (uint64_t)n;
    }
    if (lines)
        for (int i = 0; i < cap; i++) shp_buf_free(&lines[i]);
    free(lines);
    free(sts);
    free(errs);
    free(bs);
    free(th);
    free(started);
    if (fflush(f) != 0 && st == PLM_OK)
        st = shp_fail(err, PLM_E_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (fsync(fileno(f)) != 0 && st == PLM_OK && errno != EINVAL)
        st = shp_fail(err, PLM_E_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && st == PLM_OK)
        st = shp_fail(err, PLM_E_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (st == PLM_OK && rename(tmp, path) != 0)
        st = shp_fail(err, PLM_E_IO, "%s: cannot rename from %s: %s", path, tmp, strerror(errno));
    if (st != PLM_OK) unlink(tmp);
    return st;
}
