/* lm/llama.c's path through the fused decoder ops (matmul_multi, matmul_glu, add_rmsnorm,
 * rope_qk) and through recorded decode steps (graph_*, rope_append, attention's q_pos0_dev)
 * against its path through the plain ops, on the CPU: the ops here are the compositions their
 * comments in core/backend.h name, and the "graph" records calls and replays them with the
 * device-side values read at replay, as a CUDA graph does, so every path must give bitwise
 * equal logits and KV caches. A wrong pointer, stride, deferred residual or step value in
 * llama_forward shows here without a GPU (the CUDA kernels themselves are checked by
 * tests/gpu/test_cuda_decode.c). */
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

/* ---- a recording "graph": each op call kept by value, replayed in order ---- */

enum { R_RMSNORM, R_ADD, R_ADD_RMSNORM, R_MATMUL, R_MULTI, R_GLU, R_SILU, R_ROPE_APPEND, R_ATTN };

typedef struct rec_op {
    int kind, n;
    float *y, *tmp, *ys[3];
    const float *x, *h, *g, *bias[3];
    float *xw;
    const plm_weight *w[3];
    int64_t m, cols;
    float eps;
    plm_attn_args a;
    plm_rope_step rs;
} rec_op;

typedef struct recording {
    rec_op ops[1024];
    int n;
} recording;

static recording *rec;        /* non-NULL while recording */
static int n_records, n_launches, refuse_launch; /* refuse_launch: the launch that reports
                                                    moved buffers (0: none) */

static int record(const rec_op *o)
{
    if (!rec) return 0;
    cr_assert_lt(rec->n, 1024);
    rec->ops[rec->n++] = *o;
    return 1;
}

static void g_rmsnorm(plm_backend *be, float *y, const float *x, const float *g, int64_t m,
                      int64_t n, float eps)
{
    if (!record(&(rec_op){.kind = R_RMSNORM, .y = y, .x = x, .g = g, .m = m, .cols = n,
                          .eps = eps}))
        plain->rmsnorm(be, y, x, g, m, n, eps);
}

static void g_add(plm_backend *be, float *y, const float *a, const float *b, int64_t n)
{
    if (!record(&(rec_op){.kind = R_ADD, .y = y, .x = a, .h = b, .cols = n}))
        plain->add(be, y, a, b, n);
}

static void g_add_rmsnorm(plm_backend *be, float *y, float *x, const float *h, const float *g,
                          int64_t m, int64_t n, float eps)
{
    if (!record(&(rec_op){.kind = R_ADD_RMSNORM, .y = y, .xw = x, .h = h, .g = g, .m = m,
                          .cols = n, .eps = eps}))
        t_add_rmsnorm(be, y, x, h, g, m, n, eps);
}

static void g_matmul(plm_backend *be, float *y, const float *x, const plm_weight *w,
                     const float *bias, int64_t m)
{
    if (!record(&(rec_op){.kind = R_MATMUL, .y = y, .x = x, .w = {w}, .bias = {bias}, .m = m}))
        plain->matmul(be, y, x, w, bias, m);
}

static void g_matmul_multi(plm_backend *be, int n, float *const *y, const float *x,
                           const plm_weight *const *w, const float *const *bias, int64_t m)
{
    rec_op o = {.kind = R_MULTI, .n = n, .x = x, .m = m};
    for (int i = 0; i < n; i++) o.ys[i] = y[i], o.w[i] = w[i], o.bias[i] = bias[i];
    if (!record(&o)) t_matmul_multi(be, n, y, x, w, bias, m);
}

static void g_matmul_glu(plm_backend *be, float *y, float *tmp, const float *x,
                         const plm_weight *gate, const float *gate_b, const plm_weight *up,
                         const float *up_b, int64_t m)
{
    if (!record(&(rec_op){.kind = R_GLU, .y = y, .tmp = tmp, .x = x, .w = {gate, up},
                          .bias = {gate_b, up_b}, .m = m}))
        t_matmul_glu(be, y, tmp, x, gate, gate_b, up, up_b, m);
}

