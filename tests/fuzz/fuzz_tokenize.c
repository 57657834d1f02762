/* Fuzz target: encoding and decoding with real tokenizers (the SentencePiece-style metaspace
 * one with byte fallback, and a ByteLevel one). The input is encoded as text (invalid UTF-8 must
 * be refused with a message), the ids decoded whole and streamed; then the same bytes, read as
 * int32 ids (negative and out of range included), are decoded and streamed. */
#include "lm/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

#ifndef PLM_SOURCE_DIR
#error "PLM_SOURCE_DIR must name the source tree (for the tokenizer fixtures)"
#endif

static const char *const tok_paths[] = {
    PLM_SOURCE_DIR "/tests/fixtures/tokenizer/metaspace/tokenizer.json",
    PLM_SOURCE_DIR "/tests/fixtures/tokenizer/bytelevel/tokenizer.json",
};
#define N_TOK (sizeof tok_paths / sizeof tok_paths[0])

/* The one piece of global state, which STYLE.md otherwise forbids: loading a 64 KB tokenizer
 * costs far more than encoding a fuzz input, so each is loaded at the first call and kept, read
 * only, for the process's life (still reachable at exit, so LeakSanitizer does not count it). */
static tok_tokenizer *toks[N_TOK];

static const tok_tokenizer *get_tok(size_t i)
{
    if (!toks[i]) {
        plm_error err = {{0}};
        plm_status st = tok_load_file(tok_paths[i], &toks[i], &err);
        FUZZ_CHECK(st == PLM_OK, "cannot load the fixture %s: %s", tok_paths[i], err.msg);
    }
    return toks[i];
}

/* decode must give NUL-terminated valid UTF-8 (invalid byte runs become U+FFFD). */
static void decode(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip)
{
    char *text = NULL;
    plm_error err = {{0}};
    plm_status st = tok_decode(t, ids, n, skip, &text, &err);
    fuzz_check_status(st, &err, "tok_decode");
    FUZZ_CHECK(st == PLM_OK, "tok_decode failed: %s", err.msg);
    size_t len = strlen(text);
    FUZZ_CHECK(fuzz_utf8_valid((const uint8_t *)text, len) == len,
               "tok_decode gave invalid UTF-8 at byte %zu", fuzz_utf8_valid((const uint8_t *)text,
               len));
    free(text);
}

/* Streamed pieces are whole characters: each one valid UTF-8 by itself. */
static void stream(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip)
{
    tok_stream *s = NULL;
    plm_error err = {{0}};
    plm_status st = tok_stream_new(t, skip, &s, &err);
    FUZZ_CHECK(st == PLM_OK, "tok_stream_new: %s", err.msg);
    const char *piece;
    for (size_t i = 0; i <= n && st == PLM_OK; i++) {
        st = i < n ? tok_stream_push(s, ids[i], &piece, &err) : tok_stream_finish(s, &piece, &err);
        fuzz_check_status(st, &err, i < n ? "tok_stream_push" : "tok_stream_finish");
        if (st != PLM_OK) break;
        size_t len = strlen(piece);
        FUZZ_CHECK(fuzz_utf8_valid((const uint8_t *)piece, len) == len,
                   "the stream gave a piece that is not whole UTF-8 after id %zu", i);
    }
    tok_stream_free(s);
}

int fuzz_tokenize(const uint8_t *data, size_t size)
{
    size_t n_raw = size / sizeof(int32_t);
    int32_t *raw = malloc((n_raw ? n_raw : 1) * sizeof *raw);
    FUZZ_CHECK(raw != NULL, "out of memory");
    if (n_raw) memcpy(raw, data, n_raw * sizeof *raw);
    int valid = fuzz_utf8_valid(data, size) == size;
    for (size_t k = 0; k < N_TOK; k++) {
        const tok_tokenizer *t = get_tok(k);
        int32_t *ids = NULL;
        size_t n = 0;
        plm_error err = {{0}};
        plm_status st = tok_encode(t, (const char *)data, size, (int)(size & 1), &ids, &n, &err);
        fuzz_check_status(st, &err, "tok_encode");
        FUZZ_CHECK(valid ? st == PLM_OK : st == PLM_E_FORMAT,
                   "tok_encode of %s UTF-8 returned %s: %s", valid ? "valid" : "invalid",
                   plm_status_str(st), err.msg);
        if (st == PLM_OK) {
            for (size_t i = 0; i < n; i++)
                FUZZ_CHECK(tok_token_str(t, ids[i]) != NULL, "tok_encode gave id %d, not a "
                           "token", (int)ids[i]);
            decode(t, ids, n, 0);
            decode(t, ids, n, 1);
            stream(t, ids, n, 0);
            free(ids);
        }
        decode(t, raw, n_raw, (int)(size & 1));
        stream(t, raw, n_raw, (int)(size & 1));
    }
    free(raw);
    return 0;
}

#ifndef PLM_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_tokenize(data, size);
}
#endif
