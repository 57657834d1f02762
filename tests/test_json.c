#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"

static char path[1024];

static void make_path(void)
{
    snprintf(path, sizeof path, "%s/json_test_XXXXXX", PLM_BINARY_DIR);
    int fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp failed");
    close(fd);
}

static void remove_path(void)
{
    unlink(path);
}

TestSuite(json, .init = make_path, .fini = remove_path);

static void write_text(const char *text)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fwrite(text, 1, strlen(text), f);
    fclose(f);
}

static cJSON *parse(const char *text)
{
    cJSON *root;
    plm_error err;
    plm_status st = json_parse_buffer(text, strlen(text), "config.json", &root, &err);
    cr_assert_eq(st, PLM_OK, "%s", err.msg);
    return root;
}

#define EXPECT_MSG(call, want_status, want_msg)                                                     \
    do {                                                                                           \
        plm_error err_ = {{0}};                                                                    \
        plm_status st_ = (call);                                                                   \
        cr_assert_eq(st_, want_status, "status %s; message: %s", plm_status_str(st_), err_.msg);   \
        cr_assert_str_eq(err_.msg, want_msg);                                                      \
    } while (0)

static const char *config = "{\n"
                            "  \"model_type\": \"llava\",\n"
                            "  \"tie\": false,\n"
                            "  \"eps\": 1e-5,\n"
                            "  \"half\": 3.5,\n"
                            "  \"big\": 1e30,\n"
                            "  \"exact\": 9007199254740992,\n"
                            "  \"min\": -9223372036854775808,\n"
                            "  \"over\": 9223372036854775808,\n"
                            "  \"nothing\": null,\n"
                            "  \"mean\": [0.5, 0.25, 0.125],\n"
                            "  \"bad_mean\": [0.5, \"x\", 0.125],\n"
                            "  \"text_config\": {\"hidden_size\": 4096, \"name\": \"llama\"}\n"
                            "}\n";

Test(json, loads_file_and_reads_values)
{
    write_text(config);
    cJSON *root;
    plm_error err;
    cr_assert_eq(json_load_file(path, 1 << 20, &root, &err), PLM_OK, "%s", err.msg);

    const cJSON *tc;
    cr_assert_eq(json_obj_opt(root, "text_config", "config.json", &tc, &err), PLM_OK);
    cr_assert_not_null(tc);
    int64_t hidden = 0;
    cr_assert_eq(json_int_req(tc, "hidden_size", "config.json: text_config", &hidden, &err),
                 PLM_OK);
    cr_assert_eq(hidden, 4096);

    const char *s = NULL;
    cr_assert_eq(json_str_req(root, "model_type", "config.json", &s, &err), PLM_OK);
    cr_assert_str_eq(s, "llava");
    double eps = 0;
    cr_assert_eq(json_num_req(root, "eps", "config.json", &eps, &err), PLM_OK);
    cr_assert_eq(eps, 1e-5);
    int tie = 7;
    cr_assert_eq(json_bool_opt(root, "tie", "config.json", &tie, &err), PLM_OK);
    cr_assert_eq(tie, 0);
    double mean[3];
    cr_assert_eq(json_num_array(root, "mean", "config.json", mean, 3, &err), PLM_OK);
    cr_assert_eq(mean[0], 0.5);
    cr_assert_eq(mean[2], 0.125);

    int64_t v = 0;
    cr_assert_eq(json_int_req(root, "exact", "config.json", &v, &err), PLM_OK);
    cr_assert_eq(v, INT64_C(9007199254740992));
    cr_assert_eq(json_int_req(root, "min", "config.json", &v, &err), PLM_OK);
    cr_assert_eq(v, INT64_MIN);
    /* An integral double counts as an integer. */
    cr_assert_eq(json_int_req(root, "eps", "config.json", &v, &err), PLM_E_FORMAT);
    cJSON_Delete(root);
}

