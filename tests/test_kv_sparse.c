/* DELTA, Recycled Attention and AutoPASTA: the sparse-attention and steering policies, driven
 * through plan and attend with hand-made attention whose answer is known. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv.h"

#define CAP 32

/* Parses a spec the way --kv does, checking it names the policy under test. */
static plm_status make(const kv_policy_ops *ops, const char *text, kv_policy **out,
                       plm_error *err)
{
    PLM_TRY(kv_policy_parse(text, out, err));
    cr_assert(*out && (*out)->ops == ops && !(*out)->next, "%s is not one %s policy", text,
              ops->name);
    return PLM_OK;
}

static kv_policy *start(const kv_policy_ops *ops, const char *spec, kv_shape sh)
{
    kv_policy *p;
    plm_error err;
    cr_assert_eq(make(ops, spec, &p, &err), PLM_OK, "%s: %s", spec, err.msg);
    cr_assert_eq(kv_policy_begin(p, &sh, &err), PLM_OK, "%s: %s", spec, err.msg);
    return p;
}

static void expect_error(const kv_policy_ops *ops, const char *spec, const char *msg)
{
    kv_policy *p = NULL;
    plm_error err;
    cr_assert_neq(make(ops, spec, &p, &err), PLM_OK, "%s accepted", spec);
    cr_assert(strstr(err.msg, msg), "%s: %s", spec, err.msg);
}

static void expect_begin_error(const kv_policy_ops *ops, const char *spec, kv_shape sh,
                               const char *msg)
{
    kv_policy *p;
    plm_error err;
    cr_assert_eq(make(ops, spec, &p, &err), PLM_OK, "%s: %s", spec, err.msg);
    cr_assert_neq(kv_policy_begin(p, &sh, &err), PLM_OK, "%s began", spec);
    cr_assert(strstr(err.msg, msg), "%s: %s", spec, err.msg);
    kv_policy_free(p);
}

/* positions [n_kv x CAP]: row r of every head holds token r */
static void identity(int32_t *pos, int n_kv, int64_t len)
{
    for (int h = 0; h < n_kv; h++)
        for (int64_t r = 0; r < len; r++) pos[h * CAP + r] = (int32_t)r;
}

