/* The prunelm command as a user runs it: exit codes, messages, output files. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "core/json.h"
#include "core/npy.h"

#define FIX PLM_SOURCE_DIR "/tests/fixtures/models/"

typedef struct run_result {
    int code;
    char out[65536];
} run_result;

/* Runs a shell command line, capturing stdout+stderr and the exit code. */
static run_result run(const char *cmdline)
{
    run_result r = {0};
    char full[8192];
    snprintf(full, sizeof full, "%s 2>&1", cmdline);
    FILE *p = popen(full, "r");
    cr_assert(p);
    size_t n = fread(r.out, 1, sizeof r.out - 1, p);
    r.out[n] = '\0';
    int st = pclose(p);
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

static run_result runf(const char *fmt, const char *a, const char *b)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    return run(cmd);
}

Test(cli, ask_answers_and_exits_zero)
{
    run_result r = runf("%s ask --model %stiny_f32 --max-tokens 16 --image " FIX "tiny_f32/image.png "
                        "'What colour is the big shape on the left?'", PLM_CLI, FIX);
    cr_assert_eq(r.code, 0, "%s", r.out);
    /* transformers' greedy answer for this fixture starts with "and cat" */
    cr_assert(strncmp(r.out, "and cat", 7) == 0, "%s", r.out);
}

Test(cli, json_output_has_answer_tokens_and_timings)
{
    run_result r = runf("%s ask --json --max-tokens 4 --model %stiny_f32 'hello'", PLM_CLI, FIX);
    cr_assert_eq(r.code, 0, "%s", r.out);
    cr_assert(strstr(r.out, "\"answer\":"), "%s", r.out);
    cr_assert(strstr(r.out, "\"generated\":4"), "%s", r.out);
    cr_assert(strstr(r.out, "\"prefill_ms\":"), "%s", r.out);
}

Test(cli, dump_logits_writes_positions_by_vocab)
{
    char path[512];
    snprintf(path, sizeof path, "%s/cli_logits.npy", PLM_BINARY_DIR);
    remove(path);
    run_result r = runf("%s ask --json --max-tokens 1 --model " FIX "tiny_f32 --dump-logits %s 'hi'",
                        PLM_CLI, path);
    cr_assert_eq(r.code, 0, "%s", r.out);
    npy_array a;
    plm_error err;
    cr_assert_eq(npy_read(path, &a, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(a.ndim, 2);
    cr_assert_eq(a.shape[1], 514);
    const char *np = strstr(r.out, "\"prompt\":");
    cr_assert(np, "%s", r.out);
    cr_assert_eq(a.shape[0], atoll(np + 9), "rows %lld vs %s", (long long)a.shape[0], r.out);
    npy_free(&a);
    remove(path);
}

Test(cli, unknown_option_is_a_usage_error)
{
    run_result r = runf("%s ask --frobnicate 'q'%s", PLM_CLI, "");
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.out, "unknown option '--frobnicate'"), "%s", r.out);
}

Test(cli, every_subcommand_has_help)
{
    const char *cmds[] = {"ask", "inspect", "tokenize", "eval", "tune", "bench"};
    for (int i = 0; i < 6; i++) {
        run_result r = runf("%s %s --help", PLM_CLI, cmds[i]);
        cr_assert_eq(r.code, 0, "%s: %s", cmds[i], r.out);
        cr_assert(strstr(r.out, "usage: prunelm"), "%s: %s", cmds[i], r.out);
    }
}

Test(cli, corrupt_image_fails_with_the_file_named)
{
    char path[512];
    snprintf(path, sizeof path, "%s/cli_corrupt.png", PLM_BINARY_DIR);
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    fputs("\x89PNG\r\n\x1a\n garbage", f);
    fclose(f);
    run_result r = runf("%s ask --model " FIX "tiny_f32 --image %s 'q'", PLM_CLI, path);
    cr_assert_eq(r.code, 1, "%s", r.out);
    cr_assert(strstr(r.out, "cli_corrupt.png"), "%s", r.out);
    remove(path);
}

Test(cli, enormous_image_is_refused_by_the_pixel_limit)
{
    char path[512];
    snprintf(path, sizeof path, "%s/cli_big.png", PLM_BINARY_DIR);
    run_result r = runf("%s ask --model " FIX "tiny_f32 --max-pixels 100 --image " FIX
                        "tiny_f32/image.png 'q' %s", PLM_CLI, "");
    cr_assert_eq(r.code, 1, "%s", r.out);
    cr_assert(strstr(r.out, "over the limit"), "%s", r.out);
    (void)path;
}

