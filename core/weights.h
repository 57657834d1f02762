/* Looking up a model's weights by name in a safetensors set, under whichever of several name
 * prefixes the checkpoint uses (transformers 4.x and 5.x save LLaVA under different ones), with
 * shape and dtype checks. Small vectors (norms, biases, embeddings added to activations) are
 * widened to float32 copies owned by the source and uploaded to the backend once. */
#ifndef PLM_CORE_WEIGHTS_H
#define PLM_CORE_WEIGHTS_H

#include "core/backend.h"
#include "core/safetensors.h"

typedef struct plm_wsrc {
    const st_set *set;
    const char *const *prefixes; /* NULL-terminated; tried in order */
    const char *what;            /* "vision tower", for messages */
    plm_backend *be;             /* where vectors are uploaded */
    void **owned;                /* device buffers this source allocated */
    size_t n_owned, cap_owned;
    size_t n_params;             /* elements of every tensor handed out */
    plm_dtype dtype;             /* dtype of the first matrix (for describe) */
    plm_dtype f32_to;            /* PLM_F16 / PLM_BF16: float32 matrices are rounded to it on
                                    load (a copy the source owns); PLM_F32: kept as stored */
} plm_wsrc;

/* Finds `name` under the prefixes. NULL when absent. */
const st_tensor *wsrc_find(const plm_wsrc *s, const char *name);
/* A matrix [rows x cols] (any dims after the first are flattened into cols, so a conv weight
 * [out, c, kh, kw] reads as [out x c*kh*kw]), in its stored dtype or, for a float32 one, in
 * f32_to. Fails with PLM_E_MISSING / PLM_E_SHAPE. */
plm_status wsrc_matrix(plm_wsrc *s, const char *name, int64_t rows, int64_t cols, plm_weight *w,
                       plm_error *err);
/* A float32 vector of n elements (any shape whose element count is n), uploaded to the backend.
 * optional: absent -> *out = NULL and PLM_OK. */
plm_status wsrc_vector(plm_wsrc *s, const char *name, int64_t n, int optional, float **out,
                       plm_error *err);
/* n matrices of one width [rows[i] x cols] as one [sum rows x cols] weight, so a product with
 * all of them is one GEMM: on a device backend they go into one buffer and parts[i] are views
 * of *fused. Where that cannot be (a host-memory backend, whose weights stay mapped where they
 * are; parts of different dtypes; float32 parts rounded on load) each part loads alone as
 * wsrc_matrix does and fused->data is NULL. */
plm_status wsrc_matrix_stack(plm_wsrc *s, int n, const char *const *names, const int64_t *rows,
                             int64_t cols, plm_weight *parts, plm_weight *fused, plm_error *err);
/* The vectors that go with wsrc_matrix_stack's parts (biases), concatenated likewise: parts[i]
 * are views of *fused when fused_ok, else each loads alone and *fused is NULL. */
plm_status wsrc_vector_stack(plm_wsrc *s, int n, const char *const *names, const int64_t *lens,
                             int fused_ok, float **parts, float **fused, plm_error *err);
/* Releases the vectors this source uploaded. */
void wsrc_release(plm_wsrc *s);

#endif