static void plan_ok(kv_policy *p, const kv_view *v)
{
    kv_plan pl = {.n_keep = -1};
    plm_error err;
    cr_assert_eq(p->ops->plan(p, v, &pl, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(pl.n_keep, -1, "%s evicted", p->ops->name);
    cr_assert_eq(pl.n_merge, 0);
}

static kv_attend attend(kv_policy *p, int layer, int prefill, int64_t step, int64_t len,
                        const int32_t *pos)
{
    kv_attend a = {0};
    plm_error err;
    cr_assert_eq(p->ops->attend(p, layer, prefill, step, len, prefill ? len : 1, pos, &a, &err),
                 PLM_OK, "%s", err.msg);
    return a;
}

/* every kv head attends exactly to want[0..n) */
static void expect_rows(kv_attend a, int n_kv, const int32_t *want, int64_t n)
{
    cr_assert_eq(a.n_rows, n, "%lld rows, expected %lld", (long long)a.n_rows, (long long)n);
    for (int h = 0; h < n_kv; h++)
        for (int64_t i = 0; i < n; i++)
            cr_assert_eq(a.rows[h * n + i], want[i], "head %d row %lld: %d, expected %d", h,
                         (long long)i, a.rows[h * n + i], want[i]);
}

/* ---- DELTA ------------------------------------------------------------------------------------- */
static const kv_shape delta_shape = {.n_layers = 4, .n_heads = 4, .n_kv = 2, .head_dim = 2,
                                     .n_prompt = 8, .cap = CAP, .max_new = 8};

Test(kv_delta, selection_layer_picks_the_rows_sparse_layers_attend)
{
    kv_policy *p = start(&kv_delta_ops, "delta:budget=4,sink=1,recent=1,full=1,layers=2,page=1",
                         delta_shape);
    int32_t pos[2 * CAP];
    identity(pos, 2, 9);
    /* selection layers are 0 (the last full one) and 2; only decode steps need attention */
    cr_assert_eq(p->ops->needs(p, 0, 1, 0), 0);
    cr_assert_eq(p->ops->needs(p, 0, 0, 0), KV_NEED_ATTN);
    cr_assert_eq(p->ops->needs(p, 1, 0, 0), 0);
    cr_assert_eq(p->ops->needs(p, 2, 0, 0), KV_NEED_ATTN);
    cr_assert_eq(attend(p, 1, 1, 0, 8, pos).n_rows, 0, "the prompt runs dense");
    /* step 0, layer 0 (9 rows with the new one): the head maximum ranks 3 (.5), 5 (.3), 4 (.25);
     * a head sum would rank 4 (.45) above 5 (.3) */
    float attn[4 * 9] = {0};
    attn[0 * 9 + 3] = 0.5f, attn[0 * 9 + 4] = 0.2f;
    attn[1 * 9 + 5] = 0.3f, attn[1 * 9 + 4] = 0.25f;
    kv_view v = {.layer = 0, .step = 0, .len = 9, .n_new = 1, .pos = pos, .attn = attn};
    plan_ok(p, &v);
    const int32_t want1[] = {0, 3, 5, 8}; /* sink, the two best, and the new row (recent) */
    expect_rows(attend(p, 1, 0, 0, 8, pos), 2, want1, 4);
    cr_assert_eq(attend(p, 2, 0, 0, 8, pos).n_rows, 0, "a Delta-layer attends fully");
    memset(attn, 0, sizeof attn);
    attn[2 * 9 + 6] = 0.7f, attn[3 * 9 + 2] = 0.6f, attn[3 * 9 + 7] = 0.1f;
    v.layer = 2;
    plan_ok(p, &v);
    const int32_t want3[] = {0, 2, 6, 8};
    expect_rows(attend(p, 3, 0, 0, 8, pos), 2, want3, 4);
    /* next step: nothing is reused before layer 0 has selected again */
    cr_assert_eq(attend(p, 1, 0, 1, 9, pos).n_rows, 0);
    kv_policy_free(p);
}

Test(kv_delta, pages_and_compacted_rows)
{
    kv_policy *p = start(&kv_delta_ops, "delta:budget=4,recent=2,full=1,layers=3,page=2",
                         delta_shape);
    int32_t pos[2 * CAP];
    identity(pos, 2, 9);
    /* pages {0,1} {2,3} {4,5} {6,7} {8}: row 3 is the best row, but page {6,7} sums more; the
     * last page is the recent one */
    float attn[4 * 9] = {0};
    attn[0 * 9 + 3] = 0.4f, attn[1 * 9 + 6] = 0.25f, attn[2 * 9 + 7] = 0.25f;
    kv_view v = {.layer = 0, .step = 0, .len = 9, .n_new = 1, .pos = pos, .attn = attn};
    plan_ok(p, &v);
    const int32_t want[] = {6, 7, 8};
    expect_rows(attend(p, 1, 0, 0, 8, pos), 2, want, 3);
    /* layer 2 lost tokens 1 and 6 to an earlier policy in the chain: its rows map by position */
    int32_t cpos[2 * CAP];
    const int32_t kept[] = {0, 2, 3, 4, 5, 7};
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < 6; r++) cpos[h * CAP + r] = kept[r];
    const int32_t want2[] = {5, 6}; /* token 7 at row 5, the new row 6 */
    expect_rows(attend(p, 2, 0, 0, 6, cpos), 2, want2, 2);
    kv_policy_free(p);
}

Test(kv_delta, bad_params)
{
    expect_error(&kv_delta_ops, "delta:full=2", "needs budget=N");
    expect_error(&kv_delta_ops, "delta:budget=4,full=0", "needs full >= 1");
    expect_error(&kv_delta_ops, "delta:budget=4,layers=5/3", "layers= must be ascending");
    expect_error(&kv_delta_ops, "delta:budget=4,full=3,layers=2", "one of the first full=3");
    expect_error(&kv_delta_ops, "delta:budget=4,window=8", "no window=");
    expect_error(&kv_delta_ops, "delta:budget=4,page=0", "page=0, expected a number from 1");
    expect_begin_error(&kv_delta_ops, "delta:budget=4,layers=9", delta_shape,
                       "delta layer 9, but the model has 4 layers");
}

/* ---- Recycled Attention ------------------------------------------------------------------------ */
static const kv_shape rec_shape = {.n_layers = 2, .n_heads = 2, .n_kv = 1, .head_dim = 2,
                                   .n_prompt = 6, .cap = CAP, .max_new = 12};

Test(kv_recycled, refreshes_every_stride_and_reuses_the_last_full_top_k)
{
    kv_policy *p = start(&kv_recycled_ops, "recycled:budget=2,stride=3", rec_shape);
    cr_assert_eq(kv_window(p), 1, "the prompt's top-K comes from its last query");
    for (int64_t t = 0; t < 9; t++)
        for (int l = 0; l < 2; l++)
            cr_assert_eq(p->ops->needs(p, l, 0, t), t % 3 == 2 ? KV_NEED_ATTN : 0, "step %lld",
                         (long long)t);
    cr_assert_eq(p->ops->needs(p, 0, 1, 0), KV_NEED_WIN);
    int32_t pos[CAP];
    identity(pos, 1, CAP);
    /* prompt: the last query likes 2 (head 0) and 4 (head 1) */
    float win[2 * 6] = {0.1f, 0, 0.6f, 0, 0, 0, 0.1f, 0, 0, 0, 0.5f, 0.1f};
    for (int l = 0; l < 2; l++) {
        kv_view v = {.layer = l, .prefill = 1, .len = 6, .n_new = 6, .pos = pos, .attn_win = win,
                     .n_win = 1};
        plan_ok(p, &v);
    }
    const int32_t s0[] = {2, 4, 6}, s1[] = {2, 4, 6, 7};
    expect_rows(attend(p, 0, 0, 0, 6, pos), 1, s0, 3);
    expect_rows(attend(p, 1, 0, 1, 7, pos), 1, s1, 4);
    /* step 2 is full: dense, and its query (9 rows with its own) records 1 and 7 */
    cr_assert_eq(attend(p, 0, 0, 2, 8, pos).n_rows, 0);
    float attn[2 * 9] = {0};
    attn[1] = 0.5f, attn[9 + 7] = 0.6f, attn[3] = 0.2f;
    kv_view v = {.layer = 0, .step = 2, .len = 9, .n_new = 1, .pos = pos, .attn = attn};
    plan_ok(p, &v);
    const int32_t s3[] = {1, 7, 8, 9}, s4[] = {1, 7, 8, 9, 10};
    expect_rows(attend(p, 0, 0, 3, 9, pos), 1, s3, 4);   /* + step 2's token, the new row */
    expect_rows(attend(p, 0, 0, 4, 10, pos), 1, s4, 5);
    cr_assert_eq(attend(p, 0, 0, 5, 11, pos).n_rows, 0, "step 5 is full again");
    /* layer 1 still recycles the prompt's record */
    const int32_t l1[] = {2, 4, 6, 7, 8, 9};
    expect_rows(attend(p, 1, 0, 3, 9, pos), 1, l1, 6);
    kv_policy_free(p);
}

Test(kv_recycled, query_similarity_forces_a_full_step)
{
    kv_policy *p = start(&kv_recycled_ops, "recycled:budget=2,stride=100,sim=0.9", rec_shape);
    int32_t pos[CAP];
    identity(pos, 1, CAP);
    cr_assert_eq(p->ops->needs(p, 0, 1, 0), KV_NEED_WIN | KV_NEED_Q);
    float q6[6 * 4] = {0}, win[2 * 6] = {0};
    q6[5 * 4 + 0] = 1, win[2] = 1, win[6 + 4] = 1;
    kv_view v = {.layer = 0, .prefill = 1, .len = 6, .n_new = 6, .pos = pos, .attn_win = win,
                 .n_win = 1, .q = q6};
    plan_ok(p, &v);
    v.layer = 1;
    plan_ok(p, &v);
    float attn[2 * 8] = {0}; /* read only on the full step, with 8 rows */
    attn[0] = 1, attn[8 + 1] = 1;
    /* step 0: a query like the prompt's keeps recycling */
    float near[4] = {0.9f, 0.1f, 0, 0};
    kv_view d = {.layer = 0, .step = 0, .len = 7, .n_new = 1, .pos = pos, .attn = attn, .q = near};
    plan_ok(p, &d);
    cr_assert_neq(attend(p, 1, 0, 0, 6, pos).n_rows, 0);
    cr_assert_eq(p->ops->needs(p, 1, 0, 0), 0);
    /* step 1: an orthogonal query turns the rest of the step full and refreshes layer 0 */
    float far[4] = {0, 1, 0, 0};
    d.step = 1, d.len = 8, d.q = far;
    plan_ok(p, &d);
    cr_assert_eq(attend(p, 1, 0, 1, 7, pos).n_rows, 0);
    cr_assert_eq(p->ops->needs(p, 1, 0, 1), KV_NEED_ATTN);
    const int32_t s[] = {0, 1, 7, 8};
    expect_rows(attend(p, 0, 0, 2, 8, pos), 1, s, 4);
    kv_policy_free(p);
}

Test(kv_recycled, bad_params)
{
    expect_error(&kv_recycled_ops, "recycled:stride=3", "needs budget=N");
    expect_error(&kv_recycled_ops, "recycled:budget=2,stride=0", "stride=0, expected a number");
    expect_error(&kv_recycled_ops, "recycled:budget=2,stride=1.5", "stride must be a whole");
    expect_error(&kv_recycled_ops, "recycled:budget=2,sim=2", "sim=2, expected a number");
    expect_error(&kv_recycled_ops, "recycled:budget=2,every=2", "has no parameter 'every'");
}

/* ---- AutoPASTA --------------------------------------------------------------------------------- */
static const kv_shape ap_shape = {.n_layers = 2, .n_heads = 4, .n_kv = 2, .head_dim = 2,
                                  .n_prompt = 10, .cap = CAP, .max_new = 4};

/* the prompt: 10 tokens, the window is its last 2; tokens 4 and 5 draw the window's attention,
 * token 0 (a sink) more still */
static void ap_prefill(kv_policy *p, const int32_t *pos)
{
    float win[4 * 10] = {0};
    win[0] = 5.0f, win[4] = 0.3f, win[10 + 5] = 0.3f, win[20 + 1] = 0.2f, win[30 + 9] = 0.9f;
    for (int l = 0; l < 2; l++) {
        cr_assert_eq(p->ops->needs(p, l, 1, 0), KV_NEED_WIN);
        cr_assert_null(attend(p, l, 1, 0, 10, pos).bias, "no steering before the spans");
        kv_view v = {.layer = l, .prefill = 1, .len = 10, .n_new = 10, .pos = pos,
                     .attn_win = win, .n_win = 2};
        plan_ok(p, &v);
    }
    cr_assert_eq(p->ops->needs(p, 0, 0, 0), 0);
}

static void expect_bias(const float *b, int64_t tk, const int *steer, const int *lit,
                        float down)
{
    for (int h = 0; h < 4; h++)
        for (int64_t r = 0; r < tk; r++) {
            float want = steer[h] && !lit[r] && r < 10 ? down : 0.0f;
            cr_assert_float_eq(b[h * tk + r], want, 1e-6, "head %d row %lld: %g, expected %g", h,
                               (long long)r, b[h * tk + r], want);
        }
}

Test(kv_autopasta, bias_on_the_steered_heads_outside_the_chosen_span)
{
    kv_policy *p = start(&kv_autopasta_ops, "autopasta:span=2,window=2,sink=1,heads=1.0/1.3",
                         ap_shape);
    int32_t pos[2 * CAP];
    identity(pos, 2, 12);
    ap_prefill(p, pos);
    cr_assert_null(attend(p, 0, 0, 0, 10, pos).bias, "layer 0 has no steered head");
    kv_attend a = attend(p, 1, 0, 0, 10, pos);
    cr_assert_not_null(a.bias);
    /* span {4, 5} wins (0.6 against 0.2 for {0, 1} once the sink is ignored); {8, 9} is the
     * window; row 10 is the generated token */
    const int steer[4] = {1, 0, 0, 1}, lit[11] = {[4] = 1, [5] = 1};
    expect_bias(a.bias, 11, steer, lit, logf(0.01f));
    kv_policy_free(p);
}

/* question=1: the observation window (the question, rows 8 and 9) is not scaled either */
Test(kv_autopasta, question_leaves_the_window_unscaled)
{
    kv_policy *p = start(&kv_autopasta_ops, "autopasta:span=2,window=2,sink=1,heads=1,question=1",
                         ap_shape);
    int32_t pos[2 * CAP];
    identity(pos, 2, 12);
    ap_prefill(p, pos);
    kv_attend a = attend(p, 1, 0, 0, 10, pos);
    cr_assert_not_null(a.bias);
    const int steer[4] = {1, 1, 1, 1}, lit[11] = {[4] = 1, [5] = 1, [8] = 1, [9] = 1};
    expect_bias(a.bias, 11, steer, lit, logf(0.01f));
    kv_policy_free(p);
}

Test(kv_autopasta, maps_compacted_rows_by_position)
{
    kv_policy *p = start(&kv_autopasta_ops, "autopasta:span=2,window=2,sink=1,alpha=0.5,heads=1",
                         ap_shape);
    int32_t pos[2 * CAP];
    identity(pos, 2, 12);
    ap_prefill(p, pos);
    /* an earlier policy kept tokens 0 2 4 5 8 9 and step 0's token 10 */
    const int32_t kept[] = {0, 2, 4, 5, 8, 9, 10};
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < 7; r++) pos[h * CAP + r] = kept[r];
    kv_attend a = attend(p, 1, 0, 1, 7, pos);
    cr_assert_not_null(a.bias);
    for (int h = 0; h < 4; h++)
        for (int r = 0; r < 8; r++) {
            float want = (r == 2 || r == 3 || r >= 6) ? 0.0f : logf(0.5f);
            cr_assert_float_eq(a.bias[h * 8 + r], want, 1e-6, "head %d row %d", h, r);
        }
    kv_policy_free(p);
}

