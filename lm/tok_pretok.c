/* The normalizer (Prepend, Replace, NFC, Strip) and the pre-tokenizer steps (Metaspace,
 * Split, ByteLevel) over the pieces of a work arena. Each step reproduces the corresponding
 * tokenizers type, including where it acts on every piece rather than on the text as a whole
 * (Prepend and ByteLevel's add_prefix_space prefix every piece left by the added tokens). */
#include "lm/tok_internal.h"

#include <string.h>

/* ---- normalizer --------------------------------------------------------------------------- */

static size_t strip_left(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = tok_utf8_decode(s + i, &cp);
        if (!(tok_uc_flags(cp) & TOK_UC_S)) break;
        i += l;
    }
    return i;
}

static size_t strip_right(const char *s, size_t n)
{
    while (n > 0) {
        size_t i = n - 1;
        while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
        uint32_t cp;
        tok_utf8_decode(s + i, &cp);
        if (!(tok_uc_flags(cp) & TOK_UC_S)) break;
        n = i;
    }
    return n;
}

static plm_status apply_norm(const tok_norm *nm, const char *s, size_t n, tok_buf *out,
                             tok_work *w, plm_error *err)
{
    switch (nm->kind) {
    case TOK_NORM_PREPEND:
        if (n) PLM_TRY(tok_buf_put(out, nm->a, nm->a_len, err)); /* empty text stays empty */
        return tok_buf_put(out, s, n, err);
    case TOK_NORM_REPLACE: return tok_replace_all(s, n, nm->a, nm->a_len, nm->b, nm->b_len, out, err);
    case TOK_NORM_NFC: return tok_nfc(s, n, out, w, err);
    case TOK_NORM_STRIP: {
        size_t a = nm->left ? strip_left(s, n) : 0, b = nm->right ? strip_right(s, n) : n;
        return tok_buf_put(out, s + a, b > a ? b - a : 0, err);
    }
    }
    return PLM_OK;
}

plm_status tok_normalize(const tok_tokenizer *t, const char *s, size_t len, tok_buf *out,
                         tok_work *w, plm_error *err)
{
    if (t->n_norm == 0) return tok_buf_put(out, s, len, err);
    /* s may live in out (the arena): work in the scratch buffers, append at the end. */
    tok_buf *a = &w->tmp, *b = &w->tmp2;
    a->n = 0;
    PLM_TRY(tok_buf_put(a, s, len, err));
    for (size_t i = 0; i < t->n_norm; i++) {
        b->n = 0;
        PLM_TRY(tok_buf_reserve(b, 0, err));
        PLM_TRY(apply_norm(&t->norm[i], a->p, a->n, b, w, err));
        tok_buf *x = a;
        a = b;
        b = x;
    }
    return tok_buf_put(out, a->p, a->n, err);
}

plm_status tok_normalize_pieces(const tok_tokenizer *t, tok_work *w, plm_error *err)
{
    if (t->n_norm == 0) return PLM_OK;
    size_t k = 0;
    for (size_t i = 0; i < w->cur.n; i++) {
        tok_piece pc = w->cur.p[i];
        if (pc.id < 0) {
            size_t at = w->arena.n;
            PLM_TRY(tok_normalize(t, w->arena.p + pc.off, pc.len, &w->arena, w, err));
            pc.off = at;
            pc.len = w->arena.n - at;
            if (pc.len == 0) continue;
        }
        w->cur.p[k++] = pc;
    }
    w->cur.n = k;
    return PLM_OK;
}

/* ---- splitting ---------------------------------------------------------------------------- */

/* Fills w->spans with the piece cut into matches (id 1) and the text between them (id 0),
 * covering all of it, like tokenizers' Pattern::find_matches. */
static plm_status find_spans(const tok_pre *pr, const char *s, size_t n, tok_work *w,
                             plm_error *err)
{
    w->spans.n = 0;
    size_t prev = 0, pos = 0;
    while (pos < n) {
        size_t e = 0;
        if (pr->literal) {
            if (pos + pr->literal_len <= n && memcmp(s + pos, pr->literal, pr->literal_len) == 0)
                e = pos + pr->literal_len;
        } else {
            e = tok_regex_match_at(pr->regex, s, n, pos);
        }
        if (!e) {
            uint32_t cp;
            pos += tok_utf8_decode(s + pos, &cp);
            continue;
        }
        if (prev < pos) PLM_TRY(tok_pieces_push(&w->spans, (tok_piece){prev, pos - prev, 0, 0}, err));
        PLM_TRY(tok_pieces_push(&w->spans, (tok_piece){pos, e - pos, 0, 1}, err));
        prev = pos = e;
    }
    if (prev < n) PLM_TRY(tok_pieces_push(&w->spans, (tok_piece){prev, n - prev, 0, 0}, err));
    if (pr->invert)
        for (size_t i = 0; i < w->spans.n; i++) w->spans.p[i].id ^= 1;
    return PLM_OK;
}

/* Applies a SplitDelimiterBehavior to w->spans (in place) and pushes the resulting pieces of
 * pc onto w->next. */
