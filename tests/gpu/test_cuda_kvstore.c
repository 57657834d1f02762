/* ThinK's thin-key store (cuda/cu_kv_think.cu) and KIVI's int4 store (cuda/cu_kv_int4.cu) on the
 * GPU against the CPU backend's ops (core/backend_cpu_thin.c, core/backend_cpu_int4.c, tested
 * against references and dense attention in tests/test_kv_think.c and tests/test_kv_int4.c):
 *   - the stores' contents bit for bit after compression / quantisation, compaction and merges
 *     (the GPU quantiser repeats the host's arithmetic step for step);
 *   - attention and scores within float rounding of the CPU (rel. L2 <= 1e-5), outputs
 *     poisoned with NaN first;
 * on random inputs with fixed seeds and shapes chosen to hit edges: GQA groups that are not
 * powers of two, head_dim 16..256 (one to eight channels per lane), heads whose stored prefixes
 * differ after compaction, several causal queries, no split-K scratch, long caches that split.
 * Plain C without Criterion; prints PASS/FAIL per check and "N passed, M failed" last. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend_kvstore.h"
#include "prune/kv_int4.h"
#include "prune/kv_thin.h"
#include "tests/support/compare.h"
#include "tests/gpu/gpu_util.h"

static plm_backend *cpu, *gpu;
static int n_pass, n_fail;

static float *rand_vec(size_t n)
{
    float *v = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = frand();
    return v;
}

static void *to_dev(const void *h, size_t bytes)
{
    void *d = gpu->ops->alloc(gpu, bytes ? bytes : 4);
    if (!d) {
        fprintf(stderr, "out of device memory (%zu bytes)\n", bytes);
        exit(2);
    }
    if (h && bytes) gpu->ops->upload(gpu, d, h, bytes);
    return d;
}

static void *from_dev(const void *d, size_t bytes)
{
    void *h = xmalloc(bytes);
    gpu->ops->download(gpu, h, d, bytes);
    return h;
}

static void result(int ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void result(int ok, const char *name, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ok) n_pass++;
    else n_fail++;
    printf("%s %s %s\n", ok ? "PASS" : "FAIL", name, msg);
    fflush(stdout);
}

static const char *gpu_error(void) { return gpu->ops->error ? gpu->ops->error(gpu) : NULL; }

static void die(const char *what, const plm_error *err)
{
    result(0, what, "%s", err->msg);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    exit(1);
}

static plm_attn_args args(float *out, const float *q, const float *k, const float *v,
                          int64_t tq, int64_t tk, int64_t stride, int n_heads, int n_kv, int hd)
{
    plm_attn_args a = {0};
    a.out = out;
    a.q = q;
    a.k = k;
    a.v = v;
    a.tq = tq;
    a.tk = tk;
    a.q_stride = (int64_t)n_heads * hd;
    a.kv_stride = stride;
    a.q_pos0 = tk - tq;
    a.n_heads = n_heads;
    a.n_kv = n_kv;
    a.head_dim = hd;
    a.causal = 1;
    a.scale = 1.0f / sqrtf((float)hd);
    return a;
}

/* An ascending keep list per head: head h drops stored rows r < nstored with r % (h + 2) == 1
 * and then its oldest later rows until every head keeps the same count. */
static int32_t *keep_list(int n_kv, int64_t len, int64_t nstored, int64_t *n_keep)
{
    int64_t dmax = 0;
    for (int h = 0; h < n_kv; h++) {
        int64_t d = 0;
        for (int64_t r = 0; r < nstored; r++) d += r % (h + 2) == 1;
        if (d > dmax) dmax = d;
    }
    *n_keep = len - dmax - 1;
    int32_t *kl = xmalloc((size_t)(n_kv * *n_keep) * sizeof *kl);
    for (int h = 0; h < n_kv; h++) {
        int64_t d = 0, n = 0;
        for (int64_t r = 0; r < nstored; r++) d += r % (h + 2) == 1;
        int64_t extra = len - d - *n_keep;
        for (int64_t r = 0; r < len && n < *n_keep; r++) {
            const int drop = r < nstored ? r % (h + 2) == 1 : extra > 0 ? (extra--, 1) : 0;
            if (!drop) kl[h * *n_keep + n++] = (int32_t)r;
        }
    }
    return kl;
}

