/* Streaming detokenization: one id in, the newly completed text out, never half a character.
 *
 * The decoder chain has context rules (Strip removes a space only at the very start, Metaspace
 * drops its replacement only in the first token), so a token's text depends on what came
 * before it. The stream keeps a short window: the last token that produced output (context)
 * plus any newer ones; the new text is decode(window) minus decode(context), both taken with
 * the same start rules, so the difference is exactly what the new token adds. Decoding is done
 * in raw mode (bytes as the tokens spell them); the stream itself holds back an incomplete
 * UTF-8 tail until the following bytes complete it, and replaces what can never be completed
 * with U+FFFD, like String::from_utf8_lossy. For broken byte sequences this can differ from
 * tok_decode, which replaces a whole invalid <0xNN> run byte by byte as tokenizers does. */
#include "lm/tok_internal.h"

#include <stdlib.h>
#include <string.h>

/* Beyond this many silent tokens the window restarts at the newest one (the only effect is
 * that a start rule may apply again, which needs that many tokens that print nothing). */
#define WINDOW_MAX 64

struct tok_stream {
    const tok_tokenizer *t;
    int skip_special;
    tok_ids win;      /* context token (if any) followed by tokens not yet printed */
    size_t ctx_bytes; /* length of the window's decoded text already emitted */
    tok_buf raw, pend, out;
    tok_dec_work dw;
};

plm_status tok_stream_new(const tok_tokenizer *t, int skip_special, tok_stream **out,
                          plm_error *err)
{
    *out = NULL;
    if (!t) return plm_fail(err, PLM_E_ARG, "tok_stream_new: no tokenizer");
    tok_stream *s = calloc(1, sizeof *s);
    if (!s) return plm_fail(err, PLM_E_NOMEM, "tokenizer: out of memory");
    s->t = t;
    s->skip_special = skip_special;
    plm_status st = tok_buf_reserve(&s->out, 64, err);
    if (st == PLM_OK) st = tok_buf_put(&s->out, "", 0, err);
    if (st != PLM_OK) {
        tok_stream_free(s);
        return st;
    }
    *out = s;
    return PLM_OK;
}

void tok_stream_free(tok_stream *s)
{
    if (!s) return;
    tok_ids_free(&s->win);
    tok_buf_free(&s->raw);
    tok_buf_free(&s->pend);
    tok_buf_free(&s->out);
    tok_dec_work_free(&s->dw);
    free(s);
}

static plm_status decode_window(tok_stream *s, plm_error *err)
{
    s->raw.n = 0;
    return tok_decode_into(s->t, s->win.p, s->win.n, 0, 1, &s->raw, &s->dw, err);
}

/* Moves every complete character of pend to out, keeping an incomplete tail. */
static plm_status emit(tok_stream *s, int flush, plm_error *err)
{
    size_t tail = 0;
    PLM_TRY(tok_utf8_lossy(s->pend.p ? s->pend.p : "", s->pend.n, !flush, &s->out, &tail, err));
    if (tail) memmove(s->pend.p, s->pend.p + s->pend.n - tail, tail);
    s->pend.n = tail;
    return PLM_OK;
}

plm_status tok_stream_push(tok_stream *s, int32_t id, const char **piece, plm_error *err)
{
    const tok_tokenizer *t = s->t;
    s->out.n = 0;
    s->out.p[0] = '\0';
    *piece = s->out.p;
    /* What decode would skip never reaches the window. */
    if (id < 0 || (size_t)id >= t->n_ids || t->id_off[id] == UINT32_MAX) return PLM_OK;
    if (s->skip_special && t->id_special[id]) return PLM_OK;
    if (s->win.n >= WINDOW_MAX) {
        s->win.n = 0;
        s->ctx_bytes = 0;
    }
    PLM_TRY(tok_ids_push(&s->win, id, err));
    PLM_TRY(decode_window(s, err));
    size_t from = s->ctx_bytes < s->raw.n ? s->ctx_bytes : s->raw.n;
    PLM_TRY(tok_buf_put(&s->pend, s->raw.p + from, s->raw.n - from, err));
    if (s->raw.n > s->ctx_bytes) { /* this token printed: it becomes the context */
        s->win.p[0] = id;
        s->win.n = 1;
        PLM_TRY(decode_window(s, err));
    }
    s->ctx_bytes = s->raw.n;
    PLM_TRY(emit(s, 0, err));
    *piece = s->out.p;
    return PLM_OK;
}

plm_status tok_stream_finish(tok_stream *s, const char **piece, plm_error *err)
{
    s->out.n = 0;
    s->out.p[0] = '\0';
    *piece = s->out.p;
    PLM_TRY(emit(s, 1, err));
    s->win.n = 0;
    s->ctx_bytes = 0;
    *piece = s->out.p;
    return PLM_OK;
}