static plm_status emit_spans(tok_split_behavior bh, tok_piece pc, tok_work *w, plm_error *err)
{
    tok_piece *sp = w->spans.p;
    size_t n = w->spans.n, k = 0;
    int prev_match = 0;
    switch (bh) {
    case TOK_SPLIT_ISOLATED:
    case TOK_SPLIT_REMOVED:
        k = n;
        break;
    case TOK_SPLIT_CONTIGUOUS: /* consecutive spans of the same kind become one */
        for (size_t i = 0; i < n; i++) {
            int m = sp[i].id;
            if (m == prev_match && k > 0) sp[k - 1].len = sp[i].off + sp[i].len - sp[k - 1].off;
            else sp[k++] = (tok_piece){sp[i].off, sp[i].len, 0, 0};
            prev_match = m;
        }
        break;
    case TOK_SPLIT_MERGED_PREV: /* a delimiter joins the text before it */
        for (size_t i = 0; i < n; i++) {
            int m = sp[i].id;
            if (m && !prev_match && k > 0) sp[k - 1].len = sp[i].off + sp[i].len - sp[k - 1].off;
            else sp[k++] = (tok_piece){sp[i].off, sp[i].len, 0, 0};
            prev_match = m;
        }
        break;
    case TOK_SPLIT_MERGED_NEXT: { /* a delimiter joins the text after it: walk backwards */
        size_t j = n;
        for (size_t i = n; i-- > 0;) {
            int m = sp[i].id;
            if (m && !prev_match && j < n) {
                sp[j].len += sp[j].off - sp[i].off;
                sp[j].off = sp[i].off;
            } else {
                sp[--j] = (tok_piece){sp[i].off, sp[i].len, 0, 0};
            }
            prev_match = m;
        }
        memmove(sp, sp + j, (n - j) * sizeof *sp);
        k = n - j;
        break;
    }
    }
    for (size_t i = 0; i < k; i++) {
        if (sp[i].len == 0 || (bh == TOK_SPLIT_REMOVED && sp[i].id)) continue;
        tok_piece np = {pc.off + sp[i].off, sp[i].len, pc.orig + sp[i].off, -1};
        PLM_TRY(tok_pieces_push(&w->next, np, err));
    }
    return PLM_OK;
}

static plm_status split_piece(const tok_pre *pr, tok_piece pc, tok_work *w, plm_error *err)
{
    PLM_TRY(find_spans(pr, w->arena.p + pc.off, pc.len, w, err));
    return emit_spans(pr->behavior, pc, w, err);
}

/* ---- pre-tokenizer steps ------------------------------------------------------------------ */

static plm_status metaspace(const tok_pre *pr, tok_piece pc, tok_work *w, plm_error *err)
{
    /* Every space becomes the replacement; then the scheme may put one in front. */
    w->tmp.n = 0;
    PLM_TRY(tok_replace_all(w->arena.p + pc.off, pc.len, " ", 1, pr->repl, pr->repl_len, &w->tmp,
                        err));
    int starts = w->tmp.n >= pr->repl_len && memcmp(w->tmp.p, pr->repl, pr->repl_len) == 0;
    int prepend = !starts && (pr->prepend == TOK_PREPEND_ALWAYS ||
                              (pr->prepend == TOK_PREPEND_FIRST && pc.orig == 0));
    size_t at = w->arena.n;
    if (prepend) PLM_TRY(tok_buf_put(&w->arena, pr->repl, pr->repl_len, err));
    PLM_TRY(tok_buf_put(&w->arena, w->tmp.p, w->tmp.n, err));
    tok_piece np = {at, w->arena.n - at, pc.orig, -1};
    if (!pr->split) return tok_pieces_push(&w->next, np, err);
    tok_pre lit = *pr;
    lit.literal = (char *)pr->repl;
    lit.literal_len = pr->repl_len;
    lit.invert = 0;
    lit.behavior = TOK_SPLIT_MERGED_NEXT;
    return split_piece(&lit, np, w, err);
}

static plm_status byte_level(const tok_pre *pr, tok_piece pc, tok_work *w, plm_error *err)
{
    if (pr->add_prefix_space && w->arena.p[pc.off] != ' ') {
        /* Reserved up front so that copying from the arena into itself cannot move it. */
        size_t at = w->arena.n;
        PLM_TRY(tok_buf_reserve(&w->arena, pc.len + 1, err));
        w->arena.p[w->arena.n++] = ' ';
        PLM_TRY(tok_buf_put(&w->arena, w->arena.p + pc.off, pc.len, err));
        pc.off = at;
        pc.len++;
    }
    if (!pr->use_regex) return tok_pieces_push(&w->next, pc, err);
    tok_pre re = *pr;
    re.literal = NULL;
    re.regex = TOK_RE_GPT2;
    re.invert = 0;
    re.behavior = TOK_SPLIT_ISOLATED;
    return split_piece(&re, pc, w, err);
}

plm_status tok_pre_tokenize(const tok_tokenizer *t, tok_work *w, plm_error *err)
{
    for (size_t s = 0; s < t->n_pre; s++) {
        const tok_pre *pr = &t->pre[s];
        w->next.n = 0;
        for (size_t i = 0; i < w->cur.n; i++) {
            tok_piece pc = w->cur.p[i];
            if (pc.id >= 0) {
                PLM_TRY(tok_pieces_push(&w->next, pc, err));
                continue;
            }
            switch (pr->kind) {
            case TOK_PRE_METASPACE: PLM_TRY(metaspace(pr, pc, w, err)); break;
            case TOK_PRE_SPLIT: PLM_TRY(split_piece(pr, pc, w, err)); break;
            case TOK_PRE_BYTELEVEL: PLM_TRY(byte_level(pr, pc, w, err)); break;
            }
        }
        tok_pieces tmp = w->cur;
        w->cur = w->next;
        w->next = tmp;
    }
    return PLM_OK;
}
