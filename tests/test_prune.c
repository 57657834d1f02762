/* The shared pruning primitives, on inputs whose right answer is known. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prune/prune.h"
#include "prune/visual.h"

Test(prune, spec_parses_name_and_parameters)
{
    prune_spec s;
    plm_error err;
    cr_assert_eq(prune_spec_parse("vflowopt:keep=0.1,layers=2/8/16", &s, &err), PLM_OK, "%s", err.msg);
    cr_assert_str_eq(s.name, "vflowopt");
    double keep;
    cr_assert_eq(prune_spec_num(&s, "keep", 0.5, 0, 1, &keep, &err), PLM_OK);
    cr_assert_float_eq(keep, 0.1, 1e-12);
    int layers[4], n = 0;
    cr_assert_eq(prune_spec_ints(&s, "layers", layers, 4, &n, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(n, 3);
    cr_assert(layers[0] == 2 && layers[1] == 8 && layers[2] == 16);
    cr_assert_eq(prune_spec_check_unused(&s, &err), PLM_OK);
    double dflt;
    cr_assert_eq(prune_spec_num(&s, "alpha", 0.25, 0, 1, &dflt, &err), PLM_OK);
    cr_assert_float_eq(dflt, 0.25, 1e-12);
}

Test(prune, spec_errors_name_the_problem)
{
    prune_spec s;
    plm_error err;
    cr_assert_eq(prune_spec_parse("fastv:k=2,k=3", &s, &err), PLM_E_FORMAT);
    cr_assert(strstr(err.msg, "'k' given twice"), "%s", err.msg);
    cr_assert_eq(prune_spec_parse("fastv:k", &s, &err), PLM_E_FORMAT);
    cr_assert(strstr(err.msg, "expected key=value"), "%s", err.msg);
    cr_assert_eq(prune_spec_parse(":k=1", &s, &err), PLM_E_FORMAT);
    cr_assert_eq(prune_spec_parse("fastv:keep=2", &s, &err), PLM_OK);
    double v;
    cr_assert_eq(prune_spec_num(&s, "keep", 0.5, 0, 1, &v, &err), PLM_E_FORMAT);
    cr_assert(strstr(err.msg, "keep=2, expected a number from 0 to 1"), "%s", err.msg);
    cr_assert_eq(prune_spec_parse("fastv:kepe=0.5", &s, &err), PLM_OK);
    cr_assert_eq(prune_spec_check_unused(&s, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "fastv has no parameter 'kepe'"), "%s", err.msg);
}

Test(prune, spec_reads_a_file_after_comments)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tuned.spec", PLM_BINARY_DIR);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("# tuned on 64 calibration items\n\n  vflowopt:keep=0.11  \n", f);
    fclose(f);
    char arg[520];
    snprintf(arg, sizeof arg, "@%s", path);
    prune_spec s;
    plm_error err;
    cr_assert_eq(prune_spec_parse(arg, &s, &err), PLM_OK, "%s", err.msg);
    cr_assert_str_eq(s.text, "vflowopt:keep=0.11");
    remove(path);
    cr_assert_eq(prune_spec_parse(arg, &s, &err), PLM_E_IO);
    cr_assert(strstr(err.msg, "tuned.spec"), "%s", err.msg);
}

Test(prune, topk_keeps_the_highest_in_index_order)
{
    float s[8] = {0.1f, 0.9f, 0.3f, 0.9f, NAN, 0.5f, 0.0f, 0.7f};
    int32_t idx[8];
    cr_assert_eq(prune_topk(s, 8, 3, idx), 3);
    cr_assert(idx[0] == 1 && idx[1] == 3 && idx[2] == 7, "%d %d %d", idx[0], idx[1], idx[2]);
    cr_assert_eq(prune_topk(s, 8, 20, idx), 8); /* clamped; NaN last but kept */
    cr_assert_eq(prune_topk(s, 8, 0, idx), 0);
}

