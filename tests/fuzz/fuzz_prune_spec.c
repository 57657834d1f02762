/* Fuzz target: --prune spec strings. The input, as a C string, goes through prune_spec_parse
 * (and the number and list readers on every key it holds) and prune_visual_parse for a
 * LLaVA-1.5 shape (24x24 patches, 32 layers) and a tiny one (2x2, 2 layers); then as "@FILE"
 * with the raw bytes in the file. */
#include "prune/visual.h"
#include "tests/fuzz/fuzz_util.h"

static void generic(const char *text)
{
    prune_spec s;
    plm_error err = {{0}};
    plm_status st = prune_spec_parse(text, &s, &err);
    fuzz_check_status(st, &err, "prune_spec_parse");
    if (st != PLM_OK) return;
    FUZZ_CHECK(s.n >= 0 && s.n <= PRUNE_MAX_PARAMS && s.name[0], "spec with %d parameters", s.n);
    for (int i = 0; i < s.n; i++) {
        char key[sizeof s.p[i].key];
        memcpy(key, s.p[i].key, sizeof key);
        int vals[PRUNE_MAX_STAGES], n = 0;
        double d;
        st = prune_spec_ints(&s, key, vals, PRUNE_MAX_STAGES, &n, &err);
        fuzz_check_status(st, &err, "prune_spec_ints");
        FUZZ_CHECK(n >= 0 && n <= PRUNE_MAX_STAGES, "%d integers", n);
        st = prune_spec_num(&s, key, 0, -1e9, 1e9, &d, &err);
        fuzz_check_status(st, &err, "prune_spec_num");
    }
    st = prune_spec_check_unused(&s, &err);
    FUZZ_CHECK(st == PLM_OK, "a key read by name still counts as unused: %s", err.msg);
}

static void visual(const char *text, int grid, int n_layers)
{
    prune_visual p;
    plm_error err = {{0}};
    plm_status st = prune_visual_parse(text, grid, n_layers, &p, &err);
    fuzz_check_status(st, &err, "prune_visual_parse");
    if (st != PLM_OK) return;
    const int n = grid * grid;
    FUZZ_CHECK(p.n_stages >= 0 && p.n_stages <= PRUNE_MAX_STAGES, "%d stages", p.n_stages);
    for (int i = 0; i < p.n_stages; i++) {
        FUZZ_CHECK(p.stage_layer[i] >= 1 && p.stage_layer[i] < n_layers &&
                   (i == 0 || p.stage_layer[i] > p.stage_layer[i - 1]),
                   "stage %d before layer %d of %d", i, p.stage_layer[i], n_layers);
        FUZZ_CHECK(prune_visual_stage_before(&p, p.stage_layer[i]) == i, "stage %d not found", i);
        int64_t k = prune_visual_stage_keep(&p, i, n, n, (int64_t)n * p.stage_layer[i],
                                            n_layers);
        FUZZ_CHECK(k >= 0 && k <= n, "stage %d keeps %lld of %d", i, (long long)k, n);
    }
    switch (p.vis) {
    case PRUNE_VIS_RANDOM:
    case PRUNE_VIS_GRID:
        FUZZ_CHECK(p.vis_tokens >= 1 && p.vis_tokens <= n, "%d tokens of %d", p.vis_tokens, n);
        break;
    case PRUNE_VIS_VISIONZIP:
        FUZZ_CHECK(p.vis_tokens >= 1 && p.vis_tokens - 1 <= n && p.contextual >= 0,
                   "visionzip %d dominant + %d contextual of %d", p.vis_tokens, p.contextual, n);
        break;
    case PRUNE_VIS_VFLOWOPT:
        FUZZ_CHECK(p.r0 > 0 && p.r0 <= 1 && p.m > 0, "vflowopt r0 %g, m %g", p.r0, p.m);
        break;
    case PRUNE_VIS_NONE:
        break;
    }
    (void)prune_visual_active(&p);
}

int fuzz_prune_spec(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    generic(text);
    visual(text, 24, 32);
    visual(text, 2, 2);
    free(text);

    char path[512], at[520];
    fuzz_tmp_path(path, sizeof path, "spec");
    fuzz_write_file(path, data, size);
    snprintf(at, sizeof at, "@%s", path);
    generic(at);
    visual(at, 24, 32);
    visual(at, 2, 2);
    unlink(path);
    return 0;
}

#ifndef PLM_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_prune_spec(data, size);
}
#endif
