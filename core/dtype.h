#ifndef PLM_CORE_DTYPE_H
#define PLM_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum plm_dtype { PLM_F32, PLM_F16, PLM_BF16, PLM_DTYPE_OTHER } plm_dtype;

static inline size_t plm_dtype_size(plm_dtype t)
{
    return t == PLM_F32 ? 4 : t == PLM_DTYPE_OTHER ? 0 : 2;
}

static inline const char *plm_dtype_name(plm_dtype t)
{
    return t == PLM_F32 ? "F32" : t == PLM_F16 ? "F16" : t == PLM_BF16 ? "BF16" : "other";
}

static inline float plm_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half -> float, exact for every value including subnormals, inf and NaN. */
static inline float plm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            man &= 0x3ff;
            u = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp - 15 + 127) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* float -> bf16, round to nearest even (as torch's .to(torch.bfloat16)); NaN stays a quiet NaN. */
static inline uint16_t plm_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* float -> IEEE half, round to nearest even, with subnormals; overflow gives inf, NaN a NaN. */
static inline uint16_t plm_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00;             /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00;            /* rounds past 65504: inf */
    if (a < 0x38800000u) {                                  /* below 2^-14: subnormal or zero */
        if (a < 0x33000000u) return sign;                   /* under half the smallest: 0 */
        const uint32_t man = (a & 0x7fffff) | 0x800000;     /* with the implicit bit */
        const int shift = 126 - (int)(a >> 23);             /* 14..24 */
        uint32_t h = man >> shift;
        const uint32_t rest = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rest > half || (rest == half && (h & 1))) h++;
        return sign | (uint16_t)h;
    }
    uint32_t h = ((a >> 13) - ((127 - 15) << 10));          /* rebias the exponent */
    const uint32_t rest = a & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++; /* may carry into the exponent */
    return sign | (uint16_t)h;
}

#endif
