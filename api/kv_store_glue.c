/* One thin-key store and one int4 store per layer, created by the first plan that asks for one
 * and fed every later plan's merges and keep lists, so token policies keep working on layers
 * whose old rows are compressed (api/kv_store_glue.h). A layer holds at most one kind of store:
 * thin keys of int4 rows (ThinK + KIVI) would need a third format, not built yet. */
#include <stdlib.h>
#include <string.h>

#include "api/kv_store_glue.h"

plm_status kv_stores_begin(plm_session *s, kv_stores *ks)
{
    memset(ks, 0, sizeof *ks);
    const int n = s->m->cfg.text.n_layers;
    ks->thin = calloc((size_t)n, sizeof *ks->thin);
    ks->q4 = calloc((size_t)n, sizeof *ks->q4);
    if (!ks->thin || !ks->q4) {
        free(ks->thin);
        free(ks->q4);
        ks->thin = NULL;
        ks->q4 = NULL;
        return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for the KV stores");
    }
    ks->n_layers = n;
    return PLM_OK;
}

void kv_stores_release(plm_session *s, kv_stores *ks)
{
    for (int l = 0; l < ks->n_layers; l++) {
        kv_thin_release(s->be, &ks->thin[l]);
        kv_int4_release(s->be, &ks->q4[l]);
    }
    if (ks->work) s->be->ops->release(s->be, ks->work);
    free(ks->thin);
    free(ks->q4);
    memset(ks, 0, sizeof *ks);
}

static int has_thin(const kv_stores *ks, int l) { return ks->thin && ks->thin[l].k != NULL; }
static int has_q4(const kv_stores *ks, int l) { return ks->q4 && ks->q4[l].k_codes != NULL; }

int kv_stores_has(const kv_stores *ks, int layer)
{
    return layer >= 0 && layer < ks->n_layers && (has_thin(ks, layer) || has_q4(ks, layer));
}

int64_t kv_stores_rows(const kv_stores *ks, int layer)
{
    if (layer < 0 || layer >= ks->n_layers) return 0;
    if (has_thin(ks, layer)) return kv_thin_rows(&ks->thin[layer]);
    if (has_q4(ks, layer)) return kv_int4_rows(&ks->q4[layer]);
    return 0;
}

/* The split-K scratch every layer's store shares (ops run in stream order, so one serves
 * all), sized for one decode query. */
static plm_status ensure_work(plm_session *s, kv_stores *ks)
{
    if (ks->work) return PLM_OK;
    const llama_config *c = &s->m->cfg.text;
    const int64_t n = kv_thin_work_floats(c->n_heads, c->head_dim, 1);
    ks->work = s->be->ops->alloc(s->be, (size_t)n * sizeof(float));
    if (!ks->work) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for the KV stores' "
                                   "attention scratch");
    ks->work_floats = n;
    return PLM_OK;
}

static plm_status plan_thin(plm_session *s, kv_stores *ks, int l, const kv_plan *pl,
                            const char *who)
{
    const llama_config *c = &s->m->cfg.text;
    plm_kv_thin *st = &ks->thin[l];
    if (has_thin(ks, l))
        return plm_fail(&s->err, PLM_E_ARG, "kv policy %s: layer %d's key channels were chosen "
                        "already (ThinK prunes them once)", who, l);
    if (has_q4(ks, l))
        return plm_fail(&s->err, PLM_E_UNSUPPORTED, "kv policy %s: layer %d already holds int4 "
                        "rows; think and int4 do not share a layer yet", who, l);
    if (pl->n_chan > c->head_dim || pl->chan_upto < 0 || pl->chan_upto > s->kv.len[l])
        return plm_fail(&s->err, PLM_E_ARG, "kv policy %s: %lld channels of %d, rows up to %lld "
                        "of %d", who, (long long)pl->n_chan, c->head_dim,
                        (long long)pl->chan_upto, s->kv.len[l]);
    PLM_TRY(ensure_work(s, ks));
    PLM_TRY(kv_thin_init(st, c->n_kv, c->head_dim, (int)pl->n_chan, s->kv.cap, &s->err));
    PLM_TRY(kv_thin_alloc(s->be, st, pl->chan, &s->err));
    st->work = ks->work;
    st->work_floats = ks->work_floats;
    return kv_thin_compress(s->be, st, s->kv.k[l], (int64_t)c->n_kv * c->head_dim,
                            pl->chan_upto, &s->err);
}

