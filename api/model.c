/* Loading a checkpoint directory: config, weights (mmapped), tokenizer, image processor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "api/model_internal.h"
#include "core/json.h"

/* Where transformers has put each component's weights over the years: 5.x module paths,
 * the names 4.x and 5.x save_pretrained write, and plain Llama checkpoints. */
static const char *const VISION_PREFIXES[] = {
    "model.vision_tower.vision_model.", "model.vision_tower.", "vision_tower.vision_model.",
    "vision_tower.", NULL};
static const char *const PROJ_PREFIXES[] = {"model.multi_modal_projector.",
                                            "multi_modal_projector.", NULL};
static const char *const TEXT_PREFIXES[] = {"model.language_model.", "language_model.model.",
                                            "model.", NULL};
static const char *const HEAD_PREFIXES[] = {"", "language_model.", NULL};

plm_model_params plm_model_default_params(void)
{
    plm_model_params p = {0};
    p.device = PLM_DEVICE_AUTO;
    p.n_threads = 0;
    p.max_pixels = PLM_DEFAULT_MAX_PIXELS;
    return p;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static plm_status load_preprocessor(plm_model *m, plm_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", m->dir);
    if (file_exists(path)) return clip_preproc_load(path, &m->pp, err);
    /* transformers 5.x save_pretrained nests it in processor_config.json */
    snprintf(path, sizeof path, "%s/processor_config.json", m->dir);
    if (file_exists(path)) return clip_preproc_load(path, &m->pp, err);
    return plm_fail(err, PLM_E_MISSING, "%s: no preprocessor_config.json (or processor_config.json)"
                    " for the image processor", m->dir);
}

/* transformers adds BOS through tokenizer.json's post_processor, or — when the file has none,
 * as tokenizers converted from SentencePiece often do — through tokenizer_config.json's
 * add_bos_token (true by default for Llama tokenizers). */
static plm_status decide_bos(plm_model *m, plm_error *err)
{
    int32_t *ids = NULL;
    size_t n = 0;
    PLM_TRY(tok_encode(m->tok, "", 0, 1, &ids, &n, err));
    int32_t bos = tok_bos_id(m->tok);
    int template_adds = n > 0 && ids[0] == bos;
    free(ids);
    if (template_adds || bos < 0) return PLM_OK;
    int add = 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", m->dir);
    if (file_exists(path)) {
        cJSON *tc;
        PLM_TRY(json_load_file(path, 16u << 20, &tc, err));
        plm_status st = json_bool_opt(tc, "add_bos_token", "tokenizer_config.json", &add, err);
        cJSON_Delete(tc);
        PLM_TRY(st);
    }
    m->prepend_bos = add;
    return PLM_OK;
}

static plm_status load_all(plm_model *m, plm_error *err)
{
    PLM_TRY(llava_config_load(m->dir, &m->cfg, err));
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", m->dir);
    PLM_TRY(tok_load_file(path, &m->tok, err));
    PLM_TRY(decide_bos(m, err));
    PLM_TRY(st_set_open_dir(m->dir, &m->weights, err));
    PLM_TRY(model_new_backend(m, &m->wbe, err));
    const plm_dtype to = m->params.weights == PLM_WEIGHTS_BF16  ? PLM_BF16
                         : m->params.weights == PLM_WEIGHTS_F16 ? PLM_F16
                                                                : PLM_F32;
    m->tsrc = (plm_wsrc){.set = m->weights, .be = m->wbe, .prefixes = TEXT_PREFIXES,
                         .what = "language model", .f32_to = to};
    m->hsrc = (plm_wsrc){.set = m->weights, .be = m->wbe, .prefixes = HEAD_PREFIXES,
                         .what = "language model head", .f32_to = to};
    PLM_TRY(llama_load(&m->llm, &m->cfg.text, &m->tsrc, &m->hsrc, err));
    if (!m->cfg.has_vision) return backend_check(m->wbe, err);
    m->vsrc = (plm_wsrc){.set = m->weights, .be = m->wbe, .prefixes = VISION_PREFIXES,
                         .what = "vision tower", .f32_to = to};
    m->psrc = (plm_wsrc){.set = m->weights, .be = m->wbe, .prefixes = PROJ_PREFIXES,
                         .what = "projector", .f32_to = to};
    PLM_TRY(vit_load(&m->vit, &m->cfg.vision, &m->cfg.proj, &m->vsrc, &m->psrc, err));
    PLM_TRY(load_preprocessor(m, err));
    const char *s = tok_token_str(m->tok, m->cfg.image_token_id);
    if (!s || strlen(s) >= sizeof m->image_token)
        return plm_fail(err, PLM_E_FORMAT, "%s/tokenizer.json: the image token id %d from "
                        "config.json is not in the vocabulary", m->dir, m->cfg.image_token_id);
    strcpy(m->image_token, s);
    return backend_check(m->wbe, err);
}

plm_status model_new_backend(const plm_model *m, plm_backend **out, plm_error *err)
{
    if (m->on_cuda) {
        PLM_TRY(plm_backend_cuda_new(0, out, err));
        /* 16-bit checkpoints: attention may use tensor cores too (float32 ones stay exact) */
        if ((*out)->ops->set_precision)
            (*out)->ops->set_precision(*out, m->tsrc.dtype == PLM_BF16 ||
                                                 m->tsrc.dtype == PLM_F16);
        return PLM_OK;
    }
    return plm_backend_cpu_new(m->params.n_threads, out, err);
}

plm_status backend_check(plm_backend *be, plm_error *err)
{
    const char *e = be && be->ops->error ? be->ops->error(be) : NULL;
    return e ? plm_fail(err, PLM_E_DEVICE, "%s backend: %s", be->ops->name, e) : PLM_OK;
}

/* AUTO takes the GPU when this build has CUDA and one is there; CUDA insists on it. */
static plm_status choose_device(plm_model *m, plm_error *err)
{
    if (m->params.device == PLM_DEVICE_CPU) return PLM_OK; /* no probe: it loads the driver */
    char why[256] = "";
    int have = plm_cuda_available(why, sizeof why);
    if (m->params.device == PLM_DEVICE_CUDA && !have)
        return plm_fail(err, PLM_E_DEVICE, "--device cuda: %s", why);
    m->on_cuda = have && m->params.device != PLM_DEVICE_CPU;
    return PLM_OK;
}

plm_status plm_model_load(const char *dir, const plm_model_params *params, plm_model **out,
                          plm_error *err)
{
    *out = NULL;
    if (!dir) return plm_fail(err, PLM_E_ARG, "plm_model_load: no directory given");
    plm_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(dir))) {
        free(m);
        return plm_fail(err, PLM_E_NOMEM, "out of memory");
    }
    m->params = params ? *params : plm_model_default_params();
    if (m->params.max_pixels == 0) m->params.max_pixels = PLM_DEFAULT_MAX_PIXELS;
    if ((unsigned)m->params.weights > PLM_WEIGHTS_F16) {
        free(m->dir);
        free(m);
        return plm_fail(err, PLM_E_ARG, "plm_model_load: unknown weights dtype %d",
                        (int)params->weights);
    }
    m->log.fn = m->params.log;
    m->log.user = m->params.log_user;
    m->log.max = PLM_LOG_DEBUG;
    struct stat st;
    plm_status s;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        s = plm_fail(err, PLM_E_IO, "%s: not a checkpoint directory", dir);
    else if ((s = choose_device(m, err)) == PLM_OK)
        s = load_all(m, err);
    if (s != PLM_OK) {
        plm_model_free(m);
        return s;
    }
    plm_log(&m->log, PLM_LOG_INFO, "loaded %s: %s, %d text layers", dir,
            m->cfg.has_vision ? "llava" : "llama", m->cfg.text.n_layers);
    *out = m;
    return PLM_OK;
}

