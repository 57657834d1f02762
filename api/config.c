#include "api/config.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/json.h"

#define CONFIG_MAX_BYTES (16u << 20)

static plm_status act_from_name(const char *name, const char *where, plm_act *out,
                                plm_error *err)
{
    static const struct { const char *name; plm_act act; } acts[] = {
        {"gelu", PLM_ACT_GELU},           {"quick_gelu", PLM_ACT_QUICK_GELU},
        {"gelu_pytorch_tanh", PLM_ACT_GELU_TANH}, {"gelu_new", PLM_ACT_GELU_TANH},
        {"silu", PLM_ACT_SILU},           {"swish", PLM_ACT_SILU},
        {"relu", PLM_ACT_RELU},
    };
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        if (!strcmp(name, acts[i].name)) {
            *out = acts[i].act;
            return PLM_OK;
        }
    return plm_fail(err, PLM_E_UNSUPPORTED, "%s: activation '%s' is not supported", where, name);
}

/* An int field with a default; must be within [lo, hi]. */
static plm_status int_field(const cJSON *o, const char *key, const char *where, int dflt, int lo,
                            int hi, int *out, plm_error *err)
{
    int64_t v = dflt;
    PLM_TRY(json_int_opt(o, key, where, &v, err));
    if (v < lo || v > hi)
        return plm_fail(err, PLM_E_FORMAT, "%s: %s is %lld, expected %d..%d", where, key,
                        (long long)v, lo, hi);
    *out = (int)v;
    return PLM_OK;
}

static plm_status read_vision(const cJSON *v, vit_config *c, plm_error *err)
{
    const char *w = "config.json: vision_config";
    /* CLIPVisionConfig defaults apply to fields the file leaves out; LlavaConfig's own default
     * when vision_config is absent is CLIP ViT-L/14 at 336 px. */
    int absent = v == NULL;
    PLM_TRY(int_field(v, "hidden_size", w, absent ? 1024 : 768, 1, 1 << 16, &c->hidden, err));
    PLM_TRY(int_field(v, "intermediate_size", w, absent ? 4096 : 3072, 1, 1 << 18,
                      &c->intermediate, err));
    PLM_TRY(int_field(v, "num_hidden_layers", w, absent ? 24 : 12, 1, 1024, &c->n_layers, err));
    PLM_TRY(int_field(v, "num_attention_heads", w, absent ? 16 : 12, 1, 1024, &c->n_heads, err));
    PLM_TRY(int_field(v, "image_size", w, absent ? 336 : 224, 1, 1 << 14, &c->image_size, err));
    PLM_TRY(int_field(v, "patch_size", w, absent ? 14 : 32, 1, 1 << 12, &c->patch_size, err));
    PLM_TRY(int_field(v, "num_channels", w, 3, 3, 3, &c->n_channels, err));
    double eps = 1e-5;
    PLM_TRY(json_num_opt(v, "layer_norm_eps", w, &eps, err));
    c->ln_eps = (float)eps;
    const char *act = "quick_gelu";
    PLM_TRY(json_str_opt(v, "hidden_act", w, &act, err));
    PLM_TRY(act_from_name(act, w, &c->act, err));
    if (c->hidden % c->n_heads)
        return plm_fail(err, PLM_E_SHAPE, "%s: hidden_size %d is not a multiple of "
                        "num_attention_heads %d", w, c->hidden, c->n_heads);
    if (c->hidden / c->n_heads > 1024)
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: head size %d is over 1024", w,
                        c->hidden / c->n_heads);
    if (c->image_size % c->patch_size)
        return plm_fail(err, PLM_E_SHAPE, "%s: image_size %d is not a multiple of patch_size %d",
                        w, c->image_size, c->patch_size);
    return PLM_OK;
}

