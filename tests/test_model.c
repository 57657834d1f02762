/* End to end against transformers: every checkpoint in tests/fixtures/models was built by
 * tests/ref/make_llava_fixtures.py, which recorded what transformers 5.17 computes for it. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/npy.h"
#include "prunelm.h"
#include "tests/support/compare.h"
#include "vision/image.h"

#define FIX PLM_SOURCE_DIR "/tests/fixtures/models/"

typedef struct ref_case {
    const char *name;
    double tol; /* relative L2 for features and logits */
} ref_case;

static const ref_case CASES[] = {
    {"tiny_f32", 1e-4},
    {"gqa_bf16_sharded", 2e-2},
    {"mqa_f32_oldnames", 1e-4},
};

static npy_array load_npy(const char *dir, const char *file)
{
    char path[1024];
    snprintf(path, sizeof path, "%s%s/ref/%s", FIX, dir, file);
    npy_array a;
    plm_error err;
    cr_assert_eq(npy_read(path, &a, &err), PLM_OK, "%s", err.msg);
    return a;
}

static char *meta_str(const char *dir, const char *key)
{
    char path[1024];
    snprintf(path, sizeof path, "%s%s/ref/meta.json", FIX, dir);
    cJSON *j;
    plm_error err;
    cr_assert_eq(json_load_file(path, 1 << 20, &j, &err), PLM_OK, "%s", err.msg);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    cr_assert(cJSON_IsString(v));
    char *s = strdup(v->valuestring);
    cJSON_Delete(j);
    return s;
}

static plm_model *load_model(const char *name)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s%s", FIX, name);
    plm_model_params mp = plm_model_default_params();
    mp.device = PLM_DEVICE_CPU;
    mp.n_threads = 2;
    plm_model *m;
    plm_error err;
    cr_assert_eq(plm_model_load(dir, &mp, &m, &err), PLM_OK, "%s", err.msg);
    return m;
}

static void check_ids(const int32_t *got, size_t n, const npy_array *want, const char *what)
{
    cr_assert_eq(n, want->count, "%s: %zu ids, reference has %zu", what, n, want->count);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want->i[i], "%s: id %zu is %d, reference %lld", what, i, got[i],
                     (long long)want->i[i]);
}

/* Runs one prompt (with or without the image) and compares ids, logits and the greedy
 * continuation with the reference files carrying the given prefix. */
static void check_prompt(const ref_case *c, int with_image)
{
    plm_model *m = load_model(c->name);
    plm_session_params sp = plm_session_default_params();
    sp.max_tokens = 16;
    plm_session *s;
    plm_error err;
    cr_assert_eq(plm_session_new(m, &sp, &s, &err), PLM_OK, "%s", err.msg);
    plm_session_keep_prompt_logits(s, 1);
    char path[1024];
    if (with_image) {
        snprintf(path, sizeof path, "%s%s/image.png", FIX, c->name);
        cr_assert_eq(plm_session_set_image_file(s, path), PLM_OK, "%s", plm_last_error(s));
    }
    char *prompt = meta_str(c->name, with_image ? "question_prompt" : "text_prompt");
    char *answer = NULL;
    cr_assert_eq(plm_session_generate(s, prompt, NULL, NULL, &answer), PLM_OK, "%s",
                 plm_last_error(s));
    const char *pre = with_image ? "" : "text_";
    char f[64];
    size_t n_prompt, n_total;
    const int32_t *ids = plm_session_tokens(s, &n_prompt, &n_total);
    snprintf(f, sizeof f, "%sinput_ids.npy", pre);
    npy_array want_ids = load_npy(c->name, f);
    check_ids(ids, n_prompt, &want_ids, "prompt");

    snprintf(f, sizeof f, "%slogits.npy", pre);
    npy_array want_logits = load_npy(c->name, f);
    size_t rows, vocab;
    const float *lg = plm_session_prompt_logits(s, &rows, &vocab);
    cr_assert_eq(rows * vocab, want_logits.count);
    double e = rel_l2(lg, want_logits.f, want_logits.count);
    cr_assert(e < c->tol, "%s %slogits: relative L2 error %.3g over %.1g", c->name, pre, e, c->tol);
    cr_log_info("%s %slogits: relative L2 error %.3g (limit %.1g)", c->name, pre, e, c->tol);

    snprintf(f, sizeof f, "%sgreedy.npy", pre);
    npy_array want_gen = load_npy(c->name, f);
    check_ids(ids + n_prompt, n_total - n_prompt, &want_gen, "greedy continuation");

    if (with_image) {
        npy_array px = load_npy(c->name, "pixels.npy");
        int h, w;
        const float *p = plm_session_pixels(s, &h, &w);
        cr_assert_eq((size_t)3 * h * w, px.count);
        double d = max_abs_diff(p, px.f, px.count);
        cr_assert(d <= 1e-5, "%s pixels: max difference %.3g", c->name, d);
        cr_log_info("%s pixels: max difference %.3g", c->name, d);
        npy_array ft = load_npy(c->name, "image_features.npy");
        size_t fr, fc;
        const float *fp = plm_session_image_features(s, &fr, &fc);
        cr_assert_eq(fr * fc, ft.count);
        e = rel_l2(fp, ft.f, ft.count);
        cr_assert(e < c->tol, "%s features: relative L2 error %.3g", c->name, e);
        cr_log_info("%s features: relative L2 error %.3g", c->name, e);
        npy_free(&px);
        npy_free(&ft);
    }
    npy_free(&want_ids);
    npy_free(&want_logits);
    npy_free(&want_gen);
    free(prompt);
    free(answer);
    plm_session_free(s);
    plm_model_free(m);
}

