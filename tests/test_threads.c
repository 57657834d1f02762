/* One loaded model shared by four threads, each with its own session and question: every thread
 * must get exactly the answer a serial run gives. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "prunelm.h"

#define MODEL PLM_SOURCE_DIR "/tests/fixtures/models/gqa_bf16_sharded"
#define IMAGE MODEL "/image.png"
#define N_THREADS 4
#define ROUNDS 3

static const char *QUESTIONS[N_THREADS] = {
    "What colour is the big shape on the left?",
    "How many shapes are there?",
    "Tell me a short story about a red cat.",
    "Is there a blue square at the top?",
};

typedef struct job {
    plm_model *model;
    int idx;
    char *answers[ROUNDS];
    plm_status st;
    char msg[1024];
} job;

static char *answer_once(plm_model *m, int idx, plm_status *st, char *msg)
{
    plm_session_params sp = plm_session_default_params();
    sp.max_tokens = 12;
    plm_session *s;
    plm_error err;
    char *answer = NULL;
    if ((*st = plm_session_new(m, &sp, &s, &err)) != PLM_OK) {
        strcpy(msg, err.msg);
        return NULL;
    }
    /* odd questions are text-only, even ones are about the image */
    if (idx % 2 == 0 && (*st = plm_session_set_image_file(s, IMAGE)) != PLM_OK) {
        strcpy(msg, plm_last_error(s));
    } else if ((*st = plm_session_ask(s, QUESTIONS[idx], NULL, NULL, &answer)) != PLM_OK) {
        strcpy(msg, plm_last_error(s));
    }
    plm_session_free(s);
    return answer;
}

static void *worker(void *arg)
{
    job *j = arg;
    for (int r = 0; r < ROUNDS && j->st == PLM_OK; r++)
        j->answers[r] = answer_once(j->model, j->idx, &j->st, j->msg);
    return NULL;
}

Test(threads, four_sessions_share_one_model_and_match_serial_answers)
{
    plm_model_params mp = plm_model_default_params();
    mp.device = PLM_DEVICE_CPU;
    mp.n_threads = 2;
    plm_model *m;
    plm_error err;
    cr_assert_eq(plm_model_load(MODEL, &mp, &m, &err), PLM_OK, "%s", err.msg);
    char *serial[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        plm_status st;
        char msg[1024];
        serial[i] = answer_once(m, i, &st, msg);
        cr_assert_eq(st, PLM_OK, "%s", msg);
    }
    /* Different questions must give different answers, or the comparison proves little. */
    cr_assert_str_neq(serial[0], serial[1]);
    job jobs[N_THREADS];
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].model = m;
        jobs[i].idx = i;
        cr_assert_eq(pthread_create(&th[i], NULL, worker, &jobs[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N_THREADS; i++) {
        cr_assert_eq(jobs[i].st, PLM_OK, "thread %d: %s", i, jobs[i].msg);
        for (int r = 0; r < ROUNDS; r++) {
            cr_assert_str_eq(jobs[i].answers[r], serial[i], "thread %d round %d", i, r);
            free(jobs[i].answers[r]);
        }
        free(serial[i]);
    }
    plm_model_free(m);
}