/* ---- attention and scores, CPU vs GPU -------------------------------------------------------- */

typedef struct pair_args {
    plm_attn_args h, d; /* host pointers / device pointers */
    size_t n_out, n_probs;
} pair_args;

static void compare_attention(const char *name, pair_args *p,
                              void (*run)(plm_backend *be, const plm_attn_args *a, int probs,
                                          const void *store),
                              const void *hstore, const void *dstore)
{
    for (int probs = 0; probs < 2; probs++) {
        const size_t n = probs ? p->n_probs : p->n_out;
        float *want = xmalloc(n * 4), *got = xmalloc(n * 4);
        for (size_t i = 0; i < n; i++) got[i] = NAN;
        float *dout = to_dev(got, n * 4);
        plm_attn_args h = p->h, d = p->d;
        h.out = want;
        d.out = dout;
        run(cpu, &h, probs, hstore);
        run(gpu, &d, probs, dstore);
        gpu->ops->download(gpu, got, dout, n * 4);
        const char *e = gpu_error();
        const double rel = rel_l2(got, want, n);
        char label[300];
        snprintf(label, sizeof label, "%s %s", probs ? "scores" : "attention", name);
        if (e) result(0, label, "backend error: %s", e);
        else result(rel <= 1e-5, label, "rel err %.3g (tol 1e-5)", rel);
        gpu->ops->release(gpu, dout);
        free(want);
        free(got);
    }
}

/* ---- ThinK ----------------------------------------------------------------------------------- */

static void thin_run(plm_backend *be, const plm_attn_args *a, int probs, const void *store)
{
    if (probs) be->ops->kv_thin->probs(be, a, store);
    else be->ops->kv_thin->attend(be, a, store);
}

static int thin_same(const plm_kv_thin *h, const plm_kv_thin *d, int64_t rows, const char **why)
{
    const size_t w = (size_t)h->n_kv * h->n_chan;
    float *t = from_dev(d->k, (size_t)rows * w * 4);
    int32_t *nt = from_dev(d->n_thin, (size_t)h->n_kv * 4);
    int ok = !memcmp(nt, h->h_n_thin, (size_t)h->n_kv * 4);
    if (!ok) *why = "n_thin differs";
    for (int hh = 0; hh < h->n_kv && ok; hh++)
        for (int64_t r = 0; r < h->h_n_thin[hh] && ok; r++)
            if (memcmp(t + r * w + hh * h->n_chan, h->k + r * w + hh * h->n_chan,
                       (size_t)h->n_chan * 4)) {
                ok = 0;
                *why = "thin rows differ";
            }
    free(t);
    free(nt);
    return ok;
}

typedef struct tcase {
    int n_heads, n_kv, hd, keep;
    int64_t len, nt, tq;
    int work, compact, mix;
} tcase;

