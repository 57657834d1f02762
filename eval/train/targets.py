"""Extra training targets derived from a ShapesVQA scene (the "objects"/"glyph" fields that
prunelm-shapes writes next to every question).

Why they exist (NOTES.md): with only the one-word answer as the loss, a ViT learned from scratch
stays on the answer-prior plateau, because binding an attribute to a named object needs shape
features that so sparse a signal does not train. Two denser signals fix that, and neither
changes the saved model (a plain LlavaForConditionalGeneration):
- per-patch labels (shape, colour, character of whatever covers the patch), predicted by small
  linear heads from the projected image features the decoder reads: the tower learns local
  shape/colour features within a few hundred steps;
- a caption of the whole scene as an extra question ("Describe the image."), the LLaVA stage-1
  recipe: every object of every caption is a supervised token, so the decoder learns to read
  the image tokens in order.
"""
import numpy as np

SHAPES = ["circle", "square", "triangle", "star", "cross", "diamond", "hexagon", "ring"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
CHARS = [chr(ord("A") + i) for i in range(26)] + [chr(ord("0") + i) for i in range(10)]
GRID, PATCH = 24, 14
# class 0 is "background" in every head; the glyph is one more "shape"
N_SHAPE, N_COLOUR, N_CHAR = len(SHAPES) + 2, len(COLOURS) + 1, len(CHARS) + 1
CAPTION_QUESTION = "Describe the image."


def _paint(lab, x0, y0, w, h, values):
    """Writes values (one per head) into every patch the box covers by at least a quarter of
    the patch or of the box, and always into the patch the box covers most, so a one-patch
    object is labelled too."""
    best, best_area = None, 0
    for py in range(max(0, y0 // PATCH), min(GRID, (y0 + h - 1) // PATCH + 1)):
        for px in range(max(0, x0 // PATCH), min(GRID, (x0 + w - 1) // PATCH + 1)):
            ox = min(x0 + w, (px + 1) * PATCH) - max(x0, px * PATCH)
            oy = min(y0 + h, (py + 1) * PATCH) - max(y0, py * PATCH)
            area = max(0, ox) * max(0, oy)
            if area > best_area:
                best, best_area = (py, px), area
            if area * 4 >= min(PATCH * PATCH, w * h):
                lab[:, py, px] = values
    if best is not None:
        lab[:, best[0], best[1]] = values


def patch_labels(objects, glyph):
    """[3, 576] uint8: shape, colour and character class per patch, in raster order (the order
    of CLIP's patch tokens)."""
    lab = np.zeros((3, GRID, GRID), dtype=np.uint8)
    for o in objects:
        x0, y0, w, h = o["box"]
        _paint(lab, x0, y0, w, h, [1 + SHAPES.index(o["shape"]), 1 + COLOURS.index(o["colour"]), 0])
    if glyph:
        x0, y0, w, h = glyph["box"]
        _paint(lab, x0, y0, w, h, [N_SHAPE - 1, 1 + COLOURS.index(glyph["colour"]),
                                   1 + CHARS.index(glyph["char"].upper())])
    return lab.reshape(3, GRID * GRID)


def caption(objects, glyph):
    """The scene left to right: "small red circle, large blue ring, letter d"."""
    parts = [(o["box"][0] + o["box"][2] / 2, f"{o['size']} {o['colour']} {o['shape']}")
             for o in objects]
    if glyph:
        kind = "digit" if glyph["char"].isdigit() else "letter"
        parts.append((glyph["box"][0] + glyph["box"][2] / 2, f"{kind} {glyph['char'].lower()}"))
    return ", ".join(p for _, p in sorted(parts, key=lambda t: t[0]))


def self_test():
    """Hand-made scene: a one-patch object, a large object, a glyph."""
    objs = [{"shape": "star", "colour": "red", "size": "small", "box": [16, 16, 12, 12]},
            {"shape": "ring", "colour": "blue", "size": "large", "box": [140, 140, 84, 84]}]
    gly = {"char": "D", "colour": "white", "size": "medium", "box": [300, 10, 20, 28]}
    lab = patch_labels(objs, gly).reshape(3, GRID, GRID)
    assert lab[0, 1, 1] == 1 + SHAPES.index("star") and lab[1, 1, 1] == 1 + COLOURS.index("red")
    assert (lab[0] == 1 + SHAPES.index("star")).sum() == 1, "a one-patch object labels one patch"
    assert (lab[0] == 1 + SHAPES.index("ring")).sum() == 36, (lab[0] == 8).sum()  # 6x6 patches
    assert lab[2, 1, 21] == 1 + CHARS.index("D") and lab[0, 1, 21] == N_SHAPE - 1
    assert lab[0, 0, 0] == 0 and lab[2].max() == 1 + CHARS.index("D")
    assert caption(objs, gly) == "small red star, large blue ring, letter d", caption(objs, gly)


if __name__ == "__main__":
    self_test()
    print("targets: ok")
