/* ShapesVQA generator (eval/shapes), the VQA task: determinism (pinned pixel and JSONL hashes),
 * answers re-derived from the scene by an independent parser of the question text, the JSONL
 * format and its images, failed runs that leave no partial files, and the CLI. Scenes are
 * checked by test_shapes_scene.c, the long-context text tasks by test_shapes_text.c. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* eval/shapes/shapes.cmake links this test to plm_shapes and defines PLM_SHAPES_WIRED. Until the
 * top-level CMakeLists.txt includes that file, the tests loop still builds this one: it then
 * holds only a skipped placeholder, so the build stays green. */
#ifndef PLM_SHAPES_WIRED
Test(shapes, needs_shapes_cmake, .disabled = true) {}
#else

#include "tests/support/shapes_util.h"

TestSuite(shapes, .init = make_dir, .fini = remove_dir);

static uint64_t fnv1a(const void *data, size_t n, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ULL;
    return h;
}

/* Hash of every file in d (names and bytes), in name order. */
static uint64_t hash_dir(const char *d)
{
    struct dirent **names;
    int n = scandir(d, &names, NULL, alphasort);
    cr_assert_geq(n, 0, "%s: scandir failed", d);
    uint64_t h = 0xCBF29CE484222325ULL;
    for (int i = 0; i < n; i++) {
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", d, names[i]->d_name);
        struct stat sb;
        if (names[i]->d_name[0] != '.' && stat(p, &sb) == 0) {
            h = fnv1a(names[i]->d_name, strlen(names[i]->d_name), h);
            if (S_ISDIR(sb.st_mode)) {
                uint64_t sub_h = hash_dir(p);
                h = fnv1a(&sub_h, sizeof sub_h, h);
            } else {
                size_t len;
                char *b = slurp(p, &len);
                h = fnv1a(b, len, h);
                free(b);
            }
        }
        free(names[i]);
    }
    free(names);
    return h;
}

