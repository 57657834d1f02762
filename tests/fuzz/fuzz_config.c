/* Fuzz target: a checkpoint's config.json (LlavaConfig / LlamaConfig with their defaults, rope
 * parameters, EOS ids) through llava_config_load. The bytes up to the first NUL are config.json;
 * what follows a NUL, if anything, is generation_config.json (JSON text has no NUL of its own). */
#include <sys/stat.h>

#include "api/config.h"
#include "tests/fuzz/fuzz_util.h"

static void check_config(const llava_config *c)
{
    const llama_config *t = &c->text;
    FUZZ_CHECK(t->vocab > 0 && t->hidden > 0 && t->intermediate > 0 && t->n_layers > 0,
               "text sizes not positive");
    FUZZ_CHECK(t->n_heads > 0 && t->n_kv > 0 && t->n_heads % t->n_kv == 0,
               "%d heads over %d KV heads", t->n_heads, t->n_kv);
    FUZZ_CHECK(t->head_dim > 0 && t->head_dim % 2 == 0, "head_dim %d", t->head_dim);
    FUZZ_CHECK(t->n_eos >= 1 && t->n_eos <= LLAMA_MAX_EOS, "%d EOS ids", t->n_eos);
    if (!c->has_vision) return;
    const vit_config *v = &c->vision;
    FUZZ_CHECK(v->hidden > 0 && v->n_heads > 0 && v->hidden % v->n_heads == 0,
               "vision hidden %d over %d heads", v->hidden, v->n_heads);
    FUZZ_CHECK(v->patch_size > 0 && v->image_size % v->patch_size == 0,
               "image_size %d, patch_size %d", v->image_size, v->patch_size);
    FUZZ_CHECK(v->n_feature_layers >= 1 && v->n_feature_layers <= VIT_MAX_FEATURE_LAYERS,
               "%d feature layers", v->n_feature_layers);
    FUZZ_CHECK(c->image_token_id >= 0 && c->image_token_id < t->vocab,
               "image token %d outside the vocabulary of %d", c->image_token_id, t->vocab);
}

int fuzz_config(const uint8_t *data, size_t size)
{
    char dir[512], cfg[600], gen[600];
    fuzz_tmp_path(dir, sizeof dir, "config");
    FUZZ_CHECK(mkdir(dir, 0700) == 0 || access(dir, W_OK) == 0, "cannot create %s", dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(gen, sizeof gen, "%s/generation_config.json", dir);
    const uint8_t *nul = size ? memchr(data, 0, size) : NULL;
    size_t n_cfg = nul ? (size_t)(nul - data) : size;
    fuzz_write_file(cfg, data, n_cfg);
    if (nul) fuzz_write_file(gen, nul + 1, size - n_cfg - 1);
    else unlink(gen);

    llava_config c;
    plm_error err = {{0}};
    plm_status st = llava_config_load(dir, &c, &err);
    fuzz_check_status(st, &err, "llava_config_load");
    if (st == PLM_OK) check_config(&c);
    unlink(cfg);
    unlink(gen);
    rmdir(dir);
    return 0;
}

#ifndef PLM_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_config(data, size);
}
#endif
