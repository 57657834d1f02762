/* prunelm tune: VFlowOpt's flow-guided search for its pruning hyperparameters.
 *
 * The objective is VFlowOpt's (llava_ov_opt_all.py, black_box_function): over calibration items,
 * the cosine similarity between the last prompt token's final-norm hidden state with and without
 * pruning — how much of the visual information still flows to the token that answers. The
 * search space is theirs (vision keep r0, first-stage keep r1, global threshold t, cell size m,
 * entropy weight alpha; r2 derived from the budget) plus the two stage layers, which their
 * search fixes per model and ours cannot (prunelm's models differ in depth), and [prunelm] beta,
 * the weight of the last prompt token's attention beside the carried score at those stages. Their optimiser is scikit-optimize's
 * Gaussian process; ours is a seeded random exploration followed by a shrinking local search
 * around the best point, which needs no library and is reproducible; the shipped configuration
 * for the budget is always the first candidate, so the result is never worse than it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "prunelm.h"
#include "cli.h"
#include "eval/eval.h"

static const char *HELP =
    "usage: prunelm tune --data FILE.jsonl --tokens N --out FILE.spec [options]\n"
    "Searches VFlowOpt's hyperparameters for a budget of N image tokens per decoder layer so the\n"
    "last prompt token's representation stays closest (cosine) to the unpruned one over\n"
    "calibration items (questions with images; never the test split). Writes a spec file for\n"
    "--prune @FILE.\n"
    "  --model DIR    checkpoint (default: the bundled model)\n"
    "  --samples N    calibration items (default 30, VFlowOpt's)\n"
    "  --calls N      objective evaluations (default 300, VFlowOpt's)\n"
    "  --seed S       search seed (default 42)\n"
    "  --threads N    CPU threads\n"
    "  -q             no progress on stderr\n";

enum { NDIM = 8 }; /* r0, r1, t, m, alpha, beta, first stage layer, gap to the second */

typedef struct tune_ctx {
    plm_session *s;
    const eval_item **items;
    float **ref;      /* unpruned hidden state per item */
    int n;
    size_t dim;
    double tokens;
    int n_patches;    /* the vision tower's grid, squared */
    int n_layers;     /* the decoder's */
} tune_ctx;

static uint64_t next_u64(uint64_t *st)
{
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *st) { return (double)(next_u64(st) >> 11) / 9007199254740992.0; }

static double gauss(uint64_t *st)
{
    double u = uniform(st), v = uniform(st);
    return sqrt(-2 * log(u > 1e-300 ? u : 1e-300)) * cos(2 * M_PI * v);
}

/* Runs one prompt (prefill only) and returns the last token's final-norm hidden state. */
static int prefill(tune_ctx *c, int i, const char *spec, const float **h)
{
    char *ans = NULL;
    if (plm_session_set_prune(c->s, spec) != PLM_OK ||
        plm_session_set_image_file(c->s, c->items[i]->image) != PLM_OK ||
        plm_session_ask_context(c->s, c->items[i]->context, c->items[i]->question, 0, NULL,
                                NULL, &ans) != PLM_OK)
        return 0;
    free(ans);
    size_t d;
    *h = plm_session_last_hidden(c->s, &d);
    return 1;
}

/* Mean cosine similarity with the unpruned runs; -2 when the setting is infeasible: refused,
 * or over the budget on some item (its first stages alone keep more image rows than the
 * budget allows, which the last stage cannot pay back). */
static double objective(tune_ctx *c, const char *spec)
{
    double sum = 0;
    for (int i = 0; i < c->n; i++) {
        const float *h;
        if (!prefill(c, i, spec, &h)) return -2;
        if (plm_session_timings(c->s)->image_tokens_avg > c->tokens + 0.5) return -2;
        double dot = 0, na = 0, nb = 0;
        for (size_t k = 0; k < c->dim; k++) {
            dot += (double)h[k] * c->ref[i][k];
            na += (double)h[k] * h[k];
            nb += (double)c->ref[i][k] * c->ref[i][k];
        }
        double cs = na > 0 && nb > 0 ? dot / sqrt(na * nb) : 0;
        sum += cs == cs ? cs : 0; /* a NaN counts as no similarity, as theirs does */
    }
    return sum / c->n;
}