void plm_model_free(plm_model *m)
{
    if (!m) return;
    vit_unload(&m->vit);
    llama_unload(&m->llm);
    if (m->wbe) {
        wsrc_release(&m->vsrc);
        wsrc_release(&m->psrc);
        wsrc_release(&m->tsrc);
        wsrc_release(&m->hsrc);
        plm_backend_free(m->wbe);
    }
    st_set_close(m->weights);
    tok_free(m->tok);
    free(m->dir);
    free(m);
}

const plm_tokenizer *plm_model_tokenizer(const plm_model *m)
{
    return m->tok;
}

int plm_model_has_vision(const plm_model *m)
{
    return m->cfg.has_vision;
}

int plm_model_text_layers(const plm_model *m)
{
    return m->cfg.text.n_layers;
}

static const char *act_name(plm_act a)
{
    switch (a) {
    case PLM_ACT_GELU: return "gelu";
    case PLM_ACT_GELU_TANH: return "gelu_tanh";
    case PLM_ACT_QUICK_GELU: return "quick_gelu";
    case PLM_ACT_SILU: return "silu";
    case PLM_ACT_RELU: return "relu";
    }
    return "?";
}

static const char *rope_name(llama_rope_type t)
{
    return t == ROPE_LINEAR ? "linear" : t == ROPE_DYNAMIC ? "dynamic"
           : t == ROPE_LLAMA3 ? "llama3" : "default";
}

