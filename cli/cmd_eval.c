/* prunelm eval: answer every item of a JSONL dataset, resumably, and summarise. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "prunelm.h"
#include "cli.h"
#include "eval/eval.h"

static const char *HELP =
    "usage: prunelm eval --data FILE.jsonl --out DIR [options]\n"
    "Answers every item of a JSONL dataset ({\"id\", \"image\", \"context\", \"question\",\n"
    "\"answer\", \"type\"}; image paths relative to the file; a context is asked as context,\n"
    "newline, question) and scores exact matches of one-word answers.\n"
    "Writes DIR/results.jsonl (one line per item, made durable as it goes) and DIR/summary.json.\n"
    "  --model DIR       checkpoint (default: the bundled model)\n"
    "  --kv SPEC         KV-cache policy (see prunelm ask --help); give several to sweep: the\n"
    "                    grid of every --prune with every --kv runs, each setting in its own\n"
    "                    folder, with report.md, accuracy.png and accuracy_kv.png (accuracy\n"
    "                    against KV MiB, one line per KV policy); `int4` is one too, alone or\n"
    "                    joined: --kv none --kv int4 --kv scissorhands:ratio=0.3+int4\n"
    "  --kv-quant Q      none or int4[:group=G,residual=R]: joined to every --kv setting\n"
    "  --prune SPEC      visual-token pruning for every item (see prunelm ask --help); give\n"
    "                    it several times for a sweep: each setting runs (resumably) into\n"
    "                    DIR/<setting>/, then DIR/report.md (a table of accuracy per question\n"
    "                    type, image tokens, KV memory, latency) and DIR/accuracy.png\n"
    "                    (accuracy against image tokens per layer, a line per method)\n"
    "  --late-question T the items of type T (comma-separated types, or all) that have a\n"
    "                    context get their question after the KV policy compressed the\n"
    "                    context's cache (a later turn; see plm_session_ask_context)\n"
    "  --resume          continue DIR/results.jsonl after a crash or ^C: answered items are\n"
    "                    skipped, a torn last line is dropped and that item redone\n"
    "  --limit N         only the first N items\n"
    "  --max-tokens N    tokens per answer (default 16)\n"
    "  --threads N       CPU threads (default: all cores)\n"
    "  --dtype D         stored (default), bf16 or f16: float32 weight matrices rounded on load\n"
    "  -q                no progress on stderr\n";

#define EVAL_MAX_SETTINGS 32

static volatile sig_atomic_t g_stop; /* set by SIGINT/SIGTERM: finish the item, then stop */

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

typedef struct eval_opts {
    const char *data, *out, *model;
    const char *prune[EVAL_MAX_SETTINGS], *kv[EVAL_MAX_SETTINGS];
    int n_prune, n_kv;
    const char *kv_quant;
    const char *late;     /* --late-question: comma-separated item types, or "all" */
    char kv_buf[EVAL_MAX_SETTINGS][2048]; /* the --kv settings joined with --kv-quant */
    int resume, quiet, threads, max_tokens;
    plm_weights_dtype weights;
    long limit;
} eval_opts;

static int parse(int argc, char **argv, eval_opts *o)
{
    const char *C = "eval";
    o->max_tokens = 16;
    o->limit = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long n;
#define VALUE() if (!(v = cli_value(C, argc, argv, &i))) return 0
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            exit(CLI_OK);
        } else if (!strcmp(a, "--data")) { VALUE(); o->data = v;
        } else if (!strcmp(a, "--out")) { VALUE(); o->out = v;
        } else if (!strcmp(a, "--model")) { VALUE(); o->model = v;
        } else if (!strcmp(a, "--prune")) {
            VALUE();
            if (o->n_prune == EVAL_MAX_SETTINGS) {
                fprintf(stderr, "prunelm eval: at most %d --prune settings\n", EVAL_MAX_SETTINGS);
                return 0;
            }
            o->prune[o->n_prune++] = v;
        } else if (!strcmp(a, "--kv")) {
            VALUE();
            if (o->n_kv == EVAL_MAX_SETTINGS) {
                fprintf(stderr, "prunelm eval: at most %d --kv settings\n", EVAL_MAX_SETTINGS);
                return 0;
            }
            o->kv[o->n_kv++] = v;
        } else if (!strcmp(a, "--kv-quant")) { VALUE(); o->kv_quant = v;
        } else if (!strcmp(a, "--late-question")) { VALUE(); o->late = v;
        } else if (!strcmp(a, "--resume")) { o->resume = 1;
        } else if (!strcmp(a, "-q")) { o->quiet = 1;
        } else if (!strcmp(a, "--limit")) {
            VALUE(); if (!cli_int(C, a, v, 0, 1LL << 40, &n)) return 0; o->limit = (long)n;
        } else if (!strcmp(a, "--max-tokens")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1 << 20, &n)) return 0; o->max_tokens = (int)n;
        } else if (!strcmp(a, "--threads")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1024, &n)) return 0; o->threads = (int)n;
        } else if (!strcmp(a, "--dtype")) {
            VALUE(); if (!cli_weights_dtype(C, v, &o->weights)) return 0;
        } else {
            fprintf(stderr, "prunelm eval: unknown argument '%s' (see prunelm eval --help)\n", a);
            return 0;
        }
