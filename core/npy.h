/* NumPy .npy files: the float32 writer behind plm_write_npy (include/prunelm.h) and a reader
 * for tests and fixtures. */
#ifndef PLM_CORE_NPY_H
#define PLM_CORE_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define NPY_MAX_DIMS 8

/* A loaded array, C order. Floating dtypes (<f4, <f8) land in f as float; integer dtypes (<i4,
 * <i8, |u1) land in i as int64. Exactly one of f and i is non-NULL. Freed with npy_free. */
typedef struct npy_array {
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    size_t count;
    int is_float;
    float *f;
    int64_t *i;
} npy_array;

/* Reads a version 1, 2 or 3 .npy file of dtype <f4, <f8, <i4, <i8 or |u1 in C order. The header
 * is validated strictly (magic, version, header length, dictionary keys and values) and the data
 * must be exactly shape-product * item-size bytes. On failure *out is zeroed. */
plm_status npy_read(const char *path, npy_array *out, plm_error *err);
void npy_free(npy_array *a);

#endif
