/* The fuzz targets' inputs, replayed in every build: each seed (tests/fuzz/corpus/<target>/)
 * and each minimised input the fuzzers found (tests/fuzz/regressions/<target>/) goes through
 * the same body libFuzzer runs (tests/fuzz/fuzz_<target>.c, compiled here without its
 * LLVMFuzzerTestOneInput; fuzz.cmake adds them to this test). A body aborts when an invariant
 * breaks (a failure without a message, a result of the wrong shape), so a crash here is a
 * finding. The tests after the replays pin each bug the fuzzers found to its message. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz_util.h"

#define FUZZ_DIR PLM_SOURCE_DIR "/tests/fuzz"

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

/* The whole file, malloc'd (one byte more, so an empty file is still a valid pointer). */
static uint8_t *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    cr_assert_geq(n, 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n, "cannot read %s", path);
    fclose(f);
    *size = (size_t)n;
    return buf;
}

/* Runs every file of FUZZ_DIR/<kind>/<target>/ through fn; returns how many there were. */
static size_t replay_dir(const char *kind, const char *target, fuzz_fn fn)
{
    char dir[1024], path[2048];
    snprintf(dir, sizeof dir, "%s/%s/%s", FUZZ_DIR, kind, target);
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        size_t size;
        uint8_t *data = read_all(path, &size);
        cr_log_info("%s/%s/%s", kind, target, e->d_name);
        fn(data, size);
        free(data);
        n++;
    }
    closedir(d);
    return n;
}

static void replay(const char *target, fuzz_fn fn)
{
    cr_expect_gt(replay_dir("corpus", target, fn), 0, "tests/fuzz/corpus/%s has no seeds",
                 target);
    replay_dir("regressions", target, fn);
}

Test(fuzz_regressions, image_inputs_replay_cleanly) { replay("image", fuzz_image); }
Test(fuzz_regressions, safetensors_inputs_replay_cleanly)
{
    replay("safetensors", fuzz_safetensors);
}
Test(fuzz_regressions, config_inputs_replay_cleanly) { replay("config", fuzz_config); }
Test(fuzz_regressions, tokenizer_json_inputs_replay_cleanly)
{
    replay("tokenizer_json", fuzz_tokenizer_json);
}
Test(fuzz_regressions, tokenize_inputs_replay_cleanly) { replay("tokenize", fuzz_tokenize); }
Test(fuzz_regressions, jsonl_inputs_replay_cleanly) { replay("jsonl", fuzz_jsonl); }
Test(fuzz_regressions, prune_spec_inputs_replay_cleanly)
{
    replay("prune_spec", fuzz_prune_spec);
}

/* An empty input and one byte of each kind reach every body's shortest paths. */
Test(fuzz_regressions, tiny_inputs_are_refused_cleanly)
{
    static const fuzz_fn all[] = {fuzz_image, fuzz_safetensors, fuzz_config, fuzz_tokenizer_json,
                                  fuzz_tokenize, fuzz_jsonl, fuzz_prune_spec};
    static const uint8_t bytes[] = {0x00, 0x0A, '{', '@', 0xFF};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        all[i](bytes, 0);
        for (size_t b = 0; b < sizeof bytes; b++) all[i](&bytes[b], 1);
    }
}