Test(prune, uniform_grid_spreads_over_rows_and_columns)
{
    int32_t idx[64];
    cr_assert_eq(prune_uniform_grid(24, 64, idx), 64);
    int rows[24] = {0}, cols[24] = {0};
    for (int i = 0; i < 64; i++) {
        cr_assert(i == 0 || idx[i] > idx[i - 1]);
        rows[idx[i] / 24]++;
        cols[idx[i] % 24]++;
    }
    int rows_hit = 0, cols_hit = 0;
    for (int i = 0; i < 24; i++) {
        rows_hit += rows[i] > 0;
        cols_hit += cols[i] > 0;
    }
    cr_assert_geq(rows_hit, 8);
    cr_assert_geq(cols_hit, 8);
    cr_assert_eq(prune_uniform_grid(3, 9, idx), 9); /* everything */
    for (int i = 0; i < 9; i++) cr_assert_eq(idx[i], i);
}

Test(prune, random_is_distinct_sorted_and_seeded)
{
    int32_t a[50], b[50], c[50];
    cr_assert_eq(prune_random(7, 576, 50, a), 50);
    cr_assert_eq(prune_random(7, 576, 50, b), 50);
    cr_assert_eq(prune_random(8, 576, 50, c), 50);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    cr_assert_neq(memcmp(a, c, sizeof a), 0);
    for (int i = 1; i < 50; i++) cr_assert(a[i] > a[i - 1] && a[i] < 576);
}

Test(prune, complement_lists_the_rest)
{
    int32_t keep[3] = {0, 2, 5}, rest[8];
    cr_assert_eq(prune_complement(keep, 3, 7, rest), 4);
    cr_assert(rest[0] == 1 && rest[1] == 3 && rest[2] == 4 && rest[3] == 6);
}

Test(prune, entropy_is_zero_for_flat_and_high_for_noise)
{
    enum { S = 28, P = 14 };
    uint8_t img[S * S * 3];
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            uint8_t *px = img + (y * S + x) * 3;
            int noisy = x >= P; /* right half noise, left half flat */
            uint8_t v = noisy ? (uint8_t)((x * 37 + y * 91) * 2654435761u >> 24) : 80;
            px[0] = px[1] = px[2] = v;
        }
    float e[4];
    prune_patch_entropy(img, S, P, e);
    cr_assert_float_eq(e[0], 0.0f, 1e-6);
    cr_assert_float_eq(e[2], 0.0f, 1e-6);
    cr_assert_gt(e[1], 5.0f);
    cr_assert_gt(e[3], 5.0f);
    /* two equally frequent gray levels: one bit. Gray is round(0.3333 (R+G+B)), so (30, 0, 0)
     * and (0, 0, 30) are the same level, and (255, 0, 0) is level 85. */
    for (int y = 0; y < P; y++)
        for (int x = 0; x < P; x++) {
            uint8_t *px = img + (y * S + x) * 3;
            px[0] = x % 2 ? 255 : 30;
            px[1] = 0;
            px[2] = x % 2 ? 0 : 0;
        }
    prune_patch_entropy(img, S, P, e);
    cr_assert_float_eq(e[0], 1.0f, 1e-6);
}

/* The tabled gray levels and terms give VFlowOpt's per-pixel formula bit for bit. */
Test(prune, entropy_matches_the_per_pixel_formula)
{
    enum { S = 70, P = 14, G = S / P };
    static uint8_t img[S * S * 3];
    uint32_t st = 12345;
    for (int trial = 0; trial < 3; trial++) {
        for (int i = 0; i < S * S * 3; i++) {
            st = st * 1664525u + 1013904223u;
            img[i] = trial == 0 ? (uint8_t)(st >> 24) : trial == 1 ? (uint8_t)(i % 7 * 40)
                                                                   : (uint8_t)((st >> 30) * 85);
        }
        float got[G * G];
        prune_patch_entropy(img, S, P, got);
        for (int p = 0; p < G * G; p++) {
            int hist[256] = {0};
            for (int y = 0; y < P; y++)
                for (int x = 0; x < P; x++) {
                    const uint8_t *px = img + (((p / G) * P + y) * S + (p % G) * P + x) * 3;
                    hist[(int)lrint(0.3333 * px[0] + 0.3333 * px[1] + 0.3333 * px[2])]++;
                }
            double e = 0;
            for (int i = 0; i < 256; i++)
                if (hist[i]) {
                    double q = hist[i] / (double)(P * P);
                    e -= q * log2(q + 1e-10);
                }
            cr_assert_eq(got[p], (float)e, "trial %d patch %d: %.9g vs %.9g", trial, p, got[p],
                         (float)e);
        }
    }
}

