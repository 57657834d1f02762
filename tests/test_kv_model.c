/* KV-cache policies inside the model: a budget that evicts nothing changes nothing, evictions
 * keep exactly the rows the policy names (their keys equal the unpruned run's), the cache
 * shrinks to the budget, every registered policy runs with visual pruning, and bad specs are
 * refused with the reason. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/session_internal.h"
#include "prune/kv.h"

#define MODEL PLM_SOURCE_DIR "/tests/fixtures/models/mqa_f32_oldnames"
#define GQA PLM_SOURCE_DIR "/tests/fixtures/models/gqa_bf16_sharded"
#define PROMPT "USER: <image>\nWhat colour is the big shape on the left? ASSISTANT:"
#define TEXT "USER: The pass key is 7 4 1 9. Remember it well, the pass key is 7 4 1 9. What " \
             "is the pass key? ASSISTANT:"

static plm_model *load(const char *dir)
{
    plm_model_params mp = plm_model_default_params();
    mp.n_threads = 2;
    plm_model *m;
    plm_error err;
    cr_assert_eq(plm_model_load(dir, &mp, &m, &err), PLM_OK, "%s", err.msg);
    return m;
}

/* A greedy session generating max_tokens (through EOS) under the KV policy kv. */
static plm_session *new_session(plm_model *m, const char *kv, int max_tokens)
{
    plm_session_params sp = plm_session_default_params();
    sp.max_tokens = max_tokens;
    sp.ignore_eos = 1;
    plm_session *s;
    plm_error err;
    cr_assert_eq(plm_session_new(m, &sp, &s, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(plm_session_set_kv(s, kv), PLM_OK, "%s: %s", kv, plm_last_error(s));
    return s;
}

static plm_session *run(plm_model *m, const char *prune, const char *kv, const char *prompt,
                        int image, int max_tokens)
{
    plm_session *s = new_session(m, kv, max_tokens);
    plm_session_keep_prompt_logits(s, 1);
    if (prune) cr_assert_eq(plm_session_set_prune(s, prune), PLM_OK, "%s", plm_last_error(s));
    if (image) cr_assert_eq(plm_session_set_image_file(s, MODEL "/image.png"), PLM_OK);
    cr_assert_eq(plm_session_generate(s, prompt, NULL, NULL, NULL), PLM_OK, "%s: %s", kv,
                 plm_last_error(s));
    return s;
}

static void expect_same_tokens(plm_session *a, plm_session *b, const char *what)
{
    size_t pa, na, pb, nb;
    const int32_t *ta = plm_session_tokens(a, &pa, &na), *tb = plm_session_tokens(b, &pb, &nb);
    cr_assert_eq(na, nb, "%s", what);
    cr_assert_eq(memcmp(ta, tb, na * sizeof *ta), 0, "%s: different tokens", what);
}

Test(kv_model, a_budget_that_evicts_nothing_changes_nothing)
{
    plm_model *m = load(MODEL);
    plm_session *base = run(m, NULL, "none", PROMPT, 1, 6);
    const char *specs[] = {"h2o:budget=100000", "streaming:budget=100000",
                           "snapkv:budget=100000", "scissorhands:budget=100000",
                           "d2o:budget=100000", "ems:budget=100000", "kvcrush:budget=100000",
                           "h2o:budget=100000+snapkv:budget=100000"};
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        plm_session *s = run(m, NULL, specs[i], PROMPT, 1, 6);
        size_t ra, va, rb, vb;
        const float *la = plm_session_prompt_logits(base, &ra, &va);
        const float *lb = plm_session_prompt_logits(s, &rb, &vb);
        cr_assert_eq(ra, rb);
        cr_assert_eq(memcmp(la, lb, ra * va * sizeof(float)), 0, "%s: logits differ", specs[i]);
        expect_same_tokens(base, s, specs[i]);
        cr_assert_eq(plm_session_timings(s)->kv_bytes, plm_session_timings(base)->kv_bytes);
        plm_session_free(s);
    }
    plm_session_free(base);
    plm_model_free(m);
}

/* Streaming keeps rows [0, sink) and the last budget - sink rows of every layer: after the
 * prefill its cache must hold exactly the unpruned cache's rows at those positions. */
Test(kv_model, evicted_cache_holds_the_unpruned_keys_of_the_kept_positions)
{
    plm_model *m = load(GQA);
    plm_session *base = run(m, NULL, "none", TEXT, 0, 1);
    plm_session *s = run(m, NULL, "streaming:budget=12,sink=3", TEXT, 0, 1);
    const llama_config *c = &m->cfg.text;
    const int64_t kvd = (int64_t)c->n_kv * c->head_dim, T = (int64_t)base->n_prompt;
    cr_assert_gt(T, 12);
    for (int l = 0; l < c->n_layers; l++) {
        cr_assert_eq(s->kv.len[l], 12, "layer %d holds %d rows", l, s->kv.len[l]);
        for (int64_t r = 0; r < 12; r++) {
            int64_t p = r < 3 ? r : T - 9 + r - 3;
            cr_assert_eq(memcmp(s->kv.k[l] + r * kvd, base->kv.k[l] + p * kvd,
                                (size_t)kvd * sizeof(float)), 0, "layer %d row %lld", l,
                         (long long)r);
            cr_assert_eq(memcmp(s->kv.v[l] + r * kvd, base->kv.v[l] + p * kvd,
                                (size_t)kvd * sizeof(float)), 0);
        }
    }
    const uint64_t row = 2u * (uint64_t)kvd * sizeof(float);
    cr_assert_eq(plm_session_timings(s)->kv_bytes, 12u * c->n_layers * row);
    plm_session_free(s);
    plm_session_free(base);
    plm_model_free(m);
}

Test(kv_model, decode_keeps_the_budget_with_every_eviction_policy)
{
    plm_model *m = load(GQA);
    const llama_config *c = &m->cfg.text;
    const char *specs[] = {"streaming:budget=10", "h2o:budget=10", "snapkv:budget=10,window=4",
                           "scissorhands:budget=10,recent=2,drop=2", "d2o:budget=10",
                           "ems:budget=10,window=4", "kvcrush:budget=10"};
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        plm_session *s = run(m, NULL, specs[i], TEXT, 0, 8);
        for (int l = 0; l < c->n_layers; l++)
            cr_assert_leq(s->kv.len[l], 10 + 8, "%s: layer %d holds %d rows", specs[i], l,
                          s->kv.len[l]);
        plm_session_free(s);
    }
    plm_session *s = run(m, NULL, "h2o:budget=10", TEXT, 0, 8); /* a fixed budget, exactly */
    for (int l = 0; l < c->n_layers; l++) cr_assert_eq(s->kv.len[l], 10);
    plm_session_free(s);
    plm_model_free(m);
}

