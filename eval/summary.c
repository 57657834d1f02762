/* The summary of a results file: accuracy overall and per question type, mean timings. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval/eval.h"

#define MAX_TYPES 64

typedef struct tally {
    char name[64];
    long n, correct;
} tally;

static tally *tally_for(tally *t, int *nt, const char *name)
{
    for (int i = 0; i < *nt; i++)
        if (!strcmp(t[i].name, name)) return &t[i];
    if (*nt == MAX_TYPES) return NULL;
    snprintf(t[*nt].name, sizeof t[*nt].name, "%s", name);
    t[*nt].n = t[*nt].correct = 0;
    return &t[(*nt)++];
}

static double num(const cJSON *o, const char *a, const char *b)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b) x = cJSON_GetObjectItemCaseSensitive(x, b);
    return cJSON_IsNumber(x) ? x->valuedouble : 0;
}

plm_status eval_write_text(const char *path, const char *text, plm_error *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return eval_fail(err, PLM_E_IO, "%s: %s", path, strerror(errno));
    int bad = fputs(text, f) == EOF || fflush(f) || fsync(fileno(f));
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) {
        int e = errno;
        remove(tmp);
        return eval_fail(err, PLM_E_IO, "%s: %s", path, strerror(e));
    }
    return PLM_OK;
}

plm_status eval_summarize(const char *results_path, const char *summary_path, double *accuracy,
                          plm_error *err)
{
    FILE *f = fopen(results_path, "rb");
    if (!f) return eval_fail(err, PLM_E_IO, "%s: %s", results_path, strerror(errno));
    tally types[MAX_TYPES], all = {"all", 0, 0};
    int nt = 0;
    double vis = 0, pre = 0, dec = 0, gen = 0, kv = 0, img = 0, img_avg = 0, peak = 0;
    int64_t errors = 0;
    char first_error[512] = "";
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) >= 0) {
        cJSON *o = cJSON_Parse(line);
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            continue;
        }
        int ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "correct"));
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
        tally *t = tally_for(types, &nt, cJSON_IsString(ty) ? ty->valuestring : "untyped");
        all.n++;
        all.correct += ok;
        if (t) {
            t->n++;
            t->correct += ok;
        }
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
        if (cJSON_IsString(e)) {
            /* counted wrong, and kept out of the means: its zeros are no measurement */
            if (!errors++) snprintf(first_error, sizeof first_error, "%s", e->valuestring);
            cJSON_Delete(o);
            continue;
        }
        vis += num(o, "timings", "vision_ms");
        pre += num(o, "timings", "prefill_ms");
        dec += num(o, "timings", "decode_ms");
        gen += num(o, "tokens", "generated");
        img += num(o, "tokens", "image");
        img_avg += num(o, "tokens", "image_avg");
        kv += num(o, "kv_bytes", NULL);
        const double pk = num(o, "peak_bytes", NULL);
        peak = pk > peak ? pk : peak;
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    double n = all.n > errors ? (double)(all.n - errors) : 1; /* answered items, for the means */
    cJSON *s = cJSON_CreateObject(), *per = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "items", (double)all.n);
    cJSON_AddNumberToObject(s, "correct", (double)all.correct);
    cJSON_AddNumberToObject(s, "accuracy", all.n ? all.correct / (double)all.n : 0);
    cJSON_AddNumberToObject(s, "errors", (double)errors);
    if (errors) cJSON_AddStringToObject(s, "first_error", first_error);
    for (int i = 0; i < nt; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "items", (double)types[i].n);
        cJSON_AddNumberToObject(t, "accuracy", types[i].correct / (double)types[i].n);
        cJSON_AddItemToObject(per, types[i].name, t);
    }
    cJSON_AddItemToObject(s, "per_type", per);
    cJSON_AddNumberToObject(s, "mean_vision_ms", vis / n);
    cJSON_AddNumberToObject(s, "mean_prefill_ms", pre / n);
    cJSON_AddNumberToObject(s, "mean_decode_ms", dec / n);
    cJSON_AddNumberToObject(s, "mean_generated_tokens", gen / n);
    cJSON_AddNumberToObject(s, "mean_image_tokens", img / n);
    cJSON_AddNumberToObject(s, "mean_image_tokens_per_layer", img_avg / n);
    cJSON_AddNumberToObject(s, "mean_kv_bytes", kv / n);
    /* the most any item held in engine buffers (0: not counted by that backend) */
    cJSON_AddNumberToObject(s, "peak_bytes", peak);
    char *text = cJSON_Print(s);
    cJSON_Delete(s);
    if (!text) return eval_fail(err, PLM_E_NOMEM, "out of memory");
    plm_status st = eval_write_text(summary_path, text, err);
    free(text);
    if (accuracy) *accuracy = all.n ? all.correct / (double)all.n : 0;
    return st;
}

void eval_normalize(const char *in, char *out, size_t n)
{
    while (*in == ' ' || *in == '\t' || *in == '\n' || *in == '\r') in++;
    size_t k = 0;
    for (; *in && k + 1 < n; in++) {
        char c = *in;
        out[k++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    out[k] = '\0';
    while (k > 0 && strchr(" \t\r\n.!?,;:\"'", out[k - 1])) out[--k] = '\0';
}

int eval_is_correct(const char *prediction, const char *answer)
{
    char p[512], a[512];
    eval_normalize(prediction, p, sizeof p);
    eval_normalize(answer, a, sizeof a);
    return a[0] && !strcmp(p, a);
}