Test(prune, softmax_and_scaled_add)
{
    float s[3] = {0, 0, (float)log(2.0)}, o[3], a[3] = {1, 2, 3};
    prune_softmax(s, 3);
    cr_assert_float_eq(s[0], 0.25f, 1e-6);
    cr_assert_float_eq(s[2], 0.5f, 1e-6);
    prune_add_scaled(o, a, 2.0f, s, 3);
    cr_assert_float_eq(o[2], 4.0f, 1e-6);
}

Test(prune, blend_rescales_each_score_before_weighting)
{
    /* a carried score in the hundreds and attention probabilities: without the rescaling the
     * first would decide alone; rescaled, weight 2 lets the attention win where they disagree */
    float a[3] = {100, 300, 200}, b[3] = {0.5f, 0.1f, 0.3f}, o[3];
    prune_blend_scores(a, b, 2.0, 3, o);
    cr_assert_float_eq(o[0], 0 + 2 * 1.0f, 1e-6);
    cr_assert_float_eq(o[1], 1 + 2 * 0.0f, 1e-6);
    cr_assert_float_eq(o[2], 0.5f + 2 * 0.5f, 1e-6);
    int32_t k[1];
    cr_assert_eq(prune_topk(o, 3, 1, k), 1);
    cr_assert_eq(k[0], 0);
    /* a constant score adds nothing; out may alias b */
    float c[3] = {7, 7, 7};
    prune_blend_scores(c, b, 1.0, 3, b);
    cr_assert_float_eq(b[0], 1.0f, 1e-6);
    cr_assert_float_eq(b[1], 0.0f, 1e-6);
}

Test(prune, global_rows_receive_more_than_t_times_the_mean)
{
    float recv[5] = {0.1f, 0.5f, 0.1f, 0.2f, 0.1f}; /* mean 0.2 */
    int32_t idx[5];
    cr_assert_eq(prune_global_rows(recv, 5, 2.0, idx), 1);
    cr_assert_eq(idx[0], 1);
    cr_assert_eq(prune_global_rows(recv, 5, 0.9, idx), 2);
    cr_assert_eq(prune_global_rows(recv, 5, 3.0, idx), 0);
}

Test(prune, grid_recycle_plans_each_cells_weighted_mean_into_its_best_slot)
{
    /* 4x4 grid, cells of 2x2 (m = 2). Scores: high in the top-left cell. Drop the 12 lowest:
     * the top-left cell's 4 are kept; every other cell's dropped tokens merge into one. */
    float score[16], rows[16], w[16];
    for (int i = 0; i < 16; i++) {
        int y = i / 4, x = i % 4;
        score[i] = (y < 2 && x < 2) ? 10.0f + i : 1.0f + 0.01f * i;
        rows[i] = (float)i;
    }
    int32_t keep[16], top[4], src[16];
    int64_t off[17];
    cr_assert_eq(prune_topk(score, 16, 4, top), 4);
    int64_t k = prune_grid_recycle(score, 4, top, 4, 2.0, keep, off, src, w);
    cr_assert_eq(k, 4 + 3, "kept %lld", (long long)k);
    int32_t want[7] = {0, 1, 4, 5, 7, 13, 15}; /* the best slot of each other cell */
    for (int i = 0; i < 7; i++) cr_assert_eq(keep[i], want[i], "keep[%d] = %d", i, keep[i]);
    cr_assert_eq(off[7], 4 + 12, "every token is a source once");
    float out[7];
    for (int r = 0; r < 7; r++) { /* what sum_rows makes of the plan */
        out[r] = 0;
        for (int64_t j = off[r]; j < off[r + 1]; j++) out[r] += w[j] * rows[src[j]];
    }
    /* cell (0,1) holds tokens 2, 3, 6, 7: its score-weighted mean lands in slot 7 */
    double sw = score[2] + score[3] + score[6] + score[7];
    double mean = (2 * score[2] + 3 * score[3] + 6 * score[6] + 7 * score[7]) / sw;
    cr_assert_float_eq(out[4], mean, 1e-5);
    cr_assert_eq(off[1] - off[0], 1);
    cr_assert_eq(src[0], 0);
    cr_assert_eq(w[0], 1.0f, "a kept row is itself, weight 1");
    /* keeping everything is the identity */
    cr_assert_eq(prune_grid_recycle(score, 4, top, 16, 2.0, keep, off, src, w), 16);
    for (int i = 0; i < 16; i++) cr_assert(keep[i] == i && src[off[i]] == i && w[off[i]] == 1.0f);
}