static plm_status read_rope(const cJSON *t, const char *w, llama_config *c, plm_error *err)
{
    /* 5.x nests everything in rope_parameters; 4.x has rope_theta and rope_scaling. */
    const cJSON *rp = NULL;
    c->rope_theta = 10000.0;
    PLM_TRY(json_num_opt(t, "rope_theta", w, &c->rope_theta, err));
    PLM_TRY(json_obj_opt(t, "rope_parameters", w, &rp, err));
    if (!rp) PLM_TRY(json_obj_opt(t, "rope_scaling", w, &rp, err));
    c->rope_type = ROPE_DEFAULT;
    c->rope_factor = 1.0;
    c->rope_orig_max_pos = c->max_pos;
    if (!rp) return PLM_OK;
    char rw[128];
    snprintf(rw, sizeof rw, "%s.%s", w, cJSON_GetObjectItemCaseSensitive(t, "rope_parameters")
                                            ? "rope_parameters" : "rope_scaling");
    PLM_TRY(json_num_opt(rp, "rope_theta", rw, &c->rope_theta, err));
    const char *type = "default";
    PLM_TRY(json_str_opt(rp, "type", rw, &type, err));
    PLM_TRY(json_str_opt(rp, "rope_type", rw, &type, err));
    if (!strcmp(type, "default")) return PLM_OK;
    if (!strcmp(type, "linear")) c->rope_type = ROPE_LINEAR;
    else if (!strcmp(type, "dynamic")) c->rope_type = ROPE_DYNAMIC;
    else if (!strcmp(type, "llama3")) c->rope_type = ROPE_LLAMA3;
    else
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: rope_type '%s' is not supported "
                        "(default, linear, dynamic and llama3 are)", rw, type);
    PLM_TRY(json_num_req(rp, "factor", rw, &c->rope_factor, err));
    if (!(c->rope_factor >= 1.0))
        return plm_fail(err, PLM_E_FORMAT, "%s: factor %g must be at least 1", rw, c->rope_factor);
    if (c->rope_type == ROPE_LLAMA3) {
        int64_t orig;
        PLM_TRY(json_num_req(rp, "low_freq_factor", rw, &c->rope_low_freq, err));
        PLM_TRY(json_num_req(rp, "high_freq_factor", rw, &c->rope_high_freq, err));
        PLM_TRY(json_int_req(rp, "original_max_position_embeddings", rw, &orig, err));
        if (orig < 1 || orig > (1 << 24) || !(c->rope_high_freq > c->rope_low_freq))
            return plm_fail(err, PLM_E_FORMAT, "%s: inconsistent llama3 parameters", rw);
        c->rope_orig_max_pos = (int)orig;
    } else {
        int64_t orig = c->max_pos;
        PLM_TRY(json_int_opt(rp, "original_max_position_embeddings", rw, &orig, err));
        c->rope_orig_max_pos = (int)orig;
    }
    return PLM_OK;
}

static plm_status read_eos(const cJSON *o, const char *w, llama_config *c, plm_error *err)
{
    const cJSON *e = o ? cJSON_GetObjectItemCaseSensitive(o, "eos_token_id") : NULL;
    if (!e || cJSON_IsNull(e)) return PLM_OK;
    const cJSON *item = e;
    int n = cJSON_IsArray(e) ? cJSON_GetArraySize(e) : 1;
    for (int i = 0; i < n; i++) {
        if (cJSON_IsArray(e)) item = cJSON_GetArrayItem(e, i);
        /* range first: converting a double outside int's range (1e37, inf) is undefined */
        if (!cJSON_IsNumber(item) || !(item->valuedouble >= 0 && item->valuedouble <= INT_MAX) ||
            item->valuedouble != (int)item->valuedouble)
            return plm_fail(err, PLM_E_FORMAT, "%s: eos_token_id must be a token id or a list "
                            "of them", w);
        int id = (int)item->valuedouble, dup = 0;
        for (int j = 0; j < c->n_eos; j++) dup |= c->eos[j] == id;
        if (!dup && c->n_eos < LLAMA_MAX_EOS) c->eos[c->n_eos++] = id;
    }
    return PLM_OK;
}

