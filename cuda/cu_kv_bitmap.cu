/* Mustafar's bitmap-compressed KV store on the GPU (prune/kv_bitmap.h has the format; the CPU
 * twins are kv_bitmap_compress_host and core/backend_cpu_bitmap.c, tested against these by
 * tests/gpu/test_cuda_bitmap.c).
 *
 * Compression: one warp per (row, kv head) selects the row's keep largest |x| by a 31-step
 * radix select on the magnitude bits with warp sums (the host runs the same steps), breaks
 * ties toward the lower channel with a warp scan, and writes the bitmap words and the packed
 * values. It reads the dense cache where it lies, so no row goes through the host.
 *
 * Decode attention computes on the compressed rows directly, as the paper's kernel does, but
 * for float32 and one query per head it is a bandwidth problem, not a tensor-core one (the
 * paper's SpMV decompresses 64-wide tiles to shared memory for half-precision MMAs). Lane l
 * owns channels l*P .. l*P+P-1 (P = ceil(head_dim/32) rounded to a power of two, so they sit
 * in one bitmap word); its values of a row start at slot popcount(bits below l*P), so q.k
 * needs no decompression: each lane multiplies its kept values by its query channels, a warp
 * sum gives the score, and the same lane adds p * v for its V channels. A warp takes KVS_ROWS
 * rows per step; their bitmaps and values are consecutive in the store, so the warp copies the
 * step's four runs to its shared-memory stage with cp.async, KVB_STAGES - 1 steps ahead of the
 * one it computes. (Read straight from global memory, a value's address waited on its row's
 * bitmap: two dependent loads per step, and the kernel ran at dense speed with half the bytes,
 * 2026-12-07.) KVS_WARPS warps share a block's chunk of rows, and the key range is split over
 * blocks (split-K flash decoding: each block writes its running max, normaliser and
 * unnormalised output; a second kernel combines them), so one query fills the GPU. Rows at or
 * past the store's n_rows come from the dense cache in the same block. */
#include <math.h>

#include "cuda/cu_kv_splitk.cuh"

#define KVB_STAGES 3 /* pipeline depth of the compressed rows' copies (cp.async) */

/* ---- compression --------------------------------------------------------------------------- */

typedef struct kvb_side {
    const float *src;  /* the dense cache (K or V) */
    uint64_t *bits;
    float *vals;
    int keep, slots;
} kvb_side;

/* One row of hd floats at x into bits/vals: the same rule as kv_bitmap_compress_row. */
template <int P>
__device__ static void kvb_compress_row(const float *x, int hd, int words, int keep, int slots,
                                        uint64_t *bits, float *vals)
{
    const int lane = threadIdx.x % 32, d0 = lane * P;
    float xv[P];
    uint32_t key[P];
    bool ok[P];
#pragma unroll
    for (int t = 0; t < P; t++) {
        ok[t] = d0 + t < hd;
        xv[t] = ok[t] ? x[d0 + t] : 0.0f;
        key[t] = __float_as_uint(xv[t]) & 0x7fffffffu;
    }
    uint32_t th = 0;
    for (int b = 30; b >= 0; b--) {
        const uint32_t cand = th | (1u << b);
        unsigned n = 0;
#pragma unroll
        for (int t = 0; t < P; t++) n += ok[t] && key[t] >= cand;
        if ((int)__reduce_add_sync(0xffffffffu, n) >= keep) th = cand;
    }
    unsigned above = 0, eq = 0;
#pragma unroll
    for (int t = 0; t < P; t++) {
        above += ok[t] && key[t] > th;
        eq += ok[t] && key[t] == th;
    }
    const int ties = keep - (int)__reduce_add_sync(0xffffffffu, above);
    /* Exclusive scan of the lanes' tie counts: lower lanes hold lower channels. */
    unsigned eq_before = eq;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned y = __shfl_up_sync(0xffffffffu, eq_before, o);
        if (lane >= o) eq_before += y;
    }
    eq_before -= eq;
    unsigned mine = 0, n_kept = 0;