Test(kv_model, visual_pruning_and_a_kv_policy_run_together)
{
    plm_model *m = load(MODEL);
    plm_session *vis = run(m, "fastv:tokens=8,k=1", "none", PROMPT, 1, 4);
    plm_session *both = run(m, "fastv:tokens=8,k=1", "h2o:ratio=0.5", PROMPT, 1, 4);
    cr_assert_lt(plm_session_timings(both)->kv_bytes, plm_session_timings(vis)->kv_bytes);
    cr_assert_eq(plm_session_timings(both)->n_image_tokens_last,
                 plm_session_timings(vis)->n_image_tokens_last);
    plm_session_free(vis);
    plm_session_free(both);
    plm_model_free(m);
}

Test(kv_model, bitmap_store_at_zero_sparsity_answers_like_the_dense_cache)
{
    plm_model *m = load(GQA);
    plm_session *base = run(m, NULL, "none", TEXT, 0, 8);
    plm_session *s = run(m, NULL, "mustafar:sparsity=0,window=4,batch=4", TEXT, 0, 8);
    expect_same_tokens(base, s, "mustafar at sparsity 0");
    plm_session *sp = run(m, NULL, "mustafar:sparsity=0.5,window=4,batch=4", TEXT, 0, 8);
    cr_assert_lt(plm_session_timings(sp)->kv_bytes, plm_session_timings(base)->kv_bytes);
    plm_session_free(sp);
    plm_session_free(s);
    plm_session_free(base);
    plm_model_free(m);
}