/* With the prompt's sentences known, the whole winning sentence is highlighted, whatever its
 * length; span= forces fixed spans again. */
Test(kv_autopasta, highlights_the_whole_sentence)
{
    /* sentences: {0} {1 2 3} {4 5 6 7} {8 9}; 4 and 5 draw the window (as ap_prefill sets) */
    static const int32_t sid[10] = {0, 1, 1, 1, 2, 2, 2, 2, 3, 3};
    kv_shape sh = ap_shape;
    sh.sentence = sid;
    kv_policy *p = start(&kv_autopasta_ops, "autopasta:window=2,sink=1,heads=1", sh);
    int32_t pos[2 * CAP];
    identity(pos, 2, 12);
    ap_prefill(p, pos);
    kv_attend a = attend(p, 1, 0, 0, 10, pos);
    cr_assert_not_null(a.bias);
    const int steer[4] = {1, 1, 1, 1}, lit[11] = {[4] = 1, [5] = 1, [6] = 1, [7] = 1};
    expect_bias(a.bias, 11, steer, lit, logf(0.01f));
    kv_policy_free(p);

    p = start(&kv_autopasta_ops, "autopasta:span=2,window=2,sink=1,heads=1", sh);
    ap_prefill(p, pos);
    a = attend(p, 1, 0, 0, 10, pos);
    const int lit2[11] = {[4] = 1, [5] = 1};
    expect_bias(a.bias, 11, steer, lit2, logf(0.01f));
    kv_policy_free(p);
}