static void spec_of(const tune_ctx *c, const double *x, char *out, size_t n)
{
    /* stage layers from [1, L-2] and a gap of at least one layer: both before the last layer */
    int k1 = (int)floor(x[6]), k2 = k1 + (int)floor(x[7]);
    if (k2 > c->n_layers - 1) k2 = c->n_layers - 1;
    snprintf(out, n, "vflowopt:tokens=%g,r0=%.5f,r1=%.5f,t=%.4f,m=%.4f,alpha=%.4f,beta=%.4f,"
             "layers=%d/%d", c->tokens, x[0], x[1], x[2], x[3], x[4], x[5], k1, k2);
}

static int parse(int argc, char **argv, const char **model, const char **data, const char **out,
                 double *tokens, int *samples, int *calls, uint64_t *seed, int *threads, int *quiet)
{
    const char *C = "tune";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long n;
        double d;
#define VALUE() if (!(v = cli_value(C, argc, argv, &i))) return 0
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            exit(CLI_OK);
        } else if (!strcmp(a, "--model")) { VALUE(); *model = v;
        } else if (!strcmp(a, "--data")) { VALUE(); *data = v;
        } else if (!strcmp(a, "--out")) { VALUE(); *out = v;
        } else if (!strcmp(a, "--tokens")) {
            VALUE(); if (!cli_float(C, a, v, 1, 1e6, &d)) return 0; *tokens = d;
        } else if (!strcmp(a, "--samples")) {
            VALUE(); if (!cli_int(C, a, v, 1, 100000, &n)) return 0; *samples = (int)n;
        } else if (!strcmp(a, "--calls")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1000000, &n)) return 0; *calls = (int)n;
        } else if (!strcmp(a, "--seed")) {
            VALUE(); if (!cli_int(C, a, v, 0, 1LL << 62, &n)) return 0; *seed = (uint64_t)n;
        } else if (!strcmp(a, "--threads")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1024, &n)) return 0; *threads = (int)n;
        } else if (!strcmp(a, "-q")) { *quiet = 1;
        } else {
            fprintf(stderr, "prunelm tune: unknown argument '%s' (see prunelm tune --help)\n", a);
            return 0;
        }
#undef VALUE
    }
    if (!*data || !*out || *tokens <= 0) {
        fprintf(stderr, "prunelm tune: --data, --tokens and --out are required\n");
        return 0;
    }
    return 1;
}

/* The calibration items: questions with an image, never from a test split. */
static int pick_items(const eval_dataset *ds, int want, const eval_item **out)
{
    int n = 0;
    for (size_t i = 0; i < ds->n && n < want; i++)
        if (ds->items[i].image) out[n++] = &ds->items[i];
    return n;
}

static int search(tune_ctx *c, int calls, uint64_t seed, int quiet, double *best_x,
                  double *best_f)
{
    /* their space, with r0 around the budget's share of the tokens */
    double f = c->tokens / c->n_patches;
    const int L = c->n_layers;
    const double lo[NDIM] = {f * 0.5, 0.2, 0, 3, -1, 0, 1, 1};
    const double hi[NDIM] = {f * 3 < 1 ? f * 3 : 1, 1, 50, 24, 1, 3, L - 1.001, L - 1.001};
    uint64_t st = seed ? seed : 1;
    char spec[256];
    snprintf(spec, sizeof spec, "vflowopt:tokens=%g", c->tokens);
    *best_f = objective(c, spec); /* the shipped configuration first */
    double x[NDIM];
    int have = *best_f > -2, n_init = calls / 10 > 1 ? calls / 10 : 1;
    for (int k = 0; k < NDIM; k++) best_x[k] = NAN;
    for (int call = 1; call < calls; call++) {
        double frac = (double)(call - n_init) / (calls - n_init > 1 ? calls - n_init : 1);
        for (int k = 0; k < NDIM; k++) {
            if (call <= n_init || !have || isnan(best_x[k])) {
                x[k] = lo[k] + uniform(&st) * (hi[k] - lo[k]);
            } else { /* around the best, the steps shrinking from 30% to 3% of the range */
                double sigma = (0.3 - 0.27 * frac) * (hi[k] - lo[k]);
                x[k] = best_x[k] + sigma * gauss(&st);
                x[k] = x[k] < lo[k] ? lo[k] : x[k] > hi[k] ? hi[k] : x[k];
            }
        }
        spec_of(c, x, spec, sizeof spec);
        double v = objective(c, spec);
        if (v > *best_f) {
            *best_f = v;
            memcpy(best_x, x, sizeof x);
            have = 1;
        }
        if (!quiet && isatty(2))
            fprintf(stderr, "\rprunelm tune: %d/%d calls, best cosine %.5f", call + 1, calls,
                    *best_f);
    }
    if (!quiet && isatty(2)) fputc('\n', stderr);
    return have;
}