#undef VALUE
    }
    if (o->kv_quant && strcmp(o->kv_quant, "none") && !o->n_kv) o->kv[o->n_kv++] = "none";
    for (int i = 0; i < o->n_kv; i++) {
        int bad;
        o->kv[i] = cli_kv_quant(C, o->kv[i], o->kv_quant, o->kv_buf[i], sizeof o->kv_buf[i],
                                &bad);
        if (bad) return 0;
    }
    if ((o->n_prune ? o->n_prune : 1) * (o->n_kv ? o->n_kv : 1) > EVAL_MAX_SETTINGS) {
        fprintf(stderr, "prunelm eval: %d --prune x %d --kv settings make over %d runs\n",
                o->n_prune, o->n_kv, EVAL_MAX_SETTINGS);
        return 0;
    }
    if (!o->data || !o->out) {
        fprintf(stderr, "prunelm eval: --data and --out are required (see prunelm eval --help)\n");
        return 0;
    }
    return 1;
}

typedef struct progress {
    int tty, quiet;
    size_t total, done, correct, skipped, last_done;
    double t0, last;
} progress;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A bar redrawn in place on a terminal; otherwise a plain line every 10 s or 10%. */
static void progress_show(progress *p, int final)
{
    if (p->quiet) return;
    double t = now_s(), el = t - p->t0;
    size_t ran = p->done - p->skipped;
    double rate = el > 0 ? ran / el : 0;
    double eta = rate > 0 ? (p->total - p->done) / rate : 0;
    double acc = p->done ? 100.0 * p->correct / p->done : 0;
    if (p->tty) {
        int w = 30, fill = p->total ? (int)(w * p->done / p->total) : w;
        fprintf(stderr, "\r[%.*s%*s] %zu/%zu  %.2f items/s  ETA %02d:%02d  acc %.1f%%", fill,
                "##############################", w - fill, "", p->done, p->total, rate,
                (int)eta / 60, (int)eta % 60, acc);
        if (final) fputc('\n', stderr);
    } else if ((final && p->done != p->last_done) || t - p->last >= 10 ||
               (p->total >= 10 && p->done % (p->total / 10) == 0)) {
        fprintf(stderr, "prunelm eval: %zu/%zu items, %.2f items/s, ETA %ds, accuracy %.1f%%\n",
                p->done, p->total, rate, (int)eta, acc);
        p->last = t;
        p->last_done = p->done;
    }
}

static char *result_line(const eval_item *it, const char *pred, int correct, const char *error,
                         int late, plm_session *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", it->id);
    if (it->type) cJSON_AddStringToObject(o, "type", it->type);
    cJSON_AddStringToObject(o, "answer", it->answer);
    cJSON_AddStringToObject(o, "prediction", pred ? pred : "");
    cJSON_AddBoolToObject(o, "correct", correct);
    if (error) cJSON_AddStringToObject(o, "error", error);
    if (late) cJSON_AddBoolToObject(o, "late_question", 1);
    const plm_timings *t = plm_session_timings(s);
    cJSON *tk = cJSON_AddObjectToObject(o, "tokens");
    cJSON_AddNumberToObject(tk, "prompt", t->n_prompt);
    cJSON_AddNumberToObject(tk, "image", t->n_image_tokens);
    cJSON_AddNumberToObject(tk, "image_last_layer", t->n_image_tokens_last);
    cJSON_AddNumberToObject(tk, "image_avg", t->image_tokens_avg);
    cJSON_AddNumberToObject(tk, "generated", t->n_generated);
    cJSON_AddNumberToObject(o, "kv_bytes", (double)t->kv_bytes);
    if (t->peak_bytes) cJSON_AddNumberToObject(o, "peak_bytes", (double)t->peak_bytes);
    cJSON *tm = cJSON_AddObjectToObject(o, "timings");
    cJSON_AddNumberToObject(tm, "vision_ms", t->vision_ms);
    cJSON_AddNumberToObject(tm, "prefill_ms", t->prefill_ms);
    cJSON_AddNumberToObject(tm, "decode_ms", t->decode_ms);
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return line;
}

/* Whether --late-question names the item's type (or all), for an item with a context. */
static int late_for(const char *types, const eval_item *it)
{
    if (!types || !it->context) return 0;
    if (!strcmp(types, "all")) return 1;
    const size_t n = it->type ? strlen(it->type) : 0;
    for (const char *p = types; n && *p;) {
        const char *end = strchr(p, ',');
        const size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, it->type, n)) return 1;
        p += len + (end != NULL);
    }
    return 0;
}

