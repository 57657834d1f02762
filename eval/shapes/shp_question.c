/* Question generation. Every candidate question is derived from the scene struct and is only
 * emitted when its answer is unique: objects are referred to by the shortest-or-random unique
 * description that does not give away the asked attribute, positions need a margin from the
 * centre line, relations need disjoint projections. The picker then balances question types
 * (a weighted random order of types) and answers (uniform over the answers a scene offers,
 * counts weighted towards larger numbers). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "shapes.h"

#if defined(__GNUC__)
#define PLM_Q_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PLM_Q_PRINTF(a, b)
#endif

enum { D_SIZE = 1, D_COLOUR = 2, D_SHAPE = 4 };
enum { CENTRE_MARGIN = 8, RELATION_GAP = 4, MAX_CANDS = 256 };

static const char *const QTYPE_NAMES[SHP_N_QTYPES] = {
    "colour", "shape", "count", "existence", "position", "relation", "size", "letter"};

const char *shp_qtype_name(shp_qtype t)
{
    return (unsigned)t < SHP_N_QTYPES ? QTYPE_NAMES[t] : "?";
}

static int obj_matches(const shp_object *o, const shp_object *ref, int desc)
{
    if ((desc & D_SIZE) && o->size != ref->size) return 0;
    if ((desc & D_COLOUR) && o->colour != ref->colour) return 0;
    if ((desc & D_SHAPE) && o->shape != ref->shape) return 0;
    return 1;
}

static int n_matching(const shp_scene *sc, const shp_object *ref, int desc)
{
    int n = 0;
    for (int i = 0; i < sc->n_objects; i++) n += obj_matches(&sc->obj[i], ref, desc);
    return n;
}

/* Writes "the [size] [colour] shape|one" for obj using one of the descriptor sets in `allowed`
 * that picks it out uniquely (chosen at random among those). Returns 0 if none does. */
static int ref_text(const shp_scene *sc, int idx, const int *allowed, int n_allowed, shp_rng *r,
                    char *buf, size_t n)
{
    int ok[4], n_ok = 0;
    for (int i = 0; i < n_allowed; i++)
        if (n_matching(sc, &sc->obj[idx], allowed[i]) == 1) ok[n_ok++] = allowed[i];
    if (n_ok == 0) return 0;
    int d = ok[shp_rng_below(r, (uint32_t)n_ok)];
    const shp_object *o = &sc->obj[idx];
    snprintf(buf, n, "the%s%s%s%s %s", (d & D_SIZE) ? " " : "",
             (d & D_SIZE) ? shp_size_name(o->size) : "", (d & D_COLOUR) ? " " : "",
             (d & D_COLOUR) ? shp_colour_name(o->colour) : "",
             (d & D_SHAPE) ? shp_shape_name(o->shape) : "one");
    return 1;
}

static const int REF_ANY[4] = {D_SHAPE, D_COLOUR | D_SHAPE, D_SIZE | D_SHAPE,
                               D_SIZE | D_COLOUR | D_SHAPE};
static const int REF_NO_COLOUR[2] = {D_SHAPE, D_SIZE | D_SHAPE};
static const int REF_NO_SHAPE[2] = {D_COLOUR, D_SIZE | D_COLOUR};
static const int REF_NO_SIZE[2] = {D_SHAPE, D_COLOUR | D_SHAPE};

typedef struct cands {
    shp_question *q;
    int n, cap;
} cands;

static void add(cands *c, shp_qtype t, const char *answer, const char *target_size,
                const char *fmt, ...) PLM_Q_PRINTF(5, 6);

static void add(cands *c, shp_qtype t, const char *answer, const char *target_size,
                const char *fmt, ...)
{
    if (c->n >= c->cap) return;
    shp_question *q = &c->q[c->n++];
    q->type = t;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->text, sizeof q->text, fmt, ap);
    va_end(ap);
    if (q->text[0] >= 'a' && q->text[0] <= 'z') q->text[0] = (char)(q->text[0] - 'a' + 'A');
    snprintf(q->answer, sizeof q->answer, "%s", answer);
    q->target_size = target_size;
}

static const char *article(const char *word)
{
    return strchr("aeiou", word[0]) ? "an" : "a";
}

