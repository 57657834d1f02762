/* The vision tower as a device backend runs it, against the tower loaded and run part by
 * part, on the CPU: q, k and v stacked into one weight (core/weights.c wsrc_matrix_stack, taken
 * on device backends: one GEMM instead of three, q/k/v read strided by the attention), and the
 * residual adds fused into the layernorms after them (add_layernorm, the next layer's first
 * norm moved to the end of the layer before). A CPU backend whose table says its memory is not
 * the host's loads the way the CUDA backend does, so a wrong offset, stride, bias order or
 * deferred norm shows here without a GPU. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/config.h"
#include "core/backend.h"
#include "core/dtype.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "tests/support/compare.h"
#include "vision/vit.h"

#define FIX PLM_SOURCE_DIR "/tests/fixtures/models/"

static const char *const VIS[] = {"model.vision_tower.vision_model.", "vision_tower.vision_model.",
                                  "vision_tower.", NULL};
static const char *const PROJ[] = {"model.multi_modal_projector.", "multi_modal_projector.", NULL};

typedef struct tower {
    plm_wsrc vs, ps;
    vit_model m;
    float *feat;
    size_t n_feat;
} tower;

static void load_and_run(st_set *set, const llava_config *cfg, plm_backend *be,
                         const float *pix, tower *t)
{
    plm_error err;
    t->vs = (plm_wsrc){.set = set, .be = be, .prefixes = VIS, .what = "vision tower"};
    t->ps = (plm_wsrc){.set = set, .be = be, .prefixes = PROJ, .what = "projector"};
    cr_assert_eq(vit_load(&t->m, &cfg->vision, &cfg->proj, &t->vs, &t->ps, &err), PLM_OK, "%s",
                 err.msg);
    const size_t rows = (size_t)vit_n_patches(&cfg->vision) + 1;
    t->n_feat = rows * (size_t)vit_feature_dim(&t->m);
    t->feat = calloc(t->n_feat, sizeof(float));
    float *scratch = calloc(vit_scratch_floats(&t->m), sizeof(float));
    vit_taps taps = {calloc(rows * cfg->vision.hidden, sizeof(float)),
                     calloc(rows * cfg->vision.hidden, sizeof(float))};
    cr_assert(t->feat && scratch && taps.q && taps.k);
    vit_encode(&t->m, be, pix, t->feat, &taps, scratch);
    /* the taps hold the last layer's q and k, read out of the stacked rows on that path */
    float *qk = malloc(2 * rows * cfg->vision.hidden * sizeof(float));
    memcpy(qk, taps.q, rows * cfg->vision.hidden * sizeof(float));
    memcpy(qk + rows * cfg->vision.hidden, taps.k, rows * cfg->vision.hidden * sizeof(float));
    t->feat = realloc(t->feat, (t->n_feat + 2 * rows * cfg->vision.hidden) * sizeof(float));
    memcpy(t->feat + t->n_feat, qk, 2 * rows * cfg->vision.hidden * sizeof(float));
    t->n_feat += 2 * rows * cfg->vision.hidden;
    free(qk), free(scratch), free(taps.q), free(taps.k);
}

static void unload(tower *t)
{
    vit_unload(&t->m);
    wsrc_release(&t->vs);
    wsrc_release(&t->ps);
    free(t->feat);
}

/* The CPU table, which the composed fused op below calls. */
static const plm_backend_ops *plain_ops;

static void t_add_layernorm(plm_backend *be, float *y, float *x, const float *h, const float *g,
                            const float *b, int64_t m, int64_t n, float eps)
{
    plain_ops->add(be, x, x, h, m * n);
    plain_ops->layernorm(be, y, x, g, b, m, n, eps);
}

static void check_model(const char *name)
{
    char dir[512];
    snprintf(dir, sizeof dir, FIX "%s", name);
    plm_error err;
    llava_config cfg;
    cr_assert_eq(llava_config_load(dir, &cfg, &err), PLM_OK, "%s", err.msg);
    st_set *set;
    cr_assert_eq(st_set_open_dir(dir, &set, &err), PLM_OK, "%s", err.msg);
    plm_backend *be;
    cr_assert_eq(plm_backend_cpu_new(1, &be, &err), PLM_OK, "%s", err.msg);
    const int S = cfg.vision.image_size;
    float *pix = malloc((size_t)3 * S * S * sizeof(float));
    for (int i = 0; i < 3 * S * S; i++) pix[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;

    tower parts, stacked;
    load_and_run(set, &cfg, be, pix, &parts);
    cr_assert_null(parts.m.layers[0].qkv.data, "a host-memory backend stacked the weights");

    const plm_backend_ops *plain = be->ops;
    plm_backend_ops dev = *plain;
    dev.host_memory = 0; /* weights are copied in, as onto a GPU: the stack is taken */
    be->ops = &dev;
    load_and_run(set, &cfg, be, pix, &stacked);
    be->ops = plain;

    /* and with add_layernorm: the residual adds fused with the norm after them, the next
     * layer's first norm moved to the end of the layer before; the same ops, so bit for bit */
    tower fused;
    plain_ops = plain;
    dev.add_layernorm = t_add_layernorm;
    be->ops = &dev;
    load_and_run(set, &cfg, be, pix, &fused);
    be->ops = plain;
    cr_assert_eq(fused.n_feat, stacked.n_feat);
    cr_assert_eq(max_abs_diff(fused.feat, stacked.feat, fused.n_feat), 0.0,
                 "add_layernorm's path differs: %g",
                 max_abs_diff(fused.feat, stacked.feat, fused.n_feat));
    unload(&fused);

    const int64_t D = cfg.vision.hidden;
    const vit_layer *L = &stacked.m.layers[0];
    cr_assert_not_null(L->qkv.data, "the device-like backend did not stack q, k, v");
    cr_assert_eq(L->qkv.rows, 3 * D);
    cr_assert_eq((const char *)L->k.data,
                 (const char *)L->qkv.data + D * D * plm_dtype_size(L->qkv.dtype));
    cr_assert_eq(L->v_b, L->qkv_b + 2 * D);
    cr_assert_eq(stacked.vs.n_params, parts.vs.n_params, "parameter counts differ");
    cr_assert_eq(stacked.n_feat, parts.n_feat);
    const double e = rel_l2(stacked.feat, parts.feat, parts.n_feat);
    cr_assert(e < 1e-6, "features and taps differ: rel_l2 %g", e);

    unload(&parts);
    unload(&stacked);
    free(pix);
    plm_backend_free(be);
    st_set_close(set);
}

Test(vit_stack, tiny_f32) { check_model("tiny_f32"); }
/* three layers run: two residual adds carry the next layer's norm */
Test(vit_stack, gqa_bf16_sharded) { check_model("gqa_bf16_sharded"); }
Test(vit_stack, mqa_f32_oldnames) { check_model("mqa_f32_oldnames"); }
