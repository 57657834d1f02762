/* The smallest prunelm program: load a checkpoint, ask one question about one image, stream the
 * answer.  usage: plm_example MODEL_DIR IMAGE "question" */
#include <stdio.h>

#include "prunelm.h"

static int print_piece(const char *piece, int32_t token, void *user)
{
    (void)token;
    (void)user;
    fputs(piece, stdout);
    fflush(stdout);
    return 0; /* non-zero would stop generation */
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL_DIR IMAGE \"question\"\n", argv[0]);
        return 2;
    }
    plm_error err;
    plm_model *model;
    plm_model_params mp = plm_model_default_params();
    if (plm_model_load(argv[1], &mp, &model, &err) != PLM_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    plm_session *s;
    plm_session_params sp = plm_session_default_params();
    sp.max_tokens = 64;
    if (plm_session_new(model, &sp, &s, &err) != PLM_OK) {
        fprintf(stderr, "%s\n", err.msg);
        plm_model_free(model);
        return 1;
    }
    int rc = 0;
    if (plm_session_set_image_file(s, argv[2]) != PLM_OK ||
        plm_session_ask(s, argv[3], print_piece, NULL, NULL) != PLM_OK) {
        fprintf(stderr, "\n%s\n", plm_last_error(s));
        rc = 1;
    }
    putchar('\n');
    plm_session_free(s);
    plm_model_free(model);
    return rc;
}