Test(model, tiny_f32_image_prompt_matches_transformers) { check_prompt(&CASES[0], 1); }
Test(model, tiny_f32_text_prompt_matches_transformers) { check_prompt(&CASES[0], 0); }
Test(model, gqa_bf16_sharded_image_prompt_matches_transformers) { check_prompt(&CASES[1], 1); }
Test(model, gqa_bf16_sharded_text_prompt_matches_transformers) { check_prompt(&CASES[1], 0); }
Test(model, mqa_f32_oldnames_image_prompt_matches_transformers) { check_prompt(&CASES[2], 1); }
Test(model, mqa_f32_oldnames_text_prompt_matches_transformers) { check_prompt(&CASES[2], 0); }

Test(model, describe_names_every_component)
{
    plm_model *m = load_model("gqa_bf16_sharded");
    char *d = plm_model_describe(m);
    cr_assert(strstr(d, "vision tower: CLIP ViT, 3 layers"), "%s", d);
    cr_assert(strstr(d, "6 heads (2 KV"), "%s", d);
    cr_assert(strstr(d, "rope llama3"), "%s", d);
    cr_assert(strstr(d, "dtype BF16"), "%s", d);
    free(d);
    plm_model_free(m);
}

static plm_session *session_for(plm_model *m, int n_ctx, int max_tokens)
{
    plm_session_params sp = plm_session_default_params();
    sp.n_ctx = n_ctx;
    sp.max_tokens = max_tokens;
    plm_session *s;
    plm_error err;
    cr_assert_eq(plm_session_new(m, &sp, &s, &err), PLM_OK, "%s", err.msg);
    return s;
}

Test(model, prompt_longer_than_context_is_refused)
{
    plm_model *m = load_model("tiny_f32");
    plm_session *s = session_for(m, 16, 4);
    char *answer = (char *)1;
    plm_status st = plm_session_ask(s, "tell me a long story about the red cat and the blue dog "
                                    "and the green circle", NULL, NULL, &answer);
    cr_assert_eq(st, PLM_E_LIMIT);
    cr_assert_null(answer);
    cr_assert(strstr(plm_last_error(s), "over the context of 16"), "%s", plm_last_error(s));
    plm_session_free(s);
    plm_model_free(m);
}

Test(model, max_tokens_beyond_the_context_is_refused)
{
    plm_model *m = load_model("tiny_f32");
    plm_session_params sp = plm_session_default_params();
    sp.max_tokens = 100000;
    plm_session *s = NULL;
    plm_error err;
    cr_assert_eq(plm_session_new(m, &sp, &s, &err), PLM_E_LIMIT);
    cr_assert(strstr(err.msg, "max_tokens 100000"), "%s", err.msg);
    plm_model_free(m);
}

