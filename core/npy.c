#include "core/npy.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html */
static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};
#define NPY_MAX_HEADER ((uint32_t)1 << 20)

static int host_is_le(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

/* ---- writer ------------------------------------------------------------------------------ */

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? (size_t)1 << 30 : n;
        ssize_t w = write(fd, p, chunk);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return 0;
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

static int write_floats_le(int fd, const float *data, size_t count)
{
    if (host_is_le()) return write_all(fd, data, count * sizeof(float));
    unsigned char buf[4096];
    while (count > 0) {
        size_t k = count < sizeof buf / 4 ? count : sizeof buf / 4;
        for (size_t j = 0; j < k; j++) {
            uint32_t u;
            memcpy(&u, &data[j], 4);
            for (int b = 0; b < 4; b++) buf[4 * j + (size_t)b] = (unsigned char)(u >> (8 * b));
        }
        if (!write_all(fd, buf, 4 * k)) return 0;
        data += k;
        count -= k;
    }
    return 1;
}

/* Best effort: makes the rename durable. Failure here does not undo a complete file. */
static void fsync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

plm_status plm_write_npy(const char *path, const float *data, const size_t *shape, int ndim,
                         plm_error *err)
{
    if (!path || !*path) return plm_fail(err, PLM_E_ARG, "plm_write_npy: no path given");
    if (ndim < 0 || ndim > 32 || (ndim > 0 && !shape))
        return plm_fail(err, PLM_E_ARG, "%s: cannot write an array of %d dimensions", path, ndim);
    size_t count = 1, nbytes;
    char header[1024];
    int h = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int d = 0; d < ndim; d++) {
        if (!plm_mul_ok(count, shape[d], &count))
            return plm_fail(err, PLM_E_ARG, "%s: array size overflows", path);
        h += snprintf(header + h, sizeof header - (size_t)h, "%s%zu", d ? ", " : "", shape[d]);
    }
    if (!plm_mul_ok(count, sizeof(float), &nbytes))
        return plm_fail(err, PLM_E_ARG, "%s: array size overflows", path);
    if (count > 0 && !data) return plm_fail(err, PLM_E_ARG, "%s: no data given", path);
    h += snprintf(header + h, sizeof header - (size_t)h, "%s), }", ndim == 1 ? "," : "");
    /* Pad with spaces and end with '\n' so the data starts on a 64-byte boundary. */
    while ((10 + h + 1) % 64 != 0) header[h++] = ' ';
    header[h++] = '\n';
    unsigned char pre[10];
    memcpy(pre, npy_magic, 6);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (unsigned char)(h & 0xff);
    pre[9] = (unsigned char)(h >> 8);

    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return plm_fail(err, PLM_E_ARG, "%s: path is too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return plm_fail(err, PLM_E_IO, "%s: cannot create temporary file %s: %s", path, tmp,
                        strerror(errno));
    const char *step = "write";
    int ok = write_all(fd, pre, sizeof pre) && write_all(fd, header, (size_t)h) &&
             write_floats_le(fd, data, count);
    if (ok && !(ok = fsync(fd) == 0)) step = "fsync";
    int e = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        step = "close";
        e = errno;
    }
    if (ok && !(ok = rename(tmp, path) == 0)) {
        step = "rename";
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        return plm_fail(err, PLM_E_IO, "%s: %s of %zu bytes failed: %s", path, step,
                        sizeof pre + (size_t)h + nbytes, strerror(e ? e : EIO));
    }
    fsync_parent(path);
    return PLM_OK;
}

/* ---- reader: header ---------------------------------------------------------------------- */

typedef struct npy_cursor {
    const char *s;
    size_t pos, len;
} npy_cursor;

static void skip_ws(npy_cursor *c)
{
    while (c->pos < c->len && (c->s[c->pos] == ' ' || c->s[c->pos] == '\t' ||
                               c->s[c->pos] == '\n' || c->s[c->pos] == '\r'))
        c->pos++;
}

