/* Tokenizer tests: small hand-made tokenizer.json files whose ids can be worked out by hand,
 * and the recorded Hugging Face `tokenizers` outputs (tests/ref/tokenizer_ref.py) for the
 * corpus over five tokenizers (the real Llama-2 file when ../shared has it). */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lm/tok_internal.h"
#include "lm/tokenizer.h"

#define FIX PLM_SOURCE_DIR "/tests/fixtures/tokenizer/"
#define LLAMA2 PLM_SOURCE_DIR "/../shared/tokenizers/llama2/tokenizer.json"

#define MODEL(vocab, merges) "{\"model\": {\"type\": \"BPE\", \"vocab\": " vocab ", \"merges\": " merges "}"

/* ---- helpers ------------------------------------------------------------------------------ */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

static tok_tokenizer *load(const char *path)
{
    plm_error err;
    tok_tokenizer *t = NULL;
    plm_status st = tok_load_file(path, &t, &err);
    cr_assert_eq(st, PLM_OK, "loading %s: %s", path, err.msg);
    return t;
}

/* Loads a fixture with one substring replaced, for variants of the same file. */
static tok_tokenizer *load_variant(const char *name, const char *from, const char *to)
{
    size_t len;
    char *src = slurp(name, &len);
    char *at = strstr(src, from);
    cr_assert_not_null(at, "%s has no \"%s\"", name, from);
    size_t fl = strlen(from), tl = strlen(to);
    char *buf = malloc(len - fl + tl + 1);
    memcpy(buf, src, (size_t)(at - src));
    memcpy(buf + (at - src), to, tl);
    strcpy(buf + (at - src) + tl, at + fl);
    plm_error err;
    tok_tokenizer *t = NULL;
    plm_status st = tok_load_buffer(buf, strlen(buf), "variant.json", &t, &err);
    cr_assert_eq(st, PLM_OK, "loading variant of %s: %s", name, err.msg);
    free(buf);
    free(src);
    return t;
}