Test(model, image_marker_without_image_is_refused)
{
    plm_model *m = load_model("tiny_f32");
    plm_session *s = session_for(m, 0, 4);
    cr_assert_eq(plm_session_generate(s, "USER: <image>\nhi ASSISTANT:", NULL, NULL, NULL),
                 PLM_E_ARG);
    cr_assert(strstr(plm_last_error(s), "no image was given"), "%s", plm_last_error(s));
    plm_session_free(s);
    plm_model_free(m);
}

Test(model, rgb_buffer_image_equals_file_image)
{
    /* The same pixels through the buffer API must give exactly the file's features. */
    plm_model *m = load_model("tiny_f32");
    plm_session *a = session_for(m, 0, 1), *b = session_for(m, 0, 1);
    cr_assert_eq(plm_session_set_image_file(a, FIX "tiny_f32/image.png"), PLM_OK);
    cr_assert_eq(plm_session_ask(a, "what?", NULL, NULL, NULL), PLM_OK, "%s", plm_last_error(a));
    plm_image img;
    plm_error err;
    cr_assert_eq(img_load_file(FIX "tiny_f32/image.png", 1000000, &img, &err), PLM_OK);
    cr_assert_eq(plm_session_set_image_rgb(b, img.rgb, img.width, img.height), PLM_OK);
    img_free(&img);
    cr_assert_eq(plm_session_ask(b, "what?", NULL, NULL, NULL), PLM_OK, "%s", plm_last_error(b));
    size_t ra, ca, rb, cb;
    const float *fa = plm_session_image_features(a, &ra, &ca);
    const float *fb = plm_session_image_features(b, &rb, &cb);
    cr_assert_eq(ra * ca, rb * cb);
    cr_assert_eq(memcmp(fa, fb, ra * ca * sizeof(float)), 0);
    plm_session_free(b);
    plm_session_free(a);
    plm_model_free(m);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* A copy of a fixture directory whose config.json is replaced by `config`. */
static void model_with_config(char *dir, size_t n, const char *config)
{
    snprintf(dir, n, "%s/cfgtest_XXXXXX", PLM_BINARY_DIR);
    cr_assert(mkdtemp(dir));
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cp -r %stiny_f32/* %s/", FIX, dir);
    cr_assert_eq(system(cmd), 0);
    char path[1100];
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, config);
}

static void rm_dir(const char *dir)
{
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

static void expect_load_error(const char *config, plm_status want, const char *needle)
{
    char dir[1024];
    model_with_config(dir, sizeof dir, config);
    plm_model *m = NULL;
    plm_error err;
    plm_model_params mp = plm_model_default_params();
    plm_status st = plm_model_load(dir, &mp, &m, &err);
    rm_dir(dir);
    cr_assert_eq(st, want, "status %d, message: %s", st, err.msg);
    cr_assert_null(m);
    cr_assert(strstr(err.msg, needle), "message '%s' lacks '%s'", err.msg, needle);
}

Test(model, config_without_model_type_is_refused)
{
    expect_load_error("{\"text_config\": {}}", PLM_E_MISSING, "model_type");
}

Test(model, config_field_of_wrong_type_is_refused)
{
    expect_load_error("{\"model_type\": \"llava\", \"text_config\": {\"hidden_size\": \"big\"}}",
                      PLM_E_FORMAT, "hidden_size");
}

Test(model, config_that_disagrees_with_the_weights_names_the_tensor)
{
    /* Hub configs leave most fields to the defaults; a checkpoint whose weights do not match
     * them must say which tensor is wrong. */
    expect_load_error("{\"model_type\": \"llava\", \"vision_config\": {\"hidden_size\": 32, "
                      "\"intermediate_size\": 64, \"num_hidden_layers\": 2, "
                      "\"num_attention_heads\": 4, \"image_size\": 28, \"patch_size\": 14}, "
                      "\"image_token_index\": 512, \"text_config\": {\"vocab_size\": 514}}",
                      PLM_E_SHAPE, "embed_tokens.weight' has shape [514, 64], expected [514, 4096]");
}

Test(model, unsupported_rope_type_is_refused)
{
    expect_load_error("{\"model_type\": \"llava\", \"text_config\": {\"rope_scaling\": "
                      "{\"rope_type\": \"yarn\", \"factor\": 4}}}",
                      PLM_E_UNSUPPORTED, "rope_type 'yarn'");
}

Test(model, missing_directory_is_refused)
{
    plm_model *m;
    plm_error err;
    cr_assert_eq(plm_model_load("/nonexistent/model", NULL, &m, &err), PLM_E_IO);
    cr_assert(strstr(err.msg, "/nonexistent/model"), "%s", err.msg);
}

/* A copy of tiny_f32 whose tokenizer.json has no post_processor, and a tokenizer_config.json
 * saying add_bos_token (or not). */
static plm_model *model_without_template(char *dir, size_t n, const char *tok_config)
{
    model_with_config(dir, n, "");
    char cmd[4096], path[1100];
    snprintf(cmd, sizeof cmd, "cp %stiny_f32/config.json %s/", FIX, dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    cJSON *j;
    plm_error err;
    cr_assert_eq(json_load_file(path, 1 << 24, &j, &err), PLM_OK, "%s", err.msg);
    cJSON_ReplaceItemInObject(j, "post_processor", cJSON_CreateNull());
    char *text = cJSON_Print(j);
    write_file(path, text);
    free(text);
    cJSON_Delete(j);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    write_file(path, tok_config);
    plm_model *m;
    cr_assert_eq(plm_model_load(dir, NULL, &m, &err), PLM_OK, "%s", err.msg);
    return m;
}

static int32_t first_prompt_id(plm_model *m)
{
    plm_session *s = session_for(m, 0, 1);
    cr_assert_eq(plm_session_ask(s, "hi", NULL, NULL, NULL), PLM_OK, "%s", plm_last_error(s));
    size_t n;
    int32_t first = plm_session_tokens(s, &n, NULL)[0];
    plm_session_free(s);
    return first;
}

Test(model, bos_comes_from_tokenizer_config_when_the_template_has_none)
{
    char dir[1024];
    plm_model *m = model_without_template(dir, sizeof dir, "{\"add_bos_token\": true}");
    cr_assert_eq(first_prompt_id(m), 1);
    plm_model_free(m);
    rm_dir(dir);
    m = model_without_template(dir, sizeof dir, "{\"add_bos_token\": false}");
    cr_assert_neq(first_prompt_id(m), 1);
    plm_model_free(m);
    rm_dir(dir);
}

/* Writes a safetensors file: the header JSON padded to 8 bytes, then the data. */
static void write_safetensors(const char *path, const cJSON *header, const void *data, size_t n)
{
    char *text = cJSON_PrintUnformatted(header);
    size_t tl = strlen(text), padded = (tl + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    cr_assert(f, "%s", path);
    uint64_t nl = padded;
    fwrite(&nl, 8, 1, f);
    fwrite(text, 1, tl, f);
    for (size_t i = tl; i < padded; i++) fputc(' ', f);
    fwrite(data, 1, n, f);
    fclose(f);
    free(text);
}

/* A safetensors file read whole: its parsed header and where its data section starts. */
typedef struct st_copy {
    char *buf;
    size_t len;
    cJSON *header;
    const char *data;
    size_t data_len;
} st_copy;

static st_copy read_safetensors(const char *path)
{
    st_copy c;
    plm_error err;
    cr_assert_eq(plm_read_file(path, 1 << 26, &c.buf, &c.len, &err), PLM_OK, "%s", err.msg);
    uint64_t hl;
    memcpy(&hl, c.buf, 8);
    c.header = cJSON_ParseWithLength(c.buf + 8, (size_t)hl);
    cr_assert(c.header, "%s: header", path);
    c.data = c.buf + 8 + hl;
    c.data_len = c.len - 8 - hl;
    return c;
}

static void st_copy_free(st_copy *c)
{
    cJSON_Delete(c->header);
    free(c->buf);
}

/* Rewrites dir/model.safetensors with every "vision_tower." name renamed to the Hub 4.x form
 * "vision_tower.vision_model." (same data bytes, a new header). */
static void rename_to_hub_layout(const char *dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_copy c = read_safetensors(path);
    cJSON *n = cJSON_CreateObject();
    for (cJSON *e = c.header->child; e; e = e->next) {
        char name[512];
        if (!strncmp(e->string, "vision_tower.", 13))
            snprintf(name, sizeof name, "vision_tower.vision_model.%s", e->string + 13);
        else
            snprintf(name, sizeof name, "%s", e->string);
        cJSON_AddItemToObject(n, name, cJSON_Duplicate(e, 1));
    }
    write_safetensors(path, n, c.data, c.data_len);
    st_copy_free(&c);
    cJSON_Delete(n);
}

static float *image_logits_as(const char *dir, plm_weights_dtype w, size_t *n)
{
    plm_model *m;
    plm_error err;
    plm_model_params mp = plm_model_default_params();
    mp.device = PLM_DEVICE_CPU;
    mp.weights = w;
    cr_assert_eq(plm_model_load(dir, &mp, &m, &err), PLM_OK, "%s", err.msg);
    plm_session *s = session_for(m, 0, 1);
    plm_session_keep_prompt_logits(s, 1);
    char img[1100];
    snprintf(img, sizeof img, "%s/image.png", dir);
    cr_assert_eq(plm_session_set_image_file(s, img), PLM_OK);
    cr_assert_eq(plm_session_ask(s, "What is it?", NULL, NULL, NULL), PLM_OK, "%s", plm_last_error(s));
    size_t r, v;
    const float *l = plm_session_prompt_logits(s, &r, &v);
    float *out = malloc(r * v * sizeof *out);
    memcpy(out, l, r * v * sizeof *out);
    *n = r * v;
    plm_session_free(s);
    plm_model_free(m);
    return out;
}

static float *image_logits(const char *dir, size_t *n)
{
    return image_logits_as(dir, PLM_WEIGHTS_STORED, n);
}

Test(model, hub_4x_layout_loads_the_same_model)
{
    /* llava-hf checkpoints on the Hub: vision_tower.vision_model.* names and a separate
     * preprocessor_config.json instead of 5.x's processor_config.json */
    char dir[1024];
    model_with_config(dir, sizeof dir, "");
    char cmd[4096], path[1100];
    snprintf(cmd, sizeof cmd, "cp %stiny_f32/config.json %s/", FIX, dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(path, sizeof path, "%s/processor_config.json", dir);
    cJSON *pc;
    plm_error err;
    cr_assert_eq(json_load_file(path, 1 << 20, &pc, &err), PLM_OK, "%s", err.msg);
    char *ip = cJSON_Print(cJSON_GetObjectItem(pc, "image_processor"));
    cJSON_Delete(pc);
    cr_assert_eq(remove(path), 0);
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    write_file(path, ip);
    free(ip);
    rename_to_hub_layout(dir);
    size_t na, nb;
    float *a = image_logits(FIX "tiny_f32", &na), *b = image_logits(dir, &nb);
    cr_assert_eq(na, nb);
    cr_assert_eq(memcmp(a, b, na * sizeof *a), 0);
    free(a);
    free(b);
    rm_dir(dir);
}

/* float -> IEEE half, round to nearest even (normal range; the fixture's weights are small). */
static uint16_t to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffff;
    if (exp <= 0) { /* subnormal or zero */
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    uint32_t h = ((uint32_t)exp << 10) | (man >> 13), rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

/* Rewrites dir/model.safetensors with every F32 tensor stored as F16. */
static void convert_to_f16(const char *dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_copy c = read_safetensors(path);
    const char *data = c.data;
    cJSON *h = c.header, *n = cJSON_CreateObject();
    size_t total = 0;
    for (cJSON *e = h->child; e; e = e->next)
        if (strcmp(e->string, "__metadata__")) {
            cJSON *o = cJSON_GetObjectItem(e, "data_offsets");
            total += (size_t)(cJSON_GetArrayItem(o, 1)->valuedouble -
                              cJSON_GetArrayItem(o, 0)->valuedouble) / 2;
        }
    char *out = malloc(total), *w = out;
    for (cJSON *e = h->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) continue;
        cJSON *o = cJSON_GetObjectItem(e, "data_offsets");
        size_t b = (size_t)cJSON_GetArrayItem(o, 0)->valuedouble;
        size_t end = (size_t)cJSON_GetArrayItem(o, 1)->valuedouble;
        size_t count = (end - b) / 4, start = (size_t)(w - out);
        for (size_t i = 0; i < count; i++) {
            float f;
            memcpy(&f, data + b + 4 * i, 4);
            uint16_t v = to_f16(f);
            memcpy(w, &v, 2);
            w += 2;
        }
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "dtype", "F16");
        cJSON_AddItemToObject(t, "shape", cJSON_Duplicate(cJSON_GetObjectItem(e, "shape"), 1));
        cJSON *offs = cJSON_CreateArray();
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)start));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(w - out)));
        cJSON_AddItemToObject(t, "data_offsets", offs);
        cJSON_AddItemToObject(n, e->string, t);
    }
    write_safetensors(path, n, out, (size_t)(w - out));
    free(out);
    st_copy_free(&c);
    cJSON_Delete(n);
}

