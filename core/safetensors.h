/* Safetensors files, mmapped read-only, and sets of them (single file or sharded with
 * model.safetensors.index.json). Every header field is validated before use: the header length
 * against the file size, each tensor's dtype, shape product * element size == byte span,
 * offsets in order, within the data section and non-overlapping. */
#ifndef PLM_CORE_SAFETENSORS_H
#define PLM_CORE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/dtype.h"

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    const char *name;       /* owned by the file */
    plm_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
    const void *data;       /* points into the mapping; valid while the file is open */
    const char *file;       /* path of the file it lives in (for messages) */
} st_tensor;

typedef struct st_file st_file;

/* Opens and validates one file. Unknown dtypes (e.g. I8, F64) are accepted in the index but
 * flagged PLM_DTYPE_OTHER so callers can refuse them by name. */
plm_status st_open(const char *path, st_file **out, plm_error *err);
void st_close(st_file *f);
size_t st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, size_t i);
const st_tensor *st_find(const st_file *f, const char *name);

/* A checkpoint's weights: model.safetensors, or the shards named by
 * model.safetensors.index.json, in directory dir. */
typedef struct st_set st_set;
plm_status st_set_open_dir(const char *dir, st_set **out, plm_error *err);
void st_set_close(st_set *s);
const st_tensor *st_set_find(const st_set *s, const char *name);
size_t st_set_count(const st_set *s);
const st_tensor *st_set_at(const st_set *s, size_t i);

#endif
