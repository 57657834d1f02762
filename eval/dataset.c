#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/eval.h"

#define MAX_LINE (1u << 24) /* a long-context item can carry megabytes of text; not more */

static char *dup_field(const cJSON *o, const char *key, int required, const char *path,
                       size_t line, plm_status *st, plm_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) {
            *st = PLM_E_MISSING;
            snprintf(err->msg, sizeof err->msg, "%s:%zu: field \"%s\" is missing", path, line, key);
        }
        return NULL;
    }
    if (cJSON_IsNumber(v)) { /* numeric ids and answers are common: keep their text */
        char buf[64];
        snprintf(buf, sizeof buf, "%.17g", v->valuedouble);
        return strdup(buf);
    }
    if (!cJSON_IsString(v)) {
        *st = PLM_E_FORMAT;
        snprintf(err->msg, sizeof err->msg, "%s:%zu: field \"%s\" is not a string", path, line,
                 key);
        return NULL;
    }
    char *s = strdup(v->valuestring);
    if (!s) *st = PLM_E_NOMEM;
    return s;
}

static void item_free(eval_item *it)
{
    free(it->id);
    free(it->image);
    free(it->context);
    free(it->question);
    free(it->answer);
    free(it->type);
}

void eval_dataset_free(eval_dataset *ds)
{
    for (size_t i = 0; i < ds->n; i++) item_free(&ds->items[i]);
    free(ds->items);
    ds->items = NULL;
    ds->n = 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static plm_status check_unique(const char *path, eval_dataset *ds, plm_error *err)
{
    char **ids = malloc((ds->n ? ds->n : 1) * sizeof *ids);
    if (!ids) return eval_fail(err, PLM_E_NOMEM, "out of memory");
    for (size_t i = 0; i < ds->n; i++) ids[i] = ds->items[i].id;
    qsort(ids, ds->n, sizeof *ids, cmp_str);
    for (size_t i = 1; i < ds->n; i++)
        if (!strcmp(ids[i - 1], ids[i])) {
            snprintf(err->msg, sizeof err->msg, "%s: id \"%s\" appears more than once", path,
                     ids[i]);
            free(ids);
            return PLM_E_FORMAT;
        }
    free(ids);
    return PLM_OK;
}

static plm_status parse_line(const char *path, size_t lineno, const char *line, const char *dir,
                             eval_item *it, plm_error *err)
{
    cJSON *o = cJSON_Parse(line);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        snprintf(err->msg, sizeof err->msg, "%s:%zu: not a JSON object", path, lineno);
        return PLM_E_FORMAT;
    }
    plm_status st = PLM_OK;
    memset(it, 0, sizeof *it);
    it->id = dup_field(o, "id", 1, path, lineno, &st, err);
    if (st == PLM_OK) it->question = dup_field(o, "question", 1, path, lineno, &st, err);
    if (st == PLM_OK) it->answer = dup_field(o, "answer", 1, path, lineno, &st, err);
    if (st == PLM_OK) it->type = dup_field(o, "type", 0, path, lineno, &st, err);
    if (st == PLM_OK) it->context = dup_field(o, "context", 0, path, lineno, &st, err);
    char *img = st == PLM_OK ? dup_field(o, "image", 0, path, lineno, &st, err) : NULL;
    cJSON_Delete(o);
    if (st == PLM_OK && img) {
        if (img[0] == '/') {
            it->image = img;
            img = NULL;
        } else {
            size_t n = strlen(dir) + strlen(img) + 2;
            it->image = malloc(n);
            if (it->image) snprintf(it->image, n, "%s/%s", dir, img);
            else st = PLM_E_NOMEM;
        }
    }
    free(img);
    if (st == PLM_E_NOMEM) snprintf(err->msg, sizeof err->msg, "%s: out of memory", path);
    if (st != PLM_OK) item_free(it);
    return st;
}

plm_status eval_dataset_load(const char *path, eval_dataset *ds, plm_error *err)
{
    memset(ds, 0, sizeof *ds);
    FILE *f = fopen(path, "rb");
    if (!f) return eval_fail(err, PLM_E_IO, "%s: %s", path, strerror(errno));
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else strcpy(dir, ".");
    char *line = NULL;
    size_t cap = 0, lineno = 0, alloc = 0;
    ssize_t len;
    plm_status st = PLM_OK;
    while (st == PLM_OK && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if ((size_t)len > MAX_LINE) {
            snprintf(err->msg, sizeof err->msg, "%s:%zu: line of %zd bytes is over the limit of "
                     "%u", path, lineno, len, MAX_LINE);
            st = PLM_E_LIMIT;
            break;
        }
        size_t k = strspn(line, " \t\r\n");
        if (line[k] == '\0') continue; /* blank lines are allowed */
        if (ds->n == alloc) {
            alloc = alloc ? alloc * 2 : 256;
            eval_item *p = realloc(ds->items, alloc * sizeof *p);
            if (!p) {
                st = eval_fail(err, PLM_E_NOMEM, "out of memory");
                break;
            }
            ds->items = p;
        }
        st = parse_line(path, lineno, line, dir, &ds->items[ds->n], err);
        if (st == PLM_OK) ds->n++;
    }
    free(line);
    if (st == PLM_OK && ferror(f)) st = eval_fail(err, PLM_E_IO, "%s: %s", path, strerror(errno));
    fclose(f);
    if (st == PLM_OK && ds->n == 0) {
        snprintf(err->msg, sizeof err->msg, "%s: no items", path);
        st = PLM_E_FORMAT;
    }
    if (st == PLM_OK) st = check_unique(path, ds, err);
    if (st != PLM_OK) eval_dataset_free(ds);
    return st;
}