Test(model, f16_checkpoint_matches_the_f32_one_within_f16_rounding)
{
    char dir[1024], cmd[2200];
    model_with_config(dir, sizeof dir, "");
    snprintf(cmd, sizeof cmd, "cp %stiny_f32/config.json %s/", FIX, dir);
    cr_assert_eq(system(cmd), 0);
    convert_to_f16(dir);
    plm_model *m;
    plm_error err;
    cr_assert_eq(plm_model_load(dir, NULL, &m, &err), PLM_OK, "%s", err.msg);
    char *d = plm_model_describe(m);
    cr_assert(strstr(d, "dtype F16"), "%s", d);
    free(d);
    plm_model_free(m);
    size_t n;
    float *l = image_logits(dir, &n);
    /* image_logits asks "What is it?"; compare with the same question on the f32 original */
    size_t n0;
    float *l0 = image_logits(FIX "tiny_f32", &n0);
    cr_assert_eq(n, n0);
    double e = rel_l2(l, l0, n);
    cr_assert(e > 0 && e < 1e-2, "F16 vs F32 logits: relative L2 %.3g", e);
    free(l);
    free(l0);
    rm_dir(dir);
}

static char *describe_as(const char *dir, plm_weights_dtype w)
{
    plm_model *m;
    plm_error err;
    plm_model_params mp = plm_model_default_params();
    mp.device = PLM_DEVICE_CPU;
    mp.weights = w;
    cr_assert_eq(plm_model_load(dir, &mp, &m, &err), PLM_OK, "%s", err.msg);
    char *d = plm_model_describe(m);
    plm_model_free(m);
    return d;
}