static int eat(npy_cursor *c, char ch)
{
    skip_ws(c);
    if (c->pos < c->len && c->s[c->pos] == ch) {
        c->pos++;
        return 1;
    }
    return 0;
}

/* A quoted Python string without escapes. */
static int parse_str(npy_cursor *c, char *out, size_t cap)
{
    skip_ws(c);
    if (c->pos >= c->len || (c->s[c->pos] != '\'' && c->s[c->pos] != '"')) return 0;
    char q = c->s[c->pos++];
    size_t n = 0;
    while (c->pos < c->len && c->s[c->pos] != q) {
        if (c->s[c->pos] == '\\' || n + 1 >= cap) return 0;
        out[n++] = c->s[c->pos++];
    }
    if (c->pos >= c->len) return 0;
    c->pos++;
    out[n] = '\0';
    return 1;
}

static int parse_word(npy_cursor *c, const char *w)
{
    skip_ws(c);
    size_t n = strlen(w);
    if (c->len - c->pos < n || memcmp(c->s + c->pos, w, n) != 0) return 0;
    c->pos += n;
    return 1;
}

/* "(2, 3)", "(5,)" or "()"; Python 2 files may write "3L". A single element without its comma
 * is a parenthesised int, not a tuple, and is refused as numpy refuses it. */
static int parse_shape(npy_cursor *c, npy_array *a, int *too_many)
{
    if (!eat(c, '(')) return 0;
    int commas = 0;
    a->ndim = 0;
    for (;;) {
        skip_ws(c);
        if (c->pos < c->len && c->s[c->pos] == ')') break;
        if (c->pos >= c->len || c->s[c->pos] < '0' || c->s[c->pos] > '9') return 0;
        int64_t v = 0;
        while (c->pos < c->len && c->s[c->pos] >= '0' && c->s[c->pos] <= '9') {
            int digit = c->s[c->pos++] - '0';
            if (v > (INT64_MAX - digit) / 10) return 0;
            v = v * 10 + digit;
        }
        if (c->pos < c->len && c->s[c->pos] == 'L') c->pos++;
        if (a->ndim == NPY_MAX_DIMS) {
            *too_many = 1;
            return 0;
        }
        a->shape[a->ndim++] = v;
        if (eat(c, ','))
            commas++;
        else if (!(skip_ws(c), c->pos < c->len && c->s[c->pos] == ')'))
            return 0;
    }
    c->pos++;
    return !(a->ndim == 1 && commas == 0);
}

typedef enum npy_kind { NPY_F4, NPY_F8, NPY_I4, NPY_I8, NPY_U1 } npy_kind;

static const struct {
    const char *descr;
    npy_kind kind;
    size_t size;
} npy_types[] = {
    {"<f4", NPY_F4, 4}, {"<f8", NPY_F8, 8}, {"<i4", NPY_I4, 4}, {"<i8", NPY_I8, 8}, {"|u1", NPY_U1, 1},
};