#pragma unroll
    for (int t = 0; t < P; t++) {
        bool kept = ok[t] && key[t] > th;
        if (ok[t] && key[t] == th) {
            kept = (int)eq_before < ties;
            eq_before++;
        }
        mine |= (unsigned)kept << t;
        n_kept += kept;
    }
    unsigned slot = n_kept;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned y = __shfl_up_sync(0xffffffffu, slot, o);
        if (lane >= o) slot += y;
    }
    slot -= n_kept;
#pragma unroll
    for (int t = 0; t < P; t++)
        if ((mine >> t) & 1) vals[slot++] = xv[t];
    if (lane < slots - keep) vals[keep + lane] = 0.0f;
    /* Each lane's P bits land in one word (P divides 64); OR the lanes' shares per word. */
    const int wi = d0 >> 6;
    const uint64_t share = (uint64_t)mine << (d0 & 63);
    for (int w = 0; w < words; w++) {
        uint64_t c = (w == wi && d0 < hd) ? share : 0;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) c |= __shfl_xor_sync(0xffffffffu, c, o);
        if (lane == 0) bits[w] = c;
    }
}

template <int P>
__global__ void __launch_bounds__(128)
    k_kvb_compress(kvb_side ks, kvb_side vs, int64_t kv_stride, int64_t r0, int64_t n, int n_kv,
                   int hd, int words, int64_t cap)
{
    const int64_t gw = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    if (gw >= n * n_kv) return; /* whole warps leave together */
    const int h = (int)(gw / n);
    const int64_t r = r0 + gw % n, row = (int64_t)h * cap + r;
    const int64_t off = r * kv_stride + (int64_t)h * hd;
    kvb_compress_row<P>(ks.src + off, hd, words, ks.keep, ks.slots, ks.bits + row * words,
                        ks.vals + row * ks.slots);
    kvb_compress_row<P>(vs.src + off, hd, words, vs.keep, vs.slots, vs.bits + row * words,
                        vs.vals + row * vs.slots);
}

/* ---- decode attention ---------------------------------------------------------------------- */

typedef struct kvb_attn {
    plm_attn_args a;
    const uint64_t *k_bits, *v_bits;
    const float *k_vals, *v_vals;
    int words, k_slots, v_slots;
    int64_t cap, nc;          /* rows [0, nc) compressed */
    int group, qgroups;       /* query heads per kv head; blocks per kv head along y */
    int n_splits;
    int64_t chunk;            /* rows per split (a multiple of KVS_WARPS * KVS_ROWS) */
    float *work;              /* [tq x n_heads x n_splits x (hd + 2)] when n_splits > 1 */
} kvb_attn;

/* The lane's P kept values of a compressed row (0 where pruned): its bits sit in word
 * d0 / 64 at d0 % 64, its first value at the popcount of the bits below. */
template <int P>
__device__ static inline void kvb_load_row(const uint64_t *bits, const float *vals, int d0,
                                           bool live, float out[P])
{
    unsigned mine = 0;
    int base = 0;
    if (live) {
        const int wi = d0 >> 6, sh = d0 & 63;
        for (int w = 0; w < wi; w++) base += __popcll(bits[w]);
        const uint64_t word = bits[wi];
        base += __popcll(word & ((1ull << sh) - 1));
        mine = (unsigned)(word >> sh) & ((1u << P) - 1);
    }
#pragma unroll
    for (int t = 0; t < P; t++)
        out[t] = (mine >> t) & 1 ? vals[base + __popc(mine & ((1u << t) - 1))] : 0.0f;
}

/* Bytes of one pipeline stage of one warp: KVS_ROWS rows' K and V bitmaps, then their K
 * values and V values (each run a multiple of 16 bytes: slots are multiples of 4). */
__host__ __device__ static inline size_t kvb_stage_bytes(int words, int k_slots, int v_slots)
{
    return (size_t)KVS_ROWS * (16u * (size_t)words + 4u * (size_t)(k_slots + v_slots));
}

/* Starts the copies of rows j0 .. j0 + KVS_ROWS - 1 of kv head kh (those below end; the rest
 * zero-filled) into one warp's stage. A step's rows are consecutive in the store, so each of
 * the four arrays is one contiguous run: the lanes copy it 16 bytes (values) or 8 (bitmap
 * words) at a time. */