static void g_silu_mul(plm_backend *be, float *y, const float *gate, const float *up, int64_t n)
{
    if (!record(&(rec_op){.kind = R_SILU, .y = y, .x = gate, .h = up, .cols = n}))
        plain->silu_mul(be, y, gate, up, n);
}

/* rope_qk on q and k_new at *pos, the new rows stored at row *row: read when it runs */
static void t_rope_append(plm_backend *be, const plm_rope_step *a)
{
    const int64_t kvd = (int64_t)a->n_k * a->hd, row = *a->row;
    memcpy(a->k_cache + row * kvd, a->k_new, (size_t)kvd * sizeof(float));
    memcpy(a->v_cache + row * kvd, a->v_new, (size_t)kvd * sizeof(float));
    plain->rope(be, a->q, 1, (int64_t)a->n_q * a->hd, a->n_q, a->hd, a->pos, a->inv_freq);
    plain->rope(be, a->k_cache + row * kvd, 1, kvd, a->n_k, a->hd, a->pos, a->inv_freq);
}

static void g_rope_append(plm_backend *be, const plm_rope_step *a)
{
    if (!record(&(rec_op){.kind = R_ROPE_APPEND, .rs = *a})) t_rope_append(be, a);
}

static void t_attention(plm_backend *be, const plm_attn_args *a)
{
    plm_attn_args b = *a;
    if (b.q_pos0_dev) {
        cr_assert(b.causal && !b.rows && !b.bias);
        cr_assert_lt(*b.q_pos0_dev, a->tk, "q_pos0 %d past the bound %lld", *b.q_pos0_dev,
                     (long long)a->tk);
        b.q_pos0 = *b.q_pos0_dev;
        b.tk = b.q_pos0 + b.tq;
        b.q_pos0_dev = NULL;
    }
    plain->attention(be, &b);
}

static void g_attention(plm_backend *be, const plm_attn_args *a)
{
    if (!record(&(rec_op){.kind = R_ATTN, .a = *a})) t_attention(be, a);
}

static int g_begin(plm_backend *be)
{
    (void)be;
    cr_assert_null(rec, "recording twice");
    rec = calloc(1, sizeof *rec);
    return 1;
}

static void *g_end(plm_backend *be)
{
    (void)be;
    recording *r = rec;
    rec = NULL;
    n_records++;
    return r;
}

static int g_launch(plm_backend *be, void *graph, void *dev, const void *host, size_t bytes)
{
    if (++n_launches == refuse_launch) return 0;
    memcpy(dev, host, bytes);
    const recording *r = graph;
    for (int i = 0; i < r->n; i++) {
        const rec_op *o = &r->ops[i];
        switch (o->kind) {
        case R_RMSNORM: plain->rmsnorm(be, o->y, o->x, o->g, o->m, o->cols, o->eps); break;
        case R_ADD: plain->add(be, o->y, o->x, o->h, o->cols); break;
        case R_ADD_RMSNORM:
            t_add_rmsnorm(be, o->y, o->xw, o->h, o->g, o->m, o->cols, o->eps);
            break;
        case R_MATMUL: plain->matmul(be, o->y, o->x, o->w[0], o->bias[0], o->m); break;
        case R_MULTI: t_matmul_multi(be, o->n, o->ys, o->x, o->w, o->bias, o->m); break;
        case R_GLU:
            t_matmul_glu(be, o->y, o->tmp, o->x, o->w[0], o->bias[0], o->w[1], o->bias[1], o->m);
            break;
        case R_SILU: plain->silu_mul(be, o->y, o->x, o->h, o->cols); break;
        case R_ROPE_APPEND: t_rope_append(be, &o->rs); break;
        default: t_attention(be, &o->a); break;
        }
    }
    return 1;
}

