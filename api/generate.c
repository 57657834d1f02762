/* One turn: chat template, <image> expansion, vision tower, prefill, decode loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/session_internal.h"
#include "lm/sampler.h"

/* LLaVA-1.5's conversation format (llava-hf chat template, single turn). */
#define IMAGE_MARKER "<image>"
#define DEFAULT_MAX_NEW 256

typedef struct strbuf {
    char *p;
    size_t n, cap;
} strbuf;

static int sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 1;
}

static int count_markers(const char *s)
{
    int n = 0;
    for (const char *p = strstr(s, IMAGE_MARKER); p; p = strstr(p + 1, IMAGE_MARKER)) n++;
    return n;
}

/* Replaces the <image> marker by one image token per visual embedding, as LlavaProcessor does,
 * so the tokenizer sees exactly the text transformers tokenizes. */
static plm_status expand_prompt(plm_session *s, const char *prompt, int n_img, char **out)
{
    strbuf b = {0};
    const char *mark = strstr(prompt, IMAGE_MARKER);
    int ok = 1;
    if (!mark) {
        ok = sb_add(&b, prompt, strlen(prompt));
    } else {
        ok = sb_add(&b, prompt, (size_t)(mark - prompt));
        for (int i = 0; ok && i < n_img; i++)
            ok = sb_add(&b, s->m->image_token, strlen(s->m->image_token));
        const char *rest = mark + strlen(IMAGE_MARKER);
        ok = ok && sb_add(&b, rest, strlen(rest));
    }
    if (!ok) {
        free(b.p);
        return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for the prompt");
    }
    *out = b.p;
    return PLM_OK;
}

static plm_status ensure_kv(plm_session *s, int need)
{
    if (s->kv.cap >= need) return PLM_OK;
    llama_kv_free(&s->kv, s->be);
    return llama_kv_init(&s->kv, &s->m->cfg.text, s->be, need, &s->err);
}

/* Runs the vision tower on the session's image into dev_feats [n_img x hidden]. */
/* Preprocesses the image and runs the vision tower with the policy's vision stage into
 * s->feats (host); done before tokenizing, since a vision stage decides how many image tokens
 * the prompt gets. */
/* Keeps or restores the vision stage's outputs that later stages compact in place. */
static plm_status save_vision(plm_session *s, int restore)
{
    size_t n = s->n_feat ? s->n_feat : 1;
    if (restore) {
        memcpy(s->img_scores, s->vis_scores, n * sizeof *s->img_scores);
        memcpy(s->img_patch, s->vis_patch, n * sizeof *s->img_patch);
        return PLM_OK;
    }
    float *sc = realloc(s->vis_scores, n * sizeof *sc);
    if (sc) s->vis_scores = sc;
    int32_t *pa = realloc(s->vis_patch, n * sizeof *pa);
    if (pa) s->vis_patch = pa;
    if (!sc || !pa) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
    memcpy(sc, s->img_scores, n * sizeof *sc);
    memcpy(pa, s->img_patch, n * sizeof *pa);
    return PLM_OK;
}

static plm_status encode_image(plm_session *s)
{
    plm_model *m = s->m;
    if (s->p.cache_vision && s->vis_valid) return save_vision(s, 1);
    s->vis_valid = 0;
    double t0 = plm_now_ms();
    float *pix = NULL;
    int h = 0, w = 0;
    PLM_TRY(clip_preprocess(&m->pp, &s->img, &pix, &h, &w, &s->err));
    if (h != m->cfg.vision.image_size || w != m->cfg.vision.image_size) {
        free(pix);
        return plm_fail(&s->err, PLM_E_SHAPE, "the image processor makes %dx%d pixels but the "
                        "vision tower takes %dx%d", w, h, m->cfg.vision.image_size,
                        m->cfg.vision.image_size);
    }
    free(s->pixels);
    s->pixels = pix;
    s->ph = h;
    s->pw = w;
    PLM_TRY(session_ensure_scratch(s, session_vision_scratch(s)));
    PLM_TRY(session_encode_image(s, s->scratch));
    if (s->feats_dev_ok && !s->feats_host_ok && s->n_feat) {
        /* rows kept on the device were only enqueued: wait for them (a one-float download) so
         * vision_ms is the tower's time, not the host's time to enqueue it */
        float one;
        s->be->ops->download(s->be, &one, s->feats_dev, sizeof one);
    }
    s->t.vision_ms = plm_now_ms() - t0;
    if (s->p.cache_vision) {
        PLM_TRY(save_vision(s, 0));
        s->vis_valid = 1;
    }
    return PLM_OK;
}