static void thin_case(const tcase *c, uint64_t seed)
{
    rng = seed * 0x9e3779b97f4a7c15ull + 1;
    char name[200];
    snprintf(name, sizeof name, "think heads=%d/%d hd=%d keep=%d len=%lld thin=%lld tq=%lld%s%s%s",
             c->n_heads, c->n_kv, c->hd, c->keep, (long long)c->len, (long long)c->nt,
             (long long)c->tq, c->work ? "" : " no-scratch", c->compact ? " compacted" : "",
             c->mix ? " merged" : "");
    plm_error err;
    const int64_t stride = (int64_t)c->n_kv * c->hd;
    int64_t len = c->len;
    const size_t kvn = (size_t)(len * stride);
    float *k = rand_vec(kvn), *v = rand_vec(kvn);
    float *dk = to_dev(k, kvn * 4), *dv = to_dev(v, kvn * 4);
    int32_t *chan = xmalloc((size_t)(c->n_kv * c->keep) * sizeof *chan);
    for (int h = 0; h < c->n_kv; h++) { /* a spread of channels, different per head */
        int n = 0;
        for (int d = 0; d < c->hd && n < c->keep; d++)
            if (c->hd - d <= c->keep - n || ((d * 7 + h * 3) % 5) != 0) chan[h * c->keep + n++] = d;
    }
    plm_kv_thin hs, ds;
    if (kv_thin_init(&hs, c->n_kv, c->hd, c->keep, len, &err) != PLM_OK ||
        kv_thin_init(&ds, c->n_kv, c->hd, c->keep, len, &err) != PLM_OK ||
        kv_thin_alloc(cpu, &hs, chan, &err) != PLM_OK || kv_thin_alloc(gpu, &ds, chan, &err) !=
                                                            PLM_OK)
        die(name, &err);
    float *dwork = NULL;
    if (c->work) {
        ds.work_floats = kv_thin_work_floats(c->n_heads, c->hd, c->tq);
        dwork = to_dev(NULL, (size_t)ds.work_floats * 4);
        ds.work = dwork;
    }
    if (kv_thin_compress(cpu, &hs, k, stride, c->nt, &err) != PLM_OK ||
        kv_thin_compress(gpu, &ds, dk, stride, c->nt, &err) != PLM_OK)
        die(name, &err);
    const char *why = "";
    char label[300];
    snprintf(label, sizeof label, "compress %s", name);
    int ok = thin_same(&hs, &ds, len, &why);
    const char *e = gpu_error();
    result(ok && !e, label, "%s", e ? e : ok ? "bit-exact" : why);
    if (c->compact) {
        int64_t n_keep;
        int32_t *kl = keep_list(c->n_kv, len, c->nt, &n_keep);
        cpu->ops->gather_heads(cpu, k, stride, c->n_kv, c->hd, kl, n_keep);
        cpu->ops->gather_heads(cpu, v, stride, c->n_kv, c->hd, kl, n_keep);
        gpu->ops->gather_heads(gpu, dk, stride, c->n_kv, c->hd, kl, n_keep);
        gpu->ops->gather_heads(gpu, dv, stride, c->n_kv, c->hd, kl, n_keep);
        if (kv_thin_compact(cpu, &hs, kl, n_keep, &err) != PLM_OK ||
            kv_thin_compact(gpu, &ds, kl, n_keep, &err) != PLM_OK)
            die(name, &err);
        len = n_keep;
        snprintf(label, sizeof label, "compact %s", name);
        ok = thin_same(&hs, &ds, len, &why);
        e = gpu_error();
        result(ok && !e, label, "%s", e ? e : ok ? "bit-exact" : why);
        free(kl);
    }
    if (c->mix) {
        enum { NM = 9 };
        int32_t head[NM], dst[NM], src[NM];
        float a[NM], b[NM];
        for (int m = 0; m < NM; m++) { /* every mix of thin and whole rows, one row twice */
            head[m] = m % c->n_kv;
            dst[m] = (int32_t)((m * 5 + 1) % len);
            src[m] = (int32_t)((m * 11 + 3) % len);
            a[m] = 0.4f + 0.05f * (float)m;
            b[m] = 1.0f - a[m];
        }
        dst[NM - 1] = dst[0];
        if (kv_thin_mix(cpu, &hs, k, stride, len, head, dst, src, a, b, NM, &err) != PLM_OK ||
            kv_thin_mix(gpu, &ds, dk, stride, len, head, dst, src, a, b, NM, &err) != PLM_OK)
            die(name, &err);
        snprintf(label, sizeof label, "merges %s", name);
        ok = thin_same(&hs, &ds, len, &why);
        float *gk = from_dev(dk, (size_t)(len * stride) * 4);
        if (ok && memcmp(gk, k, (size_t)(len * stride) * 4)) {
            ok = 0;
            why = "whole rows differ";
        }
        e = gpu_error();
        result(ok && !e, label, "%s", e ? e : ok ? "bit-exact" : why);
        free(gk);
    }
    const int64_t nq = c->tq * c->n_heads * c->hd;
    float *q = rand_vec((size_t)nq), *dq = to_dev(q, (size_t)nq * 4);
    pair_args p = {args(NULL, q, k, v, c->tq, len, stride, c->n_heads, c->n_kv, c->hd),
                   args(NULL, dq, dk, dv, c->tq, len, stride, c->n_heads, c->n_kv, c->hd),
                   (size_t)nq, (size_t)(c->n_heads * len)};
    compare_attention(name, &p, thin_run, &hs, &ds);
    kv_thin_release(cpu, &hs);
    kv_thin_release(gpu, &ds);
    gpu->ops->release(gpu, dk);
    gpu->ops->release(gpu, dv);
    gpu->ops->release(gpu, dq);
    if (dwork) gpu->ops->release(gpu, dwork);
    free(k);
    free(v);
    free(q);
    free(chan);
}

