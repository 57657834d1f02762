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

#include "api/config.h"
#include "lm/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"
#include "vision/image.h"
#include "vision/preprocess.h"

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

/* ---- what the fuzzers found ---------------------------------------------------------------- */

static uint8_t *regression(const char *target, const char *name, size_t *size)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/regressions/%s/%s", FUZZ_DIR, target, name);
    return read_all(path, size);
}

/* fuzz_image: stb_image 2.27 widens a 16-bit P5 to RGB with its 8-bit routine and reads twice
 * the buffer (ASan: heap-buffer-overflow in stbi__convert_16_to_8); its 16-bit P6 comes out
 * from the low byte of each sample. Both are refused before stb sees them. */
Test(fuzz_regressions, pnm_16bit_is_refused)
{
    size_t n;
    uint8_t *data = regression("image", "pnm16_p5_convert_overread.pgm", &n);
    plm_image img;
    plm_error err = {{0}};
    cr_assert_eq(img_load_memory(data, n, "p5.pgm", 0, &img, &err), PLM_E_UNSUPPORTED);
    cr_expect_str_eq(err.msg, "p5.pgm: 16-bit PNM (maxval 655) is not supported");
    cr_expect_null(img.rgb);
    free(data);
    const uint8_t p6[] = "P6\n1 1\n65535\n\x12\x34\x56\x78\x9a\xbc";
    cr_assert_eq(img_load_memory(p6, sizeof p6 - 1, "p6.ppm", 0, &img, &err), PLM_E_UNSUPPORTED);
    cr_expect_str_eq(err.msg, "p6.ppm: 16-bit PNM (maxval 65535) is not supported");
    /* 8-bit stays as it was */
    const uint8_t p5[] = "P5\n2 1\n255\n\x10\xf0";
    cr_assert_eq(img_load_memory(p5, sizeof p5 - 1, "p5.pgm", 0, &img, &err), PLM_OK, "%s",
                 err.msg);
    cr_expect(img.width == 2 && img.height == 1 && img.rgb[0] == 0x10 && img.rgb[2] == 0x10 &&
              img.rgb[3] == 0xf0 && img.rgb[5] == 0xf0);
    img_free(&img);
}

/* fuzz_config: eos_token_id 1e37 (or vision_feature_layer inf) was converted to int before
 * its range was checked, undefined behaviour (UBSan: "inf is outside the range of
 * representable values of type 'int'"). */
static plm_status load_config(const char *file, plm_error *err)
{
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/fuzzcfg_XXXXXX", PLM_BINARY_DIR);
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t n;
    uint8_t *data = regression("config", file, &n);
    FILE *f = fopen(path, "wb");
    cr_assert(f && fwrite(data, 1, n, f) == n && fclose(f) == 0);
    free(data);
    llava_config c;
    plm_status st = llava_config_load(dir, &c, err);
    unlink(path);
    rmdir(dir);
    return st;
}

Test(fuzz_regressions, huge_eos_token_id_is_refused)
{
    plm_error err = {{0}};
    cr_assert_eq(load_config("eos_token_id_1e37.json", &err), PLM_E_FORMAT);
    cr_expect_str_eq(err.msg, "config.json: eos_token_id must be a token id or a list of them");
}

Test(fuzz_regressions, infinite_vision_feature_layer_is_refused)
{
    plm_error err = {{0}};
    cr_assert_eq(load_config("vision_feature_layer_inf.json", &err), PLM_E_FORMAT);
    cr_expect_str_eq(err.msg, "config.json: vision_feature_layer must be an integer or a list "
                     "of integers");
}

/* fuzz_tokenizer_json: a TemplateProcessing special token naming id 1 in a vocabulary that
 * holds only id 3 loaded, and encode then emitted 1, which is no token (the model would embed
 * whatever row 1 is). */
