/* Unicode NFC (Qwen2's normalizer): canonical decomposition, canonical ordering, canonical
 * composition (UAX #15), with Hangul done arithmetically. Text below U+0300 is already NFC
 * and is copied through without decoding, which is the common case. */
#include "lm/tok_internal.h"

#include <stdlib.h>

#define S_BASE 0xAC00u
#define L_BASE 0x1100u
#define V_BASE 0x1161u
#define T_BASE 0x11A7u
#define L_COUNT 19u
#define V_COUNT 21u
#define T_COUNT 28u
#define S_COUNT (L_COUNT * V_COUNT * T_COUNT)

static plm_status push_cp(tok_work *w, size_t *n, uint32_t cp, plm_error *err)
{
    if (*n == w->cps_cap) {
        size_t cap = w->cps_cap ? w->cps_cap * 2 : 256;
        uint32_t *p = cap > SIZE_MAX / sizeof *p ? NULL : realloc(w->cps, cap * sizeof *p);
        if (!p) return plm_fail(err, PLM_E_NOMEM, "tokenizer: out of memory");
        w->cps = p;
        w->cps_cap = cap;
    }
    w->cps[(*n)++] = cp;
    return PLM_OK;
}

static const tok_uc_decomp *find_decomp(uint32_t cp)
{
    size_t lo = 0, hi = tok_uc_decomp_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (tok_uc_decomps[mid].cp < cp) lo = mid + 1;
        else hi = mid;
    }
    return lo < tok_uc_decomp_count && tok_uc_decomps[lo].cp == cp ? &tok_uc_decomps[lo] : NULL;
}

/* The table holds one level of each decomposition; the parts may decompose further (at most
 * a few levels deep, so the recursion is shallow). */
static plm_status decompose(uint32_t cp, tok_work *w, size_t *n, plm_error *err)
{
    if (cp - S_BASE < S_COUNT) {
        uint32_t s = cp - S_BASE;
        PLM_TRY(push_cp(w, n, L_BASE + s / (V_COUNT * T_COUNT), err));
        PLM_TRY(push_cp(w, n, V_BASE + (s % (V_COUNT * T_COUNT)) / T_COUNT, err));
        if (s % T_COUNT) PLM_TRY(push_cp(w, n, T_BASE + s % T_COUNT, err));
        return PLM_OK;
    }
    const tok_uc_decomp *d = cp < 0xC0 ? NULL : find_decomp(cp);
    if (!d) return push_cp(w, n, cp, err);
    for (uint32_t i = 0; i < d->len; i++) PLM_TRY(decompose(tok_uc_decomp_cps[d->off + i], w, n, err));
    return PLM_OK;
}

static uint32_t compose_pair(uint32_t a, uint32_t b)
{
    if (a - L_BASE < L_COUNT && b - V_BASE < V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a - S_BASE < S_COUNT && (a - S_BASE) % T_COUNT == 0 && b - T_BASE - 1 < T_COUNT - 1)
        return a + (b - T_BASE);
    size_t lo = 0, hi = tok_uc_comp_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const tok_uc_comp *c = &tok_uc_comps[mid];
        if (c->a < a || (c->a == a && c->b < b)) lo = mid + 1;
        else hi = mid;
    }
    if (lo < tok_uc_comp_count && tok_uc_comps[lo].a == a && tok_uc_comps[lo].b == b)
        return tok_uc_comps[lo].c;
    return 0;
}

plm_status tok_nfc(const char *s, size_t len, tok_buf *out, tok_work *w, plm_error *err)
{
    size_t i = 0;
    while (i < len && (unsigned char)s[i] < 0xCC) i++; /* 0xCC leads U+0300 and above */
    if (i == len) return tok_buf_put(out, s, len, err);

    size_t n = 0;
    for (i = 0; i < len;) {
        uint32_t cp;
        i += tok_utf8_decode(s + i, &cp);
        PLM_TRY(decompose(cp, w, &n, err));
    }
    uint32_t *c = w->cps;
    /* Canonical ordering: stable sort of each run of non-starters by combining class. */
    for (size_t k = 1; k < n; k++) {
        unsigned ck = tok_uc_ccc(c[k]);
        if (ck == 0) continue;
        size_t j = k;
        uint32_t v = c[k];
        while (j > 0) {
            unsigned cj = tok_uc_ccc(c[j - 1]);
            if (cj == 0 || cj <= ck) break;
            c[j] = c[j - 1];
            j--;
        }
        c[j] = v;
    }
    /* Composition: a character joins the last starter unless something between them blocks
     * it (a starter, or a mark of the same or higher class). */
    size_t starter = 0, kept = 1;
    unsigned last = tok_uc_ccc(c[0]) ? 256 : 0;
    for (size_t k = 1; k < n; k++) {
        unsigned ck = tok_uc_ccc(c[k]);
        uint32_t comp = compose_pair(c[starter], c[k]);
        if (comp && (last < ck || last == 0)) {
            c[starter] = comp;
            continue;
        }
        if (ck == 0) starter = kept;
        last = ck;
        c[kept++] = c[k];
    }
    for (size_t k = 0; k < kept; k++) {
        char u[4];
        PLM_TRY(tok_buf_put(out, u, tok_utf8_encode(c[k], u), err));
    }
    return PLM_OK;
}