char *plm_model_describe(const plm_model *m)
{
    size_t cap = 4096;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    const llama_config *t = &m->cfg.text;
    int n = 0;
    n += snprintf(buf + n, cap - (size_t)n, "checkpoint: %s\narchitecture: %s\ndevice: %s\n",
                  m->dir, m->cfg.has_vision ? "LLaVA (CLIP ViT + MLP projector + Llama)" : "Llama",
                  m->on_cuda ? "cuda" : "cpu");
    if (m->cfg.has_vision) {
        const vit_config *v = &m->cfg.vision;
        n += snprintf(buf + n, cap - (size_t)n,
                      "vision tower: CLIP ViT, %d layers (%d run), hidden %d, mlp %d, %d heads, "
                      "image %dpx, patch %d, %s; %d tokens per image (%s); params %zu, dtype %s\n",
                      v->n_layers, m->vit.n_run, v->hidden, v->intermediate, v->n_heads,
                      v->image_size, v->patch_size, act_name(v->act), vit_n_tokens(v),
                      v->drop_cls ? "CLS dropped" : "CLS kept", m->vsrc.n_params,
                      plm_dtype_name(m->vsrc.dtype));
        n += snprintf(buf + n, cap - (size_t)n,
                      "projector: linear %d->%d, %s, linear %d->%d; params %zu, dtype %s\n",
                      m->vit.pcfg.in_dim, m->vit.pcfg.hidden, act_name(m->vit.pcfg.act),
                      m->vit.pcfg.hidden, m->vit.pcfg.out_dim, m->psrc.n_params,
                      plm_dtype_name(m->psrc.dtype));
    }
    size_t head = t->tie_embeddings && m->llm.lm_head.data == m->llm.embed.data ? 0
                  : m->hsrc.n_params;
    n += snprintf(buf + n, cap - (size_t)n,
                  "language model: Llama, %d layers, hidden %d, mlp %d, %d heads (%d KV, head dim "
                  "%d), vocab %d, context %d, rope %s theta %g%s; params %zu, dtype %s\n",
                  t->n_layers, t->hidden, t->intermediate, t->n_heads, t->n_kv, t->head_dim,
                  t->vocab, t->max_pos, rope_name(t->rope_type), t->rope_theta,
                  t->tie_embeddings ? ", tied lm_head" : "", m->tsrc.n_params + head,
                  plm_dtype_name(m->tsrc.dtype));
    size_t total = m->vsrc.n_params + m->psrc.n_params + m->tsrc.n_params + head;
    snprintf(buf + n, cap - (size_t)n, "total parameters: %zu (%.2f %s)\n", total,
             total >= 1e9 ? total / 1e9 : total / 1e6, total >= 1e9 ? "B" : "M");
    return buf;
}