static void expect_ids(const tok_tokenizer *t, const char *text, int add_special,
                       const int32_t *want, size_t n_want)
{
    int32_t *ids;
    size_t n;
    plm_error err;
    cr_assert_eq(tok_encode(t, text, strlen(text), add_special, &ids, &n, &err), PLM_OK, "%s",
                 err.msg);
    char got[512] = "", exp[512] = "";
    for (size_t i = 0; i < n && strlen(got) < 480; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", (int)ids[i]);
    for (size_t i = 0; i < n_want; i++)
        snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%d ", (int)want[i]);
    cr_expect_str_eq(got, exp, "encoding \"%s\": got [%s], want [%s]", text, got, exp);
    free(ids);
}
#define EXPECT_IDS(t, text, special, ...)                                                          \
    do {                                                                                           \
        const int32_t want_[] = {__VA_ARGS__};                                                     \
        expect_ids(t, text, special, want_, sizeof want_ / sizeof want_[0]);                       \
    } while (0)

static void expect_text(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip,
                        const char *want)
{
    char *text;
    plm_error err;
    cr_assert_eq(tok_decode(t, ids, n, skip, &text, &err), PLM_OK, "%s", err.msg);
    cr_expect_str_eq(text, want);
    free(text);
}
#define EXPECT_TEXT(t, skip, want, ...)                                                            \
    do {                                                                                           \
        const int32_t ids_[] = {__VA_ARGS__};                                                      \
        expect_text(t, ids_, sizeof ids_ / sizeof ids_[0], skip, want);                            \
    } while (0)

/* Concatenation of the stream's pieces for ids; checks every piece is whole UTF-8. */
static char *stream_all(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip)
{
    tok_stream *s;
    plm_error err;
    cr_assert_eq(tok_stream_new(t, skip, &s, &err), PLM_OK, "%s", err.msg);
    tok_buf all = {0};
    tok_buf_put(&all, "", 0, NULL);
    for (size_t i = 0; i <= n; i++) {
        const char *piece;
        plm_status st = i < n ? tok_stream_push(s, ids[i], &piece, &err)
                              : tok_stream_finish(s, &piece, &err);
        cr_assert_eq(st, PLM_OK, "%s", err.msg);
        size_t pl = strlen(piece);
        cr_assert_eq(tok_utf8_check(piece, pl), pl, "stream piece %zu is not whole UTF-8", i);
        tok_buf_put(&all, piece, pl, NULL);
    }
    tok_stream_free(s);
    return all.p;
}

static void expect_load_error(const char *json, plm_status want, const char *msg)
{
    plm_error err = {{0}};
    tok_tokenizer *t = (tok_tokenizer *)1;
    plm_status st = tok_load_buffer(json, strlen(json), "tokenizer.json", &t, &err);
    cr_expect_eq(st, want, "status %d for %s (message: %s)", st, json, err.msg);
    cr_expect_null(t);
    cr_expect_str_eq(err.msg, msg);
}

static size_t unhex(const char *h, char *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    out[n] = '\0';
    return n;
}

static int32_t *json_ids(const cJSON *arr, size_t *n)
{
    *n = (size_t)cJSON_GetArraySize(arr);
    int32_t *v = malloc((*n + 1) * sizeof *v);
    size_t i = 0;
    for (const cJSON *e = arr->child; e; e = e->next) v[i++] = (int32_t)e->valuedouble;
    return v;
}

static int same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

/* Compares against every line recorded by tests/ref/tokenizer_ref.py: ids with and without
 * special tokens, the three decodes, and, where Hugging Face round-trips the text, that we do
 * too, by tok_decode and by streaming. Then the random-id decode cases. */
static void check_reference(const char *tok_path, const char *name)
{
    tok_tokenizer *t = load(tok_path);
    char path[1024];
    snprintf(path, sizeof path, FIX "%s_ids.jsonl", name);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s", path);
    char *line = NULL, *text = malloc(1 << 20), *want = malloc(1 << 20);
    size_t cap = 0, lines = 0, enc_bad = 0, dec_bad = 0, rt = 0, rt_bad = 0;
    char first[600] = "";
    while (getline(&line, &cap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        cr_assert_not_null(j);
        int idx = (int)cJSON_GetObjectItem(j, "i")->valuedouble;
        size_t tl = unhex(cJSON_GetObjectItem(j, "text_hex")->valuestring, text);
        const char *keys[2] = {"ids_plain", "ids"};
        int32_t *ref[2];
        size_t nref[2];
        for (int k = 0; k < 2; k++) {
            ref[k] = json_ids(cJSON_GetObjectItem(j, keys[k]), &nref[k]);
            int32_t *ids;
            size_t n;
            plm_error err;
            cr_assert_eq(tok_encode(t, text, tl, k, &ids, &n, &err), PLM_OK, "%s", err.msg);
            if (!same_ids(ids, n, ref[k], nref[k]) && enc_bad++ == 0)
                snprintf(first, sizeof first, "corpus line %d (%s): %zu ids, want %zu", idx,
                         keys[k], n, nref[k]);
            free(ids);
        }
        const char *dk[3] = {"dec_hex", "dec_skip_hex", "dec_plain_hex"};
        for (int k = 0; k < 3; k++) {
            tok_buf out = {0};
            plm_error err;
            size_t wl = unhex(cJSON_GetObjectItem(j, dk[k])->valuestring, want);
            const int32_t *ids = k == 2 ? ref[0] : ref[1];
            size_t n = k == 2 ? nref[0] : nref[1];
            cr_assert_eq(tok_decode_into(t, ids, n, k == 1, 0, &out, NULL, &err), PLM_OK);
            if ((out.n != wl || memcmp(out.p, want, wl) != 0) && dec_bad++ == 0 && !*first)
                snprintf(first, sizeof first, "corpus line %d: %s differs", idx, dk[k]);
            tok_buf_free(&out);
        }
        if (cJSON_IsTrue(cJSON_GetObjectItem(j, "roundtrip")) && strlen(text) == tl) {
            rt++;
            char *s = stream_all(t, ref[0], nref[0], 0);
            if (strcmp(s, text) != 0 && rt_bad++ == 0 && !*first)
                snprintf(first, sizeof first, "corpus line %d: streaming gives \"%.200s\"", idx,
                         s);
            free(s);
        }
        free(ref[0]);
        free(ref[1]);
        cJSON_Delete(j);
        lines++;
    }
    fclose(f);
    cr_expect_geq(lines, 300, "%s has %zu lines", path, lines);
    cr_expect_eq(enc_bad, 0, "%s: %zu of %zu encodings differ; first: %s", name, enc_bad,
                 2 * lines, first);
    cr_expect_eq(dec_bad, 0, "%s: %zu of %zu decodes differ; first: %s", name, dec_bad,
                 3 * lines, first);
    cr_expect_eq(rt_bad, 0, "%s: %zu of %zu round trips differ when streamed; first: %s", name,
                 rt_bad, rt, first);

    snprintf(path, sizeof path, FIX "%s_decode.jsonl", name);
    f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s", path);
    size_t cases = 0, case_bad = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        size_t n;
        int32_t *ids = json_ids(cJSON_GetObjectItem(j, "ids"), &n);
        for (int k = 0; k < 2; k++) {
            tok_buf out = {0};
            size_t wl = unhex(cJSON_GetObjectItem(j, k ? "dec_skip_hex" : "dec_hex")->valuestring,
                              want);
            cr_assert_eq(tok_decode_into(t, ids, n, k, 0, &out, NULL, NULL), PLM_OK);
            case_bad += out.n != wl || memcmp(out.p, want, wl) != 0;
            tok_buf_free(&out);
            cases++;
        }
        free(ids);
        cJSON_Delete(j);
    }
    fclose(f);
    cr_expect_eq(case_bad, 0, "%s: %zu of %zu random-id decodes differ", name, case_bad, cases);
    free(line);
    free(text);
    free(want);
    tok_free(t);
}

/* ---- Hugging Face reference --------------------------------------------------------------- */

Test(tokenizer, matches_reference_bytelevel) { check_reference(FIX "bytelevel/tokenizer.json", "bytelevel"); }
Test(tokenizer, matches_reference_llama3style) { check_reference(FIX "llama3style/tokenizer.json", "llama3style"); }
Test(tokenizer, matches_reference_qwen2style) { check_reference(FIX "qwen2style/tokenizer.json", "qwen2style"); }
Test(tokenizer, matches_reference_metaspace) { check_reference(FIX "metaspace/tokenizer.json", "metaspace"); }

Test(tokenizer, matches_reference_llama2)
{
    struct stat sb;
    if (stat(LLAMA2, &sb) != 0) cr_skip_test("the Llama-2 tokenizer is not at %s", LLAMA2);
    check_reference(LLAMA2, "llama2");
}

Test(tokenizer, llama2_ids_by_hand)
{
    struct stat sb;
    if (stat(LLAMA2, &sb) != 0) cr_skip_test("the Llama-2 tokenizer is not at %s", LLAMA2);
    tok_tokenizer *t = load(LLAMA2);
    EXPECT_IDS(t, "Hello world", 1, 15043, 3186); /* post_processor is null: no BOS */
    EXPECT_IDS(t, "<s>hi", 0, 1, 7251);
    cr_expect_eq(tok_bos_id(t), 1);
    cr_expect_eq(tok_eos_id(t), 2);
    cr_expect_eq(tok_vocab_size(t), 32000);
    EXPECT_TEXT(t, 0, "<s> Hello world", 1, 15043, 3186);
    EXPECT_TEXT(t, 1, "Hello world", 1, 15043, 3186);
    tok_free(t);
}

Test(tokenizer, fixture_metadata)
{
    tok_tokenizer *t = load(FIX "bytelevel/tokenizer.json");
    cr_expect_eq(tok_vocab_size(t), 1003);
    cr_expect_eq(tok_bos_id(t), 1); /* both from the template */
    cr_expect_eq(tok_eos_id(t), 0);
    cr_expect_eq(tok_token_id(t, "<mask>"), 1000);
    cr_expect_str_eq(tok_token_str(t, 1002), "[TOOL]");
    cr_expect(tok_is_special(t, 0));
    cr_expect_not(tok_is_special(t, 1000));
    cr_expect_null(tok_token_str(t, 1003));
    tok_free(t);
    t = load(FIX "llama3style/tokenizer.json");
    cr_expect_eq(tok_bos_id(t), 1000);
    cr_expect_eq(tok_eos_id(t), 1001); /* not in the template: found by name */
    tok_free(t);
    t = load(FIX "metaspace/tokenizer.json");
    cr_expect_eq(tok_vocab_size(t), 1157);
    cr_expect_eq(tok_bos_id(t), 1);
    cr_expect_eq(tok_eos_id(t), 2);
    cr_expect_eq(tok_token_id(t, "<0x0A>"), 3 + 10);
    tok_free(t);
}

Test(tokenizer, added_token_ids_follow_the_library)
{
    /* tokenizers numbers added tokens itself (after the model's entries), whatever the file
     * says; content already in the vocabulary keeps its id. */
    const char *json = MODEL("{\"a\": 0, \"b\": 1}", "[]") ", \"added_tokens\": ["
                       "{\"id\": 50, \"content\": \"<x>\", \"special\": true},"
                       "{\"id\": 7, \"content\": \"b\", \"special\": true},"
                       "{\"id\": 60, \"content\": \"<y>\"}]}";
    tok_tokenizer *t;
    plm_error err;
    cr_assert_eq(tok_load_buffer(json, strlen(json), "t.json", &t, &err), PLM_OK, "%s", err.msg);
    cr_expect_eq(tok_token_id(t, "<x>"), 2);
    cr_expect_eq(tok_token_id(t, "b"), 1);
    cr_expect_eq(tok_token_id(t, "<y>"), 3);
    cr_expect_eq(tok_vocab_size(t), 4);
    cr_expect(tok_is_special(t, 1));
    EXPECT_IDS(t, "a<y>b", 0, 0, 3, 1);
    tok_free(t);
}

/* ---- BPE (tiny_bpe.json: legacy Llama normalizer, byte_fallback, fuse_unk, "a b" merges; the
 * other tiny files write merges as pairs) ----------------------------------------------------- */

Test(tokenizer, bpe_merges_by_rank_not_position)
{
    tok_tokenizer *t = load(FIX "tiny_bpe.json");
    /* ▁ a b c: "b c" (rank 0) goes first, so "a b" never happens; then "▁ a". */
    EXPECT_IDS(t, "abc", 0, 11, 10);
    /* ▁ a b: "a b" (rank 1) beats "▁ a" (rank 2); "▁ ab" is no merge, so ▁ab is unreachable */
    EXPECT_IDS(t, "ab", 0, 5, 9);
    EXPECT_IDS(t, "abc", 1, 1, 11, 10, 2);
    EXPECT_IDS(t, "", 1, 1, 2);
    int32_t *ids;
    size_t n = 9;
    cr_assert_eq(tok_encode(t, "", 0, 0, &ids, &n, NULL), PLM_OK);
    cr_expect_eq(n, 0);
    cr_expect_not_null(ids); /* an empty result is still a freeable array */
    free(ids);
    tok_free(t);
}

Test(tokenizer, byte_fallback_and_fuse_unk)
{
    tok_tokenizer *t = load(FIX "tiny_bpe.json");
    EXPECT_IDS(t, "\xc3\xa9", 0, 5, 3, 4); /* é is not in the vocabulary: its two bytes */
    EXPECT_IDS(t, "a\n", 0, 11, 13);
    EXPECT_IDS(t, "dd", 0, 5, 0);     /* no <0x64>: one fused <unk> */
    EXPECT_IDS(t, "dad", 0, 5, 0, 6, 0);
    tok_free(t);
    t = load_variant(FIX "tiny_bpe.json", "\"fuse_unk\": true", "\"fuse_unk\": false");
    EXPECT_IDS(t, "dd", 0, 5, 0, 0);
    tok_free(t);
    t = load_variant(FIX "tiny_bpe.json", "\"byte_fallback\": true", "\"byte_fallback\": false");
    EXPECT_IDS(t, "\xc3\xa9", 0, 5, 0);
    tok_free(t);
}

Test(tokenizer, legacy_normalizer_prefixes_every_piece)
{
    tok_tokenizer *t = load(FIX "tiny_bpe.json");
    /* The added token splits first; each side is normalized alone: "▁a", "▁b". */
    EXPECT_IDS(t, "a<s>b", 0, 11, 1, 5, 7);
    EXPECT_IDS(t, "a b", 0, 11, 5, 7);
    tok_free(t);
}

Test(tokenizer, added_tokens_strip_and_single_word)
{
    tok_tokenizer *t = load(FIX "tiny_bpe.json");
    EXPECT_IDS(t, "a <mask> b", 0, 11, 14, 5, 7); /* lstrip + rstrip take both spaces */
    EXPECT_IDS(t, "a cab", 0, 11, 5, 15);
    EXPECT_IDS(t, "acab", 0, 11, 8, 9); /* not a single word: plain BPE */
    EXPECT_IDS(t, "cabc", 0, 5, 8, 6, 10); /* "cab" runs on into "c": not a word */
    tok_free(t);
}

Test(tokenizer, template_and_special_decoding)
{
    tok_tokenizer *t = load(FIX "tiny_bpe.json");
    cr_expect_eq(tok_bos_id(t), 1);
    cr_expect_eq(tok_eos_id(t), 2);
    EXPECT_TEXT(t, 0, "<s> abc</s>", 1, 11, 10, 2);
    EXPECT_TEXT(t, 1, "abc", 1, 11, 10, 2);
    EXPECT_TEXT(t, 0, "abc", 11, 10, 9999, -5); /* ids with no token are skipped */
    tok_free(t);
}

Test(tokenizer, byte_fallback_decoder)
{
    tok_tokenizer *t = load(FIX "tiny_bpe.json");
    EXPECT_TEXT(t, 0, "\xc3\xa9", 3, 4);
    EXPECT_TEXT(t, 0, "\xef\xbf\xbd", 3);                           /* a broken run: U+FFFD */
    EXPECT_TEXT(t, 0, "\xef\xbf\xbd\xef\xbf\xbd", 3, 3);            /* one per byte */
    EXPECT_TEXT(t, 0, "a\n", 11, 13);
    EXPECT_TEXT(t, 0, " a", 5, 11); /* Strip removes one leading space only */
    tok_free(t);
}

/* ---- Metaspace (tiny_metaspace.json) ------------------------------------------------------ */

Test(tokenizer, metaspace_prepend_schemes)
{
    tok_tokenizer *t = load(FIX "tiny_metaspace.json");
    EXPECT_IDS(t, "hi", 0, 6);
    EXPECT_IDS(t, "<x>hi", 0, 1, 3, 4); /* "first": only a piece at offset 0 gets ▁ */
    tok_free(t);
    t = load_variant(FIX "tiny_metaspace.json", "\"first\"", "\"always\"");
    EXPECT_IDS(t, "<x>hi", 0, 1, 6);
    tok_free(t);
    t = load_variant(FIX "tiny_metaspace.json", "\"first\"", "\"never\"");
    EXPECT_IDS(t, "hi", 0, 3, 4);
    tok_free(t);
}

Test(tokenizer, metaspace_split)
{
    tok_tokenizer *t = load(FIX "tiny_metaspace.json");
    /* split false: one word, so "i ▁" (rank 0) merges across the space */
    EXPECT_IDS(t, "hi hi", 0, 5, 7, 3, 4);
    tok_free(t);
    t = load_variant(FIX "tiny_metaspace.json", "\"split\": false", "\"split\": true");
    EXPECT_IDS(t, "hi hi", 0, 6, 6);
    tok_free(t);
}

Test(tokenizer, metaspace_decoder)
{
    tok_tokenizer *t = load(FIX "tiny_metaspace.json");
    EXPECT_TEXT(t, 0, "hi hi", 6, 6);
    EXPECT_TEXT(t, 0, " h", 2, 2, 3); /* the first token loses every ▁ it has */
    tok_free(t);
    t = load_variant(FIX "tiny_metaspace.json", "\"decoder\": {", "\"decoder\": null, \"x\": {");
    EXPECT_TEXT(t, 0, "\xe2\x96\x81hi \xe2\x96\x81hi", 6, 6); /* no decoder: joined by spaces */
    tok_free(t);
}

/* ---- ByteLevel (tiny_bytelevel.json: token id b is byte b, plus four merges) --------------- */

Test(tokenizer, bytelevel_encodes_bytes)
{
    tok_tokenizer *t = load(FIX "tiny_bytelevel.json");
    EXPECT_IDS(t, "the", 0, 259);
    EXPECT_IDS(t, " the", 0, 258);      /* Ġ t h e -> Ġt he -> Ġthe */
    EXPECT_IDS(t, "a\n", 0, 97, 10);    /* regex: "a", "\n" */
    EXPECT_IDS(t, "x  the", 0, 120, 32, 258);
    EXPECT_IDS(t, "\xe4\xbd\xa0", 0, 0xE4, 0xBD, 0xA0);
    EXPECT_IDS(t, "a<|endoftext|>", 0, 97, 260);
    tok_free(t);
    t = load_variant(FIX "tiny_bytelevel.json", "\"add_prefix_space\": false",
                     "\"add_prefix_space\": true");
    EXPECT_IDS(t, "the", 0, 258);
    EXPECT_IDS(t, "the<|endoftext|>the", 0, 258, 260, 258); /* every piece gets the space */
    tok_free(t);
}

Test(tokenizer, bytelevel_decoder)
{
    tok_tokenizer *t = load(FIX "tiny_bytelevel.json");
    EXPECT_TEXT(t, 0, " the", 258);
    EXPECT_TEXT(t, 0, "\xe4\xbd\xa0", 0xE4, 0xBD, 0xA0);
    EXPECT_TEXT(t, 0, "\xef\xbf\xbd", 0xE4, 0xBD);          /* lossy: one U+FFFD per subpart */
    EXPECT_TEXT(t, 0, "\xef\xbf\xbd" "a", 0xE4, 97);
    EXPECT_TEXT(t, 1, "a", 97, 260);
    tok_free(t);
}

/* ---- streaming ---------------------------------------------------------------------------- */

Test(tokenizer, stream_waits_for_whole_characters)
{
    tok_tokenizer *t = load(FIX "tiny_bytelevel.json");
    tok_stream *s;
    const char *p;
    cr_assert_eq(tok_stream_new(t, 0, &s, NULL), PLM_OK);
    cr_assert_eq(tok_stream_push(s, 258, &p, NULL), PLM_OK);
    cr_expect_str_eq(p, " the");
    cr_assert_eq(tok_stream_push(s, 0xE4, &p, NULL), PLM_OK);
    cr_expect_str_eq(p, "");
    cr_assert_eq(tok_stream_push(s, 0xBD, &p, NULL), PLM_OK);
    cr_expect_str_eq(p, "");
    cr_assert_eq(tok_stream_push(s, 0xA0, &p, NULL), PLM_OK);
    cr_expect_str_eq(p, "\xe4\xbd\xa0");
    cr_assert_eq(tok_stream_push(s, 0xE4, &p, NULL), PLM_OK);
    cr_expect_str_eq(p, "");
    cr_assert_eq(tok_stream_finish(s, &p, NULL), PLM_OK);
    cr_expect_str_eq(p, "\xef\xbf\xbd"); /* the unfinished character */
    tok_stream_free(s);
    tok_free(t);
}

Test(tokenizer, stream_applies_start_rules_once)
{
    tok_tokenizer *t = load(FIX "tiny_bpe.json");
    const int32_t ids[] = {1, 11, 10, 5, 3, 4, 11, 2};
    char *s = stream_all(t, ids, 8, 1);
    char *d;
    cr_assert_eq(tok_decode(t, ids, 8, 1, &d, NULL), PLM_OK);
    cr_expect_str_eq(s, d);
    cr_expect_str_eq(s, "abc \xc3\xa9 a");
    free(s);
    free(d);
    tok_stream *st;
    const char *p;
    cr_assert_eq(tok_stream_new(t, 1, &st, NULL), PLM_OK);
    tok_stream_push(st, 1, &p, NULL);
    cr_expect_str_eq(p, ""); /* skipped special */
    tok_stream_push(st, 11, &p, NULL);
    cr_expect_str_eq(p, "a"); /* leading space stripped at the start only */
    tok_stream_push(st, 11, &p, NULL);
    cr_expect_str_eq(p, " a");
    tok_stream_free(st);
    tok_free(t);
    t = load(FIX "tiny_metaspace.json");
    const int32_t m[] = {2, 6, 6};
    s = stream_all(t, m, 3, 0);
    cr_expect_str_eq(s, " hi hi");
    free(s);
    tok_free(t);
}

/* ---- input checks and malformed files ----------------------------------------------------- */

Test(tokenizer, invalid_utf8_is_refused)
{
    tok_tokenizer *t = load(FIX "tiny_bpe.json");
    int32_t *ids = (int32_t *)1;
    size_t n = 7;
    plm_error err;
    cr_expect_eq(tok_encode(t, "ab\xff" "cd", 5, 0, &ids, &n, &err), PLM_E_FORMAT);
    cr_expect_str_eq(err.msg, "text: invalid UTF-8 at byte 2 (0xFF)");
    cr_expect_null(ids);
    cr_expect_eq(n, 0);
    cr_expect_eq(tok_encode(t, "a\xe4\xbd", 3, 0, &ids, &n, &err), PLM_E_FORMAT);
    cr_expect_str_eq(err.msg, "text: invalid UTF-8 at byte 1 (0xE4)"); /* truncated */
    cr_expect_eq(tok_encode(t, "\xed\xa0\x80", 3, 0, &ids, &n, &err), PLM_E_FORMAT); /* surrogate */
    cr_expect_eq(tok_encode(t, "\xc0\xaf", 2, 0, &ids, &n, &err), PLM_E_FORMAT);     /* overlong */
    tok_free(t);
}


Test(tokenizer, malformed_files_name_the_field)
{
    expect_load_error("{\"model\": 3", PLM_E_FORMAT, "tokenizer.json: invalid JSON near byte 10");
    expect_load_error("[]", PLM_E_FORMAT, "tokenizer.json: the top level is not an object");
    expect_load_error("{}", PLM_E_MISSING, "tokenizer.json: model is missing or not an object");
    expect_load_error(MODEL("{\"a\": 0, \"b\": 1, \"ab\": 2}", "[\"a b\", 7]") "}", PLM_E_FORMAT,
                      "tokenizer.json: model.merges[1] is not a string or pair");
    expect_load_error(MODEL("{\"a\": 0, \"b\": 1, \"ab\": 2}", "[\"a b\", [\"a\", \"b\"]]") "}",
                      PLM_E_FORMAT, "tokenizer.json: model.merges[1] is a pair but "
                      "model.merges[0] is a string; the list must be all \"a b\" strings or all "
                      "pairs");
    expect_load_error(MODEL("{\"a\": 0, \"b\": 1}", "[\"a b c\"]") "}", PLM_E_FORMAT,
                      "tokenizer.json: model.merges[0] is not a string or pair");
    expect_load_error(MODEL("{\"a\": 0, \"b\": 1}", "[[\"a\", \"b\"]]") "}", PLM_E_FORMAT,
                      "tokenizer.json: model.merges[0]: the merged token \"ab\" is not in the "
                      "vocabulary");
    expect_load_error(MODEL("{\"a\": 0}", "[\"a z\"]") "}", PLM_E_FORMAT,
                      "tokenizer.json: model.merges[0]: \"z\" is not in the vocabulary");
    expect_load_error(MODEL("{\"a\": -1}", "[]") "}", PLM_E_FORMAT,
                      "tokenizer.json: model.vocab[\"a\"] is not an id from 0 to 1073741823");
    expect_load_error(MODEL("{\"a\": 0, \"b\": 0}", "[]") "}", PLM_E_FORMAT,
                      "tokenizer.json: model.vocab gives id 0 to both \"a\" and \"b\"");
    expect_load_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": {}}}", PLM_E_UNSUPPORTED,
                      "tokenizer.json: model.type \"Unigram\" is not supported (only BPE)");
    expect_load_error("{\"model\": {\"vocab\": {}, \"unk_token\": \"<unk>\"}}", PLM_E_FORMAT,
                      "tokenizer.json: model.unk_token \"<unk>\" is not in the vocabulary");
    expect_load_error(MODEL("{\"a\": 0}", "[]") ", \"added_tokens\": [{\"id\": \"1\", "
                      "\"content\": \"x\"}]}", PLM_E_FORMAT,
                      "tokenizer.json: added_tokens[0].id is missing or not an id from 0 to "
                      "1073741823");
    expect_load_error(MODEL("{\"a\": 0}", "[]") ", \"normalizer\": {\"type\": \"Sequence\", "
                      "\"normalizers\": [{\"type\": \"Lowercase\"}]}}", PLM_E_UNSUPPORTED,
                      "tokenizer.json: normalizer.normalizers[0].type \"Lowercase\" is not "
                      "supported (Sequence, Prepend, Replace, NFC, Strip are)");
    expect_load_error(MODEL("{\"a\": 0}", "[]") ", \"pre_tokenizer\": {\"type\": \"Metaspace\", "
                      "\"replacement\": \"ab\"}}", PLM_E_FORMAT,
                      "tokenizer.json: pre_tokenizer.replacement must be a single character");
    expect_load_error(MODEL("{\"a\": 0}", "[]") ", \"pre_tokenizer\": {\"type\": \"Metaspace\", "
                      "\"replacement\": \"_\", \"prepend_scheme\": \"sometimes\"}}", PLM_E_FORMAT,
                      "tokenizer.json: pre_tokenizer.prepend_scheme \"sometimes\" is not one of "
                      "always, first, never");
    expect_load_error(MODEL("{\"a\": 0}", "[]") ", \"pre_tokenizer\": {\"type\": \"Sequence\", "
                      "\"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\d+\"},"
                      " \"behavior\": \"Isolated\"}]}}", PLM_E_UNSUPPORTED,
                      "tokenizer.json: pre_tokenizer.pretokenizers[0].pattern.Regex \"\\d+\" is "
                      "not a pattern prunelm knows (GPT-2, Llama-3 and Qwen2 are)");
    expect_load_error(MODEL("{\"a\": 0}", "[]") ", \"pre_tokenizer\": {\"type\": \"Split\", "
                      "\"pattern\": {\"String\": \" \"}, \"behavior\": \"Sideways\"}}",
                      PLM_E_FORMAT, "tokenizer.json: pre_tokenizer.behavior is missing or not one "
                      "of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
    expect_load_error(MODEL("{\"a\": 0}", "[]") ", \"decoder\": {\"type\": \"WordPiece\"}}",
                      PLM_E_UNSUPPORTED, "tokenizer.json: decoder.type \"WordPiece\" is not "
                      "supported (Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, "
                      "Metaspace are)");
    expect_load_error(MODEL("{\"a\": 0}", "[]") ", \"post_processor\": {\"type\": "
                      "\"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}},"
                      " {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {}}}", PLM_E_FORMAT,
                      "tokenizer.json: post_processor.special_tokens has no ids for \"<s>\"");
    expect_load_error(MODEL("{\"a\": 0}", "[]") ", \"post_processor\": {\"type\": "
                      "\"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}},"
                      " {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<s>\": {\"ids\": "
                      "[5]}}}}", PLM_E_FORMAT, "tokenizer.json: post_processor.special_tokens"
                      "[\"<s>\"].ids[0]: id 5 is past the vocabulary's 1 ids");
}

Test(tokenizer, missing_file_is_an_io_error)
{
    plm_error err;
    tok_tokenizer *t = (tok_tokenizer *)1;
    cr_expect_eq(tok_load_file("/nonexistent/tokenizer.json", &t, &err), PLM_E_IO);
    cr_expect_null(t);
    cr_expect(strstr(err.msg, "/nonexistent/tokenizer.json") != NULL, "%s", err.msg);
}

/* ---- regexes, Unicode tables, NFC --------------------------------------------------------- */

static void expect_split(tok_regex_kind kind, const char *text, const char *want)
{
    char got[512] = "";
    size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        size_t e = tok_regex_match_at(kind, text, n, i);
        cr_assert_gt(e, i, "no match at %zu of \"%s\"", i, text);
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%.*s", i ? "|" : "",
                 (int)(e - i), text + i);
        i = e;
    }
    cr_expect_str_eq(got, want, "splitting \"%s\"", text);
}

