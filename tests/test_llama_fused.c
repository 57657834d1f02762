/* lm/llama.c's path through the fused decoder ops (matmul_multi, matmul_glu, add_rmsnorm,
 * rope_qk) against its path through the plain ops, on the CPU: the fused ops here are the
 * compositions their comments in core/backend.h name, so the two paths must give bitwise equal
 * logits and KV caches. A wrong pointer, stride or deferred residual in llama_forward shows
 * here without a GPU (the CUDA kernels themselves are checked by tests/gpu/test_cuda_ops.c). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "lm/llama.h"
#include "tests/support/compare.h"

/* The CPU backend's own table, which the fused test ops call. */
static const plm_backend_ops *plain;

static void t_matmul_multi(plm_backend *be, int n, float *const *y, const float *x,
                           const plm_weight *const *w, const float *const *bias, int64_t m)
{
    for (int i = 0; i < n; i++) plain->matmul(be, y[i], x, w[i], bias[i], m);
}

static void t_matmul_glu(plm_backend *be, float *y, float *tmp, const float *x,
                         const plm_weight *gate, const float *gate_b, const plm_weight *up,
                         const float *up_b, int64_t m)
{
    plain->matmul(be, y, x, gate, gate_b, m);
    plain->matmul(be, tmp, x, up, up_b, m);
    plain->silu_mul(be, y, y, tmp, m * gate->rows);
}

static void t_add_rmsnorm(plm_backend *be, float *y, float *x, const float *h, const float *g,
                          int64_t m, int64_t n, float eps)
{
    plain->add(be, x, x, h, m * n);
    plain->rmsnorm(be, y, x, g, m, n, eps);
}

static void t_rope_qk(plm_backend *be, float *q, int64_t q_stride, int n_q, float *k,
                      int64_t k_stride, int n_k, int64_t t, int hd, const int32_t *pos,
                      const float *inv_freq)
{
    plain->rope(be, q, t, q_stride, n_q, hd, pos, inv_freq);
    plain->rope(be, k, t, k_stride, n_k, hd, pos, inv_freq);
}

static uint64_t rng = 12345;
static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static float *rnd(int64_t n, float scale, float offset)
{
    float *p = malloc((size_t)n * sizeof *p);
    cr_assert(p);
    for (int64_t i = 0; i < n; i++) p[i] = offset + scale * frand();
    return p;
}

static plm_weight mat(int64_t rows, int64_t cols)
{
    return (plm_weight){PLM_F32, rows, cols, rnd(rows * cols, 0.3f, 0.0f)};
}

/* A 2-layer GQA decoder with every bias present. */
static void make_model(llama_model *m)
{
    memset(m, 0, sizeof *m);
    llama_config *c = &m->cfg;
    c->vocab = 50, c->hidden = 64, c->intermediate = 96, c->n_layers = 2, c->n_heads = 4;
    c->n_kv = 2, c->head_dim = 16, c->max_pos = 256, c->rms_eps = 1e-5f;
    c->rope_theta = 10000.0, c->rope_type = ROPE_DEFAULT, c->attn_bias = 1, c->mlp_bias = 1;
    const int64_t D = c->hidden, I = c->intermediate, qd = 64, kvd = 32;
    m->lm_head = mat(c->vocab, D);
    m->norm = rnd(D, 0.2f, 1.0f);
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    for (int l = 0; l < c->n_layers; l++) {
        llama_layer *L = &m->layers[l];
        L->in_norm = rnd(D, 0.2f, 1.0f), L->post_norm = rnd(D, 0.2f, 1.0f);
        L->q = mat(qd, D), L->k = mat(kvd, D), L->v = mat(kvd, D), L->o = mat(D, qd);
        L->gate = mat(I, D), L->up = mat(I, D), L->down = mat(D, I);
        L->q_b = rnd(qd, 0.1f, 0), L->k_b = rnd(kvd, 0.1f, 0), L->v_b = rnd(kvd, 0.1f, 0);
        L->o_b = rnd(D, 0.1f, 0), L->gate_b = rnd(I, 0.1f, 0), L->up_b = rnd(I, 0.1f, 0);
        L->down_b = rnd(D, 0.1f, 0);
    }
}

static void free_model(llama_model *m)
{
    free((void *)m->lm_head.data);
    free(m->norm);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        llama_layer *L = &m->layers[l];
        const plm_weight *ws[] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
        for (int i = 0; i < 7; i++) free((void *)ws[i]->data);
        float *vs[] = {L->in_norm, L->post_norm, L->q_b, L->k_b, L->v_b, L->o_b, L->gate_b,
                       L->up_b, L->down_b};
        for (int i = 0; i < 9; i++) free(vs[i]);
    }
    free(m->layers);
}