Test(fuzz_regressions, template_id_missing_from_vocab_is_refused)
{
    size_t n;
    uint8_t *data = regression("tokenizer_json", "template_id_not_in_vocab.json", &n);
    tok_tokenizer *t = NULL;
    plm_error err = {{0}};
    cr_assert_eq(tok_load_buffer((const char *)data, n, "tok.json", &t, &err), PLM_E_FORMAT);
    cr_expect_str_eq(err.msg, "tok.json: post_processor.special_tokens[\"<s>\"].ids[0]: id 1 is "
                     "not a token of the vocabulary");
    cr_expect_null(t);
    free(data);
}

/* fuzz_tokenizer_json: a Prepend normalizer whose string held 0xFF bytes loaded, and encode then
 * decoded the normalized text as UTF-8 past its end (ASan: heap-buffer-overflow in
 * tok_utf8_decode from the BPE's initial symbols). */
Test(fuzz_regressions, tokenizer_json_with_invalid_utf8_is_refused)
{
    size_t n;
    uint8_t *data = regression("tokenizer_json", "prepend_invalid_utf8.json", &n);
    tok_tokenizer *t = NULL;
    plm_error err = {{0}};
    cr_assert_eq(tok_load_buffer((const char *)data, n, "tok.json", &t, &err), PLM_E_FORMAT);
    cr_expect_str_eq(err.msg, "tok.json: invalid UTF-8 at byte 140");
    cr_expect_null(t);
    free(data);
}

/* fuzz_image: a 2.6 KB JPEG of 64x14592 took 5 s in LLaVA's pad to square (a 14592x14592
 * copy); a 1x49000 PNG of 175 bytes, within any pixel limit, asked for 7.2 GB there (libFuzzer:
 * out-of-memory (malloc(7203000000))). The square is now bounded like a decoded image; the
 * strip kept here is smaller (8x9000) so that the replay's 336-pixel resize stays cheap. */
Test(fuzz_regressions, pad_to_square_of_a_strip_is_refused)
{
    size_t n;
    uint8_t *data = regression("image", "pad_to_square_strip_8x9000.png", &n);
    plm_image img;
    plm_error err = {{0}};
    cr_assert_eq(img_load_memory(data, n, "strip.png", 0, &img, &err), PLM_OK, "%s", err.msg);
    free(data);
    cr_assert(img.width == 8 && img.height == 9000);
    clip_preproc_config cfg;
    clip_preproc_defaults(&cfg);
    cfg.do_pad = 1;
    float *px = NULL;
    int h, w;
    cr_assert_eq(clip_preprocess(&cfg, &img, &px, &h, &w, &err), PLM_E_LIMIT);
    cr_expect_str_eq(err.msg, "pad to square: a 8x9000 image pads to 9000x9000, over the "
                     "limit of 64 megapixels");
    cr_expect_null(px);
    /* without the pad it is an ordinary (if extreme) resize */
    cfg.do_pad = 0;
    cfg.shortest_edge = 2;
    cfg.crop_h = cfg.crop_w = 2;
    cr_assert_eq(clip_preprocess(&cfg, &img, &px, &h, &w, &err), PLM_OK, "%s", err.msg);
    cr_expect(h == 2 && w == 2);
    free(px);
    img_free(&img);
}

/* fuzz_image: 10 bytes, FF FF D8 FF C4 ..., reached stb_image as a TGA (no signature of ours
 * matched; the name chose TGA). stb sniffed a JPEG behind the 0xFF fill byte and built a
 * Huffman table of 260 codes, writing past its 257-byte array (UBSan: index 257 out of bounds
 * in stbi__build_huffman), a check our JPEG marker walk does but that path skipped. */
Test(fuzz_regressions, tga_that_stb_would_take_for_a_jpeg_is_refused)
{
    size_t n;
    uint8_t *data = regression("image", "tga_named_jpeg_dht_overflow.tga", &n);
    plm_image img;
    plm_error err = {{0}};
    cr_assert_eq(img_load_memory(data, n, "x.tga", 0, &img, &err), PLM_E_FORMAT);
    cr_expect_str_eq(err.msg, "x.tga: corrupt TGA: bad header");
    cr_expect_null(img.rgb);
    free(data);
}
