/* Added tokens: found in the text before anything else runs, leftmost-longest, with the
 * single_word / lstrip / rstrip rules of tokenizers' AddedVocabulary::find_matches. */
#include "lm/tok_internal.h"

#include <stdlib.h>
#include <string.h>

static plm_status trie_node(tok_trie *tr, unsigned char byte, int32_t *out, plm_error *err)
{
    if (tr->n == tr->cap) {
        size_t cap = tr->cap ? tr->cap * 2 : 64;
        tok_trie_node *p = realloc(tr->nodes, cap * sizeof *p);
        if (!p) return plm_fail(err, PLM_E_NOMEM, "tokenizer: out of memory");
        tr->nodes = p;
        tr->cap = cap;
    }
    tok_trie_node *nd = &tr->nodes[tr->n];
    nd->child = nd->sibling = nd->token = -1;
    nd->byte = byte;
    *out = (int32_t)tr->n++;
    return PLM_OK;
}

static plm_status trie_insert(tok_trie *tr, const char *s, size_t len, int32_t token,
                              plm_error *err)
{
    const unsigned char *u = (const unsigned char *)s;
    int32_t node = tr->root[u[0]];
    if (node < 0) {
        PLM_TRY(trie_node(tr, u[0], &node, err));
        tr->root[u[0]] = node;
    }
    for (size_t i = 1; i < len; i++) {
        int32_t c = tr->nodes[node].child;
        while (c >= 0 && tr->nodes[c].byte != u[i]) c = tr->nodes[c].sibling;
        if (c < 0) { /* indices, not pointers: trie_node may move the array */
            PLM_TRY(trie_node(tr, u[i], &c, err));
            tr->nodes[c].sibling = tr->nodes[node].child;
            tr->nodes[node].child = c;
        }
        node = c;
    }
    /* Two tokens with the same pattern: the first one given keeps it. */
    if (tr->nodes[node].token < 0) tr->nodes[node].token = token;
    tr->empty = 0;
    return PLM_OK;
}

plm_status tok_trie_build(tok_trie *tr, const tok_tokenizer *t, int normalized, plm_error *err)
{
    memset(tr, 0, sizeof *tr);
    tr->empty = 1;
    for (int i = 0; i < 256; i++) tr->root[i] = -1;
    tok_work w = {0};
    tok_buf pat = {0};
    plm_status st = PLM_OK;
    /* Special tokens are matched before the other added tokens, as in refresh_added_tokens. */
    for (int pass = 0; pass < 2 && st == PLM_OK; pass++) {
        for (size_t i = 0; i < t->n_added && st == PLM_OK; i++) {
            const tok_added *a = &t->added[i];
            if (a->normalized != normalized || a->special != (pass == 0)) continue;
            pat.n = 0;
            if (normalized)
                st = tok_normalize(t, t->pool + a->off, a->len, &pat, &w, err);
            else
                st = tok_buf_put(&pat, t->pool + a->off, a->len, err);
            if (st == PLM_OK && pat.n) st = trie_insert(tr, pat.p, pat.n, (int32_t)i, err);
        }
    }
    tok_buf_free(&pat);
    tok_work_free(&w);
    return st;
}

void tok_trie_free(tok_trie *tr)
{
    free(tr->nodes);
    memset(tr, 0, sizeof *tr);
}

/* Longest token starting exactly at pos: its end, or 0. */
static size_t longest_at(const tok_trie *tr, const char *s, size_t n, size_t pos, int32_t *tok)
{
    const unsigned char *u = (const unsigned char *)s;
    int32_t node = tr->root[u[pos]];
    size_t best = 0;
    for (size_t i = pos; node >= 0;) {
        if (tr->nodes[node].token >= 0) {
            best = i + 1;
            *tok = tr->nodes[node].token;
        }
        if (++i >= n) break;
        node = tr->nodes[node].child;
        while (node >= 0 && tr->nodes[node].byte != u[i]) node = tr->nodes[node].sibling;
    }
    return best;
}

/* Start of the character that ends at `end` (valid UTF-8). */
static size_t char_before(const char *s, size_t end)
{
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    return i;
}

static unsigned flags_at(const char *s, size_t i)
{
    uint32_t cp;
    tok_utf8_decode(s + i, &cp);
    return tok_uc_flags(cp);
}

/* Splits one text piece; pushes the pieces (text and tokens) onto out. */
static plm_status split_piece(const tok_tokenizer *t, const tok_trie *tr, const char *s,
                              tok_piece pc, tok_pieces *out, plm_error *err)
{
    size_t n = pc.len, start_off = 0, pos = 0;
    while (pos < n) {
        int32_t k = -1;
        size_t ms = pos, me = 0;
        for (; ms < n; ms++)
            if (tr->root[(unsigned char)s[ms]] >= 0 && (me = longest_at(tr, s, n, ms, &k)))
                break;
        if (!me) break;
        pos = me;
        const tok_added *a = &t->added[k];
        if (a->single_word) {
            int word_before = ms > 0 && (flags_at(s, char_before(s, ms)) & TOK_UC_W);
            int word_after = me < n && (flags_at(s, me) & TOK_UC_W);
            if (word_before || word_after) continue;
        }
        size_t start = ms, stop = me;
        if (a->lstrip) {
            while (start > 0 && (flags_at(s, char_before(s, start)) & TOK_UC_S))
                start = char_before(s, start);
            if (start < start_off) start = start_off;
        }
        if (a->rstrip) {
            while (stop < n && (flags_at(s, stop) & TOK_UC_S)) {
                uint32_t cp;
                stop += tok_utf8_decode(s + stop, &cp);
            }
        }
        if (start_off < start) {
            tok_piece tp = {pc.off + start_off, start - start_off, pc.orig + start_off, -1};
            PLM_TRY(tok_pieces_push(out, tp, err));
        }
        tok_piece kp = {pc.off + start, stop - start, pc.orig + start, a->id};
        PLM_TRY(tok_pieces_push(out, kp, err));
        start_off = stop;
    }
    if (start_off < n) {
        tok_piece tp = {pc.off + start_off, n - start_off, pc.orig + start_off, -1};
        PLM_TRY(tok_pieces_push(out, tp, err));
    }
    return PLM_OK;
}

plm_status tok_split_added(const tok_tokenizer *t, const tok_trie *tr, tok_work *w,
                           plm_error *err)
{
    if (tr->empty) return PLM_OK;
    w->next.n = 0;
    for (size_t i = 0; i < w->cur.n; i++) {
        tok_piece pc = w->cur.p[i];
        if (pc.id >= 0)
            PLM_TRY(tok_pieces_push(&w->next, pc, err));
        else
            PLM_TRY(split_piece(t, tr, w->arena.p + pc.off, pc, &w->next, err));
    }
    tok_pieces tmp = w->cur;
    w->cur = w->next;
    w->next = tmp;
    return PLM_OK;
}
