/* prunelm: ask questions about images with LLaVA-style models, cheaply. */
#include <stdio.h>
#include <string.h>

#include "prunelm.h"
#include "cli.h"

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} COMMANDS[] = {
    {"ask", cmd_ask, "answer a question about an image (or a text prompt)"},
    {"eval", cmd_eval, "answer a whole JSONL dataset, resumably, and score it"},
    {"tune", cmd_tune, "search VFlowOpt's pruning hyperparameters for a token budget"},
    {"bench", cmd_bench, "time the vision tower, first token and decoding"},
    {"inspect", cmd_inspect, "print a checkpoint's architecture, parameters and dtypes"},
    {"tokenize", cmd_tokenize, "turn text into token ids and back with a tokenizer.json"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: prunelm <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].help);
    fprintf(f, "\n'prunelm <command> --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "prunelm: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CLI_USAGE;
}