/* Answers one item; an item that fails (a bad image, say) is recorded with its error. */
static char *answer_item(const eval_opts *o, plm_session *s, const eval_item *it, int *correct)
{
    char *pred = NULL;
    const char *error = NULL;
    /* the session keeps an image for the prompts after it: a text item must not inherit
     * the image of the item before (nor of the last item of the setting before) */
    if (!it->image)
        plm_session_clear_image(s);
    else if (plm_session_set_image_file(s, it->image) != PLM_OK)
        error = plm_last_error(s);
    const int late = late_for(o->late, it);
    if (!error && plm_session_ask_context(s, it->context, it->question, late, NULL, NULL,
                                          &pred) != PLM_OK)
        error = plm_last_error(s);
    *correct = !error && eval_is_correct(pred, it->answer);
    char *line = result_line(it, pred, *correct, error, late, s);
    free(pred);
    return line;
}

static int run(const eval_opts *o, plm_session *s, const eval_dataset *ds, eval_results *res)
{
    plm_error err;
    size_t n = o->limit >= 0 && (size_t)o->limit < ds->n ? (size_t)o->limit : ds->n;
    progress p = {.tty = isatty(2), .quiet = o->quiet, .total = n, .t0 = now_s(),
                  .last = now_s(), .last_done = (size_t)-1};
    int rc = CLI_OK;
    for (size_t i = 0; i < n && rc == CLI_OK; i++) {
        const eval_item *it = &ds->items[i];
        if (eval_results_has(res, it->id)) {
            p.done++;
            p.skipped++;
            continue;
        }
        if (g_stop) break;
        int correct;
        char *line = answer_item(o, s, it, &correct);
        if (!line || eval_results_append(res, line, &err) != PLM_OK) {
            fprintf(stderr, "\nprunelm eval: %s\n", line ? err.msg : "out of memory");
            rc = CLI_FAIL;
        }
        free(line);
        p.done++;
        p.correct += (size_t)correct;
        progress_show(&p, 0);
    }
    progress_show(&p, 1);
    if (rc == CLI_OK && g_stop && p.done < n) {
        fprintf(stderr, "prunelm eval: interrupted after %zu of %zu items; run again with "
                "--resume to finish\n", p.done, n);
        return 130;
    }
    return rc;
}

/* One setting (pruning spec or none) over the dataset into dir/results.jsonl + summary.json. */
static int run_setting(const eval_opts *o, plm_session *s, const char *spec, const char *kv,
                       const char *dir, const eval_dataset *ds, char *summary, size_t summary_n)
{
    char results[4200];
    plm_error err;
    if (mkdir(dir, 0777) && errno != EEXIST) {
        fprintf(stderr, "prunelm eval: %s: %s\n", dir, strerror(errno));
        return CLI_FAIL;
    }
    snprintf(results, sizeof results, "%s/results.jsonl", dir);
    snprintf(summary, summary_n, "%s/summary.json", dir);
    if (plm_session_set_prune(s, spec) != PLM_OK || plm_session_set_kv(s, kv) != PLM_OK) {
        fprintf(stderr, "prunelm eval: %s\n", plm_last_error(s));
        return CLI_USAGE;
    }
    eval_results res;
    if (eval_results_open(results, o->resume, &res, &err) != PLM_OK) {
        fprintf(stderr, "prunelm eval: %s\n", err.msg);
        return CLI_FAIL;
    }
    if (!o->quiet && (spec || kv))
        fprintf(stderr, "prunelm eval: setting %s%s%s\n", spec ? spec : "",
                spec && kv ? " with kv " : kv ? "kv " : "", kv ? kv : "");
    int rc = run(o, s, ds, &res);
    eval_results_close(&res);
    double acc;
    if (rc == CLI_OK) {
        if (eval_summarize(results, summary, &acc, &err) != PLM_OK) {
            fprintf(stderr, "prunelm eval: %s\n", err.msg);
            rc = CLI_FAIL;
        } else if (!o->quiet) {
            fprintf(stderr, "prunelm eval: accuracy %.2f%%; wrote %s and %s\n", 100 * acc,
                    results, summary);
        }
    }
    return rc;
}

/* A folder name for a spec: "vflowopt:tokens=64" -> "vflowopt_tokens_64". */
static void slug(const char *spec, char *out, size_t n)
{
    size_t k = 0;
    for (const char *p = spec; *p && k + 1 < n; p++)
        out[k++] = (isalnum((unsigned char)*p) || *p == '.' || *p == '-') ? *p : '_';
    out[k] = '\0';
}