static plm_status read_text(const cJSON *t, const char *w, int top_tie, llama_config *c,
                            plm_error *err)
{
    /* LlamaConfig defaults (the Llama-2 7B shape) for whatever the file leaves out. */
    PLM_TRY(int_field(t, "vocab_size", w, 32000, 1, 1 << 24, &c->vocab, err));
    PLM_TRY(int_field(t, "hidden_size", w, 4096, 1, 1 << 17, &c->hidden, err));
    PLM_TRY(int_field(t, "intermediate_size", w, 11008, 1, 1 << 19, &c->intermediate, err));
    PLM_TRY(int_field(t, "num_hidden_layers", w, 32, 1, 1024, &c->n_layers, err));
    PLM_TRY(int_field(t, "num_attention_heads", w, 32, 1, 1024, &c->n_heads, err));
    PLM_TRY(int_field(t, "num_key_value_heads", w, c->n_heads, 1, c->n_heads, &c->n_kv, err));
    PLM_TRY(int_field(t, "max_position_embeddings", w, 2048, 1, 1 << 24, &c->max_pos, err));
    if (c->n_heads % c->n_kv)
        return plm_fail(err, PLM_E_SHAPE, "%s: num_attention_heads %d is not a multiple of "
                        "num_key_value_heads %d", w, c->n_heads, c->n_kv);
    const cJSON *hd = t ? cJSON_GetObjectItemCaseSensitive(t, "head_dim") : NULL;
    int dflt_hd = c->hidden / c->n_heads;
    PLM_TRY(int_field(hd && !cJSON_IsNull(hd) ? t : NULL, "head_dim", w, dflt_hd, 2, 1024,
                      &c->head_dim, err));
    if (c->head_dim % 2)
        return plm_fail(err, PLM_E_SHAPE, "%s: head_dim %d must be even for RoPE", w, c->head_dim);
    double eps = 1e-6;
    PLM_TRY(json_num_opt(t, "rms_norm_eps", w, &eps, err));
    c->rms_eps = (float)eps;
    const char *act = "silu";
    PLM_TRY(json_str_opt(t, "hidden_act", w, &act, err));
    if (strcmp(act, "silu") && strcmp(act, "swish"))
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: hidden_act '%s' is not supported by the "
                        "Llama decoder (silu)", w, act);
    c->tie_embeddings = top_tie;
    PLM_TRY(json_bool_opt(t, "tie_word_embeddings", w, &c->tie_embeddings, err));
    c->attn_bias = c->mlp_bias = 0;
    PLM_TRY(json_bool_opt(t, "attention_bias", w, &c->attn_bias, err));
    PLM_TRY(json_bool_opt(t, "mlp_bias", w, &c->mlp_bias, err));
    PLM_TRY(int_field(t, "bos_token_id", w, 1, -1, 1 << 24, &c->bos, err));
    c->n_eos = 0;
    PLM_TRY(read_eos(t, w, c, err));
    if (c->n_eos == 0 && t && !cJSON_GetObjectItemCaseSensitive(t, "eos_token_id"))
        c->eos[c->n_eos++] = 2;
    return read_rope(t, w, c, err);
}

static plm_status read_feature_layers(const cJSON *root, vit_config *v, plm_error *err)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "vision_feature_layer");
    v->n_feature_layers = 1;
    v->feature_layers[0] = -2;
    if (!f || cJSON_IsNull(f)) return PLM_OK;
    int n = cJSON_IsArray(f) ? cJSON_GetArraySize(f) : 1;
    if (n < 1 || n > VIT_MAX_FEATURE_LAYERS)
        return plm_fail(err, PLM_E_FORMAT, "config.json: vision_feature_layer lists %d layers "
                        "(1..%d supported)", n, VIT_MAX_FEATURE_LAYERS);
    for (int i = 0; i < n; i++) {
        const cJSON *x = cJSON_IsArray(f) ? cJSON_GetArrayItem(f, i) : f;
        if (!cJSON_IsNumber(x) || !(fabs(x->valuedouble) <= INT_MAX) ||
            x->valuedouble != (int)x->valuedouble)
            return plm_fail(err, PLM_E_FORMAT, "config.json: vision_feature_layer must be an "
                            "integer or a list of integers");
        v->feature_layers[i] = (int)x->valuedouble;
    }
    v->n_feature_layers = n;
    return PLM_OK;
}

