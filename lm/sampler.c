#include "lm/sampler.h"

#include <math.h>
#include <stdlib.h>

int sampler_init(sampler *s, float temperature, int top_k, float top_p, uint64_t seed,
                 size_t n_vocab)
{
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->state = seed ? seed : 0x9E3779B97F4A7C15ull;
    s->cap = n_vocab;
    s->cand = malloc(n_vocab * sizeof *s->cand);
    if (!s->cand) {
        sampler_free(s);
        return 0;
    }
    return 1;
}

void sampler_free(sampler *s)
{
    free(s->cand);
    s->cand = NULL;
}

/* splitmix64: small, fast, and good enough to draw one uniform number per token. */
static double uniform01(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

int32_t sampler_argmax(const float *logits, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return (int32_t)best;
}

static int cmp_desc(const void *a, const void *b)
{
    const struct sampler_cand *x = a, *y = b;
    return x->p < y->p ? 1 : x->p > y->p ? -1 : (x->id > y->id) - (x->id < y->id);
}

int32_t sampler_pick(sampler *s, float *logits, size_t n)
{
    if (s->temperature <= 0 || n > s->cap) return sampler_argmax(logits, n);
    float mx = logits[sampler_argmax(logits, n)];
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        s->cand[i].p = expf((logits[i] - mx) / s->temperature);
        s->cand[i].id = (int32_t)i;
        sum += s->cand[i].p;
    }
    for (size_t i = 0; i < n; i++) s->cand[i].p = (float)(s->cand[i].p / sum);
    qsort(s->cand, n, sizeof *s->cand, cmp_desc);
    size_t keep = n;
    if (s->top_k > 0 && (size_t)s->top_k < keep) keep = (size_t)s->top_k;
    if (s->top_p < 1.0f) {
        /* the smallest prefix whose mass reaches top_p (at least one token) */
        double cum = 0;
        for (size_t i = 0; i < keep; i++) {
            cum += s->cand[i].p;
            if (cum >= s->top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    double mass = 0;
    for (size_t i = 0; i < keep; i++) mass += s->cand[i].p;
    double r = uniform01(&s->state) * mass, cum = 0;
    for (size_t i = 0; i < keep; i++) {
        cum += s->cand[i].p;
        if (r < cum) return s->cand[i].id;
    }
    return s->cand[keep - 1].id;
}