static int64_t keep_all(void *ctx, const llama_layer_view *v)
{
    (*(int *)ctx)++;
    return v->t;
}

static int dense(void *ctx, int layer, plm_attn_args *a)
{
    (void)ctx, (void)layer, (void)a;
    return 0;
}

#define T0 6
#define STEPS 3
#define NOUT (2 + STEPS) /* logit rows: two from the prefill, one per step */

/* A prefill of T0 rows (2 logit rows) and STEPS single-row decode steps, the second layer's
 * positions shifted by 2 for the steps (as after a renumbering stage). Fills logits
 * [NOUT x vocab] and the KV caches' rows. */
static void run(const llama_model *m, plm_backend *be, const float *x0, int with_hook,
                float *logits, float *kcache)
{
    const llama_config *c = &m->cfg;
    const int64_t D = c->hidden, V = c->vocab, kvd = (int64_t)c->n_kv * c->head_dim;
    llama_kv kv;
    plm_error err;
    cr_assert_eq(llama_kv_init(&kv, c, be, T0 + STEPS, &err), PLM_OK, "%s", err.msg);
    float *scratch = malloc(llama_scratch_floats(c, T0) * sizeof(float));
    float *x = malloc((size_t)(T0 * D) * sizeof(float));
    memcpy(x, x0, (size_t)(T0 * D) * sizeof(float));
    int32_t pos[T0];
    for (int i = 0; i < T0; i++) pos[i] = i;
    int calls = 0;
    llama_hook hook = {keep_all, dense, &calls};
    const llama_hook *hk = with_hook ? &hook : NULL;
    cr_assert_eq(llama_forward(m, be, &kv, x, pos, T0, 2, logits, T0, scratch, hk), T0);
    kv.shift[1] = 2;
    for (int s = 0; s < STEPS; s++) {
        memcpy(x, x0 + (T0 - 1 - s) * D, (size_t)D * sizeof(float));
        int32_t p = T0 + s;
        cr_assert_eq(llama_forward(m, be, &kv, x, &p, 1, 1, logits + (2 + s) * V, p + 1,
                                   scratch, hk),
                     1);
    }
    cr_assert_eq(kv.len[0], T0 + STEPS);
    cr_assert_eq(kv.len[1], T0 + STEPS);
    if (with_hook) cr_assert_eq(calls, c->n_layers * (1 + STEPS));
    for (int l = 0; l < c->n_layers; l++)
        memcpy(kcache + l * (T0 + STEPS) * kvd, kv.k[l],
               (size_t)((T0 + STEPS) * kvd) * sizeof(float));
    llama_kv_free(&kv, be);
    free(scratch);
    free(x);
}

static void compare(int with_hook)
{
    plm_backend *be;
    plm_error err;
    cr_assert_eq(plm_backend_cpu_new(2, &be, &err), PLM_OK, "%s", err.msg);
    llama_model m;
    make_model(&m);
    const int64_t D = m.cfg.hidden, V = m.cfg.vocab;
    const size_t nk = (size_t)m.cfg.n_layers * (T0 + STEPS) * 32;
    float *x0 = rnd(T0 * D, 1.0f, 0.0f);
    float *want = malloc(NOUT * V * sizeof(float)), *got = malloc(NOUT * V * sizeof(float));
    float *kw = malloc(nk * sizeof(float)), *kg = malloc(nk * sizeof(float));

    plain = be->ops;
    cr_assert_null(plain->matmul_multi, "the CPU backend grew fused ops: test them directly");
    run(&m, be, x0, with_hook, want, kw);
    plm_backend_ops fused = *plain;
    fused.matmul_multi = t_matmul_multi;
    fused.matmul_glu = t_matmul_glu;
    fused.add_rmsnorm = t_add_rmsnorm;
    fused.rope_qk = t_rope_qk;
    be->ops = &fused;
    run(&m, be, x0, with_hook, got, kg);
    be->ops = plain;

    cr_assert_eq(max_abs_diff(got, want, (size_t)(NOUT * V)), 0.0, "logits differ: %g",
                 max_abs_diff(got, want, (size_t)(NOUT * V)));
    cr_assert_eq(max_abs_diff(kg, kw, nk), 0.0, "K caches differ");
    double norm = 0;
    for (int64_t i = 0; i < NOUT * V; i++) norm += (double)want[i] * want[i];
    cr_assert(norm > 1.0 && norm < 1e12, "degenerate logits (%g)", norm);
    free(x0), free(want), free(got), free(kw), free(kg);
    free_model(&m);
    plm_backend_free(be);
}

Test(llama_fused, prefill_and_decode_match_the_plain_ops)
{
    compare(0);
}

/* with a hook after each layer the residual add cannot wait for the next norm */
Test(llama_fused, with_a_hook_match_the_plain_ops)
{
    compare(1);
}
