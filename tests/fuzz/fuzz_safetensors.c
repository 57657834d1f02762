/* Fuzz target: a safetensors file's header (length prefix, JSON, dtypes, shapes, offsets)
 * through st_open, then every tensor it admits is looked up and read to its last byte. */
#include "core/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

static void check_tensor(const st_file *f, size_t i)
{
    const st_tensor *t = st_at(f, i);
    FUZZ_CHECK(t && t->name && t->file, "st_at(%zu) gave no tensor", i);
    FUZZ_CHECK(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS, "'%s' has %d dims", t->name, t->ndim);
    size_t elems = 1;
    int fits = 1;
    for (int d = 0; d < t->ndim; d++) {
        FUZZ_CHECK(t->shape[d] >= 0, "'%s' has a negative dimension", t->name);
        fits &= plm_mul_ok(elems, (size_t)t->shape[d], &elems);
    }
    size_t es = plm_dtype_size(t->dtype);
    if (es) {
        size_t want = 0;
        FUZZ_CHECK(fits && plm_mul_ok(elems, es, &want) && want == t->nbytes,
                   "'%s': %zu bytes for its shape and dtype, not %zu", t->name, want, t->nbytes);
    }
    /* Every byte must lie inside the mapping: ASan does not watch mmapped memory, but a read
     * past the mapping's last page faults. */
    const volatile uint8_t *p = t->data;
    uint8_t sum = 0;
    for (size_t b = 0; b < t->nbytes; b++) sum += p[b];
    (void)sum;
    const st_tensor *found = st_find(f, t->name);
    /* names are unique (a duplicate is refused), so the lookup must land on this very tensor */
    FUZZ_CHECK(found == t, "st_find('%s') does not find it", t->name);
}

int fuzz_safetensors(const uint8_t *data, size_t size)
{
    char path[512];
    fuzz_tmp_path(path, sizeof path, "st.safetensors");
    fuzz_write_file(path, data, size);
    st_file *f = NULL;
    plm_error err = {{0}};
    plm_status st = st_open(path, &f, &err);
    fuzz_check_status(st, &err, "st_open");
    if (st == PLM_OK) {
        FUZZ_CHECK(f != NULL, "st_open succeeded without a file");
        for (size_t i = 0; i < st_count(f); i++) check_tensor(f, i);
        FUZZ_CHECK(st_at(f, st_count(f)) == NULL, "st_at past the end gave a tensor");
        (void)st_find(f, "");
        (void)st_find(f, "__metadata__");
        st_close(f);
    } else {
        FUZZ_CHECK(f == NULL, "st_open failed but returned a file");
    }
    unlink(path);
    return 0;
}

#ifndef PLM_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_safetensors(data, size);
}
#endif
