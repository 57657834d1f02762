#include "core/json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- reading files ----------------------------------------------------------------------- */

plm_status plm_read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                         plm_error *err)
{
    *out = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return plm_fail(err, PLM_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        plm_fail(err, PLM_E_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return PLM_E_IO;
    }
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        return plm_fail(err, PLM_E_IO, "%s: is a directory, expected a file", path);
    }
    if (S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > max_bytes) {
        close(fd);
        return plm_fail(err, PLM_E_LIMIT, "%s: file is %lld bytes, over the %zu-byte limit", path,
                        (long long)sb.st_size, max_bytes);
    }
    /* st_size is only a hint (pipes, files growing underneath): read until EOF, bounded. */
    size_t cap = S_ISREG(sb.st_mode) ? (size_t)sb.st_size + 1 : 4096, n = 0;
    size_t cap_max = max_bytes >= SIZE_MAX - 1 ? SIZE_MAX : max_bytes + 1;
    if (cap > cap_max) cap = cap_max;
    char *buf = malloc(cap);
    plm_status st = PLM_OK;
    if (!buf) {
        close(fd);
        return plm_fail(err, PLM_E_NOMEM, "%s: cannot allocate %zu bytes", path, cap);
    }
    for (;;) {
        char probe;
        int full = n == cap - 1;
        ssize_t r = full ? read(fd, &probe, 1) : read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = plm_fail(err, PLM_E_IO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        if (r == 0) break;
        if (!full) {
            n += (size_t)r;
            continue;
        }
        if (n >= max_bytes) {
            st = plm_fail(err, PLM_E_LIMIT, "%s: file is over the %zu-byte limit", path,
                          max_bytes);
            break;
        }
        size_t ncap = cap > cap_max / 2 ? cap_max : cap * 2;
        char *nb = realloc(buf, ncap);
        if (!nb) {
            st = plm_fail(err, PLM_E_NOMEM, "%s: cannot allocate %zu bytes", path, ncap);
            break;
        }
        buf = nb;
        cap = ncap;
        buf[n++] = probe;
    }
    close(fd);
    if (st != PLM_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return PLM_OK;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

plm_status json_parse_buffer(const char *buf, size_t len, const char *what, cJSON **out,
                             plm_error *err)
{
    *out = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    size_t pos = end && end >= buf ? (size_t)(end - buf) : 0;
    int trailing = 0;
    if (root) {
        while (pos < len && is_ws(buf[pos])) pos++;
        trailing = pos < len;
    }
    if (!root || trailing) {
        cJSON_Delete(root);
        if (pos > len) pos = len;
        size_t line = 1, col = 1;
        for (size_t i = 0; i < pos; i++) {
            if (buf[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        return plm_fail(err, PLM_E_FORMAT, "%s: %s at line %zu, column %zu (byte %zu)", what,
                        trailing ? "unexpected content after the JSON value" : "invalid JSON",
                        line, col, pos);
    }
    *out = root;
    return PLM_OK;
}

plm_status json_load_file(const char *path, size_t max_bytes, cJSON **out, plm_error *err)
{
    *out = NULL;
    char *buf;
    size_t len;
    PLM_TRY(plm_read_file(path, max_bytes, &buf, &len, err));
    plm_status st = json_parse_buffer(buf, len, path, out, err);
    free(buf);
    return st;
}

/* ---- getters ----------------------------------------------------------------------------- */

/* "config.json" + "x" -> "config.json: x"; "config.json: text_config" + "x" ->
 * "config.json: text_config.x". */
static void field_name(char *buf, size_t size, const char *where, const char *key)
{
    if (!where || !*where)
        snprintf(buf, size, "%s", key);
    else if (strstr(where, ": "))
        snprintf(buf, size, "%s.%s", where, key);
    else
        snprintf(buf, size, "%s: %s", where, key);
}

static const char *type_desc(const cJSON *v)
{
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

/* Shortest "%g" that reads back as d, so 3.5 prints as 3.5 and 0.1 as 0.1. */
static void fmt_num(char *buf, size_t size, double d)
{
    snprintf(buf, size, "%.15g", d);
    if (strtod(buf, NULL) != d) snprintf(buf, size, "%.17g", d);
}

static plm_status wrong_type(const cJSON *v, const char *name, const char *expected,
                             plm_error *err)
{
    return plm_fail(err, PLM_E_FORMAT, "%s is %s, expected %s", name, type_desc(v), expected);
}

/* Looks key up; NULL object or key counts as absent. */
static const cJSON *member(const cJSON *obj, const char *key)
{
    if (!obj || !cJSON_IsObject(obj)) return NULL;
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

plm_status json_value_int(const cJSON *v, const char *name, int64_t *out, plm_error *err)
{
    if (!cJSON_IsNumber(v)) return wrong_type(v, name, "an integer", err);
    double d = v->valuedouble;
    char num[40];
    fmt_num(num, sizeof num, d);
    if (!isfinite(d) || d != floor(d))
        return plm_fail(err, PLM_E_FORMAT, "%s is %s, expected an integer", name, num);
    /* -2^63 is exact as a double; 2^63 is the first value out of range. */
    if (d < -9223372036854775808.0 || d >= 9223372036854775808.0)
        return plm_fail(err, PLM_E_FORMAT, "%s is %s, outside the 64-bit integer range", name,
                        num);
    *out = (int64_t)d;
    return PLM_OK;
}

static plm_status get_int(const cJSON *obj, const char *key, const char *where, int64_t *out,
                          int required, plm_error *err)
{
    char name[512];
    field_name(name, sizeof name, where, key);
    const cJSON *v = member(obj, key);
    if (!v || (!required && cJSON_IsNull(v))) {
        if (required) return plm_fail(err, PLM_E_MISSING, "%s is missing", name);
        return PLM_OK;
    }
    return json_value_int(v, name, out, err);
}

plm_status json_int_req(const cJSON *obj, const char *key, const char *where, int64_t *out,
                        plm_error *err)
{
    return get_int(obj, key, where, out, 1, err);
}

plm_status json_int_opt(const cJSON *obj, const char *key, const char *where, int64_t *out,
                        plm_error *err)
{
    return get_int(obj, key, where, out, 0, err);
}

static plm_status get_num(const cJSON *obj, const char *key, const char *where, double *out,
                          int required, plm_error *err)
{
    char name[512];
    field_name(name, sizeof name, where, key);
    const cJSON *v = member(obj, key);
    if (!v || (!required && cJSON_IsNull(v))) {
        if (required) return plm_fail(err, PLM_E_MISSING, "%s is missing", name);
        return PLM_OK;
    }
    if (!cJSON_IsNumber(v)) return wrong_type(v, name, "a number", err);
    if (!isfinite(v->valuedouble))
        return plm_fail(err, PLM_E_FORMAT, "%s is out of the range of a double", name);
    *out = v->valuedouble;
    return PLM_OK;
}

plm_status json_num_req(const cJSON *obj, const char *key, const char *where, double *out,
                        plm_error *err)
{
    return get_num(obj, key, where, out, 1, err);
}

plm_status json_num_opt(const cJSON *obj, const char *key, const char *where, double *out,
                        plm_error *err)
{
    return get_num(obj, key, where, out, 0, err);
}

plm_status json_bool_opt(const cJSON *obj, const char *key, const char *where, int *out,
                         plm_error *err)
{
    const cJSON *v = member(obj, key);
    if (!v || cJSON_IsNull(v)) return PLM_OK;
    char name[512];
    field_name(name, sizeof name, where, key);
    if (!cJSON_IsBool(v)) return wrong_type(v, name, "true or false", err);
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return PLM_OK;
}

static plm_status get_str(const cJSON *obj, const char *key, const char *where, const char **out,
                          int required, plm_error *err)
{
    char name[512];
    field_name(name, sizeof name, where, key);
    const cJSON *v = member(obj, key);
    if (!v || (!required && cJSON_IsNull(v))) {
        if (required) return plm_fail(err, PLM_E_MISSING, "%s is missing", name);
        return PLM_OK;
    }
    if (!cJSON_IsString(v) || !v->valuestring) return wrong_type(v, name, "a string", err);
    *out = v->valuestring;
    return PLM_OK;
}

plm_status json_str_req(const cJSON *obj, const char *key, const char *where, const char **out,
                        plm_error *err)
{
    return get_str(obj, key, where, out, 1, err);
}

plm_status json_str_opt(const cJSON *obj, const char *key, const char *where, const char **out,
                        plm_error *err)
{
    return get_str(obj, key, where, out, 0, err);
}

plm_status json_obj_opt(const cJSON *obj, const char *key, const char *where, const cJSON **out,
                        plm_error *err)
{
    *out = NULL;
    const cJSON *v = member(obj, key);
    if (!v || cJSON_IsNull(v)) return PLM_OK;
    if (!cJSON_IsObject(v)) {
        char name[512];
        field_name(name, sizeof name, where, key);
        return wrong_type(v, name, "an object", err);
    }
    *out = v;
    return PLM_OK;
}

plm_status json_num_array(const cJSON *obj, const char *key, const char *where, double *out,
                          int n, plm_error *err)
{
    char name[512];
    field_name(name, sizeof name, where, key);
    const cJSON *v = member(obj, key);
    if (!v) return plm_fail(err, PLM_E_MISSING, "%s is missing", name);
    if (!cJSON_IsArray(v)) return wrong_type(v, name, "an array of numbers", err);
    int size = cJSON_GetArraySize(v);
    if (size != n)
        return plm_fail(err, PLM_E_SHAPE, "%s has %d element%s, expected %d", name, size,
                        size == 1 ? "" : "s", n);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        char ename[560];
        snprintf(ename, sizeof ename, "%s[%d]", name, i);
        if (!cJSON_IsNumber(e)) return wrong_type(e, ename, "a number", err);
        if (!isfinite(e->valuedouble))
            return plm_fail(err, PLM_E_FORMAT, "%s is out of the range of a double", ename);
        out[i] = e->valuedouble;
    }
    return PLM_OK;
}
