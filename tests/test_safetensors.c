#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/safetensors.h"

/* Each test gets a fresh directory under the build tree, removed afterwards. */
static char dir[1024];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "%s/st_test_XXXXXX", PLM_BINARY_DIR);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp failed");
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[2048];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

TestSuite(safetensors, .init = make_dir, .fini = remove_dir);

static const char *path_of(const char *name)
{
    static char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static void write_bytes(const char *name, const void *bytes, size_t n)
{
    FILE *f = fopen(path_of(name), "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

/* Writes a safetensors file: 8-byte little-endian header length, header, data. */
static void write_st(const char *name, const char *header, const void *data, size_t data_len)
{
    size_t hlen = strlen(header);
    unsigned char *buf = malloc(8 + hlen + data_len + 1);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    if (data_len) memcpy(buf + 8 + hlen, data, data_len);
    write_bytes(name, buf, 8 + hlen + data_len);
    free(buf);
}

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put_f32(unsigned char *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(u >> (8 * i));
}

static float get_f32(const void *p)
{
    const unsigned char *b = p;
    uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t get_u16(const void *p)
{
    const unsigned char *b = p;
    return (uint16_t)(b[0] | b[1] << 8);
}

/* Opens name (expected to fail) and checks status, the file name and needle in the message. */
static void expect_fail(const char *name, plm_status want, const char *needle)
{
    st_file *f = (st_file *)&f;
    plm_error err = {{0}};
    plm_status st = st_open(path_of(name), &f, &err);
    cr_assert_eq(st, want, "status %s, want %s; message: %s", plm_status_str(st),
                 plm_status_str(want), err.msg);
    cr_assert_null(f);
    cr_assert_not_null(strstr(err.msg, name), "message lacks the file name: %s", err.msg);
    cr_assert_not_null(strstr(err.msg, needle), "message lacks '%s': %s", needle, err.msg);
}

/* A one-tensor file with the given entry for tensor 'x' and data_len zero bytes of data. */
static void expect_entry_fail(const char *entry, size_t data_len, plm_status want,
                              const char *needle)
{
    char header[1024];
    snprintf(header, sizeof header, "{\"x\": %s}", entry);
    unsigned char *data = calloc(1, data_len + 1);
    write_st("bad.safetensors", header, data, data_len);
    free(data);
    expect_fail("bad.safetensors", want, needle);
}

Test(safetensors, reads_every_dtype_exactly)
{
    unsigned char data[64] = {0};
    const float w[6] = {1.5f, -2.25f, 3.0f, 0.0f, 1e-8f, -7.0f};
    for (int i = 0; i < 6; i++) put_f32(data + 4 * i, w[i]);
    const uint16_t h[4] = {0x3C00, 0xC000, 0x3800, 0x7BFF}; /* 1, -2, 0.5, 65504 */
    for (int i = 0; i < 4; i++) put_u16(data + 24 + 2 * i, h[i]);
    put_u16(data + 32, 0x3F80); /* bf16 1.0 */
    put_u16(data + 34, 0xC060); /* bf16 -3.5 */
    data[36] = 7;               /* I64 [7, -1] */
    memset(data + 44, 0xff, 8);
    put_f32(data + 52, 42.0f);
    const char *header =
        "{\"__metadata__\": {\"format\": \"pt\"},"
        " \"w\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 24]},"
        " \"h\": {\"dtype\": \"F16\", \"shape\": [4], \"data_offsets\": [24, 32]},"
        " \"b\": {\"dtype\": \"BF16\", \"shape\": [1, 2], \"data_offsets\": [32, 36]},"
        " \"idx\": {\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [36, 52]},"
        " \"s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [52, 56]},"
        " \"z\": {\"dtype\": \"F32\", \"shape\": [0, 4], \"data_offsets\": [56, 56]}}   ";
    write_st("model.safetensors", header, data, 56);

    st_file *f;
    plm_error err = {{0}};
    cr_assert_eq(st_open(path_of("model.safetensors"), &f, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(st_count(f), 6);
    cr_assert_str_eq(st_at(f, 0)->name, "w");
    cr_assert_str_eq(st_at(f, 5)->name, "z");
    cr_assert_null(st_at(f, 6));

    const st_tensor *t = st_find(f, "w");
    cr_assert_not_null(t);
    cr_assert_eq(t->dtype, PLM_F32);
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->shape[0], 2);
    cr_assert_eq(t->shape[1], 3);
    cr_assert_eq(t->nbytes, 24);
    cr_assert_str_eq(t->file, path_of("model.safetensors"));
    for (int i = 0; i < 6; i++)
        cr_assert_eq(get_f32((const char *)t->data + 4 * i), w[i], "w[%d]", i);

    t = st_find(f, "h");
    cr_assert_eq(t->dtype, PLM_F16);
    cr_assert_eq(t->nbytes, 8);
    const float hv[4] = {1.0f, -2.0f, 0.5f, 65504.0f};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(plm_f16_to_f32(get_u16((const char *)t->data + 2 * i)), hv[i], "h[%d]", i);

    t = st_find(f, "b");
    cr_assert_eq(t->dtype, PLM_BF16);
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(plm_bf16_to_f32(get_u16(t->data)), 1.0f);
    cr_assert_eq(plm_bf16_to_f32(get_u16((const char *)t->data + 2)), -3.5f);

    t = st_find(f, "idx");
    cr_assert_eq(t->dtype, PLM_DTYPE_OTHER);
    cr_assert_eq(t->nbytes, 16);
    cr_assert_eq(((const unsigned char *)t->data)[0], 7);

    t = st_find(f, "s");
    cr_assert_eq(t->ndim, 0);
    cr_assert_eq(t->nbytes, 4);
    cr_assert_eq(get_f32(t->data), 42.0f);

    t = st_find(f, "z");
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->nbytes, 0);

    cr_assert_null(st_find(f, "missing"));
    cr_assert_null(st_find(f, "__metadata__"));
    st_close(f);
}

Test(safetensors, other_dtypes_use_their_element_size)
{
    const char *header = "{\"d\": {\"dtype\": \"F64\", \"shape\": [2], \"data_offsets\": [0, 16]},"
                         " \"u\": {\"dtype\": \"U8\", \"shape\": [3], \"data_offsets\": [16, 19]},"
                         " \"m\": {\"dtype\": \"BOOL\", \"shape\": [1], \"data_offsets\": [19, 20]},"
                         " \"i\": {\"dtype\": \"I32\", \"shape\": [1], \"data_offsets\": [20, 24]}}";
    unsigned char data[24] = {0};
    write_st("model.safetensors", header, data, sizeof data);
    st_file *f;
    plm_error err;
    cr_assert_eq(st_open(path_of("model.safetensors"), &f, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(st_count(f), 4);
    cr_assert_eq(st_find(f, "d")->nbytes, 16);
    cr_assert_eq(st_find(f, "u")->nbytes, 3);
    cr_assert_eq(st_find(f, "m")->dtype, PLM_DTYPE_OTHER);
    st_close(f);

    expect_entry_fail("{\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [0, 8]}", 8,
                      PLM_E_FORMAT, "tensor 'x' spans 8 bytes but shape [2] of I64 needs 16");
}

Test(safetensors, empty_header_object_is_valid)
{
    write_st("model.safetensors", "{}", NULL, 0);
    st_file *f;
    plm_error err;
    cr_assert_eq(st_open(path_of("model.safetensors"), &f, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(st_count(f), 0);
    cr_assert_null(st_find(f, "x"));
    st_close(f);
}

Test(safetensors, finds_each_of_many_tensors)
{
    enum { N = 1500 };
    size_t cap = (size_t)N * 96 + 16;
    char *header = malloc(cap);
    size_t k = (size_t)snprintf(header, cap, "{");
    for (int i = 0; i < N; i++)
        k += (size_t)snprintf(header + k, cap - k,
                              "%s\"layers.%d.weight\": {\"dtype\": \"F32\", \"shape\": [1], "
                              "\"data_offsets\": [%d, %d]}",
                              i ? "," : "", i, 4 * i, 4 * i + 4);
    snprintf(header + k, cap - k, "}");
    unsigned char *data = malloc(4 * N);
    for (int i = 0; i < N; i++) put_f32(data + 4 * i, (float)i);
    write_st("model.safetensors", header, data, 4 * N);
    free(header);
    free(data);

    st_file *f;
    plm_error err;
    cr_assert_eq(st_open(path_of("model.safetensors"), &f, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(st_count(f), N);
    for (int i = 0; i < N; i++) {
        char name[64];
        snprintf(name, sizeof name, "layers.%d.weight", i);
        const st_tensor *t = st_find(f, name);
        cr_assert_not_null(t, "%s", name);
        cr_assert_str_eq(t->name, name);
        cr_assert_eq(get_f32(t->data), (float)i);
    }
    cr_assert_null(st_find(f, "layers.1500.weight"));
    st_close(f);
}

/* ---- malformed files --------------------------------------------------------------------- */

Test(safetensors, refuses_missing_file)
{
    expect_fail("nothere.safetensors", PLM_E_MISSING, "cannot open");
}

Test(safetensors, refuses_empty_file)
{
    write_bytes("bad.safetensors", "", 0);
    expect_fail("bad.safetensors", PLM_E_FORMAT, "file is empty");
}

Test(safetensors, refuses_file_shorter_than_length_prefix)
{
    write_bytes("bad.safetensors", "\x02\0\0\0\0", 5);
    expect_fail("bad.safetensors", PLM_E_FORMAT, "file is 5 bytes, too short");
}

Test(safetensors, refuses_header_length_past_end)
{
    unsigned char b[8 + 10] = {0};
    b[0] = 0x00;
    b[1] = 0x10; /* 4096 */
    memcpy(b + 8, "{}        ", 10);
    write_bytes("bad.safetensors", b, sizeof b);
    expect_fail("bad.safetensors", PLM_E_FORMAT,
                "header length 4096 is past the end of the file (18 bytes)");

    memset(b, 0xff, 8);
    write_bytes("bad.safetensors", b, sizeof b);
    expect_fail("bad.safetensors", PLM_E_FORMAT, "header length 18446744073709551615 is past");
}

Test(safetensors, refuses_absurd_header_length)
{
    /* A sparse file big enough to hold the claimed header. */
    uint64_t hlen = ((uint64_t)100 << 20) + 1;
    FILE *fp = fopen(path_of("bad.safetensors"), "wb");
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(b, 1, 8, fp);
    fclose(fp);
    cr_assert_eq(truncate(path_of("bad.safetensors"), (off_t)(hlen + 8)), 0);
    expect_fail("bad.safetensors", PLM_E_LIMIT, "header length 104857601 is over the");
}

Test(safetensors, refuses_header_that_is_not_json)
{
    write_st("bad.safetensors", "{\"x\": {\"dtype\": }", NULL, 0);
    expect_fail("bad.safetensors", PLM_E_FORMAT, "header: invalid JSON at line 1");
    write_st("bad.safetensors", "{} trailing", NULL, 0);
    expect_fail("bad.safetensors", PLM_E_FORMAT, "unexpected content after the JSON value");
}

Test(safetensors, refuses_header_that_is_not_an_object)
{
    write_st("bad.safetensors", "[1, 2]", NULL, 0);
    expect_fail("bad.safetensors", PLM_E_FORMAT, "header is not a JSON object");
}

Test(safetensors, refuses_entry_that_is_not_an_object)
{
    expect_entry_fail("5", 0, PLM_E_FORMAT, "tensor 'x' is not an object");
}

Test(safetensors, refuses_bad_dtype)
{
    expect_entry_fail("{\"shape\": [1], \"data_offsets\": [0, 4]}", 4, PLM_E_FORMAT,
                      "tensor 'x' has no dtype");
    expect_entry_fail("{\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}", 4,
                      PLM_E_FORMAT, "tensor 'x' dtype is not a string");
    expect_entry_fail("{\"dtype\": \"Q7\", \"shape\": [1], \"data_offsets\": [0, 4]}", 4,
                      PLM_E_UNSUPPORTED, "tensor 'x' has unknown dtype 'Q7'");
}

Test(safetensors, refuses_bad_shape)
{
    expect_entry_fail("{\"dtype\": \"F32\", \"data_offsets\": [0, 4]}", 4, PLM_E_FORMAT,
                      "tensor 'x' has no shape");
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}", 4,
                      PLM_E_FORMAT, "tensor 'x' shape is not an array");
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [1, -3], \"data_offsets\": [0, 4]}", 4,
                      PLM_E_FORMAT, "tensor 'x' shape[1] is -3, expected a non-negative size");
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 4]}", 4,
                      PLM_E_FORMAT, "tensor 'x' shape[0] is 2.5, expected an integer");
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}", 8,
                      PLM_E_FORMAT, "tensor 'x' shape[0] is a string, expected an integer");
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], "
                      "\"data_offsets\": [0, 4]}",
                      4, PLM_E_UNSUPPORTED, "tensor 'x' has 9 dimensions, more than the 8");
}

