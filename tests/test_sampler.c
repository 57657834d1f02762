#include <criterion/criterion.h>
#include <string.h>

#include "lm/sampler.h"

Test(sampler, greedy_takes_the_first_maximum)
{
    float l[5] = {0.1f, 3.0f, -1.0f, 3.0f, 2.0f};
    sampler s;
    cr_assert(sampler_init(&s, 0.0f, 0, 1.0f, 1, 5));
    cr_assert_eq(sampler_pick(&s, l, 5), 1);
    sampler_free(&s);
}

Test(sampler, top_k_one_is_greedy_whatever_the_seed)
{
    for (uint64_t seed = 1; seed < 50; seed++) {
        float l[4] = {0.5f, 0.2f, 0.9f, 0.8f};
        sampler s;
        cr_assert(sampler_init(&s, 1.0f, 1, 1.0f, seed, 4));
        cr_assert_eq(sampler_pick(&s, l, 4), 2);
        sampler_free(&s);
    }
}

Test(sampler, top_p_keeps_only_the_nucleus)
{
    /* probabilities ~ 0.64, 0.24, 0.09, 0.03: top_p 0.8 keeps the first two */
    int seen[4] = {0};
    for (uint64_t seed = 1; seed < 400; seed++) {
        float l[4] = {3.0f, 2.0f, 1.0f, 0.0f};
        sampler s;
        cr_assert(sampler_init(&s, 1.0f, 0, 0.8f, seed, 4));
        seen[sampler_pick(&s, l, 4)]++;
        sampler_free(&s);
    }
    cr_assert(seen[0] > 0 && seen[1] > 0);
    cr_assert_eq(seen[2] + seen[3], 0);
}

Test(sampler, same_seed_same_tokens_different_seed_differs)
{
    int32_t a[32], b[32], c[32];
    sampler s1, s2, s3;
    cr_assert(sampler_init(&s1, 1.0f, 0, 1.0f, 42, 8));
    cr_assert(sampler_init(&s2, 1.0f, 0, 1.0f, 42, 8));
    cr_assert(sampler_init(&s3, 1.0f, 0, 1.0f, 43, 8));
    for (int i = 0; i < 32; i++) {
        float l1[8] = {0}, l2[8] = {0}, l3[8] = {0};
        a[i] = sampler_pick(&s1, l1, 8);
        b[i] = sampler_pick(&s2, l2, 8);
        c[i] = sampler_pick(&s3, l3, 8);
    }
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    cr_assert_neq(memcmp(a, c, sizeof a), 0);
    sampler_free(&s1);
    sampler_free(&s2);
    sampler_free(&s3);
}

Test(sampler, sampling_follows_the_distribution)
{
    /* logits log(0.7), log(0.3): about 70% zeros over many draws */
    sampler s;
    cr_assert(sampler_init(&s, 1.0f, 0, 1.0f, 7, 2));
    int zeros = 0;
    for (int i = 0; i < 5000; i++) {
        float l[2] = {-0.35667494f, -1.2039728f};
        zeros += sampler_pick(&s, l, 2) == 0;
    }
    cr_assert(zeros > 3300 && zeros < 3700, "%d of 5000", zeros);
    sampler_free(&s);
}
