/* A session: one conversation turn at a time over a shared model. Owns its backend (thread
 * pool), KV cache, scratch and sampler, so sessions in different threads never share state. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/session_internal.h"



double plm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

plm_session_params plm_session_default_params(void)
{
    plm_session_params p = {0};
    p.max_tokens = -1;
    p.temperature = 0.0f;
    p.top_p = 1.0f;
    p.seed = 1;
    return p;
}

plm_status plm_session_new(plm_model *m, const plm_session_params *params, plm_session **out,
                           plm_error *err)
{
    *out = NULL;
    if (!m) return plm_fail(err, PLM_E_ARG, "plm_session_new: no model");
    plm_session *s = calloc(1, sizeof *s);
    if (!s) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    s->m = m;
    s->p = params ? *params : plm_session_default_params();
    int max_ctx = m->cfg.text.max_pos;
    if (s->p.n_ctx <= 0) s->p.n_ctx = max_ctx;
    plm_status st = PLM_OK;
    if (s->p.n_ctx > max_ctx)
        st = plm_fail(err, PLM_E_LIMIT, "context of %d tokens is over the model's "
                      "max_position_embeddings of %d", s->p.n_ctx, max_ctx);
    else if (s->p.max_tokens < -1 || s->p.max_tokens >= s->p.n_ctx)
        st = plm_fail(err, PLM_E_LIMIT, "max_tokens %d does not fit the context of %d tokens",
                      s->p.max_tokens, s->p.n_ctx);
    else if (s->p.temperature < 0 || !(s->p.top_p > 0 && s->p.top_p <= 1) || s->p.top_k < 0)
        st = plm_fail(err, PLM_E_ARG, "sampling parameters out of range (temperature >= 0, "
                      "0 < top_p <= 1, top_k >= 0)");
    else
        st = model_new_backend(m, &s->be, err);
    if (st == PLM_OK && (!(s->logits = malloc((size_t)m->cfg.text.vocab * sizeof(float))) ||
                         !(s->last_hidden = malloc((size_t)m->cfg.text.hidden * sizeof(float)))))
        st = plm_fail(err, PLM_E_NOMEM, "out of memory");
    if (st != PLM_OK) {
        plm_session_free(s);
        return st;
    }
    *out = s;
    return PLM_OK;
}

static void drop_image(plm_session *s)
{
    img_free(&s->img);
    s->has_image = 0;
    s->vis_valid = 0;
}

/* Takes ownership of img; the cached vision output survives only an identical image. */
static void keep_image(plm_session *s, plm_image *img)
{
    int same = s->has_image && s->img.width == img->width && s->img.height == img->height &&
               !memcmp(s->img.rgb, img->rgb, (size_t)img->width * img->height * 3);
    int valid = same && s->vis_valid;
    drop_image(s);
    s->img = *img;
    s->has_image = 1;
    s->vis_valid = valid;
}

void plm_session_free(plm_session *s)
{
    if (!s) return;
    if (s->be) {
        session_kv_free(s);
        llama_kv_free(&s->kv, s->be);
        s->be->ops->release(s->be, s->scratch);
        s->be->ops->release(s->be, s->probs);
        s->be->ops->release(s->be, s->work);
        s->be->ops->release(s->be, s->feats_dev);
        if (s->vit_graph) s->be->ops->graph_free(s->be, s->vit_graph);
        plm_backend_free(s->be);
    }
    drop_image(s);
    free(s->pixels);
    free(s->feats);
    free(s->tokens);
    free(s->prompt_logits);
    free(s->logits);
    free(s->last_hidden);
    free(s->img_patch);
    free(s->vis_scores);
    free(s->vis_patch);
    free(s->raters);
    free(s->kept_list);
    free(s->img_scores);
    free(s->pending_shift);
    free(s);
}

const char *plm_last_error(const plm_session *s)
{
    return s ? s->err.msg : "no session";
}