/* The tokens of prompt with its <image> marker expanded to n_img image tokens, and whether a
 * BOS must go in front of them (the tokenizer did not put one there). */
static plm_status encode_text(plm_session *s, const char *prompt, int n_img, int32_t **ids,
                              size_t *n, int *bos)
{
    char *text = NULL;
    PLM_TRY(expand_prompt(s, prompt, n_img, &text));
    plm_status st = tok_encode(s->m->tok, text, strlen(text), 1, ids, n, &s->err);
    free(text);
    if (st != PLM_OK) return st;
    *bos = s->m->prepend_bos && (*n == 0 || (*ids)[0] != tok_bos_id(s->m->tok));
    return PLM_OK;
}

static plm_status tokenize_prompt(plm_session *s, const char *prompt)
{
    plm_model *m = s->m;
    int markers = count_markers(prompt);
    if (markers > 1)
        return plm_fail(&s->err, PLM_E_ARG, "the prompt has %d %s markers; one image per prompt "
                        "is supported", markers, IMAGE_MARKER);
    if (markers == 1 && !s->has_image)
        return plm_fail(&s->err, PLM_E_ARG, "the prompt has an %s marker but no image was given",
                        IMAGE_MARKER);
    if (markers == 0 && s->has_image)
        return plm_fail(&s->err, PLM_E_ARG, "an image was given but the prompt has no %s marker",
                        IMAGE_MARKER);
    int n_img = markers ? (int)s->n_feat : 0;
    int32_t *ids = NULL;
    size_t n = 0;
    int bos = 0;
    plm_status st = encode_text(s, prompt, n_img, &ids, &n, &bos);
    if (st != PLM_OK) return plm_fail_prefix(&s->err, st, "prompt: ");
    size_t total = n + (size_t)bos;
    if (total >= (size_t)s->p.n_ctx) {
        free(ids);
        return plm_fail(&s->err, PLM_E_LIMIT, "the prompt is %zu tokens, over the context of %d",
                        total, s->p.n_ctx);
    }
    s->max_new = s->p.max_tokens;
    if (s->max_new < 0) { /* automatic: up to 256, within the context */
        size_t room = (size_t)s->p.n_ctx - total;
        s->max_new = room < DEFAULT_MAX_NEW ? (int)room : DEFAULT_MAX_NEW;
    }
    size_t cap = total + (size_t)s->max_new + 1;
    int32_t *t = realloc(s->tokens, cap * sizeof *t);
    if (!t) {
        free(ids);
        return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for tokens");
    }
    if (bos) t[0] = tok_bos_id(m->tok);
    memcpy(t + bos, ids, n * sizeof *t);
    free(ids);
    n = total;
    s->tokens = t;
    s->cap_tokens = cap;
    s->n_prompt = s->n_tokens = n;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < 0 || t[i] >= m->cfg.text.vocab)
            return plm_fail(&s->err, PLM_E_FORMAT, "prompt: token id %d is outside the model's "
                            "vocabulary of %d", t[i], m->cfg.text.vocab);
        found += m->cfg.has_vision && t[i] == m->cfg.image_token_id;
    }
    if (found != n_img)
        return plm_fail(&s->err, PLM_E_FORMAT, "prompt: expected %d image tokens after expanding "
                        "%s, found %d (does the prompt contain the image token's text?)", n_img,
                        IMAGE_MARKER, found);
    if (n + (size_t)s->max_new > (size_t)s->p.n_ctx)
        return plm_fail(&s->err, PLM_E_LIMIT, "the prompt is %zu tokens; with max_tokens %d it "
                        "needs %zu positions, over the context of %d", n, s->max_new,
                        n + (size_t)s->max_new, s->p.n_ctx);
    return PLM_OK;
}

