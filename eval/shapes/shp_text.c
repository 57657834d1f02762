/* Long-context text tasks for the KV cache: pass-key retrieval and multi-key lookup buried in
 * filler (after Mohtashami & Jaggi, "Landmark Attention", 2023, whose pass-key prompt this
 * follows), and a long filler dialogue that sits between an image and a question about it.
 * The filler is a small random grammar, so no two stretches repeat verbatim; its vocabulary
 * holds no digits and none of the words the questions use (colours, shapes, sizes, positions,
 * "key", "letter"), so every needle and every image question stays unambiguous. */
#include <stdio.h>
#include <string.h>

#include "shapes.h"

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *const SUBJECTS[] = {
    "the old farmer", "a quiet student", "the tired traveller", "my neighbour",
    "the young doctor", "a curious child", "the baker", "an engineer", "the captain",
    "the librarian", "a musician", "the gardener", "the teacher", "a fisherman", "the painter",
    "the mayor", "a shepherd", "the poet", "my cousin", "the carpenter", "a nurse",
    "the merchant", "the clockmaker", "a sailor", "the postman", "the innkeeper",
    "a historian", "the weaver"};
static const char *const VERBS[] = {
    "walked slowly", "waited patiently", "read a book", "sang a song", "worked all day",
    "rested for a while", "wrote a note", "cooked a meal", "planted some seeds",
    "fixed the fence", "told a story", "fed the horses", "painted a picture", "lost a glove",
    "found an old map", "baked some bread", "repaired a bicycle", "sold vegetables",
    "watched the clouds", "carried a basket", "played the violin", "mended a coat",
    "swept the floor", "studied the weather", "climbed a tree", "tidied the shelves",
    "washed the dishes", "greeted the visitors"};
static const char *const PLACES[] = {
    "near the river", "in the market", "behind the mill", "at the station", "on the hill",
    "by the harbour", "in the library", "beside the old bridge", "in the garden",
    "at the edge of the forest", "in a quiet village", "near the lighthouse",
    "outside the bakery", "in the town hall", "along the canal", "under the oak tree",
    "at the farm", "by the fountain", "in the workshop", "on the beach", "near the school",
    "in the valley", "at the museum", "by the lake"};
static const char *const TIMES[] = {
    "in the morning", "after the storm", "before sunset", "during the festival",
    "on a quiet afternoon", "late at night", "at dawn", "after lunch", "in the spring",
    "during the winter", "on a rainy day", "before breakfast", "in the evening",
    "after the market closed", "on a windy day", "at noon", "during the holidays",
    "in the autumn", "on a foggy morning", "after supper"};
/* Multi-key words: none of them occurs anywhere in the filler vocabulary above. */
static const char *const KEY_WORDS[] = {
    "falcon", "marble", "cedar", "lantern", "copper", "anchor", "badger", "cactus", "dolphin",
    "engine", "feather", "glacier", "hammock", "igloo", "jasmine", "kettle", "lemon", "magnet",
    "nutmeg", "otter", "pepper", "quartz", "rocket", "saddle", "tulip", "walrus", "zebra",
    "bamboo", "compass", "dragon", "ember", "fossil", "garlic", "harp", "ivory", "jaguar",
    "koala", "llama", "meadow", "nectar", "orchid", "pebble", "quill", "raven", "salmon",
    "thistle", "velvet", "willow"};

#define PICK(r, a) ((a)[shp_rng_below((r), (uint32_t)N_OF(a))])

static void capitalize(char *s)
{
    if (s[0] >= 'a' && s[0] <= 'z') s[0] = (char)(s[0] - 'a' + 'A');
}

/* One filler sentence (ending in ". ") into buf. */
static void sentence(shp_rng *r, char *buf, size_t n)
{
    const char *s = PICK(r, SUBJECTS);
    const char *v = PICK(r, VERBS);
    const char *p = PICK(r, PLACES);
    const char *t = PICK(r, TIMES);
    switch (shp_rng_below(r, 6)) {
    case 0: snprintf(buf, n, "%s %s %s %s. ", s, v, p, t); break;
    case 1: snprintf(buf, n, "%s, %s %s %s. ", t, s, v, p); break;
    case 2: snprintf(buf, n, "everyone said that %s %s %s. ", s, v, t); break;
    case 3: {
        const char *s2 = PICK(r, SUBJECTS);
        const char *v2 = PICK(r, VERBS);
        snprintf(buf, n, "%s %s %s, and then %s %s %s. ", s, v, p, s2, v2, t);
        break;
    }
    case 4: snprintf(buf, n, "nobody remembers why %s %s %s. ", s, v, p); break;
    default: snprintf(buf, n, "%s %s %s, as usual. ", s, v, t); break;
    }
    capitalize(buf);
}