/* --dtype: a float32 checkpoint's matrices rounded to 16 bits on load give logits within the
 * rounding of the float32 ones (and not equal to them: the conversion happened); a 16-bit
 * checkpoint is kept as stored. */
Test(model, f32_weights_rounded_on_load)
{
    size_t n0, n;
    float *l0 = image_logits(FIX "tiny_f32", &n0);
    const plm_weights_dtype to[2] = {PLM_WEIGHTS_BF16, PLM_WEIGHTS_F16};
    const char *name[2] = {"dtype BF16", "dtype F16"};
    const double limit[2] = {3e-2, 5e-3};
    for (int k = 0; k < 2; k++) {
        char *d = describe_as(FIX "tiny_f32", to[k]);
        cr_assert(strstr(d, name[k]) && !strstr(d, "dtype F32"), "%s", d);
        free(d);
        float *l = image_logits_as(FIX "tiny_f32", to[k], &n);
        cr_assert_eq(n, n0);
        double e = rel_l2(l, l0, n);
        cr_assert(e > 0 && e < limit[k], "%s vs F32 logits: relative L2 %.3g", name[k], e);
        free(l);
    }
    free(l0);
    char *d = describe_as(FIX "gqa_bf16_sharded", PLM_WEIGHTS_F16);
    cr_assert(strstr(d, "dtype BF16") && !strstr(d, "dtype F16"), "%s", d);
    free(d);
}

