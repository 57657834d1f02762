/* Batch evaluation: dataset parsing, the resumable results file, and prunelm eval killed at
 * random points then resumed. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/json.h"
#include "eval/eval.h"

#define FIX PLM_SOURCE_DIR "/tests/fixtures/models/"

static void tmpdir(char *buf, size_t n, const char *tag)
{
    snprintf(buf, n, "%s/%s_XXXXXX", PLM_BINARY_DIR, tag);
    cr_assert(mkdtemp(buf));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

static void expect_dataset_error(const char *text, plm_status want, const char *needle)
{
    char dir[512], path[600];
    tmpdir(dir, sizeof dir, "ds");
    snprintf(path, sizeof path, "%s/data.jsonl", dir);
    write_file(path, text);
    eval_dataset ds;
    plm_error err;
    plm_status st = eval_dataset_load(path, &ds, &err);
    cr_assert_eq(st, want, "%d: %s", st, err.msg);
    cr_assert(strstr(err.msg, needle), "'%s' lacks '%s'", err.msg, needle);
    remove(path);
    rmdir(dir);
}

Test(eval, dataset_errors_name_the_line)
{
    expect_dataset_error("{\"id\": \"a\", \"question\": \"q\", \"answer\": \"x\"}\nnot json\n",
                         PLM_E_FORMAT, "data.jsonl:2: not a JSON object");
    expect_dataset_error("{\"id\": \"a\", \"answer\": \"x\"}\n", PLM_E_MISSING,
                         "data.jsonl:1: field \"question\" is missing");
    expect_dataset_error("{\"id\": \"a\", \"question\": \"q\", \"answer\": [1]}\n", PLM_E_FORMAT,
                         "field \"answer\" is not a string");
    expect_dataset_error("{\"id\": \"a\", \"question\": \"q\", \"answer\": \"x\"}\n"
                         "{\"id\": \"a\", \"question\": \"r\", \"answer\": \"y\"}\n",
                         PLM_E_FORMAT, "id \"a\" appears more than once");
    expect_dataset_error("\n\n", PLM_E_FORMAT, "no items");
}

Test(eval, image_paths_are_relative_to_the_dataset)
{
    char dir[512], path[600];
    tmpdir(dir, sizeof dir, "ds");
    snprintf(path, sizeof path, "%s/data.jsonl", dir);
    write_file(path, "{\"id\": 7, \"image\": \"img/a.png\", \"question\": \"q\", \"answer\": 3, "
                     "\"type\": \"count\"}\n");
    eval_dataset ds;
    plm_error err;
    cr_assert_eq(eval_dataset_load(path, &ds, &err), PLM_OK, "%s", err.msg);
    char want[700];
    snprintf(want, sizeof want, "%s/img/a.png", dir);
    cr_assert_str_eq(ds.items[0].image, want);
    cr_assert_str_eq(ds.items[0].id, "7");
    cr_assert_str_eq(ds.items[0].answer, "3");
    cr_assert_str_eq(ds.items[0].type, "count");
    eval_dataset_free(&ds);
    remove(path);
    rmdir(dir);
}

Test(eval, a_context_stays_beside_the_question)
{
    char dir[512], path[600];
    tmpdir(dir, sizeof dir, "ds");
    snprintf(path, sizeof path, "%s/data.jsonl", dir);
    write_file(path, "{\"id\": \"p1\", \"context\": \"The pass key is 123.\", "
                     "\"question\": \"What is the pass key?\", \"answer\": \"123\"}\n");
    eval_dataset ds;
    plm_error err;
    cr_assert_eq(eval_dataset_load(path, &ds, &err), PLM_OK, "%s", err.msg);
    cr_assert_str_eq(ds.items[0].context, "The pass key is 123.");
    cr_assert_str_eq(ds.items[0].question, "What is the pass key?");
    cr_assert_null(ds.items[0].image);
    eval_dataset_free(&ds);
    remove(path);
    rmdir(dir);
}

/* --late-question names item types: those items (with a context) read their question after the
 * KV policy compressed the context and say so in their result line; without a policy their
 * answers are those of the joint prompt. */