Test(cli, prompt_longer_than_context_fails)
{
    run_result r = runf("%s ask --ctx 8 --max-tokens 1 --model " FIX "tiny_f32 'a b c d e f g h i j k "
                        "l m n o p'%s", PLM_CLI, "");
    cr_assert_eq(r.code, 1, "%s", r.out);
    cr_assert(strstr(r.out, "over the context of 8"), "%s", r.out);
}

Test(cli, failed_dump_leaves_no_file)
{
    run_result r = runf("%s ask --max-tokens 1 --model " FIX "tiny_f32 --dump-logits "
                        "/nonexistent-dir/x.npy 'hi'%s", PLM_CLI, "");
    cr_assert_eq(r.code, 1, "%s", r.out);
    cr_assert(strstr(r.out, "/nonexistent-dir/x.npy"), "%s", r.out);
    struct stat st;
    cr_assert_neq(stat("/nonexistent-dir/x.npy", &st), 0);
}

Test(cli, inspect_prints_the_architecture)
{
    run_result r = runf("%s inspect --model %smqa_f32_oldnames", PLM_CLI, FIX);
    cr_assert_eq(r.code, 0, "%s", r.out);
    cr_assert(strstr(r.out, "4 heads (1 KV, head dim 32)"), "%s", r.out);
    cr_assert(strstr(r.out, "rope linear"), "%s", r.out);
    cr_assert(strstr(r.out, "total parameters:"), "%s", r.out);
}

Test(cli, missing_model_directory_fails_clearly)
{
    run_result r = runf("%s ask --model /no/such/model 'q'%s", PLM_CLI, "");
    cr_assert_eq(r.code, 1);
    cr_assert(strstr(r.out, "/no/such/model: not a checkpoint directory"), "%s", r.out);
}

/* The cosine recorded in a tuned spec file's second line. */
static double tuned_cosine(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s", path);
    char line[512];
    double c = -9;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "# mean cosine %lf", &c) == 1) break;
    fclose(f);
    return c;
}

Test(cli, tune_writes_a_spec_no_worse_than_the_shipped_preset)
{
    char data[512], spec1[512], spec2[512], cmd[4096];
    snprintf(data, sizeof data, "%s/tune_val.jsonl", PLM_BINARY_DIR);
    snprintf(spec1, sizeof spec1, "%s/tune1.spec", PLM_BINARY_DIR);
    snprintf(spec2, sizeof spec2, "%s/tune2.spec", PLM_BINARY_DIR);
    FILE *f = fopen(data, "w");
    cr_assert(f);
    for (int i = 0; i < 3; i++)
        fprintf(f, "{\"id\": \"val-%d\", \"image\": \"%sgqa_bf16_sharded/image.png\", "
                   "\"question\": \"What is shape %d?\", \"answer\": \"x\"}\n", i, FIX, i);
    fclose(f);
    /* 3 layers of 9 patches: no setting brings the average down to one image row per layer
     * (two rows can be reached since the cells follow the budget) */
    const char *base =
        "%s tune -q --model " FIX "gqa_bf16_sharded --data %s --tokens %d --samples 3";
    char full[8192];
    snprintf(cmd, sizeof cmd, base, PLM_CLI, data, 1);
    snprintf(full, sizeof full, "%s --calls 3 --out %s", cmd, spec1);
    run_result r = run(full);
    cr_assert_neq(r.code, 0, "%s", r.out);
    cr_assert(strstr(r.out, "no setting fits a budget of 1 tokens"), "%s", r.out);
    snprintf(cmd, sizeof cmd, base, PLM_CLI, data, 5);
    snprintf(full, sizeof full, "%s --calls 1 --out %s", cmd, spec1);
    r = run(full);
    cr_assert_eq(r.code, 0, "%s", r.out);
    snprintf(full, sizeof full, "%s --calls 15 --out %s", cmd, spec2);
    r = run(full);
    cr_assert_eq(r.code, 0, "%s", r.out);
    double c1 = tuned_cosine(spec1), c2 = tuned_cosine(spec2);
    cr_assert(c1 > 0 && c1 <= 1.0001, "%g", c1);
    cr_assert_geq(c2, c1, "search %g < preset %g", c2, c1);
    /* the spec file is what --prune @FILE reads */
    snprintf(full, sizeof full, "%s ask --max-tokens 1 --model " FIX "gqa_bf16_sharded --image "
             FIX "gqa_bf16_sharded/image.png --prune @%s 'q'", PLM_CLI, spec2);
    r = run(full);
    cr_assert_eq(r.code, 0, "%s", r.out);
    /* calibration data from a test split is refused */
    f = fopen(data, "w");
    fprintf(f, "{\"id\": \"test-000001-q0\", \"image\": \"%sgqa_bf16_sharded/image.png\", "
               "\"question\": \"q\", \"answer\": \"x\"}\n", FIX);
    fclose(f);
    snprintf(full, sizeof full, "%s --calls 1 --out %s", cmd, spec1);
    r = run(full);
    cr_assert_eq(r.code, 2, "%s", r.out);
    cr_assert(strstr(r.out, "test split"), "%s", r.out);
    remove(data);
    remove(spec1);
    remove(spec2);
}