/* A plain Llama checkpoint made from mqa_f32_oldnames' language model: the text_config as
 * config.json, the LlamaForCausalLM names, no vision weights, no image processor. */
static void make_text_only(const char *dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%smqa_f32_oldnames/config.json", FIX);
    cJSON *cfg;
    plm_error err;
    cr_assert_eq(json_load_file(path, 1 << 20, &cfg, &err), PLM_OK, "%s", err.msg);
    char *text = cJSON_Print(cJSON_GetObjectItem(cfg, "text_config"));
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, text);
    free(text);
    cJSON_Delete(cfg);
    /* gather the language-model tensors of every shard into one model.safetensors */
    cJSON *n = cJSON_CreateObject();
    size_t cap = 1 << 22, used = 0;
    char *data = malloc(cap);
    for (int shard = 1; shard <= 8; shard++) {
        snprintf(path, sizeof path, "%smqa_f32_oldnames/model-%05d-of-00008.safetensors", FIX, shard);
        st_copy sc = read_safetensors(path);
        for (cJSON *e = sc.header->child; e; e = e->next) {
            const char *name = e->string, *rest = NULL;
            char newname[512];
            if (!strncmp(name, "language_model.model.", 21)) rest = name + 21;
            if (rest) snprintf(newname, sizeof newname, "model.%s", rest);
            else if (!strcmp(name, "language_model.lm_head.weight")) strcpy(newname, "lm_head.weight");
            else continue;
            cJSON *o = cJSON_GetObjectItem(e, "data_offsets");
            size_t b = (size_t)cJSON_GetArrayItem(o, 0)->valuedouble;
            size_t end = (size_t)cJSON_GetArrayItem(o, 1)->valuedouble;
            cr_assert(used + (end - b) <= cap);
            memcpy(data + used, sc.data + b, end - b);
            cJSON *t = cJSON_CreateObject();
            cJSON_AddStringToObject(t, "dtype", cJSON_GetObjectItem(e, "dtype")->valuestring);
            cJSON_AddItemToObject(t, "shape", cJSON_Duplicate(cJSON_GetObjectItem(e, "shape"), 1));
            cJSON *offs = cJSON_CreateArray();
            cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)used));
            cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(used + end - b)));
            cJSON_AddItemToObject(t, "data_offsets", offs);
            cJSON_AddItemToObject(n, newname, t);
            used += end - b;
        }
        st_copy_free(&sc);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_safetensors(path, n, data, used);
    free(data);
    cJSON_Delete(n);
    char cmd[2300];
    snprintf(cmd, sizeof cmd, "cp %smqa_f32_oldnames/tokenizer.json %smqa_f32_oldnames/"
             "tokenizer_config.json %s/", FIX, FIX, dir);
    cr_assert_eq(system(cmd), 0);
}

