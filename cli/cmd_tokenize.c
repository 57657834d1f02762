/* prunelm tokenize: text lines in, JSON arrays of token ids out (or back with --decode).
 * Uses only the public API (include/prunelm.h), cJSON for the id arrays, and libc. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prunelm.h"
#include "cli.h"

#define CMD "tokenize"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: prunelm tokenize (--model DIR | --tokenizer FILE) [--decode] [--json-lines]\n"
            "                        [--no-special]\n"
            "\n"
            "Reads lines from standard input. Encoding prints one JSON array of token ids per\n"
            "line; --decode reads JSON arrays of ids and prints the text.\n"
            "\n"
            "  --model DIR       use DIR/tokenizer.json\n"
            "  --tokenizer FILE  use this tokenizer.json\n"
            "  --decode          ids to text instead of text to ids\n"
            "  --json-lines      each input line (encoding) or output line (decoding) is a JSON\n"
            "                    string, so text with newlines or control characters fits\n"
            "  --no-special      encoding: do not add the post-processor's tokens (BOS/EOS);\n"
            "                    decoding: leave out special tokens\n"
            "  --help            this text\n");
}

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "prunelm " CMD ": ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_FAIL;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) return (size_t)(o[0] = (char)cp, 1);
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes a JSON string literal in place (the text may hold \u0000, which cJSON's C strings
 * cannot carry). Returns the length, or -1 with *why set. */
static long json_string(char *s, const char **why)
{
    char *p = s, *o = s;
    while (*p == ' ' || *p == '\t') p++;
    if (*p++ != '"') return *why = "expected a JSON string", -1;
    for (;;) {
        char c = *p++;
        if (c == '"') break;
        if (c == '\0' || c == '\n') return *why = "unterminated JSON string", -1;
        if ((unsigned char)c < 0x20) return *why = "control character inside a JSON string", -1;
        if (c != '\\') {
            *o++ = c;
            continue;
        }
        c = *p++;
        const char *simple = "\"\\/bfnrt", *value = "\"\\/\b\f\n\r\t";
        const char *k = c ? strchr(simple, c) : NULL;
        if (k) {
            *o++ = value[k - simple];
            continue;
        }
        unsigned cp, lo;
        if (c != 'u' || !hex4(p, &cp)) return *why = "bad escape in a JSON string", -1;
        p += 4;
        if (cp >= 0xD800 && cp < 0xDC00) { /* a surrogate pair */
            if (p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                return *why = "unpaired surrogate in a JSON string", -1;
            p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp < 0xE000) {
            return *why = "unpaired surrogate in a JSON string", -1;
        }
        o += put_utf8(o, cp);
    }
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    if (*p) return *why = "text after the JSON string", -1;
    return (long)(o - s);
}

static void print_json_string(const char *s)
{
    putchar('"');
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        if (*u == '"' || *u == '\\') printf("\\%c", *u);
        else if (*u == '\n') fputs("\\n", stdout);
        else if (*u == '\r') fputs("\\r", stdout);
        else if (*u == '\t') fputs("\\t", stdout);
        else if (*u < 0x20 || *u == 0x7F) printf("\\u%04x", *u);
        else putchar(*u);
    }
    putchar('"');
}

static int encode_line(const plm_tokenizer *tok, char *line, size_t len, long lineno, int json,
                       int add_special)
{
    if (len && line[len - 1] == '\n') line[--len] = '\0';
    if (json) {
        const char *why = NULL;
        long n = json_string(line, &why);
        if (n < 0) return fail("line %ld: %s", lineno, why);
        len = (size_t)n;
    }
    int32_t *ids;
    size_t n_ids;
    plm_error err;
    if (plm_tokenize(tok, line, len, add_special, &ids, &n_ids, &err) != PLM_OK)
        return fail("line %ld: %s", lineno, err.msg);
    putchar('[');
    for (size_t i = 0; i < n_ids; i++) printf(i ? ", %d" : "%d", (int)ids[i]);
    puts("]");
    free(ids);
    return CLI_OK;
}

static int decode_line(const plm_tokenizer *tok, const char *line, long lineno, int json,
                       int skip_special)
{
    cJSON *arr = cJSON_Parse(line);
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        return fail("line %ld: expected a JSON array of token ids", lineno);
    }
    int n = cJSON_GetArraySize(arr), i = 0;
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    if (!ids) {
        cJSON_Delete(arr);
        return fail("line %ld: out of memory", lineno);
    }
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > INT32_MAX ||
            e->valuedouble != (double)(int32_t)e->valuedouble) {
            free(ids);
            cJSON_Delete(arr);
            return fail("line %ld: element %d is not a token id", lineno, i);
        }
        ids[i] = (int32_t)e->valuedouble;
    }
    cJSON_Delete(arr);
    char *text;
    plm_error err;
    plm_status st = plm_detokenize(tok, ids, (size_t)n, skip_special, &text, &err);
    free(ids);
    if (st != PLM_OK) return fail("line %ld: %s", lineno, err.msg);
    if (json) print_json_string(text);
    else fputs(text, stdout);
    putchar('\n');
    free(text);
    return CLI_OK;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *file = NULL;
    int decode = 0, json = 0, special = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--model")) {
            if (!(model = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
        } else if (!strcmp(a, "--tokenizer")) {
            if (!(file = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
        } else if (!strcmp(a, "--decode")) {
            decode = 1;
        } else if (!strcmp(a, "--json-lines")) {
            json = 1;
        } else if (!strcmp(a, "--no-special")) {
            special = 0;
        } else {
            fprintf(stderr, "prunelm " CMD ": unknown option '%s'\n", a);
            usage(stderr);
            return CLI_USAGE;
        }
    }
    if (!model == !file) {
        fprintf(stderr, "prunelm " CMD ": give exactly one of --model DIR or --tokenizer FILE\n");
        usage(stderr);
        return CLI_USAGE;
    }
    char path[4096];
    if (model && snprintf(path, sizeof path, "%s/tokenizer.json", model) >= (int)sizeof path) {
        fprintf(stderr, "prunelm " CMD ": --model path is too long\n");
        return CLI_USAGE;
    }
    plm_tokenizer *tok;
    plm_error err;
    if (plm_tokenizer_load(model ? path : file, &tok, &err) != PLM_OK)
        return fail("%s", err.msg);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = CLI_OK;
    while (rc == CLI_OK && (len = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        rc = decode ? decode_line(tok, line, lineno, json, !special)
                    : encode_line(tok, line, (size_t)len, lineno, json, special);
        fflush(stdout);
    }
    free(line);
    plm_tokenizer_free(tok);
    return rc;
}