int cmd_eval(int argc, char **argv)
{
    eval_opts o = {0};
    if (!parse(argc, argv, &o)) return CLI_USAGE;
    char dmodel[4096];
    if (!o.model) {
        cli_default_model(dmodel, sizeof dmodel);
        o.model = dmodel;
    }
    if (mkdir(o.out, 0777) && errno != EEXIST) {
        fprintf(stderr, "prunelm eval: %s: %s\n", o.out, strerror(errno));
        return CLI_FAIL;
    }
    plm_error err;
    eval_dataset ds;
    if (eval_dataset_load(o.data, &ds, &err) != PLM_OK) {
        fprintf(stderr, "prunelm eval: %s\n", err.msg);
        return CLI_FAIL;
    }
    plm_model_params mp = plm_model_default_params();
    mp.n_threads = o.threads;
    mp.weights = o.weights;
    plm_model *m = NULL;
    plm_session *s = NULL;
    int rc = CLI_FAIL;
    plm_session_params sp = plm_session_default_params();
    sp.max_tokens = o.max_tokens;
    sp.cache_vision = 1; /* several questions per image */
    if (plm_model_load(o.model, &mp, &m, &err) != PLM_OK ||
        plm_session_new(m, &sp, &s, &err) != PLM_OK) {
        fprintf(stderr, "prunelm eval: %s\n", err.msg);
        goto out;
    }
    /* every policy is checked before any results file exists */
    for (int i = 0; i < o.n_prune; i++)
        if (plm_session_set_prune(s, o.prune[i]) != PLM_OK) {
            fprintf(stderr, "prunelm eval: %s\n", plm_last_error(s));
            rc = CLI_USAGE;
            goto out;
        }
    for (int i = 0; i < o.n_kv; i++)
        if (plm_session_set_kv(s, o.kv[i]) != PLM_OK) {
            fprintf(stderr, "prunelm eval: %s\n", plm_last_error(s));
            rc = CLI_USAGE;
            goto out;
        }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    char summaries[EVAL_MAX_SETTINGS][4200];
    const int np = o.n_prune ? o.n_prune : 1, nk = o.n_kv ? o.n_kv : 1, n = np * nk;
    if (n == 1) { /* one setting: results straight in the output folder */
        rc = run_setting(&o, s, o.n_prune ? o.prune[0] : NULL, o.n_kv ? o.kv[0] : NULL, o.out,
                         &ds, summaries[0], sizeof summaries[0]);
        goto out;
    }
    /* the grid: every --prune with every --kv, each in its own folder */
    const char *sums[EVAL_MAX_SETTINGS], *pr[EVAL_MAX_SETTINGS], *kvs[EVAL_MAX_SETTINGS];
    for (int i = 0; i < n; i++) {
        pr[i] = o.n_prune ? o.prune[i / nk] : NULL;
        kvs[i] = o.n_kv ? o.kv[i % nk] : NULL;
        char name[256] = "", part[128], dir[4096 + 300];
        if (pr[i]) slug(pr[i], name, sizeof name);
        if (kvs[i]) {
            slug(kvs[i], part, sizeof part);
            snprintf(name + strlen(name), sizeof name - strlen(name), "%skv_%s",
                     pr[i] ? "__" : "", part);
        }
        snprintf(dir, sizeof dir, "%s/%s", o.out, name);
        /* a fresh session per setting: buffers an earlier setting grew would otherwise count
         * in this one's peak_bytes */
        if (i > 0) {
            plm_session_free(s);
            s = NULL;
            if (plm_session_new(m, &sp, &s, &err) != PLM_OK) {
                fprintf(stderr, "prunelm eval: %s\n", err.msg);
                rc = CLI_FAIL;
                goto out;
            }
        }
        rc = run_setting(&o, s, pr[i], kvs[i], dir, &ds, summaries[i], sizeof summaries[i]);
        if (rc != CLI_OK) goto out;
        sums[i] = summaries[i];
    }
    char md[4200], png[4200], kvpng[4200];
    snprintf(md, sizeof md, "%s/report.md", o.out);
    snprintf(png, sizeof png, "%s/accuracy.png", o.out);
    snprintf(kvpng, sizeof kvpng, "%s/accuracy_kv.png", o.out);
    if (eval_report(pr, o.n_kv ? kvs : NULL, sums, n, md, png, o.n_kv ? kvpng : NULL, &err) !=
        PLM_OK) {
        fprintf(stderr, "prunelm eval: %s\n", err.msg);
        rc = CLI_FAIL;
    } else if (!o.quiet) {
        fprintf(stderr, "prunelm eval: wrote %s, %s%s%s\n", md, png, o.n_kv ? " and " : "",
                o.n_kv ? kvpng : "");
    }
out:
    plm_session_free(s);
    plm_model_free(m);
    eval_dataset_free(&ds);
    return rc;
}
