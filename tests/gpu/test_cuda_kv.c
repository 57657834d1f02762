/* The KV-cache machinery on the GPU against the CPU: the row edits policies apply (per-head
 * compaction, ordered merges) on random caches, and whole generations under every policy on a
 * float32 fixture, where the CUDA backend must pick the same tokens and hold the same number of
 * KV bytes as the CPU one (ThinK's thin keys and KIVI's int4 rows included). Plain C; run
 * from the repository root by tests/gpu/run.sh. Prints one PASS/FAIL line per check and
 * "N passed, M failed" last. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "prunelm.h"
#include "tests/support/compare.h"
#include "tests/gpu/gpu_util.h"

#define MODEL "tests/fixtures/models/mqa_f32_oldnames"
#define GQA "tests/fixtures/models/gqa_bf16_sharded"
#define PROMPT "USER: <image>\nWhat colour is the big shape on the left? ASSISTANT:"

static int passed, failed;

static void check(int ok, const char *name, const char *fmt, double v)
{
    printf("%s %s ", ok ? "PASS" : "FAIL", name);
    printf(fmt, v);
    printf("\n");
    fflush(stdout);
    ok ? passed++ : failed++;
}

static uint64_t rng = 88172645463325252ull;
/* gather_heads and mix_rows on a [rows x n_heads*hd] cache, CPU vs GPU, bit for bit */
static void row_edits(plm_backend *cpu, plm_backend *gpu, int64_t rows, int n_heads, int hd,
                      int64_t keep)
{
    const int64_t stride = (int64_t)n_heads * hd, n = rows * stride;
    float *x = malloc((size_t)n * sizeof *x), *got = malloc((size_t)n * sizeof *got);
    int32_t *idx = malloc((size_t)(n_heads * keep) * sizeof *idx);
    for (int64_t i = 0; i < n; i++) x[i] = frand();
    for (int h = 0; h < n_heads; h++) { /* an ascending random subset per head */
        int64_t k = 0;
        for (int64_t r = 0; r < rows && k < keep; r++)
            if (rows - r <= keep - k || frand() > 0.2f) idx[h * keep + k++] = (int32_t)r;
    }
    enum { NM = 37 };
    int32_t hh[NM], dd[NM], ss[NM];
    float aa[NM], bb[NM];
    for (int m = 0; m < NM; m++) {
        hh[m] = (int32_t)(m % n_heads);
        dd[m] = (int32_t)((m * 7) % rows);
        ss[m] = (int32_t)((m * 13 + 5) % rows);
        aa[m] = 0.5f + 0.01f * (float)m;
        bb[m] = 1.0f - aa[m];
    }
    float *d = gpu->ops->alloc(gpu, (size_t)n * sizeof(float));
    gpu->ops->upload(gpu, d, x, (size_t)n * sizeof(float));
    gpu->ops->mix_rows(gpu, d, stride, hd, hh, dd, ss, aa, bb, NM);
    gpu->ops->gather_heads(gpu, d, stride, n_heads, hd, idx, keep);
    gpu->ops->download(gpu, got, d, (size_t)n * sizeof(float));
    cpu->ops->mix_rows(cpu, x, stride, hd, hh, dd, ss, aa, bb, NM);
    cpu->ops->gather_heads(cpu, x, stride, n_heads, hd, idx, keep);
    char name[128];
    snprintf(name, sizeof name, "row_edits rows=%lld heads=%d hd=%d keep=%lld", (long long)rows,
             n_heads, hd, (long long)keep);
    /* the GPU contracts a*d + b*s into one FMA: equal to float rounding, not bit for bit */
    const char *e = gpu->ops->error(gpu);
    const double err = rel_l2(got, x, (size_t)(keep * stride));
    check(!e && err <= 1e-6, name, "(rel. L2 %g)", e ? 1.0 : err);
    gpu->ops->release(gpu, d);
    free(x);
    free(got);
    free(idx);
}

/* sum_rows: n output rows of cols columns, each a random segment of x's rows (some single
 * weight-1 gathers, some empty), CPU vs GPU */