Test(json, optional_getters_leave_absent_and_null_alone)
{
    cJSON *root = parse(config);
    plm_error err;
    int64_t i = 11;
    double d = 2.5;
    int b = 3;
    const char *s = "keep";
    const cJSON *o = root;
    cr_assert_eq(json_int_opt(root, "absent", "config.json", &i, &err), PLM_OK);
    cr_assert_eq(json_int_opt(root, "nothing", "config.json", &i, &err), PLM_OK);
    cr_assert_eq(json_num_opt(root, "nothing", "config.json", &d, &err), PLM_OK);
    cr_assert_eq(json_bool_opt(root, "absent", "config.json", &b, &err), PLM_OK);
    cr_assert_eq(json_str_opt(root, "nothing", "config.json", &s, &err), PLM_OK);
    cr_assert_eq(json_obj_opt(root, "absent", "config.json", &o, &err), PLM_OK);
    cr_assert_eq(i, 11);
    cr_assert_eq(d, 2.5);
    cr_assert_eq(b, 3);
    cr_assert_str_eq(s, "keep");
    cr_assert_null(o);
    cr_assert_eq(json_num_opt(root, "half", "config.json", &d, &err), PLM_OK);
    cr_assert_eq(d, 3.5);
    /* NULL objects read as empty. */
    cr_assert_eq(json_int_opt(NULL, "x", "config.json", &i, &err), PLM_OK);
    cJSON_Delete(root);
}

Test(json, messages_name_file_and_field)
{
    cJSON *root = parse(config);
    const cJSON *tc = cJSON_GetObjectItem(root, "text_config");
    int64_t i;
    double d, arr[3];
    int b;
    const char *s;
    const cJSON *o;
    EXPECT_MSG(json_int_req(tc, "vocab_size", "config.json: text_config", &i, &err_),
               PLM_E_MISSING, "config.json: text_config.vocab_size is missing");
    EXPECT_MSG(json_int_req(tc, "name", "config.json: text_config", &i, &err_), PLM_E_FORMAT,
               "config.json: text_config.name is a string, expected an integer");
    EXPECT_MSG(json_int_req(root, "half", "config.json", &i, &err_), PLM_E_FORMAT,
               "config.json: half is 3.5, expected an integer");
    EXPECT_MSG(json_int_opt(root, "big", "config.json", &i, &err_), PLM_E_FORMAT,
               "config.json: big is 1e+30, outside the 64-bit integer range");
    EXPECT_MSG(json_int_req(root, "over", "config.json", &i, &err_), PLM_E_FORMAT,
               "config.json: over is 9.2233720368547758e+18, outside the 64-bit integer range");
    EXPECT_MSG(json_int_req(root, "nothing", "config.json", &i, &err_), PLM_E_FORMAT,
               "config.json: nothing is null, expected an integer");
    EXPECT_MSG(json_num_req(root, "model_type", "config.json", &d, &err_), PLM_E_FORMAT,
               "config.json: model_type is a string, expected a number");
    EXPECT_MSG(json_num_req(root, "absent", "config.json", &d, &err_), PLM_E_MISSING,
               "config.json: absent is missing");
    EXPECT_MSG(json_num_opt(root, "tie", "config.json", &d, &err_), PLM_E_FORMAT,
               "config.json: tie is a boolean, expected a number");
    EXPECT_MSG(json_bool_opt(root, "eps", "config.json", &b, &err_), PLM_E_FORMAT,
               "config.json: eps is a number, expected true or false");
    EXPECT_MSG(json_str_req(root, "mean", "config.json", &s, &err_), PLM_E_FORMAT,
               "config.json: mean is an array, expected a string");
    EXPECT_MSG(json_str_opt(root, "text_config", "config.json", &s, &err_), PLM_E_FORMAT,
               "config.json: text_config is an object, expected a string");
    EXPECT_MSG(json_obj_opt(root, "mean", "config.json", &o, &err_), PLM_E_FORMAT,
               "config.json: mean is an array, expected an object");
    EXPECT_MSG(json_num_array(root, "mean", "preprocessor_config.json", arr, 2, &err_),
               PLM_E_SHAPE, "preprocessor_config.json: mean has 3 elements, expected 2");
    EXPECT_MSG(json_num_array(root, "bad_mean", "preprocessor_config.json", arr, 3, &err_),
               PLM_E_FORMAT, "preprocessor_config.json: bad_mean[1] is a string, expected a number");
    EXPECT_MSG(json_num_array(root, "eps", "preprocessor_config.json", arr, 3, &err_),
               PLM_E_FORMAT, "preprocessor_config.json: eps is a number, expected an array of numbers");
    EXPECT_MSG(json_num_array(root, "image_std", "preprocessor_config.json", arr, 3, &err_),
               PLM_E_MISSING, "preprocessor_config.json: image_std is missing");
    cJSON_Delete(root);
}