/* The decode step's logits (the last forward's), bit for bit. */
static void expect_same_logits(plm_session *a, plm_session *b, const char *what)
{
    const size_t V = (size_t)a->m->cfg.text.vocab;
    cr_assert_eq(memcmp(a->logits, b->logits, V * sizeof(float)), 0, "%s: decode logits differ",
                 what);
    size_t ra, va, rb, vb;
    const float *la = plm_session_prompt_logits(a, &ra, &va);
    const float *lb = plm_session_prompt_logits(b, &rb, &vb);
    cr_assert_eq(ra, rb);
    cr_assert_eq(memcmp(la, lb, ra * va * sizeof(float)), 0, "%s: prompt logits differ", what);
    expect_same_tokens(a, b, what);
}

/* ThinK keeping every channel runs the whole thin-key path (store, thin attention, thin
 * scores for H2O) and must not move a bit: its CPU ops run the dense loops over the kept
 * channels. */
Test(kv_model, think_at_ratio_0_reproduces_dense_logits_bit_for_bit)
{
    plm_model *m = load(GQA);
    const llama_config *c = &m->cfg.text;
    plm_session *base = run(m, NULL, "none", TEXT, 0, 8);
    plm_session *s = run(m, NULL, "think:ratio=0,recent=4,window=8", TEXT, 0, 8);
    expect_same_logits(base, s, "think:ratio=0");
    /* the store held the rows: the channel lists are counted besides the same floats */
    const uint64_t lists = (uint64_t)c->n_layers * c->n_kv * c->head_dim * sizeof(int32_t);
    cr_assert_eq(plm_session_timings(s)->kv_bytes, plm_session_timings(base)->kv_bytes + lists);
    plm_session *h = run(m, NULL, "h2o:budget=10", TEXT, 0, 8);
    plm_session *ht = run(m, NULL, "h2o:budget=10+think:ratio=0,recent=2", TEXT, 0, 8);
    expect_same_logits(h, ht, "h2o+think:ratio=0");
    plm_session_free(ht);
    plm_session_free(h);
    plm_session_free(s);
    plm_session_free(base);
    plm_model *mi = load(MODEL);
    base = run(mi, NULL, "none", PROMPT, 1, 6);
    s = run(mi, NULL, "think:ratio=0,recent=3", PROMPT, 1, 6);
    expect_same_logits(base, s, "think:ratio=0 with an image");
    plm_session_free(s);
    plm_session_free(base);
    plm_model_free(mi);
    plm_model_free(m);
}

Test(kv_model, think_stores_thin_keys_and_composes_with_a_token_policy)
{
    plm_model *m = load(GQA);
    const llama_config *c = &m->cfg.text;
    plm_session *s = run(m, NULL, "think:ratio=0.5,recent=4", TEXT, 0, 8);
    size_t np, ng;
    plm_session_tokens(s, &np, &ng);
    const uint64_t hd = (uint64_t)c->head_dim, nc = hd - hd / 2, nkv = (uint64_t)c->n_kv;
    uint64_t want = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const uint64_t len = (uint64_t)s->kv.len[l], thin = np - 4; /* per kv head */
        want += nkv * (len * hd * 4 + (len - thin) * hd * 4 + thin * nc * 4 + nc * 4);
    }
    cr_assert_eq(plm_session_timings(s)->kv_bytes, want, "%llu bytes, want %llu",
                 (unsigned long long)plm_session_timings(s)->kv_bytes, (unsigned long long)want);
    plm_session *h = run(m, NULL, "h2o:budget=10", TEXT, 0, 8);
    plm_session *ht = run(m, NULL, "h2o:budget=10+think:ratio=0.5,recent=2", TEXT, 0, 8);
    for (int l = 0; l < c->n_layers; l++) cr_assert_eq(ht->kv.len[l], 10);
    cr_assert_lt(plm_session_timings(ht)->kv_bytes, plm_session_timings(h)->kv_bytes);
    /* the order does not matter to what runs: think first, then h2o evicts thin rows */
    plm_session *th = run(m, NULL, "think:ratio=0.5,recent=2+h2o:budget=10", TEXT, 0, 8);
    for (int l = 0; l < c->n_layers; l++) cr_assert_eq(th->kv.len[l], 10);
    /* policies that read the keys (d2o, ems) see the thin rows as the attention does */
    const char *more[] = {"d2o:budget=10+think:ratio=0.5,recent=2",
                          "ems:budget=10,window=4+think:ratio=0.25,recent=2"};
    for (size_t i = 0; i < sizeof more / sizeof *more; i++) {
        plm_session *x = run(m, NULL, more[i], TEXT, 0, 8);
        for (int l = 0; l < c->n_layers; l++) cr_assert_leq(x->kv.len[l], 10 + 8, "%s", more[i]);
        plm_session_free(x);
    }
    plm_session_free(th);
    plm_session_free(ht);
    plm_session_free(h);
    plm_session_free(s);
    plm_model_free(m);
}