static void gen_attribute(const shp_scene *sc, shp_qtype t, shp_rng *r, cands *c)
{
    char ref[64];
    for (int i = 0; i < sc->n_objects; i++) {
        const shp_object *o = &sc->obj[i];
        const char *sz = shp_size_name(o->size);
        if (t == SHP_Q_COLOUR && ref_text(sc, i, REF_NO_COLOUR, 2, r, ref, sizeof ref))
            add(c, t, shp_colour_name(o->colour), sz, "what colour is %s?", ref);
        if (t == SHP_Q_SHAPE && ref_text(sc, i, REF_NO_SHAPE, 2, r, ref, sizeof ref))
            add(c, t, shp_shape_name(o->shape), sz, "what shape is %s?", ref);
        if (t == SHP_Q_SIZE && ref_text(sc, i, REF_NO_SIZE, 2, r, ref, sizeof ref))
            add(c, t, sz, sz, "what size is %s?", ref);
    }
}

/* Counts objects matching (size, colour, shape) where a negative value means "any"; *smallest
 * gets the smallest size among them. */
static int count_of(const shp_scene *sc, int size, int colour, int shape, int *smallest)
{
    int n = 0;
    *smallest = SHP_N_SIZES;
    for (int i = 0; i < sc->n_objects; i++) {
        const shp_object *o = &sc->obj[i];
        if ((size >= 0 && (int)o->size != size) || (colour >= 0 && (int)o->colour != colour) ||
            (shape >= 0 && (int)o->shape != shape))
            continue;
        n++;
        if ((int)o->size < *smallest) *smallest = (int)o->size;
    }
    return n;
}

static const char *size_or_none(int s)
{
    return s < SHP_N_SIZES ? shp_size_name((shp_size)s) : "none";
}

static void gen_count(const shp_scene *sc, cands *c)
{
    int sm, n = count_of(sc, -1, -1, -1, &sm);
    if (n > 0) add(c, SHP_Q_COUNT, shp_number_word(n), size_or_none(sm),
                   "how many shapes are there?");
    for (int s = 0; s < SHP_N_SHAPES; s++) {
        n = count_of(sc, -1, -1, s, &sm);
        if (n > 0) add(c, SHP_Q_COUNT, shp_number_word(n), size_or_none(sm),
                       "how many %s are there?", shp_shape_plural((shp_shape)s));
    }
    for (int k = 0; k < SHP_N_COLOURS; k++) {
        n = count_of(sc, -1, k, -1, &sm);
        if (n > 0) add(c, SHP_Q_COUNT, shp_number_word(n), size_or_none(sm),
                       "how many %s shapes are there?", shp_colour_name((shp_colour)k));
        for (int s = 0; s < SHP_N_SHAPES; s++) {
            n = count_of(sc, -1, k, s, &sm);
            if (n > 0) add(c, SHP_Q_COUNT, shp_number_word(n), size_or_none(sm),
                           "how many %s %s are there?", shp_colour_name((shp_colour)k),
                           shp_shape_plural((shp_shape)s));
        }
    }
    for (int z = 0; z < SHP_N_SIZES; z++) {
        n = count_of(sc, z, -1, -1, &sm);
        if (n > 0) add(c, SHP_Q_COUNT, shp_number_word(n), size_or_none(sm),
                       "how many %s shapes are there?", shp_size_name((shp_size)z));
    }
}

static void gen_exist(const shp_scene *sc, shp_rng *r, cands *c)
{
    char what[48];
    int sm;
    int has_colour[SHP_N_COLOURS] = {0}, has_shape[SHP_N_SHAPES] = {0};
    for (int i = 0; i < sc->n_objects; i++) {
        has_colour[sc->obj[i].colour] = 1;
        has_shape[sc->obj[i].shape] = 1;
    }
    for (int s = 0; s < SHP_N_SHAPES; s++) {
        const char *name = shp_shape_name((shp_shape)s);
        if (count_of(sc, -1, -1, s, &sm) > 0)
            add(c, SHP_Q_EXIST, "yes", size_or_none(sm), "is there %s %s?", article(name), name);
        else
            add(c, SHP_Q_EXIST, "no", "none", "is there %s %s?", article(name), name);
    }
    /* Colour-shape pairs: present ones, and absent ones that share a colour or a shape with
     * something present (near misses are what make "no" need a look at the image). */
    for (int k = 0; k < SHP_N_COLOURS; k++)
        for (int s = 0; s < SHP_N_SHAPES; s++) {
            snprintf(what, sizeof what, "%s %s", shp_colour_name((shp_colour)k),
                     shp_shape_name((shp_shape)s));
            if (count_of(sc, -1, k, s, &sm) > 0)
                add(c, SHP_Q_EXIST, "yes", size_or_none(sm), "is there %s %s?", article(what),
                    what);
            else if (has_colour[k] || has_shape[s] || shp_rng_chance(r, 1, 8))
                add(c, SHP_Q_EXIST, "no", "none", "is there %s %s?", article(what), what);
        }
}

