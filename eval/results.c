/* The resumable results file. Each item's line is written whole and fsynced before the next
 * item starts, so a crash or SIGKILL loses at most the item in flight, and a torn final line
 * is recognised (no newline, or not a JSON object) and cut off on resume. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval/eval.h"

plm_status eval_fail(plm_error *err, plm_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return st;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads the ids of complete lines and the byte length of the complete prefix. */
static plm_status read_done(eval_results *r, FILE *f, long *good_len, plm_error *err)
{
    char *line = NULL;
    size_t cap = 0, alloc = 0;
    ssize_t len;
    long pos = 0;
    *good_len = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        int complete = len > 0 && line[len - 1] == '\n';
        cJSON *o = complete ? cJSON_Parse(line) : NULL;
        const cJSON *id = o ? cJSON_GetObjectItemCaseSensitive(o, "id") : NULL;
        if (!cJSON_IsString(id)) {
            cJSON_Delete(o);
            break; /* a torn or foreign line: everything from here on is dropped */
        }
        if (r->n_done == alloc) {
            alloc = alloc ? alloc * 2 : 256;
            char **p = realloc(r->done, alloc * sizeof *p);
            if (!p) {
                cJSON_Delete(o);
                free(line);
                return eval_fail(err, PLM_E_NOMEM, "out of memory");
            }
            r->done = p;
        }
        r->done[r->n_done++] = strdup(id->valuestring);
        cJSON_Delete(o);
        pos += (long)len;
        *good_len = pos;
    }
    free(line);
    if (r->n_done) qsort(r->done, r->n_done, sizeof *r->done, cmp_str);
    return PLM_OK;
}

plm_status eval_results_open(const char *path, int resume, eval_results *r, plm_error *err)
{
    memset(r, 0, sizeof *r);
    r->path = strdup(path);
    if (!r->path) return eval_fail(err, PLM_E_NOMEM, "out of memory");
    FILE *f = fopen(path, resume ? "r+b" : "wbx");
    if (!f && resume && errno == ENOENT) f = fopen(path, "w+b"); /* nothing to resume yet */
    if (!f) {
        plm_status st = eval_fail(err, PLM_E_IO, "%s: %s%s", path, strerror(errno),
                                  errno == EEXIST ? " (use --resume to continue it, or remove it)"
                                                  : "");
        eval_results_close(r);
        return st;
    }
    if (resume) {
        long good;
        plm_status st = read_done(r, f, &good, err);
        if (st == PLM_OK && (fflush(f) || ftruncate(fileno(f), good) || fseek(f, good, SEEK_SET)))
            st = eval_fail(err, PLM_E_IO, "%s: cannot cut the torn last line: %s", path,
                           strerror(errno));
        if (st != PLM_OK) {
            fclose(f);
            eval_results_close(r);
            return st;
        }
    }
    r->f = f;
    return PLM_OK;
}

int eval_results_has(const eval_results *r, const char *id)
{
    return r->n_done && bsearch(&id, r->done, r->n_done, sizeof *r->done, cmp_str) != NULL;
}

plm_status eval_results_append(eval_results *r, const char *line, plm_error *err)
{
    if (fputs(line, r->f) == EOF || fputc('\n', r->f) == EOF || fflush(r->f) ||
        fsync(fileno(r->f)))
        return eval_fail(err, PLM_E_IO, "%s: %s", r->path, strerror(errno));
    return PLM_OK;
}

void eval_results_close(eval_results *r)
{
    if (r->f) fclose(r->f);
    for (size_t i = 0; i < r->n_done; i++) free(r->done[i]);
    free(r->done);
    free(r->path);
    memset(r, 0, sizeof *r);
}
