/* Rotary position embedding, rotate-half convention (Llama in transformers): for each token i,
 * pair j < hd/2 of every head turns by angle pos[i] * inv_freq[j]. The angle is formed in
 * float32 like the reference, then accurate cosf/sinf (positions reach thousands of radians, where
 * the fast intrinsics lose digits). pos and inv_freq arrive as host arrays: staged together.
 * rope_qk rotates the queries and the keys of a step in one launch (one staging copy, one
 * kernel): the heads of x2 follow those of x in the work numbering. rope_append does the same
 * for a recorded decode step, with the position, the cache row and the frequencies read from
 * device memory, and stores the new key and value rows into the cache. */
#include "cuda/cu_internal.h"

#define ROPE_THREADS 256

/* One rotated pair, products and difference rounded separately (no FMA contraction) as the
 * CPU computes them, and the same in every kernel here: a recorded decode step (rope_append)
 * then gives the same bits as the step run op by op (rope_qk). */
__device__ static inline void rope_pair(float a, float b, float c, float s, float *y0, float *y1)
{
    *y0 = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    *y1 = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

/* Heads [0, n_heads) of x, then heads [0, n2) of x2 (none when n2 = 0). */
__global__ void k_rope(float *x, int64_t stride, int n_heads, float *x2, int64_t stride2, int n2,
                       int64_t t, int hd, const int32_t *pos, const float *inv_freq)
{
    cu_pdl_trigger();
    const int half = hd / 2, nh = n_heads + n2;
    const int64_t n = t * nh * half;
    for (int64_t w = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; w < n;
         w += (int64_t)gridDim.x * blockDim.x) {
        /* j fastest so a warp touches consecutive floats of one head */
        const int j = (int)(w % half);
        const int64_t rest = w / half;
        const int h = (int)(rest % nh);
        const int64_t i = rest / nh;
        const float f = (float)pos[i] * inv_freq[j];
        const float c = cosf(f), s = sinf(f);
        float *v = h < n_heads ? x + i * stride + (int64_t)h * hd
                               : x2 + i * stride2 + (int64_t)(h - n_heads) * hd;
        rope_pair(v[j], v[j + half], c, s, &v[j], &v[j + half]);
    }
}

static int rope_shape_ok(cu_backend *b, int64_t t, int64_t stride, int n_heads, int hd)
{
    if (t < 0 || n_heads < 0 || hd < 0 || stride < (int64_t)n_heads * hd) {
        cu_fail(b, "rope: bad shape t=%lld stride=%lld n_heads=%d hd=%d", (long long)t,
                (long long)stride, n_heads, hd);
        return 0;
    }
    return 1;
}

static void rope_launch(cu_backend *b, float *x, int64_t stride, int n_heads, float *x2,
                        int64_t stride2, int n2, int64_t t, int hd, const int32_t *pos,
                        const float *inv_freq)
{
    const int half = hd / 2;
    if (t == 0 || n_heads + n2 == 0 || half == 0) return;
    void *dpos, *dfreq;
    if (!cu_stage_pair(b, pos, (size_t)t * sizeof(int32_t), inv_freq, (size_t)half * sizeof(float),
                       &dpos, &dfreq))
        return;
    const int64_t n = t * (n_heads + n2) * half;
    k_rope<<<cu_grid(n, ROPE_THREADS), ROPE_THREADS, 0, b->stream>>>(
        x, stride, n_heads, x2, stride2, n2, t, hd, (const int32_t *)dpos, (const float *)dfreq);
    CU_LAUNCHED(b, "k_rope");
}

void cu_rope(cu_backend *b, float *x, int64_t t, int64_t stride, int n_heads, int hd,
             const int32_t *pos, const float *inv_freq)
{
    if (rope_shape_ok(b, t, stride, n_heads, hd))
        rope_launch(b, x, stride, n_heads, NULL, 0, 0, t, hd, pos, inv_freq);
}

void cu_rope_qk(cu_backend *b, float *q, int64_t q_stride, int n_q, float *k, int64_t k_stride,
                int n_k, int64_t t, int hd, const int32_t *pos, const float *inv_freq)
{
    if (rope_shape_ok(b, t, q_stride, n_q, hd) && rope_shape_ok(b, t, k_stride, n_k, hd))
        rope_launch(b, q, q_stride, n_q, k, k_stride, n_k, t, hd, pos, inv_freq);
}

/* One decode step: q's heads rotated in place, k_new's rotated into row *row of kc, v_new
 * copied to row *row of vc. Work items: the rotated pairs of all heads, then v's floats. An
 * odd head_dim's last channel is not rotated (as rope()); the pair j = 0 carries it over. */
__global__ void k_rope_append(plm_rope_step a)
{
    cu_pdl_trigger();
    cu_pdl_wait(); /* launched early (cu_launch_pdl): q, k_new and v_new come from the GEMV */
    const int half = a.hd / 2, nh = a.n_q + a.n_k;
    const int64_t kvd = (int64_t)a.n_k * a.hd, row = *a.row;
    const float p = (float)*a.pos;
    float *kd = a.k_cache + row * kvd, *vd = a.v_cache + row * kvd;
    const int64_t n_rot = (int64_t)nh * half;
    for (int64_t w = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; w < n_rot + kvd;
         w += (int64_t)gridDim.x * blockDim.x) {
        if (w >= n_rot) {
            vd[w - n_rot] = a.v_new[w - n_rot];
            continue;
        }
        const int j = (int)(w % half), h = (int)(w / half);
        const float *src = h < a.n_q ? a.q + (int64_t)h * a.hd
                                     : a.k_new + (int64_t)(h - a.n_q) * a.hd;
        float *dst = h < a.n_q ? a.q + (int64_t)h * a.hd : kd + (int64_t)(h - a.n_q) * a.hd;
        const float f = p * a.inv_freq[j];
        const float c = cosf(f), s = sinf(f);
        float y0, y1;
        rope_pair(src[j], src[j + half], c, s, &y0, &y1);
        dst[j] = y0;
        dst[j + half] = y1;
        if (j == 0 && (a.hd & 1)) dst[a.hd - 1] = src[a.hd - 1];
    }
}

void cu_rope_append(cu_backend *b, const plm_rope_step *a)
{
    if (a->n_q < 0 || a->n_k < 0 || a->hd < 2) {
        cu_fail(b, "rope_append: bad shape n_q=%d n_k=%d hd=%d", a->n_q, a->n_k, a->hd);
        return;
    }
    const int64_t n = (int64_t)(a->n_q + a->n_k) * (a->hd / 2) + (int64_t)a->n_k * a->hd;
    if (n == 0) return;
    cu_launch_pdl(b, "k_rope_append", k_rope_append, dim3(cu_grid(n, ROPE_THREADS)),
                  dim3(ROPE_THREADS), 0, *a);
}