plm_status plm_session_set_image_file(plm_session *s, const char *path)
{
    if (!s->m->cfg.has_vision)
        return plm_fail(&s->err, PLM_E_UNSUPPORTED, "%s: this model has no vision tower", path);
    double t0 = plm_now_ms();
    plm_image img = {0};
    PLM_TRY(img_load_file(path, s->m->params.max_pixels, &img, &s->err));
    keep_image(s, &img);
    s->t.load_image_ms = plm_now_ms() - t0;
    return PLM_OK;
}

plm_status plm_session_set_image_rgb(plm_session *s, const uint8_t *rgb, int w, int h)
{
    if (!s->m->cfg.has_vision)
        return plm_fail(&s->err, PLM_E_UNSUPPORTED, "this model has no vision tower");
    plm_image img = {0};
    PLM_TRY(img_from_rgb(rgb, w, h, s->m->params.max_pixels, &img, &s->err));
    keep_image(s, &img);
    return PLM_OK;
}

void plm_session_clear_image(plm_session *s)
{
    drop_image(s);
}

void plm_session_keep_prompt_logits(plm_session *s, int keep)
{
    s->keep_logits = keep;
}

const plm_timings *plm_session_timings(const plm_session *s)
{
    return &s->t;
}

const int32_t *plm_session_tokens(const plm_session *s, size_t *n_prompt, size_t *n_total)
{
    if (n_prompt) *n_prompt = s->n_prompt;
    if (n_total) *n_total = s->n_tokens;
    return s->tokens;
}

const float *plm_session_prompt_logits(const plm_session *s, size_t *rows, size_t *vocab)
{
    *rows = s->prompt_logits ? s->n_logit_rows : 0;
    *vocab = (size_t)s->m->cfg.text.vocab;
    return s->prompt_logits;
}

const float *plm_session_last_hidden(const plm_session *s, size_t *dim)
{
    *dim = (size_t)s->m->cfg.text.hidden;
    return s->last_hidden;
}

const float *plm_session_image_features(const plm_session *s, size_t *rows, size_t *cols)
{
    *rows = s->n_feat;
    *cols = (size_t)s->m->cfg.text.hidden;
    if (!s->feats_host_ok && s->feats_dev_ok && s->n_feat) {
        /* the host copy is a cache of the device rows, filled on first ask: logically const */
        plm_session *w = (plm_session *)s;
        const size_t n = s->n_feat * *cols;
        float *f = realloc(w->feats, n * sizeof *f);
        if (!f) return NULL;
        w->feats = f;
        w->be->ops->download(w->be, f, w->feats_dev, n * sizeof *f);
        w->feats_host_ok = 1;
    }
    return s->feats;
}

const float *plm_session_pixels(const plm_session *s, int *h, int *w)
{
    *h = s->ph;
    *w = s->pw;
    return s->pixels;
}

/* Grows the device scratch to at least n floats. */
plm_status session_dev_grow(plm_session *s, float **buf, size_t *floats, size_t n,
                            const char *what)
{
    if (n <= *floats) return PLM_OK;
    s->be->ops->release(s->be, *buf);
    *buf = s->be->ops->alloc(s->be, n * sizeof(float));
    *floats = *buf ? n : 0;
    if (!*buf)
        return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for %zu MiB of %s",
                        n * sizeof(float) >> 20, what);
    return PLM_OK;
}

plm_status session_ensure_scratch(plm_session *s, size_t n)
{
    return session_dev_grow(s, &s->scratch, &s->scratch_floats, n, "scratch");
}

plm_status plm_session_device_memory(plm_session *s, uint64_t *used, uint64_t *total)
{
    size_t fr = 0, tot = 0;
    if (!s->be->ops->mem_info || s->be->ops->mem_info(s->be, &fr, &tot) != 0)
        return plm_fail(&s->err, PLM_E_UNSUPPORTED, "the %s backend reports no device memory",
                        s->be->ops->name);
    *used = (uint64_t)(tot - fr);
    *total = (uint64_t)tot;
    return PLM_OK;
}