Test(tokenizer, regex_gpt2)
{
    expect_split(TOK_RE_GPT2, "Hello world", "Hello| world");
    expect_split(TOK_RE_GPT2, "  hello  ", " | hello|  ");
    expect_split(TOK_RE_GPT2, "I'm don't 'S", "I|'m| don|'t| '|S");
    expect_split(TOK_RE_GPT2, "abc123 !!?x", "abc|123| !!?|x");
    expect_split(TOK_RE_GPT2, "a\n\n b", "a|\n\n| b");
}

Test(tokenizer, regex_llama3_and_qwen2)
{
    expect_split(TOK_RE_LLAMA3, "Hello world", "Hello| world");
    expect_split(TOK_RE_LLAMA3, "I'M 12345", "I|'M| |123|45");
    expect_split(TOK_RE_QWEN2, "I'M 12345", "I|'M| |1|2|3|4|5");
    expect_split(TOK_RE_LLAMA3, "x  \n\n  y", "x|  \n\n| | y");
    expect_split(TOK_RE_LLAMA3, "(hi) ...\n\nok", "(hi|)| ...\n\n|ok");
    expect_split(TOK_RE_LLAMA3, "\tabc", "\tabc");
}

Test(tokenizer, unicode_classes)
{
    cr_expect_eq(tok_uc_flags('a'), TOK_UC_L | TOK_UC_W);
    cr_expect_eq(tok_uc_flags(0x4F60), TOK_UC_L | TOK_UC_W);  /* 你 */
    cr_expect_eq(tok_uc_flags(0x00BD), TOK_UC_N);             /* ½ is a number, not \w */
    cr_expect_eq(tok_uc_flags(0x0663), TOK_UC_N | TOK_UC_W);  /* Arabic-Indic three */
    cr_expect_eq(tok_uc_flags(0x3000), TOK_UC_S);
    cr_expect_eq(tok_uc_flags(0x0085), TOK_UC_S);
    cr_expect_eq(tok_uc_flags(0x001C), 0u);                   /* not White_Space */
    cr_expect_eq(tok_uc_flags(0x0301), TOK_UC_W);             /* a mark: \w, not \p{L} */
    cr_expect_eq(tok_uc_flags(0x1F600), 0u);
    cr_expect_eq(tok_uc_ccc(0x0301), 230u);
}

