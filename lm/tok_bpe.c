/* BPE over one pre-tokenized word, the way tokenizers' Word::merge_all does it: a min-heap of
 * candidate merges keyed by (rank, position); a popped entry is applied only if the pair at
 * that position still merges to the same token, and each merge pushes the two new pairs it
 * forms with its neighbours. O(n log n) per word; long unsplit inputs (Llama's legacy files
 * hand the whole text to BPE as one word) stay fast. */
#include "lm/tok_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct tok_sym sym;
typedef struct tok_merge merge;

static int before(const merge *a, const merge *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(merge *h, size_t *n, merge m)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&m, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = m;
}

static merge heap_pop(merge *h, size_t *n)
{
    merge top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && before(&h[c + 1], &h[c])) c++;
        if (!before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static plm_status reserve(tok_work *w, size_t n, plm_error *err)
{
    /* Every merge pushes at most two entries and removes a symbol: 3n bounds the heap. */
    if (n > SIZE_MAX / (3 * sizeof(merge)))
        return plm_fail(err, PLM_E_LIMIT, "tokenizer: word of %zu symbols is too long", n);
    if (n > w->sym_cap) {
        sym *s = realloc(w->sym, n * sizeof *s);
        if (!s) return plm_fail(err, PLM_E_NOMEM, "tokenizer: out of memory");
        w->sym = s;
        w->sym_cap = n;
    }
    if (3 * n > w->heap_cap) {
        merge *h = realloc(w->heap, 3 * n * sizeof *h);
        if (!h) return plm_fail(err, PLM_E_NOMEM, "tokenizer: out of memory");
        w->heap = h;
        w->heap_cap = 3 * n;
    }
    return PLM_OK;
}

static void add_sym(tok_work *w, size_t *n, int32_t id)
{
    sym *s = &w->sym[*n];
    s->id = id;
    s->prev = (int32_t)*n - 1;
    s->next = (int32_t)*n + 1;
    s->alive = 1;
    (*n)++;
}

/* A character (or, byte-level, the character standing for a byte) missing from the
 * vocabulary: its <0xNN> byte tokens if byte_fallback has them all, else <unk> (consecutive
 * unknowns fused into one when fuse_unk). Without either the character is dropped, as
 * tokenizers does. */
static void add_unknown(const tok_tokenizer *t, tok_work *w, size_t *n, const char *c,
                        size_t cl, int *pending_unk)
{
    if (t->byte_fallback) {
        int all = 1;
        for (size_t i = 0; i < cl; i++) all &= t->byte_ids[(unsigned char)c[i]] >= 0;
        if (all) {
            for (size_t i = 0; i < cl; i++) add_sym(w, n, t->byte_ids[(unsigned char)c[i]]);
            return;
        }
    }
    if (t->unk_id < 0) return;
    if (*pending_unk && t->fuse_unk) return;
    add_sym(w, n, t->unk_id);
    *pending_unk = 1;
}

/* Splits the word into its initial symbols (characters; bytes for byte-level models). */
static size_t initial_symbols(const tok_tokenizer *t, const char *s, size_t len, tok_work *w)
{
    size_t n = 0;
    int pending_unk = 0;
    if (t->byte_level) {
        for (size_t i = 0; i < len; i++) {
            unsigned b = (unsigned char)s[i];
            if (t->byte_unit_ids[b] >= 0) {
                add_sym(w, &n, t->byte_unit_ids[b]);
                pending_unk = 0;
            } else {
                char u[4];
                size_t ul = tok_utf8_encode(t->byte_char[b], u);
                add_unknown(t, w, &n, u, ul, &pending_unk);
            }
        }
        return n;
    }
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        size_t cl = c < 0x80 ? 1 : tok_utf8_decode(s + i, &cp);
        int32_t id = c < 0x80 ? t->ascii_ids[c] : tok_strmap_get(&t->vocab, s + i, cl);
        if (id >= 0) {
            add_sym(w, &n, id);
            pending_unk = 0;
        } else {
            add_unknown(t, w, &n, s + i, cl, &pending_unk);
        }
        i += cl;
    }
    return n;
}

static plm_status whole_word(const tok_tokenizer *t, const char *s, size_t len, tok_work *w,
                             int32_t *id, plm_error *err)
{
    *id = -1;
    if (!t->byte_level) {
        *id = tok_strmap_get(&t->vocab, s, len);
        return PLM_OK;
    }
    w->tmp.n = 0;
    for (size_t i = 0; i < len; i++) {
        char u[4];
        PLM_TRY(tok_buf_put(&w->tmp, u, tok_utf8_encode(t->byte_char[(unsigned char)s[i]], u),
                            err));
    }
    *id = tok_strmap_get(&t->vocab, w->tmp.p, w->tmp.n);
    return PLM_OK;
}

plm_status tok_bpe_word(const tok_tokenizer *t, const char *s, size_t len, tok_work *w,
                        tok_ids *out, plm_error *err)
{
    if (len == 0) return PLM_OK;
    if (t->ignore_merges) { /* a word that is a token is taken whole, merges or not */
        int32_t id;
        PLM_TRY(whole_word(t, s, len, w, &id, err));
        if (id >= 0) return tok_ids_push(out, id, err);
    }
    /* Byte fallback can turn one byte into one symbol: len bounds the symbol count. */
    PLM_TRY(reserve(w, len, err));
    size_t n = initial_symbols(t, s, len, w);
    if (n == 0) return PLM_OK;
    w->sym[n - 1].next = -1;
    merge *h = w->heap;
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        merge m = {0, (int32_t)i, 0};
        if (tok_mergemap_get(&t->merges, w->sym[i].id, w->sym[i + 1].id, &m.rank, &m.merged))
            heap_push(h, &hn, m);
    }
    while (hn > 0) {
        merge top = heap_pop(h, &hn);
        sym *cur = &w->sym[top.pos];
        if (!cur->alive || cur->next < 0) continue;
        sym *right = &w->sym[cur->next];
        uint32_t rank;
        int32_t merged;
        if (!tok_mergemap_get(&t->merges, cur->id, right->id, &rank, &merged) ||
            merged != top.merged)
            continue; /* stale: a neighbour changed since this entry was pushed */
        cur->id = top.merged;
        right->alive = 0;
        cur->next = right->next;
        if (right->next >= 0) w->sym[right->next].prev = top.pos;
        if (cur->prev >= 0) {
            merge m = {0, cur->prev, 0};
            if (tok_mergemap_get(&t->merges, w->sym[cur->prev].id, cur->id, &m.rank, &m.merged))
                heap_push(h, &hn, m);
        }
        if (cur->next >= 0) {
            merge m = {0, top.pos, 0};
            if (tok_mergemap_get(&t->merges, cur->id, w->sym[cur->next].id, &m.rank, &m.merged))
                heap_push(h, &hn, m);
        }
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) PLM_TRY(tok_ids_push(out, w->sym[i].id, err));
    return PLM_OK;
}