/* ---- int4 ------------------------------------------------------------------------------------ */

static void int4_run(plm_backend *be, const plm_attn_args *a, int probs, const void *store)
{
    if (probs) be->ops->kv_int4->probs(be, a, store);
    else be->ops->kv_int4->attend(be, a, store);
}

/* The device store's stored rows and used key groups equal the host's, byte for byte. */
static int int4_same(const plm_kv_int4 *h, const plm_kv_int4 *d, const char **why)
{
    const size_t rows = (size_t)h->cap * h->n_kv, cb = (size_t)h->head_dim / 2;
    const size_t kp = (size_t)h->n_kv * h->n_slots * h->head_dim;
    uint8_t *kc = from_dev(d->k_codes, rows * cb), *vc = from_dev(d->v_codes, rows * cb);
    int32_t *sl = from_dev(d->k_slot, rows * 4), *nq = from_dev(d->n_q, (size_t)h->n_kv * 4);
    float *kmn = from_dev(d->k_mn, kp * 4), *ksc = from_dev(d->k_sc, kp * 4);
    float *vmn = from_dev(d->v_mn, rows * h->n_vg * 4);
    float *vsc = from_dev(d->v_sc, rows * h->n_vg * 4);
    int ok = !memcmp(nq, h->h_n_q, (size_t)h->n_kv * 4);
    if (!ok) *why = "n_q differs";
    for (int hh = 0; hh < h->n_kv && ok; hh++) {
        for (int64_t r = 0; r < h->h_n_q[hh] && ok; r++) {
            const size_t row = (size_t)r * h->n_kv + hh;
            if (memcmp(kc + row * cb, h->k_codes + row * cb, cb)) *why = "K codes differ";
            else if (memcmp(vc + row * cb, h->v_codes + row * cb, cb)) *why = "V codes differ";
            else if (sl[row] != h->k_slot[row]) *why = "key groups differ";
            else if (memcmp(vmn + row * h->n_vg, h->v_mn + row * h->n_vg, h->n_vg * 4) ||
                     memcmp(vsc + row * h->n_vg, h->v_sc + row * h->n_vg, h->n_vg * 4))
                *why = "value parameters differ";
            else continue;
            ok = 0;
        }
        const size_t base = (size_t)hh * h->n_slots * h->head_dim;
        const size_t used = (size_t)h->h_next[hh] * h->head_dim;
        if (ok && (memcmp(kmn + base, h->k_mn + base, used * 4) ||
                   memcmp(ksc + base, h->k_sc + base, used * 4))) {
            ok = 0;
            *why = "key parameters differ";
        }
    }
    free(kc);
    free(vc);
    free(sl);
    free(nq);
    free(kmn);
    free(ksc);
    free(vmn);
    free(vsc);
    return ok;
}

typedef struct qcase {
    int n_heads, n_kv, hd, group;
    int64_t len, recent, tq;
    int work, compact, mix;
} qcase;