/* Embeds the prompt into x: token embeddings, with the image rows replaced by the projected
 * image features (the image tokens form one contiguous run). */
static void embed_prompt(plm_session *s, float *x, const float *dev_feats)
{
    plm_model *m = s->m;
    const plm_backend_ops *op = s->be->ops;
    const int64_t D = m->cfg.text.hidden;
    int32_t *ids = malloc(s->n_prompt * sizeof *ids);
    int64_t first = -1;
    for (size_t i = 0; i < s->n_prompt; i++) {
        int img = m->cfg.has_vision && s->tokens[i] == m->cfg.image_token_id;
        if (img && first < 0) first = (int64_t)i;
        ids[i] = img ? 0 : s->tokens[i];
    }
    op->embed(s->be, x, &m->llm.embed, ids ? ids : s->tokens, (int64_t)s->n_prompt);
    free(ids);
    if (first >= 0) op->copy2d(s->be, x + first * D, D, dev_feats, D, (int64_t)s->n_feat, D);
    s->img_lo = first >= 0 ? first : 0;
    s->img_n = first >= 0 ? (int64_t)s->n_feat : 0;
}

/* The decoder hook of one forward pass: the KV policy sees each layer first (its rows are
 * the ones the layer just cached), then the visual stage may drop image rows for the layers
 * after. */
typedef struct pass_hook {
    plm_session *s;
    const llama_hook *vis; /* NULL outside the prefill or without a decoder stage */
} pass_hook;

static int64_t pass_after_layer(void *ctx, const llama_layer_view *v)
{
    pass_hook *ph = ctx;
    if (session_kv_active(ph->s) && session_kv_after_layer(ph->s, v) < 0) return -1;
    return ph->vis ? ph->vis->after_layer(ph->vis->ctx, v) : v->t;
}

static int pass_before_attention(void *ctx, int layer, plm_attn_args *a)
{
    pass_hook *ph = ctx;
    return session_kv_before_attention(ph->s, layer, a);
}

/* The hook for a pass, or NULL when neither a KV policy nor a visual stage applies. */
static const llama_hook *pass_hook_for(plm_session *s, const llama_hook *vis, pass_hook *ph,
                                       llama_hook *storage)
{
    if (!session_kv_active(s)) return vis;
    ph->s = s;
    ph->vis = vis;
    storage->after_layer = pass_after_layer;
    storage->before_attention = pass_before_attention;
    storage->ctx = ph;
    return storage;
}

static int is_eos(const llama_config *c, int32_t tok)
{
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos[i] == tok) return 1;
    return 0;
}

/* One token through the decoder at position pos as decode step `step` (x, lg, wk: the
 * run's scratch), its logits into s->logits: a generated token, or the prompt's last one run
 * again for AutoPASTA. */
static plm_status step_token(plm_session *s, int32_t tok, int32_t pos, int64_t step, float *x,
                             float *lg, float *wk)
{
    plm_model *m = s->m;
    const plm_backend_ops *op = s->be->ops;
    pass_hook ph;
    llama_hook storage;
    op->embed(s->be, x, &m->llm.embed, &tok, 1);
    if (session_kv_active(s)) session_kv_phase(s, 0, step);
    if (llama_forward(&m->llm, s->be, &s->kv, x, &pos, 1, 1, lg, pos + 1, wk,
                      pass_hook_for(s, NULL, &ph, &storage)) < 0)
        return s->hook_status != PLM_OK ? s->hook_status
                                        : plm_fail(&s->err, PLM_E_ARG, "KV policy failed");
    op->download(s->be, s->logits, lg, (size_t)m->cfg.text.vocab * sizeof(float));
    return PLM_OK;
}

