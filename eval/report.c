/* The report of a pruning sweep: one Markdown table and one plot over the runs' summaries. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/eval.h"

#define MAX_TYPES 16

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static cJSON *read_json(const char *path, plm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        eval_fail(err, PLM_E_IO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 && n < (1 << 24) ? malloc((size_t)n + 1) : NULL;
    cJSON *j = NULL;
    if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = '\0';
        j = cJSON_Parse(buf);
    }
    free(buf);
    fclose(f);
    if (!j) eval_fail(err, PLM_E_FORMAT, "%s: not a summary JSON", path);
    return j;
}

/* The method of a spec: "vflowopt:tokens=64" -> "vflowopt"; "@f" -> "f". */
static void method_of(const char *spec, char *out, size_t n)
{
    const char *s = spec[0] == '@' ? spec + 1 : spec;
    size_t k = strcspn(s, ":");
    snprintf(out, n, "%.*s", (int)(k < n - 1 ? k : n - 1), s);
}

static int by_x(const void *a, const void *b)
{
    const double *x = a, *y = b;
    return (*x > *y) - (*x < *y);
}

/* Groups runs by method into sorted lines of (x, accuracy). */
static int make_series(const char *const *specs, cJSON **sum, int n, int kv_axis,
                       eval_series *series)
{
    int ns = 0;
    for (int i = 0; i < n; i++) {
        char m[48];
        method_of(specs[i] ? specs[i] : "none", m, sizeof m);
        int k = 0;
        while (k < ns && strcmp(series[k].name, m)) k++;
        if (k == ns) {
            if (ns == 16) continue;
            memset(&series[ns], 0, sizeof series[ns]);
            snprintf(series[ns++].name, sizeof series[0].name, "%s", m);
        }
        if (series[k].n < EVAL_MAX_POINTS) {
            series[k].x[series[k].n] = kv_axis ? num(sum[i], "mean_kv_bytes") / (1 << 20)
                                               : num(sum[i], "mean_image_tokens_per_layer");
            series[k].y[series[k].n++] = num(sum[i], "accuracy");
        }
    }
    for (int k = 0; k < ns; k++) {
        double pts[EVAL_MAX_POINTS][2];
        for (int j = 0; j < series[k].n; j++) {
            pts[j][0] = series[k].x[j];
            pts[j][1] = series[k].y[j];
        }
        qsort(pts, (size_t)series[k].n, sizeof pts[0], by_x);
        for (int j = 0; j < series[k].n; j++) {
            series[k].x[j] = pts[j][0];
            series[k].y[j] = pts[j][1];
        }
    }
    return ns;
}

