/* Mustafar's bitmap KV store (prune/kv_bitmap.h) and policy (prune/kv_mustafar.c) on the CPU:
 * the pruning rule against an independent sort, the round trip, the CPU ops against the
 * reference attention and the dense attention, byte accounting, refusals. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "prune/kv.h"
#include "prune/kv_bitmap.h"
#include "tests/support/compare.h"
#include "tests/support/kv_store.h"

/* The rule spelled out another way: sort channels by |x| descending, then channel ascending,
 * and keep the first `keep`. */
static const float *cmp_x;
static int by_mag(const void *pa, const void *pb)
{
    int a = *(const int *)pa, b = *(const int *)pb;
    float ma = fabsf(cmp_x[a]), mb = fabsf(cmp_x[b]);
    if (ma != mb) return ma > mb ? -1 : 1;
    return a - b;
}

static void expect_pruned(const float *x, int hd, int keep, float *want)
{
    int idx[512];
    for (int d = 0; d < hd; d++) idx[d] = d;
    cmp_x = x;
    qsort(idx, (size_t)hd, sizeof *idx, by_mag);
    for (int d = 0; d < hd; d++) want[d] = 0;
    for (int i = 0; i < keep; i++) want[idx[i]] = x[idx[i]];
}

static int popcount_row(const uint64_t *bits, int hd)
{
    int n = 0;
    for (int w = 0; w < (hd + 63) / 64; w++) n += __builtin_popcountll(bits[w]);
    return n;
}

Test(kv_bitmap, keep_counts)
{
    cr_assert_eq(kv_bitmap_keep(128, 0.5), 64);
    cr_assert_eq(kv_bitmap_keep(128, 0.7), 39); /* floor(89.6) = 89 pruned */
    cr_assert_eq(kv_bitmap_keep(128, 0.0), 128);
    cr_assert_eq(kv_bitmap_keep(5, 0.5), 3);
    cr_assert_eq(kv_bitmap_keep(1, 0.9), 1);
    cr_assert_eq(kv_bitmap_keep(10, 0.99), 1);
}

Test(kv_bitmap, row_keeps_exactly_the_largest_magnitudes)
{
    rng = 11;
    const int dims[] = {128, 100, 7, 64, 65, 200, 1};
    const double sps[] = {0.0, 0.5, 0.7, 0.9};
    for (size_t a = 0; a < sizeof dims / sizeof *dims; a++)
        for (size_t b = 0; b < sizeof sps / sizeof *sps; b++) {
            const int hd = dims[a], keep = kv_bitmap_keep(hd, sps[b]);
            const int slots = (keep + 3) / 4 * 4;
            float *x = rand_vec((size_t)hd), want[512], got[512], vals[516];
            uint64_t bits[8];
            for (int i = 0; i < slots; i++) vals[i] = NAN;
            kv_bitmap_compress_row(x, hd, keep, slots, bits, vals);
            cr_assert_eq(popcount_row(bits, hd), keep, "hd %d sparsity %g", hd, sps[b]);
            for (int i = keep; i < slots; i++) cr_assert_eq(vals[i], 0.0f, "padding slot %d", i);
            expect_pruned(x, hd, keep, want);
            kv_bitmap_decompress_row(bits, vals, hd, got);
            cr_assert_arr_eq(got, want, (size_t)hd * sizeof(float), "hd %d sparsity %g", hd,
                             sps[b]);
            /* share zeroed = floor(sparsity * hd) */
            int zeros = 0;
            for (int d = 0; d < hd; d++) zeros += got[d] == 0.0f;
            cr_assert_eq(zeros, hd - keep);
            free(x);
        }
}

