/* The pre-tokenizer regexes of GPT-2, Llama-3 and Qwen2, matched by hand.
 *
 * tokenizers runs these through Oniguruma, a backtracking engine: alternatives are tried left to
 * right and the first that matches at a position wins (not the longest). Each function below
 * walks the alternatives in the pattern's order and reproduces what backtracking does inside
 * each one (the optional leading space, `\s+(?!\S)` giving back its last character, `\s*`
 * giving back characters until `[\r\n]+` can match). Classes: \p{L} letters, \p{N} numbers,
 * \s White_Space (Oniguruma's and the Rust regex crate's definition). */
#include "lm/tok_internal.h"

static unsigned class_at(const char *s, size_t i, size_t *len)
{
    uint32_t cp;
    *len = tok_utf8_decode(s + i, &cp);
    return tok_uc_flags(cp);
}

#define OTHER(f) (((f) & (TOK_UC_L | TOK_UC_N | TOK_UC_S)) == 0)

/* End of the run of characters whose class has any of `want` bits (or, for want == 0, none of
 * L, N, S) starting at i. */
static size_t run_of(const char *s, size_t n, size_t i, unsigned want)
{
    while (i < n) {
        size_t l;
        unsigned f = class_at(s, i, &l);
        if (want ? !(f & want) : !OTHER(f)) break;
        i += l;
    }
    return i;
}

/* `\s+(?!\S)|\s+` at a whitespace character: the whole run when it reaches the end or the
 * text goes on with whitespace; otherwise the run less its last character, so that character
 * can lead the next word (" world" keeps its space); a single character stays whole. */
static size_t space_run(const char *s, size_t n, size_t i)
{
    size_t k = i, last = i;
    while (k < n) {
        size_t l;
        if (!(class_at(s, k, &l) & TOK_UC_S)) break;
        last = k;
        k += l;
    }
    if (k == n) return k;
    return last > i ? last : k;
}

/* ` ?X+` where X is a class: the optional space is taken only when X follows it. */
static size_t opt_space_run(const char *s, size_t n, size_t i, unsigned want)
{
    size_t j = s[i] == ' ' ? i + 1 : i, l;
    if (j >= n) return 0;
    unsigned f = class_at(s, j, &l);
    if (want ? !(f & want) : !OTHER(f)) return 0;
    return run_of(s, n, j, want);
}

/* 's|'t|'re|'ve|'m|'ll|'d, case-sensitive or not. (?i) also folds U+017F LATIN SMALL LETTER
 * LONG S to s (simple case folding); no other letter here has a non-ASCII fold. */
static size_t contraction(const char *s, size_t n, size_t i, int fold)
{
    if (s[i] != '\'' || i + 1 >= n) return 0;
    unsigned char c1 = (unsigned char)s[i + 1];
    unsigned char c2 = i + 2 < n ? (unsigned char)s[i + 2] : 0;
    if (fold) {
        if (c1 == 0xC5 && c2 == 0xBF) return i + 3; /* 'ſ */
        if (c1 >= 'A' && c1 <= 'Z') c1 = (unsigned char)(c1 + 32);
        if (c2 >= 'A' && c2 <= 'Z') c2 = (unsigned char)(c2 + 32);
    }
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
        return i + 3;
    return 0;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const char *s, size_t n, size_t i)
{
    size_t e, l;
    if ((e = contraction(s, n, i, 0))) return e;
    if ((e = opt_space_run(s, n, i, TOK_UC_L))) return e;
    if ((e = opt_space_run(s, n, i, TOK_UC_N))) return e;
    if ((e = opt_space_run(s, n, i, 0))) return e;
    if (class_at(s, i, &l) & TOK_UC_S) return space_run(s, n, i);
    return 0;
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_llama3(const char *s, size_t n, size_t i, int max_digits)
{
    size_t e, l, l2;
    if ((e = contraction(s, n, i, 1))) return e;
    unsigned f = class_at(s, i, &l);
    /* one optional leading character that is not CR, LF, letter or number, then letters */
    if (!(f & (TOK_UC_L | TOK_UC_N)) && s[i] != '\r' && s[i] != '\n' && i + l < n &&
        (class_at(s, i + l, &l2) & TOK_UC_L))
        return run_of(s, n, i + l, TOK_UC_L);
    if (f & TOK_UC_L) return run_of(s, n, i, TOK_UC_L);
    if (f & TOK_UC_N) {
        size_t k = i;
        for (int c = 0; c < max_digits && k < n; c++) {
            if (!(class_at(s, k, &l2) & TOK_UC_N)) break;
            k += l2;
        }
        return k;
    }
    if ((e = opt_space_run(s, n, i, 0))) {
        while (e < n && (s[e] == '\r' || s[e] == '\n')) e++;
        return e;
    }
    if (!(f & TOK_UC_S)) return 0;
    /* \s*[\r\n]+: \s* gives back characters until a CR/LF can start [\r\n]+, which is then
     * the last CR/LF of the whitespace run; the match ends right after it. */
    size_t k = i, last_nl = 0;
    int has_nl = 0;
    while (k < n && (class_at(s, k, &l2) & TOK_UC_S)) {
        if (s[k] == '\r' || s[k] == '\n') {
            last_nl = k;
            has_nl = 1;
        }
        k += l2;
    }
    if (has_nl) return last_nl + 1;
    return space_run(s, n, i);
}

size_t tok_regex_match_at(tok_regex_kind kind, const char *s, size_t n, size_t pos)
{
    switch (kind) {
    case TOK_RE_GPT2: return match_gpt2(s, n, pos);
    case TOK_RE_LLAMA3: return match_llama3(s, n, pos, 3);
    case TOK_RE_QWEN2: return match_llama3(s, n, pos, 1);
    }
    return 0;
}