static plm_status plan_q4(plm_session *s, kv_stores *ks, int l, const kv_plan *pl,
                          const char *who)
{
    const llama_config *c = &s->m->cfg.text;
    plm_kv_int4 *st = &ks->q4[l];
    if (has_thin(ks, l))
        return plm_fail(&s->err, PLM_E_UNSUPPORTED, "kv policy %s: layer %d already holds thin "
                        "keys; think and int4 do not share a layer yet", who, l);
    if (!has_q4(ks, l)) {
        PLM_TRY(ensure_work(s, ks));
        PLM_TRY(kv_int4_init(st, c->n_kv, c->head_dim, pl->quant_group, s->kv.cap, &s->err));
        PLM_TRY(kv_int4_alloc(s->be, st, &s->err));
        st->work = ks->work;
        st->work_floats = ks->work_floats;
    } else if (st->group != pl->quant_group) {
        return plm_fail(&s->err, PLM_E_ARG, "kv policy %s: layer %d is quantised in groups of "
                        "%d, not %d", who, l, st->group, pl->quant_group);
    }
    return kv_int4_advance(s->be, st, s->kv.k[l], s->kv.v[l], (int64_t)c->n_kv * c->head_dim,
                           s->kv.len[l], pl->quant_recent, &s->err);
}

plm_status kv_stores_plan(plm_session *s, kv_stores *ks, int layer, const kv_plan *pl,
                          const char *who)
{
    if (pl->n_chan > 0) PLM_TRY(plan_thin(s, ks, layer, pl, who));
    if (pl->quant_group > 0) PLM_TRY(plan_q4(s, ks, layer, pl, who));
    return PLM_OK;
}

plm_status kv_stores_mix(plm_session *s, kv_stores *ks, int layer, const int32_t *head,
                         const int32_t *dst, const int32_t *src, const float *a, const float *b,
                         int64_t n)
{
    const llama_config *c = &s->m->cfg.text;
    const int64_t kvd = (int64_t)c->n_kv * c->head_dim, len = s->kv.len[layer];
    if (has_thin(ks, layer)) {
        PLM_TRY(kv_thin_mix(s->be, &ks->thin[layer], s->kv.k[layer], kvd, len, head, dst, src, a,
                            b, n, &s->err));
        /* ThinK leaves values whole */
        s->be->ops->mix_rows(s->be, s->kv.v[layer], kvd, c->head_dim, head, dst, src, a, b, n);
        return PLM_OK;
    }
    return kv_int4_mix(s->be, &ks->q4[layer], s->kv.k[layer], s->kv.v[layer], kvd, len, head,
                       dst, src, a, b, n, &s->err);
}

plm_status kv_stores_compact(plm_session *s, kv_stores *ks, int layer, const int32_t *keep,
                             int64_t n_keep)
{
    if (has_thin(ks, layer))
        return kv_thin_compact(s->be, &ks->thin[layer], keep, n_keep, &s->err);
    if (has_q4(ks, layer)) return kv_int4_compact(s->be, &ks->q4[layer], keep, n_keep, &s->err);
    return PLM_OK;
}

plm_status kv_stores_attend(plm_session *s, kv_stores *ks, int layer, const plm_attn_args *a)
{
    if (has_thin(ks, layer)) return kv_thin_attend(s->be, a, &ks->thin[layer], &s->err);
    return kv_int4_attend(s->be, a, &ks->q4[layer], &s->err);
}

plm_status kv_stores_probs(plm_session *s, kv_stores *ks, int layer, const plm_attn_args *a)
{
    if (has_thin(ks, layer)) return kv_thin_probs(s->be, a, &ks->thin[layer], &s->err);
    return kv_int4_probs(s->be, a, &ks->q4[layer], &s->err);
}

plm_status kv_stores_download(plm_session *s, kv_stores *ks, int layer, float *k, float *v,
                              int64_t kv_stride)
{
    if (has_thin(ks, layer))
        return kv_thin_download(s->be, &ks->thin[layer], k, kv_stride, &s->err);
    if (has_q4(ks, layer))
        return kv_int4_download(s->be, &ks->q4[layer], k, v, kv_stride, &s->err);
    return PLM_OK;
}

uint64_t kv_stores_bytes(const plm_session *s, const kv_stores *ks, int layer, int64_t len)
{
    const llama_config *c = &s->m->cfg.text;
    const uint64_t row = (uint64_t)c->head_dim * sizeof(float); /* one head's K or V row */
    const uint64_t all = (uint64_t)len * (uint64_t)c->n_kv;     /* rows over the kv heads */
    if (has_thin(ks, layer)) { /* every value row, the float key rows, the thin ones */
        const int64_t thin = kv_thin_rows(&ks->thin[layer]);
        return all * row + (all - (uint64_t)thin) * row + kv_thin_bytes(&ks->thin[layer]);
    }
    if (has_q4(ks, layer)) {
        const int64_t q = kv_int4_rows(&ks->q4[layer]);
        return (all - (uint64_t)q) * 2 * row + kv_int4_bytes(&ks->q4[layer]);
    }
    return all * 2 * row;
}