static void int4_case(const qcase *c, uint64_t seed)
{
    rng = seed * 0x9e3779b97f4a7c15ull + 7;
    char name[200];
    snprintf(name, sizeof name, "int4 heads=%d/%d hd=%d group=%d len=%lld recent=%lld tq=%lld"
             "%s%s%s", c->n_heads, c->n_kv, c->hd, c->group, (long long)c->len,
             (long long)c->recent, (long long)c->tq, c->work ? "" : " no-scratch",
             c->compact ? " compacted" : "", c->mix ? " merged" : "");
    plm_error err;
    const int64_t stride = (int64_t)c->n_kv * c->hd;
    int64_t len = c->len;
    const size_t kvn = (size_t)(len * stride);
    float *k = rand_vec(kvn), *v = rand_vec(kvn);
    for (size_t i = 0; i < kvn; i += 7) k[i] *= 20.0f; /* some loud channels */
    float *dk = to_dev(k, kvn * 4), *dv = to_dev(v, kvn * 4);
    plm_kv_int4 hs, ds;
    if (kv_int4_init(&hs, c->n_kv, c->hd, c->group, len, &err) != PLM_OK ||
        kv_int4_init(&ds, c->n_kv, c->hd, c->group, len, &err) != PLM_OK ||
        kv_int4_alloc(cpu, &hs, &err) != PLM_OK || kv_int4_alloc(gpu, &ds, &err) != PLM_OK)
        die(name, &err);
    float *dwork = NULL;
    if (c->work) {
        ds.work_floats = kv_int4_work_floats(c->n_heads, c->hd, c->tq);
        dwork = to_dev(NULL, (size_t)ds.work_floats * 4);
        ds.work = dwork;
    }
    /* the device in two advances (a shorter cache first), the host in one */
    if (kv_int4_advance(cpu, &hs, k, v, stride, len, c->recent, &err) != PLM_OK ||
        kv_int4_advance(gpu, &ds, dk, dv, stride, len / 2, c->recent, &err) != PLM_OK ||
        kv_int4_advance(gpu, &ds, dk, dv, stride, len, c->recent, &err) != PLM_OK)
        die(name, &err);
    const char *why = "";
    char label[300];
    snprintf(label, sizeof label, "quantize %s", name);
    /* key groups start at multiples of group either way, so the stores must agree */
    int ok = int4_same(&hs, &ds, &why);
    const char *e = gpu_error();
    result(ok && !e, label, "%s (%lld rows stored per head)", e ? e : ok ? "bit-exact" : why,
           (long long)hs.h_n_q[0]);
    if (c->compact) {
        int64_t n_keep;
        int32_t *kl = keep_list(c->n_kv, len, hs.h_n_q[0], &n_keep);
        cpu->ops->gather_heads(cpu, k, stride, c->n_kv, c->hd, kl, n_keep);
        cpu->ops->gather_heads(cpu, v, stride, c->n_kv, c->hd, kl, n_keep);
        gpu->ops->gather_heads(gpu, dk, stride, c->n_kv, c->hd, kl, n_keep);
        gpu->ops->gather_heads(gpu, dv, stride, c->n_kv, c->hd, kl, n_keep);
        if (kv_int4_compact(cpu, &hs, kl, n_keep, &err) != PLM_OK ||
            kv_int4_compact(gpu, &ds, kl, n_keep, &err) != PLM_OK)
            die(name, &err);
        len = n_keep;
        snprintf(label, sizeof label, "compact %s", name);
        ok = int4_same(&hs, &ds, &why);
        e = gpu_error();
        result(ok && !e, label, "%s", e ? e : ok ? "bit-exact" : why);
        free(kl);
    }
    if (c->mix) {
        enum { NM = 9 };
        int32_t head[NM], dst[NM], src[NM];
        float a[NM], b[NM];
        for (int m = 0; m < NM; m++) {
            head[m] = m % c->n_kv;
            dst[m] = (int32_t)((m * 5 + 1) % len);
            src[m] = (int32_t)((m * 11 + 3) % len);
            a[m] = 0.4f + 0.05f * (float)m;
            b[m] = 1.0f - a[m];
        }
        dst[NM - 1] = dst[0];
        if (kv_int4_mix(cpu, &hs, k, v, stride, len, head, dst, src, a, b, NM, &err) != PLM_OK ||
            kv_int4_mix(gpu, &ds, dk, dv, stride, len, head, dst, src, a, b, NM, &err) != PLM_OK)
            die(name, &err);
        snprintf(label, sizeof label, "merges %s", name);
        ok = int4_same(&hs, &ds, &why);
        float *gk = from_dev(dk, (size_t)(len * stride) * 4);
        float *gv = from_dev(dv, (size_t)(len * stride) * 4);
        if (ok && (memcmp(gk, k, (size_t)(len * stride) * 4) ||
                   memcmp(gv, v, (size_t)(len * stride) * 4))) {
            ok = 0;
            why = "float rows differ";
        }
        e = gpu_error();
        result(ok && !e, label, "%s", e ? e : ok ? "bit-exact" : why);
        free(gk);
        free(gv);
    }
    const int64_t nq = c->tq * c->n_heads * c->hd;
    float *q = rand_vec((size_t)nq), *dq = to_dev(q, (size_t)nq * 4);
    pair_args p = {args(NULL, q, k, v, c->tq, len, stride, c->n_heads, c->n_kv, c->hd),
                   args(NULL, dq, dk, dv, c->tq, len, stride, c->n_heads, c->n_kv, c->hd),
                   (size_t)nq, (size_t)(c->n_heads * len)};
    compare_attention(name, &p, int4_run, &hs, &ds);
    kv_int4_release(cpu, &hs);
    kv_int4_release(gpu, &ds);
    gpu->ops->release(gpu, dk);
    gpu->ops->release(gpu, dv);
    gpu->ops->release(gpu, dq);
    if (dwork) gpu->ops->release(gpu, dwork);
    free(k);
    free(v);
    free(q);
}

