/* Encoding (the pipeline in order) and the public plm_tokenizer_* wrappers. */
#include "lm/tok_internal.h"

#include <stdlib.h>
#include <string.h>

static plm_status encode(const tok_tokenizer *t, const char *text, size_t len, int add_special,
                         tok_work *w, tok_ids *out, plm_error *err)
{
    if (add_special)
        for (size_t i = 0; i < t->n_tpl_pre; i++) PLM_TRY(tok_ids_push(out, t->tpl_pre[i], err));
    if (len) {
        PLM_TRY(tok_buf_put(&w->arena, text, len, err));
        PLM_TRY(tok_pieces_push(&w->cur, (tok_piece){0, len, 0, -1}, err));
    }
    /* Added tokens are found in the raw text, then (for "normalized" ones) in each normalized
     * piece; only the text between them is pre-tokenized and goes through BPE. */
    PLM_TRY(tok_split_added(t, &t->trie_raw, w, err));
    PLM_TRY(tok_normalize_pieces(t, w, err));
    PLM_TRY(tok_split_added(t, &t->trie_norm, w, err));
    PLM_TRY(tok_pre_tokenize(t, w, err));
    for (size_t i = 0; i < w->cur.n; i++) {
        tok_piece pc = w->cur.p[i];
        if (pc.id >= 0)
            PLM_TRY(tok_ids_push(out, pc.id, err));
        else
            PLM_TRY(tok_bpe_word(t, w->arena.p + pc.off, pc.len, w, out, err));
    }
    if (add_special)
        for (size_t i = 0; i < t->n_tpl_post; i++) PLM_TRY(tok_ids_push(out, t->tpl_post[i], err));
    return PLM_OK;
}

plm_status tok_encode(const tok_tokenizer *t, const char *text, size_t len, int add_special,
                      int32_t **ids, size_t *n_ids, plm_error *err)
{
    *ids = NULL;
    *n_ids = 0;
    if (!t || (!text && len)) return plm_fail(err, PLM_E_ARG, "tok_encode: no tokenizer or text");
    if (len > TOK_MAX_TEXT_BYTES)
        return plm_fail(err, PLM_E_LIMIT, "text: %zu bytes is over the %zu-byte limit", len,
                        TOK_MAX_TEXT_BYTES);
    size_t bad = tok_utf8_check(text, len);
    if (bad < len)
        return plm_fail(err, PLM_E_FORMAT, "text: invalid UTF-8 at byte %zu (0x%02X)", bad,
                        (unsigned char)text[bad]);
    tok_work w = {0};
    tok_ids out = {0};
    plm_status st = encode(t, text, len, add_special, &w, &out, err);
    if (st == PLM_OK && !out.p) { /* an empty result is still a freeable array, never NULL */
        st = tok_ids_push(&out, 0, err);
        out.n = 0;
    }
    tok_work_free(&w);
    if (st != PLM_OK) {
        tok_ids_free(&out);
        return st;
    }
    *ids = out.p;
    *n_ids = out.n;
    return PLM_OK;
}

plm_status tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                      char **text, plm_error *err)
{
    *text = NULL;
    if (!t || (!ids && n)) return plm_fail(err, PLM_E_ARG, "tok_decode: no tokenizer or ids");
    tok_buf out = {0};
    plm_status st = tok_decode_into(t, ids, n, skip_special, 0, &out, NULL, err);
    if (st != PLM_OK) {
        tok_buf_free(&out);
        return st;
    }
    *text = out.p;
    return PLM_OK;
}

plm_status plm_tokenizer_load(const char *path, plm_tokenizer **out, plm_error *err)
{
    if (!out) return plm_fail(err, PLM_E_ARG, "plm_tokenizer_load: out is NULL");
    *out = NULL;
    if (!path) return plm_fail(err, PLM_E_ARG, "plm_tokenizer_load: path is NULL");
    return tok_load_file(path, out, err);
}

void plm_tokenizer_free(plm_tokenizer *tok) { tok_free(tok); }

plm_status plm_tokenize(const plm_tokenizer *tok, const char *text, size_t len, int add_special,
                        int32_t **ids, size_t *n_ids, plm_error *err)
{
    if (!ids || !n_ids) return plm_fail(err, PLM_E_ARG, "plm_tokenize: ids or n_ids is NULL");
    return tok_encode(tok, text, len, add_special, ids, n_ids, err);
}

plm_status plm_detokenize(const plm_tokenizer *tok, const int32_t *ids, size_t n_ids,
                          int skip_special, char **text, plm_error *err)
{
    if (!text) return plm_fail(err, PLM_E_ARG, "plm_detokenize: text is NULL");
    return tok_decode(tok, ids, n_ids, skip_special, text, err);
}

size_t plm_tokenizer_vocab_size(const plm_tokenizer *tok) { return tok ? tok_vocab_size(tok) : 0; }