Test(kv_autopasta, nothing_highlighted_means_no_steering)
{
    kv_policy *p = start(&kv_autopasta_ops, "autopasta:window=12", ap_shape);
    int32_t pos[2 * CAP];
    identity(pos, 2, 12);
    float win[4 * 10] = {0};
    for (int l = 0; l < 2; l++) {
        kv_view v = {.layer = l, .prefill = 1, .len = 10, .n_new = 10, .pos = pos,
                     .attn_win = win, .n_win = 10};
        plan_ok(p, &v);
    }
    cr_assert_null(attend(p, 1, 0, 0, 10, pos).bias);
    kv_policy_free(p);
}

Test(kv_autopasta, bad_params)
{
    expect_error(&kv_autopasta_ops, "autopasta:heads=1.x", "heads=1.x, expected all or a '/'");
    expect_error(&kv_autopasta_ops, "autopasta:heads=1//2", "expected all or a '/' list");
    expect_error(&kv_autopasta_ops, "autopasta:budget=4", "takes no budget=");
    expect_error(&kv_autopasta_ops, "autopasta:alpha=0", "alpha must be in (0, 1]");
    expect_error(&kv_autopasta_ops, "autopasta:span=0", "span=0, expected a number from 1");
    expect_begin_error(&kv_autopasta_ops, "autopasta:heads=5.0", ap_shape,
                       "steers layer 5 head 0, but the model has 2 layers of 4 heads");
    expect_begin_error(&kv_autopasta_ops, "autopasta:heads=1.4", ap_shape,
                       "steers layer 1 head 4, but the model has 2 layers");
}

Test(kv_sparse, registered_and_chainable)
{
    kv_policy *p = NULL;
    plm_error err;
    cr_assert_eq(kv_policy_parse("snapkv:budget=8+delta:budget=4+recycled:budget=4+autopasta",
                                 &p, &err), PLM_OK, "%s", err.msg);
    cr_assert_str_eq(p->next->ops->name, "delta");
    cr_assert_str_eq(p->next->next->ops->name, "recycled");
    cr_assert_str_eq(p->next->next->next->ops->name, "autopasta");
    kv_policy_free(p);
}