static void sum_rows(plm_backend *cpu, plm_backend *gpu, int64_t rows, int64_t cols, int64_t n)
{
    const int64_t xs = cols + 3, ys = cols + 1;
    float *x = malloc((size_t)(rows * xs) * sizeof *x), *want = calloc((size_t)(n * ys), 4);
    float *got = calloc((size_t)(n * ys), 4), *w = malloc((size_t)(4 * n) * sizeof *w);
    int64_t *off = malloc((size_t)(n + 1) * sizeof *off);
    int32_t *src = malloc((size_t)(4 * n) * sizeof *src);
    for (int64_t i = 0; i < rows * xs; i++) x[i] = frand();
    off[0] = 0;
    for (int64_t r = 0; r < n; r++) {
        const int64_t len = r % 5 == 0 ? 1 : r % 7 == 0 ? 0 : 2 + r % 3;
        for (int64_t j = 0; j < len; j++) {
            src[off[r] + j] = (int32_t)((r * 31 + j * 17) % rows);
            w[off[r] + j] = len == 1 ? 1.0f : frand();
        }
        off[r + 1] = off[r] + len;
    }
    float *dx = gpu->ops->alloc(gpu, (size_t)(rows * xs) * sizeof(float));
    float *dy = gpu->ops->alloc(gpu, (size_t)(n * ys) * sizeof(float));
    gpu->ops->upload(gpu, dx, x, (size_t)(rows * xs) * sizeof(float));
    gpu->ops->upload(gpu, dy, got, (size_t)(n * ys) * sizeof(float));
    gpu->ops->sum_rows(gpu, dy, ys, dx, xs, cols, off, src, w, n);
    gpu->ops->download(gpu, got, dy, (size_t)(n * ys) * sizeof(float));
    cpu->ops->sum_rows(cpu, want, ys, x, xs, cols, off, src, w, n);
    int exact = 1; /* the weight-1 gathers: bit for bit */
    for (int64_t r = 0; r < n; r++)
        if (off[r + 1] - off[r] == 1)
            for (int64_t e = 0; e < cols; e++) exact &= got[r * ys + e] == want[r * ys + e];
    char name[96];
    snprintf(name, sizeof name, "sum_rows rows=%lld cols=%lld n=%lld", (long long)rows,
             (long long)cols, (long long)n);
    const char *e = gpu->ops->error(gpu);
    const double err = rel_l2(got, want, (size_t)(n * ys));
    check(!e && exact && err <= 1e-6, name, "(rel. L2 %g)", e || !exact ? 1.0 : err);
    gpu->ops->release(gpu, dx);
    gpu->ops->release(gpu, dy);
    free(x); free(want); free(got); free(w); free(off); free(src);
}

typedef struct gen {
    int32_t *ids;
    size_t n;
    uint64_t kv_bytes;
    int ok;
} gen;

static gen generate(const char *dir, plm_device dev, const char *kv, int image)
{
    gen g = {0};
    plm_model_params mp = plm_model_default_params();
    mp.device = dev;
    plm_session_params sp = plm_session_default_params();
    sp.max_tokens = 12;
    sp.ignore_eos = 1;
    plm_model *m = NULL;
    plm_session *s = NULL;
    plm_error err;
    char img[600];
    snprintf(img, sizeof img, "%s/image.png", dir);
    if (plm_model_load(dir, &mp, &m, &err) != PLM_OK ||
        plm_session_new(m, &sp, &s, &err) != PLM_OK) {
        printf("  %s: %s\n", kv, err.msg);
        plm_model_free(m);
        return g;
    }
    const char *prompt = image ? PROMPT : "USER: The pass key is 7 4 1 9. Remember it, the pass "
                                          "key is 7 4 1 9. What is the pass key? ASSISTANT:";
    if (plm_session_set_kv(s, kv) == PLM_OK && (!image || plm_session_set_image_file(s, img) ==
                                                              PLM_OK) &&
        plm_session_generate(s, prompt, NULL, NULL, NULL) == PLM_OK) {
        size_t np;
        const int32_t *t = plm_session_tokens(s, &np, &g.n);
        g.ids = malloc(g.n * sizeof *g.ids);
        memcpy(g.ids, t, g.n * sizeof *g.ids);
        g.kv_bytes = plm_session_timings(s)->kv_bytes;
        g.ok = 1;
    } else {
        printf("  %s: %s\n", kv, plm_last_error(s));
    }
    plm_session_free(s);
    plm_model_free(m);
    return g;
}