Test(eval, late_question_applies_to_the_named_types)
{
    char dir[512], path[600], cmd[2048];
    tmpdir(dir, sizeof dir, "late");
    snprintf(path, sizeof path, "%s/data.jsonl", dir);
    write_file(path, "{\"id\": \"p\", \"type\": \"passkey\", \"context\": \"The pass key is "
                     "123. Remember it.\", \"question\": \"What is the pass key?\", "
                     "\"answer\": \"123\"}\n"
                     "{\"id\": \"d\", \"type\": \"dialogue\", \"context\": \"USER: Hello.\\n"
                     "ASSISTANT: Hello, how can I help?\", \"question\": \"What did I say?\", "
                     "\"answer\": \"hello\"}\n");
    char *lines[2][2];
    for (int late = 0; late < 2; late++) {
        char out[700], res[800], *text;
        size_t len;
        plm_error err;
        snprintf(out, sizeof out, "%s/out%d", dir, late);
        snprintf(cmd, sizeof cmd, "%s eval -q --threads 1 --max-tokens 3 --model " FIX
                 "gqa_bf16_sharded --data %s --out %s%s", PLM_CLI, path, out,
                 late ? " --late-question dialogue,other" : "");
        cr_assert_eq(system(cmd), 0, "%s", cmd);
        snprintf(res, sizeof res, "%s/results.jsonl", out);
        cr_assert_eq(plm_read_file(res, 1 << 20, &text, &len, &err), PLM_OK, "%s", err.msg);
        char *nl = strchr(text, '\n');
        cr_assert_not_null(nl);
        *nl = '\0';
        lines[late][0] = strdup(text);
        lines[late][1] = strdup(nl + 1);
        free(text);
        remove(res);
        snprintf(res, sizeof res, "%s/summary.json", out);
        remove(res);
        rmdir(out);
    }
    cr_assert_null(strstr(lines[0][0], "late_question"), "%s", lines[0][0]);
    cr_assert_null(strstr(lines[0][1], "late_question"), "%s", lines[0][1]);
    cr_assert_null(strstr(lines[1][0], "late_question"), "the pass key is not named");
    cr_assert(strstr(lines[1][1], "\"late_question\":true"), "%s", lines[1][1]);
    for (int i = 0; i < 2; i++) {
        const char *a = strstr(lines[0][i], "\"prediction\""), *b = strstr(lines[1][i],
                                                                          "\"prediction\"");
        cr_assert(a && b);
        cr_assert_eq(strncmp(a, b, (size_t)(strchr(a, ',') - a)), 0, "%s vs %s", a, b);
    }
    for (int i = 0; i < 4; i++) free(lines[i / 2][i % 2]);
    remove(path);
    rmdir(dir);
}

/* A text item after an image item must be asked without the image: the session keeps an
 * image for the prompts after it, and a pass key behind 576 image tokens is another task. */