static plm_status parse(const cJSON *root, llava_config *c, plm_error *err)
{
    const char *type;
    PLM_TRY(json_str_req(root, "model_type", "config.json", &type, err));
    int top_tie = 0;
    PLM_TRY(json_bool_opt(root, "tie_word_embeddings", "config.json", &top_tie, err));
    if (!strcmp(type, "llama")) {
        c->has_vision = 0;
        return read_text(root, "config.json", top_tie, &c->text, err);
    }
    if (strcmp(type, "llava"))
        return plm_fail(err, PLM_E_UNSUPPORTED, "config.json: model_type '%s' is not supported "
                        "(llava and llama are)", type);
    c->has_vision = 1;
    const cJSON *v = NULL, *t = NULL;
    PLM_TRY(json_obj_opt(root, "vision_config", "config.json", &v, err));
    PLM_TRY(json_obj_opt(root, "text_config", "config.json", &t, err));
    if (t) {
        const char *tt = "llama";
        PLM_TRY(json_str_opt(t, "model_type", "config.json: text_config", &tt, err));
        if (strcmp(tt, "llama"))
            return plm_fail(err, PLM_E_UNSUPPORTED, "config.json: text_config.model_type '%s' is "
                            "not supported (llama is)", tt);
    }
    PLM_TRY(read_vision(v, &c->vision, err));
    PLM_TRY(read_text(t, "config.json: text_config", top_tie, &c->text, err));
    PLM_TRY(read_feature_layers(root, &c->vision, err));
    const char *strat = "default";
    PLM_TRY(json_str_opt(root, "vision_feature_select_strategy", "config.json", &strat, err));
    if (strcmp(strat, "default") && strcmp(strat, "full"))
        return plm_fail(err, PLM_E_UNSUPPORTED, "config.json: vision_feature_select_strategy "
                        "'%s' is not supported (default, full)", strat);
    c->vision.drop_cls = !strcmp(strat, "default");
    int64_t img = 32000;
    PLM_TRY(json_int_opt(root, "image_token_index", "config.json", &img, err));
    PLM_TRY(json_int_opt(root, "image_token_id", "config.json", &img, err));
    if (img < 0 || img >= c->text.vocab)
        return plm_fail(err, PLM_E_FORMAT, "config.json: image token id %lld is outside the "
                        "vocabulary of %d", (long long)img, c->text.vocab);
    c->image_token_id = (int)img;
    const char *pact = "gelu";
    PLM_TRY(json_str_opt(root, "projector_hidden_act", "config.json", &pact, err));
    PLM_TRY(act_from_name(pact, "config.json: projector_hidden_act", &c->proj.act, err));
    c->proj.bias = 1;
    PLM_TRY(json_bool_opt(root, "multimodal_projector_bias", "config.json", &c->proj.bias, err));
    c->proj.hidden = c->proj.out_dim = c->text.hidden;
    return PLM_OK;
}

plm_status llava_config_load(const char *dir, llava_config *c, plm_error *err)
{
    memset(c, 0, sizeof *c);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *root = NULL;
    PLM_TRY(json_load_file(path, CONFIG_MAX_BYTES, &root, err));
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return plm_fail(err, PLM_E_FORMAT, "%s: not a JSON object", path);
    }
    plm_status st = parse(root, c, err);
    cJSON_Delete(root);
    if (st != PLM_OK) return st;
    /* generate() stops on generation_config's EOS ids too (Llama 3 lists several). */
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        PLM_TRY(json_load_file(path, CONFIG_MAX_BYTES, &root, err));
        st = read_eos(root, "generation_config.json", &c->text, err);
        cJSON_Delete(root);
    }
    if (c->text.n_eos == 0) c->text.eos[c->text.n_eos++] = 2;
    return st;
}