static void same_generation(const char *dir, const char *kv, int image)
{
    gen c = generate(dir, PLM_DEVICE_CPU, kv, image), g = generate(dir, PLM_DEVICE_CUDA, kv, image);
    char name[300];
    snprintf(name, sizeof name, "%s %s: CUDA tokens == CPU", strrchr(dir, '/') + 1, kv);
    check(c.ok && g.ok && c.n == g.n && !memcmp(c.ids, g.ids, c.n * sizeof *c.ids), name,
          "(%g tokens)", (double)g.n);
    /* float32 checkpoints: the same bytes. bf16 ones: the GPU rounds activations to bf16, so a
     * policy deciding by a threshold (Scissorhands' "below the uniform share" counts) may pick
     * other, equally good rows, and with int4 which rows are quantized, hence the bytes, follows
     * (seen 2026-12-07: 10044 on the H100 against 10324 here, the tokens the same) */
    const double tol = strstr(dir, "bf16") ? 0.05 : 0.0;
    const double diff = fabs((double)c.kv_bytes - (double)g.kv_bytes);
    snprintf(name, sizeof name, "%s %s: CUDA kv_bytes == CPU %llu%s", strrchr(dir, '/') + 1, kv,
             (unsigned long long)c.kv_bytes, tol > 0 ? " (within 5%: bf16)" : "");
    check(c.ok && g.ok && diff <= tol * (double)c.kv_bytes, name, "(%g bytes)",
          (double)g.kv_bytes);
    free(c.ids);
    free(g.ids);
}

int main(void)
{
    plm_backend *cpu, *gpu;
    plm_error err;
    if (plm_backend_cpu_new(2, &cpu, &err) != PLM_OK || plm_backend_cuda_new(0, &gpu, &err) !=
                                                            PLM_OK) {
        printf("no backend: %s\n0 passed, 1 failed\n", err.msg);
        return 1;
    }
    row_edits(cpu, gpu, 40, 4, 64, 17);
    row_edits(cpu, gpu, 301, 8, 128, 300);
    row_edits(cpu, gpu, 9, 1, 80, 1);
    sum_rows(cpu, gpu, 577, 4096, 200);
    sum_rows(cpu, gpu, 50, 257, 31);
    plm_backend_free(gpu);
    plm_backend_free(cpu);
    const char *specs[] = {"streaming:budget=40", "h2o:budget=40", "snapkv:budget=40,window=8",
                           "scissorhands:budget=40,recent=8,drop=4", "d2o:budget=40",
                           "ems:budget=40,window=8", "kvcrush:budget=40",
                           "mustafar:window=8,batch=8", "delta:budget=16,full=1,layers=1",
                           "recycled:budget=16,stride=3", "autopasta:span=4",
                           "h2o:budget=40+autopasta:span=4", "think:ratio=0.5,recent=8",
                           "h2o:budget=40+think:ratio=0.5,recent=8", "int4:group=8,residual=8",
                           "scissorhands:budget=40,recent=8,drop=4+int4:group=8,residual=8",
                           "d2o:budget=40+int4:group=8,residual=4"};
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) same_generation(MODEL, specs[i], 1);
    same_generation(GQA, "h2o:budget=12", 0);
    same_generation(GQA, "flexprefill:block=8,min_budget=8", 0);
    same_generation(GQA, "deltallm:local=8", 0);
    same_generation(GQA, "think:ratio=0.4,recent=4", 0);
    same_generation(GQA, "h2o:budget=12+think:ratio=0.5,recent=2", 0);
    same_generation(GQA, "int4:group=8,residual=4", 0);
    same_generation(GQA, "scissorhands:budget=16,recent=2,drop=2+int4:group=4,residual=2", 0);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
