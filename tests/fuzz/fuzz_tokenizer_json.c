/* Fuzz target: tokenizer.json itself (model, vocab, merges, added tokens, normalizer,
 * pre-tokenizer, post-processor and decoder configuration) through tok_load_buffer; a file that
 * loads must then encode a fixed text, decode the ids and stream them without failing. */
#include "lm/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

/* ASCII, a combining accent (NFC), CJK, an emoji (byte fallback), digits, spaces and a newline:
 * something for each stage to act on. */
static const char probe_text[] = "Hello  world! e\xcc\x81t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac "
                                 "\xf0\x9f\x98\x80 123\n<s>x";

static void stream_ids(const tok_tokenizer *t, const int32_t *ids, size_t n)
{
    tok_stream *s = NULL;
    plm_error err = {{0}};
    plm_status st = tok_stream_new(t, 0, &s, &err);
    fuzz_check_status(st, &err, "tok_stream_new");
    FUZZ_CHECK(st == PLM_OK, "tok_stream_new: %s", err.msg);
    const char *piece;
    for (size_t i = 0; i < n && st == PLM_OK; i++) {
        st = tok_stream_push(s, ids[i], &piece, &err);
        fuzz_check_status(st, &err, "tok_stream_push");
        if (st == PLM_OK) FUZZ_CHECK(piece != NULL, "tok_stream_push gave no piece");
    }
    if (st == PLM_OK) {
        st = tok_stream_finish(s, &piece, &err);
        fuzz_check_status(st, &err, "tok_stream_finish");
    }
    tok_stream_free(s);
}

int fuzz_tokenizer_json(const uint8_t *data, size_t size)
{
    tok_tokenizer *t = NULL;
    plm_error err = {{0}};
    plm_status st = tok_load_buffer((const char *)data, size, "fuzz/tokenizer.json", &t, &err);
    fuzz_check_status(st, &err, "tok_load_buffer");
    if (st != PLM_OK) {
        FUZZ_CHECK(t == NULL, "tok_load_buffer failed but returned a tokenizer");
        return 0;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    st = tok_encode(t, probe_text, sizeof probe_text - 1, 1, &ids, &n, &err);
    fuzz_check_status(st, &err, "tok_encode");
    if (st == PLM_OK) {
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(ids[i] >= 0 && (size_t)ids[i] < tok_vocab_size(t) &&
                       tok_token_str(t, ids[i]) != NULL,
                       "tok_encode gave id %d, not a token of the %zu", (int)ids[i],
                       tok_vocab_size(t));
        for (int skip = 0; skip < 2; skip++) {
            char *text = NULL;
            st = tok_decode(t, ids, n, skip, &text, &err);
            fuzz_check_status(st, &err, "tok_decode");
            free(text);
        }
        stream_ids(t, ids, n);
        free(ids);
    }
    (void)tok_token_id(t, "<s>");
    (void)tok_token_str(t, -1);
    (void)tok_is_special(t, 0);
    (void)tok_bos_id(t);
    (void)tok_eos_id(t);
    tok_free(t);
    return 0;
}

#ifndef PLM_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_tokenizer_json(data, size);
}
#endif