static void g_free(plm_backend *be, void *graph)
{
    (void)be;
    free(graph);
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
#define STEPS 5
#define NOUT (2 + STEPS) /* logit rows: two from the prefill, one per step */

/* A prefill of T0 rows (2 logit rows) and STEPS single-row decode steps, the second layer two
 * rows shorter and its positions shifted by 2 for the steps (as after a pruning stage that
 * drops and renumbers). Fills logits [NOUT x vocab] and the KV caches' rows. */
static void run(const llama_model *m, plm_backend *be, const float *x0, int with_hook,
                int alternate, float *logits, float *kcache)
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
    kv.len[1] -= 2; /* as if a pruning stage had dropped two of its rows: lengths differ */
    /* one logits buffer, as generate.c; or two in turn (alternate) */
    float *step_logits = malloc((size_t)(2 * V) * sizeof(float));
    for (int s = 0; s < STEPS; s++) {
        memcpy(x, x0 + (T0 - 1 - s) * D, (size_t)D * sizeof(float));
        int32_t p = T0 + s;
        float *lg = step_logits + (alternate ? (s % 2) * V : 0);
        cr_assert_eq(llama_forward(m, be, &kv, x, &p, 1, 1, lg, p + 1, scratch, hk), 1);
        memcpy(logits + (2 + s) * V, lg, (size_t)V * sizeof(float));
    }
    free(step_logits);
    cr_assert_eq(kv.len[0], T0 + STEPS);
    cr_assert_eq(kv.len[1], T0 - 2 + STEPS);
    if (with_hook) cr_assert_eq(calls, c->n_layers * (1 + STEPS));
    memset(kcache, 0, (size_t)(c->n_layers * (T0 + STEPS) * kvd) * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) /* the rows held; the others were never written */
        memcpy(kcache + l * (T0 + STEPS) * kvd, kv.k[l], (size_t)(kv.len[l] * kvd) * sizeof(float));
    llama_kv_free(&kv, be);
    free(scratch);
    free(x);
}

enum { FUSED = 1, GRAPH = 2, ALTERNATE = 4 };

static void compare(int with_hook, int what)
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
    run(&m, be, x0, with_hook, 0, want, kw);
    plm_backend_ops ops = *plain;
    if (what & FUSED) {
        ops.matmul_multi = g_matmul_multi;
        ops.matmul_glu = g_matmul_glu;
        ops.add_rmsnorm = g_add_rmsnorm;
        ops.rope_qk = t_rope_qk;
    }
    if (what & GRAPH) { /* the ops a recorded step calls record themselves */
        ops.rmsnorm = g_rmsnorm, ops.add = g_add, ops.matmul = g_matmul;
        ops.silu_mul = g_silu_mul, ops.attention = g_attention;
        ops.graph_begin = g_begin, ops.graph_end = g_end, ops.graph_launch = g_launch;
        ops.graph_free = g_free, ops.rope_append = g_rope_append;
    }
    n_records = n_launches = 0;
    refuse_launch = 3; /* the second replay finds the buffers moved: recorded again */
    be->ops = &ops;
    run(&m, be, x0, with_hook, !!(what & ALTERNATE), got, kg);
    be->ops = plain;
    if ((what & GRAPH) && !with_hook && !(what & ALTERNATE)) {
        /* step 1 warms up; 2 records and runs; 3 replays; 4 is refused, recorded, run; 5 */
        cr_assert_eq(n_records, 2, "%d recordings", n_records);
        cr_assert_eq(n_launches, STEPS, "%d launches", n_launches);
    } else {
        cr_assert_eq(n_records + n_launches, 0, "a step with a hook or new buffers recorded");
    }

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
    compare(0, FUSED);
}

/* with a hook after each layer the residual add cannot wait for the next norm */
Test(llama_fused, with_a_hook_match_the_plain_ops)
{
    compare(1, FUSED);
}

Test(llama_fused, recorded_steps_match_the_plain_ops)
{
    compare(0, FUSED | GRAPH);
}

Test(llama_fused, recorded_steps_of_plain_ops_match)
{
    compare(0, GRAPH);
}

/* a caller whose logits buffer changes every step is never recorded */
Test(llama_fused, no_recording_for_buffers_that_change)
{
    compare(0, FUSED | GRAPH | ALTERNATE);
}

/* a hook (a KV policy) keeps every step unrecorded */
Test(llama_fused, no_recording_with_a_hook)
{
    compare(1, FUSED | GRAPH);
}