/* How many generated tokens of b equal a's before the first that differs (same counts
 * asserted). Greedy decoding follows a flipped token with a different continuation, so the
 * first flip, not a position-wise count, measures how close two runs are. */
static size_t agree_before_flip(plm_session *a, plm_session *b)
{
    size_t pa, na, pb, nb;
    const int32_t *ta = plm_session_tokens(a, &pa, &na), *tb = plm_session_tokens(b, &pb, &nb);
    cr_assert_eq(na, nb);
    cr_assert_eq(pa, pb);
    size_t n = 0;
    while (pa + n < na && ta[pa + n] == tb[pa + n]) n++;
    return n;
}

/* KIVI's 4-bit cache on the fixtures: the first token comes from the float prefill and later
 * ones read int4 rows. The random fixtures' logits lie close together, so a token may flip;
 * the first flip must come no earlier than half way (measured: after 10 of 16 tokens on the
 * text fixture at group 8 / residual 4 and at group 16 / no residual, none in 8 with the
 * image). The bytes follow the store's accounting exactly. */
Test(kv_model, int4_keeps_the_greedy_tokens_close_and_the_bytes_small)
{
    plm_model *m = load(GQA);
    const llama_config *c = &m->cfg.text;
    plm_session *base = run(m, NULL, "none", TEXT, 0, 16);
    const char *specs[] = {"int4:group=8,residual=4", "int4:group=16,residual=0"};
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        plm_session *s = run(m, NULL, specs[i], TEXT, 0, 16);
        const size_t n = agree_before_flip(base, s);
        cr_assert_geq(n, 8, "%s: the tokens part after %zu of 16", specs[i], n);
        plm_session_free(s);
    }
    plm_session *s = run(m, NULL, "int4:group=8,residual=4", TEXT, 0, 16);
    const uint64_t hd = (uint64_t)c->head_dim, G = 8, nvg = hd / 8;
    uint64_t want = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const uint64_t len = (uint64_t)s->kv.len[l], nq = (len - 4) / G * G;
        want += (uint64_t)c->n_kv * ((len - nq) * hd * 8 + nq * (hd + 4 + 8 * nvg) +
                                     nq / G * hd * 8);
    }
    cr_assert_eq(plm_session_timings(s)->kv_bytes, want, "%llu bytes, want %llu",
                 (unsigned long long)plm_session_timings(s)->kv_bytes, (unsigned long long)want);
    cr_assert_lt(plm_session_timings(s)->kv_bytes, plm_session_timings(base)->kv_bytes / 2);
    plm_session_free(s);
    plm_session_free(base);
    plm_model *mi = load(MODEL);
    base = run(mi, NULL, "none", PROMPT, 1, 8);
    s = run(mi, NULL, "int4:group=8,residual=4", PROMPT, 1, 8);
    cr_assert_geq(agree_before_flip(base, s), 4);
    plm_session_free(s);
    plm_session_free(base);
    plm_model_free(mi);
    plm_model_free(m);
}

Test(kv_model, int4_runs_under_token_policies)
{
    plm_model *m = load(GQA);
    const llama_config *c = &m->cfg.text;
    plm_session *sh = run(m, NULL, "scissorhands:budget=12,recent=2,drop=2", TEXT, 0, 8);
    plm_session *q = run(m, NULL, "scissorhands:budget=12,recent=2,drop=2+int4:group=4,"
                         "residual=2", TEXT, 0, 8);
    for (int l = 0; l < c->n_layers; l++) cr_assert_leq(q->kv.len[l], 12);
    cr_assert_lt(plm_session_timings(q)->kv_bytes, plm_session_timings(sh)->kv_bytes);
    const char *more[] = {"int4:group=4,residual=2+h2o:budget=10", "d2o:budget=10+int4:group=4,"
                          "residual=2", "kvcrush:budget=10+int4:group=8,residual=0",
                          "ems:budget=10,window=4+int4:group=4,residual=2"};
    for (size_t i = 0; i < sizeof more / sizeof *more; i++) {
        plm_session *x = run(m, NULL, more[i], TEXT, 0, 8);
        for (int l = 0; l < c->n_layers; l++) cr_assert_leq(x->kv.len[l], 10 + 8, "%s", more[i]);
        plm_session_free(x);
    }
    plm_session_free(q);
    plm_session_free(sh);
    plm_model_free(m);
}