Test(kv_bitmap, ties_go_to_the_lower_channel)
{
    /* Every magnitude equal (signs alternate): the lowest channels win. */
    float x[70], got[70], vals[36];
    uint64_t bits[2];
    for (int d = 0; d < 70; d++) x[d] = d % 2 ? -1.5f : 1.5f;
    kv_bitmap_compress_row(x, 70, 35, 36, bits, vals);
    cr_assert_eq(bits[0], (1ull << 35) - 1);
    cr_assert_eq(bits[1], 0);
    /* Zeros tie too: with 2 non-zeros and keep 4, channels 0 and 1 are the zero ties kept. */
    float y[8] = {0, 0, 0, 5, 0, -6, 0, 0};
    kv_bitmap_compress_row(y, 8, 4, 4, bits, vals);
    cr_assert_eq(bits[0], 0x2bull); /* channels 0, 1, 3, 5 */
    kv_bitmap_decompress_row(bits, vals, 8, got);
    cr_assert_arr_eq(got, y, sizeof y);
    cr_assert_eq(vals[0], 0.0f);
    cr_assert_eq(vals[2], 5.0f);
    cr_assert_eq(vals[3], -6.0f);
}

Test(kv_bitmap, round_trip_over_a_cache)
{
    rng = 5;
    const int n_kv = 3, hd = 40;
    const int64_t rows = 23, stride = n_kv * hd + 5;
    plm_kv_bitmap kb;
    plm_error err;
    cr_assert_eq(kv_bitmap_init(&kb, n_kv, hd, 30, 0.7, 0.5, &err), PLM_OK);
    cr_assert_eq(kb.k_keep, 12);
    cr_assert_eq(kb.v_keep, 20);
    cr_assert_eq(kb.k_slots, 12);
    cr_assert_eq(kb.words, 1);
    plm_backend *cpu;
    cr_assert_eq(plm_backend_cpu_new(1, &cpu, &err), PLM_OK);
    cr_assert_eq(kv_bitmap_alloc(cpu, &kb, &err), PLM_OK);
    float *k = rand_vec((size_t)(rows * stride)), *v = rand_vec((size_t)(rows * stride));
    float *k2 = calloc((size_t)(rows * stride), sizeof *k2);
    float *v2 = calloc((size_t)(rows * stride), sizeof *v2);
    /* two batches through the op give what one host call gives */
    cr_assert_eq(kv_bitmap_compress(cpu, &kb, k, v, stride, 9, &err), PLM_OK);
    cr_assert_eq(kb.n_rows, 9);
    cr_assert_eq(kv_bitmap_compress(cpu, &kb, k, v, stride, 5, &err), PLM_OK); /* no-op */
    cr_assert_eq(kb.n_rows, 9);
    cr_assert_eq(kv_bitmap_compress(cpu, &kb, k, v, stride, rows, &err), PLM_OK);
    cr_assert_eq(kb.n_rows, rows);
    kv_bitmap_decompress_host(&kb, 0, rows, k2, v2, stride);
    for (int64_t r = 0; r < rows; r++)
        for (int h = 0; h < n_kv; h++) {
            float want[64];
            const int64_t off = r * stride + h * hd;
            expect_pruned(k + off, hd, kb.k_keep, want);
            cr_assert_arr_eq(k2 + off, want, hd * sizeof(float), "K row %lld head %d",
                             (long long)r, h);
            expect_pruned(v + off, hd, kb.v_keep, want);
            cr_assert_arr_eq(v2 + off, want, hd * sizeof(float), "V row %lld head %d",
                             (long long)r, h);
        }
    kv_bitmap_release(cpu, &kb);
    plm_backend_free(cpu);
    free(k);
    free(v);
    free(k2);
    free(v2);
}

