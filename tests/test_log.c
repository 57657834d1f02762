#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"

typedef struct sink {
    int n;
    plm_log_level last_level;
    char last[4096];
} sink;

static void collect(plm_log_level level, const char *msg, void *user)
{
    sink *s = user;
    s->n++;
    s->last_level = level;
    snprintf(s->last, sizeof s->last, "%s", msg);
}

Test(log, formats_and_filters_by_level)
{
    sink s = {0};
    plm_logger lg = {collect, &s, PLM_LOG_INFO};
    plm_log(&lg, PLM_LOG_WARN, "loaded %d tensors from %s", 3, "model.safetensors");
    cr_assert_eq(s.n, 1);
    cr_assert_eq(s.last_level, PLM_LOG_WARN);
    cr_assert_str_eq(s.last, "loaded 3 tensors from model.safetensors");
    plm_log(&lg, PLM_LOG_INFO, "info");
    cr_assert_eq(s.n, 2);
    plm_log(&lg, PLM_LOG_DEBUG, "debug is above max");
    cr_assert_eq(s.n, 2);
    cr_assert_str_eq(s.last, "info");
}

Test(log, silent_without_callback)
{
    plm_logger none = {NULL, NULL, PLM_LOG_DEBUG};
    plm_log(&none, PLM_LOG_ERROR, "nobody hears %s", "this");
    plm_log(NULL, PLM_LOG_ERROR, "nor %s", "this");
}

Test(log, delivers_long_messages_whole)
{
    sink s = {0};
    plm_logger lg = {collect, &s, PLM_LOG_DEBUG};
    char long_text[2000];
    memset(long_text, 'a', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    plm_log(&lg, PLM_LOG_DEBUG, "<%s>", long_text);
    cr_assert_eq(strlen(s.last), 2001);
    cr_assert_eq(s.last[0], '<');
    cr_assert_eq(s.last[2000], '>');
}