__device__ static inline void kvb_issue(const kvb_attn &p, int kh, int64_t j0, int64_t end,
                                        char *stage)
{
    const int lane = threadIdx.x % 32, W = p.words;
    const int64_t live = min((int64_t)KVS_ROWS, end - j0), row0 = (int64_t)kh * p.cap + j0;
    uint64_t *bits = (uint64_t *)stage;
    float *kv = (float *)(bits + 2 * KVS_ROWS * W), *vv = kv + KVS_ROWS * p.k_slots;
    for (int x = lane; x < 2 * KVS_ROWS * W; x += 32) {
        const int side = x / (KVS_ROWS * W), y = x % (KVS_ROWS * W);
        const bool ok = y / W < live;
        const uint64_t *src = (side ? p.v_bits : p.k_bits) + row0 * W + y;
        cp_async8(bits + x, ok ? src : p.k_bits, ok);
    }
    for (int x = lane; x < KVS_ROWS * p.k_slots / 4; x += 32) {
        const bool ok = 4 * x < live * p.k_slots;
        cp_async16(kv + 4 * x, ok ? p.k_vals + row0 * p.k_slots + 4 * x : p.k_vals, ok);
    }
    for (int x = lane; x < KVS_ROWS * p.v_slots / 4; x += 32) {
        const bool ok = 4 * x < live * p.v_slots;
        cp_async16(vv + 4 * x, ok ? p.v_vals + row0 * p.v_slots + 4 * x : p.v_vals, ok);
    }
}

template <int P, int G>
__global__ void __launch_bounds__(KVS_WARPS * 32) k_kvb_attend(kvb_attn p)
{
    const plm_attn_args &a = p.a;
    const int hd = a.head_dim, lane = threadIdx.x % 32, warp = threadIdx.x / 32, W = p.words;
    const kvs_tile tile = kvs_tile_of<G>(a, p.group, p.qgroups, p.chunk);
    const int kh = tile.kh, h0 = tile.h0, ng = tile.ng;
    const int64_t i = tile.i, split = tile.split, r0 = tile.r0, r1 = tile.r1;
    const int d0 = lane * P;

    float q[G][P], acc[G][P], m[G], l[G];
    kvs_start<P, G>(a, tile, d0, q, acc, m, l);

    /* Scores KVS_ROWS rows from j0 (rows at or past `end` score -inf) whose lane channels are
     * in kv/vv, and folds them into each head's running softmax. */
    auto fold = [&](int64_t j0, int64_t end, const float (&kv)[KVS_ROWS][P],
                    const float (&vv)[KVS_ROWS][P]) {
#pragma unroll
        for (int g = 0; g < G; g++) {
            float s[KVS_ROWS];
#pragma unroll
            for (int r = 0; r < KVS_ROWS; r++) {
                float dot = 0.0f;
#pragma unroll
                for (int t = 0; t < P; t++) dot += q[g][t] * kv[r][t];
                s[r] = j0 + r < end ? kvs_warp_sum(dot) * a.scale : -INFINITY;
            }
            /* scored and folded in one head at a time: fewer live registers than all G first */
            kvs_softmax_head<P>(s, vv, acc[g], m[g], l[g]);
        }
    };

    /* The compressed rows: each warp walks its steps (KVS_ROWS rows, KVS_WARPS * KVS_ROWS
     * apart) with KVB_STAGES - 1 steps' copies in flight ahead of the one it computes, so the
     * loads never wait on the bitmap that locates them (the bitmap and the values of a step
     * arrive together). */
    extern __shared__ float4 kvb_sm4[];
    const size_t sb = kvb_stage_bytes(W, p.k_slots, p.v_slots);
    char *wbuf = (char *)kvb_sm4 + (size_t)warp * KVB_STAGES * sb;
    const int64_t stride = (int64_t)KVS_WARPS * KVS_ROWS, first = r0 + warp * KVS_ROWS;
    const int64_t c_end = min(r1, p.nc);
    const int64_t n_steps = first < c_end ? (c_end - first + stride - 1) / stride : 0;
#pragma unroll
    for (int s = 0; s < KVB_STAGES - 1; s++) {
        if (s < n_steps) kvb_issue(p, kh, first + s * stride, c_end, wbuf + s * sb);
        cp_async_commit(); /* empty groups keep the count of groups per step fixed */
    }
    for (int64_t n = 0; n < n_steps; n++) {
        const int64_t nx = n + KVB_STAGES - 1;
        if (nx < n_steps)
            kvb_issue(p, kh, first + nx * stride, c_end, wbuf + (nx % KVB_STAGES) * sb);
        cp_async_commit();
        cp_async_wait<KVB_STAGES - 1>(); /* step n's group has landed */
        __syncwarp();
        const char *st = wbuf + (n % KVB_STAGES) * sb;
        const uint64_t *kb = (const uint64_t *)st, *vb = kb + KVS_ROWS * W;
        const float *kvals = (const float *)(vb + KVS_ROWS * W);
        const float *vvals = kvals + KVS_ROWS * p.k_slots;
        const int64_t j0 = first + n * stride;
        float kv[KVS_ROWS][P], vv[KVS_ROWS][P];
#pragma unroll
        for (int r = 0; r < KVS_ROWS; r++) {
            const bool live = j0 + r < c_end && d0 < hd;
            kvb_load_row<P>(kb + r * W, kvals + r * p.k_slots, d0, live, kv[r]);
            kvb_load_row<P>(vb + r * W, vvals + r * p.v_slots, d0, live, vv[r]);
        }
        fold(j0, c_end, kv, vv);
        __syncwarp(); /* the stage is read before the next step's copies overwrite it */
    }
    cp_async_wait_all();

    /* The dense rows of this chunk, starting on a KVS_ROWS boundary of the chunk's own grid. */
    const int64_t d_beg = max(r0, p.nc);
    for (int64_t j0 = d_beg + warp * KVS_ROWS; j0 < r1; j0 += stride) {
        float kv[KVS_ROWS][P], vv[KVS_ROWS][P];
#pragma unroll
        for (int r = 0; r < KVS_ROWS; r++) {
            const bool live = j0 + r < r1;
            const int64_t off = (j0 + r) * a.kv_stride + (int64_t)kh * hd + d0;
#pragma unroll
            for (int t = 0; t < P; t++) {
                const bool ok = live && d0 + t < hd;
                kv[r][t] = ok ? a.k[off + t] : 0.0f;
                vv[r][t] = ok ? a.v[off + t] : 0.0f;
            }
        }
        fold(j0, r1, kv, vv);
    }

    kvs_finish<P, G>(a, acc, m, l, h0, ng, i, split, p.n_splits, p.work);
}