static plm_status run(plm_session *s, plm_token_fn on_token, void *user, strbuf *answer,
                      double t_call)
{
    plm_model *m = s->m;
    const llama_config *c = &m->cfg.text;
    const plm_backend_ops *op = s->be->ops;
    const int64_t T = (int64_t)s->n_prompt, D = c->hidden, V = c->vocab;
    /* a late question: the prefill reads the context, the policy compresses its cache, and
     * the question's Tl tokens follow as decode steps, as a later turn's would */
    const int64_t Tl = (int64_t)s->n_late, Tp = T - Tl;
    const int64_t n_logits = s->keep_logits ? Tp : 1;
    const size_t feat = s->n_feat * (size_t)D, stage = session_stage_scratch(s, T);
    PLM_TRY(session_ensure_scratch(s, (size_t)(T * D + n_logits * V) + feat + stage +
                                          llama_scratch_floats(c, T)));
    float *x = s->scratch, *lg = x + T * D, *fe = lg + n_logits * V, *sb = fe + feat;
    float *wk = sb + stage;
    if (feat && s->feats_dev_ok)
        op->copy2d(s->be, fe, D, s->feats_dev, D, (int64_t)s->n_feat, D);
    else if (feat)
        op->upload(s->be, fe, s->feats, feat * sizeof(float));
    s->stage_buf = NULL; /* points into the scratch while this prefill runs */
    PLM_TRY(ensure_kv(s, (int)T + s->max_new));
    llama_kv_clear(&s->kv);
    if (session_kv_active(s)) PLM_TRY(session_kv_begin(s, Tp, s->kv.cap, Tl + s->max_new));

    llama_hook hook_storage;
    const llama_hook *hook = session_prefill_hook(s, &hook_storage);
    if (hook) {
        s->stage_buf = stage ? sb : NULL;
        s->rope_len = Tp;
        s->img_n0 = (int64_t)s->n_feat;
        int32_t *ps = realloc(s->pending_shift, (size_t)c->n_layers * sizeof *ps);
        if (!ps) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
        s->pending_shift = ps;
        memset(ps, 0, (size_t)c->n_layers * sizeof *ps);
        PLM_TRY(session_dev_grow(s, &s->probs, &s->probs_floats,
                                 (size_t)c->n_heads * (size_t)T, "attention scores"));
    }
    double t0 = plm_now_ms();
    embed_prompt(s, x, fe);
    if (hook) PLM_TRY(session_pick_raters(s, x, Tp));
    int32_t *pos = malloc((size_t)Tp * sizeof *pos);
    if (!pos) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
    for (int64_t i = 0; i < Tp; i++) pos[i] = (int32_t)i;
    s->hook_status = PLM_OK;
    s->img_layer_sum = 0;
    pass_hook ph;
    llama_hook pass_storage;
    int64_t kept = llama_forward(&m->llm, s->be, &s->kv, x, pos, Tp, n_logits, lg, Tp, wk,
                                 pass_hook_for(s, hook, &ph, &pass_storage));
    free(pos);
    if (kept < 0) return s->hook_status != PLM_OK ? s->hook_status
                                                  : plm_fail(&s->err, PLM_E_ARG, "pruning failed");
    s->t.n_image_tokens_last = (int)s->img_n;
    s->t.image_tokens_avg = hook ? (double)s->img_layer_sum / c->n_layers : (double)s->img_n;
    if (hook) memcpy(s->kv.shift, s->pending_shift, (size_t)c->n_layers * sizeof *s->kv.shift);
    s->stage_buf = NULL;
    int64_t rows = n_logits < kept ? n_logits : kept;
    if (s->keep_logits) {
        float *pl = realloc(s->prompt_logits, (size_t)(rows * V) * sizeof(float));
        if (!pl) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for prompt logits");
        s->prompt_logits = pl;
        s->n_logit_rows = (size_t)rows;
        op->download(s->be, pl, lg, (size_t)(rows * V) * sizeof(float));
    }
    op->download(s->be, s->logits, lg + (rows - 1) * V, (size_t)V * sizeof(float));
    /* llama_forward leaves the final-normed rows at the start of its scratch */
    op->download(s->be, s->last_hidden, wk + (rows - 1) * D, (size_t)D * sizeof(float));
    int32_t next_pos = (int32_t)T; /* positions stay the original ones after pruning */
    if (session_kv_active(s) && !s->kv_keep_alloc) {
        /* the policy evicted: give the rows it dropped back (decode appends at most max_new) */
        int held = 0;
        for (int l = 0; l < c->n_layers; l++) held = s->kv.len[l] > held ? s->kv.len[l] : held;
        const int need = held + (int)Tl + s->max_new + 1;
        plm_error ignored; /* without memory for the copy the cache stays whole: go on */
        if ((int64_t)need * 4 < (int64_t)s->kv.cap * 3)
            (void)llama_kv_shrink(&s->kv, c, s->be, need, &ignored);
    }
    /* AutoPASTA picks its spans from the prefill's attention, so the prefill itself ran
     * unsteered; the answer's first token comes from the last prompt token, which runs again,
     * steered (its rows replaced), as the paper's second pass over the prompt would. */
    const int last_img = m->cfg.has_vision && s->tokens[T - 1] == m->cfg.image_token_id;
    if (s->max_new > 0 && T > 1 && !Tl && !last_img && session_kv_resteer(s, T - 1)) {
        for (int l = 0; l < c->n_layers; l++) s->kv.len[l]--;
        PLM_TRY(step_token(s, s->tokens[T - 1], (int32_t)(T - 1), 0, x, lg, wk));
        op->download(s->be, s->last_hidden, wk, (size_t)D * sizeof(float));
    }
    for (int64_t i = 0; i < Tl; i++) /* the late question, a decode step per token */
        PLM_TRY(step_token(s, s->tokens[Tp + i], (int32_t)(Tp + i), i, x, lg, wk));
    if (Tl) op->download(s->be, s->last_hidden, wk, (size_t)D * sizeof(float));
    s->t.prefill_ms = plm_now_ms() - t0;

    sampler smp;
    if (!sampler_init(&smp, s->p.temperature, s->p.top_k, s->p.top_p, s->p.seed, (size_t)V))
        return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for the sampler");
    tok_stream *ts = NULL;
    plm_status st = tok_stream_new(m->tok, 1, &ts, &s->err);
    t0 = plm_now_ms();
    for (int i = 0; st == PLM_OK && i < s->max_new; i++) {
        int32_t tok = sampler_pick(&smp, s->logits, (size_t)V);
        if (i == 0) s->t.ttft_ms = plm_now_ms() - t_call;
        s->tokens[s->n_tokens++] = tok;
        s->t.n_generated++;
        if (is_eos(c, tok) && !s->p.ignore_eos) break;
        const char *piece = "";
        st = tok_stream_push(ts, tok, &piece, &s->err);
        if (st != PLM_OK) break;
        if (*piece && !sb_add(answer, piece, strlen(piece))) {
            st = plm_fail(&s->err, PLM_E_NOMEM, "out of memory for the answer");
            break;
        }
        if (on_token && *piece && on_token(piece, tok, user)) break;
        if (i + 1 == s->max_new) break;
        st = step_token(s, tok, next_pos++, Tl + i, x, lg, wk);
    }
    const char *rest = "";
    if (st == PLM_OK) st = tok_stream_finish(ts, &rest, &s->err);
    if (st == PLM_OK && *rest) {
        if (!sb_add(answer, rest, strlen(rest)))
            st = plm_fail(&s->err, PLM_E_NOMEM, "out of memory for the answer");
        else if (on_token)
            on_token(rest, -1, user);
    }
    if (st == PLM_OK) st = backend_check(s->be, &s->err);
    s->t.decode_ms = plm_now_ms() - t0;
    s->t.kv_bytes = session_kv_bytes(s);
    if (s->be->ops->mem_held) {
        size_t peak = 0;
        s->be->ops->mem_held(s->be, 0, NULL, &peak);
        s->t.peak_bytes = peak;
    }
    tok_stream_free(ts);
    sampler_free(&smp);
    return st;
}

