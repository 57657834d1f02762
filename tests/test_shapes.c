/* ShapesVQA generator (eval/shapes): determinism, split disjointness, answers re-derived from
 * the scene by an independent parser of the question text, geometry (no overlaps, small objects
 * within 1-2 patches, visibility), the font, the JSONL format and the long-context text tasks. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* eval/shapes/shapes.cmake links this test to plm_shapes and defines PLM_SHAPES_WIRED. Until the
 * top-level CMakeLists.txt includes that file, the tests loop still builds this one: it then
 * holds only a skipped placeholder, so the build stays green. */
#ifndef PLM_SHAPES_WIRED
Test(shapes, needs_shapes_cmake, .disabled = true) {}
#else

#include "eval/shapes/shapes.h"

#ifndef PLM_BINARY_DIR
#define PLM_BINARY_DIR "/tmp"
#endif

static char dir[1024];

static void remove_tree(const char *d)
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
        snprintf(p, sizeof p, "%s/%s", d, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(dd);
    rmdir(d);
}

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "%s/shapes_test_XXXXXX", PLM_BINARY_DIR);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp failed");
}

static void remove_dir(void)
{
    remove_tree(dir);
}

TestSuite(shapes, .init = make_dir, .fini = remove_dir);

static const char *sub(const char *name)
{
    static char p[4][2048];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static uint64_t fnv1a(const void *data, size_t n, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ULL;
    return h;
}

static char *slurp(const char *path, size_t *len)
{
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

static shp_params params(const char *out, shp_split split, shp_task task, int count)
{
    shp_params p = shp_default_params();
    p.out_dir = out;
    p.split = split;
    p.task = task;
    p.count = (uint64_t)count;
    return p;
}

static void sample(uint64_t seed, shp_scene *sc)
{
    memset(sc, 0, sizeof *sc);
    shp_rng r;
    shp_rng_seed(&r, seed, 1);
    shp_scene_sample(sc, seed, &r);
}

static void render(const shp_scene *sc, shp_image *img)
{
    plm_error err;
    cr_assert_eq(shp_image_new(img, SHP_IMG, SHP_IMG, &err), PLM_OK);
    shp_rng r;
    shp_rng_seed(&r, sc->seed, 2);
    shp_scene_render(sc, img, &r);
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

Test(shapes, splits_use_disjoint_seed_ranges)
{
    uint64_t last = SHP_SPLIT_STRIDE - 1;
    cr_assert_lt(shp_item_seed(SHP_TRAIN, last), shp_item_seed(SHP_VAL, 0));
    cr_assert_lt(shp_item_seed(SHP_VAL, last), shp_item_seed(SHP_TEST, 0));
    cr_assert_eq(shp_item_seed(SHP_TEST, 123), 2000000000123ULL);
    cr_assert_lt(shp_item_seed(SHP_TEST, last), 1ULL << 53, "seeds must stay exact in doubles");

    /* The same index in two splits gives different scenes. */
    int same = 0;
    for (int i = 0; i < 50; i++) {
        shp_scene a, b;
        sample(shp_item_seed(SHP_TRAIN, (uint64_t)i), &a);
        sample(shp_item_seed(SHP_TEST, (uint64_t)i), &b);
        a.seed = b.seed = 0;
        same += memcmp(&a, &b, sizeof a) == 0;
    }
    cr_assert_eq(same, 0);

    /* A run cannot walk out of its split's range. */
    shp_params p = params(sub("x"), SHP_TRAIN, SHP_TASK_VQA, 10);
    p.seed_base = SHP_SPLIT_STRIDE - 5;
    plm_error err = {{0}};
    cr_assert_eq(shp_generate(&p, NULL, &err), PLM_E_LIMIT);
    cr_assert(strstr(err.msg, "--seed-base 999999999995 + --count 10"), "%s", err.msg);
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

/* ---- geometry ------------------------------------------------------------------------------ */
/* Extent of the pixels a mask (fill plus its 1-pixel outline) touches. */
static void drawn_extent(const shp_mask *m, int *x0, int *y0, int *x1, int *y1)
{
    *x0 = *y0 = 1 << 20;
    *x1 = *y1 = -1;
    for (int y = 0; y < m->h; y++)
        for (int x = 0; x < m->w; x++) {
            int any = 0;
            for (int j = y - 1; j <= y + 1 && !any; j++)
                for (int i = x - 1; i <= x + 1 && !any; i++)
                    any = j >= 0 && i >= 0 && j < m->h && i < m->w && m->cov[j * m->w + i];
            if (!any) continue;
            if (m->x0 + x < *x0) *x0 = m->x0 + x;
            if (m->y0 + y < *y0) *y0 = m->y0 + y;
            if (m->x0 + x > *x1) *x1 = m->x0 + x;
            if (m->y0 + y > *y1) *y1 = m->y0 + y;
        }
}

Test(shapes, objects_never_overlap_and_stay_inside)
{
    static uint8_t owner[SHP_IMG][SHP_IMG];
    static shp_mask m;
    int sizes[SHP_N_SIZES] = {0}, total = 0;
    for (uint64_t i = 0; i < 500; i++) {
        shp_scene sc;
        sample(shp_item_seed(SHP_TRAIN, i), &sc);
        cr_assert(sc.n_objects >= 1 && sc.n_objects <= SHP_MAX_OBJECTS);
        memset(owner, 0, sizeof owner);
        for (int k = 0; k <= sc.n_objects; k++) {
            if (k < sc.n_objects) {
                const shp_object *o = &sc.obj[k];
                static const int LO[3] = {SHP_PATCH - 2, SHP_MEDIUM_MIN, SHP_LARGE_MIN};
                static const int HI[3] = {SHP_SMALL_MAX, SHP_MEDIUM_MAX, SHP_LARGE_MAX};
                cr_assert(o->side >= LO[o->size] && o->side <= HI[o->size], "side %d", o->side);
                shp_mask_shape(&m, o->shape, o->x0, o->y0, o->side);
                sizes[o->size]++;
                total++;
            } else if (sc.glyph.present) {
                uint8_t bits[SHP_GLYPH_W * SHP_GLYPH_H];
                cr_assert(shp_glyph_bits(shp_glyph_index(sc.glyph.ch), bits));
                shp_mask_bitmap(&m, bits, SHP_GLYPH_W, SHP_GLYPH_H, sc.glyph.k, sc.glyph.x0,
                                sc.glyph.y0);
            } else {
                break;
            }
            int x0, y0, x1, y1;
            drawn_extent(&m, &x0, &y0, &x1, &y1);
            cr_assert(x0 >= SHP_BORDER && y0 >= SHP_BORDER && x1 < SHP_IMG - SHP_BORDER &&
                      y1 < SHP_IMG - SHP_BORDER, "item %llu: object %d leaves the frame",
                      (unsigned long long)i, k);
            /* Claim the drawn pixels plus a 2-pixel moat: no two objects may share any. */
            for (int y = y0 - 2; y <= y1 + 2; y++)
                for (int x = x0 - 2; x <= x1 + 2; x++) {
                    if (x < 0 || y < 0 || x >= SHP_IMG || y >= SHP_IMG) continue;
                    cr_assert_eq(owner[y][x], 0, "item %llu: objects %d and %d touch at (%d,%d)",
                                 (unsigned long long)i, owner[y][x] - 1, k, x, y);
                    owner[y][x] = (uint8_t)(k + 1);
                }
        }
    }
    /* Every size class is common. */
    for (int s = 0; s < SHP_N_SIZES; s++) cr_assert_gt(sizes[s] * 6, total, "size %d rare", s);
}

Test(shapes, small_objects_span_one_or_two_patches)
{
    static shp_mask m;
    int one = 0, two = 0;
    for (uint64_t i = 0; i < 500; i++) {
        shp_scene sc;
        sample(shp_item_seed(SHP_TEST, i), &sc);
        for (int k = 0; k < sc.n_objects; k++) {
            const shp_object *o = &sc.obj[k];
            if (o->size != SHP_SMALL) continue;
            shp_mask_shape(&m, o->shape, o->x0, o->y0, o->side);
            int x0, y0, x1, y1;
            drawn_extent(&m, &x0, &y0, &x1, &y1);
            int px = x1 / SHP_PATCH - x0 / SHP_PATCH + 1, py = y1 / SHP_PATCH - y0 / SHP_PATCH + 1;
            cr_assert(px <= 2 && py <= 2, "item %llu: a small %s spans %dx%d patches",
                      (unsigned long long)i, shp_shape_name(o->shape), px, py);
            if (px == 1 && py == 1) one++;
            else two++;
        }
    }
    cr_assert_gt(one, 50, "%d single-patch objects", one);
    cr_assert_gt(two, 200, "%d two-patch objects", two);
}

static int dist2(shp_rgb a, const uint8_t *p)
{
    int dr = a.r - p[0], dg = a.g - p[1], db = a.b - p[2];
    return dr * dr + dg * dg + db * db;
}

Test(shapes, objects_stand_out_from_every_background)
{
    shp_image img;
    plm_error err;
    cr_assert_eq(shp_image_new(&img, SHP_IMG, SHP_IMG, &err), PLM_OK);
    int min_d2 = 1 << 30;
    for (int bg = 0; bg < SHP_N_BGS; bg++)
        for (uint64_t s = 0; s < 20; s++) {
            shp_rng r;
            shp_rng_seed(&r, s, (uint64_t)bg);
            shp_background_paint(&img, (shp_bg)bg, &r);
            for (size_t p = 0; p < (size_t)SHP_IMG * SHP_IMG; p++)
                for (int c = 0; c < SHP_N_COLOURS; c++) {
                    int d = dist2(shp_colour_rgb((shp_colour)c), img.px + 3 * p);
                    if (d < min_d2) min_d2 = d;
                }
        }
    cr_assert_geq(min_d2, 48 * 48, "an object colour comes within %d of a background pixel",
                  min_d2);

    /* Rendered objects show their exact colour at an interior point. */
    for (uint64_t i = 0; i < 100; i++) {
        shp_scene sc;
        sample(shp_item_seed(SHP_VAL, i), &sc);
        shp_image_free(&img);
        render(&sc, &img);
        for (int k = 0; k < sc.n_objects; k++) {
            const shp_object *o = &sc.obj[k];
            int cx = o->x0 + o->side / 2, cy = o->y0 + o->side / 2;
            if (o->shape == SHP_RING) cx = o->x0 + o->side * 11 / 100; /* mid-band */
            if (o->shape == SHP_TRIANGLE) cy = o->y0 + o->side * 2 / 3;
            const uint8_t *p = img.px + 3 * ((size_t)cy * SHP_IMG + (size_t)cx);
            cr_assert_eq(dist2(shp_colour_rgb(o->colour), p), 0, "item %llu: %s %s at (%d,%d)",
                         (unsigned long long)i, shp_colour_name(o->colour),
                         shp_shape_name(o->shape), cx, cy);
        }
    }
    shp_image_free(&img);
}

Test(shapes, glyphs_are_distinct)
{
    uint8_t a[SHP_GLYPH_W * SHP_GLYPH_H], b[SHP_GLYPH_W * SHP_GLYPH_H];
    for (int i = 0; i < SHP_N_GLYPHS; i++) {
        cr_assert_eq(shp_glyph_index(shp_glyph_char(i)), i);
        cr_assert(shp_glyph_bits(i, a));
        int ink = 0;
        for (int k = 0; k < SHP_GLYPH_W * SHP_GLYPH_H; k++) ink += a[k];
        cr_assert_geq(ink, 7, "glyph %c has %d cells of ink", shp_glyph_char(i), ink);
        for (int j = 0; j < i; j++) {
            shp_glyph_bits(j, b);
            int diff = 0;
            for (int k = 0; k < SHP_GLYPH_W * SHP_GLYPH_H; k++) diff += a[k] != b[k];
            cr_assert_geq(diff, 3, "glyphs %c and %c differ in %d cells", shp_glyph_char(i),
                          shp_glyph_char(j), diff);
        }
    }
    cr_assert_eq(shp_glyph_index('a'), -1);
    cr_assert_eq(shp_glyph_bits(36, a), 0);
    /* Rendered at scale k, a glyph's ink is exactly k*k pixels per cell. */
    static shp_mask m;
    shp_glyph_bits(shp_glyph_index('Q'), a);
    shp_mask_bitmap(&m, a, SHP_GLYPH_W, SHP_GLYPH_H, 3, 50, 60);
    int px = 0, cells = 0;
    for (int k = 0; k < m.w * m.h; k++) px += m.cov[k] == 16;
    for (int k = 0; k < SHP_GLYPH_W * SHP_GLYPH_H; k++) cells += a[k];
    cr_assert_eq(px, 9 * cells);
}

/* ---- files --------------------------------------------------------------------------------- */
static const char *str_field(cJSON *o, const char *name)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    cr_assert(cJSON_IsString(v), "field '%s' is missing or not a string", name);
    return v->valuestring;
}

static double num_field(cJSON *o, const char *name)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    cr_assert(cJSON_IsNumber(v), "field '%s' is missing or not a number", name);
    return v->valuedouble;
}

static int one_lowercase_word(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9'))) return 0;
    return 1;
}

/* Checks the PNG signature and a 336x336 RGB8 header. */
static void assert_png(const char *path)
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
static int each_line(const char *path, void (*check)(cJSON *, void *), void *user)
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

/* ---- text tasks ---------------------------------------------------------------------------- */
static int occurrences(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++) n++;
    return n;
}

static int is_letter(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Occurrences of word as a whole word, case-insensitive on its first letter. */
static int word_occurrences(const char *hay, const char *word)
{
    int n = 0;
    size_t len = strlen(word);
    for (const char *p = hay; *p; p++) {
        if ((*p | 0x20) != word[0] || strncmp(p + 1, word + 1, len - 1) != 0) continue;
        if (p > hay && is_letter(p[-1])) continue;
        if (is_letter(p[len])) continue;
        n++;
    }
    return n;
}

static void assert_length(size_t chars, int tokens)
{
    double want = (double)tokens * SHP_CHARS_PER_TOKEN;
    cr_assert(chars >= 0.85 * want && chars <= 1.15 * want, "%zu characters for %d tokens",
              chars, tokens);
}

Test(shapes, passkey_appears_once_at_varied_depths)
{
    static const int TOKENS[] = {512, 1024, 2048, 4096, 8192};
    int shallow = 0, deep = 0;
    for (int i = 0; i < 40; i++) {
        shp_text_item it;
        memset(&it, 0, sizeof it);
        shp_rng r;
        shp_rng_seed(&r, (uint64_t)i, 77);
        int tokens = TOKENS[i % 5];
        plm_error err;
        cr_assert_eq(shp_text_passkey(&it, tokens, &r, &err), PLM_OK);
        const char *c = it.context.p;
        cr_assert_eq(strlen(c), it.context.len);
        assert_length(it.context.len, tokens);
        cr_assert_str_eq(it.question, "What is the pass key?");
        cr_assert_eq(strlen(it.answer), 5);
        char line[64];
        snprintf(line, sizeof line, "The pass key is %s. Remember it.", it.answer);
        cr_assert_eq(occurrences(c, line), 1);
        cr_assert_eq(occurrences(c, it.answer), 1);
        int digits = 0;
        for (const char *p = c; *p; p++) digits += *p >= '0' && *p <= '9';
        cr_assert_eq(digits, 5, "the filler holds digits");
        cr_assert_eq(occurrences(c, "pass key"), 1);
        shallow += it.depth_pct < 30;
        deep += it.depth_pct > 70;
        shp_text_item_free(&it);
    }
    cr_assert(shallow > 3 && deep > 3, "depths do not vary: %d shallow, %d deep", shallow, deep);
}

Test(shapes, multikey_lookup_is_unique)
{
    for (int i = 0; i < 30; i++) {
        shp_text_item it;
        memset(&it, 0, sizeof it);
        shp_rng r;
        shp_rng_seed(&r, (uint64_t)i, 78);
        int tokens = 512 << (i % 5);
        plm_error err;
        cr_assert_eq(shp_text_multikey(&it, tokens, &r, &err), PLM_OK);
        assert_length(it.context.len, tokens);
        char word[32];
        cr_assert_eq(sscanf(it.question, "What is the key for %31[a-z]?", word), 1, "%s",
                     it.question);
        char line[96];
        snprintf(line, sizeof line, "The key for %s is %s.", word, it.answer);
        cr_assert_eq(occurrences(it.context.p, line), 1, "'%s' not in the context", line);
        cr_assert_eq(word_occurrences(it.context.p, word), 1);
        cr_assert_eq(occurrences(it.context.p, it.answer), 1);
        cr_assert_eq(occurrences(it.context.p, "The key for "), it.n_keys);
        cr_assert(it.n_keys >= 2 && it.n_keys <= 16);
        shp_text_item_free(&it);
    }
}

static void check_dialogue(cJSON *o, void *user)
{
    int *n = user;
    const char *ctx = str_field(o, "context");
    cr_assert_eq(strlen(ctx), (size_t)num_field(o, "n_chars"));
    assert_length(strlen(ctx), (int)num_field(o, "tokens"));
    cr_assert(!strncmp(ctx, "USER: ", 6));
    /* No word the image questions use may appear in the filler. */
    static const char *const BANNED[] = {
        "red", "green", "blue", "yellow", "purple", "orange", "white", "black", "circle",
        "square", "triangle", "star", "cross", "diamond", "hexagon", "ring", "small", "medium",
        "large", "left", "right", "top", "bottom", "above", "below", "letter", "digit", "key",
        "shape", "shapes", "colour", "size", "object"};
    for (size_t b = 0; b < sizeof BANNED / sizeof BANNED[0]; b++)
        cr_assert_eq(word_occurrences(ctx, BANNED[b]), 0, "the filler mentions '%s'", BANNED[b]);
    assert_png(sub(str_field(o, "image")));
    cr_assert(one_lowercase_word(str_field(o, "answer")));
    cr_assert_str_eq(str_field(o, "type"), "dialogue");
    (*n)++;
}

static void check_text(cJSON *o, void *user)
{
    int *n = user;
    const char *ctx = str_field(o, "context");
    cr_assert_eq(strlen(ctx), (size_t)num_field(o, "n_chars"));
    cr_assert_eq(num_field(o, "tokens"), 1024);
    cr_assert_eq(occurrences(ctx, str_field(o, "answer")), 1);
    (*n)++;
}

Test(shapes, text_task_files)
{
    int n = 0;
    plm_error err = {{0}};
    shp_params p = params(dir, SHP_VAL, SHP_TASK_DIALOGUE, 6);
    p.split = SHP_TEST;
    cr_assert_eq(shp_generate(&p, NULL, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(each_line(sub("test-dialogue.jsonl"), check_dialogue, &n), 6);
    p = params(dir, SHP_VAL, SHP_TASK_PASSKEY, 5);
    p.tokens = 1024;
    cr_assert_eq(shp_generate(&p, NULL, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(each_line(sub("val-passkey.jsonl"), check_text, &n), 5);
    p.task = SHP_TASK_MULTIKEY;
    cr_assert_eq(shp_generate(&p, NULL, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(each_line(sub("val-multikey.jsonl"), check_text, &n), 5);
    cr_assert_eq(n, 16);
    p.tokens = 10;
    cr_assert_eq(shp_generate(&p, NULL, &err), PLM_E_ARG);
    cr_assert_str_eq(err.msg, "--tokens 10 is out of range [64, 131072]");
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
