/* xoshiro256** (Blackman & Vigna, 2018) seeded through splitmix64: small, fast, and defined by
 * integer arithmetic alone, so a seed means the same sequence on every compiler and machine. */
#include "shapes.h"

uint64_t shp_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void shp_rng_seed(shp_rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t st = seed ^ (stream * 0xD1B54A32D192ED03ULL);
    /* Mix twice so that nearby (seed, stream) pairs start far apart. */
    st = shp_splitmix64(&st);
    for (int i = 0; i < 4; i++) r->s[i] = shp_splitmix64(&st);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t shp_rng_next(shp_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint32_t shp_rng_below(shp_rng *r, uint32_t n)
{
    if (n == 0) return 0;
    /* Lemire's multiply-shift with rejection: unbiased and division-free on the common path. */
    uint64_t m = (uint64_t)(uint32_t)(shp_rng_next(r) >> 32) * n;
    uint32_t lo = (uint32_t)m;
    if (lo < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (lo < t) {
            m = (uint64_t)(uint32_t)(shp_rng_next(r) >> 32) * n;
            lo = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

int shp_rng_range(shp_rng *r, int lo, int hi)
{
    if (hi <= lo) return lo;
    return lo + (int)shp_rng_below(r, (uint32_t)(hi - lo + 1));
}

int shp_rng_chance(shp_rng *r, uint32_t num, uint32_t den)
{
    return shp_rng_below(r, den) < num;
}

void shp_rng_shuffle_int(shp_rng *r, int *a, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)shp_rng_below(r, (uint32_t)i + 1);
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}