/* Store combinations not built yet fail with the reason, at the first layer that meets them. */
Test(kv_model, unbuilt_store_combinations_are_refused)
{
    plm_model *m = load(GQA);
    const struct {
        const char *spec, *msg;
    } bad[] = {{"think:recent=2+int4:group=4,residual=2", "do not share a layer"},
               {"int4:group=4,residual=2+think:recent=2", "do not share a layer"},
               {"mustafar:window=4,batch=4+int4:group=4,residual=2", "cannot share layer"},
               {"think:recent=2+deltallm:local=8", "cannot attend over the think / int4"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        plm_session_params sp = plm_session_default_params();
        sp.max_tokens = 4;
        plm_session *s;
        plm_error err;
        cr_assert_eq(plm_session_new(m, &sp, &s, &err), PLM_OK);
        cr_assert_eq(plm_session_set_kv(s, bad[i].spec), PLM_OK, "%s", plm_last_error(s));
        cr_assert_neq(plm_session_generate(s, TEXT, NULL, NULL, NULL), PLM_OK, "%s ran",
                      bad[i].spec);
        cr_assert(strstr(plm_last_error(s), bad[i].msg), "%s: '%s'", bad[i].spec,
                  plm_last_error(s));
        plm_session_free(s);
    }
    plm_model_free(m);
}

Test(kv_model, bad_specs_are_refused_with_the_reason)
{
    plm_model *m = load(GQA);
    plm_session_params sp = plm_session_default_params();
    plm_session *s;
    plm_error err;
    cr_assert_eq(plm_session_new(m, &sp, &s, &err), PLM_OK);
    struct {
        const char *spec, *msg;
    } bad[] = {
        {"lru:budget=3", "unknown policy 'lru'"},
        {"h2o", "needs budget=N"},
        {"h2o:budget=3,ratio=0.5", "not both"},
        {"h2o:budget=3,colour=red", "no parameter 'colour'"},
        {"snapkv:budget=8,kernel=4", "kernel must be odd"},
        {"h2o:budget=2.5", "whole number"},
        {"think:ratio=1", "think's ratio"},
        {"int4:group=0", "group"},
        {"h2o:budget=8+", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        plm_status st = plm_session_set_kv(s, bad[i].spec);
        if (!bad[i].msg) { /* a trailing '+' is tolerated as an empty part */
            cr_assert_eq(st, PLM_OK, "%s: %s", bad[i].spec, plm_last_error(s));
            continue;
        }
        cr_assert_neq(st, PLM_OK, "%s was accepted", bad[i].spec);
        cr_assert(strstr(plm_last_error(s), bad[i].msg), "%s: '%s'", bad[i].spec,
                  plm_last_error(s));
    }
    plm_session_free(s);
    plm_model_free(m);
}

/* AutoPASTA's sentences from the tokenizer's text: a new sentence after . ! ? or a line break,
 * and the image's rows as one of their own. */
Test(kv_model, prompt_sentences_follow_the_text)
{
    plm_model *m = load(MODEL);
    plm_session_params sp = plm_session_default_params();
    plm_session *s;
    plm_error e0;
    cr_assert_eq(plm_session_new(m, &sp, &s, &e0), PLM_OK, "%s", e0.msg);
    const char *parts[] = {"The sky is blue.", " Is it \"green!\"", "\nNo", " way?"};
    int32_t *all = NULL;
    size_t n_all = 0, starts[4];
    plm_error err;
    for (int k = 0; k < 4; k++) {
        int32_t *ids;
        size_t n;
        cr_assert_eq(plm_tokenize(plm_model_tokenizer(m), parts[k], strlen(parts[k]), 0, &ids,
                                  &n, &err), PLM_OK, "%s", err.msg);
        all = realloc(all, (n_all + n + 3) * sizeof *all);
        starts[k] = n_all;
        memcpy(all + n_all, ids, n * sizeof *ids);
        n_all += n;
        free(ids);
    }
    /* three image tokens after the first sentence's tokens */
    const int32_t img = m->cfg.image_token_id;
    memmove(all + starts[1] + 3, all + starts[1], (n_all - starts[1]) * sizeof *all);
    for (int i = 0; i < 3; i++) all[starts[1] + i] = img;
    n_all += 3;
    for (int k = 1; k < 4; k++) starts[k] += 3;
    s->tokens = all;
    s->n_prompt = n_all;
    int32_t *sid = session_prompt_sentences(s);
    cr_assert_not_null(sid);
    /* the token that holds the line break of "\nNo" ends sentence 3 (the '!"' ended 2) */
    size_t nl = starts[2];
    for (;; nl++) {
        cr_assert_lt(nl, starts[3], "no token holds the line break");
        char *t = NULL;
        cr_assert_eq(plm_detokenize(plm_model_tokenizer(m), &all[nl], 1, 0, &t, &err), PLM_OK);
        int has = strchr(t, '\n') != NULL;
        free(t);
        if (has) break;
    }
    for (size_t i = 0; i < n_all; i++) {
        int want = i < starts[1] - 3 ? 0 : i < starts[1] ? 1 : i < starts[2] ? 2 : i <= nl ? 3 : 4;
        cr_assert_eq(sid[i], want, "token %zu: sentence %d, expected %d", i, sid[i], want);
    }
    free(sid);
    s->tokens = NULL;
    s->n_prompt = 0;
    free(all);
    plm_session_free(s);
    plm_model_free(m);
}

/* After a policy evicts, the cache's allocation shrinks to what it holds plus the decode
 * steps: the same tokens as with the allocation kept, and a second prompt in the same session
 * grows it back. */
static plm_session *run_alloc(plm_model *m, const char *kv, int keep_alloc, int times)
{
    plm_session *s = new_session(m, kv, 6);
    s->kv_keep_alloc = keep_alloc;
    for (int i = 0; i < times; i++)
        cr_assert_eq(plm_session_generate(s, TEXT, NULL, NULL, NULL), PLM_OK, "%s",
                     plm_last_error(s));
    return s;
}

Test(kv_model, evictions_give_the_cache_memory_back)
{
    plm_model *m = load(MODEL);
    const char *kvs[] = {"h2o:budget=8", "snapkv:budget=8,window=4", "streaming:budget=8"};
    for (int k = 0; k < 3; k++) {
        plm_session *kept = run_alloc(m, kvs[k], 1, 1), *shrunk = run_alloc(m, kvs[k], 0, 1);
        cr_assert_gt(kept->kv.cap, 30, "%s: the prompt's cache", kvs[k]);
        cr_assert_leq(shrunk->kv.cap, 8 + 6 + 1, "%s: %d rows allocated", kvs[k],
                      shrunk->kv.cap);
        expect_same_tokens(kept, shrunk, kvs[k]);
        plm_session *twice = run_alloc(m, kvs[k], 0, 2);
        expect_same_tokens(kept, twice, "second prompt after a shrink");
        plm_session_free(kept);
        plm_session_free(shrunk);
        plm_session_free(twice);
    }
    plm_model_free(m);
}

/* AutoPASTA chooses its spans from the prefill's attention; the last prompt token then runs
 * again, steered, so the first answer token is steered: its logits move, the cache holds as
 * many rows as without steering, and layer 0's last row (which steering cannot reach: its keys
 * come from the embedding alone) matches. Nothing highlighted (the window covers the prompt):
 * no second run, the same logits bit for bit. */
Test(kv_model, autopasta_steers_the_first_answer_token)
{
    plm_model *m = load(MODEL);
    const llama_config *c = &m->cfg.text;
    const size_t V = (size_t)c->vocab, row = (size_t)c->n_kv * c->head_dim;
    plm_session *base = run(m, NULL, "none", TEXT, 0, 1);
    plm_session *st = run(m, NULL, "autopasta:alpha=0.000001", TEXT, 0, 1);
    plm_session *none = run(m, NULL, "autopasta:window=100000", TEXT, 0, 1);
    cr_assert_eq(memcmp(base->logits, none->logits, V * sizeof(float)), 0,
                 "nothing highlighted, yet the logits moved");
    double diff = 0;
    for (size_t i = 0; i < V; i++) diff += fabs((double)base->logits[i] - st->logits[i]);
    cr_assert_gt(diff, 1e-3, "steering did not reach the first answer token");
    for (int l = 0; l < c->n_layers; l++)
        cr_assert_eq(st->kv.len[l], base->kv.len[l], "layer %d", l);
    const int last = base->kv.len[0] - 1;
    for (size_t j = 0; j < row; j++)
        cr_assert_float_eq(st->kv.k[0][last * row + j], base->kv.k[0][last * row + j], 1e-4);
    plm_session_free(base);
    plm_session_free(st);
    plm_session_free(none);
    plm_model_free(m);
}

/* A late question (plm_session_ask_context with late = 1) reads the context in the prefill and
 * the question a decode step at a time after the policy compressed the cache. Without a policy
 * that is the joint prompt again (the same tokens; the last hidden state equal up to float
 * summation order). Streaming asked the joint way evicts after the prefill, so the last prompt
 * row saw every key (bit for bit the unpruned row); asked late, the question sees only the
 * sinks and the window, so that row moves, while the cache stays within the budget. */
static plm_session *ask_ctx(plm_model *m, const char *kv, int late)
{
    plm_session *s = new_session(m, kv, 4);
    cr_assert_eq(plm_session_set_image_file(s, MODEL "/image.png"), PLM_OK);
    cr_assert_eq(plm_session_ask_context(s, "The pass key is 7 4 1 9. Remember it well, the pass "
                                         "key is 7 4 1 9. Then we spoke of other things.",
                                         "What is the pass key?", late, NULL, NULL, NULL),
                 PLM_OK, "%s: %s", kv, plm_last_error(s));
    return s;
}

static float hidden_gap(plm_session *a, plm_session *b)
{
    size_t da, db;
    const float *ha = plm_session_last_hidden(a, &da), *hb = plm_session_last_hidden(b, &db);
    cr_assert_eq(da, db);
    float gap = 0;
    for (size_t i = 0; i < da; i++) gap = fmaxf(gap, fabsf(ha[i] - hb[i]));
    return gap;
}

Test(kv_model, a_late_question_sees_the_compressed_context)
{
    plm_model *m = load(MODEL);
    plm_session *joint = ask_ctx(m, "none", 0), *late = ask_ctx(m, "none", 1);
    cr_assert(late->n_late > 5 && late->n_late < late->n_prompt / 2, "the question's tokens: %zu",
              late->n_late);
    cr_assert_eq(joint->n_late, 0);
    cr_assert_eq(joint->n_prompt, late->n_prompt);
    cr_assert_eq(memcmp(joint->tokens, late->tokens, joint->n_prompt * sizeof(int32_t)), 0);
    expect_same_tokens(joint, late, "none, late");
    cr_assert_lt(hidden_gap(joint, late), 1e-3f, "none: %g", (double)hidden_gap(joint, late));

    const int budget = 24;
    char kv[64];
    snprintf(kv, sizeof kv, "streaming:budget=%d,sink=4", budget);
    plm_session *sj = ask_ctx(m, kv, 0), *sl = ask_ctx(m, kv, 1);
    cr_assert_eq(hidden_gap(joint, sj), 0.0f, "evicting after the prefill moved the row");
    cr_assert_gt(hidden_gap(joint, sl), 1e-2f, "the late question saw the evicted rows");
    for (int l = 0; l < m->cfg.text.n_layers; l++)
        cr_assert_leq(sl->kv.len[l], budget, "layer %d holds %d rows", l, sl->kv.len[l]);

    char *ans = NULL;
    cr_assert_eq(plm_session_ask_context(sl, NULL, "What?", 1, NULL, NULL, &ans), PLM_E_ARG);
    cr_assert(strstr(plm_last_error(sl), "needs a context"), "%s", plm_last_error(sl));
    cr_assert_eq(plm_session_ask_context(sl, "a <image> here", "What?", 1, NULL, NULL, &ans),
                 PLM_E_ARG);
    cr_assert_null(ans);
    plm_session_free(joint);
    plm_session_free(late);
    plm_session_free(sj);
    plm_session_free(sl);
    plm_model_free(m);
}