/* ---- launchers ------------------------------------------------------------------------------ */

template <int P>
static void launch_compress(cu_backend *b, const plm_kv_bitmap *kb, const float *k,
                            const float *v, int64_t kv_stride, int64_t r0, int64_t r1)
{
    const kvb_side ks = {k, kb->k_bits, kb->k_vals, kb->k_keep, kb->k_slots};
    const kvb_side vs = {v, kb->v_bits, kb->v_vals, kb->v_keep, kb->v_slots};
    const int64_t warps = (r1 - r0) * kb->n_kv;
    const unsigned grid = (unsigned)((warps + 3) / 4);
    k_kvb_compress<P><<<grid, 128, 0, b->stream>>>(ks, vs, kv_stride, r0, r1 - r0, kb->n_kv,
                                                   kb->head_dim, kb->words, kb->cap);
    CU_LAUNCHED(b, "k_kvb_compress");
}

static void cu_kvb_compress(cu_backend *b, const plm_kv_bitmap *kb, const float *k,
                            const float *v, int64_t kv_stride, int64_t r0, int64_t r1)
{
    const int hd = kb->head_dim;
    if (hd <= 0 || hd > KVS_MAX_HD) {
        cu_fail(b, "kv bitmap compress: head_dim %d is outside the CUDA kernel's 1..%d", hd,
                KVS_MAX_HD);
        return;
    }
    if (r0 < 0 || r1 > kb->cap || kv_stride < (int64_t)kb->n_kv * hd ||
        ((r1 - r0) * kb->n_kv + 3) / 4 > INT32_MAX) {
        cu_fail(b, "kv bitmap compress: rows [%lld, %lld) of a store of %lld (stride %lld)",
                (long long)r0, (long long)r1, (long long)kb->cap, (long long)kv_stride);
        return;
    }
    if (r1 <= r0) return;
    switch (kvs_lanes_p(hd)) {
    case 1: launch_compress<1>(b, kb, k, v, kv_stride, r0, r1); break;
    case 2: launch_compress<2>(b, kb, k, v, kv_stride, r0, r1); break;
    case 4: launch_compress<4>(b, kb, k, v, kv_stride, r0, r1); break;
    default: launch_compress<8>(b, kb, k, v, kv_stride, r0, r1); break;
    }
}