Test(model, a_plain_llama_checkpoint_answers_text_like_transformers)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/textonly_XXXXXX", PLM_BINARY_DIR);
    cr_assert(mkdtemp(dir));
    make_text_only(dir);
    plm_model *m;
    plm_error err;
    cr_assert_eq(plm_model_load(dir, NULL, &m, &err), PLM_OK, "%s", err.msg);
    cr_assert_not(plm_model_has_vision(m));
    plm_session *s = session_for(m, 0, 16);
    plm_session_keep_prompt_logits(s, 1);
    char *prompt = meta_str("mqa_f32_oldnames", "text_prompt");
    cr_assert_eq(plm_session_generate(s, prompt, NULL, NULL, NULL), PLM_OK, "%s", plm_last_error(s));
    npy_array want = load_npy("mqa_f32_oldnames", "text_logits.npy");
    size_t rows, vocab;
    const float *lg = plm_session_prompt_logits(s, &rows, &vocab);
    cr_assert_eq(rows * vocab, want.count);
    double e = rel_l2(lg, want.f, want.count);
    cr_assert(e < 1e-4, "text-only logits: relative L2 %.3g", e);
    /* an image cannot be attached to a model without a vision tower */
    cr_assert_eq(plm_session_set_image_file(s, FIX "mqa_f32_oldnames/image.png"), PLM_E_UNSUPPORTED);
    npy_free(&want);
    free(prompt);
    plm_session_free(s);
    plm_model_free(m);
    rm_dir(dir);
}