static plm_status parse_header(const char *path, const char *h, size_t len, npy_array *a,
                               int *type, plm_error *err)
{
    if (len == 0 || h[len - 1] != '\n')
        return plm_fail(err, PLM_E_FORMAT, "%s: header does not end with a newline", path);
    npy_cursor c = {h, 0, len};
    int have_descr = 0, have_order = 0, have_shape = 0;
    char key[32], descr[32];
    if (!eat(&c, '{'))
        return plm_fail(err, PLM_E_FORMAT, "%s: header is not a dictionary", path);
    while (!eat(&c, '}')) {
        if (!parse_str(&c, key, sizeof key) || !eat(&c, ':'))
            return plm_fail(err, PLM_E_FORMAT, "%s: header dictionary is malformed at byte %zu",
                            path, c.pos);
        int dup = 0;
        if (strcmp(key, "descr") == 0) {
            dup = have_descr++;
            if (!dup && !parse_str(&c, descr, sizeof descr))
                return plm_fail(err, PLM_E_UNSUPPORTED,
                                "%s: descr is not a plain dtype string (structured arrays are "
                                "not supported)",
                                path);
        } else if (strcmp(key, "fortran_order") == 0) {
            dup = have_order++;
            if (!dup && parse_word(&c, "True"))
                return plm_fail(err, PLM_E_UNSUPPORTED,
                                "%s: fortran_order is True; only C-order arrays are supported",
                                path);
            if (!dup && !parse_word(&c, "False"))
                return plm_fail(err, PLM_E_FORMAT, "%s: fortran_order is not True or False",
                                path);
        } else if (strcmp(key, "shape") == 0) {
            dup = have_shape++;
            int too_many = 0;
            if (!dup && !parse_shape(&c, a, &too_many))
                return too_many ? plm_fail(err, PLM_E_UNSUPPORTED,
                                           "%s: shape has more than %d dimensions", path,
                                           NPY_MAX_DIMS)
                                : plm_fail(err, PLM_E_FORMAT,
                                           "%s: shape is not a tuple of non-negative integers",
                                           path);
        } else {
            return plm_fail(err, PLM_E_FORMAT, "%s: header has unexpected key '%s'", path, key);
        }
        if (dup) return plm_fail(err, PLM_E_FORMAT, "%s: header repeats key '%s'", path, key);
        if (!eat(&c, ',')) {
            if (!eat(&c, '}'))
                return plm_fail(err, PLM_E_FORMAT,
                                "%s: header dictionary is malformed at byte %zu", path, c.pos);
            break;
        }
    }
    skip_ws(&c);
    if (c.pos != len)
        return plm_fail(err, PLM_E_FORMAT, "%s: unexpected text after the header dictionary",
                        path);
    if (!have_descr || !have_order || !have_shape)
        return plm_fail(err, PLM_E_FORMAT, "%s: header lacks '%s'", path,
                        !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    for (int i = 0; i < (int)(sizeof npy_types / sizeof npy_types[0]); i++) {
        if (strcmp(descr, npy_types[i].descr) == 0) {
            *type = i;
            return PLM_OK;
        }
    }
    return plm_fail(err, PLM_E_UNSUPPORTED,
                    "%s: dtype '%s' is not supported (expected <f4, <f8, <i4, <i8 or |u1)", path,
                    descr);
}

/* ---- reader: data ------------------------------------------------------------------------ */

static int read_at(int fd, void *buf, size_t n, off_t off)
{
    char *p = buf;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? (size_t)1 << 30 : n;
        ssize_t r = pread(fd, p, chunk, off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return 0;
        p += r;
        off += r;
        n -= (size_t)r;
    }
    return 1;
}

static uint64_t load_le(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t b = n; b-- > 0;) v = (v << 8) | p[b];
    return v;
}

static void convert(const unsigned char *raw, npy_kind kind, npy_array *a)
{
    for (size_t k = 0; k < a->count; k++) {
        switch (kind) {
        case NPY_F4: {
            uint32_t u = (uint32_t)load_le(raw + 4 * k, 4);
            memcpy(&a->f[k], &u, 4);
            break;
        }
        case NPY_F8: {
            uint64_t u = load_le(raw + 8 * k, 8);
            double d;
            memcpy(&d, &u, 8);
            a->f[k] = (float)d;
            break;
        }
        case NPY_I4: a->i[k] = (int32_t)(uint32_t)load_le(raw + 4 * k, 4); break;
        case NPY_I8: a->i[k] = (int64_t)load_le(raw + 8 * k, 8); break;
        case NPY_U1: a->i[k] = raw[k]; break;
        }
    }
}

