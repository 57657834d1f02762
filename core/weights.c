#include "core/weights.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const st_tensor *wsrc_find(const plm_wsrc *s, const char *name)
{
    char full[512];
    for (const char *const *p = s->prefixes; *p; p++) {
        snprintf(full, sizeof full, "%s%s", *p, name);
        const st_tensor *t = st_set_find(s->set, full);
        if (t) return t;
    }
    return NULL;
}

static plm_status find_req(const plm_wsrc *s, const char *name, const st_tensor **out,
                           plm_error *err)
{
    *out = wsrc_find(s, name);
    if (!*out)
        return plm_fail(err, PLM_E_MISSING, "%s: tensor '%s%s' is missing from the checkpoint",
                        s->what, s->prefixes[0], name);
    if ((*out)->dtype == PLM_DTYPE_OTHER)
        return plm_fail(err, PLM_E_UNSUPPORTED,
                        "%s: tensor '%s' in %s has a dtype prunelm does not load "
                        "(F32, F16 and BF16 are supported)", s->what, (*out)->name, (*out)->file);
    return PLM_OK;
}

static void shape_str(const st_tensor *t, char *buf, size_t n)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? ", " : "",
                                (long long)t->shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
}

static int64_t numel(const st_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Remembers a device buffer this source must release. */
static plm_status own(plm_wsrc *s, void *dev, plm_error *err)
{
    if (s->n_owned == s->cap_owned) {
        size_t cap = s->cap_owned ? s->cap_owned * 2 : 64;
        void **o = realloc(s->owned, cap * sizeof *o);
        if (!o) return plm_fail(err, PLM_E_NOMEM, "%s: out of memory", s->what);
        s->owned = o;
        s->cap_owned = cap;
    }
    s->owned[s->n_owned++] = dev;
    return PLM_OK;
}

/* A new device buffer of bytes, owned by the source (name: for the message). */
static plm_status alloc_owned(plm_wsrc *s, const char *name, size_t bytes, void **out,
                              plm_error *err)
{
    void *dev = s->be->ops->alloc(s->be, bytes);
    if (!dev) {
        const char *why = s->be->ops->alloc_error ? s->be->ops->alloc_error(s->be) : NULL;
        return plm_fail(err, PLM_E_NOMEM, "%s: out of %s memory for '%s' (%zu bytes)%s%s",
                        s->what, s->be->ops->host_memory ? "host" : "device", name, bytes,
                        why ? ": " : "", why ? why : "");
    }
    plm_status st = own(s, dev, err);
    if (st != PLM_OK) {
        s->be->ops->release(s->be, dev);
        return st;
    }
    *out = dev;
    return PLM_OK;
}

/* Copies bytes to a new device buffer owned by the source. */
static plm_status upload(plm_wsrc *s, const char *name, const void *host, size_t bytes,
                         void **out, plm_error *err)
{
    PLM_TRY(alloc_owned(s, name, bytes, out, err));
    s->be->ops->upload(s->be, *out, host, bytes);
    return PLM_OK;
}

/* The float32 tensor t rounded to s->f32_to in a buffer the source owns (--dtype). */
static plm_status upload_rounded(plm_wsrc *s, const char *name, const st_tensor *t, int64_t n,
                                 plm_weight *w, plm_error *err)
{
    uint16_t *h = malloc((size_t)n * sizeof *h);
    if (!h) return plm_fail(err, PLM_E_NOMEM, "%s: out of memory converting '%s'", s->what, name);
    const unsigned char *src = t->data; /* may be misaligned in a hand-made file */
    for (int64_t i = 0; i < n; i++) {
        float f;
        memcpy(&f, src + (size_t)i * 4, 4);
        h[i] = s->f32_to == PLM_BF16 ? plm_f32_to_bf16(f) : plm_f32_to_f16(f);
    }
    void *dev = NULL;
    plm_status st = upload(s, name, h, (size_t)n * sizeof *h, &dev, err);
    free(h);
    if (st != PLM_OK) return st;
    w->dtype = s->f32_to;
    w->data = dev;
    return PLM_OK;
}

/* The matrix `name`, checked to be [rows x cols] (later dims flattened into cols). */
static plm_status find_matrix(const plm_wsrc *s, const char *name, int64_t rows, int64_t cols,
                              const st_tensor **out, plm_error *err)
{
    PLM_TRY(find_req(s, name, out, err));
    const st_tensor *t = *out;
    if (t->ndim < 2 || t->shape[0] != rows || numel(t) != rows * cols) {
        char sh[128];
        shape_str(t, sh, sizeof sh);
        return plm_fail(err, PLM_E_SHAPE, "%s: tensor '%s' has shape %s, expected [%lld, %lld]",
                        s->what, t->name, sh, (long long)rows, (long long)cols);
    }
    return PLM_OK;
}

plm_status wsrc_matrix(plm_wsrc *s, const char *name, int64_t rows, int64_t cols, plm_weight *w,
                       plm_error *err)
{
    const st_tensor *t;
    PLM_TRY(find_matrix(s, name, rows, cols, &t, err));
    w->dtype = t->dtype;
    w->rows = rows;
    w->cols = cols;
    w->data = t->data;
    if (t->dtype == PLM_F32 && (s->f32_to == PLM_BF16 || s->f32_to == PLM_F16)) {
        PLM_TRY(upload_rounded(s, name, t, rows * cols, w, err));
    } else if (!s->be->ops->host_memory || (uintptr_t)t->data % plm_dtype_size(t->dtype) != 0) {
        /* a device backend, or a hand-made file that left the tensor misaligned: copy it */
        void *dev = NULL;
        PLM_TRY(upload(s, name, t->data, t->nbytes, &dev, err));
        w->data = dev;
    }
    if (s->n_params == 0) s->dtype = w->dtype;
    s->n_params += (size_t)(rows * cols);
    return PLM_OK;
}

/* The vector `name`, checked to hold n elements (any shape). */
static plm_status find_vector(const plm_wsrc *s, const char *name, int64_t n,
                              const st_tensor **out, plm_error *err)
{
    PLM_TRY(find_req(s, name, out, err));
    if (numel(*out) != n) {
        char sh[128];
        shape_str(*out, sh, sizeof sh);
        return plm_fail(err, PLM_E_SHAPE, "%s: tensor '%s' has shape %s, expected %lld elements",
                        s->what, (*out)->name, sh, (long long)n);
    }
    return PLM_OK;
}

static void widen(const st_tensor *t, int64_t n, float *dst)
{
    for (int64_t i = 0; i < n; i++) {
        const uint16_t *h = t->data;
        dst[i] = t->dtype == PLM_F32 ? ((const float *)t->data)[i]
                 : t->dtype == PLM_BF16 ? plm_bf16_to_f32(h[i]) : plm_f16_to_f32(h[i]);
    }
}

plm_status wsrc_vector(plm_wsrc *s, const char *name, int64_t n, int optional, float **out,
                       plm_error *err)
{
    *out = NULL;
    if (optional && !wsrc_find(s, name)) return PLM_OK;
    const st_tensor *t;
    PLM_TRY(find_vector(s, name, n, &t, err));
    float *host = malloc((size_t)n * sizeof(float));
    if (!host) return plm_fail(err, PLM_E_NOMEM, "%s: out of memory for '%s'", s->what, name);
    widen(t, n, host);
    void *dev = NULL;
    plm_status st = upload(s, name, host, (size_t)n * sizeof(float), &dev, err);
    free(host);
    if (st != PLM_OK) return st;
    s->n_params += (size_t)n;
    *out = dev;
    return PLM_OK;
}

enum { STACK_MAX = 8 };

plm_status wsrc_matrix_stack(plm_wsrc *s, int n, const char *const *names, const int64_t *rows,
                             int64_t cols, plm_weight *parts, plm_weight *fused, plm_error *err)
{
    const st_tensor *t[STACK_MAX];
    memset(fused, 0, sizeof *fused);
    if (n < 1 || n > STACK_MAX)
        return plm_fail(err, PLM_E_ARG, "%s: %d matrices to stack (1..%d)", s->what, n,
                        STACK_MAX);
    int stack = !s->be->ops->host_memory;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        PLM_TRY(find_matrix(s, names[i], rows[i], cols, &t[i], err));
        /* each part 256-byte aligned in the stack, as a buffer of its own would be (the
         * kernels' vector loads and cuBLASLt's fast paths assume it) */
        if (t[i]->dtype != t[0]->dtype || t[i]->nbytes % 256 ||
            (t[i]->dtype == PLM_F32 && (s->f32_to == PLM_BF16 || s->f32_to == PLM_F16)))
            stack = 0;
        total += rows[i];
    }
    if (!stack) {
        for (int i = 0; i < n; i++)
            PLM_TRY(wsrc_matrix(s, names[i], rows[i], cols, &parts[i], err));
        return PLM_OK;
    }
    const size_t es = plm_dtype_size(t[0]->dtype);
    void *dev = NULL;
    PLM_TRY(alloc_owned(s, names[0], (size_t)total * (size_t)cols * es, &dev, err));
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        s->be->ops->upload(s->be, (char *)dev + off, t[i]->data, t[i]->nbytes);
        parts[i] = (plm_weight){t[i]->dtype, rows[i], cols, (char *)dev + off};
        off += t[i]->nbytes;
    }
    *fused = (plm_weight){t[0]->dtype, total, cols, dev};
    if (s->n_params == 0) s->dtype = fused->dtype;
    s->n_params += (size_t)(total * cols);
    return PLM_OK;
}