/* The tokens of prompt[0, len) must begin the whole prompt's tokens (they do at a word or line
 * boundary with Llama's tokenizer): the prefill reads those, the rest comes late. */
static plm_status split_late(plm_session *s, const char *prompt, size_t len)
{
    char *head = malloc(len + 1);
    if (!head) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
    memcpy(head, prompt, len);
    head[len] = '\0';
    const int markers = count_markers(head);
    int32_t *ids = NULL;
    size_t n = 0;
    int bos = 0;
    plm_status st = markers == count_markers(prompt)
                        ? encode_text(s, head, markers ? (int)s->n_feat : 0, &ids, &n, &bos)
                        : plm_fail(&s->err, PLM_E_ARG, "the image must come before the late "
                                   "question");
    free(head);
    if (st != PLM_OK) return st;
    const size_t total = n + (size_t)bos;
    int same = total >= 1 && total < s->n_prompt;
    for (size_t i = 0; same && i < n; i++) same = s->tokens[i + (size_t)bos] == ids[i];
    free(ids);
    if (!same)
        return plm_fail(&s->err, PLM_E_ARG, "the context's tokens do not begin the prompt's "
                        "(the context must end at a word boundary, before a question)");
    s->n_late = s->n_prompt - total;
    return PLM_OK;
}