Test(prune, topk_cover_takes_each_blocks_best_before_the_global_best)
{
    /* 4x4 grid, scores rising with the index: a plain top-4 is the bottom row; covering 4
     * blocks of 2x2 takes each block's best (its bottom-right), then the rest by score */
    float score[16];
    for (int i = 0; i < 16; i++) score[i] = (float)i;
    int32_t idx[16];
    cr_assert_eq(prune_topk_cover(score, 4, 4, 0, idx), 4);
    for (int i = 0; i < 4; i++) cr_assert_eq(idx[i], 12 + i);
    cr_assert_eq(prune_topk_cover(score, 4, 4, 4, idx), 4);
    int32_t want[4] = {5, 7, 13, 15};
    for (int i = 0; i < 4; i++) cr_assert_eq(idx[i], want[i], "idx[%d] = %d", i, idx[i]);
    /* k 6, cover 4: the four winners, then 14 and 12 (the best left) */
    cr_assert_eq(prune_topk_cover(score, 4, 6, 4, idx), 6);
    int32_t want6[6] = {5, 7, 12, 13, 14, 15};
    for (int i = 0; i < 6; i++) cr_assert_eq(idx[i], want6[i], "idx[%d] = %d", i, idx[i]);
    /* cover 3 rounds down to one block (the whole grid): the plain top-k */
    cr_assert_eq(prune_topk_cover(score, 4, 4, 3, idx), 4);
    for (int i = 0; i < 4; i++) cr_assert_eq(idx[i], 12 + i);
}

Test(prune, spread_select_covers_the_feature_space_unless_the_score_weighs_in)
{
    /* a and b nearly parallel, c orthogonal, d opposite a; a scores best, b next */
    const float x[4][2] = {{1, 0}, {0.99f, 0.14f}, {0, 1}, {-1, 0}};
    const float score[4] = {1.0f, 0.9f, 0.1f, 0.2f};
    float gram[16];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) gram[i * 4 + j] = x[i][0] * x[j][0] + x[i][1] * x[j][1];
    int32_t idx[4];
    /* w 0: the best first, then the farthest from it */
    cr_assert_eq(prune_spread_select(gram, score, 4, 2, 0, idx), 2);
    cr_assert(idx[0] == 0 && idx[1] == 3, "%d %d", idx[0], idx[1]);
    cr_assert_eq(prune_spread_select(gram, score, 4, 3, 0, idx), 3);
    cr_assert(idx[0] == 0 && idx[1] == 2 && idx[2] == 3, "%d %d %d", idx[0], idx[1], idx[2]);
    /* w 10: the score's weight outweighs the distance, b is next */
    cr_assert_eq(prune_spread_select(gram, score, 4, 2, 10, idx), 2);
    cr_assert(idx[0] == 0 && idx[1] == 1, "%d %d", idx[0], idx[1]);
    cr_assert_eq(prune_spread_select(gram, score, 4, 9, 0, idx), 4); /* clamped to n */
}

