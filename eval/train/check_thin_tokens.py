"""Checks the trainer's token-drop augmentation (thin_image_tokens) without the rest of the
trainer: kept counts, text untouched, and --token-bias raising the share of object patches.
Needs only torch (the GPU machine's, or Debian's python3-torch):
    python3 eval/train/check_thin_tokens.py"""
import ast
import os

import torch

here = os.path.dirname(os.path.abspath(__file__))
tree = ast.parse(open(os.path.join(here, "train_llava.py")).read())
fn = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "thin_image_tokens"]
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