Test(shapes, same_seed_gives_same_bytes)
{
    shp_params a = params(sub("a"), SHP_TEST, SHP_TASK_VQA, 12);
    shp_params b = params(sub("b"), SHP_TEST, SHP_TASK_VQA, 12);
    b.jobs = 2; /* threads must not change the output */
    plm_error err = {{0}};
    cr_assert_eq(shp_generate(&a, NULL, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(shp_generate(&b, NULL, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(hash_dir(a.out_dir), hash_dir(b.out_dir));
    shp_params c = params(sub("c"), SHP_TEST, SHP_TASK_VQA, 12);
    c.seed_base = 1;
    cr_assert_eq(shp_generate(&c, NULL, &err), PLM_OK, "%s", err.msg);
    cr_assert_neq(hash_dir(a.out_dir), hash_dir(c.out_dir));

    /* Pinned values: pixels and text must not drift across compilers, platforms or refactors.
     * (PNG bytes also depend on the zlib build, so the pin is on pixels and JSONL.) */
    shp_scene sc;
    sample(shp_item_seed(SHP_TEST, 0), &sc);
    shp_image img;
    render(&sc, &img);
    uint64_t px = fnv1a(img.px, (size_t)SHP_IMG * SHP_IMG * 3, 0xCBF29CE484222325ULL);
    shp_image_free(&img);
    size_t len;
    char *jsonl = slurp(sub("a/test.jsonl"), &len);
    uint64_t js = fnv1a(jsonl, len, 0xCBF29CE484222325ULL);
    free(jsonl);
    /* Update these when the generator changes on purpose (the message prints the new value). */
    cr_expect_eq(px, UINT64_C(0xc03730b289c4a4fd), "pixel hash of test item 0 is %#llx",
                 (unsigned long long)px);
    cr_expect_eq(js, UINT64_C(0x5a109957f9e39c33), "JSONL hash of 12 test items is %#llx",
                 (unsigned long long)js);
}

/* Each VQA line carries its scene ("objects", "glyph"): the ground truth the trainer's per-patch
 * targets and captions are drawn from, so it must be the scene the pixels were rendered from. */
Test(shapes, jsonl_carries_the_scene)
{
    shp_params a = params(sub("scene"), SHP_TEST, SHP_TASK_VQA, 1);
    plm_error err = {{0}};
    cr_assert_eq(shp_generate(&a, NULL, &err), PLM_OK, "%s", err.msg);
    size_t len;
    char *jsonl = slurp(sub("scene/test.jsonl"), &len);
    char *line_end = strchr(jsonl, '\n');
    cr_assert(line_end);
    *line_end = 0;
    shp_scene sc;
    sample(shp_item_seed(SHP_TEST, 0), &sc);
    int n = 0;
    for (const char *p = strstr(jsonl, "\"objects\": ["); p && (p = strstr(p + 1, "\"shape\": "));)
        n++;
    cr_assert_eq(n, sc.n_objects, "%d objects in the JSONL, %d in the scene", n, sc.n_objects);
    for (int i = 0; i < sc.n_objects; i++) {
        char want[160];
        snprintf(want, sizeof want,
                 "{\"shape\": \"%s\", \"colour\": \"%s\", \"size\": \"%s\", \"box\": [%d, %d, %d, %d]}",
                 shp_shape_name(sc.obj[i].shape), shp_colour_name(sc.obj[i].colour),
                 shp_size_name(sc.obj[i].size), sc.obj[i].x0, sc.obj[i].y0, sc.obj[i].side,
                 sc.obj[i].side);
        cr_assert(strstr(jsonl, want), "object %d (%s) missing from %s", i, want, jsonl);
    }
    if (sc.glyph.present) {
        char want[32];
        snprintf(want, sizeof want, "\"glyph\": {\"char\": \"%c\"", sc.glyph.ch);
        cr_assert(strstr(jsonl, want), "%s", jsonl);
    } else {
        cr_assert(strstr(jsonl, "\"glyph\": null}"), "%s", jsonl);
    }
    free(jsonl);
}

/* ---- an independent oracle: parse the question, filter the scene, derive the answer ------- */
typedef struct ref {
    int size, colour, shape; /* -1: any */
} ref;

static int word_index(const char *w, const char *(*name)(int), int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(w, name(i)) == 0) return i;
    return -1;
}
static const char *shape_n(int i) { return shp_shape_name((shp_shape)i); }
static const char *shape_pl(int i) { return shp_shape_plural((shp_shape)i); }
static const char *colour_n(int i) { return shp_colour_name((shp_colour)i); }
static const char *size_n(int i) { return shp_size_name((shp_size)i); }

/* Splits "Is the red star above the circle?" into lowercase words. */
static int words_of(const char *text, char w[][24], int max)
{
    int n = 0, k = 0;
    for (const char *p = text;; p++) {
        char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            if (k < 23) w[n][k++] = (char)(c | 0x20);
        } else if (k > 0) {
            w[n][k] = '\0';
            k = 0;
            if (++n == max) break;
        }
        if (!c) break;
    }
    return n;
}

/* Parses words [from, to) as a description; every word must be a size, colour, shape (or
 * plural), "one" or "shapes". */
static ref parse_ref(char w[][24], int from, int to)
{
    ref r = {-1, -1, -1};
    for (int i = from; i < to; i++) {
        int v;
        if ((v = word_index(w[i], size_n, SHP_N_SIZES)) >= 0) r.size = v;
        else if ((v = word_index(w[i], colour_n, SHP_N_COLOURS)) >= 0) r.colour = v;
        else if ((v = word_index(w[i], shape_n, SHP_N_SHAPES)) >= 0) r.shape = v;
        else if ((v = word_index(w[i], shape_pl, SHP_N_SHAPES)) >= 0) r.shape = v;
        else cr_assert(!strcmp(w[i], "one") || !strcmp(w[i], "shapes"), "stray word '%s'", w[i]);
    }
    return r;
}

static int matches(const shp_scene *sc, ref r, int *first)
{
    int n = 0;
    for (int i = 0; i < sc->n_objects; i++) {
        const shp_object *o = &sc->obj[i];
        if ((r.size < 0 || (int)o->size == r.size) &&
            (r.colour < 0 || (int)o->colour == r.colour) &&
            (r.shape < 0 || (int)o->shape == r.shape)) {
            if (n++ == 0 && first) *first = i;
        }
    }
    return n;
}

static int find_word(char w[][24], int n, const char *x, int from)
{
    for (int i = from; i < n; i++)
        if (!strcmp(w[i], x)) return i;
    return -1;
}

/* The one object a description denotes; fails the test unless exactly one matches. */
static const shp_object *the(const shp_scene *sc, char w[][24], int from, int to, const char *q)
{
    int idx = -1, n = matches(sc, parse_ref(w, from, to), &idx);
    cr_assert_eq(n, 1, "'%s' refers to %d objects", q, n);
    return &sc->obj[idx];
}

static const char *oracle(const shp_scene *sc, const shp_question *q, char *buf)
{
    char w[32][24];
    int n = words_of(q->text, w, 32);
    const int mid = SHP_IMG / 2;
    if (!strcmp(w[0], "what") && !strcmp(w[1], "colour"))
        return shp_colour_name(the(sc, w, 4, n, q->text)->colour);
    if (!strcmp(w[0], "what") && !strcmp(w[1], "shape"))
        return shp_shape_name(the(sc, w, 4, n, q->text)->shape);
    if (!strcmp(w[0], "what") && !strcmp(w[1], "size"))
        return shp_size_name(the(sc, w, 4, n, q->text)->size);
    if (!strcmp(w[0], "what") && (!strcmp(w[1], "letter") || !strcmp(w[1], "digit"))) {
        cr_assert(sc->glyph.present);
        char c = sc->glyph.ch;
        cr_assert_eq(!strcmp(w[1], "letter"), c >= 'A' && c <= 'Z');
        if (c >= 'A' && c <= 'Z') {
            buf[0] = (char)(c - 'A' + 'a');
            buf[1] = '\0';
            return buf;
        }
        return shp_number_word(c - '0');
    }
    if (!strcmp(w[0], "how")) {
        int are = find_word(w, n, "are", 2);
        return shp_number_word(matches(sc, parse_ref(w, 2, are), NULL));
    }
    if (!strcmp(w[0], "is") && !strcmp(w[1], "there"))
        return matches(sc, parse_ref(w, 3, n), NULL) > 0 ? "yes" : "no";
    cr_assert_str_eq(w[0], "is", "unknown question '%s'", q->text);
    int k;
    if ((k = find_word(w, n, "or", 2)) > 0) { /* position */
        int on = find_word(w, n, !strcmp(w[k + 2], "right") ? "on" : "at", 2);
        const shp_object *o = the(sc, w, 2, on, q->text);
        int horiz = !strcmp(w[k + 2], "right");
        int lo = (horiz ? o->x0 : o->y0) - 1, hi = (horiz ? o->x0 : o->y0) + o->side + 1;
        cr_assert(hi + 8 <= mid || lo >= mid + 8, "'%s': object straddles the centre", q->text);
        return horiz ? (hi <= mid ? "left" : "right") : (hi <= mid ? "top" : "bottom");
    }
    /* relation: is A (to the left of | to the right of | above | below) B */
    int rel = -1, len = 0;
    for (int i = 2; i < n && rel < 0; i++) {
        if (!strcmp(w[i], "to")) rel = i, len = 5; /* to the left of the */
        else if (!strcmp(w[i], "above") || !strcmp(w[i], "below")) rel = i, len = 2;
    }
    cr_assert_geq(rel, 0, "no relation in '%s'", q->text);
    const shp_object *a = the(sc, w, 2, rel, q->text), *b = the(sc, w, rel + len, n, q->text);
    const char *how = len == 5 ? w[rel + 2] : w[rel];
    int horiz = !strcmp(how, "left") || !strcmp(how, "right");
    int a_lo = horiz ? a->x0 : a->y0, b_lo = horiz ? b->x0 : b->y0;
    int a_before = a_lo + a->side <= b_lo, b_before = b_lo + b->side <= a_lo;
    cr_assert(a_before || b_before, "'%s': the objects overlap along the axis", q->text);
    int yes = (!strcmp(how, "left") || !strcmp(how, "above")) ? a_before : b_before;
    return yes ? "yes" : "no";
}

Test(shapes, every_answer_follows_from_the_scene)
{
    static shp_question q[512];
    int checked[SHP_N_QTYPES] = {0};
    char buf[8];
    for (uint64_t i = 0; i < 400; i++) {
        shp_scene sc;
        sample(shp_item_seed(SHP_VAL, i), &sc);
        shp_rng r;
        shp_rng_seed(&r, i, 3);
        for (int t = 0; t < SHP_N_QTYPES; t++) {
            int n = shp_questions_all(&sc, (shp_qtype)t, &r, q, 512);
            cr_assert_lt(n, 256, "candidate list would be truncated");
            for (int k = 0; k < n; k++) {
                cr_assert_str_eq(q[k].answer, oracle(&sc, &q[k], buf), "item %llu: '%s'",
                                 (unsigned long long)i, q[k].text);
                cr_assert_eq(q[k].type, t);
                checked[t]++;
            }
        }
        /* The picked questions are distinct and drawn from the same candidates. */
        shp_question pick[8];
        int n = shp_questions_pick(&sc, &r, 8, pick);
        cr_assert_geq(n, 3);
        for (int a = 0; a < n; a++) {
            cr_assert_str_eq(pick[a].answer, oracle(&sc, &pick[a], buf));
            for (int b = 0; b < a; b++) cr_assert_str_neq(pick[a].text, pick[b].text);
        }
    }
    for (int t = 0; t < SHP_N_QTYPES; t++)
        cr_assert_gt(checked[t], 50, "only %d %s questions checked", checked[t],
                     shp_qtype_name((shp_qtype)t));
}

/* ---- files --------------------------------------------------------------------------------- */
static void check_vqa(cJSON *o, void *user)
{
    (void)user;
    const char *id = str_field(o, "id"), *img = str_field(o, "image");
    unsigned long long idx;
    int q;
    char tail;
    cr_assert_eq(sscanf(id, "test-%6llu-q%d%c", &idx, &q, &tail), 2, "id '%s'", id);
    char want[64];
    snprintf(want, sizeof want, "images/test-%06llu.png", idx);
    cr_assert_str_eq(img, want);
    assert_png(sub(img));
    cr_assert(one_lowercase_word(str_field(o, "answer")), "answer '%s'", str_field(o, "answer"));
    const char *qt = str_field(o, "question");
    cr_assert(qt[0] >= 'A' && qt[0] <= 'Z' && qt[strlen(qt) - 1] == '?', "question '%s'", qt);
    int type_ok = 0;
    for (int t = 0; t < SHP_N_QTYPES; t++)
        type_ok |= !strcmp(str_field(o, "type"), shp_qtype_name((shp_qtype)t));
    cr_assert(type_ok, "type '%s'", str_field(o, "type"));
    cr_assert_str_eq(str_field(o, "split"), "test");
    cr_assert_eq(num_field(o, "seed"), (double)shp_item_seed(SHP_TEST, idx));
    double n = num_field(o, "n_objects");
    cr_assert(n >= 1 && n <= 8);
    const char *ts = str_field(o, "target_size");
    cr_assert(!strcmp(ts, "small") || !strcmp(ts, "medium") || !strcmp(ts, "large") ||
              !strcmp(ts, "none"), "target_size '%s'", ts);
    int bg_ok = 0;
    for (int b = 0; b < SHP_N_BGS; b++)
        bg_ok |= !strcmp(str_field(o, "background"), shp_bg_name((shp_bg)b));
    cr_assert(bg_ok);
}

static int count_files(const char *d)
{
    DIR *dd = opendir(d);
    cr_assert_not_null(dd, "%s", d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dd)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(dd);
    return n;
}

Test(shapes, jsonl_is_valid_and_names_its_images)
{
    shp_params p = params(dir, SHP_TEST, SHP_TASK_VQA, 20);
    p.questions_per_image = 4;
    plm_error err = {{0}};
    shp_stats *st = calloc(1, sizeof *st);
    cr_assert_eq(shp_generate(&p, st, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(each_line(sub("test.jsonl"), check_vqa, NULL), 80);
    cr_assert_eq(st->items, 20);
    cr_assert_eq(st->questions, 80);
    cr_assert_eq(count_files(sub("images")), 20, "only the 20 PNGs, no temporaries");
    cr_assert_eq(count_files(dir), 2, "test.jsonl and images/, no temporaries");
    shp_buf b = {0};
    cr_assert_eq(shp_stats_format(st, &b), PLM_OK);
    cr_assert_not_null(strstr(b.p, "colour"), "%s", b.p);
    shp_buf_free(&b);
    free(st);
}

Test(shapes, failed_run_leaves_no_partial_files)
{
    /* Item 3's PNG path is taken by a directory, so its rename fails half-way through. */
    cr_assert_eq(mkdir(sub("images"), 0777), 0);
    cr_assert_eq(mkdir(sub("images/test-000003.png"), 0777), 0);
    shp_params p = params(dir, SHP_TEST, SHP_TASK_VQA, 6);
    plm_error err = {{0}};
    cr_assert_eq(shp_generate(&p, NULL, &err), PLM_E_IO);
    cr_assert(strstr(err.msg, "images/test-000003.png: cannot rename"), "%s", err.msg);
    struct stat sb;
    cr_assert_neq(stat(sub("test.jsonl"), &sb), 0, "no JSONL after a failed run");
    cr_assert_eq(count_files(dir), 1, "no temporary JSONL left behind");
    /* Other items' PNGs may exist (each is whole); no temporary PNG remains. */
    DIR *dd = opendir(sub("images"));
    struct dirent *e;
    while ((e = readdir(dd))) cr_assert_null(strstr(e->d_name, ".tmp."), "%s", e->d_name);
    closedir(dd);

    /* An output path that is a file, and an unknown split count. */
    FILE *f = fopen(sub("file"), "w");
    fclose(f);
    p = params(sub("file/sub"), SHP_TEST, SHP_TASK_VQA, 1);
    cr_assert_eq(shp_generate(&p, NULL, &err), PLM_E_IO);
    cr_assert(strstr(err.msg, "/file: exists and is not a directory"), "%s", err.msg);
    p = params(dir, SHP_TEST, SHP_TASK_VQA, 1);
    p.questions_per_image = 17;
    cr_assert_eq(shp_generate(&p, NULL, &err), PLM_E_ARG);
    cr_assert_str_eq(err.msg, "--questions-per-image 17 is out of range [1, 16]");
}

/* ---- the CLI ------------------------------------------------------------------------------- */
#ifdef PLM_SHAPES_CLI
static int run_cli(const char *args, char *out, size_t n)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", PLM_SHAPES_CLI, args);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    size_t got = fread(out, 1, n - 1, f);
    out[got] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(shapes, cli_exit_codes_and_messages)
{
    static char out[16384];
    cr_assert_eq(run_cli("--help", out, sizeof out), 0);
    cr_assert_not_null(strstr(out, "--split train|val|test"));
    cr_assert_eq(run_cli("--out x --split test --count abc", out, sizeof out), 2);
    cr_assert_not_null(strstr(out, "--count 'abc' is not a number"), "%s", out);
    cr_assert_eq(run_cli("--out x --split dev", out, sizeof out), 2);
    cr_assert_not_null(strstr(out, "--split 'dev' is not one of train, val, test"), "%s", out);
    cr_assert_eq(run_cli("--split test", out, sizeof out), 2);
    cr_assert_not_null(strstr(out, "--out DIR is required"), "%s", out);
    char args[2048];
    FILE *f = fopen(sub("plain"), "w");
    fclose(f);
    snprintf(args, sizeof args, "--out '%s' --split test --count 2", sub("plain"));
    cr_assert_eq(run_cli(args, out, sizeof out), 1);
    cr_assert_not_null(strstr(out, "exists and is not a directory"), "%s", out);
    snprintf(args, sizeof args, "--out '%s' --split test --count 5 --jobs 2", sub("ok"));
    cr_assert_eq(run_cli(args, out, sizeof out), 0, "%s", out);
    cr_assert_not_null(strstr(out, "5 items, 15 questions"), "%s", out);
    cr_assert_eq(count_files(sub("ok/images")), 5);
}
#endif

#endif /* PLM_SHAPES_WIRED */
