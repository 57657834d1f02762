/* UTF-8, Unicode lookups, growable buffers and the two hash maps of the tokenizer. */
#include "lm/tok_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- Unicode ------------------------------------------------------------------------------ */

static uint32_t range_lookup(const tok_uc_range *r, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid].lo)
            hi = mid;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return r[mid].val;
    }
    return 0;
}

unsigned tok_uc_flags(uint32_t cp)
{
    if (cp < 0x80) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return TOK_UC_L | TOK_UC_W;
        if (cp >= '0' && cp <= '9') return TOK_UC_N | TOK_UC_W;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return TOK_UC_S;
        return cp == '_' ? TOK_UC_W : 0;
    }
    return range_lookup(tok_uc_class_ranges, tok_uc_class_count, cp);
}

unsigned tok_uc_ccc(uint32_t cp)
{
    if (cp < 0x300) return 0;
    return range_lookup(tok_uc_ccc_ranges, tok_uc_ccc_count, cp);
}

/* ---- UTF-8 -------------------------------------------------------------------------------- */

/* Bounds of the second byte for each lead byte (Unicode Table 3-7); the later bytes are always
 * 0x80..0xBF. Returns the sequence length, 0 for a byte that cannot start one. */
static size_t lead_info(unsigned c, unsigned *lo, unsigned *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) return 2;
    if (c < 0xF0) {
        if (c == 0xE0) *lo = 0xA0;
        if (c == 0xED) *hi = 0x9F;
        return 3;
    }
    if (c < 0xF5) {
        if (c == 0xF0) *lo = 0x90;
        if (c == 0xF4) *hi = 0x8F;
        return 4;
    }
    return 0;
}

size_t tok_utf8_valid_len(const unsigned char *s, size_t n)
{
    unsigned lo, hi;
    size_t len = lead_info(s[0], &lo, &hi);
    if (len == 0 || len > n) return 0;
    if (len == 1) return 1;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

size_t tok_utf8_bad_len(const unsigned char *s, size_t n)
{
    unsigned lo, hi;
    size_t len = lead_info(s[0], &lo, &hi);
    if (len == 0) return 1;
    size_t i = 1;
    for (; i < len && i < n; i++) {
        unsigned l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (s[i] < l || s[i] > h) return i;
    }
    return i == n && i < len ? 0 : i;
}

size_t tok_utf8_check(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = tok_utf8_valid_len(u + i, n - i);
        if (!l) return i;
        i += l;
    }
    return n;
}

size_t tok_utf8_decode(const char *s, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80) {
        *cp = u[0];
        return 1;
    }
    if (u[0] < 0xE0) {
        *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
        return 2;
    }
    if (u[0] < 0xF0) {
        *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
          ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    return 4;
}

size_t tok_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

plm_status tok_utf8_lossy(const char *s, size_t n, int keep_tail, tok_buf *out, size_t *tail,
                          plm_error *err)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    if (tail) *tail = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = tok_utf8_valid_len(u + i, n - i);
        if (l) {
            i += l;
            continue;
        }
        PLM_TRY(tok_buf_put(out, s + run, i - run, err));
        size_t bad = tok_utf8_bad_len(u + i, n - i);
        if (bad == 0) { /* truncated at the end */
            if (keep_tail) {
                if (tail) *tail = n - i;
                return PLM_OK;
            }
            bad = n - i;
        }
        PLM_TRY(tok_buf_put(out, "\xEF\xBF\xBD", 3, err));
        i += bad;
        run = i;
    }
    return tok_buf_put(out, s + run, n - run, err);
}

/* ---- buffers ------------------------------------------------------------------------------ */

plm_status tok_buf_reserve(tok_buf *b, size_t extra, plm_error *err)
{
    size_t need;
    if (!plm_add_ok(b->n, extra, &need) || !plm_add_ok(need, 1, &need))
        return plm_fail(err, PLM_E_LIMIT, "tokenizer: buffer size overflows");
    if (need <= b->cap) return PLM_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->p, cap);
    if (!p) return plm_fail(err, PLM_E_NOMEM, "tokenizer: cannot allocate %zu bytes", cap);
    b->p = p;
    b->cap = cap;
    return PLM_OK;
}

/* Keeps the buffer NUL-terminated so callers can hand it out as a C string. */
plm_status tok_buf_put(tok_buf *b, const void *data, size_t len, plm_error *err)
{
    PLM_TRY(tok_buf_reserve(b, len, err));
    if (len) memcpy(b->p + b->n, data, len);
    b->n += len;
    b->p[b->n] = '\0';
    return PLM_OK;
}

plm_status tok_replace_all(const char *s, size_t n, const char *pat, size_t pl,
                           const char *rep, size_t rl, tok_buf *out, plm_error *err)
{
    size_t i = 0, run = 0;
    while (pl && i + pl <= n) {
        if (memcmp(s + i, pat, pl) == 0) {
            PLM_TRY(tok_buf_put(out, s + run, i - run, err));
            PLM_TRY(tok_buf_put(out, rep, rl, err));
            i += pl;
            run = i;
        } else {
            i++;
        }
    }
    return tok_buf_put(out, s + run, n - run, err);
}

void tok_buf_free(tok_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

plm_status tok_ids_push(tok_ids *v, int32_t id, plm_error *err)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = cap > SIZE_MAX / sizeof *p ? NULL : realloc(v->p, cap * sizeof *p);
        if (!p) return plm_fail(err, PLM_E_NOMEM, "tokenizer: cannot allocate %zu ids", cap);
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = id;
    return PLM_OK;
}