static plm_status read_fd(const char *path, int fd, npy_array *a, plm_error *err)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return plm_fail(err, PLM_E_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return plm_fail(err, PLM_E_IO, "%s: is not a regular file", path);
    uint64_t fsize = (uint64_t)sb.st_size;
    unsigned char pre[12];
    if (fsize < 10 || !read_at(fd, pre, 10, 0) || memcmp(pre, npy_magic, 6) != 0)
        return plm_fail(err, PLM_E_FORMAT, "%s: not a .npy file (bad magic)", path);
    if (pre[6] < 1 || pre[6] > 3 || pre[7] != 0)
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: .npy version %d.%d is not supported", path,
                        pre[6], pre[7]);
    size_t prelude = pre[6] == 1 ? 10 : 12;
    if (fsize < prelude || !read_at(fd, pre, prelude, 0))
        return plm_fail(err, PLM_E_FORMAT, "%s: file ends inside the header length", path);
    uint32_t hlen = (uint32_t)load_le(pre + 8, prelude - 8);
    if (hlen > NPY_MAX_HEADER)
        return plm_fail(err, PLM_E_LIMIT, "%s: header length %" PRIu32 " is over the %" PRIu32
                        "-byte limit", path, hlen, NPY_MAX_HEADER);
    if (hlen > fsize - prelude)
        return plm_fail(err, PLM_E_FORMAT,
                        "%s: header length %" PRIu32 " is past the end of the file (%" PRIu64
                        " bytes)", path, hlen, fsize);
    char *h = malloc((size_t)hlen + 1);
    if (!h) return plm_fail(err, PLM_E_NOMEM, "%s: out of memory", path);
    if (!read_at(fd, h, hlen, (off_t)prelude)) {
        free(h);
        return plm_fail(err, PLM_E_IO, "%s: cannot read the header", path);
    }
    h[hlen] = '\0';
    int type = 0;
    plm_status st = parse_header(path, h, hlen, a, &type, err);
    free(h);
    if (st != PLM_OK) return st;

    size_t count = 1, nbytes;
    int overflow = 0;
    for (int d = 0; d < a->ndim; d++)
        if ((uint64_t)a->shape[d] > SIZE_MAX || !plm_mul_ok(count, (size_t)a->shape[d], &count))
            overflow = 1;
    for (int d = 0; d < a->ndim; d++) {
        if (a->shape[d] == 0) {
            overflow = 0;
            count = 0;
        }
    }
    size_t out_bytes;
    if (overflow || !plm_mul_ok(count, npy_types[type].size, &nbytes) ||
        !plm_mul_ok(count, sizeof(int64_t), &out_bytes))
        return plm_fail(err, PLM_E_FORMAT, "%s: shape is too large (size overflows)", path);
    uint64_t have = fsize - prelude - hlen;
    if (have != nbytes)
        return plm_fail(err, PLM_E_FORMAT,
                        "%s: shape and dtype %s need %zu bytes of data but the file has %" PRIu64,
                        path, npy_types[type].descr, nbytes, have);
    a->count = count;
    npy_kind kind = npy_types[type].kind;
    a->is_float = kind == NPY_F4 || kind == NPY_F8;
    unsigned char *raw = malloc(nbytes ? nbytes : 1);
    if (a->is_float)
        a->f = malloc(count ? count * sizeof *a->f : 1);
    else
        a->i = malloc(out_bytes ? out_bytes : 1);
    if (!raw || (!a->f && !a->i)) {
        free(raw);
        return plm_fail(err, PLM_E_NOMEM, "%s: out of memory for %zu elements", path, count);
    }
    if (!read_at(fd, raw, nbytes, (off_t)(prelude + hlen))) {
        free(raw);
        return plm_fail(err, PLM_E_IO, "%s: cannot read %zu bytes of data", path, nbytes);
    }
    convert(raw, kind, a);
    free(raw);
    return PLM_OK;
}

plm_status npy_read(const char *path, npy_array *out, plm_error *err)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return plm_fail(err, errno == ENOENT ? PLM_E_MISSING : PLM_E_IO, "%s: cannot open: %s",
                        path, strerror(errno));
    plm_status st = read_fd(path, fd, out, err);
    close(fd);
    if (st != PLM_OK) npy_free(out);
    return st;
}

void npy_free(npy_array *a)
{
    if (!a) return;
    free(a->f);
    free(a->i);
    memset(a, 0, sizeof *a);
}
