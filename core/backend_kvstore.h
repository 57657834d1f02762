/* Two KV storages beside Mustafar's bitmap store (issue 7), each a per-layer store that holds
 * the OLD rows of every kv head in a compressed form while the newest rows stay in the dense
 * cache (lm/llama.h's llama_kv). For kv head h, rows [0, n[h]) live in the store and rows
 * [n[h], len) in the dense cache; n[h] may differ between heads once a token policy has evicted
 * different rows per head (compaction keeps the stored rows a prefix, because keep lists are
 * ascending and stored rows are the oldest). The dense cache's rows below n[h] are dead: no op
 * reads them.
 *
 *   plm_kv_thin: ThinK's thin keys (prune/kv_thin.h): a stored key row holds only the n_chan
 *                channels its head kept, packed; values stay dense.
 *   plm_kv_int4: KIVI-style 4-bit K and V (prune/kv_int4.h): keys per channel over groups of
 *                `group` rows, values per row over groups of `vgroup` channels.
 *
 * Pointers named "backend" are the backend's memory (host memory on the CPU backend); the h_*
 * arrays are host bookkeeping that prune/kv_thin.c and prune/kv_int4.c keep in step with them.
 * The structs themselves are host memory. The CPU ops are in core/backend_cpu_thin.c and
 * core/backend_cpu_int4.c, the CUDA ones in cuda/cu_kv_think.cu and cuda/cu_kv_int4.cu. */
#ifndef PLM_CORE_BACKEND_KVSTORE_H
#define PLM_CORE_BACKEND_KVSTORE_H

#include "core/backend.h"

/* ---- ThinK: thin keys ------------------------------------------------------------------------ */
typedef struct plm_kv_thin {
    int n_kv, head_dim, n_chan; /* n_chan: key channels each kv head keeps (1..head_dim) */
    int64_t cap;                /* rows the store can hold per kv head */
    int32_t *chan;              /* backend [n_kv x n_chan]: kept channels, ascending per head */
    int32_t *n_thin;            /* backend [n_kv]: rows [0, n_thin[h]) of head h are thin */
    float *k;                   /* backend [cap x n_kv*n_chan]: row r of head h at
                                   r*n_kv*n_chan + h*n_chan (the dense cache's layout, thinner,
                                   so the backend's gather_heads compacts it) */
    float *work;                /* split-K scratch for attend (may be shared; NULL: no split) */
    int64_t work_floats;
    int32_t *h_chan, *h_n_thin; /* host copies of chan and n_thin */
    int32_t *h_idx;             /* host scratch [n_kv x cap] for compaction */
} plm_kv_thin;

struct plm_kv_thin_ops {
    /* Rows [r0, r1) of every kv head of the dense cache k ([rows x kv_stride], head h at column
     * h * head_dim) -> thin rows: channel chan[h*n_chan + c] to slot c. */
    void (*compress)(plm_backend *be, const plm_kv_thin *st, const float *k, int64_t kv_stride,
                     int64_t r0, int64_t r1);
    /* attention() where key row j < n_thin[kh] of kv head kh scores q . k over the head's kept
     * channels only (pruned channels contribute nothing) and the other key rows and every value
     * row come from a->k / a->v. Sparse fields (rows, bias): unsupported. */
    void (*attend)(plm_backend *be, const plm_attn_args *a, const plm_kv_thin *st);
    /* attn_probs(a, per_head = 1) on the same keys: out [n_heads x tk]. */
    void (*probs)(plm_backend *be, const plm_attn_args *a, const plm_kv_thin *st);
    /* In order, for m < n: key row dst[m] of kv head head[m] = a[m] * it + b[m] * key row
     * src[m], each row read in its own form (a thin row as its kept channels, zero elsewhere)
     * and the result written in dst's form (thin: its kept channels only). Host arrays. Values
     * are dense: the backend's mix_rows folds them. */
    void (*mix)(plm_backend *be, const plm_kv_thin *st, float *k, int64_t kv_stride,
                const int32_t *head, const int32_t *dst, const int32_t *src, const float *a,
                const float *b, int64_t n);
};

/* ---- KIVI-style int4 ------------------------------------------------------------------------- */
typedef struct plm_kv_int4 {
    int n_kv, head_dim;
    int group;                  /* key rows per key group (one min/scale per channel each) */
    int vgroup, n_vg;           /* value channels per value group (min(group, head_dim)) and
                                   groups per row */
    int64_t cap;                /* rows per kv head */
    int64_t n_slots;            /* key-group parameter slots per kv head */
    uint8_t *k_codes, *v_codes; /* backend [cap x n_kv x head_dim/2]: channel d in byte d/2,
                                   low nibble when d is even */
    int32_t *k_slot;            /* backend [cap x n_kv]: each stored row's key-group slot */
    float *k_mn, *k_sc;         /* backend [n_kv x n_slots x head_dim] */
    float *v_mn, *v_sc;         /* backend [cap x n_kv x n_vg] */
    int32_t *n_q;               /* backend [n_kv]: rows [0, n_q[h]) of head h are stored */
    float *work;                /* split-K scratch for attend (may be shared; NULL: no split) */
    int64_t work_floats;
    int32_t *h_n_q;             /* host copy of n_q */
    int32_t *h_slot;            /* host copy of k_slot */
    int32_t *h_refs;            /* host [n_kv x n_slots]: stored rows using each slot */
    int64_t *h_next;            /* host [n_kv]: the next unused slot of each head */
    int32_t *h_idx;             /* host scratch [n_kv x cap] for compaction */
} plm_kv_int4;

struct plm_kv_int4_ops {
    /* Rows [r0, r1) of kv head `head` (r1 - r0 a multiple of group) from the dense cache into
     * the store: keys per channel over each run of `group` rows (run i into slot slot0 + i),
     * values per row over each run of vgroup channels; min/max asymmetric 4-bit codes. */
    void (*quantize)(plm_backend *be, const plm_kv_int4 *st, const float *k, const float *v,
                     int64_t kv_stride, int head, int64_t r0, int64_t r1, int64_t slot0);
    /* attention() with key and value rows [0, n_q[kh]) of kv head kh dequantised from the store
     * and the rest from a->k / a->v. Sparse fields: unsupported. */
    void (*attend)(plm_backend *be, const plm_attn_args *a, const plm_kv_int4 *st);
    /* attn_probs(a, per_head = 1) on the same keys. */
    void (*probs)(plm_backend *be, const plm_attn_args *a, const plm_kv_int4 *st);
    /* In order, for m < n: K and V row dst[m] of kv head head[m] = a[m] * it + b[m] * row
     * src[m], each side dequantised when stored; a stored dst is re-encoded in place: its
     * key codes against its key group's min/scale (clamped to the group's range), its values
     * with fresh per-row parameters. Host arrays. */
    void (*mix)(plm_backend *be, const plm_kv_int4 *st, float *k, float *v, int64_t kv_stride,
                const int32_t *head, const int32_t *dst, const int32_t *src, const float *a,
                const float *b, int64_t n);
    /* For every kv head h and i < n: stored row i (codes, slot, value parameters) = stored row
     * idx[h*n + i] (host, ascending per head, idx[h*n + i] >= i). */
    void (*compact)(plm_backend *be, const plm_kv_int4 *st, const int32_t *idx, int64_t n);
};

/* The CPU backend's tables (core/backend_cpu_thin.c, core/backend_cpu_int4.c). */
extern const plm_kv_thin_ops plm_cpu_kv_thin_ops;
extern const plm_kv_int4_ops plm_cpu_kv_int4_ops;

#endif