static void cu_kvb_attend(cu_backend *b, const plm_attn_args *a, const plm_kv_bitmap *kb)
{
    const int hd = a->head_dim;
    if (a->n_heads <= 0 || a->n_kv <= 0 || a->n_heads % a->n_kv != 0) {
        cu_fail(b, "kv bitmap attention: %d heads cannot share %d kv heads", a->n_heads, a->n_kv);
        return;
    }
    if (hd <= 0 || hd > KVS_MAX_HD || hd != kb->head_dim || a->n_kv != kb->n_kv) {
        cu_fail(b, "kv bitmap attention: head_dim %d (store %d, kernel 1..%d), %d kv heads "
                "(store %d)", hd, kb->head_dim, KVS_MAX_HD, a->n_kv, kb->n_kv);
        return;
    }
    if (a->tq < 0 || a->tk < 0 || a->tq > 65535 || a->q_stride < (int64_t)a->n_heads * hd ||
        a->kv_stride < (int64_t)a->n_kv * hd || kb->n_rows > kb->cap) {
        cu_fail(b, "kv bitmap attention: bad shape tq=%lld (CUDA 0..65535) tk=%lld q_stride=%lld "
                "kv_stride=%lld rows %lld of %lld", (long long)a->tq, (long long)a->tk,
                (long long)a->q_stride, (long long)a->kv_stride, (long long)kb->n_rows,
                (long long)kb->cap);
        return;
    }
    if (a->tq == 0) return;
    kvb_attn p;
    p.a = *a;
    p.k_bits = kb->k_bits;
    p.v_bits = kb->v_bits;
    p.k_vals = kb->k_vals;
    p.v_vals = kb->v_vals;
    p.words = kb->words;
    p.k_slots = kb->k_slots;
    p.v_slots = kb->v_slots;
    p.cap = kb->cap;
    p.nc = kb->n_rows;
    p.group = a->n_heads / a->n_kv;
    const int G = kvs_heads_per_block(p.group);
    p.qgroups = (p.group + G - 1) / G;
    if ((int64_t)a->n_kv * p.qgroups > 65535) {
        cu_fail(b, "kv bitmap attention: %d kv heads x %d query blocks exceed the grid",
                a->n_kv, p.qgroups);
        return;
    }
    /* Keys the longest query sees. */
    int64_t nk = a->causal ? a->q_pos0 + a->tq : a->tk;
    if (nk > a->tk) nk = a->tk;
    p.work = kb->work;
    const size_t stages = (size_t)KVS_WARPS * KVB_STAGES *
                          kvb_stage_bytes(kb->words, kb->k_slots, kb->v_slots);
    kvs_with_pg(hd, G, [&](auto P, auto G_) {
        kvs_launch(b, k_kvb_attend<decltype(P)::value, decltype(G_)::value>,
                   "k_kvb_attend", (int)P, p, nk, kb->work_floats, stages);
    });
}

/* ---- the ops (wired into backend_cuda.cu's table) -------------------------------------------- */

static void op_kvb_compress(plm_backend *be, const plm_kv_bitmap *kb, const float *k,
                            const float *v, int64_t kv_stride, int64_t r0, int64_t r1)
{
    cu_backend *b = kvs_enter(be);
    if (b) cu_kvb_compress(b, kb, k, v, kv_stride, r0, r1);
}

static void op_kvb_attend(plm_backend *be, const plm_attn_args *a, const plm_kv_bitmap *kb)
{
    cu_backend *b = kvs_enter(be);
    if (b) cu_kvb_attend(b, a, kb);
}

const plm_kv_bitmap_ops cu_kv_bitmap_ops = {op_kvb_compress, op_kvb_attend};