Test(prune, visionzip_merge_is_target_plus_mean_of_members)
{
    /* 4 remaining tokens, 2 targets at stride 2 (tokens 0 and 2); keys put 1 with 0 and 3
     * with 2 */
    float rows[4 * 2] = {1, 0, 3, 0, 0, 1, 0, 5};
    float keys[4 * 2] = {1, 0, 0.9f, 0.1f, 0, 1, 0.1f, 0.9f};
    int32_t rem[4] = {0, 1, 2, 3};
    int64_t off[3];
    int32_t src[4];
    float w[4], out[4];
    cr_assert_eq(prune_visionzip_merge(keys, 2, rem, 4, 2, off, src, w), 2);
    cr_assert(off[0] == 0 && off[1] == 2 && off[2] == 4);
    cr_assert(src[0] == 0 && w[0] == 1.0f, "the target itself, weight 1");
    for (int j = 0; j < 2; j++) /* what sum_rows makes of the plan */
        for (int d = 0; d < 2; d++) {
            out[j * 2 + d] = 0;
            for (int64_t i = off[j]; i < off[j + 1]; i++)
                out[j * 2 + d] += w[i] * rows[src[i] * 2 + d];
        }
    cr_assert(out[0] == 1 + 3 && out[1] == 0, "%g %g", out[0], out[1]);
    cr_assert(out[2] == 0 && out[3] == 1 + 5, "%g %g", out[2], out[3]);
}

Test(prune, gather_rows_in_place_keeps_order)
{
    plm_backend *be;
    plm_error err;
    cr_assert_eq(plm_backend_cpu_new(1, &be, &err), PLM_OK);
    float x[10 * 3];
    for (int i = 0; i < 30; i++) x[i] = (float)i;
    int32_t keep[6] = {1, 2, 3, 4, 7, 9};
    prune_gather_rows(be, x, x, 3, keep, 6);
    for (int r = 0; r < 6; r++)
        for (int d = 0; d < 3; d++) cr_assert_eq(x[r * 3 + d], (float)(keep[r] * 3 + d));
    plm_backend_free(be);
}

Test(prune, vflowopt_budget_picks_a_preset_and_derives_r2)
{
    /* LLaVA-1.5: 24x24 patches, 32 layers; stages scaled from 9/18 of 28 to 10/21 */
    const int budgets[] = {32, 64, 128, 192};
    for (int i = 0; i < 4; i++) {
        char spec[64];
        snprintf(spec, sizeof spec, "vflowopt:tokens=%d", budgets[i]);
        prune_visual p;
        plm_error err;
        cr_assert_eq(prune_visual_parse(spec, 24, 32, &p, &err), PLM_OK, "%s", err.msg);
        cr_assert_eq(p.n_stages, 2);
        cr_assert(p.stage_layer[0] == 10 && p.stage_layer[1] == 21);
        double r1 = p.stage_ratio[0], r2 = p.stage_ratio[1];
        double avg = 576 * (p.r0 * 10 + p.r0 * r1 * 11 + p.r0 * r1 * r2 * 11) / 32;
        cr_assert_float_eq(avg, budgets[i], 0.5, "%s: layer average %g", spec, avg);
    }
    /* tokens=N: about N recycling cells, round(sqrt N) a side; without tokens= the shipped
     * row's m scaled from the 27x27 grid */
    prune_visual q;
    plm_error e2;
    cr_assert_eq(prune_visual_parse("vflowopt:tokens=64", 24, 32, &q, &e2), PLM_OK, "%s", e2.msg);
    cr_assert_float_eq(q.m, 3.0, 1e-12);
    cr_assert_eq(prune_visual_parse("vflowopt:tokens=32", 24, 32, &q, &e2), PLM_OK, "%s", e2.msg);
    cr_assert_float_eq(q.m, 4.0, 1e-12);
    cr_assert_eq(prune_visual_parse("vflowopt:tokens=32,m=7", 24, 32, &q, &e2), PLM_OK);
    cr_assert_float_eq(q.m, 7.0, 1e-12);
    cr_assert_eq(prune_visual_parse("vflowopt:r0=0.2", 24, 32, &q, &e2), PLM_OK, "%s", e2.msg);
    cr_assert_float_eq(q.m, 17.387 * 24 / 27, 1e-9);
    /* the 10% row as shipped: r0 = 0.11662, t = 39.265, alpha 0 */
    prune_visual p;
    plm_error err;
    cr_assert_eq(prune_visual_parse("vflowopt:tokens=57.6", 24, 32, &p, &err), PLM_OK, "%s", err.msg);
    cr_assert_float_eq(p.r0, 0.11662, 1e-9);
    cr_assert_float_eq(p.t, 39.265, 1e-9);
    cr_assert_float_eq(p.alpha, 0, 0);
}