int main(void)
{
    char why[256];
    plm_error err;
    if (!plm_cuda_available(why, sizeof why) || plm_backend_cpu_new(2, &cpu, &err) != PLM_OK ||
        plm_backend_cuda_new(0, &gpu, &err) != PLM_OK) {
        printf("FAIL no CUDA backend: %s\n0 passed, 1 failed\n", why);
        return 1;
    }
    const tcase tc[] = {
        {4, 2, 16, 10, 40, 30, 1, 1, 0, 0},      {6, 2, 32, 19, 60, 44, 3, 1, 1, 1},
        {12, 4, 64, 38, 300, 280, 1, 1, 1, 1},   {32, 32, 128, 77, 4000, 3968, 1, 1, 0, 0},
        {32, 8, 128, 64, 5000, 4900, 2, 0, 1, 0}, {8, 1, 256, 100, 900, 800, 1, 1, 1, 1},
        {3, 3, 48, 48, 200, 190, 1, 1, 0, 1},    {5, 1, 100, 1, 129, 120, 1, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof tc / sizeof *tc; i++) thin_case(&tc[i], i + 1);
    const qcase qc[] = {
        {4, 2, 16, 8, 40, 4, 1, 1, 0, 0},        {6, 2, 32, 32, 100, 8, 3, 1, 1, 1},
        {12, 4, 64, 16, 300, 20, 1, 1, 1, 1},    {32, 32, 128, 32, 4000, 128, 1, 1, 0, 0},
        {32, 8, 128, 32, 5000, 128, 2, 0, 1, 0}, {8, 1, 256, 64, 900, 0, 1, 1, 1, 1},
        {3, 3, 48, 12, 200, 9, 1, 1, 0, 1},      {5, 1, 96, 3, 129, 5, 1, 1, 1, 1},
        {2, 2, 16, 1, 50, 0, 1, 1, 0, 1},
    };
    for (size_t i = 0; i < sizeof qc / sizeof *qc; i++) int4_case(&qc[i], i + 101);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    plm_backend_free(gpu);
    plm_backend_free(cpu);
    return n_fail ? 1 : 0;
}