Test(eval, a_text_item_after_an_image_item_has_no_image)
{
    char dir[512], path[600], out[600], cmd[2048];
    tmpdir(dir, sizeof dir, "mixed");
    snprintf(path, sizeof path, "%s/data.jsonl", dir);
    write_file(path, "{\"id\": \"a\", \"image\": \"" FIX "gqa_bf16_sharded/image.png\", "
                     "\"question\": \"What colour?\", \"answer\": \"red\"}\n"
                     "{\"id\": \"b\", \"context\": \"The pass key is 123.\", "
                     "\"question\": \"What is the pass key?\", \"answer\": \"123\"}\n");
    snprintf(out, sizeof out, "%s/out", dir);
    /* two settings: the second starts where the first ended, after the text item */
    snprintf(cmd, sizeof cmd, "%s eval -q --threads 1 --max-tokens 2 --model " FIX
             "gqa_bf16_sharded --data %s --out %s --kv none --kv streaming:budget=64",
             PLM_CLI, path, out);
    cr_assert_eq(system(cmd), 0);
    const char *settings[] = {"kv_none", "kv_streaming_budget_64"};
    for (int k = 0; k < 2; k++) {
        char res[800], *text;
        size_t len;
        plm_error err;
        snprintf(res, sizeof res, "%s/%s/results.jsonl", out, settings[k]);
        cr_assert_eq(plm_read_file(res, 1 << 20, &text, &len, &err), PLM_OK, "%s", err.msg);
        char *nl = strchr(text, '\n');
        cr_assert(nl && strstr(nl + 1, "\"id\":\"b\""), "%s", text);
        cJSON *a = cJSON_ParseWithLength(text, (size_t)(nl - text)), *b = cJSON_Parse(nl + 1);
        cr_assert(a && b);
        const cJSON *ta = cJSON_GetObjectItem(a, "tokens"), *tb = cJSON_GetObjectItem(b, "tokens");
        cr_assert_gt(cJSON_GetObjectItem(ta, "image")->valuedouble, 0, "%s", settings[k]);
        cr_assert_eq(cJSON_GetObjectItem(tb, "image")->valuedouble, 0,
                     "%s: the text item was asked with the image before it", settings[k]);
        cr_assert_null(cJSON_GetObjectItem(b, "error"), "%s", settings[k]);
        cJSON_Delete(a);
        cJSON_Delete(b);
        free(text);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(eval, answers_are_compared_after_normalising)
{
    cr_assert(eval_is_correct(" Red.", "red"));
    cr_assert(eval_is_correct("YES", "yes"));
    cr_assert_not(eval_is_correct("red circle", "red"));
    cr_assert_not(eval_is_correct("", ""));
}

Test(eval, resume_drops_a_torn_last_line)
{
    char dir[512], path[600];
    tmpdir(dir, sizeof dir, "res");
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    write_file(path, "{\"id\": \"a\", \"correct\": true}\n{\"id\": \"b\", \"correct\": false}\n"
                     "{\"id\": \"c\", \"corr");
    eval_results r;
    plm_error err;
    cr_assert_eq(eval_results_open(path, 1, &r, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(r.n_done, 2);
    cr_assert(eval_results_has(&r, "a") && eval_results_has(&r, "b"));
    cr_assert_not(eval_results_has(&r, "c"));
    cr_assert_eq(eval_results_append(&r, "{\"id\": \"c\", \"correct\": true}", &err), PLM_OK);
    eval_results_close(&r);
    char *text;
    size_t len;
    cr_assert_eq(plm_read_file(path, 1 << 20, &text, &len, &err), PLM_OK);
    cr_assert_str_eq(text, "{\"id\": \"a\", \"correct\": true}\n{\"id\": \"b\", \"correct\": false}\n"
                           "{\"id\": \"c\", \"correct\": true}\n");
    free(text);
    /* without --resume an existing results file is never overwritten */
    cr_assert_eq(eval_results_open(path, 0, &r, &err), PLM_E_IO);
    cr_assert(strstr(err.msg, "--resume"), "%s", err.msg);
    remove(path);
    rmdir(dir);
}

/* An item that failed (its prompt over the context) counts as wrong, stays out of the means,
 * and the report names it. */
Test(eval, failed_items_count_wrong_and_leave_the_means)
{
    char dir[512], res[600], sum[600], md[600], png[600];
    tmpdir(dir, sizeof dir, "err");
    snprintf(res, sizeof res, "%s/results.jsonl", dir);
    snprintf(sum, sizeof sum, "%s/summary.json", dir);
    snprintf(md, sizeof md, "%s/report.md", dir);
    snprintf(png, sizeof png, "%s/accuracy.png", dir);
    write_file(res,
               "{\"id\":\"a\",\"type\":\"passkey\",\"correct\":true,\"kv_bytes\":1000,"
               "\"peak_bytes\":3145728,\"timings\":{\"prefill_ms\":4}}\n"
               "{\"id\":\"b\",\"type\":\"passkey\",\"correct\":false,\"kv_bytes\":3000,"
               "\"peak_bytes\":2097152,\"timings\":{\"prefill_ms\":8}}\n"
               "{\"id\":\"c\",\"type\":\"passkey\",\"correct\":false,\"error\":\"the prompt "
               "is 11308 tokens, over the context of 256\",\"kv_bytes\":0,"
               "\"timings\":{\"prefill_ms\":0}}\n");
    plm_error err;
    double acc;
    cr_assert_eq(eval_summarize(res, sum, &acc, &err), PLM_OK, "%s", err.msg);
    cr_assert_float_eq(acc, 1.0 / 3, 1e-12);
    char *text;
    size_t len;
    cr_assert_eq(plm_read_file(sum, 1 << 20, &text, &len, &err), PLM_OK);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert_eq(cJSON_GetObjectItem(j, "items")->valuedouble, 3);
    cr_assert_eq(cJSON_GetObjectItem(j, "errors")->valuedouble, 1);
    cr_assert_float_eq(cJSON_GetObjectItem(j, "mean_kv_bytes")->valuedouble, 2000, 1e-9);
    cr_assert_float_eq(cJSON_GetObjectItem(j, "mean_prefill_ms")->valuedouble, 6, 1e-9);
    cr_assert_eq(cJSON_GetObjectItem(j, "peak_bytes")->valuedouble, 3145728, "the largest item's");
    cr_assert(strstr(cJSON_GetObjectItem(j, "first_error")->valuestring, "over the context"));
    cJSON_Delete(j);
    const char *specs[1] = {"none"}, *sums[1] = {sum};
    cr_assert_eq(eval_report(specs, NULL, sums, 1, md, png, NULL, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(plm_read_file(md, 1 << 20, &text, &len, &err), PLM_OK);
    cr_assert(strstr(text, "`none`: 1 of 3, first: the prompt is 11308 tokens"), "%s", text);
    cr_assert(strstr(text, "| 0.00 | 3.0 |"), "KV MiB, then peak MiB: %s", text);
    free(text);
    remove(res);
    remove(sum);
    remove(md);
    remove(png);
    rmdir(dir);
}

/* A dataset of n questions about the fixture image, with answers taken from a first run so
 * some items are right and some wrong. */
static void make_dataset(const char *dir, int n)
{
    char path[700];
    snprintf(path, sizeof path, "%s/data.jsonl", dir);
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    const char *types[] = {"colour", "count", "shape"};
    for (int i = 0; i < n; i++)
        fprintf(f, "{\"id\": \"q%03d\", \"image\": \"%s\", \"question\": \"Question number %d?\", "
                   "\"answer\": \"%s\", \"type\": \"%s\"}\n", i,
                FIX "gqa_bf16_sharded/image.png", i, i % 4 ? "red" : "bb", types[i % 3]);
    fclose(f);
}

static void answers_from_predictions(const char *dir, const char *first)
{
    char path[700], out[700], *line = NULL;
    size_t cap = 0;
    snprintf(path, sizeof path, "%s/results.jsonl", first);
    snprintf(out, sizeof out, "%s/data.jsonl", dir);
    FILE *in = fopen(path, "rb"), *o = fopen(out, "wb");
    cr_assert(in && o);
    int i = 0;
    while (getline(&line, &cap, in) > 0) {
        cJSON *r = cJSON_Parse(line);
        const char *pred = cJSON_GetObjectItem(r, "prediction")->valuestring;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "id", cJSON_GetObjectItem(r, "id")->valuestring);
        cJSON_AddStringToObject(d, "image", FIX "gqa_bf16_sharded/image.png");
        char q[64];
        snprintf(q, sizeof q, "Question number %d?", i);
        cJSON_AddStringToObject(d, "question", q);
        cJSON_AddStringToObject(d, "answer", i % 2 && pred[0] ? pred : "zzz");
        cJSON_AddStringToObject(d, "type", cJSON_GetObjectItem(r, "type")->valuestring);
        char *txt = cJSON_PrintUnformatted(d);
        fprintf(o, "%s\n", txt);
        free(txt);
        cJSON_Delete(d);
        cJSON_Delete(r);
        i++;
    }
    free(line);
    fclose(in);
    fclose(o);
}

static int run_eval(const char *dir, const char *out, int resume)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s eval -q --threads 1 --max-tokens 6 --model " FIX
             "gqa_bf16_sharded --data %s/data.jsonl --out %s %s", PLM_CLI, dir, out,
             resume ? "--resume" : "");
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static cJSON *read_json(const char *path)
{
    cJSON *j;
    plm_error err;
    cr_assert_eq(json_load_file(path, 1 << 24, &j, &err), PLM_OK, "%s", err.msg);
    return j;
}

/* Counts each id's lines in results.jsonl; every id must appear exactly once. */
static void check_each_once(const char *out, int n)
{
    char path[700], *text;
    size_t len;
    plm_error err;
    snprintf(path, sizeof path, "%s/results.jsonl", out);
    cr_assert_eq(plm_read_file(path, 1 << 24, &text, &len, &err), PLM_OK, "%s", err.msg);
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "\"id\":\"q%03d\"", i);
        char *p = strstr(text, id);
        cr_assert(p, "q%03d missing", i);
        cr_assert_null(strstr(p + 1, id), "q%03d answered twice", i);
    }
    int lines = 0;
    for (char *p = text; *p; p++) lines += *p == '\n';
    cr_assert_eq(lines, n);
    free(text);
}

Test(eval, sigkill_at_random_points_then_resume_loses_and_repeats_nothing, .timeout = 300)
{
    const int n = 400;
    char dir[512], clean[600], killed[600], cmd[2048];
    tmpdir(dir, sizeof dir, "evalkill");
    make_dataset(dir, n);
    snprintf(clean, sizeof clean, "%s/clean", dir);
    snprintf(killed, sizeof killed, "%s/killed", dir);
    /* A first run's predictions become the gold answers of every other item, so the summary
     * has a non-trivial accuracy to reproduce. */
    char first[600];
    snprintf(first, sizeof first, "%s/first", dir);
    cr_assert_eq(run_eval(dir, first, 0), 0);
    answers_from_predictions(dir, first);
    cr_assert_eq(run_eval(dir, clean, 0), 0);
    snprintf(cmd, sizeof cmd, "%s/summary.json", clean);
    cJSON *want = read_json(cmd);
    check_each_once(clean, n);
    double acc = cJSON_GetObjectItem(want, "accuracy")->valuedouble;
    cr_assert(acc > 0.3 && acc < 0.7, "accuracy %g", acc);

    /* Kill the evaluator (no shell between: exec it) after a random delay, again and again,
     * resuming each time; count the runs that really died mid-way. */
    srand(12345);
    int kills = 0;
    for (int round = 0; round < 200 && kills < 20; round++) {
        char data[700];
        snprintf(data, sizeof data, "%s/data.jsonl", dir);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            freopen("/dev/null", "w", stderr);
            execl(PLM_CLI, PLM_CLI, "eval", "-q", "--threads", "1", "--max-tokens", "6",
                  "--model", FIX "gqa_bf16_sharded", "--data", data, "--out", killed, "--resume",
                  (char *)NULL);
            _exit(127);
        }
        struct timespec ts = {0, (long)(rand() % 12) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) {
            kills++;
        } else {
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "eval failed: %d", st);
            break; /* it finished before the kill: everything is answered */
        }
    }
    cr_assert_geq(kills, 20, "only %d runs were killed mid-way", kills);
    cr_assert_eq(run_eval(dir, killed, 1), 0);
    check_each_once(killed, n);
    snprintf(cmd, sizeof cmd, "%s/summary.json", killed);
    cJSON *got = read_json(cmd);
    const char *keys[] = {"items", "correct", "accuracy"};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(cJSON_GetObjectItem(got, keys[i])->valuedouble,
                     cJSON_GetObjectItem(want, keys[i])->valuedouble, "%s differs", keys[i]);
    char *pw = cJSON_PrintUnformatted(cJSON_GetObjectItem(want, "per_type"));
    char *pg = cJSON_PrintUnformatted(cJSON_GetObjectItem(got, "per_type"));
    cr_assert_str_eq(pg, pw);
    free(pw);
    free(pg);
    cJSON_Delete(want);
    cJSON_Delete(got);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(eval, a_sweep_writes_one_folder_per_setting_a_report_and_a_plot)
{
    char dir[512], out[600], cmd[2048], path[700];
    tmpdir(dir, sizeof dir, "sweep");
    make_dataset(dir, 4);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(cmd, sizeof cmd, "%s eval -q --threads 1 --max-tokens 2 --model " FIX "mqa_f32_oldnames"
             " --data %s/data.jsonl --out %s --prune none --prune uniform-grid:tokens=4 "
             "--prune fastv:tokens=4,k=1", PLM_CLI, dir, out);
    cr_assert_eq(system(cmd), 0);
    const char *folders[] = {"none", "uniform-grid_tokens_4", "fastv_tokens_4_k_1"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s/summary.json", out, folders[i]);
        cJSON *j = read_json(path);
        cr_assert_eq(cJSON_GetObjectItem(j, "items")->valuedouble, 4);
        cJSON_Delete(j);
    }
    char *md;
    size_t len;
    plm_error err;
    snprintf(path, sizeof path, "%s/report.md", out);
    cr_assert_eq(plm_read_file(path, 1 << 20, &md, &len, &err), PLM_OK, "%s", err.msg);
    cr_assert(strstr(md, "| `none` | 16.0 | 16.0 |"), "%s", md);
    cr_assert(strstr(md, "| `uniform-grid:tokens=4` | 4.0 | 4.0 |"), "%s", md);
    cr_assert(strstr(md, "| `fastv:tokens=4,k=1` | 16.0 | 10.0 |"), "%s", md);
    free(md);
    snprintf(path, sizeof path, "%s/accuracy.png", out);
    FILE *f = fopen(path, "rb");
    cr_assert(f);
    unsigned char sig[24];
    cr_assert_eq(fread(sig, 1, 24, f), 24);
    fclose(f);
    cr_assert(!memcmp(sig, "\x89PNG", 4));
    cr_assert_eq((sig[16] << 24 | sig[17] << 16 | sig[18] << 8 | sig[19]), 900); /* width */
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(eval, a_kv_sweep_runs_the_grid_and_plots_accuracy_against_kv_memory)
{
    char dir[512], out[600], cmd[2048], path[700];
    tmpdir(dir, sizeof dir, "kvsweep");
    make_dataset(dir, 2);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(cmd, sizeof cmd, "%s eval -q --threads 1 --max-tokens 2 --model " FIX "mqa_f32_oldnames"
             " --data %s/data.jsonl --out %s --prune none --prune uniform-grid:tokens=4 "
             "--kv none --kv streaming:budget=8", PLM_CLI, dir, out);
    cr_assert_eq(system(cmd), 0);
    const char *folders[] = {"none__kv_none", "none__kv_streaming_budget_8",
                             "uniform-grid_tokens_4__kv_none",
                             "uniform-grid_tokens_4__kv_streaming_budget_8"};
    double kv[4], peak[4];
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s/summary.json", out, folders[i]);
        cJSON *j = read_json(path);
        cr_assert_eq(cJSON_GetObjectItem(j, "items")->valuedouble, 2, "%s", folders[i]);
        kv[i] = cJSON_GetObjectItem(j, "mean_kv_bytes")->valuedouble;
        peak[i] = cJSON_GetObjectItem(j, "peak_bytes")->valuedouble;
        cJSON_Delete(j);
    }
    /* the budget caps the cache; the visual pruning shortens the uncapped one */
    cr_assert_lt(kv[1], kv[0]);
    cr_assert_lt(kv[2], kv[0]);
    cr_assert_eq(kv[1], kv[3]);
    /* each setting's own peak (a fresh session each): it holds its cache at least, and the
     * pruned, capped setting needs less than the first, whole one */
    for (int i = 0; i < 4; i++) cr_assert_geq(peak[i], kv[i], "%s", folders[i]);
    cr_assert_lt(peak[3], peak[0]);
    char *md;
    size_t len;
    plm_error err;
    snprintf(path, sizeof path, "%s/report.md", out);
    cr_assert_eq(plm_read_file(path, 1 << 20, &md, &len, &err), PLM_OK, "%s", err.msg);
    cr_assert(strstr(md, "| `uniform-grid:tokens=4` | `streaming:budget=8` |"), "%s", md);
    cr_assert(strstr(md, "accuracy_kv.png"), "%s", md);
    free(md);
    snprintf(path, sizeof path, "%s/accuracy_kv.png", out);
    FILE *f = fopen(path, "rb");
    cr_assert(f, "no %s", path);
    fclose(f);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