void tok_ids_free(tok_ids *v)
{
    free(v->p);
    v->p = NULL;
    v->n = v->cap = 0;
}

plm_status tok_pieces_push(tok_pieces *v, tok_piece pc, plm_error *err)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 32;
        tok_piece *p = cap > SIZE_MAX / sizeof *p ? NULL : realloc(v->p, cap * sizeof *p);
        if (!p) return plm_fail(err, PLM_E_NOMEM, "tokenizer: cannot allocate %zu pieces", cap);
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = pc;
    return PLM_OK;
}

void tok_work_free(tok_work *w)
{
    tok_buf_free(&w->arena);
    tok_buf_free(&w->tmp);
    tok_buf_free(&w->tmp2);
    free(w->spans.p);
    free(w->cur.p);
    free(w->next.p);
    free(w->sym);
    free(w->heap);
    free(w->cps);
    memset(w, 0, sizeof *w);
}

/* ---- string map --------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix for the low bits */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static size_t table_size(size_t expected)
{
    size_t n = 16;
    while (n < expected * 2 && n < ((size_t)1 << 40)) n *= 2;
    return n;
}

plm_status tok_strmap_init(tok_strmap *m, size_t expected, plm_error *err)
{
    memset(m, 0, sizeof *m);
    if (expected > TOK_MAX_ID) return plm_fail(err, PLM_E_LIMIT, "tokenizer: too many strings");
    size_t slots = table_size(expected);
    m->cap = expected ? expected : 1;
    m->slots = calloc(slots, sizeof *m->slots);
    m->keys = malloc(m->cap * sizeof *m->keys);
    m->lens = malloc(m->cap * sizeof *m->lens);
    m->vals = malloc(m->cap * sizeof *m->vals);
    m->mask = slots - 1;
    if (!m->slots || !m->keys || !m->lens || !m->vals) {
        tok_strmap_free(m);
        return plm_fail(err, PLM_E_NOMEM, "tokenizer: cannot allocate a %zu-entry map", expected);
    }
    return PLM_OK;
}

static int strmap_find(const tok_strmap *m, const char *key, size_t len, size_t *slot)
{
    size_t i = (size_t)hash_bytes(key, len) & m->mask;
    for (;;) {
        uint32_t e = m->slots[i];
        if (e == 0) {
            *slot = i;
            return 0;
        }
        if (m->lens[e - 1] == len && memcmp(m->keys[e - 1], key, len) == 0) {
            *slot = i;
            return 1;
        }
        i = (i + 1) & m->mask;
    }
}

plm_status tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t val,
                          plm_error *err)
{
    size_t slot;
    if (len > UINT32_MAX) return plm_fail(err, PLM_E_LIMIT, "tokenizer: token too long");
    if (strmap_find(m, key, len, &slot)) {
        m->vals[m->slots[slot] - 1] = val;
        return PLM_OK;
    }
    if (m->n == m->cap) /* sized by the caller from the file; more entries is a bug */
        return plm_fail(err, PLM_E_LIMIT, "tokenizer: map over its %zu entries", m->cap);
    m->keys[m->n] = key;
    m->lens[m->n] = (uint32_t)len;
    m->vals[m->n] = val;
    m->slots[slot] = (uint32_t)++m->n;
    return PLM_OK;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len)
{
    size_t slot;
    if (!m->slots || !strmap_find(m, key, len, &slot)) return -1;
    return m->vals[m->slots[slot] - 1];
}

void tok_strmap_free(tok_strmap *m)
{
    free(m->slots);
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- merge map ---------------------------------------------------------------------------- */

static size_t pair_hash(uint64_t k)
{
    k *= 0x9E3779B97F4A7C15ull;
    return (size_t)(k ^ (k >> 31));
}

plm_status tok_mergemap_init(tok_mergemap *m, size_t expected, plm_error *err)
{
    memset(m, 0, sizeof *m);
    size_t slots = table_size(expected);
    m->keys = calloc(slots, sizeof *m->keys);
    m->rank = malloc(slots * sizeof *m->rank);
    m->merged = malloc(slots * sizeof *m->merged);
    m->mask = slots - 1;
    if (!m->keys || !m->rank || !m->merged) {
        tok_mergemap_free(m);
        return plm_fail(err, PLM_E_NOMEM, "tokenizer: cannot allocate %zu merges", expected);
    }
    return PLM_OK;
}

void tok_mergemap_put(tok_mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged)
{
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = pair_hash(k) & m->mask;
    while (m->keys[i] != 0 && m->keys[i] != k) i = (i + 1) & m->mask;
    if (m->keys[i] == 0) m->n++;
    m->keys[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

int tok_mergemap_get(const tok_mergemap *m, int32_t a, int32_t b, uint32_t *rank,
                     int32_t *merged)
{
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = pair_hash(k) & m->mask;
    for (;;) {
        uint64_t e = m->keys[i];
        if (e == 0) return 0;
        if (e == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return 1;
        }
        i = (i + 1) & m->mask;
    }
}

void tok_mergemap_free(tok_mergemap *m)
{
    free(m->keys);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof *m);
}

/* ---- GPT-2 byte <-> character map --------------------------------------------------------- */

/* Printable Latin-1 bytes stand for themselves; the other 68 take 256, 257, ... in byte order. */
void tok_byte_map_init(uint16_t byte_char[256], int16_t char_byte[324])
{
    uint16_t next = 256;
    for (unsigned i = 0; i < 324; i++) char_byte[i] = -1;
    for (unsigned b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        byte_char[b] = printable ? (uint16_t)b : next++;
        char_byte[byte_char[b]] = (int16_t)b;
    }
}