Test(tokenizer, nfc)
{
    tok_work w = {0};
    tok_buf out = {0};
    cr_assert_eq(tok_nfc("e\xcc\x81", 3, &out, &w, NULL), PLM_OK);
    cr_expect_str_eq(out.p, "\xc3\xa9"); /* e + U+0301 -> é */
    out.n = 0;
    /* a + U+0323 (220) + U+0302 (230) in the wrong order: reordered, then composed to ậ */
    cr_assert_eq(tok_nfc("a\xcc\x82\xcc\xa3", 5, &out, &w, NULL), PLM_OK);
    cr_expect_str_eq(out.p, "\xe1\xba\xad");
    out.n = 0;
    cr_assert_eq(tok_nfc("\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab", 9, &out, &w, NULL), PLM_OK);
    cr_expect_str_eq(out.p, "\xed\x95\x9c"); /* Hangul jamo -> 한 */
    tok_buf_free(&out);
    tok_work_free(&w);
}

/* ---- public API and command line ---------------------------------------------------------- */

Test(tokenizer, public_api)
{
    plm_tokenizer *tok;
    plm_error err;
    cr_assert_eq(plm_tokenizer_load(FIX "tiny_bpe.json", &tok, &err), PLM_OK, "%s", err.msg);
    cr_expect_eq(plm_tokenizer_vocab_size(tok), 16);
    int32_t *ids;
    size_t n;
    cr_assert_eq(plm_tokenize(tok, "abc", 3, 1, &ids, &n, &err), PLM_OK);
    cr_expect_eq(n, 4);
    char *text;
    cr_assert_eq(plm_detokenize(tok, ids, n, 1, &text, &err), PLM_OK);
    cr_expect_str_eq(text, "abc");
    free(text);
    free(ids);
    plm_tokenizer_free(tok);
}