plm_status eval_report(const char *const *specs, const char *const *kv,
                       const char *const *summaries, int n, const char *md_path,
                       const char *png_path, const char *kv_png_path, plm_error *err)
{
    cJSON **sum = calloc((size_t)(n ? n : 1), sizeof *sum);
    if (!sum) return eval_fail(err, PLM_E_NOMEM, "out of memory");
    plm_status st = PLM_OK;
    for (int i = 0; i < n && st == PLM_OK; i++)
        if (!(sum[i] = read_json(summaries[i], err))) st = PLM_E_FORMAT;
    /* the question types, in the order they first appear */
    char types[MAX_TYPES][48];
    int nt = 0;
    for (int i = 0; i < n && st == PLM_OK; i++) {
        const cJSON *per = cJSON_GetObjectItemCaseSensitive(sum[i], "per_type");
        for (const cJSON *t = per ? per->child : NULL; t; t = t->next) {
            int seen = 0;
            for (int k = 0; k < nt; k++) seen |= !strcmp(types[k], t->string);
            if (!seen && nt < MAX_TYPES) snprintf(types[nt++], sizeof types[0], "%s", t->string);
        }
    }
    size_t cap = 4096 + (size_t)n * (1024 + 16 * MAX_TYPES), len = 0;
    char *md = st == PLM_OK ? malloc(cap) : NULL;
    if (st == PLM_OK && !md) st = eval_fail(err, PLM_E_NOMEM, "out of memory");
    if (st == PLM_OK) {
        len += (size_t)snprintf(md + len, cap - len, "# Pruning sweep\n\n| setting |%s image "
                                "tokens (prompt) | per layer | accuracy |", kv ? " KV policy |" : "");
        for (int k = 0; k < nt; k++) len += (size_t)snprintf(md + len, cap - len, " %s |", types[k]);
        len += (size_t)snprintf(md + len, cap - len, " KV MiB | peak MiB | vision ms | "
                                "prefill ms | decode ms |\n|---|---|---|---|%s",
                                kv ? "---|" : "");
        for (int k = 0; k < nt; k++) len += (size_t)snprintf(md + len, cap - len, "---|");
        len += (size_t)snprintf(md + len, cap - len, "---|---|---|---|---|\n");
        for (int i = 0; i < n; i++) {
            const cJSON *s = sum[i], *per = cJSON_GetObjectItemCaseSensitive(s, "per_type");
            len += (size_t)snprintf(md + len, cap - len, "| `%s` |", specs[i] ? specs[i] : "none");
            if (kv) len += (size_t)snprintf(md + len, cap - len, " `%s` |", kv[i] ? kv[i] : "none");
            len += (size_t)snprintf(md + len, cap - len, " %.1f | %.1f | %.1f%% |",
                                    num(s, "mean_image_tokens"),
                                    num(s, "mean_image_tokens_per_layer"),
                                    100 * num(s, "accuracy"));
            for (int k = 0; k < nt; k++) {
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(per, types[k]);
                if (t) len += (size_t)snprintf(md + len, cap - len, " %.1f%% |", 100 * num(t, "accuracy"));
                else len += (size_t)snprintf(md + len, cap - len, " – |");
            }
            len += (size_t)snprintf(md + len, cap - len, " %.2f |", num(s, "mean_kv_bytes") /
                                    (1 << 20));
            if (num(s, "peak_bytes") > 0)
                len += (size_t)snprintf(md + len, cap - len, " %.1f |",
                                        num(s, "peak_bytes") / (1 << 20));
            else
                len += (size_t)snprintf(md + len, cap - len, " – |");
            len += (size_t)snprintf(md + len, cap - len, " %.1f | %.1f | %.1f |\n",
                                    num(s, "mean_vision_ms"), num(s, "mean_prefill_ms"),
                                    num(s, "mean_decode_ms"));
        }
        /* settings where items failed (a prompt over the context, a bad image): their rows
         * average the answered items only, so say how many did not */
        int any = 0;
        for (int i = 0; i < n; i++) {
            const double ne = num(sum[i], "errors");
            if (ne <= 0) continue;
            const cJSON *fe = cJSON_GetObjectItemCaseSensitive(sum[i], "first_error");
            if (!any++) len += (size_t)snprintf(md + len, cap - len, "\nFailed items (counted "
                                                "wrong; the means above leave them out):\n");
            len += (size_t)snprintf(md + len, cap - len, "- `%s`%s%s%s: %.0f of %.0f, first: "
                                    "%.200s\n", specs[i] ? specs[i] : "none", kv ? " + `" : "",
                                    kv ? (kv[i] ? kv[i] : "none") : "", kv ? "`" : "", ne,
                                    num(sum[i], "items"),
                                    cJSON_IsString(fe) ? fe->valuestring : "?");
        }
        len += (size_t)snprintf(md + len, cap - len, "\n![accuracy against image tokens per "
                                "layer](%s)\n", strrchr(png_path, '/') ? strrchr(png_path, '/') + 1
                                                                       : png_path);
        if (kv_png_path)
            len += (size_t)snprintf(md + len, cap - len, "\n![accuracy against KV MiB](%s)\n",
                                    strrchr(kv_png_path, '/') ? strrchr(kv_png_path, '/') + 1
                                                              : kv_png_path);
        st = eval_write_text(md_path, md, err);
    }
    free(md);
    /* one line per method, points sorted along x */
    eval_series series[16];
    if (st == PLM_OK) {
        int ns = make_series(specs, sum, n, 0, series);
        st = eval_plot_png(png_path, series, ns, "IMAGE TOKENS PER LAYER", err);
    }
    if (st == PLM_OK && kv && kv_png_path) {
        int ns = make_series(kv, sum, n, 1, series);
        st = eval_plot_png(kv_png_path, series, ns, "KV CACHE MIB", err);
    }
    for (int i = 0; i < n; i++) cJSON_Delete(sum[i]);
    free(sum);
    return st;
}
