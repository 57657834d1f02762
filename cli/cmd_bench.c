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
    "  --prune SPEC         a pruning policy (see prunelm ask --help)\n"
    "  --kv SPEC            a KV-cache policy (see prunelm ask --help)\n"
    "  --device cpu|cuda|auto, --threads N\n"
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

int cmd_bench(int argc, char **argv)
{
    const char *C = "bench", *model = NULL, *image = NULL, *prune = NULL, *json = NULL,
               *kv = NULL;
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
        } else if (!strcmp(a, "--prune")) { VALUE(); prune = v;
        } else if (!strcmp(a, "--kv")) { VALUE(); kv = v;
        } else if (!strcmp(a, "--json")) { VALUE(); json = v;
        } else if (!strcmp(a, "--prompt-tokens")) {
            VALUE(); if (!cli_int(C, a, v, 1, 100000, &n)) return CLI_USAGE; prompt_tokens = (int)n;
        } else if (!strcmp(a, "--gen")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1 << 20, &n)) return CLI_USAGE; gen = (int)n;
        } else if (!strcmp(a, "--repeat")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1000, &n)) return CLI_USAGE; repeat = (int)n;
        } else if (!strcmp(a, "--threads")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1024, &n)) return CLI_USAGE; mp.n_threads = (int)n;
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
           *tps = calloc((size_t)repeat, 8);
    int rc = CLI_FAIL;
    const plm_timings *t = NULL;
    plm_session_params sp = plm_session_default_params();
    sp.max_tokens = gen;
    sp.ignore_eos = 1;
    if (!vis || !ttft || !tps) goto out;
    if (plm_model_load(model, &mp, &m, &err) != PLM_OK ||
        plm_session_new(m, &sp, &s, &err) != PLM_OK) {
        fprintf(stderr, "prunelm bench: %s\n", err.msg);
        goto out;
    }
    if (!(q = question(plm_model_tokenizer(m), prompt_tokens))) goto out;
    if ((prune && plm_session_set_prune(s, prune) != PLM_OK) ||
        (kv && plm_session_set_kv(s, kv) != PLM_OK) ||
        (plm_model_has_vision(m) && plm_session_set_image_file(s, image) != PLM_OK)) {
        fprintf(stderr, "prunelm bench: %s\n", plm_last_error(s));
        goto out;
    }
    double dev_peak = -1;
    for (int r = -1; r < repeat; r++) { /* run -1 warms up */
        if (plm_session_ask(s, q, NULL, NULL, NULL) != PLM_OK) {
            fprintf(stderr, "prunelm bench: %s\n", plm_last_error(s));
            goto out;
        }
        t = plm_session_timings(s);
        if (r < 0) continue;
        vis[r] = t->vision_ms;
        ttft[r] = t->vision_ms + t->prefill_ms;
        tps[r] = t->decode_ms > 0 ? (t->n_generated - 1) * 1000.0 / t->decode_ms : 0;
        /* the backend only grows its buffers, so the most in use after a run is the peak */
        uint64_t used, total;
        if (plm_session_device_memory(s, &used, &total) == PLM_OK && (double)used > dev_peak)
            dev_peak = (double)used;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double v = median(vis, repeat), f = median(ttft, repeat), d = median(tps, repeat);
    char *desc = plm_model_describe(m);
    const char *dev = desc && strstr(desc, "device: cuda") ? "cuda" : "cpu";
    free(desc);
    printf("| measure (median of %d) | value |\n|---|---|\n", repeat);
    printf("| device | %s |\n| prompt tokens (image) | %d (%d) |\n", dev, t->n_prompt,
           t->n_image_tokens);
    printf("| vision tower + projector | %.2f ms |\n| time to first token | %.2f ms |\n", v, f);
    printf("| decode | %.1f tokens/s over %d tokens |\n", d, t->n_generated);
    printf("| KV cache at the end | %.1f MiB |\n| peak host memory (RSS) | %.1f MiB |\n",
           t->kv_bytes / 1048576.0, ru.ru_maxrss / 1024.0);
    if (dev_peak >= 0)
        printf("| device memory in use after the runs (driver: context included) | %.2f GiB |\n",
               dev_peak / 1073741824.0);
    rc = CLI_OK;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", model);
        cJSON_AddStringToObject(o, "device", dev);
        cJSON_AddStringToObject(o, "prune", prune ? prune : "none");
        cJSON_AddStringToObject(o, "kv", kv ? kv : "none");
        cJSON_AddNumberToObject(o, "repeat", repeat);
        cJSON_AddNumberToObject(o, "prompt_tokens", t->n_prompt);
        cJSON_AddNumberToObject(o, "image_tokens", t->n_image_tokens);
        cJSON_AddNumberToObject(o, "generated_tokens", t->n_generated);
        cJSON_AddNumberToObject(o, "vision_ms", v);
        cJSON_AddNumberToObject(o, "ttft_ms", f);
        cJSON_AddNumberToObject(o, "decode_tokens_per_s", d);
        cJSON_AddNumberToObject(o, "kv_bytes", (double)t->kv_bytes);
        cJSON_AddNumberToObject(o, "peak_rss_bytes", ru.ru_maxrss * 1024.0);
        if (dev_peak >= 0) cJSON_AddNumberToObject(o, "device_used_bytes", dev_peak);
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
    plm_session_free(s);
    plm_model_free(m);
    return rc;
}
