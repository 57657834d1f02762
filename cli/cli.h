/* Shared bits of the prunelm command-line tool. Subcommands use only include/prunelm.h. */
#ifndef PLM_CLI_H
#define PLM_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "prunelm.h"

int cmd_ask(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* Exit codes: 0 success, 1 the work failed (bad input, I/O), 2 the command line was wrong. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* Parses a whole decimal integer / float in [lo, hi]; prints a usage error naming opt. */
int cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi,
            long long *out);
int cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);
/* --dtype stored|bf16|f16 (what float32 weight matrices become on load) into *out; 0 with a
 * message on stderr otherwise. */
int cli_weights_dtype(const char *cmd, const char *s, plm_weights_dtype *out);
/* The value after an option, or a usage error when it is missing. */
const char *cli_value(const char *cmd, int argc, char **argv, int *i);

/* --kv-quant Q joined to --kv SPEC: "int4[:group=G,residual=R]" is the `int4` KV policy, run
 * after SPEC's ("SPEC+int4..." into buf, or Q alone when SPEC is NULL or "none"); "none" or NULL
 * leaves SPEC as it is. Returns the spec to use (NULL: none), or NULL with *bad set after
 * printing a usage error. */
const char *cli_kv_quant(const char *cmd, const char *kv, const char *quant, char *buf,
                         size_t n, int *bad);

/* The bundled default model and image, under PRUNELM_ASSETS or the source tree's assets/. */
void cli_default_model(char *buf, size_t n);
void cli_default_image(char *buf, size_t n);

void cli_log_stderr(plm_log_level level, const char *msg, void *user);

#endif