/* One attention case: CPU op vs reference vs dense attention on the pruned cache. */
static void attend_case(int n_heads, int n_kv, int hd, int64_t len, int64_t nc, int64_t tq,
                        double sparsity)
{
    plm_error err;
    plm_backend *cpu;
    cr_assert_eq(plm_backend_cpu_new(1, &cpu, &err), PLM_OK);
    const int64_t stride = (int64_t)n_kv * hd, qs = (int64_t)n_heads * hd;
    float *k = rand_vec((size_t)(len * stride)), *v = rand_vec((size_t)(len * stride));
    float *q = rand_vec((size_t)(tq * qs));
    plm_kv_bitmap kb;
    cr_assert_eq(kv_bitmap_init(&kb, n_kv, hd, len + 3, sparsity, sparsity * 0.8, &err), PLM_OK);
    cr_assert_eq(kv_bitmap_alloc(cpu, &kb, &err), PLM_OK);
    cr_assert_eq(kv_bitmap_compress(cpu, &kb, k, v, stride, nc, &err), PLM_OK);
    float *got = malloc((size_t)(tq * qs) * sizeof *got);
    float *want = malloc((size_t)(tq * qs) * sizeof *want);
    float *dense = malloc((size_t)(tq * qs) * sizeof *dense);
    plm_attn_args a = {0};
    a.out = got;
    a.q = q;
    a.k = k;
    a.v = v;
    a.tq = tq;
    a.tk = len;
    a.q_stride = qs;
    a.kv_stride = stride;
    a.q_pos0 = len - tq;
    a.n_heads = n_heads;
    a.n_kv = n_kv;
    a.head_dim = hd;
    a.causal = 1;
    a.scale = 1.0f / sqrtf((float)hd);
    cr_assert_eq(kv_bitmap_attend(cpu, &a, &kb, &err), PLM_OK);
    a.out = want;
    cr_assert_eq(kv_bitmap_attention_ref(&a, &kb, &err), PLM_OK);
    double e = rel_l2(got, want, (size_t)(tq * qs));
    cr_assert(e < 2e-6, "op vs reference: rel err %g (heads %d/%d hd %d len %lld nc %lld)", e,
              n_heads, n_kv, hd, (long long)len, (long long)nc);
    /* the dense op on the cache with rows below nc pruned */
    kv_bitmap_decompress_host(&kb, 0, nc, k, v, stride);
    a.out = dense;
    cpu->ops->attention(cpu, &a);
    e = rel_l2(got, dense, (size_t)(tq * qs));
    cr_assert(e < 2e-6, "op vs dense on the pruned cache: rel err %g", e);
    kv_bitmap_release(cpu, &kb);
    plm_backend_free(cpu);
    free(k);
    free(v);
    free(q);
    free(got);
    free(want);
    free(dense);
}

Test(kv_bitmap, cpu_op_matches_reference_and_dense)
{
    rng = 77;
    attend_case(4, 2, 40, 37, 20, 1, 0.5);   /* GQA, odd rows, straddling window */
    attend_case(6, 3, 128, 100, 0, 1, 0.7);  /* nothing compressed yet */
    attend_case(8, 8, 64, 65, 65, 1, 0.5);   /* everything compressed */
    attend_case(3, 1, 17, 50, 33, 1, 0.7);   /* odd head_dim, 3 heads on one kv head */
    attend_case(2, 2, 130, 70, 64, 1, 0.5);  /* three bitmap words */
    attend_case(4, 2, 32, 40, 30, 5, 0.5);   /* several causal queries */
}

Test(kv_bitmap, sparsity_zero_is_dense_attention)
{
    rng = 3;
    plm_error err;
    plm_backend *cpu;
    cr_assert_eq(plm_backend_cpu_new(1, &cpu, &err), PLM_OK);
    const int hd = 64, nkv = 2, nh = 4;
    const int64_t len = 33, stride = nkv * hd;
    float *k = rand_vec((size_t)(len * stride)), *v = rand_vec((size_t)(len * stride));
    float *q = rand_vec((size_t)(nh * hd)), got[256], want[256];
    plm_kv_bitmap kb;
    cr_assert_eq(kv_bitmap_init(&kb, nkv, hd, len, 0, 0, &err), PLM_OK);
    cr_assert_eq(kv_bitmap_alloc(cpu, &kb, &err), PLM_OK);
    cr_assert_eq(kv_bitmap_compress(cpu, &kb, k, v, stride, len, &err), PLM_OK);
    plm_attn_args a = {.out = got, .q = q, .k = k, .v = v, .tq = 1, .tk = len,
                       .q_stride = nh * hd, .kv_stride = stride, .q_pos0 = len - 1,
                       .n_heads = nh, .n_kv = nkv, .head_dim = hd, .causal = 1, .scale = 0.125f};
    cr_assert_eq(kv_bitmap_attend(cpu, &a, &kb, &err), PLM_OK);
    a.out = want;
    cpu->ops->attention(cpu, &a);
    cr_assert(rel_l2(got, want, 256) < 2e-6);
    kv_bitmap_release(cpu, &kb);
    plm_backend_free(cpu);
    free(k);
    free(v);
    free(q);
}