static void gen_position(const shp_scene *sc, shp_rng *r, cands *c)
{
    char ref[64];
    const int mid = SHP_IMG / 2;
    for (int i = 0; i < sc->n_objects; i++) {
        const shp_object *o = &sc->obj[i];
        if (!ref_text(sc, i, REF_ANY, 4, r, ref, sizeof ref)) continue;
        const char *sz = shp_size_name(o->size);
        /* The drawn extent (box + outline) must clear the centre line by CENTRE_MARGIN. */
        int x_lo = o->x0 - 1, x_hi = o->x0 + o->side + 1;
        int y_lo = o->y0 - 1, y_hi = o->y0 + o->side + 1;
        if (x_hi + CENTRE_MARGIN <= mid)
            add(c, SHP_Q_POSITION, "left", sz, "is %s on the left or the right?", ref);
        else if (x_lo >= mid + CENTRE_MARGIN)
            add(c, SHP_Q_POSITION, "right", sz, "is %s on the left or the right?", ref);
        if (y_hi + CENTRE_MARGIN <= mid)
            add(c, SHP_Q_POSITION, "top", sz, "is %s at the top or the bottom?", ref);
        else if (y_lo >= mid + CENTRE_MARGIN)
            add(c, SHP_Q_POSITION, "bottom", sz, "is %s at the top or the bottom?", ref);
    }
}

static void gen_relation(const shp_scene *sc, shp_rng *r, cands *c)
{
    char A[64], B[64];
    for (int i = 0; i < sc->n_objects; i++) {
        if (!ref_text(sc, i, REF_ANY, 4, r, A, sizeof A)) continue;
        for (int j = 0; j < sc->n_objects; j++) {
            if (j == i || !ref_text(sc, j, REF_ANY, 4, r, B, sizeof B)) continue;
            const shp_object *a = &sc->obj[i], *b = &sc->obj[j];
            const char *sz = shp_size_name(a->size < b->size ? a->size : b->size);
            /* Projections on the axis must be disjoint with a gap, else the pair is skipped. */
            int a_left = a->x0 + a->side + RELATION_GAP <= b->x0;
            int a_right = b->x0 + b->side + RELATION_GAP <= a->x0;
            int a_above = a->y0 + a->side + RELATION_GAP <= b->y0;
            int a_below = b->y0 + b->side + RELATION_GAP <= a->y0;
            if (a_left || a_right) {
                add(c, SHP_Q_RELATION, a_left ? "yes" : "no", sz, "is %s to the left of %s?", A, B);
                add(c, SHP_Q_RELATION, a_right ? "yes" : "no", sz, "is %s to the right of %s?",
                    A, B);
            }
            if (a_above || a_below) {
                add(c, SHP_Q_RELATION, a_above ? "yes" : "no", sz, "is %s above %s?", A, B);
                add(c, SHP_Q_RELATION, a_below ? "yes" : "no", sz, "is %s below %s?", A, B);
            }
        }
    }
}

static void gen_letter(const shp_scene *sc, cands *c)
{
    const shp_glyph *g = &sc->glyph;
    if (!g->present) return;
    const char *sz = shp_size_name(g->size);
    if (g->ch >= 'A' && g->ch <= 'Z') {
        char lower[2] = {(char)(g->ch - 'A' + 'a'), '\0'};
        add(c, SHP_Q_LETTER, lower, sz, "what letter is shown?");
    } else {
        add(c, SHP_Q_LETTER, shp_number_word(g->ch - '0'), sz, "what digit is shown?");
    }
}

int shp_questions_all(const shp_scene *sc, shp_qtype t, shp_rng *r, shp_question *out, int cap)
{
    cands c = {out, 0, cap};
    switch (t) {
    case SHP_Q_COLOUR:
    case SHP_Q_SHAPE:
    case SHP_Q_SIZE: gen_attribute(sc, t, r, &c); break;
    case SHP_Q_COUNT: gen_count(sc, &c); break;
    case SHP_Q_EXIST: gen_exist(sc, r, &c); break;
    case SHP_Q_POSITION: gen_position(sc, r, &c); break;
    case SHP_Q_RELATION: gen_relation(sc, r, &c); break;
    case SHP_Q_LETTER: gen_letter(sc, &c); break;
    case SHP_N_QTYPES: break;
    }
    return c.n;
}

