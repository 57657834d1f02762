/* Pruning inside the model: keep-all reproduces the unpruned run bit for bit, and a pruned run
 * agrees with the unpruned one exactly where causality says it must. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/session_internal.h"
#include "vision/image.h"

#define MODEL PLM_SOURCE_DIR "/tests/fixtures/models/mqa_f32_oldnames"
#define PROMPT "USER: <image>\nWhat colour is the big shape on the left? ASSISTANT:"

static plm_model *load(void)
{
    plm_model_params mp = plm_model_default_params();
    mp.n_threads = 2;
    plm_model *m;
    plm_error err;
    cr_assert_eq(plm_model_load(MODEL, &mp, &m, &err), PLM_OK, "%s", err.msg);
    return m;
}

/* One prompt with the given policy; the session stays open for inspection. */
static plm_session *run(plm_model *m, const char *spec, int max_tokens)
{
    plm_session_params sp = plm_session_default_params();
    sp.max_tokens = max_tokens;
    plm_session *s;
    plm_error err;
    cr_assert_eq(plm_session_new(m, &sp, &s, &err), PLM_OK, "%s", err.msg);
    plm_session_keep_prompt_logits(s, 1);
    cr_assert_eq(plm_session_set_prune(s, spec), PLM_OK, "%s: %s", spec, plm_last_error(s));
    cr_assert_eq(plm_session_set_image_file(s, MODEL "/image.png"), PLM_OK);
    cr_assert_eq(plm_session_generate(s, PROMPT, NULL, NULL, NULL), PLM_OK, "%s: %s", spec,
                 plm_last_error(s));
    return s;
}

static void expect_same_logits(plm_session *a, plm_session *b, const char *what)
{
    size_t ra, va, rb, vb;
    const float *la = plm_session_prompt_logits(a, &ra, &va);
    const float *lb = plm_session_prompt_logits(b, &rb, &vb);
    cr_assert_eq(ra, rb, "%s: %zu vs %zu rows", what, ra, rb);
    cr_assert_eq(memcmp(la, lb, ra * va * sizeof(float)), 0, "%s: logits differ", what);
}

Test(prune_model, keep_all_reproduces_the_unpruned_logits_exactly)
{
    plm_model *m = load();
    plm_session *base = run(m, "none", 4);
    /* (VisionZip always feeds the CLS row too, so it has no keep-all equivalent) */
    const char *keep_all[] = {"vflowopt:r0=1,m=100,r1=1,r2=1",
                              "vflowopt:r0=1,m=100,r1=1,r2=1,beta=1",
                              "vflowopt:r0=1,m=100,r1=1,r2=1,cover=1",
                              "vflowopt:r0=1,m=100,r1=1,r2=1,spread=0", "fastv:tokens=16,k=1",
                              "pyramiddrop:layers=1,lambda=1", "uniform-grid:tokens=16",
                              "random:tokens=16", "sparsevlm:keep=16,layers=1"};
    for (size_t i = 0; i < sizeof keep_all / sizeof *keep_all; i++) {
        plm_session *s = run(m, keep_all[i], 4);
        expect_same_logits(base, s, keep_all[i]);
        size_t nb, ns;
        const int32_t *tb = plm_session_tokens(base, NULL, &nb), *ts = plm_session_tokens(s, NULL, &ns);
        cr_assert_eq(nb, ns);
        cr_assert_eq(memcmp(tb, ts, nb * sizeof *tb), 0, "%s: tokens differ", keep_all[i]);
        plm_session_free(s);
    }
    plm_session_free(base);
    plm_model_free(m);
}

/* FastV with K = 1 keeping 5 of 16 (scored by layer 0's attention): layer 0 holds every row exactly as the unpruned run;
 * layer 1 holds fewer rows, and the rows before the image (which never see it) are unchanged. */
