/* Decoding: ids -> token strings -> the file's decoder chain -> text. Each decoder maps a list
 * of token strings to a new list, as tokenizers' Decoder::decode_chain does, because some of
 * them act per token (Strip, Metaspace's first-token rule) and only Fuse joins. */
#include "lm/tok_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct dlist { tok_buf buf; tok_pieces toks; } dlist;

static plm_status add_tok(dlist *d, const char *s, size_t n, plm_error *err)
{
    size_t at = d->buf.n;
    PLM_TRY(tok_buf_put(&d->buf, s, n, err));
    return tok_pieces_push(&d->toks, (tok_piece){at, n, 0, 0}, err);
}

/* Appends to the last token of d (which the caller has just added). */
static plm_status extend_tok(dlist *d, const char *s, size_t n, plm_error *err)
{
    PLM_TRY(tok_buf_put(&d->buf, s, n, err));
    d->toks.p[d->toks.n - 1].len += n;
    return PLM_OK;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "<0xNN>" -> NN; -1 otherwise. Rust's u8::from_str_radix also takes "+N". */
static int byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = s[3] == '+' ? 0 : hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static plm_status flush_bytes(dlist *o, tok_buf *bytes, int raw, plm_error *err)
{
    if (bytes->n == 0) return PLM_OK;
    if (raw || tok_utf8_check(bytes->p, bytes->n) == bytes->n) {
        PLM_TRY(add_tok(o, bytes->p, bytes->n, err));
    } else {
        /* tokenizers gives one U+FFFD per byte of a run that is not valid UTF-8 as a whole */
        for (size_t i = 0; i < bytes->n; i++) PLM_TRY(add_tok(o, "\xEF\xBF\xBD", 3, err));
    }
    bytes->n = 0;
    return PLM_OK;
}

static plm_status byte_fallback(const dlist *in, dlist *o, tok_buf *bytes, int raw,
                                plm_error *err)
{
    bytes->n = 0;
    for (size_t i = 0; i < in->toks.n; i++) {
        const char *s = in->buf.p + in->toks.p[i].off;
        size_t n = in->toks.p[i].len;
        int b = byte_token(s, n);
        if (b >= 0) {
            char c = (char)b;
            PLM_TRY(tok_buf_put(bytes, &c, 1, err));
            continue;
        }
        PLM_TRY(flush_bytes(o, bytes, raw, err));
        PLM_TRY(add_tok(o, s, n, err));
    }
    return flush_bytes(o, bytes, raw, err);
}

/* ByteLevel: every token's characters back to the bytes they stand for (a token with a
 * character outside the byte alphabet passes through as its UTF-8), then the whole as UTF-8
 * with broken sequences replaced, like String::from_utf8_lossy. */
static plm_status byte_level(const tok_tokenizer *t, const dlist *in, dlist *o, tok_buf *bytes,
                             int raw, plm_error *err)
{
    bytes->n = 0;
    for (size_t i = 0; i < in->toks.n; i++) {
        const char *s = in->buf.p + in->toks.p[i].off;
        size_t n = in->toks.p[i].len, at = bytes->n, k = 0;
        int all = 1;
        while (k < n) {
            uint32_t cp;
            k += tok_utf8_decode(s + k, &cp);
            if (cp >= 324 || t->char_byte[cp] < 0) {
                all = 0;
                break;
            }
            char c = (char)t->char_byte[cp];
            PLM_TRY(tok_buf_put(bytes, &c, 1, err));
        }
        if (!all) {
            bytes->n = at;
            PLM_TRY(tok_buf_put(bytes, s, n, err));
        }
    }
    PLM_TRY(add_tok(o, "", 0, err));
    if (raw) return extend_tok(o, bytes->p ? bytes->p : "", bytes->n, err);
    size_t before = o->buf.n;
    PLM_TRY(tok_utf8_lossy(bytes->p ? bytes->p : "", bytes->n, 0, &o->buf, NULL, err));
    o->toks.p[o->toks.n - 1].len += o->buf.n - before;
    return PLM_OK;
}

static plm_status strip(const tok_dec *d, const char *s, size_t n, dlist *o, plm_error *err)
{
    size_t a = 0, b = n, cl = d->a_len;
    for (size_t i = 0; i < d->start && a + cl <= b && memcmp(s + a, d->a, cl) == 0; i++) a += cl;
    size_t end = n;
    for (size_t i = 0; i < d->stop && end >= cl && memcmp(s + end - cl, d->a, cl) == 0; i++)
        end -= cl;
    b = end < a ? a : end; /* where tokenizers would panic on an inverted range */
    return add_tok(o, s + a, b - a, err);
}

static plm_status apply(const tok_tokenizer *t, const tok_dec *d, const dlist *in, dlist *o,
                        tok_buf *bytes, int raw, plm_error *err)
{
    if (d->kind == TOK_DEC_BYTE_FALLBACK) return byte_fallback(in, o, bytes, raw, err);
    if (d->kind == TOK_DEC_BYTE_LEVEL) return byte_level(t, in, o, bytes, raw, err);
    if (d->kind == TOK_DEC_FUSE) {
        PLM_TRY(add_tok(o, "", 0, err));
        for (size_t i = 0; i < in->toks.n; i++)
            PLM_TRY(extend_tok(o, in->buf.p + in->toks.p[i].off, in->toks.p[i].len, err));
        return PLM_OK;
    }
    for (size_t i = 0; i < in->toks.n; i++) {
        const char *s = in->buf.p + in->toks.p[i].off;
        size_t n = in->toks.p[i].len;
        if (d->kind == TOK_DEC_STRIP) {
            PLM_TRY(strip(d, s, n, o, err));
            continue;
        }
        PLM_TRY(add_tok(o, "", 0, err));
        size_t before = o->buf.n;
        if (d->kind == TOK_DEC_REPLACE) {
            PLM_TRY(tok_replace_all(s, n, d->a, d->a_len, d->b, d->b_len, &o->buf, err));
        } else { /* Metaspace: the replacement becomes a space, or vanishes in the first token */
            int drop = i == 0 && d->prepend_first;
            PLM_TRY(tok_replace_all(s, n, d->a, d->a_len, " ", drop ? 0 : 1, &o->buf, err));
        }
        o->toks.p[o->toks.n - 1].len = o->buf.n - before;
    }
    return PLM_OK;
}

void tok_dec_work_free(tok_dec_work *dw)
{
    for (int i = 0; i < 2; i++) {
        tok_buf_free(&dw->buf[i]);
        free(dw->toks[i].p);
    }
    tok_buf_free(&dw->bytes);
    memset(dw, 0, sizeof *dw);
}

plm_status tok_decode_into(const tok_tokenizer *t, const int32_t *ids, size_t n,
                           int skip_special, int raw, tok_buf *out, tok_dec_work *dw,
                           plm_error *err)
{
    tok_dec_work local = {0};
    if (!dw) dw = &local;
    dlist l[2];
    for (int i = 0; i < 2; i++) {
        l[i].buf = dw->buf[i];
        l[i].toks = dw->toks[i];
        l[i].buf.n = 0;
        l[i].toks.n = 0;
    }
    tok_buf bytes = dw->bytes;
    plm_status st = PLM_OK;
    /* Ids with no token are skipped, as tokenizers' decode does. */
    for (size_t i = 0; i < n && st == PLM_OK; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= t->n_ids || t->id_off[id] == UINT32_MAX) continue;
        if (skip_special && t->id_special[id]) continue;
        st = add_tok(&l[0], t->pool + t->id_off[id], t->id_len[id], err);
    }
    int cur = 0;
    for (size_t k = 0; k < t->n_dec && st == PLM_OK; k++) {
        l[!cur].buf.n = 0;
        l[!cur].toks.n = 0;
        st = apply(t, &t->dec[k], &l[cur], &l[!cur], &bytes, raw, err);
        cur = !cur;
    }
    for (size_t i = 0; i < l[cur].toks.n && st == PLM_OK; i++) {
        if (!t->has_decoder && i > 0) st = tok_buf_put(out, " ", 1, err);
        if (st == PLM_OK)
            st = tok_buf_put(out, l[cur].buf.p + l[cur].toks.p[i].off, l[cur].toks.p[i].len, err);
    }
    if (st == PLM_OK) st = tok_buf_put(out, "", 0, err); /* NUL-terminated even when empty */
    for (int i = 0; i < 2; i++) {
        dw->buf[i] = l[i].buf;
        dw->toks[i] = l[i].toks;
    }
    dw->bytes = bytes;
    tok_dec_work_free(&local);
    return st;
}
