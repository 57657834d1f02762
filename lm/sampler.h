/* Choosing the next token from logits: greedy, or temperature + top-k + top-p sampling with a
 * seeded generator owned by the caller (no global state). */
#ifndef PLM_LM_SAMPLER_H
#define PLM_LM_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct sampler {
    float temperature; /* <= 0: greedy */
    int top_k;         /* <= 0: off */
    float top_p;       /* >= 1: off */
    uint64_t state;    /* random generator state */
    /* scratch of n_vocab entries, owned by the sampler */
    struct sampler_cand { float p; int32_t id; } *cand;
    size_t cap;
} sampler;

int sampler_init(sampler *s, float temperature, int top_k, float top_p, uint64_t seed,
                 size_t n_vocab);
void sampler_free(sampler *s);
/* Picks a token; logits may be modified. */
int32_t sampler_pick(sampler *s, float *logits, size_t n_vocab);
/* The first index of the largest value, like torch.argmax. */
int32_t sampler_argmax(const float *logits, size_t n);

#endif
