"""Checks the trainer's token-drop and cell-merging augmentations (thin_image_tokens,
merge_image_tokens, MergeHook) without the rest of the trainer: kept counts, text untouched,
--token-bias raising the share of object patches, and merged rows that are their cells'
weighted means.
Needs only torch (the GPU machine's, or Debian's python3-torch):
    python3 eval/train/check_thin_tokens.py"""
import ast
import os

import torch

here = os.path.dirname(os.path.abspath(__file__))
tree = ast.parse(open(os.path.join(here, "train_llava.py")).read())
want = ("thin_image_tokens", "merge_image_tokens", "MergeHook")
fn = [n for n in tree.body if getattr(n, "name", None) in want]
ns = {"torch": torch}
exec(compile(ast.Module(fn, []), "train_llava.py", "exec"), ns)
thin = ns["thin_image_tokens"]

torch.manual_seed(0)
B, n_img, pre, post, IMG = 512, 576, 5, 7, 99
L = pre + n_img + post
ids = torch.full((B, L), 3)
ids[:, pre:pre + n_img] = IMG
att = torch.ones(B, L, dtype=torch.long)
objects = torch.zeros(B, n_img, dtype=torch.bool)
objects[:, ::10] = True  # one patch in ten shows an object
share = {}
for bias in (0.0, 32.0):
    a, pos = thin(ids, att, IMG, 1.0, 64, 64, objects, bias)
    kept = a[:, pre:pre + n_img].bool()
    assert (kept.sum(1) == 64).all(), "a thinned row must keep exactly 64 image tokens"
    assert (a[:, :pre] == 1).all() and (a[:, pre + n_img:] == 1).all(), "text was masked"
    assert pos.shape == (B, L)
    share[bias] = float(((kept & objects).sum(1).float() / 64).mean())
assert abs(share[0.0] - 0.1) < 0.02, f"uniform draws keep objects at {share[0.0]:.3f}, not 0.1"
assert share[32.0] > 0.18, f"--token-bias 32 kept objects at only {share[32.0]:.3f}"
a, _ = thin(ids, att, IMG, 0.0, 64, 64, objects, 32.0)
assert (a == 1).all(), "p = 0 thinned a row"
print(f"ok: object share among kept tokens {share[0.0]:.3f} uniform, {share[32.0]:.3f} with "
      "--token-bias 32 (half the rows biased)")

# merging: 16 rows of a 6x6 grid, every row merged (p = 1), features = the patch index
side, n = 6, 36
B, L = 64, pre + n + post
ids = torch.full((B, L), 3)
ids[:, pre:pre + n] = IMG
att = torch.ones(B, L, dtype=torch.long)
objects = torch.zeros(B, n, dtype=torch.bool)
objects[:, 7] = True
att[0, pre + 3] = 0  # a thinned row is not merged again
a, pos, mix, rows = ns["merge_image_tokens"](ids, att, IMG, 1.0, side, objects, 32.0)
assert not rows[0] and rows[1:].all(), "merged rows: every whole row, and only those"
assert (a[:, :pre] == 1).all() and (a[:, pre + n:] == 1).all(), "text was masked"
kept = a[1:, pre:pre + n].sum(1)
assert set(kept.tolist()) <= {9, 4}, f"cells of 2, 3 or 4 patches a side: {set(kept.tolist())}"
x = torch.arange(n, dtype=torch.float32).view(1, n, 1).expand(B, n, 1).contiguous()
hook = ns["MergeHook"]()
hook.mix = mix
y = hook(None, None, x)
assert hook.raw is x, "the hook keeps the unmerged rows"
for b in range(1, B):
    for i in a[b, pre:pre + n].nonzero().flatten().tolist():
        cell = mix[b, i].nonzero().flatten()
        assert abs(float(mix[b, i].sum()) - 1) < 1e-5, "a merged row's weights sum to 1"
        assert abs(float(y[b, i, 0]) - float((mix[b, i] * x[b, :, 0]).sum())) < 1e-4
        if 7 in cell.tolist():
            assert i == 7, "the object patch carries its cell"
            assert float(mix[b, i, 7]) >= float(mix[b, i, cell[0]]), "objects weigh more"
assert torch.equal(y[0], x[0]), "an unmerged row's features are untouched"
print(f"ok: merged rows keep {sorted(set(kept.tolist()))} cells, weighted cell means")
