/* FlexPrefill's estimates and tile selection (Lai et al., ICLR 2025, §3; official code
 * flex_prefill/ops/flex_prefill_attention.py, get_active_blocks). Where the official code and
 * the paper differ, the comment says which one is followed. */
#include "prune/kv_blocks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double kv_js_divergence(const float *p, const float *q, int64_t n)
{
    double js = 0;
    for (int64_t i = 0; i < n; i++) {
        const double a = p[i], b = q[i], m = 0.5 * (a + b);
        if (a > 0) js += 0.5 * a * log(a / m);
        if (b > 0) js += 0.5 * b * log(b / m);
    }
    return js > 0 ? js : 0; /* rounding may leave -1e-17 */
}

typedef struct vi {
    float v;
    int32_t i;
} vi;

static int vi_desc(const void *a, const void *b)
{
    const vi *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* order[0..n) = indices of x from the largest value down (ties: lower index first). */
static int sort_desc(const float *x, int64_t n, int32_t *order)
{
    vi *t = malloc((size_t)(n > 0 ? n : 1) * sizeof *t);
    if (!t) return -1;
    for (int64_t i = 0; i < n; i++) t[i] = (vi){x[i], (int32_t)i};
    qsort(t, (size_t)n, sizeof *t, vi_desc);
    for (int64_t i = 0; i < n; i++) order[i] = t[i].i;
    free(t);
    return 0;
}

int64_t kv_cover_count(const float *x, int64_t n, double gamma, int32_t *order)
{
    int32_t *o = order ? order : malloc((size_t)(n > 0 ? n : 1) * sizeof *o);
    if (!o || sort_desc(x, n, o) != 0) {
        if (o != order) free(o);
        return -1;
    }
    /* The total in the same order as the running sum, so gamma = 1 stops at the last nonzero. */
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += x[o[i]];
    const double target = gamma * total;
    double run = 0;
    int64_t k = 0;
    while (k < n) {
        run += x[o[k++]];
        if (run >= target) break;
    }
    if (o != order) free(o);
    return k > 0 ? k : 1;
}

void kv_pool_rows(const float *x, int64_t n, int64_t stride, int64_t width, int block, float *out)
{
    for (int64_t b0 = 0; b0 < n; b0 += block) {
        const int64_t b1 = b0 + block < n ? b0 + block : n;
        float *o = out + (b0 / block) * width;
        for (int64_t c = 0; c < width; c++) {
            double s = 0;
            for (int64_t r = b0; r < b1; r++) s += x[r * stride + c];
            o[c] = (float)(s / (double)(b1 - b0));
        }
    }
}

static int64_t n_blocks(int64_t n, int block)
{
    return (n + block - 1) / block;
}

static void softmax_inplace(float *s, int64_t n)
{
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    double sum = 0;
    for (int64_t j = 0; j < n; j++) sum += (s[j] = expf(s[j] - mx));
    for (int64_t j = 0; j < n; j++) s[j] = (float)(s[j] / sum);
}

static float dot(const float *a, const float *b, int n)
{
    float s = 0;
    for (int d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

plm_status kv_fp_last_block(const kv_fp_shape *s, const float *q_last, int64_t n_last,
                            const float *k, float *vert_blk, float *slash_blk, float *vert_tok,
                            float *slash_tok, plm_error *err)
{
    const int hd = s->head_dim, group = s->n_heads / s->n_kv, B = s->block;
    const int64_t tk = s->tk, nkb = n_blocks(tk, B), q_pos0 = s->tk - s->tq;
    const int64_t first = q_pos0 + s->tq - n_last; /* position of the block's first query */
    /* the block's scores [n_last x tk], then (when the caller keeps no token-level rows)
     * vertical and slash per token */
    float *sc = malloc((size_t)((n_last + 2) * tk + (hd + 1) * n_last + 1) * sizeof *sc);
    if (!sc) return plm_fail(err, PLM_E_NOMEM, "flexprefill: out of memory for %lld scores",
                             (long long)(n_last * tk));
    float *tmp = sc + n_last * tk, *qt = tmp + 2 * tk, *acc = qt + (int64_t)hd * n_last;
    for (int h = 0; h < s->n_heads; h++) {
        float *vt = vert_tok ? vert_tok + (int64_t)h * tk : tmp;
        float *st = slash_tok ? slash_tok + (int64_t)h * tk : tmp + tk;
        memset(vt, 0, (size_t)tk * sizeof *vt);
        memset(st, 0, (size_t)tk * sizeof *st);
        const int kh = h / group;
        /* keys outer, the block's queries inner: each key row is read once per head (queries
         * outer streamed the whole strided K n_last times: ~10 s at 16k tokens), and with the
         * queries transposed, one key's n_last dot products advance channel by channel side by
         * side, which vectorises while each sums its channels in order as dot() does: the same
         * scores. Scores of keys a query cannot see are computed too and never read. */
        for (int64_t r = 0; r < n_last; r++)
            for (int d = 0; d < hd; d++)
                qt[(int64_t)d * n_last + r] = q_last[r * s->q_stride + (int64_t)h * hd + d];
        for (int64_t j = 0; j < tk; j++) {
            const float *kr = k + j * s->k_stride + (int64_t)kh * hd;
            memset(acc, 0, (size_t)n_last * sizeof *acc);
            for (int d = 0; d < hd; d++) {
                const float kd = kr[d], *qd = qt + (int64_t)d * n_last;
                for (int64_t r = 0; r < n_last; r++) acc[r] += qd[r] * kd;
            }
            for (int64_t r = 0; r < n_last; r++) sc[r * tk + j] = s->scale * acc[r];
        }
        for (int64_t r = 0; r < n_last; r++) {
            const int64_t pos = first + r;
            const int64_t nk = pos + 1 < tk ? pos + 1 : tk;
            float *row = sc + r * tk;
            softmax_inplace(row, nk);
            /* a-hat is the mean over the block's queries (official: qk.mean(-2)); the slash
             * sums each diagonal (sum_all_diagonal_matrix / last_q_len). */
            for (int64_t j = 0; j < nk; j++) {
                vt[j] += row[j] / (float)n_last;
                st[pos - j] += row[j] / (float)n_last;
            }
        }
        float *vb = vert_blk + (int64_t)h * nkb, *sb = slash_blk + (int64_t)h * nkb;
        memset(vb, 0, (size_t)nkb * sizeof *vb);
        memset(sb, 0, (size_t)nkb * sizeof *sb);
        for (int64_t j = 0; j < tk; j++) {
            vb[j / B] += vt[j];
            sb[j / B] += st[j];
        }
    }
    free(sc);
    return PLM_OK;
}

void kv_fp_pooled_estimate(const kv_fp_shape *s, const float *q_last, int64_t n_last,
                           const float *k_pool, float *out)
{
    const int hd = s->head_dim, group = s->n_heads / s->n_kv;
    const int64_t nkb = n_blocks(s->tk, s->block);
    float qm[1024];
    for (int h = 0; h < s->n_heads; h++) {
        for (int d = 0; d < hd; d++) {
            double m = 0;
            for (int64_t r = 0; r < n_last; r++) m += q_last[r * s->q_stride + (int64_t)h * hd + d];
            qm[d] = (float)(m / (double)n_last);
        }
        float *o = out + (int64_t)h * nkb;
        /* Every key block, the causal last one included, as the official avg_qk does. */
        for (int64_t b = 0; b < nkb; b++)
            o[b] = s->scale * dot(qm, k_pool + b * (int64_t)s->n_kv * hd + (int64_t)(h / group) * hd, hd);
        softmax_inplace(o, nkb);
    }
}

int64_t kv_fp_diag(const kv_fp_shape *s, int64_t qb)
{
    int64_t last = (qb + 1) * s->block;
    if (last > s->tq) last = s->tq;
    return (s->tk - s->tq + last - 1) / s->block;
}

void kv_fp_vertical_slash(const kv_fp_shape *s, uint8_t *mask_h, const int32_t *vert,
                          int64_t n_vert, const int32_t *slash, int64_t n_slash)
{
    const int64_t nqb = n_blocks(s->tq, s->block), nkb = n_blocks(s->tk, s->block);
    for (int64_t qb = 0; qb < nqb; qb++) {
        const int64_t d = kv_fp_diag(s, qb);
        uint8_t *row = mask_h + qb * nkb;
        for (int64_t i = 0; i < n_vert; i++)
            if (vert[i] <= d) row[vert[i]] = 1;
        /* official transform_veritcal_slash_idx: slash block s lands on tile (qb, qb - s) */
        for (int64_t i = 0; i < n_slash; i++)
            if (d - slash[i] >= 0) row[d - slash[i]] = 1;
    }
}

int64_t kv_fp_query_aware(const kv_fp_shape *s, int h, const float *q_pool, const float *k_pool,
                          double gamma, uint8_t *mask_h)
{
    const int hd = s->head_dim, kh = h / (s->n_heads / s->n_kv);
    const int64_t nqb = n_blocks(s->tq, s->block), nkb = n_blocks(s->tk, s->block);
    const int64_t n = nqb * nkb;
    float *est = calloc((size_t)n, sizeof *est);
    int32_t *order = malloc((size_t)n * sizeof *order);
    if (!est || !order) {
        free(est);
        free(order);
        return -1;
    }
    for (int64_t qb = 0; qb < nqb; qb++) {
        const int64_t d = kv_fp_diag(s, qb);
        const float *q = q_pool + qb * (int64_t)s->n_heads * hd + (int64_t)h * hd;
        float *row = est + qb * nkb;
        for (int64_t b = 0; b <= d; b++)
            row[b] = s->scale * dot(q, k_pool + b * (int64_t)s->n_kv * hd + (int64_t)kh * hd, hd);
        softmax_inplace(row, d + 1);
    }
    /* Each row sums to 1, so gamma of the grid's total is the paper's gamma * n_qb (official:
     * score_cover_idx(attn, gamma * num_blocks)). We take the fewest tiles that reach it. */
    int64_t cnt = kv_cover_count(est, n, gamma, order);
    for (int64_t i = 0; i < cnt; i++) mask_h[order[i]] = 1;
    free(est);
    free(order);
    return cnt;
}

/* Budget in blocks from a token-level distribution: tokens needed to cover gamma, then
 * tokens / block + 1 (official: score_cover_topk(x, gamma) // 128 + 1, with 128 written for the
 * block size), clamped to [lo, hi]. */
static int64_t budget_blocks(const float *tok, int64_t tk, double gamma, int block, int64_t lo,
                             int64_t hi)
{
    int64_t n = kv_cover_count(tok, tk, gamma, NULL);
    if (n < 0) return -1;
    n = n / block + 1;
    if (n < lo) n = lo;
    if (n > hi) n = hi;
    return n;
}

plm_status kv_flexprefill_mask(const kv_fp_shape *s, const kv_fp_params *p, const float *q_last,
                               const float *q_pool, const float *k, uint8_t *mask,
                               kv_fp_head *heads, plm_error *err)
{
    const int B = s->block, hd = s->head_dim;
    if (B <= 0 || s->n_kv <= 0 || s->n_heads % s->n_kv || hd <= 0 || hd > 1024 || s->tq <= 0 ||
        s->tk < s->tq)
        return plm_fail(err, PLM_E_ARG,
                        "flexprefill: bad shape (block %d, %d heads, %d kv heads, head_dim %d, "
                        "%lld queries, %lld keys)", B, s->n_heads, s->n_kv, hd,
                        (long long)s->tq, (long long)s->tk);
    const int64_t nqb = n_blocks(s->tq, B), nkb = n_blocks(s->tk, B), tk = s->tk;
    const int64_t n_last = s->tq < B ? s->tq : B;
    int64_t lo = (p->min_budget + B - 1) / B, hi = p->max_budget > 0 ? (p->max_budget + B - 1) / B : nkb;
    if (lo < 1) lo = 1;
    if (hi > nkb) hi = nkb;
    memset(mask, 0, (size_t)s->n_heads * nqb * nkb);
    if (heads) memset(heads, 0, (size_t)s->n_heads * sizeof *heads);
    /* Short prompts run dense (official: q_len <= max(2 * block, min_budget rounded up)). */
    if (s->tq <= (2 * B > lo * B ? 2 * B : lo * B)) {
        for (int h = 0; h < s->n_heads; h++)
            for (int64_t qb = 0; qb < nqb; qb++)
                memset(mask + ((int64_t)h * nqb + qb) * nkb, 1, (size_t)kv_fp_diag(s, qb) + 1);
        return PLM_OK;
    }
    size_t nf = (size_t)s->n_heads * (size_t)(4 * nkb + 2 * tk) + (size_t)(nkb * s->n_kv * hd);
    float *buf = malloc(nf * sizeof *buf);
    int32_t *vo = malloc((size_t)(2 * nkb) * sizeof *vo);
    if (!buf || !vo) {
        free(buf);
        free(vo);
        return plm_fail(err, PLM_E_NOMEM, "flexprefill: out of memory for %lld key blocks",
                        (long long)nkb);
    }
    float *vb = buf, *sb = vb + s->n_heads * nkb, *est = sb + s->n_heads * nkb;
    float *vt = est + s->n_heads * nkb, *st = vt + s->n_heads * tk;
    float *kp = st + s->n_heads * tk, *tmp = kp + nkb * s->n_kv * hd;
    int32_t *so = vo + nkb;
    plm_status st_ = kv_fp_last_block(s, q_last, n_last, k, vb, sb, vt, st, err);
    if (st_ == PLM_OK) {
        kv_pool_rows(k, tk, s->k_stride, (int64_t)s->n_kv * hd, B, kp);
        kv_fp_pooled_estimate(s, q_last, n_last, kp, est);
    }
    for (int h = 0; st_ == PLM_OK && h < s->n_heads; h++) {
        const float js = (float)sqrt(kv_js_divergence(est + h * nkb, vb + h * nkb, nkb));
        /* §3.2: a pooled estimate close to the true block distribution means the head's
         * attention is predictable from block means, so query-aware selection is trusted. */
        const int qa = js < p->tau;
        int64_t nv = budget_blocks(vt + h * tk, tk, p->gamma, B, lo, hi);
        int64_t ns = budget_blocks(st + h * tk, tk, p->gamma, B, lo, hi);
        if (qa) nv = ns = lo;
        /* The first key block (attention sinks) and the diagonal block are always kept
         * (official: vertical[..., :1] = inf, slash[..., -1:] = inf). */
        memcpy(tmp, vb + h * nkb, (size_t)nkb * sizeof *tmp);
        tmp[0] = INFINITY;
        int bad = sort_desc(tmp, nkb, vo);
        memcpy(tmp, sb + h * nkb, (size_t)nkb * sizeof *tmp);
        tmp[0] = INFINITY;
        bad |= sort_desc(tmp, nkb, so);
        uint8_t *mh = mask + (int64_t)h * nqb * nkb;
        if (!bad && nv >= 0 && ns >= 0) kv_fp_vertical_slash(s, mh, vo, nv, so, ns);
        if (bad || nv < 0 || ns < 0 || (qa && kv_fp_query_aware(s, h, q_pool, kp, p->gamma, mh) < 0))
            st_ = plm_fail(err, PLM_E_NOMEM, "flexprefill: out of memory selecting blocks");
        if (heads) {
            heads[h].js = js;
            heads[h].query_aware = qa;
            heads[h].n_vert = nv;
            heads[h].n_slash = ns;
            for (int64_t i = 0; i < nqb * nkb; i++) heads[h].n_tiles += mh[i];
        }
    }
    free(buf);
    free(vo);
    return st_;
}

double kv_blocks_density(const uint8_t *mask, int n_heads, int64_t tq, int64_t tk, int block)
{
    const kv_fp_shape s = {.tq = tq, .tk = tk, .block = block};
    const int64_t nqb = n_blocks(tq, block), nkb = n_blocks(tk, block);
    int64_t on = 0, all = 0;
    for (int h = 0; h < n_heads; h++)
        for (int64_t qb = 0; qb < nqb; qb++) {
            const int64_t d = kv_fp_diag(&s, qb);
            for (int64_t b = 0; b <= d && b < nkb; b++) on += mask[((int64_t)h * nqb + qb) * nkb + b] != 0;
            all += d + 1;
        }
    return all ? (double)on / (double)all : 0;
}
