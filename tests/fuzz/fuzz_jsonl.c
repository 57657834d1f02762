/* Fuzz target: the evaluator's JSONL files. The same bytes are read as a dataset
 * (eval_dataset_load) and as a results file being resumed (eval_results_open with resume, which
 * reads back the answered ids and cuts off a torn last line). */
#include "eval/eval.h"
#include "tests/fuzz/fuzz_util.h"

static void load_dataset(const char *path)
{
    eval_dataset ds;
    plm_error err = {{0}};
    plm_status st = eval_dataset_load(path, &ds, &err);
    fuzz_check_status(st, &err, "eval_dataset_load");
    if (st != PLM_OK) {
        FUZZ_CHECK(ds.items == NULL && ds.n == 0, "eval_dataset_load failed but kept items");
        return;
    }
    FUZZ_CHECK(ds.n > 0, "eval_dataset_load succeeded with no items");
    for (size_t i = 0; i < ds.n; i++) {
        const eval_item *it = &ds.items[i];
        FUZZ_CHECK(it->id && it->question && it->answer, "item %zu lacks a required field", i);
        /* ids are unique (duplicates are refused) */
        for (size_t j = 0; j < i && j < 64; j++)
            FUZZ_CHECK(strcmp(ds.items[j].id, it->id) != 0, "id '%s' twice", it->id);
        (void)eval_is_correct(it->question, it->answer);
    }
    eval_dataset_free(&ds);
}

static void resume_results(const char *path, size_t size)
{
    eval_results r;
    plm_error err = {{0}};
    plm_status st = eval_results_open(path, 1, &r, &err);
    fuzz_check_status(st, &err, "eval_results_open");
    if (st != PLM_OK) return;
    for (size_t i = 1; i < r.n_done; i++)
        FUZZ_CHECK(strcmp(r.done[i - 1], r.done[i]) <= 0, "answered ids are not sorted");
    for (size_t i = 0; i < r.n_done && i < 64; i++)
        FUZZ_CHECK(eval_results_has(&r, r.done[i]), "eval_results_has misses '%s'", r.done[i]);
    long kept = ftell(r.f);
    FUZZ_CHECK(kept >= 0 && (size_t)kept <= size, "resume kept %ld of %zu bytes", kept, size);
    eval_results_close(&r);
}

int fuzz_jsonl(const uint8_t *data, size_t size)
{
    char path[512];
    fuzz_tmp_path(path, sizeof path, "data.jsonl");
    fuzz_write_file(path, data, size);
    load_dataset(path);
    resume_results(path, size); /* last: it truncates the file */
    unlink(path);
    return 0;
}

#ifndef PLM_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_jsonl(data, size);
}
#endif