/* plm_session_generate, with the prompt's part from byte late_at on read after the prefill
 * (0: none). */
static plm_status generate(plm_session *s, const char *prompt, size_t late_at,
                           plm_token_fn on_token, void *user, char **answer)
{
    if (answer) *answer = NULL;
    if (!prompt) return plm_fail(&s->err, PLM_E_ARG, "no prompt");
    const double t_call = plm_now_ms();
    double keep_load = s->t.load_image_ms;
    memset(&s->t, 0, sizeof s->t);
    s->t.load_image_ms = keep_load;
    s->n_late = 0;
    if (s->be->ops->mem_held) s->be->ops->mem_held(s->be, 1, NULL, NULL);
    if (!(s->p.cache_vision && s->vis_valid)) s->n_feat = 0;
    if (s->has_image && count_markers(prompt) == 1) PLM_TRY(encode_image(s));
    else s->n_feat = 0;
    PLM_TRY(tokenize_prompt(s, prompt));
    if (late_at) PLM_TRY(split_late(s, prompt, late_at));
    s->t.n_prompt = (int)s->n_prompt;
    s->t.n_image_tokens = (int)s->n_feat;
    strbuf b = {0};
    plm_status st = run(s, on_token, user, &b, t_call);
    if (st == PLM_OK && answer) {
        *answer = b.p ? b.p : strdup("");
        if (!*answer) st = plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
    } else {
        free(b.p);
    }
    return st;
}

plm_status plm_session_generate(plm_session *s, const char *prompt, plm_token_fn on_token,
                                void *user, char **answer)
{
    return generate(s, prompt, 0, on_token, user, answer);
}

plm_status plm_session_ask_context(plm_session *s, const char *context, const char *question,
                                   int late, plm_token_fn on_token, void *user, char **answer)
{
    if (answer) *answer = NULL;
    if (!question) return plm_fail(&s->err, PLM_E_ARG, "no question");
    if (count_markers(question) || (context && count_markers(context)))
        return plm_fail(&s->err, PLM_E_ARG, "the %s contains %s; attach the image with "
                        "the image call instead", count_markers(question) ? "question" : "context",
                        IMAGE_MARKER);
    if (late && !(context && *context))
        return plm_fail(&s->err, PLM_E_ARG, "a late question needs a context before it");
    strbuf b = {0};
    int ok = sb_add(&b, "USER: ", 6);
    if (ok && s->has_image) ok = sb_add(&b, IMAGE_MARKER "\n", strlen(IMAGE_MARKER) + 1);
    if (ok && context) ok = sb_add(&b, context, strlen(context));
    const size_t late_at = late ? b.n : 0;
    if (ok && context) ok = sb_add(&b, "\n", 1);
    ok = ok && sb_add(&b, question, strlen(question)) && sb_add(&b, " ASSISTANT:", 11);
    if (!ok) {
        free(b.p);
        return plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
    }
    plm_status st = generate(s, b.p, late_at, on_token, user, answer);
    free(b.p);
    return st;
}

plm_status plm_session_ask(plm_session *s, const char *question, plm_token_fn on_token,
                           void *user, char **answer)
{
    return plm_session_ask_context(s, NULL, question, 0, on_token, user, answer);
}
