/* Line plots as PNG, drawn by our own code on the ShapesVQA raster (lines, rectangles, its
 * 5x7 font): accuracy against visual tokens kept, one line per method. Letters are drawn in
 * capitals; characters the font lacks become blanks. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "eval/eval.h"
#include "eval/shapes/shapes.h"

enum { W = 900, H = 560, ML = 90, MR = 230, MT = 40, MB = 70, SCALE = 2 };

static const shp_rgb INK = {40, 40, 40}, GRID = {225, 225, 225}, WHITE = {255, 255, 255};
static const shp_rgb COLOURS[] = {{31, 119, 180}, {214, 39, 40}, {44, 160, 44}, {255, 127, 14},
                                  {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {23, 190, 207}};

static void text(shp_image *img, int x, int y, const char *s, shp_rgb c)
{
    uint8_t bits[SHP_GLYPH_W * SHP_GLYPH_H];
    for (; *s; s++, x += (SHP_GLYPH_W + 1) * SCALE) {
        char ch = *s >= 'a' && *s <= 'z' ? (char)(*s - 'a' + 'A') : *s;
        if (!shp_glyph_bits(shp_glyph_index(ch), bits)) continue;
        for (int gy = 0; gy < SHP_GLYPH_H; gy++)
            for (int gx = 0; gx < SHP_GLYPH_W; gx++)
                if (bits[gy * SHP_GLYPH_W + gx])
                    shp_fill_rect(img, x + gx * SCALE, y + gy * SCALE, x + (gx + 1) * SCALE,
                                  y + (gy + 1) * SCALE, c);
    }
}

static int px_x(double x, double xmax) { return ML + (int)lround(x / xmax * (W - ML - MR)); }
static int px_y(double y) { return H - MB - (int)lround(y * (H - MT - MB)); }

plm_status eval_plot_png(const char *path, const eval_series *s, int ns, const char *x_label,
                         plm_error *err)
{
    double xmax = 1;
    for (int i = 0; i < ns; i++)
        for (int j = 0; j < s[i].n; j++) xmax = s[i].x[j] > xmax ? s[i].x[j] : xmax;
    /* round the axis up to a tidy step */
    double step = pow(10, floor(log10(xmax)));
    if (xmax / step < 3) step /= 2;
    xmax = ceil(xmax / step) * step;
    shp_image img;
    plm_status st = shp_image_new(&img, W, H, err);
    if (st != PLM_OK) return st;
    shp_fill_rect(&img, 0, 0, W, H, WHITE);
    char buf[32];
    for (int k = 0; k <= 10; k += 2) { /* accuracy 0..100% */
        int y = px_y(k / 10.0);
        shp_line(&img, ML, y, W - MR, y, 1, GRID);
        snprintf(buf, sizeof buf, "%d", k * 10);
        text(&img, ML - 12 - (int)strlen(buf) * 12, y - 7, buf, INK);
    }
    for (double x = 0; x <= xmax + 1e-9; x += step) {
        int px = px_x(x, xmax);
        shp_line(&img, px, MT, px, H - MB, 1, GRID);
        snprintf(buf, sizeof buf, "%g", x);
        text(&img, px - (int)strlen(buf) * 6, H - MB + 12, buf, INK);
    }
    shp_line(&img, ML, H - MB, W - MR, H - MB, 2, INK);
    shp_line(&img, ML, MT, ML, H - MB, 2, INK);
    text(&img, ML + (W - ML - MR) / 2 - (int)strlen(x_label) * 6, H - 30, x_label, INK);
    text(&img, 10, MT - 30, "ACCURACY 0 TO 100", INK);
    for (int i = 0; i < ns; i++) {
        shp_rgb c = COLOURS[i % (int)(sizeof COLOURS / sizeof COLOURS[0])];
        for (int j = 0; j < s[i].n; j++) {
            int x = px_x(s[i].x[j], xmax), y = px_y(s[i].y[j]);
            if (j) shp_line(&img, px_x(s[i].x[j - 1], xmax), px_y(s[i].y[j - 1]), x, y, 3, c);
            shp_fill_rect(&img, x - 4, y - 4, x + 5, y + 5, c);
        }
        int ly = MT + 10 + i * 26;
        shp_fill_rect(&img, W - MR + 20, ly, W - MR + 44, ly + 12, c);
        text(&img, W - MR + 52, ly, s[i].name, INK);
    }
    st = shp_png_write(path, &img, err);
    shp_image_free(&img);
    return st;
}