Test(cli, bench_decodes_the_asked_tokens_and_writes_json)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bench.json", PLM_BINARY_DIR);
    remove(path);
    run_result r = runf("%s bench --model %sgqa_bf16_sharded --image " FIX "gqa_bf16_sharded/image.png"
                        " --gen 12 --repeat 2 --prompt-tokens 20 --json " PLM_BINARY_DIR
                        "/bench.json", PLM_CLI, FIX);
    cr_assert_eq(r.code, 0, "%s", r.out);
    cr_assert(strstr(r.out, "| time to first token |"), "%s", r.out);
    char *text;
    size_t len;
    plm_error err;
    cr_assert_eq(plm_read_file(path, 1 << 20, &text, &len, &err), PLM_OK, "%s", err.msg);
    cr_assert(strstr(text, "\"generated_tokens\":\t12"), "EOS must not stop a benchmark: %s", text);
    free(text);
    remove(path);
}

static double kv_bytes_of(const run_result *r)
{
    const char *p = strstr(r->out, "\"kv_bytes\":");
    cr_assert(p, "%s", r->out);
    return strtod(p + strlen("\"kv_bytes\":"), NULL);
}

Test(cli, kv_quant_int4_shrinks_the_cache_alone_and_after_a_policy)
{
    const char *q = "'The pass key is 7 4 1 9. Remember it, the pass key is 7 4 1 9. What is it?'";
    char cmd[4096];
    double bytes[4];
    const char *flags[] = {"", "--kv-quant int4:group=8,residual=4", "--kv h2o:budget=20",
                           "--kv h2o:budget=20 --kv-quant int4:group=8,residual=4"};
    for (int i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd, "%s ask --device cpu --json --max-tokens 6 --model "
                 "%sgqa_bf16_sharded %s %s", PLM_CLI, FIX, flags[i], q);
        run_result r = run(cmd);
        cr_assert_eq(r.code, 0, "%s: %s", flags[i], r.out);
        bytes[i] = kv_bytes_of(&r);
    }
    cr_assert_lt(bytes[1], 0.6 * bytes[0], "int4 alone: %g vs %g bytes", bytes[1], bytes[0]);
    cr_assert_lt(bytes[3], bytes[2], "h2o + int4: %g vs %g bytes", bytes[3], bytes[2]);
    run_result r = runf("%s ask --device cpu --model %sgqa_bf16_sharded --kv-quant int8 'q'",
                        PLM_CLI, FIX);
    cr_assert_eq(r.code, 2, "%s", r.out);
    cr_assert(strstr(r.out, "--kv-quant takes none or int4"), "%s", r.out);
    r = runf("%s ask --device cpu --model %sgqa_bf16_sharded --kv-quant int4:group=0 'q'",
             PLM_CLI, FIX);
    cr_assert_eq(r.code, 2, "%s", r.out);
    cr_assert(strstr(r.out, "group"), "%s", r.out);
}

/* An eval sweep joins --kv-quant to every --kv setting: each runs in its own folder and the
 * report lists the joined specs. */
Test(cli, eval_sweeps_join_kv_quant_to_every_kv_setting)
{
    char dir[512], cmd[4096];
    snprintf(dir, sizeof dir, "%s/kvq_sweep", PLM_BINARY_DIR);
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s && printf '%%s\\n' '{\"id\":\"a\","
             "\"question\":\"The pass key is 7 4 1 9. What is it?\",\"answer\":\"7\"}' > "
             "%s/data.jsonl", dir, dir, dir);
    cr_assert_eq(run(cmd).code, 0);
    snprintf(cmd, sizeof cmd, "%s eval --model %sgqa_bf16_sharded --data %s/data.jsonl --out "
             "%s/out --kv none --kv h2o:budget=20 --kv-quant int4:group=8,residual=4 "
             "--max-tokens 4 -q", PLM_CLI, FIX, dir, dir);
    run_result r = run(cmd);
    cr_assert_eq(r.code, 0, "%s", r.out);
    char path[700];
    snprintf(path, sizeof path, "%s/out/report.md", dir);
    char *text;
    size_t len;
    plm_error err;
    cr_assert_eq(plm_read_file(path, 1 << 20, &text, &len, &err), PLM_OK, "%s", err.msg);
    cr_assert(strstr(text, "`int4:group=8,residual=4`"), "%s", text);
    cr_assert(strstr(text, "`h2o:budget=20+int4:group=8,residual=4`"), "%s", text);
    free(text);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run(cmd);
}