Test(json, parse_errors_give_line_and_byte)
{
    write_text("{\n  \"a\": 1,\n  \"b\": ]\n}\n");
    cJSON *root = (cJSON *)&root;
    plm_error err;
    cr_assert_eq(json_load_file(path, 1 << 20, &root, &err), PLM_E_FORMAT);
    cr_assert_null(root);
    cr_assert_not_null(strstr(err.msg, path), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "invalid JSON at line 3, column 8 (byte 19)"), "%s",
                       err.msg);

    write_text("{\"a\": 1}\n  {\"b\": 2}");
    cr_assert_eq(json_load_file(path, 1 << 20, &root, &err), PLM_E_FORMAT);
    cr_assert_not_null(strstr(err.msg, "unexpected content after the JSON value at line 2"),
                       "%s", err.msg);

    write_text("");
    cr_assert_eq(json_load_file(path, 1 << 20, &root, &err), PLM_E_FORMAT);
    cr_assert_not_null(strstr(err.msg, "invalid JSON at line 1"), "%s", err.msg);

    write_text("{\"a\": 1}  \n\t\n");
    cr_assert_eq(json_load_file(path, 1 << 20, &root, &err), PLM_OK, "%s", err.msg);
    cJSON_Delete(root);
}

Test(json, refuses_file_over_limit)
{
    write_text("[1, 2, 3]");
    cJSON *root;
    plm_error err;
    cr_assert_eq(json_load_file(path, 9, &root, &err), PLM_OK, "%s", err.msg);
    cJSON_Delete(root);
    cr_assert_eq(json_load_file(path, 8, &root, &err), PLM_E_LIMIT);
    cr_assert_null(root);
    cr_assert_not_null(strstr(err.msg, "file is 9 bytes, over the 8-byte limit"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, path), "%s", err.msg);
}

Test(json, read_file_returns_bytes_and_nul)
{
    write_text("abc\0def");
    char *buf;
    size_t len;
    plm_error err;
    cr_assert_eq(plm_read_file(path, 100, &buf, &len, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(len, 3);
    cr_assert_str_eq(buf, "abc");
    free(buf);

    write_text("");
    cr_assert_eq(plm_read_file(path, 0, &buf, &len, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(len, 0);
    cr_assert_eq(buf[0], '\0');
    free(buf);
}

Test(json, read_file_reports_io_errors)
{
    char *buf = (char *)&buf;
    plm_error err;
    cr_assert_eq(plm_read_file("/nonexistent/config.json", 100, &buf, NULL, &err), PLM_E_IO);
    cr_assert_null(buf);
    cr_assert_str_eq(err.msg, "/nonexistent/config.json: cannot open: No such file or directory");
    cr_assert_eq(plm_read_file(PLM_BINARY_DIR, 100, &buf, NULL, &err), PLM_E_IO);
    cr_assert_not_null(strstr(err.msg, "is a directory"), "%s", err.msg);
}

Test(json, read_file_limits_unsized_streams)
{
    /* A pipe has no size up front: the limit applies while reading. */
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    char big[5000];
    memset(big, 'x', sizeof big);
    cr_assert_eq(write(fds[1], big, sizeof big), (ssize_t)sizeof big);
    close(fds[1]);
    char dev[64];
    snprintf(dev, sizeof dev, "/dev/fd/%d", fds[0]);
    char *buf;
    size_t len;
    plm_error err;
    cr_assert_eq(plm_read_file(dev, 4999, &buf, &len, &err), PLM_E_LIMIT);
    cr_assert_not_null(strstr(err.msg, "over the 4999-byte limit"), "%s", err.msg);
    close(fds[0]);

    cr_assert_eq(pipe(fds), 0);
    cr_assert_eq(write(fds[1], big, sizeof big), (ssize_t)sizeof big);
    close(fds[1]);
    snprintf(dev, sizeof dev, "/dev/fd/%d", fds[0]);
    cr_assert_eq(plm_read_file(dev, 5000, &buf, &len, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(len, 5000);
    cr_assert_eq(buf[4999], 'x');
    free(buf);
    close(fds[0]);
}
