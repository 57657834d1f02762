/* ShapesVQA generator (eval/shapes), the long-context text tasks: a pass key hidden once at
 * varied depths, a multi-key lookup with one answer, dialogue filler that never names what the
 * image questions ask about, and their JSONL files. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

/* eval/shapes/shapes.cmake links this test to plm_shapes and defines PLM_SHAPES_WIRED. Until the
 * top-level CMakeLists.txt includes that file, the tests loop still builds this one: it then
 * holds only a skipped placeholder, so the build stays green. */
#ifndef PLM_SHAPES_WIRED
Test(shapes, needs_shapes_cmake, .disabled = true) {}
#else

#include "tests/support/shapes_util.h"

TestSuite(shapes, .init = make_dir, .fini = remove_dir);

/* ---- text tasks ---------------------------------------------------------------------------- */
static int occurrences(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++) n++;
    return n;
}

static int is_letter(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Occurrences of word as a whole word, case-insensitive on its first letter. */
static int word_occurrences(const char *hay, const char *word)
{
    int n = 0;
    size_t len = strlen(word);
    for (const char *p = hay; *p; p++) {
        if ((*p | 0x20) != word[0] || strncmp(p + 1, word + 1, len - 1) != 0) continue;
        if (p > hay && is_letter(p[-1])) continue;
        if (is_letter(p[len])) continue;
        n++;
    }
    return n;
}

static void assert_length(size_t chars, int tokens)
{
    double want = (double)tokens * SHP_CHARS_PER_TOKEN;
    cr_assert(chars >= 0.85 * want && chars <= 1.15 * want, "%zu characters for %d tokens",
              chars, tokens);
}

Test(shapes, passkey_appears_once_at_varied_depths)
{
    static const int TOKENS[] = {512, 1024, 2048, 4096, 8192};
    int shallow = 0, deep = 0;
    for (int i = 0; i < 40; i++) {
        shp_text_item it;
        memset(&it, 0, sizeof it);
        shp_rng r;
        shp_rng_seed(&r, (uint64_t)i, 77);
        int tokens = TOKENS[i % 5];
        plm_error err;
        cr_assert_eq(shp_text_passkey(&it, tokens, &r, &err), PLM_OK);
        const char *c = it.context.p;
        cr_assert_eq(strlen(c), it.context.len);
        assert_length(it.context.len, tokens);
        cr_assert_str_eq(it.question, "What is the pass key?");
        cr_assert_eq(strlen(it.answer), 5);
        char line[160];
        snprintf(line, sizeof line, "The pass key is %s. Remember it. %s is the pass key.",
                 it.answer, it.answer);
        cr_assert_eq(occurrences(c, line), 1);
        cr_assert_eq(occurrences(c, it.answer), 2);
        int digits = 0;
        for (const char *p = c; *p; p++) digits += *p >= '0' && *p <= '9';
        cr_assert_eq(digits, 10, "the filler holds digits");
        cr_assert_eq(occurrences(c, "pass key"), 2);
        shallow += it.depth_pct < 30;
        deep += it.depth_pct > 70;
        shp_text_item_free(&it);
    }
    cr_assert(shallow > 3 && deep > 3, "depths do not vary: %d shallow, %d deep", shallow, deep);
}

Test(shapes, multikey_lookup_is_unique)
{
    for (int i = 0; i < 30; i++) {
        shp_text_item it;
        memset(&it, 0, sizeof it);
        shp_rng r;
        shp_rng_seed(&r, (uint64_t)i, 78);
        int tokens = 512 << (i % 5);
        plm_error err;
        cr_assert_eq(shp_text_multikey(&it, tokens, &r, &err), PLM_OK);
        assert_length(it.context.len, tokens);
        char word[32];
        cr_assert_eq(sscanf(it.question, "What is the key for %31[a-z]?", word), 1, "%s",
                     it.question);
        char line[160];
        snprintf(line, sizeof line, "The key for %s is %s. %s is the key for %s.", word,
                 it.answer, it.answer, word);
        cr_assert_eq(occurrences(it.context.p, line), 1, "'%s' not in the context", line);
        cr_assert_eq(word_occurrences(it.context.p, word), 2);
        cr_assert_eq(occurrences(it.context.p, it.answer), 2);
        cr_assert_eq(occurrences(it.context.p, "The key for "), it.n_keys);
        cr_assert(it.n_keys >= 2 && it.n_keys <= 16);
        shp_text_item_free(&it);
    }
}

static void check_dialogue(cJSON *o, void *user)
{
    int *n = user;
    const char *ctx = str_field(o, "context");
    cr_assert_eq(strlen(ctx), (size_t)num_field(o, "n_chars"));
    assert_length(strlen(ctx), (int)num_field(o, "tokens"));
    cr_assert(!strncmp(ctx, "USER: ", 6));
    /* No word the image questions use may appear in the filler. */
    static const char *const BANNED[] = {
        "red", "green", "blue", "yellow", "purple", "orange", "white", "black", "circle",
        "square", "triangle", "star", "cross", "diamond", "hexagon", "ring", "small", "medium",
        "large", "left", "right", "top", "bottom", "above", "below", "letter", "digit", "key",
        "shape", "shapes", "colour", "size", "object"};
    for (size_t b = 0; b < sizeof BANNED / sizeof BANNED[0]; b++)
        cr_assert_eq(word_occurrences(ctx, BANNED[b]), 0, "the filler mentions '%s'", BANNED[b]);
    assert_png(sub(str_field(o, "image")));
    cr_assert(one_lowercase_word(str_field(o, "answer")));
    cr_assert_str_eq(str_field(o, "type"), "dialogue");
    (*n)++;
}

static void check_text(cJSON *o, void *user)
{
    int *n = user;
    const char *ctx = str_field(o, "context");
    cr_assert_eq(strlen(ctx), (size_t)num_field(o, "n_chars"));
    cr_assert_eq(num_field(o, "tokens"), 1024);
    /* every key is said twice (see shp_text_passkey) */
    cr_assert_eq(occurrences(ctx, str_field(o, "answer")), 2);
    (*n)++;
}

Test(shapes, text_task_files)
{
    int n = 0;
    plm_error err = {{0}};
    shp_params p = params(dir, SHP_VAL, SHP_TASK_DIALOGUE, 6);
    p.split = SHP_TEST;
    cr_assert_eq(shp_generate(&p, NULL, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(each_line(sub("test-dialogue.jsonl"), check_dialogue, &n), 6);
    p = params(dir, SHP_VAL, SHP_TASK_PASSKEY, 5);
    p.tokens = 1024;
    cr_assert_eq(shp_generate(&p, NULL, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(each_line(sub("val-passkey.jsonl"), check_text, &n), 5);
    p.task = SHP_TASK_MULTIKEY;
    cr_assert_eq(shp_generate(&p, NULL, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(each_line(sub("val-multikey.jsonl"), check_text, &n), 5);
    cr_assert_eq(n, 16);
    p.tokens = 10;
    cr_assert_eq(shp_generate(&p, NULL, &err), PLM_E_ARG);
    cr_assert_str_eq(err.msg, "--tokens 10 is out of range [64, 131072]");
}

#endif /* PLM_SHAPES_WIRED */
