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

#endif
