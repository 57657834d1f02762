/* What the fuzz targets share: per-process temporary files (several loaders take a path, not a
 * buffer), a UTF-8 check, and invariant checks that abort, so that a broken invariant is a
 * crash both under libFuzzer and in the Criterion replay (tests/test_fuzz_regressions.c).
 *
 * Each target's body is `int fuzz_<name>(const uint8_t *, size_t)`; the libFuzzer entry point
 * is compiled only without PLM_FUZZ_NO_MAIN, which the replay test defines. */
#ifndef PLM_FUZZ_UTIL_H
#define PLM_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"

int fuzz_image(const uint8_t *data, size_t size);
int fuzz_safetensors(const uint8_t *data, size_t size);
int fuzz_config(const uint8_t *data, size_t size);
int fuzz_tokenizer_json(const uint8_t *data, size_t size);
int fuzz_tokenize(const uint8_t *data, size_t size);
int fuzz_jsonl(const uint8_t *data, size_t size);
int fuzz_prune_spec(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant broken at %s:%d: ", __FILE__, __LINE__);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A call either succeeds or fails with a known status and a message saying why (STYLE.md:
 * "each malformed-input test asserts the message"). err must have been zeroed before the call. */
static inline void fuzz_check_status(plm_status st, const plm_error *err, const char *call)
{
    FUZZ_CHECK(st >= PLM_OK && st <= PLM_E_CANCELLED, "%s returned unknown status %d", call,
               (int)st);
    FUZZ_CHECK(memchr(err->msg, '\0', sizeof err->msg) != NULL, "%s: message not terminated",
               call);
    FUZZ_CHECK(st == PLM_OK || err->msg[0], "%s failed (%s) without a message", call,
               plm_status_str(st));
}

/* Length of the valid UTF-8 prefix of s[0..n) (n when all of it is valid). */
static inline size_t fuzz_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!k || i + k > n) return i;
        uint32_t cp = k == 1 ? c : k == 2 ? c & 0x1Fu : k == 3 ? c & 0x0Fu : c & 0x07u;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (s[i + j] & 0x3Fu);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += k;
    }
    return n;
}

/* "<dir>/plm_fuzz_<tag>_<pid>": TMPDIR when set, else /dev/shm (no disk traffic at thousands
 * of files a second), else /tmp. The pid keeps parallel fuzzers and Criterion's forked tests
 * apart. */
static inline void fuzz_tmp_path(char *buf, size_t n, const char *tag)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(buf, n, "%s/plm_fuzz_%s_%ld", dir, tag, (long)getpid());
}

/* Writes the bytes to path; a failure here is the machine's, not the code's: abort so the run
 * does not go on testing nothing. */
static inline void fuzz_write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL, "cannot create %s", path);
    FUZZ_CHECK(size == 0 || fwrite(data, 1, size, f) == size, "cannot write %s", path);
    FUZZ_CHECK(fclose(f) == 0, "cannot write %s", path);
}

/* The input as a NUL-terminated string (malloc'd; an embedded NUL ends it early). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    FUZZ_CHECK(s != NULL, "out of memory");
    if (size) memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

#endif