Test(tokenizer, cli_encodes_and_decodes)
{
    struct stat sb;
    if (stat(PLM_CLI, &sb) != 0) cr_skip_test("the prunelm binary is not built at %s", PLM_CLI);
    const char *tiny = FIX "tiny_bpe.json";
    char cmd[4096], out[512] = "";
    snprintf(cmd, sizeof cmd,
             "exec 2>&1; printf 'abc\\n' | %s tokenize --tokenizer %s --no-special; "
             "printf 'abc\\n' | %s tokenize --model %s; "
             "printf '\"a\\\\nb\"\\n' | %s tokenize --tokenizer %s --json-lines --no-special; "
             "printf '[1, 11, 10, 2]\\n' | %s tokenize --tokenizer %s --decode --json-lines; "
             "printf '[1, 11, 10, 2]\\n' | %s tokenize --tokenizer %s --decode --no-special; "
             "%s tokenize --bogus >/dev/null 2>&1; echo rc=$?",
             PLM_CLI, tiny, PLM_CLI, PLM_SOURCE_DIR "/tests/fixtures", PLM_CLI, tiny, PLM_CLI,
             tiny, PLM_CLI, tiny, PLM_CLI);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    pclose(p);
    cr_expect_str_eq(out, "[11, 10]\n"
                          "prunelm tokenize: " PLM_SOURCE_DIR "/tests/fixtures/tokenizer.json: "
                          "cannot open: No such file or directory\n"
                          "[11, 13, 7]\n"
                          "\"<s> abc</s>\"\n"
                          "abc\n"
                          "rc=2\n");
}
