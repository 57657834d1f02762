#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/npy.h"

static char dir[1024];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "%s/npy_test_XXXXXX", PLM_BINARY_DIR);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp failed");
}

static void remove_tree(const char *d)
{
    chmod(d, 0700);
    DIR *dd = opendir(d);
    if (!dd) return;
    struct dirent *e;
    char p[2048];
    while ((e = readdir(dd))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", d, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(dd);
    rmdir(d);
}

static void remove_dir(void)
{
    remove_tree(dir);
}

TestSuite(npy, .init = make_dir, .fini = remove_dir);

static const char *path_of(const char *name)
{
    static char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static int count_entries(const char *d)
{
    DIR *dd = opendir(d);
    cr_assert_not_null(dd);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dd)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(dd);
    return n;
}

static unsigned char *slurp(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f, "%s", p);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n + 1);
    cr_assert_eq(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* Writes an .npy file of the given version with a hand-made header (padded with spaces and a
 * newline unless raw_header is set) followed by data. */
static void write_npy_raw(const char *name, int major, const char *dict, int raw_header,
                          const void *data, size_t data_len)
{
    char header[4096];
    size_t pre = major == 1 ? 10 : 12;
    size_t h = (size_t)snprintf(header, sizeof header, "%s", dict);
    if (!raw_header) {
        while ((pre + h + 1) % 64) header[h++] = ' ';
        header[h++] = '\n';
    }
    FILE *f = fopen(path_of(name), "wb");
    cr_assert_not_null(f);
    unsigned char p[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0};
    for (size_t i = 8; i < pre; i++) p[i] = (unsigned char)(h >> (8 * (i - 8)));
    fwrite(p, 1, pre, f);
    fwrite(header, 1, h, f);
    if (data_len) fwrite(data, 1, data_len, f);
    fclose(f);
}

static void expect_fail(const char *name, plm_status want, const char *needle)
{
    npy_array a;
    memset(&a, 0x5a, sizeof a);
    plm_error err = {{0}};
    plm_status st = npy_read(path_of(name), &a, &err);
    cr_assert_eq(st, want, "status %s, want %s; message: %s", plm_status_str(st),
                 plm_status_str(want), err.msg);
    cr_assert_null(a.f);
    cr_assert_null(a.i);
    cr_assert_not_null(strstr(err.msg, name), "message lacks the file name: %s", err.msg);
    cr_assert_not_null(strstr(err.msg, needle), "message lacks '%s': %s", needle, err.msg);
}

/* ---- writer ------------------------------------------------------------------------------ */

Test(npy, writes_numpy_layout_and_reads_back)
{
    const float v[6] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -1e30f};
    const size_t shape[2] = {2, 3};
    plm_error err;
    cr_assert_eq(plm_write_npy(path_of("a.npy"), v, shape, 2, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(count_entries(dir), 1, "no temporary file is left behind");

    size_t n;
    unsigned char *b = slurp(path_of("a.npy"), &n);
    const char *want = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    /* numpy pads the header so the data starts at a multiple of 64: here 128. */
    cr_assert_eq(n, 128 + 24);
    cr_assert_eq(memcmp(b, "\x93NUMPY\x01\x00", 8), 0);
    cr_assert_eq(b[8] | b[9] << 8, 118);
    cr_assert_eq(memcmp(b + 10, want, strlen(want)), 0);
    cr_assert_eq(b[127], '\n');
    for (size_t i = 10 + strlen(want); i < 127; i++) cr_assert_eq(b[i], ' ');
    float first;
    memcpy(&first, b + 128, 4);
    cr_assert_eq(first, 1.5f);
    free(b);

    npy_array a;
    cr_assert_eq(npy_read(path_of("a.npy"), &a, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(a.ndim, 2);
    cr_assert_eq(a.shape[0], 2);
    cr_assert_eq(a.shape[1], 3);
    cr_assert_eq(a.count, 6);
    cr_assert(a.is_float);
    cr_assert_null(a.i);
    for (int i = 0; i < 6; i++) cr_assert_eq(a.f[i], v[i], "v[%d]", i);
    npy_free(&a);
    cr_assert_null(a.f);
}

Test(npy, writes_one_and_zero_dimensional_arrays)
{
    const float v[5] = {1, 2, 3, 4, 5};
    const size_t shape1[1] = {5}, shape0[2] = {0, 7};
    plm_error err;
    npy_array a;
    cr_assert_eq(plm_write_npy(path_of("v.npy"), v, shape1, 1, &err), PLM_OK, "%s", err.msg);
    size_t n;
    unsigned char *b = slurp(path_of("v.npy"), &n);
    cr_assert_not_null(strstr((char *)b + 10, "'shape': (5,), }"));
    free(b);
    cr_assert_eq(npy_read(path_of("v.npy"), &a, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(a.ndim, 1);
    cr_assert_eq(a.f[4], 5.0f);
    npy_free(&a);

    cr_assert_eq(plm_write_npy(path_of("s.npy"), v + 2, NULL, 0, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(npy_read(path_of("s.npy"), &a, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(a.ndim, 0);
    cr_assert_eq(a.count, 1);
    cr_assert_eq(a.f[0], 3.0f);
    npy_free(&a);

    cr_assert_eq(plm_write_npy(path_of("e.npy"), NULL, shape0, 2, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(npy_read(path_of("e.npy"), &a, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(a.ndim, 2);
    cr_assert_eq(a.shape[1], 7);
    cr_assert_eq(a.count, 0);
    cr_assert_not_null(a.f);
    npy_free(&a);
}

Test(npy, overwrites_existing_file)
{
    const float one = 1.0f, two = 2.0f;
    const size_t shape[1] = {1};
    plm_error err;
    npy_array a;
    cr_assert_eq(plm_write_npy(path_of("x.npy"), &one, shape, 1, &err), PLM_OK);
    cr_assert_eq(plm_write_npy(path_of("x.npy"), &two, shape, 1, &err), PLM_OK);
    cr_assert_eq(npy_read(path_of("x.npy"), &a, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(a.f[0], 2.0f);
    npy_free(&a);
    cr_assert_eq(count_entries(dir), 1);
}

Test(npy, failed_write_leaves_nothing)
{
    const float v[2] = {1, 2};
    const size_t shape[1] = {2};
    plm_error err;

    /* Parent is missing. */
    cr_assert_eq(plm_write_npy(path_of("nodir/a.npy"), v, shape, 1, &err), PLM_E_IO);
    cr_assert_not_null(strstr(err.msg, "nodir/a.npy: cannot create temporary file"), "%s",
                       err.msg);
    cr_assert_eq(count_entries(dir), 0);

    /* The rename fails (the target is a directory): the temporary file must go. */
    cr_assert_eq(mkdir(path_of("taken.npy"), 0700), 0);
    cr_assert_eq(plm_write_npy(path_of("taken.npy"), v, shape, 1, &err), PLM_E_IO);
    cr_assert_not_null(strstr(err.msg, "taken.npy: rename"), "%s", err.msg);
    cr_assert_eq(count_entries(dir), 1);

    /* An unwritable directory (permission bits do not bind root, so only checked otherwise). */
    cr_assert_eq(mkdir(path_of("ro"), 0500), 0);
    char p[2048];
    snprintf(p, sizeof p, "%s/ro/a.npy", dir);
    plm_status st = plm_write_npy(p, v, shape, 1, &err);
    if (geteuid() != 0) {
        cr_assert_eq(st, PLM_E_IO);
        cr_assert_not_null(strstr(err.msg, "Permission denied"), "%s", err.msg);
    }
    if (st != PLM_OK) cr_assert_eq(count_entries(path_of("ro")), 0);
}

Test(npy, write_refuses_bad_arguments)
{
    const size_t shape[1] = {3};
    const size_t huge[2] = {SIZE_MAX / 2, 4};
    float v[3] = {0};
    plm_error err;
    cr_assert_eq(plm_write_npy(path_of("a.npy"), NULL, shape, 1, &err), PLM_E_ARG);
    cr_assert_not_null(strstr(err.msg, "no data given"), "%s", err.msg);
    cr_assert_eq(plm_write_npy(path_of("a.npy"), v, huge, 2, &err), PLM_E_ARG);
    cr_assert_not_null(strstr(err.msg, "overflows"), "%s", err.msg);
    cr_assert_eq(plm_write_npy(path_of("a.npy"), v, shape, -1, &err), PLM_E_ARG);
    cr_assert_eq(plm_write_npy(path_of("a.npy"), v, NULL, 1, &err), PLM_E_ARG);
    cr_assert_eq(count_entries(dir), 0);
}

/* ---- reader ------------------------------------------------------------------------------ */

Test(npy, reads_f8_as_float)
{
    double d[3] = {0.5, -1.25, 1e10};
    write_npy_raw("d.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 0, d,
                  sizeof d);
    npy_array a;
    plm_error err;
    cr_assert_eq(npy_read(path_of("d.npy"), &a, &err), PLM_OK, "%s", err.msg);
    cr_assert(a.is_float);
    cr_assert_eq(a.f[0], 0.5f);
    cr_assert_eq(a.f[1], -1.25f);
    cr_assert_eq(a.f[2], 1e10f);
    npy_free(&a);
}

Test(npy, reads_integers_as_int64)
{
    int32_t i4[4] = {1, -2, 2147483647, -2147483647 - 1};
    int64_t i8[2] = {INT64_MAX, -5};
    unsigned char u1[3] = {0, 200, 255};
    npy_array a;
    plm_error err;

    write_npy_raw("i4.npy", 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }", 0,
                  i4, sizeof i4);
    cr_assert_eq(npy_read(path_of("i4.npy"), &a, &err), PLM_OK, "%s", err.msg);
    cr_assert(!a.is_float);
    cr_assert_null(a.f);
    cr_assert_eq(a.i[1], -2);
    cr_assert_eq(a.i[2], 2147483647);
    cr_assert_eq(a.i[3], -2147483648LL);
    npy_free(&a);

    write_npy_raw("i8.npy", 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 0,
                  i8, sizeof i8);
    cr_assert_eq(npy_read(path_of("i8.npy"), &a, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(a.i[0], INT64_MAX);
    cr_assert_eq(a.i[1], -5);
    npy_free(&a);

    write_npy_raw("u1.npy", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }", 0,
                  u1, sizeof u1);
    cr_assert_eq(npy_read(path_of("u1.npy"), &a, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(a.count, 3);
    cr_assert_eq(a.i[1], 200);
    cr_assert_eq(a.i[2], 255);
    npy_free(&a);
}

Test(npy, reads_versions_2_and_3_and_other_spellings)
{
    float f[2] = {7, 8};
    npy_array a;
    plm_error err;
    /* Version 2 and 3 have a 4-byte header length; key order and quoting may differ. */
    write_npy_raw("v2.npy", 2, "{\"shape\": (1, 2), 'fortran_order': False, 'descr': '<f4'}", 0,
                  f, sizeof f);
    cr_assert_eq(npy_read(path_of("v2.npy"), &a, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(a.ndim, 2);
    cr_assert_eq(a.f[1], 8.0f);
    npy_free(&a);
    write_npy_raw("v3.npy", 3, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }", 0,
                  f, sizeof f);
    cr_assert_eq(npy_read(path_of("v3.npy"), &a, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(a.shape[0], 2);
    npy_free(&a);
    write_npy_raw("s.npy", 1, "{'descr':'<f4','fortran_order':False,'shape':()}", 0, f, 4);
    cr_assert_eq(npy_read(path_of("s.npy"), &a, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(a.ndim, 0);
    cr_assert_eq(a.f[0], 7.0f);
    npy_free(&a);
}

Test(npy, refuses_bad_magic_and_version)
{
    FILE *f = fopen(path_of("bad.npy"), "wb");
    fwrite("\x93NUMPZ\x01\x00\x10\x00", 1, 10, f);
    fclose(f);
    expect_fail("bad.npy", PLM_E_FORMAT, "not a .npy file (bad magic)");
    f = fopen(path_of("bad.npy"), "wb");
    fwrite("\x93NUM", 1, 4, f);
    fclose(f);
    expect_fail("bad.npy", PLM_E_FORMAT, "bad magic");
    write_npy_raw("bad.npy", 4, "{}", 0, NULL, 0);
    expect_fail("bad.npy", PLM_E_UNSUPPORTED, ".npy version 4.0 is not supported");
    expect_fail("missing.npy", PLM_E_MISSING, "cannot open");
}

Test(npy, refuses_header_length_past_end)
{
    FILE *f = fopen(path_of("bad.npy"), "wb");
    fwrite("\x93NUMPY\x01\x00\x00\x01{}", 1, 12, f);
    fclose(f);
    expect_fail("bad.npy", PLM_E_FORMAT, "header length 256 is past the end of the file");
    f = fopen(path_of("bad.npy"), "wb");
    fwrite("\x93NUMPY\x02\x00\x00\x00\x00\x10", 1, 12, f);
    fclose(f);
    expect_fail("bad.npy", PLM_E_LIMIT, "header length 268435456 is over the");
    f = fopen(path_of("bad.npy"), "wb");
    fwrite("\x93NUMPY\x02\x00\x00\x00\x00", 1, 11, f);
    fclose(f);
    expect_fail("bad.npy", PLM_E_FORMAT, "file ends inside the header length");
}

Test(npy, refuses_malformed_dictionaries)
{
    float f[2] = {0};
    write_npy_raw("bad.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 1,
                  f, sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "header does not end with a newline");
    write_npy_raw("bad.npy", 1, "['descr', '<f4']", 0, f, sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "header is not a dictionary");
    write_npy_raw("bad.npy", 1, "{'descr': '<f4', 'shape': (2,), }", 0, f, sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "header lacks 'fortran_order'");
    write_npy_raw("bad.npy", 1,
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", 0, f,
                  sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "header has unexpected key 'extra'");
    write_npy_raw("bad.npy", 1,
                  "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", 0,
                  f, sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "header repeats key 'descr'");
    write_npy_raw("bad.npy", 1, "{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}", 0, f,
                  sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "header dictionary is malformed");
    write_npy_raw("bad.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x", 0,
                  f, sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "unexpected text after the header dictionary");
    write_npy_raw("bad.npy", 1, "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}", 0, f,
                  sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "fortran_order is not True or False");
}

Test(npy, refuses_bad_shapes)
{
    float f[2] = {0};
    write_npy_raw("bad.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2)}", 0, f,
                  sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "shape is not a tuple of non-negative integers");
    write_npy_raw("bad.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", 0,
                  f, sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "shape is not a tuple");
    write_npy_raw("bad.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': [2]}", 0, f,
                  sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "shape is not a tuple");
    write_npy_raw("bad.npy", 1,
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
                  0, f, sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "shape is not a tuple");
    write_npy_raw("bad.npy", 1,
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,2)}", 0,
                  f, sizeof f);
    expect_fail("bad.npy", PLM_E_UNSUPPORTED, "shape has more than 8 dimensions");
    write_npy_raw("bad.npy", 1,
                  "{'descr': '<f4', 'fortran_order': False, "
                  "'shape': (4294967296, 4294967296, 2)}",
                  0, f, sizeof f);
    expect_fail("bad.npy", PLM_E_FORMAT, "shape is too large");
}

Test(npy, refuses_unsupported_layouts)
{
    float f[2] = {0};
    write_npy_raw("bad.npy", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2,)}", 0, f,
                  sizeof f);
    expect_fail("bad.npy", PLM_E_UNSUPPORTED,
                "fortran_order is True; only C-order arrays are supported");
    write_npy_raw("bad.npy", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,)}", 0, f,
                  sizeof f);
    expect_fail("bad.npy", PLM_E_UNSUPPORTED, "dtype '>f4' is not supported");
    write_npy_raw("bad.npy", 1,
                  "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}", 0, f,
                  sizeof f);
    expect_fail("bad.npy", PLM_E_UNSUPPORTED, "descr is not a plain dtype string");
}

Test(npy, refuses_data_size_mismatch)
{
    float f[4] = {0};
    write_npy_raw("bad.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2)}", 0,
                  f, 12);
    expect_fail("bad.npy", PLM_E_FORMAT, "shape and dtype <f4 need 16 bytes of data but the "
                                         "file has 12");
    write_npy_raw("bad.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}", 0, f,
                  16);
    expect_fail("bad.npy", PLM_E_FORMAT, "need 12 bytes of data but the file has 16");
}
