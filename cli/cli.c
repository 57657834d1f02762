#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prunelm.h"
#include "cli.h"

int cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi,
            long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "prunelm %s: %s expects a whole number from %lld to %lld, got '%s'\n", cmd,
                opt, lo, hi, s);
        return 0;
    }
    *out = v;
    return 1;
}

int cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "prunelm %s: %s expects a number from %g to %g, got '%s'\n", cmd, opt, lo,
                hi, s);
        return 0;
    }
    *out = v;
    return 1;
}

int cli_weights_dtype(const char *cmd, const char *s, plm_weights_dtype *out)
{
    if (!strcmp(s, "stored")) *out = PLM_WEIGHTS_STORED;
    else if (!strcmp(s, "bf16")) *out = PLM_WEIGHTS_BF16;
    else if (!strcmp(s, "f16")) *out = PLM_WEIGHTS_F16;
    else {
        fprintf(stderr, "prunelm %s: --dtype expects stored, bf16 or f16, got '%s'\n", cmd, s);
        return 0;
    }
    return 1;
}

const char *cli_value(const char *cmd, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "prunelm %s: %s needs a value (see prunelm %s --help)\n", cmd, argv[*i],
                cmd);
        return NULL;
    }
    return argv[++*i];
}

const char *cli_kv_quant(const char *cmd, const char *kv, const char *quant, char *buf,
                         size_t n, int *bad)
{
    *bad = 0;
    if (!quant || !strcmp(quant, "none")) return kv;
    if (strncmp(quant, "int4", 4) || (quant[4] && quant[4] != ':')) {
        fprintf(stderr, "prunelm %s: --kv-quant takes none or int4[:group=G,residual=R], got "
                "'%s'\n", cmd, quant);
        *bad = 1;
        return NULL;
    }
    if (!kv || !strcmp(kv, "none")) return quant;
    if ((size_t)snprintf(buf, n, "%s+%s", kv, quant) >= n) {
        fprintf(stderr, "prunelm %s: --kv and --kv-quant together are over %zu characters\n",
                cmd, n - 1);
        *bad = 1;
        return NULL;
    }
    return buf;
}

static const char *assets(void)
{
    const char *env = getenv("PRUNELM_ASSETS");
    return env && *env ? env : PLM_ASSETS_DIR;
}

void cli_default_model(char *buf, size_t n)
{
    snprintf(buf, n, "%s/models/default", assets());
}

void cli_default_image(char *buf, size_t n)
{
    snprintf(buf, n, "%s/images/default.png", assets());
}

void cli_log_stderr(plm_log_level level, const char *msg, void *user)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    fprintf(stderr, "prunelm: %s: %s\n", names[level], msg);
}