Test(prune, raters_are_the_text_rows_the_image_attends_to)
{
    /* image rows along x; text rows 0 and 2 along x (raters), row 1 along y */
    float img[2 * 2] = {3, 0, 2, 0}, txt[3 * 2] = {2, 0, 0, 2, 2, 0}, sim[2 * 3];
    for (int v = 0; v < 2; v++)
        for (int t = 0; t < 3; t++)
            sim[v * 3 + t] = img[v * 2] * txt[t * 2] + img[v * 2 + 1] * txt[t * 2 + 1];
    int32_t idx[3];
    cr_assert_eq(prune_raters(sim, 2, 3, idx), 2);
    cr_assert(idx[0] == 0 && idx[1] == 2);
}

Test(prune, dpc_knn_separates_two_clusters_and_averages_them)
{
    float rows[6 * 2] = {0, 0, 0.1f, 0, 0, 0.1f, 10, 10, 10.1f, 10, 10, 10.1f}, out[4], gram[36];
    for (int a = 0; a < 6; a++)
        for (int b = 0; b < 6; b++)
            gram[a * 6 + b] = rows[a * 2] * rows[b * 2] + rows[a * 2 + 1] * rows[b * 2 + 1];
    int64_t off[3];
    int32_t src[6];
    float w[6];
    cr_assert_eq(prune_dpc_knn_merge(gram, 6, 2, 2, 3, off, src, w), 2);
    cr_assert_eq(off[2], 6, "every row joins one cluster");
    for (int c = 0; c < 2; c++) /* what sum_rows makes of the plan */
        for (int e = 0; e < 2; e++) {
            out[c * 2 + e] = 0;
            for (int64_t j = off[c]; j < off[c + 1]; j++)
                out[c * 2 + e] += w[j] * rows[src[j] * 2 + e];
        }
    int lo = out[0] < out[2] ? 0 : 1;
    cr_assert_float_eq(out[lo * 2], 0.1f / 3, 1e-5);
    cr_assert_float_eq(out[lo * 2 + 1], 0.1f / 3, 1e-5);
    cr_assert_float_eq(out[(1 - lo) * 2], 10 + 0.1f / 3, 1e-4);
}

Test(prune, vflowopt_budget_binds_at_the_last_stage)
{
    /* 24 x 24 patches, 32 layers: the ratios count r0 * 576 rows entering the decoder, but the
     * vision stage's recycled and global rows add some; the last stage pays for them */
    prune_visual p;
    plm_error err;
    cr_assert_eq(prune_visual_parse("vflowopt:tokens=64", 24, 32, &p, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(p.n_stages, 2);
    const int L = 32, k1 = p.stage_layer[0], k2 = p.stage_layer[1];
    const int64_t n0 = (int64_t)llround(p.r0 * 576) + 20;
    int64_t done = (int64_t)k1 * n0;
    const int64_t n1 = prune_visual_stage_keep(&p, 0, n0, n0, done, L);
    cr_assert_eq(n1, n0 - llround(n0 * (1 - p.stage_ratio[0]))); /* the first stage: its ratio */
    done += (int64_t)(k2 - k1) * n1;
    const int64_t n2 = prune_visual_stage_keep(&p, 1, n1, n0, done, L);
    const double avg = (double)(done + (int64_t)(L - k2) * n2) / L;
    cr_assert(avg <= 64 && avg > 63, "average %.2f rows per layer for tokens=64", avg);
    /* explicit ratios (no tokens=) keep their own arithmetic */
    cr_assert_eq(prune_visual_parse("vflowopt:r0=0.2,r1=0.5,r2=0.5,layers=8/16", 24, 32, &p, &err),
                 PLM_OK, "%s", err.msg);
    cr_assert_eq(prune_visual_stage_keep(&p, 1, 40, 115, 100000, L), 20);
}