Test(safetensors, refuses_element_count_overflow)
{
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 16], "
                      "\"data_offsets\": [0, 4]}",
                      4, PLM_E_FORMAT,
                      "tensor 'x' shape [4294967296, 4294967296, 16] is too large");
    /* No overflow of the count, but of count * 4 bytes. */
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [4611686018427387904], "
                      "\"data_offsets\": [0, 4]}",
                      4, PLM_E_FORMAT, "is too large (size overflows)");
}

Test(safetensors, zero_dimension_beats_overflow)
{
    const char *header = "{\"x\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 0], "
                         "\"data_offsets\": [0, 0]}}";
    write_st("model.safetensors", header, NULL, 0);
    st_file *f;
    plm_error err;
    cr_assert_eq(st_open(path_of("model.safetensors"), &f, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(st_find(f, "x")->nbytes, 0);
    st_close(f);
}

Test(safetensors, refuses_bad_data_offsets)
{
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [1]}", 4, PLM_E_FORMAT,
                      "tensor 'x' has no data_offsets");
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}", 4,
                      PLM_E_FORMAT, "tensor 'x' data_offsets is not 2 integers");
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": {\"a\": 1}}", 4,
                      PLM_E_FORMAT, "tensor 'x' data_offsets is not 2 integers");
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, \"4\"]}", 4,
                      PLM_E_FORMAT, "tensor 'x' data_offsets[1] is a string, expected an integer");
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}", 4,
                      PLM_E_FORMAT, "tensor 'x' data_offsets[0] is -4, expected a non-negative");
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 1e300]}", 4,
                      PLM_E_FORMAT, "outside the 64-bit integer range");
}