typedef struct needle {
    size_t at;        /* filler characters before it */
    char text[128];
} needle;

/* Appends filler up to about `target` characters in total, inserting the needles (sorted by
 * `at`) at the first sentence boundary past their offsets. Paragraphs break every few
 * sentences. *offsets gets each needle's character offset in b. */
static plm_status fill(shp_buf *b, size_t target, const needle *nd, int n_nd, shp_rng *r,
                       size_t *offsets)
{
    char s[320];
    int next = 0, in_par = 0, par_len = shp_rng_range(r, 3, 8);
    size_t filler = 0;
    for (;;) {
        while (next < n_nd && filler >= nd[next].at) {
            offsets[next] = b->len;
            PLM_TRY_SHP(shp_buf_puts(b, nd[next].text));
            next++;
        }
        sentence(r, s, sizeof s);
        size_t len = strlen(s);
        /* Stop at whichever side of the target is nearer. */
        if (b->len >= target) break;
        if (b->len + len > target && b->len + len - target > target - b->len) break;
        int last = b->len + len >= target;
        PLM_TRY_SHP(shp_buf_put(b, s, len));
        filler += len;
        if (last) break;
        if (++in_par == par_len) {
            b->p[b->len - 1] = '\n'; /* replace the trailing space */
            PLM_TRY_SHP(shp_buf_puts(b, "\n"));
            in_par = 0;
            par_len = shp_rng_range(r, 3, 8);
        }
    }
    for (; next < n_nd; next++) {
        offsets[next] = b->len;
        PLM_TRY_SHP(shp_buf_puts(b, nd[next].text));
    }
    /* Drop trailing whitespace so the context ends cleanly. */
    while (b->len > 0 && (b->p[b->len - 1] == ' ' || b->p[b->len - 1] == '\n')) b->len--;
    if (b->p) b->p[b->len] = '\0';
    return PLM_OK;
}

static plm_status check_tokens(int tokens, plm_error *err)
{
    if (tokens < SHP_TOKENS_MIN || tokens > SHP_TOKENS_MAX)
        return shp_fail(err, PLM_E_ARG, "--tokens %d is out of range [%d, %d]", tokens,
                        SHP_TOKENS_MIN, SHP_TOKENS_MAX);
    return PLM_OK;
}

static int pct(size_t at, size_t len)
{
    return len ? (int)(at * 100 / len) : 0;
}

plm_status shp_text_passkey(shp_text_item *it, int tokens, shp_rng *r, plm_error *err)
{
    PLM_TRY_SHP(check_tokens(tokens, err));
    static const char INTRO[] =
        "There is an important piece of information hidden inside a lot of irrelevant text. "
        "Find it and memorize it. I will quiz you about the important information there.\n\n";
    size_t target = (size_t)tokens * SHP_CHARS_PER_TOKEN;
    unsigned key = (unsigned)shp_rng_range(r, 10000, 99999);
    needle nd;
    /* the key said twice, as in Mohtashami & Jaggi's (2023) pass-key prompt: predicting the
     * second copy from the first is the copying a reader needs at the question, close by */
    snprintf(nd.text, sizeof nd.text, "The pass key is %u. Remember it. %u is the pass key. ",
             key, key);
    size_t filler_total = target > sizeof INTRO + strlen(nd.text)
                              ? target - sizeof INTRO - strlen(nd.text) : 0;
    nd.at = filler_total * shp_rng_below(r, 101) / 100;
    size_t off = 0;
    if (shp_buf_puts(&it->context, INTRO) != PLM_OK ||
        fill(&it->context, target, &nd, 1, r, &off) != PLM_OK)
        return shp_fail(err, PLM_E_NOMEM, "out of memory building a %d-token context", tokens);
    snprintf(it->question, sizeof it->question, "What is the pass key?");
    snprintf(it->answer, sizeof it->answer, "%u", key);
    it->depth_pct = pct(off, it->context.len);
    it->n_keys = 1;
    return PLM_OK;
}

