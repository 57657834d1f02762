/* Batch evaluation over a JSONL dataset: reading items, the resumable results file, scoring and
 * the summary. Uses only include/prunelm.h from the library. */
#ifndef PLM_EVAL_H
#define PLM_EVAL_H

#include <stddef.h>
#include <stdio.h>

#include "prunelm.h"

/* One dataset line: {"id", "image"?, "context"?, "question", "answer", "type"?, ...}. A
 * context (the long text of the KV-cache tasks) is asked as context, a newline, question
 * (plm_session_ask_context). */
typedef struct eval_item {
    char *id, *image, *context, *question, *answer, *type; /* image resolved against the file's
                                                               folder; context may be NULL */
} eval_item;

typedef struct eval_dataset {
    eval_item *items;
    size_t n;
} eval_dataset;

/* Reads a JSONL dataset; every malformed line is an error naming the file and line. Image
 * paths are relative to the dataset file's folder. Duplicate ids are refused. */
plm_status eval_dataset_load(const char *path, eval_dataset *ds, plm_error *err);
void eval_dataset_free(eval_dataset *ds);

/* The results file, one JSON object per line, appended and fsynced item by item. On resume the
 * ids already answered are read back; a torn last line (a crash mid-write) is cut off. */
typedef struct eval_results {
    FILE *f;
    char *path;
    char **done;      /* ids answered in earlier runs, sorted */
    size_t n_done;
} eval_results;

plm_status eval_results_open(const char *path, int resume, eval_results *r, plm_error *err);
int eval_results_has(const eval_results *r, const char *id);
/* Appends one line (a complete JSON object without newline) and makes it durable. */
plm_status eval_results_append(eval_results *r, const char *line, plm_error *err);
void eval_results_close(eval_results *r);

/* Fills err->msg (printf-style) and returns st. eval/ sees only the public header, so it has
 * its own copy of this one-liner rather than core/err.h. */
plm_status eval_fail(plm_error *err, plm_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes text to path through a temporary file and a rename, so readers never see half. */
plm_status eval_write_text(const char *path, const char *text, plm_error *err);

/* Lowercase, trimmed, trailing punctuation removed: "Red." and " red" both score as "red". */
void eval_normalize(const char *in, char *out, size_t n);
int eval_is_correct(const char *prediction, const char *answer);

/* Reads a results file and writes the summary JSON (accuracy overall and per type, mean
 * timings, counts) atomically to summary_path; also returns the overall accuracy. */
plm_status eval_summarize(const char *results_path, const char *summary_path, double *accuracy,
                          plm_error *err);

/* A line of a plot: points (x[i], y[i]), y in [0, 1]. */
#define EVAL_MAX_POINTS 32
typedef struct eval_series {
    char name[48];
    int n;
    double x[EVAL_MAX_POINTS], y[EVAL_MAX_POINTS];
} eval_series;

/* Draws the series as lines over x in [0, max x] and y in [0, 1] to a PNG (atomically). */
plm_status eval_plot_png(const char *path, const eval_series *s, int ns, const char *x_label,
                         plm_error *err);

/* The report of a sweep: for each run (its visual spec or NULL, its KV spec or NULL — kv may
 * be NULL altogether — and its summary.json), a Markdown table of accuracy overall and per
 * question type, image tokens, KV memory and latency, written to md_path; accuracy against
 * image tokens per layer, one line per visual method, to png_path; and with kv, accuracy
 * against KV MiB, one line per KV policy, to kv_png_path. */
plm_status eval_report(const char *const *specs, const char *const *kv,
                       const char *const *summaries, int n, const char *md_path,
                       const char *png_path, const char *kv_png_path, plm_error *err);

#endif