Test(prune_model, fastv_cache_matches_the_unpruned_one_where_causality_says)
{
    plm_model *m = load();
    plm_session *base = run(m, "none", 1), *s = run(m, "fastv:tokens=5,k=1", 1);
    const llama_config *c = &m->cfg.text;
    const size_t row = (size_t)c->n_kv * c->head_dim;
    int T = base->kv.len[0];
    cr_assert_eq(s->kv.len[0], T);
    cr_assert_eq(s->kv.len[1], T - 11, "layer 1 holds %d rows", s->kv.len[1]);
    cr_assert_eq(memcmp(s->kv.k[0], base->kv.k[0], (size_t)T * row * sizeof(float)), 0);
    cr_assert_eq(memcmp(s->kv.v[0], base->kv.v[0], (size_t)T * row * sizeof(float)), 0);
    int64_t prefix = s->img_lo;
    cr_assert_gt(prefix, 0);
    cr_assert_eq(memcmp(s->kv.k[1], base->kv.k[1], (size_t)prefix * row * sizeof(float)), 0);
    cr_assert_eq(memcmp(s->kv.v[1], base->kv.v[1], (size_t)prefix * row * sizeof(float)), 0);
    /* and the image row right after the prefix differs: something was really dropped */
    const plm_timings *t = plm_session_timings(s);
    cr_assert_eq(t->n_image_tokens, 16);
    cr_assert_eq(t->n_image_tokens_last, 5);
    cr_assert_lt(t->kv_bytes, plm_session_timings(base)->kv_bytes);
    plm_session_free(s);
    plm_session_free(base);
    plm_model_free(m);
}

/* The patches spec keeps on the fixture, copied out of its session (the grid side into *g). */
static size_t kept_by(plm_model *m, const char *spec, int32_t out[64], int *g)
{
    plm_session *s = run(m, spec, 1);
    size_t n;
    const int32_t *k = plm_session_kept_patches(s, &n, g);
    cr_assert_leq(n, 64, "%s kept %zu patches", spec, n);
    memcpy(out, k, n * sizeof *out);
    plm_session_free(s);
    return n;
}

/* VFlowOpt's beta: with a weight of 100 on the last prompt token's attention its stage ranks
 * as FastV's does at the same layer (the carried score only breaks near-ties); with beta=0 it
 * ranks by the carried score alone, which here keeps a different set. */
Test(prune_model, vflowopt_beta_blends_in_the_last_tokens_attention)
{
    plm_model *m = load();
    int32_t kf[64], kb[64], k0[64];
    int g;
    size_t nf = kept_by(m, "fastv:tokens=6,k=1", kf, &g);
    size_t nb = kept_by(m, "vflowopt:r0=1,m=100,layers=1,r1=0.375,beta=100", kb, &g);
    size_t n0 = kept_by(m, "vflowopt:r0=1,m=100,layers=1,r1=0.375", k0, &g);
    cr_assert_eq(nf, 6);
    cr_assert_eq(nb, 6);
    cr_assert_eq(n0, 6);
    cr_assert_eq(memcmp(kf, kb, nf * sizeof *kf), 0, "beta=100 should rank as FastV does");
    cr_assert_neq(memcmp(kf, k0, nf * sizeof *kf), 0, "the carried score alone agreed with "
                  "FastV: the test cannot tell the two apart");
    plm_model_free(m);
}

/* VFlowOpt's [prunelm] cover=1 keeps the best-scored patch of each 2x2 block of the 4x4 grid
 * (4 kept of 16, and one recycled slot); spread=0 keeps 4 of the projected rows that cover
 * their space. Both keep a different set from the plain top-k here. */
Test(prune_model, vflowopt_cover_keeps_a_patch_in_every_block)
{
    plm_model *m = load();
    int32_t kt[64], kc[64], ks[64];
    int g;
    size_t nt = kept_by(m, "vflowopt:r0=0.25,m=100", kt, &g);
    size_t nc = kept_by(m, "vflowopt:r0=0.25,m=100,cover=1", kc, &g);
    size_t ns = kept_by(m, "vflowopt:r0=0.25,m=100,spread=0", ks, &g);
    cr_assert_eq(g, 4);
    cr_assert_eq(nt, 5);
    cr_assert_eq(nc, 5);
    cr_assert_eq(ns, 5);
    int block[4] = {0};
    for (size_t i = 0; i < nc; i++) block[(kc[i] / 4 / 2) * 2 + (kc[i] % 4) / 2]++;
    for (int b = 0; b < 4; b++) cr_assert_geq(block[b], 1, "block %d kept nothing", b);
    cr_assert_neq(memcmp(kt, kc, nt * sizeof *kt), 0, "cover=1 kept the plain top-k");
    cr_assert_neq(memcmp(kt, ks, nt * sizeof *kt), 0, "spread=0 kept the plain top-k");
    plm_model_free(m);
}