Test(safetensors, refuses_begin_after_end)
{
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}", 8,
                      PLM_E_FORMAT, "tensor 'x' data_offsets [8, 4] begin after end");
}

Test(safetensors, refuses_tensor_past_data_section)
{
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [2250], \"data_offsets\": [0, 9000]}",
                      4096, PLM_E_FORMAT,
                      "tensor 'x' ends at byte 9000, past the data section's 4096 bytes");
}

Test(safetensors, refuses_span_that_does_not_match_shape)
{
    expect_entry_fail("{\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 20]}", 24,
                      PLM_E_FORMAT, "tensor 'x' spans 20 bytes but shape [2, 3] of F32 needs 24");
    expect_entry_fail("{\"dtype\": \"BF16\", \"shape\": [4], \"data_offsets\": [0, 16]}", 16,
                      PLM_E_FORMAT, "tensor 'x' spans 16 bytes but shape [4] of BF16 needs 8");
}

Test(safetensors, refuses_overlapping_tensors)
{
    const char *header = "{\"b\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]},"
                         " \"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}";
    unsigned char data[24] = {0};
    write_st("bad.safetensors", header, data, sizeof data);
    expect_fail("bad.safetensors", PLM_E_FORMAT,
                "tensors 'a' (bytes 0..16) and 'b' (bytes 8..24) overlap");

    /* Identical spans overlap too; empty tensors never do. */
    header = "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
             " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}";
    write_st("bad.safetensors", header, data, 4);
    expect_fail("bad.safetensors", PLM_E_FORMAT, "overlap");

    header = "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
             " \"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]},"
             " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}";
    write_st("model.safetensors", header, data, 12);
    st_file *f;
    plm_error err;
    cr_assert_eq(st_open(path_of("model.safetensors"), &f, &err), PLM_OK, "%s", err.msg);
    st_close(f);
}

