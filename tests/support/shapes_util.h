/* What the ShapesVQA generator's tests (tests/test_shapes_*.c) share: a fresh output folder per
 * test (the suite's init and fini: TestSuite(shapes, .init = make_dir, .fini = remove_dir)),
 * generator parameters, a scene sampled and rendered as the generator does, and readers of its
 * files (JSONL fields, PNG headers). Include only where PLM_SHAPES_WIRED is defined
 * (eval/shapes/shapes.cmake links those tests to plm_shapes). */
#ifndef PLM_TESTS_SHAPES_UTIL_H
#define PLM_TESTS_SHAPES_UTIL_H

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval/shapes/shapes.h"

#ifndef PLM_BINARY_DIR
#define PLM_BINARY_DIR "/tmp"
#endif

static char dir[1024];

static inline void remove_tree(const char *d)
{
    DIR *dd = opendir(d);
    if (!dd) {
        unlink(d);
        return;
    }
    struct dirent *e;
    char p[2048];
    while ((e = readdir(dd))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (snprintf(p, sizeof p, "%s/%s", d, e->d_name) >= (int)sizeof p) continue;
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(dd);
    rmdir(d);
}

static inline void make_dir(void)
{
    snprintf(dir, sizeof dir, "%s/shapes_test_XXXXXX", PLM_BINARY_DIR);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp failed");
}

static inline void remove_dir(void)
{
    remove_tree(dir);
}

static inline const char *sub(const char *name)
{
    static char p[4][2048];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

/* The whole file, NUL-terminated (the caller frees it), and its length in *len (0 when the
 * file cannot be opened: then NULL). */
static inline char *slurp(const char *path, size_t *len)
{
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

static inline shp_params params(const char *out, shp_split split, shp_task task, int count)
{
    shp_params p = shp_default_params();
    p.out_dir = out;
    p.split = split;
    p.task = task;
    p.count = (uint64_t)count;
    return p;
}

static inline void sample(uint64_t seed, shp_scene *sc)
{
    memset(sc, 0, sizeof *sc);
    shp_rng r;
    shp_rng_seed(&r, seed, 1);
    shp_scene_sample(sc, seed, &r);
}

static inline void render(const shp_scene *sc, shp_image *img)
{
    plm_error err;
    cr_assert_eq(shp_image_new(img, SHP_IMG, SHP_IMG, &err), PLM_OK);
    shp_rng r;
    shp_rng_seed(&r, sc->seed, 2);
    shp_scene_render(sc, img, &r);
}

static inline const char *str_field(cJSON *o, const char *name)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    cr_assert(cJSON_IsString(v), "field '%s' is missing or not a string", name);
    return v->valuestring;
}

static inline double num_field(cJSON *o, const char *name)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    cr_assert(cJSON_IsNumber(v), "field '%s' is missing or not a number", name);
    return v->valuedouble;
}

static inline int one_lowercase_word(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9'))) return 0;
    return 1;
}

/* Checks the PNG signature and a 336x336 RGB8 header. */
static inline void assert_png(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s is missing", path);
    unsigned char h[26];
    cr_assert_eq(fread(h, 1, sizeof h, f), sizeof h);
    fclose(f);
    cr_assert_eq(memcmp(h, "\x89PNG\r\n\x1a\n", 8), 0);
    cr_assert_eq(memcmp(h + 12, "IHDR", 4), 0);
    unsigned w = (unsigned)h[16] << 24 | h[17] << 16 | h[18] << 8 | h[19];
    unsigned ht = (unsigned)h[20] << 24 | h[21] << 16 | h[22] << 8 | h[23];
    cr_assert(w == SHP_IMG && ht == SHP_IMG && h[24] == 8 && h[25] == 2, "%s: %ux%u", path, w, ht);
}

/* Parses every line of a JSONL file; calls check on each object. Returns the line count. */
static inline int each_line(const char *path, void (*check)(cJSON *, void *), void *user)
{
    char *text = slurp(path, NULL);
    cr_assert_not_null(text, "%s is missing", path);
    int n = 0;
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        cr_assert_not_null(nl, "%s: last line has no newline", path);
        *nl = '\0';
        cJSON *o = cJSON_Parse(line);
        cr_assert_not_null(o, "%s line %d is not JSON: %.80s", path, n + 1, line);
        check(o, user);
        cJSON_Delete(o);
        n++;
    }
    free(text);
    return n;
}

#endif