Test(prune_model, vision_stage_feeds_fewer_tokens_and_shrinks_the_cache)
{
    plm_model *m = load();
    plm_session *base = run(m, "none", 1);
    /* vflowopt: 12 dropped into one 100x100 cell -> 4 kept + 1 recycled in place;
     * visionzip: CLS + 2 dominant patches + 1 contextual */
    const char *specs[] = {"vflowopt:r0=0.25,m=100", "visionzip:tokens=4,contextual=1",
                           "random:tokens=4", "uniform-grid:tokens=4"};
    const int tokens[] = {5, 4, 4, 4};
    const size_t kept[] = {5, 2, 4, 4};
    for (int i = 0; i < 4; i++) {
        plm_session *s = run(m, specs[i], 1);
        const plm_timings *t = plm_session_timings(s);
        cr_assert_eq(t->n_image_tokens, tokens[i], "%s: %d", specs[i], t->n_image_tokens);
        int fewer = 16 - tokens[i];
        cr_assert_eq(t->n_prompt, plm_session_timings(base)->n_prompt - fewer, "%s", specs[i]);
        size_t n;
        int grid;
        const int32_t *kp = plm_session_kept_patches(s, &n, &grid);
        cr_assert_eq(n, kept[i], "%s kept %zu", specs[i], n);
        cr_assert_eq(grid, 4);
        for (size_t j = 1; j < n; j++) cr_assert_gt(kp[j], kp[j - 1]);
        /* that many fewer rows in each of the 2 layers */
        cr_assert_eq(plm_session_timings(base)->kv_bytes - t->kv_bytes,
                     (uint64_t)fewer * 2 * 2 * m->cfg.text.n_kv * m->cfg.text.head_dim * 4);
        plm_session_free(s);
    }
    plm_session_free(base);
    plm_model_free(m);
}

Test(prune_model, bad_specs_are_refused_with_the_reason)
{
    plm_model *m = load();
    plm_session *s;
    plm_error err;
    cr_assert_eq(plm_session_new(m, NULL, &s, &err), PLM_OK);
    cr_assert_eq(plm_session_set_prune(s, "random:tokens=999"), PLM_E_FORMAT);
    cr_assert(strstr(plm_last_error(s), "tokens=999, expected a number from 1 to 16"), "%s",
              plm_last_error(s));
    cr_assert_eq(plm_session_set_prune(s, "fastv:k=2"), PLM_E_FORMAT); /* 2 layers: k = 1 only */
    cr_assert_eq(plm_session_set_prune(s, "pyramiddrop:layers=1/1"), PLM_E_ARG);
    cr_assert_eq(plm_session_set_prune(s, "sparsevlm:tokens=100"), PLM_E_ARG);
    cr_assert(strstr(plm_last_error(s), "keep=a/b/c"), "%s", plm_last_error(s));
    cr_assert_eq(plm_session_set_prune(s, "magic:tokens=4"), PLM_E_ARG);
    cr_assert(strstr(plm_last_error(s), "unknown method 'magic'"), "%s", plm_last_error(s));
    cr_assert_eq(plm_session_set_prune(s, "none"), PLM_OK);
    plm_session_free(s);
    plm_model_free(m);
}