Test(kv_bitmap, bytes_accounting)
{
    plm_kv_bitmap kb;
    plm_error err;
    /* LLaVA-7B: 32 kv heads of 128. Per row and head: 2 x 16 bytes of bitmap + values. */
    cr_assert_eq(kv_bitmap_init(&kb, 32, 128, 4096, 0.5, 0.5, &err), PLM_OK);
    cr_assert_eq(kv_bitmap_bytes(&kb, 4096), (size_t)4096 * 32 * (32 + 2 * 64 * 4));
    cr_assert_eq(kv_bitmap_dense_bytes(&kb, 4096), (size_t)4096 * 32 * 1024);
    cr_assert_eq(kv_bitmap_init(&kb, 32, 128, 4096, 0.7, 0.7, &err), PLM_OK);
    cr_assert_eq(kb.k_slots, 40);
    cr_assert_eq(kv_bitmap_bytes(&kb, 4096), (size_t)4096 * 32 * (32 + 2 * 40 * 4));
    /* each array 256-byte aligned: 1 head, 1 row, hd 8: 8 + 8 + 16 + 16 bytes -> 4 x 256 */
    cr_assert_eq(kv_bitmap_init(&kb, 1, 8, 1, 0.5, 0.5, &err), PLM_OK);
    cr_assert_eq(kv_bitmap_bytes(&kb, 1), 1024u);
    cr_assert_eq(kv_bitmap_bytes(&kb, 0), 0u);
    cr_assert_eq(kv_bitmap_work_floats(32, 128, 1), 128 * 32 * 130);
}

Test(kv_bitmap, refusals_name_the_problem)
{
    plm_kv_bitmap kb;
    plm_error err;
    cr_assert_eq(kv_bitmap_init(&kb, 4, 128, 10, 1.0, 0.5, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "outside [0, 1)"), "%s", err.msg);
    cr_assert_eq(kv_bitmap_init(&kb, 4, 0, 10, 0.5, 0.5, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "head_dim 0"), "%s", err.msg);
    cr_assert_eq(kv_bitmap_init(&kb, 4, 64, INT64_MAX / 8, 0.5, 0.5, &err), PLM_E_LIMIT);
    plm_backend *cpu;
    cr_assert_eq(plm_backend_cpu_new(1, &cpu, &err), PLM_OK);
    cr_assert_eq(kv_bitmap_init(&kb, 2, 16, 8, 0.5, 0.5, &err), PLM_OK);
    float x[64] = {0};
    cr_assert_eq(kv_bitmap_compress(cpu, &kb, x, x, 32, 4, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "before kv_bitmap_alloc"), "%s", err.msg);
    cr_assert_eq(kv_bitmap_alloc(cpu, &kb, &err), PLM_OK);
    cr_assert_eq(kv_bitmap_compress(cpu, &kb, x, x, 32, 9, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "past its 8 rows"), "%s", err.msg);
    plm_attn_args a = {.out = x, .q = x, .k = x, .v = x, .tq = 1, .tk = 1, .q_stride = 32,
                       .kv_stride = 32, .n_heads = 2, .n_kv = 1, .head_dim = 16, .scale = 1};
    cr_assert_eq(kv_bitmap_attend(cpu, &a, &kb, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "1 kv heads of 16, the store 2 of 16"), "%s", err.msg);
    kv_bitmap_release(cpu, &kb);
    plm_backend_free(cpu);
}

/* ---- the policy ---------------------------------------------------------------------------- */

static kv_policy *make_policy(const char *text, plm_status *st, plm_error *err)
{
    static prune_spec s;
    kv_policy *p = calloc(1, sizeof *p);
    cr_assert(p);
    p->ops = &kv_mustafar_ops;
    p->c.sink = p->c.recent = p->c.window = -1;
    snprintf(p->spec, sizeof p->spec, "%s", text);
    cr_assert_eq(prune_spec_parse(text, &s, err), PLM_OK);
    /* the common key the registry would have parsed */
    for (int i = 0; i < s.n; i++)
        if (!strcmp(s.p[i].key, "window")) {
            p->c.window = atoll(s.p[i].val);
            s.p[i].used = 1;
        }
    *st = p->ops->parse(p, &s, err);
    if (*st == PLM_OK) *st = prune_spec_check_unused(&s, err);
    return p;
}