Test(safetensors, refuses_duplicate_names)
{
    const char *header = "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                         " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}";
    unsigned char data[8] = {0};
    write_st("bad.safetensors", header, data, sizeof data);
    expect_fail("bad.safetensors", PLM_E_FORMAT, "tensor 'a' appears twice in the header");
}

Test(safetensors, refuses_bad_metadata)
{
    write_st("bad.safetensors", "{\"__metadata__\": {\"format\": 1}}", NULL, 0);
    expect_fail("bad.safetensors", PLM_E_FORMAT, "__metadata__ value 'format' is not a string");
    write_st("bad.safetensors", "{\"__metadata__\": [\"pt\"]}", NULL, 0);
    expect_fail("bad.safetensors", PLM_E_FORMAT, "__metadata__ is not an object");
}

/* ---- sets -------------------------------------------------------------------------------- */

static void write_one_f32(const char *name, const char *tensor, float v)
{
    char header[256];
    snprintf(header, sizeof header,
             "{\"%s\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", tensor);
    unsigned char data[4];
    put_f32(data, v);
    write_st(name, header, data, 4);
}

static void write_two_shards(void)
{
    const char *header = "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                         " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}";
    unsigned char data[8];
    put_f32(data, 1.0f);
    put_f32(data + 4, 2.0f);
    write_st("model-00001-of-00002.safetensors", header, data, 8);
    write_one_f32("model-00002-of-00002.safetensors", "c", 3.0f);
}