Test(prune_model, kept_patches_follow_decoder_stages_and_the_mask_shows_them)
{
    plm_model *m = load();
    plm_session *s = run(m, "fastv:tokens=5,k=1", 1);
    size_t n;
    int grid;
    const int32_t *kp = plm_session_kept_patches(s, &n, &grid);
    cr_assert_eq(n, 5, "the 5 image tokens FastV kept, got %zu", n);
    for (size_t i = 1; i < n; i++) cr_assert_gt(kp[i], kp[i - 1]);
    char path[512];
    snprintf(path, sizeof path, "%s/mask_test.png", PLM_BINARY_DIR);
    cr_assert_eq(plm_session_save_mask(s, path), PLM_OK, "%s", plm_last_error(s));
    plm_image img;
    plm_error err;
    cr_assert_eq(img_load_file(path, 1 << 24, &img, &err), PLM_OK, "%s", err.msg);
    cr_assert(img.width == 56 && img.height == 56);
    /* a kept patch's corner is the yellow frame; a dropped patch's pixels are dimmed to >= 96 */
    int p = kp[0], px = p % grid * 14, py = p / grid * 14;
    const uint8_t *c = img.rgb + ((size_t)py * 56 + px) * 3;
    cr_assert(c[0] == 255 && c[1] == 220 && c[2] == 0);
    int dropped = 0;
    while (dropped < grid * grid) {
        int kept = 0;
        for (size_t i = 0; i < n; i++) kept |= kp[i] == dropped;
        if (!kept) break;
        dropped++;
    }
    const uint8_t *d = img.rgb + ((size_t)(dropped / grid * 14 + 5) * 56 + dropped % grid * 14 + 5) * 3;
    cr_assert(d[0] >= 96 && d[0] <= 96 + 63 && d[1] >= 96 && d[2] >= 96);
    img_free(&img);
    remove(path);
    cr_assert_eq(plm_session_save_mask(s, "/nonexistent-dir/m.png"), PLM_E_IO);
    cr_assert(strstr(plm_last_error(s), "/nonexistent-dir/m.png"), "%s", plm_last_error(s));
    plm_session_free(s);
    plm_model_free(m);
}

Test(prune_model, sparsevlm_keeps_and_appends_its_recycled_tokens)
{
    plm_model *m = load();
    /* 16 image tokens, keep 6 after layer 0: the 10 dropped give int(0.3*10)+1 = 4 candidates
     * and int(4/10)+1 = 1 merged token, placed after the kept ones */
    plm_session *base = run(m, "none", 1), *s = run(m, "sparsevlm:keep=6,layers=1", 1);
    const plm_timings *t = plm_session_timings(s);
    cr_assert_eq(t->n_image_tokens, 16);
    cr_assert_eq(t->n_image_tokens_last, 7, "%d", t->n_image_tokens_last);
    cr_assert_eq(s->kv.len[1], base->kv.len[1] - 9);
    size_t n;
    int grid;
    plm_session_kept_patches(s, &n, &grid);
    cr_assert_eq(n, 6); /* the merged token stands for no single patch */
    plm_session_free(s);
    plm_session_free(base);
    plm_model_free(m);
}

Test(prune_model, the_vision_cache_gives_the_same_answers_and_masks)
{
    /* VFlowOpt's stages compact the scores and patches the vision stage made: the cache must
     * restore them for the next question on the same image */
    plm_model *m = load();
    plm_session_params sp = plm_session_default_params();
    sp.max_tokens = 1;
    sp.cache_vision = 1;
    plm_session *c;
    plm_error err;
    cr_assert_eq(plm_session_new(m, &sp, &c, &err), PLM_OK, "%s", err.msg);
    plm_session_keep_prompt_logits(c, 1);
    const char *spec = "vflowopt:r0=0.5,m=100,layers=1,r1=0.5";
    cr_assert_eq(plm_session_set_prune(c, spec), PLM_OK, "%s", plm_last_error(c));
    for (int round = 0; round < 3; round++) {
        cr_assert_eq(plm_session_set_image_file(c, MODEL "/image.png"), PLM_OK);
        cr_assert_eq(plm_session_generate(c, PROMPT, NULL, NULL, NULL), PLM_OK, "%s",
                     plm_last_error(c));
        if (round == 0) cr_assert_gt(plm_session_timings(c)->vision_ms, 0);
        else cr_assert_eq(plm_session_timings(c)->vision_ms, 0, "round %d re-encoded", round);
        plm_session *f = run(m, spec, 1);
        expect_same_logits(c, f, "cached vs fresh");
        size_t nc, nf;
        int g;
        const int32_t *kc = plm_session_kept_patches(c, &nc, &g);
        const int32_t *kf = plm_session_kept_patches(f, &nf, &g);
        cr_assert_eq(nc, nf);
        cr_assert_eq(memcmp(kc, kf, nc * sizeof *kc), 0);
        plm_session_free(f);
    }
    plm_session_free(c);
    plm_model_free(m);
}