static int already(const shp_question *out, int n, const char *text)
{
    for (int i = 0; i < n; i++)
        if (strcmp(out[i].text, text) == 0) return 1;
    return 0;
}

static int number_value(const char *word)
{
    for (int k = 0; k <= 9; k++)
        if (strcmp(word, shp_number_word(k)) == 0) return k;
    return 1;
}

/* Chooses an answer among those the candidates offer, then a candidate with that answer whose
 * text is not yet used. Answers are equally likely except for counts, weighted by the cube of
 * the number: every scene offers "one" and few offer "seven"; the weighting brings "seven" from
 * a fifth of "one"'s frequency to about two thirds.
 * Returns 1 and copies the question to *q on success. */
static int choose(const shp_question *cand, int n, const shp_question *used, int n_used,
                  shp_rng *r, shp_question *q)
{
    const char *answers[MAX_CANDS];
    uint32_t weight[MAX_CANDS], total = 0;
    int n_ans = 0;
    for (int i = 0; i < n; i++) {
        if (already(used, n_used, cand[i].text)) continue;
        int seen = 0;
        for (int k = 0; k < n_ans && !seen; k++) seen = strcmp(answers[k], cand[i].answer) == 0;
        if (seen) continue;
        int v = cand[i].type == SHP_Q_COUNT ? number_value(cand[i].answer) : 1;
        answers[n_ans] = cand[i].answer;
        weight[n_ans] = (uint32_t)(v * v * v);
        total += weight[n_ans++];
    }
    if (n_ans == 0) return 0;
    uint32_t u = shp_rng_below(r, total);
    int a = 0;
    while (u >= weight[a]) u -= weight[a++];
    const char *want = answers[a];
    int idx[MAX_CANDS], m = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(cand[i].answer, want) == 0 && !already(used, n_used, cand[i].text)) idx[m++] = i;
    *q = cand[idx[shp_rng_below(r, (uint32_t)m)]];
    return 1;
}

/* Type weights for the order in which types are tried. Types that a scene cannot always ask
 * (relation needs two separable objects with unique descriptions, size and colour a unique
 * reference) get more weight, the always-available count and existence less, so that each of
 * the seven types ends up with about 1/8 of all questions (measured over 3000 items). */
static const uint32_t TYPE_WEIGHT[SHP_N_QTYPES - 1] = {
    [SHP_Q_COLOUR] = 100, [SHP_Q_SHAPE] = 100, [SHP_Q_COUNT] = 95, [SHP_Q_EXIST] = 88,
    [SHP_Q_POSITION] = 100, [SHP_Q_RELATION] = 122, [SHP_Q_SIZE] = 110};

/* A random order of the non-letter types, drawn without replacement by TYPE_WEIGHT. */
static void type_order(shp_rng *r, int *order)
{
    int left[SHP_N_QTYPES - 1], n = SHP_N_QTYPES - 1;
    for (int i = 0; i < n; i++) left[i] = i;
    for (int k = 0; n > 0; k++) {
        uint32_t total = 0;
        for (int i = 0; i < n; i++) total += TYPE_WEIGHT[left[i]];
        uint32_t u = shp_rng_below(r, total);
        int i = 0;
        while (u >= TYPE_WEIGHT[left[i]]) u -= TYPE_WEIGHT[left[i++]];
        order[k] = left[i];
        left[i] = left[--n];
    }
}

int shp_questions_pick(const shp_scene *sc, shp_rng *r, int n, shp_question *out)
{
    shp_question cand[MAX_CANDS];
    int got = 0;
    if (n > SHP_MAX_QUESTIONS) n = SHP_MAX_QUESTIONS;
    if (n <= 0) return 0;
    /* A glyph appears in 35% of scenes; asking about it with probability n/(8 * 0.35) gives
     * letter questions their 1/8 share of all questions (capped: at most once per scene). */
    if (sc->glyph.present && shp_rng_chance(r, (uint32_t)(20 * n < 56 ? 20 * n : 56), 56)) {
        int k = shp_questions_all(sc, SHP_Q_LETTER, r, cand, MAX_CANDS);
        if (k > 0 && choose(cand, k, out, got, r, &out[got])) got++;
    }
    int order[SHP_N_QTYPES - 1];
    for (int pass = 0; pass < 3 && got < n; pass++) {
        type_order(r, order);
        for (int i = 0; i < SHP_N_QTYPES - 1 && got < n; i++) {
            int k = shp_questions_all(sc, (shp_qtype)order[i], r, cand, MAX_CANDS);
            if (k > 0 && choose(cand, k, out, got, r, &out[got])) got++;
        }
    }
    return got;
}