static void write_index(const char *weight_map)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "{\"metadata\": {\"total_size\": 12}, \"weight_map\": %s}",
             weight_map);
    write_bytes("model.safetensors.index.json", buf, strlen(buf));
}

static void expect_set_fail(plm_status want, const char *needle1, const char *needle2)
{
    st_set *s = (st_set *)&s;
    plm_error err = {{0}};
    plm_status st = st_set_open_dir(dir, &s, &err);
    cr_assert_eq(st, want, "status %s, want %s; message: %s", plm_status_str(st),
                 plm_status_str(want), err.msg);
    cr_assert_null(s);
    cr_assert_not_null(strstr(err.msg, needle1), "message lacks '%s': %s", needle1, err.msg);
    if (needle2)
        cr_assert_not_null(strstr(err.msg, needle2), "message lacks '%s': %s", needle2, err.msg);
}

Test(safetensors, set_opens_single_file)
{
    write_one_f32("model.safetensors", "w", 5.0f);
    st_set *s;
    plm_error err;
    cr_assert_eq(st_set_open_dir(dir, &s, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(st_set_count(s), 1);
    cr_assert_str_eq(st_set_at(s, 0)->name, "w");
    cr_assert_null(st_set_at(s, 1));
    cr_assert_eq(get_f32(st_set_find(s, "w")->data), 5.0f);
    cr_assert_null(st_set_find(s, "v"));
    st_set_close(s);
}

Test(safetensors, set_reports_what_it_looked_for)
{
    expect_set_fail(PLM_E_MISSING, "model.safetensors.index.json", "and model.safetensors");
    cr_assert_not_null(strstr(dir, "st_test_"));
}

Test(safetensors, set_reports_missing_directory)
{
    rmdir(dir);
    expect_set_fail(PLM_E_MISSING, "st_test_", "No such file");
}

Test(safetensors, set_propagates_bad_file)
{
    write_bytes("model.safetensors", "abc", 3);
    expect_set_fail(PLM_E_FORMAT, "model.safetensors: file is 3 bytes", NULL);
}

Test(safetensors, set_opens_shards_from_index)
{
    write_two_shards();
    write_index("{\"a\": \"model-00001-of-00002.safetensors\","
                " \"c\": \"model-00002-of-00002.safetensors\","
                " \"b\": \"model-00001-of-00002.safetensors\"}");
    /* A stray single file must be ignored when an index exists. */
    write_one_f32("model.safetensors", "stray", 9.0f);
    st_set *s;
    plm_error err;
    cr_assert_eq(st_set_open_dir(dir, &s, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(st_set_count(s), 3);
    const char *names[] = {"a", "b", "c"};
    const float vals[] = {1.0f, 2.0f, 3.0f};
    for (int i = 0; i < 3; i++) {
        const st_tensor *t = st_set_find(s, names[i]);
        cr_assert_not_null(t, "%s", names[i]);
        cr_assert_eq(get_f32(t->data), vals[i]);
        cr_assert_eq(st_set_at(s, (size_t)i), t, "tensors follow shard order");
        cr_assert_not_null(strstr(t->file, i < 2 ? "model-00001-of-00002.safetensors"
                                                 : "model-00002-of-00002.safetensors"));
    }
    cr_assert_null(st_set_find(s, "stray"));
    st_set_close(s);
}

Test(safetensors, set_refuses_missing_shard)
{
    write_two_shards();
    write_index("{\"a\": \"model-00001-of-00002.safetensors\","
                " \"d\": \"model-00003-of-00003.safetensors\"}");
    expect_set_fail(PLM_E_MISSING, "model-00003-of-00003.safetensors",
                    "named in weight_map does not exist");
}

Test(safetensors, set_refuses_tensor_absent_from_its_shard)
{
    write_two_shards();
    write_index("{\"a\": \"model-00001-of-00002.safetensors\","
                " \"c\": \"model-00001-of-00002.safetensors\","
                " \"x\": \"model-00002-of-00002.safetensors\"}");
    expect_set_fail(PLM_E_MISSING, "weight_map puts tensor 'c' in",
                    "model-00001-of-00002.safetensors, which does not contain it");

    write_index("{\"a\": \"model-00001-of-00002.safetensors\","
                " \"zz\": \"model-00002-of-00002.safetensors\"}");
    expect_set_fail(PLM_E_MISSING, "tensor 'zz'", "model-00002-of-00002.safetensors");
}

Test(safetensors, set_refuses_shard_paths_outside_the_directory)
{
    write_two_shards();
    write_index("{\"a\": \"../model-00001-of-00002.safetensors\"}");
    expect_set_fail(PLM_E_FORMAT, "shard '../model-00001-of-00002.safetensors'",
                    "not a plain file name");
    write_index("{\"a\": \"sub/model.safetensors\"}");
    expect_set_fail(PLM_E_FORMAT, "shard 'sub/model.safetensors'", "index.json");
    write_index("{\"a\": \"..\"}");
    expect_set_fail(PLM_E_FORMAT, "shard '..'", NULL);
}

Test(safetensors, set_refuses_malformed_index)
{
    write_two_shards();
    write_bytes("model.safetensors.index.json", "{\"weight_map\": {", 16);
    expect_set_fail(PLM_E_FORMAT, "model.safetensors.index.json: invalid JSON", NULL);
    write_index("[]");
    expect_set_fail(PLM_E_FORMAT, "weight_map is not an object", NULL);
    write_index("{}");
    expect_set_fail(PLM_E_FORMAT, "weight_map is empty", NULL);
    write_index("{\"a\": 3}");
    expect_set_fail(PLM_E_FORMAT, "weight_map entry for tensor 'a' is not a string", NULL);
    write_bytes("model.safetensors.index.json", "{}", 2);
    expect_set_fail(PLM_E_MISSING, "weight_map is missing", NULL);
}

Test(safetensors, set_refuses_tensor_in_two_shards)
{
    write_two_shards();
    write_one_f32("model-00002-of-00002.safetensors", "a", 3.0f);
    write_index("{\"a\": \"model-00001-of-00002.safetensors\","
                " \"b\": \"model-00002-of-00002.safetensors\"}");
    expect_set_fail(PLM_E_FORMAT, "tensor 'a' appears in both", "model-00002-of-00002");
}

Test(safetensors, set_propagates_bad_shard)
{
    write_two_shards();
    write_bytes("model-00002-of-00002.safetensors", "", 0);
    write_index("{\"a\": \"model-00001-of-00002.safetensors\","
                " \"c\": \"model-00002-of-00002.safetensors\"}");
    expect_set_fail(PLM_E_FORMAT, "model-00002-of-00002.safetensors: file is empty", NULL);
}