Test(kv_mustafar, compresses_in_batches_behind_the_window)
{
    plm_error err;
    plm_status st;
    kv_policy *p = make_policy("mustafar:sparsity=0.7,v_sparsity=0.5,window=16,batch=32", &st,
                               &err);
    cr_assert_eq(st, PLM_OK, "%s", err.msg);
    kv_shape sh = {.n_layers = 2, .n_heads = 4, .n_kv = 2, .head_dim = 8, .n_prompt = 100,
                   .cap = 400, .max_new = 300};
    p->shape = sh;
    cr_assert_eq(p->ops->begin(p, &sh, &err), PLM_OK);
    cr_assert_eq(p->ops->needs(p, 0, 1, 0), 0);
    kv_plan plan;
    kv_view v = {.layer = 1, .prefill = 1, .len = 100, .n_new = 100};
    memset(&plan, 0, sizeof plan);
    cr_assert_eq(p->ops->plan(p, &v, &plan, &err), PLM_OK);
    cr_assert_eq(plan.n_keep, -1);
    cr_assert_eq(plan.compress_upto, 64); /* floor((100 - 16) / 32) * 32 */
    cr_assert_float_eq(plan.sparsity_k, 0.7f, 1e-7);
    cr_assert_float_eq(plan.sparsity_v, 0.5f, 1e-7);
    /* decode: nothing until 32 more rows left the window (len - 16 >= 96) */
    int64_t fired = 0;
    for (int64_t len = 101; len <= 130; len++) {
        v = (kv_view){.layer = 1, .step = len - 100, .len = len, .n_new = 1};
        cr_assert_eq(p->ops->plan(p, &v, &plan, &err), PLM_OK);
        if (plan.compress_upto) {
            cr_assert_eq(len, 112);
            cr_assert_eq(plan.compress_upto, 96);
            fired++;
        }
    }
    cr_assert_eq(fired, 1);
    /* layer 0 has its own count */
    v = (kv_view){.layer = 0, .prefill = 1, .len = 47, .n_new = 47};
    cr_assert_eq(p->ops->plan(p, &v, &plan, &err), PLM_OK);
    cr_assert_eq(plan.compress_upto, 0); /* 47 - 16 = 31 < one batch */
    p->ops->destroy(p);
    free(p);
}

Test(kv_mustafar, defaults_and_refusals)
{
    plm_error err;
    plm_status st;
    kv_policy *p = make_policy("mustafar", &st, &err);
    cr_assert_eq(st, PLM_OK, "%s", err.msg);
    kv_shape sh = {.n_layers = 1, .n_heads = 2, .n_kv = 2, .head_dim = 8, .cap = 1000};
    p->shape = sh;
    cr_assert_eq(p->ops->begin(p, &sh, &err), PLM_OK);
    kv_plan plan;
    memset(&plan, 0, sizeof plan);
    kv_view v = {.layer = 0, .prefill = 1, .len = 900, .n_new = 900};
    cr_assert_eq(p->ops->plan(p, &v, &plan, &err), PLM_OK);
    cr_assert_eq(plan.compress_upto, 768); /* window 128, batches of 256 */
    cr_assert_float_eq(plan.sparsity_k, 0.5f, 1e-7);
    p->ops->destroy(p);
    free(p);

    p = make_policy("mustafar:sparsity=1", &st, &err);
    cr_assert_neq(st, PLM_OK);
    cr_assert(strstr(err.msg, "sparsity"), "%s", err.msg);
    p->ops->destroy(p);
    free(p);
    p = make_policy("mustafar:batch=2.5", &st, &err);
    cr_assert_eq(st, PLM_E_FORMAT);
    cr_assert(strstr(err.msg, "batch must be a whole number"), "%s", err.msg);
    p->ops->destroy(p);
    free(p);
    p = make_policy("mustafar:sparsty=0.5", &st, &err);
    cr_assert_neq(st, PLM_OK);
    cr_assert(strstr(err.msg, "sparsty"), "%s", err.msg);
    p->ops->destroy(p);
    free(p);
}
