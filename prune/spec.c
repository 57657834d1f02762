/* Policy spec strings: `vflowopt:keep=0.1,layers=2/8` or `@tuned.spec` (a file holding one). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prune/prune.h"

static plm_status read_spec_file(const char *path, char *buf, size_t n, plm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return plm_fail(err, PLM_E_IO, "%s: cannot open spec file: %s", path, strerror(errno));
    size_t got = fread(buf, 1, n - 1, f);
    int more = fgetc(f) != EOF;
    fclose(f);
    if (more) return plm_fail(err, PLM_E_LIMIT, "%s: spec file over %zu bytes", path, n - 1);
    buf[got] = '\0';
    /* the first line that is not a comment is the spec */
    char *line = buf;
    while (*line) {
        char *end = line + strcspn(line, "\n");
        char save = *end;
        *end = '\0';
        char *p = line;
        while (isspace((unsigned char)*p)) p++;
        if (*p && *p != '#') {
            memmove(buf, p, strlen(p) + 1);
            size_t k = strlen(buf);
            while (k && isspace((unsigned char)buf[k - 1])) buf[--k] = '\0';
            return PLM_OK;
        }
        if (!save) break;
        line = end + 1;
    }
    return plm_fail(err, PLM_E_FORMAT, "%s: no spec in the file", path);
}

plm_status prune_spec_text(const char *text, char *buf, size_t n, plm_error *err)
{
    if (!text || !*text) return plm_fail(err, PLM_E_ARG, "empty pruning spec");
    if (text[0] == '@') return read_spec_file(text + 1, buf, n, err);
    if (strlen(text) >= n)
        return plm_fail(err, PLM_E_LIMIT, "pruning spec over %zu characters", n - 1);
    strcpy(buf, text);
    return PLM_OK;
}

plm_status prune_spec_parse(const char *text, prune_spec *s, plm_error *err)
{
    memset(s, 0, sizeof *s);
    if (!text || !*text) return plm_fail(err, PLM_E_ARG, "empty pruning spec");
    if (text[0] == '@') {
        PLM_TRY(read_spec_file(text + 1, s->text, sizeof s->text, err));
    } else {
        if (strlen(text) >= sizeof s->text)
            return plm_fail(err, PLM_E_LIMIT, "pruning spec over %zu characters", sizeof s->text - 1);
        strcpy(s->text, text);
    }
    const char *p = s->text, *colon = strchr(p, ':');
    size_t nl = colon ? (size_t)(colon - p) : strlen(p);
    if (nl == 0 || nl >= sizeof s->name)
        return plm_fail(err, PLM_E_FORMAT, "pruning spec '%s': the method name is missing or too "
                        "long", s->text);
    memcpy(s->name, p, nl);
    for (size_t i = 0; i < nl; i++)
        if (!isalnum((unsigned char)s->name[i]) && s->name[i] != '-' && s->name[i] != '_')
            return plm_fail(err, PLM_E_FORMAT, "pruning spec '%s': bad method name", s->text);
    if (!colon) return PLM_OK;
    p = colon + 1;
    while (*p) {
        const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (!eq || eq == p)
            return plm_fail(err, PLM_E_FORMAT, "pruning spec '%s': expected key=value at '%.*s'",
                            s->text, (int)(end - p), p);
        if (s->n == PRUNE_MAX_PARAMS)
            return plm_fail(err, PLM_E_LIMIT, "pruning spec '%s': over %d parameters", s->text,
                            PRUNE_MAX_PARAMS);
        size_t kl = (size_t)(eq - p), vl = (size_t)(end - eq - 1);
        if (kl >= sizeof s->p[0].key || vl >= sizeof s->p[0].val || vl == 0)
            return plm_fail(err, PLM_E_FORMAT, "pruning spec '%s': bad parameter '%.*s'", s->text,
                            (int)(end - p), p);
        for (int i = 0; i < s->n; i++)
            if (strlen(s->p[i].key) == kl && !memcmp(s->p[i].key, p, kl))
                return plm_fail(err, PLM_E_FORMAT, "pruning spec '%s': '%.*s' given twice",
                                s->text, (int)kl, p);
        memcpy(s->p[s->n].key, p, kl);
        memcpy(s->p[s->n].val, eq + 1, vl);
        s->n++;
        p = comma ? comma + 1 : end;
    }
    return PLM_OK;
}

static const char *lookup(prune_spec *s, const char *key)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->p[i].key, key)) {
            s->p[i].used = 1;
            return s->p[i].val;
        }
    return NULL;
}

plm_status prune_spec_num(prune_spec *s, const char *key, double dflt, double lo, double hi,
                          double *out, plm_error *err)
{
    const char *v = lookup(s, key);
    if (!v) {
        *out = dflt;
        return PLM_OK;
    }
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= lo && d <= hi))
        return plm_fail(err, PLM_E_FORMAT, "pruning spec '%s': %s=%s, expected a number from %g "
                        "to %g", s->text, key, v, lo, hi);
    *out = d;
    return PLM_OK;
}

plm_status prune_spec_ints(prune_spec *s, const char *key, int *vals, int max, int *n,
                           plm_error *err)
{
    const char *v = lookup(s, key);
    if (!v) return PLM_OK; /* *n untouched: the caller's defaults stay */
    int k = 0;
    const char *p = v;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (errno || end == p || (*end && *end != '/') || x < 0 || x > 1 << 20 || k == max)
            return plm_fail(err, PLM_E_FORMAT, "pruning spec '%s': %s=%s, expected up to %d "
                            "whole numbers separated by '/'", s->text, key, v, max);
        vals[k++] = (int)x;
        p = *end ? end + 1 : end;
    }
    *n = k;
    return PLM_OK;
}

plm_status prune_spec_check_unused(const prune_spec *s, plm_error *err)
{
    for (int i = 0; i < s->n; i++)
        if (!s->p[i].used)
            return plm_fail(err, PLM_E_ARG, "pruning spec '%s': %s has no parameter '%s'",
                            s->text, s->name, s->p[i].key);
    return PLM_OK;
}
