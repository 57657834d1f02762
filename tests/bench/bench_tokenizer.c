/* Encoding speed: milliseconds to encode 100 KB of mixed text on one core, for each
 * tokenizer flavour available (the real Llama-2 file when ../shared has it, and the small
 * fixtures). The bar is well under 50 ms per 100 KB.
 *
 * usage: bench_tokenizer [--tokenizer FILE]... [OUT]
 * Prints one line per tokenizer; with OUT, also writes those lines to that file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lm/tokenizer.h"

#define TEXT_BYTES (100 * 1024)
#define REPEATS 7

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Deterministic text: words, numbers, punctuation, code, a little CJK and emoji. */
static char *make_text(size_t n)
{
    static const char *parts[] = {
        "the ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dog", ". ", ", ",
        "tokenizer ", "model ", "image ", "attention ", "2024 ", "3.14159 ", "don't ", "I'm ",
        "\n", "\n\n", "    return x + 1;\n", "{\"key\": [1, 2, 3]} ", "https://example.com/a?b=c ",
        "\xe4\xbd\xa0\xe5\xa5\xbd ", "caf\xc3\xa9 ", "\xf0\x9f\x99\x82 ", "  ", "\t", "<s> "};
    size_t np = sizeof parts / sizeof parts[0];
    char *s = malloc(n + 64);
    if (!s) return NULL;
    size_t len = 0;
    unsigned long long r = 88172645463325252ull;
    while (len < n) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        const char *p = parts[r % np];
        size_t l = strlen(p);
        memcpy(s + len, p, l);
        len += l;
    }
    s[len] = '\0';
    return s;
}

static int bench(const char *path, const char *text, FILE *out)
{
    plm_error err;
    tok_tokenizer *t;
    if (tok_load_file(path, &t, &err) != PLM_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
        return 1;
    }
    size_t len = strlen(text), n = 0;
    double best = 1e30;
    for (int i = 0; i < REPEATS; i++) {
        int32_t *ids;
        double t0 = now_ms();
        if (tok_encode(t, text, len, 1, &ids, &n, &err) != PLM_OK) {
            fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
            tok_free(t);
            return 1;
        }
        double dt = now_ms() - t0;
        free(ids);
        if (dt < best) best = dt;
    }
    tok_free(t);
    char line[1200];
    snprintf(line, sizeof line, "encode %zu bytes: %.2f ms (%zu ids, %.1f MB/s)  %s\n", len, best,
             n, len / best / 1e3, path);
    fputs(line, stdout);
    if (out) fputs(line, out);
    return 0;
}

int main(int argc, char **argv)
{
    const char *paths[16];
    int np = 0;
    const char *out_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc && np < 16)
            paths[np++] = argv[++i];
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: bench_tokenizer [--tokenizer FILE]... [OUT]\n");
            return 0;
        } else
            out_path = argv[i];
    }
    /* Defaults: found from this source file's place in the repository. */
    static char defaults[4][1024];
    if (np == 0) {
        const char *rel[] = {"/../shared/tokenizers/llama2/tokenizer.json",
                             "/tests/fixtures/tokenizer/metaspace/tokenizer.json",
                             "/tests/fixtures/tokenizer/bytelevel/tokenizer.json",
                             "/tests/fixtures/tokenizer/llama3style/tokenizer.json"};
        char root[1024];
        snprintf(root, sizeof root, "%s", __FILE__);
        char *cut = strstr(root, "/tests/bench/");
        if (cut) *cut = '\0';
        else snprintf(root, sizeof root, ".");
        for (int i = 0; i < 4; i++) {
            snprintf(defaults[i], sizeof defaults[i], "%s%s", root, rel[i]);
            FILE *f = fopen(defaults[i], "rb");
            if (!f) continue;
            fclose(f);
            paths[np++] = defaults[i];
        }
    }
    char *text = make_text(TEXT_BYTES);
    FILE *out = out_path ? fopen(out_path, "w") : NULL;
    if (!text || (out_path && !out)) {
        fprintf(stderr, "bench_tokenizer: cannot %s\n", text ? "open the output file" : "allocate");
        free(text);
        return 1;
    }
    int rc = np ? 0 : 1;
    if (!np) fprintf(stderr, "bench_tokenizer: no tokenizer.json found\n");
    for (int i = 0; i < np; i++) rc |= bench(paths[i], text, out);
    if (out) fclose(out);
    free(text);
    return rc;
}