plm_status shp_text_multikey(shp_text_item *it, int tokens, shp_rng *r, plm_error *err)
{
    PLM_TRY_SHP(check_tokens(tokens, err));
    static const char INTRO[] =
        "Below is a long text with several keys hidden in it. Each key belongs to a word. "
        "Remember all of them; I will ask about one.\n\n";
    size_t target = (size_t)tokens * SHP_CHARS_PER_TOKEN;
    int n = shp_rng_range(r, 2, tokens >= 1024 ? 16 : 8);
    int words[N_OF(KEY_WORDS)];
    for (int i = 0; i < N_OF(KEY_WORDS); i++) words[i] = i;
    shp_rng_shuffle_int(r, words, N_OF(KEY_WORDS));
    needle nd[16];
    unsigned keys[16];
    size_t lines = 0;
    for (int i = 0; i < n; i++) {
        int fresh;
        do { /* keys distinct, so each appears exactly once */
            keys[i] = (unsigned)shp_rng_range(r, 10000, 99999);
            fresh = 1;
            for (int j = 0; j < i; j++) fresh &= keys[j] != keys[i];
        } while (!fresh);
        /* said twice, as the pass key (see shp_text_passkey) */
        snprintf(nd[i].text, sizeof nd[i].text, "The key for %s is %u. %u is the key for %s. ",
                 KEY_WORDS[words[i]], keys[i], keys[i], KEY_WORDS[words[i]]);
        lines += strlen(nd[i].text);
    }
    size_t filler_total = target > sizeof INTRO + lines ? target - sizeof INTRO - lines : 0;
    size_t at[16];
    for (int i = 0; i < n; i++) at[i] = filler_total * shp_rng_below(r, 101) / 100;
    /* Sort offsets only (insertion sort); the word/key pairs stay in their random order. */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && at[j - 1] > at[j]; j--) {
            size_t t = at[j];
            at[j] = at[j - 1];
            at[j - 1] = t;
        }
    for (int i = 0; i < n; i++) nd[i].at = at[i];
    size_t offs[16];
    if (shp_buf_puts(&it->context, INTRO) != PLM_OK ||
        fill(&it->context, target, nd, n, r, offs) != PLM_OK)
        return shp_fail(err, PLM_E_NOMEM, "out of memory building a %d-token context", tokens);
    int ask = (int)shp_rng_below(r, (uint32_t)n);
    snprintf(it->question, sizeof it->question, "What is the key for %s?", KEY_WORDS[words[ask]]);
    snprintf(it->answer, sizeof it->answer, "%u", keys[ask]);
    it->depth_pct = pct(offs[ask], it->context.len);
    it->n_keys = n;
    return PLM_OK;
}

static void user_turn(shp_rng *r, char *buf, size_t n)
{
    int form = (int)shp_rng_below(r, 4);
    const char *s = PICK(r, SUBJECTS);
    const char *p = PICK(r, PLACES);
    const char *t = PICK(r, TIMES);
    switch (form) {
    case 0: snprintf(buf, n, "What did %s do %s?", s, p); break;
    case 1: snprintf(buf, n, "Tell me something about %s.", s); break;
    case 2: snprintf(buf, n, "Where was %s %s?", s, t); break;
    default: snprintf(buf, n, "Can you describe what happened %s?", t); break;
    }
}

plm_status shp_text_dialogue(shp_text_item *it, int tokens, shp_rng *r, plm_error *err)
{
    PLM_TRY_SHP(check_tokens(tokens, err));
    static const char OPEN[] =
        "USER: Here is an image. Look at it carefully; I will ask about it later.\n"
        "ASSISTANT: I have looked at the image and will remember it.\n\n";
    size_t target = (size_t)tokens * SHP_CHARS_PER_TOKEN;
    shp_buf *b = &it->context;
    char q[160], s[320], turn[1200];
    if (shp_buf_puts(b, OPEN) != PLM_OK) goto oom;
    for (int short_tries = 0; short_tries < 8 && b->len < target;) {
        user_turn(r, q, sizeof q);
        int n = snprintf(turn, sizeof turn, "USER: %s\nASSISTANT:", q);
        int k = short_tries ? 1 : shp_rng_range(r, 1, 3);
        for (int i = 0; i < k && n < (int)sizeof turn; i++) {
            sentence(r, s, sizeof s);
            n += snprintf(turn + n, sizeof turn - (size_t)n, " %.*s", (int)strlen(s) - 1, s);
        }
        if (n < (int)sizeof turn) n += snprintf(turn + n, sizeof turn - (size_t)n, "\n\n");
        size_t len = strlen(turn);
        if (b->len + len > target) {
            /* Near the end: try short turns, and take one that lands nearer the target. */
            if (b->len + len - target < target - b->len) {
                if (shp_buf_puts(b, turn) != PLM_OK) goto oom;
                break;
            }
            short_tries++;
            continue;
        }
        if (shp_buf_puts(b, turn) != PLM_OK) goto oom;
    }
    while (b->len > 0 && b->p[b->len - 1] == '\n') b->len--;
    b->p[b->len] = '\0';
    it->depth_pct = 0; /* the image comes first */
    it->n_keys = 0;
    return PLM_OK;
oom:
    return shp_fail(err, PLM_E_NOMEM, "out of memory building a %d-token dialogue", tokens);
}

void shp_text_item_free(shp_text_item *it)
{
    shp_buf_free(&it->context);
}
