#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prunelm.h"
#include "cli.h"

static const char *HELP =
    "usage: prunelm inspect [--model DIR]\n"
    "Prints the checkpoint's architecture, parameter count and dtype per component.\n"
    "  --model DIR   checkpoint directory (default: the bundled model)\n";

int cmd_inspect(int argc, char **argv)
{
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(HELP, stdout);
            return CLI_OK;
        } else if (!strcmp(argv[i], "--model")) {
            if (!(model = cli_value("inspect", argc, argv, &i))) return CLI_USAGE;
        } else {
            fprintf(stderr, "prunelm inspect: unknown option '%s'\n%s", argv[i], HELP);
            return CLI_USAGE;
        }
    }
    char dflt[4096];
    if (!model) {
        cli_default_model(dflt, sizeof dflt);
        model = dflt;
    }
    plm_model_params mp = plm_model_default_params();
    mp.device = PLM_DEVICE_CPU;
    plm_model *m;
    plm_error err;
    if (plm_model_load(model, &mp, &m, &err) != PLM_OK) {
        fprintf(stderr, "prunelm inspect: %s\n", err.msg);
        return CLI_FAIL;
    }
    char *d = plm_model_describe(m);
    fputs(d ? d : "out of memory\n", stdout);
    free(d);
    plm_model_free(m);
    return CLI_OK;
}