plm_status wsrc_vector_stack(plm_wsrc *s, int n, const char *const *names, const int64_t *lens,
                             int fused_ok, float **parts, float **fused, plm_error *err)
{
    *fused = NULL;
    if (!fused_ok) {
        for (int i = 0; i < n; i++) PLM_TRY(wsrc_vector(s, names[i], lens[i], 0, &parts[i], err));
        return PLM_OK;
    }
    const st_tensor *t[STACK_MAX];
    if (n < 1 || n > STACK_MAX)
        return plm_fail(err, PLM_E_ARG, "%s: %d vectors to stack (1..%d)", s->what, n,
                        STACK_MAX);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        PLM_TRY(find_vector(s, names[i], lens[i], &t[i], err));
        total += lens[i];
    }
    float *host = malloc((size_t)total * sizeof(float));
    if (!host) return plm_fail(err, PLM_E_NOMEM, "%s: out of memory for '%s'", s->what, names[0]);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        widen(t[i], lens[i], host + off);
        off += lens[i];
    }
    void *dev = NULL;
    plm_status st = upload(s, names[0], host, (size_t)total * sizeof(float), &dev, err);
    free(host);
    if (st != PLM_OK) return st;
    off = 0;
    for (int i = 0; i < n; i++) {
        parts[i] = (float *)dev + off;
        off += lens[i];
    }
    *fused = dev;
    s->n_params += (size_t)total;
    return PLM_OK;
}

void wsrc_release(plm_wsrc *s)
{
    for (size_t i = 0; i < s->n_owned; i++) s->be->ops->release(s->be, s->owned[i]);
    free(s->owned);
    s->owned = NULL;
    s->n_owned = s->cap_owned = 0;
}