int cmd_tune(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *out = NULL;
    double tokens = 0;
    int samples = 30, calls = 300, threads = 0, quiet = 0;
    uint64_t seed = 42;
    if (!parse(argc, argv, &model, &data, &out, &tokens, &samples, &calls, &seed, &threads,
               &quiet))
        return CLI_USAGE;
    char dmodel[4096];
    if (!model) {
        cli_default_model(dmodel, sizeof dmodel);
        model = dmodel;
    }
    plm_error err;
    eval_dataset ds;
    if (eval_dataset_load(data, &ds, &err) != PLM_OK) {
        fprintf(stderr, "prunelm tune: %s\n", err.msg);
        return CLI_FAIL;
    }
    for (size_t i = 0; i < ds.n; i++)
        if (!strncmp(ds.items[i].id, "test-", 5)) {
            fprintf(stderr, "prunelm tune: %s: item %s is from a test split; tune on validation "
                    "data\n", data, ds.items[i].id);
            eval_dataset_free(&ds);
            return CLI_USAGE;
        }
    tune_ctx c = {0};
    c.tokens = tokens;
    c.items = calloc((size_t)samples, sizeof *c.items);
    c.ref = calloc((size_t)samples, sizeof *c.ref);
    plm_model_params mp = plm_model_default_params();
    mp.n_threads = threads;
    plm_session_params sp = plm_session_default_params();
    sp.max_tokens = 0; /* prefill only: the objective reads the last prompt token */
    plm_model *m = NULL;
    int rc = CLI_FAIL;
    if (!c.items || !c.ref) goto out;
    c.n = pick_items(&ds, samples, c.items);
    if (c.n == 0) {
        fprintf(stderr, "prunelm tune: %s has no items with an image\n", data);
        goto out;
    }
    if (plm_model_load(model, &mp, &m, &err) != PLM_OK ||
        plm_session_new(m, &sp, &c.s, &err) != PLM_OK) {
        fprintf(stderr, "prunelm tune: %s\n", err.msg);
        goto out;
    }
    c.n_layers = plm_model_text_layers(m);
    if (c.n_layers < 3) {
        fprintf(stderr, "prunelm tune: %s: a decoder of %d layers has no room for VFlowOpt's "
                "two stages\n", model, c.n_layers);
        goto out;
    }
    for (int i = 0; i < c.n; i++) {
        const float *h;
        if (!prefill(&c, i, "none", &h)) {
            fprintf(stderr, "prunelm tune: %s: %s\n", c.items[i]->id, plm_last_error(c.s));
            goto out;
        }
        plm_session_last_hidden(c.s, &c.dim);
        size_t nk;
        int grid;
        plm_session_kept_patches(c.s, &nk, &grid);
        c.n_patches = grid * grid;
        if (!(c.ref[i] = malloc(c.dim * sizeof(float)))) goto out;
        memcpy(c.ref[i], h, c.dim * sizeof(float));
    }
    double best_x[NDIM], best_f;
    int found = search(&c, calls, seed, quiet, best_x, &best_f);
    if (best_f <= -2) {
        fprintf(stderr, "prunelm tune: no setting fits a budget of %g tokens with this model\n",
                tokens);
        goto out;
    }
    char spec[256], text[1024];
    if (found && !isnan(best_x[0])) spec_of(&c, best_x, spec, sizeof spec);
    else snprintf(spec, sizeof spec, "vflowopt:tokens=%g", tokens);
    time_t now = time(NULL);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%d", gmtime(&now));
    snprintf(text, sizeof text, "# prunelm tune %s: VFlowOpt for %g image tokens per layer\n"
             "# mean cosine %.6f over %d calibration items of %s, %d calls, seed %llu\n%s\n",
             when, tokens, best_f, c.n, data, calls, (unsigned long long)seed, spec);
    if (eval_write_text(out, text, &err) != PLM_OK) {
        fprintf(stderr, "prunelm tune: %s\n", err.msg);
        goto out;
    }
    if (!quiet) fprintf(stderr, "prunelm tune: %s (cosine %.5f) -> %s\n", spec, best_f, out);
    rc = CLI_OK;
out:
    for (int i = 0; i < c.n; i++) free(c.ref[i]);
    free(c.ref);
    free(c.items);
    plm_session_free(c.s);
    plm_model_free(m);
    eval_dataset_free(&ds);
    return rc;
}
