#!/usr/bin/env python3
"""Trains prunelm's reference model from scratch on ShapesVQA, on one GPU, in minutes.

A real `LlavaForConditionalGeneration` in the llava-1.5 shape (CLIP ViT at 336 px with patch 14,
so 576 visual tokens; a two-layer GELU projector; a Llama decoder), made small, with its own
Llama-style byte-fallback BPE tokenizer trained here. The training data is the ShapesVQA train
split made by `prunelm-shapes`; the test split is only read for the final evaluation.

    python3 eval/train/train_llava.py --shapes BIN --work DIR --out CKPT [--minutes 5]

Writes CKPT (save_pretrained: safetensors shards under 16 MB, tokenizer.json, processor config)
and CKPT/train_report.json (loss curve, accuracy per question type on the test split).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import targets  # noqa: E402
from train_data import (batch, encode, generate, load_images, long_tasks,  # noqa: E402
                        prompt_of, train_tokenizer)

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def pixels(images_u8, rows, mean, std):
    x = images_u8[rows].permute(0, 3, 1, 2).float().div_(255)
    return (x - mean) / std


def pipeline_check(model, tok, train, idx, ids, att, lab, pv, mean, std, image_id, n_img):
    """--check: one batch through the real model, asserting the image reaches the loss."""
    core = getattr(model, "model", model)
    model.eval()
    seen = {}

    def grab(mod, args, kwargs):
        seen["emb"] = kwargs.get("inputs_embeds")
    h = core.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    out = model(input_ids=ids, attention_mask=att, pixel_values=pv, labels=lab)
    h.remove()
    f = core.get_image_features(pixel_values=pv)
    f = getattr(f, "pooler_output", f)
    f = torch.stack(list(f)) if isinstance(f, (list, tuple)) else f
    emb = seen["emb"]
    at_img = emb[ids == image_id].view(ids.shape[0], n_img, -1)
    log(f"check: image features {tuple(f.shape)}, merged at image positions max |diff| "
        f"{(at_img - f.to(at_img.dtype)).abs().max().item():.2e}, feature rms "
        f"{f.float().pow(2).mean().sqrt().item():.4f} vs text embedding rms "
        f"{emb[ids != image_id].float().pow(2).mean().sqrt().item():.4f}")
    assert (ids == image_id).sum(1).eq(n_img).all(), "wrong number of image tokens"
    assert torch.allclose(at_img.float(), f.float(), atol=1e-4), "image features not merged"
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    vis = [(n, p) for n, p in core.vision_tower.named_parameters()]
    zero = [n for n, p in vis if p.grad is None or p.grad.abs().sum() == 0]
    gn = sum(float(p.grad.norm()) ** 2 for n, p in vis if p.grad is not None) ** 0.5
    pn = sum(float(p.grad.norm()) ** 2 for p in core.multi_modal_projector.parameters()) ** 0.5
    log(f"check: grad norm vision {gn:.3e}, projector {pn:.3e}; {len(zero)}/{len(vis)} vision "
        f"tensors without gradient (expected: the last layer and post_layernorm, unused "
        f"with vision_feature_layer=-2): {zero[:4]}")
    assert gn > 0 and pn > 0, "no gradient reaches the vision tower"
    model.zero_grad(set_to_none=True)
    for r in range(min(4, len(idx))):
        it = train[idx[r]]
        got = tok.decode(ids[r][lab[r] != -100]).strip()
        want = it["answer"] + tok.eos_token
        assert got.replace(" ", "") == want.replace(" ", ""), (got, want)
        img = np.asarray(Image.open(it["image"]).convert("RGB"), dtype=np.float32)
        back = ((pv[r] * std[0] + mean[0]) * 255).permute(1, 2, 0).float().cpu().numpy()
        assert np.abs(back - img).max() < 1.0, f"pixels of row {r} are not {it['image']}"
    log("check: labels are the answer tokens + </s>; pixels match the image files")
    model.train()


@torch.no_grad()
def image_gap(model, ids, att, lab, pv):
    """loss with each row's own image vs with the batch's images rolled by one row: a gap
    near zero means the decoder ignores the image."""
    model.eval()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a = model(input_ids=ids, attention_mask=att, pixel_values=pv, labels=lab).loss.item()
        b = model(input_ids=ids, attention_mask=att, pixel_values=pv.roll(1, 0),
                  labels=lab).loss.item()
    model.train()
    return a, b


@torch.no_grad()
def evaluate(model, tok, items, images_u8, index, mean, std, n_img, image_id, device, bs=64,
             max_new=4, preds=None):
    """Greedy answers, exact match after lower-casing and dropping a final period (as prunelm
    eval scores them); items with a context are long-context tasks, with or without an image.
    float32 compute (no autocast) on the weights as saved, like prunelm on the CPU, so the two
    engines' answers can be compared item by item (preds collects them)."""
    model.eval()
    correct, per = 0, {}
    for s in range(0, len(items), bs):
        chunk = items[s:s + bs]
        prompts = []
        for it in chunk:
            p = tok(prompt_of(it))["input_ids"]
            if "image" in it:
                k = p.index(image_id)
                p = p[:k] + [image_id] * n_img + p[k + 1:]
            prompts.append(p)
        n = max(len(p) for p in prompts)
        ids = torch.full((len(chunk), n), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        for r, p in enumerate(prompts):  # left padding for generation
            ids[r, n - len(p):] = torch.tensor(p)
            att[r, n - len(p):] = 1
        pv = None
        if "image" in chunk[0]:
            pv = pixels(images_u8, torch.tensor([index[it["image"]] for it in chunk],
                                                device=device), mean, std)
        out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device),
                             pixel_values=pv, max_new_tokens=max_new, do_sample=False)
        for it, o in zip(chunk, out[:, n:]):
            pred = tok.decode(o, skip_special_tokens=True).strip().lower().rstrip(".")
            ok = pred == it["answer"]
            if preds is not None:
                preds.append(dict(id=it["id"], type=it["type"], answer=it["answer"],
                                  prediction=pred, correct=bool(ok)))
            correct += ok
            t = per.setdefault(it["type"], [0, 0])
            t[0] += ok
            t[1] += 1
    model.train()
    return correct / max(1, len(items)), {k: v[0] / v[1] for k, v in per.items()}


def thin_image_tokens(ids, att, image_id, p, lo, hi, objects=None, bias=0.0):
    """Token-drop augmentation (--token-drop): in a share p of the rows, keep a random lo..hi of
    the image tokens and mask the rest out of attention; half of those rows also renumber the
    positions over what is kept (as pruning before the decoder does), the other half keep the
    original positions (as pruning inside it does). With objects ([B, n_img] bool: the patches
    that show an object) and bias > 1 (--token-bias), half of the thinned rows draw what they
    keep with each object patch weighing 1..bias times a background one (log-uniform, weighted
    sampling without replacement, Efraimidis & Spirakis), as importance-based pruning keeps
    objects over background: the model must then count objects by what it sees, not by how
    dense they are among the kept tokens. Returns the new mask and position ids."""
    B, L = ids.shape
    dev = ids.device
    img = ids == image_id
    rows = torch.rand(B, device=dev) < p
    keep = torch.randint(lo, hi + 1, (B,), device=dev)
    # a key for each image position of a row, the largest kept; text positions rank last
    key = torch.rand(B, L, device=dev).clamp(min=1e-12).log()
    if objects is not None and bias > 1:
        w = torch.ones(B, L, device=dev)
        per_row = bias ** torch.rand(B, 1, device=dev)  # log-uniform in 1..bias
        per_row = torch.where(torch.rand(B, 1, device=dev) < 0.5, per_row,
                              torch.ones_like(per_row))
        obj = torch.zeros(B, L, dtype=torch.bool, device=dev)
        obj[img] = objects.flatten()  # image positions in order, n_img a row
        w = torch.where(obj, per_row.expand(B, L), w)
        key = key / w
    rank = (-key).masked_fill(~img, float("inf")).argsort(1).argsort(1)
    drop = img & rows[:, None] & (rank >= keep[:, None])
    att = att.masked_fill(drop, 0)
    renumber = rows & (torch.rand(B, device=dev) < 0.5)
    gaps = torch.arange(L, device=dev).expand(B, L)
    packed = (att.cumsum(1) - 1).clamp(min=0)
    return att, torch.where(renumber[:, None], packed, gaps)


def merge_image_tokens(ids, att, image_id, p, side, objects=None, bias=0.0):
    """Cell-merging augmentation (--token-merge): in a share p of the rows whose image tokens
    were not thinned, cut the side x side patch grid into cells of 2, 3 or 4 patches a side
    (one size a row, drawn uniformly) and replace each cell by one token: the weighted mean of
    its patches' projected features, written at the cell's heaviest patch, the rest masked out.
    A patch weighs 1, an object patch 1..bias (log-uniform a row, as --token-bias) when objects
    are given: the importance-weighted cell means that recycling prunes (VFlowOpt's grid cells,
    VisionZip's and SparseVLM's merged tokens) feed the decoder, which it must read without
    counting a merged object patch as more objects. Half the rows renumber their positions.
    Returns the mask, the position ids, mix ([B, n, n]: the projector's output x becomes
    mix @ x, MergeHook) and which rows merged."""
    B, L = ids.shape
    n = side * side
    dev = ids.device
    img = ids == image_id
    whole = (att * img).sum(1) == n
    rows = whole & (torch.rand(B, device=dev) < p)
    pos = torch.arange(L, device=dev).expand(B, L)
    m = torch.randint(2, 5, (B, 1), device=dev)
    y = torch.arange(n, device=dev) // side
    x = torch.arange(n, device=dev) % side
    cs = (side + m - 1) // m  # cells a side
    cell = (y[None] // m) * cs + x[None] // m  # [B, n]
    w = torch.ones(B, n, device=dev)
    if objects is not None and bias > 1:
        w = torch.where(objects, (bias ** torch.rand(B, 1, device=dev)).expand(B, n), w)
    # the heaviest patch of each cell (ties broken at random) carries the cell
    key = w * (1 + 1e-3 * torch.rand(B, n, device=dev))
    same = cell[:, :, None] == cell[:, None, :]  # [B, n, n]
    best = (key[:, None, :] * same).argmax(2)  # each patch's cell's carrier
    rep = best == torch.arange(n, device=dev)[None]
    mix = same * w[:, None, :]
    mix = mix / mix.sum(2, keepdim=True)
    eye = torch.eye(n, device=dev).expand(B, n, n)
    mix = torch.where((rows[:, None] & rep)[:, :, None], mix, eye)
    drop = torch.zeros(B, L, dtype=torch.bool, device=dev)
    drop[img] = (rows[:, None] & ~rep).flatten()
    att = att.masked_fill(drop, 0)
    renumber = rows & (torch.rand(B, device=dev) < 0.5)
    packed = (att.cumsum(1) - 1).clamp(min=0)
    return att, torch.where(renumber[:, None], packed, pos), mix, rows


class MergeHook:
    """A forward hook on the projector that applies merge_image_tokens' mix while one is set
    (the training loop sets it around its forward only; a tensor every step, so a compiled
    forward is not specialised on it); raw keeps the unmerged features for the per-patch
    heads."""

    def __init__(self):
        self.mix, self.raw = None, None

    def __call__(self, module, inputs, out):
        self.raw = out
        if self.mix is None:
            return out
        mix = self.mix.to(out.dtype)
        return torch.bmm(mix, out.reshape(mix.shape[0], mix.shape[1], -1)).reshape(out.shape)


def aux_loss(heads, feats, labels):
    """Cross-entropy of the per-patch heads (targets.py) on the projected image features;
    patches that hold an object weigh 4x, since most patches are background."""
    logits = heads(feats.float())
    ns, nc = targets.N_SHAPE, targets.N_COLOUR
    lab = labels.long()
    w = 1.0 + 3.0 * (lab[:, 0] > 0).float()
    total = 0.0
    for lo, hi, k in ((0, ns, 0), (ns, ns + nc, 1), (ns + nc, logits.shape[-1], 2)):
        ce = torch.nn.functional.cross_entropy(logits[..., lo:hi].flatten(0, 1),
                                               lab[:, k].flatten(), reduction="none")
        total = total + (ce * w.flatten()).sum() / w.sum()
    return total


def long_losses(logits, ids, att, lab, image_id):
    """Mean cross-entropy over the answer tokens, and over the context's text tokens (image
    tokens and padding excluded), each normalised on its own so thousands of context tokens do
    not drown the few answer tokens."""
    tgt, ans = ids[:, 1:], lab[:, 1:] != -100
    ctx = (att[:, 1:] == 1) & ~ans & (tgt != image_id)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), tgt.flatten(),
                                           reduction="none").view_as(tgt)
    return (ce * ans).sum() / ans.sum().clamp(min=1), (ce * ctx).sum() / ctx.sum().clamp(min=1)


def patch_accuracy(heads, feats, labels):
    """Share of object patches whose shape and colour the heads get right."""
    with torch.no_grad():
        logits = heads(feats.float())
        ns, nc = targets.N_SHAPE, targets.N_COLOUR
        obj = labels[:, 0] > 0
        ok = (logits[..., :ns].argmax(-1) == labels[:, 0]) & \
             (logits[..., ns:ns + nc].argmax(-1) == labels[:, 1])
        return float(ok[obj].float().mean()) if obj.any() else float("nan")


def image_features(out, n_img):
    """The projected image features of a forward (what the decoder reads), [B, n_img, D]."""
    f = getattr(out, "image_hidden_states", None)
    f = getattr(f, "pooler_output", f)
    if f is None:
        raise SystemExit("the model output has no image_hidden_states: this transformers "
                         "version is not supported by --aux-weight (use --aux-weight 0)")
    f = torch.cat(list(f)) if isinstance(f, (list, tuple)) else f
    return f.reshape(-1, n_img, f.shape[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", required=True, help="the prunelm-shapes executable")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-images", type=int, default=40000)
    ap.add_argument("--test-images", type=int, default=300)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--text-size", default="384,6,6,2,1024",
                    help="the decoder from scratch: hidden,layers,heads,kv_heads,intermediate "
                         "(384 wide keeps the bf16 checkpoint near 33 MB, small enough to bundle "
                         "and still travel to the GPU machine with a build)")
    ap.add_argument("--vision-size", default="256,6,4,1024",
                    help="the CLIP tower from scratch: hidden,layers,heads,intermediate")
    ap.add_argument("--vision-lr-mult", type=float, default=1.0,
                    help="learning-rate factor for the vision tower and projector")
    ap.add_argument("--aux-weight", type=float, default=1.0,
                    help="weight of the per-patch shape/colour/character loss on the projected "
                         "image features (targets.py; 0: off)")
    ap.add_argument("--caption-frac", type=float, default=0.25,
                    help="share of each image batch that asks for a caption of the whole scene")
    ap.add_argument("--long-every", type=int, default=4,
                    help="every N-th step trains on long-context text tasks (0: never)")
    ap.add_argument("--long-batch", type=int, default=16,
                    help="sequences per long step at the longest length; shorter lengths of the "
                         "curriculum take more, up to --long-step-tokens tokens a step")
    ap.add_argument("--long-step-tokens", type=int, default=32768,
                    help="tokens per long step while the curriculum caps the length: 256 "
                         "pass keys of 128 tokens teach retrieval far faster than 16")
    ap.add_argument("--context-lm", type=float, default=0.3,
                    help="weight of a language-model loss on the long contexts' own text (the "
                         "answer's loss has weight 1): a dense signal that grows the induction "
                         "heads retrieval needs")
    ap.add_argument("--long-train", type=int, default=12000,
                    help="long-context training items (pass key, multi-key, dialogue)")
    ap.add_argument("--long-lengths", default="128,256,512,1024,2048,4096",
                    help="context lengths (prunelm-shapes --tokens) of the long training items")
    ap.add_argument("--long-ramp", type=float, default=0.5,
                    help="length curriculum: the longest context allowed grows from the "
                         "shortest length to the longest over this share of the steps (0: all "
                         "lengths from the start); retrieval is found on short contexts first")
    ap.add_argument("--long-test", type=int, default=100,
                    help="test items per long task, at 4096 tokens (0: skip)")
    ap.add_argument("--init", default="",
                    help="start from this saved checkpoint (its weights and tokenizer) instead "
                         "of from scratch: a second run continues a first")
    ap.add_argument("--easy-frac", type=float, default=0.0,
                    help="share of the steps (from the start) drawn only from images with at "
                         "most 3 objects: a curriculum so the image pathway learns on clear "
                         "scenes before cluttered ones")
    ap.add_argument("--token-drop", type=float, default=0.0,
                    help="share of the image rows trained with most image tokens masked out "
                         "(thin_image_tokens): teaches answering from the subsets visual "
                         "pruning leaves (issue 6); 0: off")
    ap.add_argument("--token-bias", type=float, default=0.0,
                    help="object patches weigh up to this many times a background patch in "
                         "half of the thinned rows (thin_image_tokens; needs --aux-weight's "
                         "patch labels); 0: uniform draws")
    ap.add_argument("--token-merge", type=float, default=0.0,
                    help="share of the rows not thinned whose image tokens are merged into "
                         "cell means (merge_image_tokens, weighted by --token-bias); 0: off")
    ap.add_argument("--token-keep", default="32,192",
                    help="lo,hi: image tokens a thinned row keeps (uniform)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the image steps (the long steps run eagerly)")
    ap.add_argument("--warm-types", default="",
                    help="comma-separated question types the --easy-frac warm-up draws from "
                         "(e.g. colour,existence: a warm-up ordered by question type)")
    ap.add_argument("--easy-objects", type=int, default=3,
                    help="warm-up images have at most this many objects (0: any)")
    ap.add_argument("--check", action="store_true",
                    help="before training, assert on one batch that the image features are "
                         "merged at the image positions, that the vision tower gets gradient, "
                         "and that labels and pixels match the items (see NOTES.md)")
    ap.add_argument("--gap-every", type=int, default=500,
                    help="log the loss with rolled images next to the true loss every N steps "
                         "(0: never); equal losses mean the decoder ignores the image")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True

    t0 = time.time()
    train = generate(args.shapes, args.work, "train", args.train_images)
    test = generate(args.shapes, args.work, "test", args.test_images)
    lengths = [int(x) for x in args.long_lengths.split(",") if x]
    n = args.long_train
    long_train = long_tasks(args, "train", dict(passkey=n // 2, multikey=n // 4, dialogue=n // 4),
                            lengths) if args.long_every else []
    n = args.long_test
    long_test = long_tasks(args, "test", dict(passkey=n, multikey=n, dialogue=n),
                           [4096]) if n else []
    assert all(it["split"] == "train" for it in train + long_train), "test data in training"
    log(f"data: {len(train)} train / {len(test)} test questions, {len(long_train)} / "
        f"{len(long_test)} long-context items in {time.time() - t0:.0f}s")
    # every image once, with its scene: captions and per-patch labels
    scenes = {}
    for it in train:
        scenes.setdefault(it["image"], it)
    if args.aux_weight > 0 or args.caption_frac > 0:
        missing = [p for p, it in scenes.items() if "objects" not in it]
        if missing:
            raise SystemExit(f"{missing[0]}: no 'objects' in the JSONL (an old prunelm-shapes?); "
                             "--aux-weight and --caption-frac need them")
    captions = [dict(image=p, question=targets.CAPTION_QUESTION, type="caption",
                     answer=targets.caption(it["objects"], it.get("glyph")))
                for p, it in scenes.items()] if args.caption_frac > 0 else []
    imgs, index = load_images(train, os.path.join(args.work, "train_images.npy"))
    timgs, tindex = load_images(test, os.path.join(args.work, "test_images.npy"))
    dial = [it for it in long_train + long_test if "image" in it]
    dimgs, dindex = load_images(dial) if dial else (np.zeros((1, 336, 336, 3), np.uint8), {})
    images_u8 = torch.from_numpy(np.ascontiguousarray(imgs)).to(device)
    test_u8 = torch.from_numpy(np.ascontiguousarray(timgs)).to(device)
    dial_u8 = torch.from_numpy(dimgs).to(device)
    labels_u8 = None
    if args.aux_weight > 0:
        lab = np.zeros((len(index), 3, targets.GRID * targets.GRID), np.uint8)
        for p, it in scenes.items():
            lab[index[p]] = targets.patch_labels(it["objects"], it.get("glyph"))
        labels_u8 = torch.from_numpy(lab).to(device)
    log(f"images on the GPU: {images_u8.shape} {test_u8.shape} {dial_u8.shape} at "
        f"{time.time() - t0:.0f}s")

    n_img = (336 // 14) ** 2
    if args.init:
        tok = PreTrainedTokenizerFast.from_pretrained(args.init)
        model = LlavaForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32)
        model = model.to(device)
        image_id = model.config.image_token_id
        log(f"continuing from {args.init}")
    else:
        tok = train_tokenizer(train, captions, long_train, args.vocab)
        image_id = tok.convert_tokens_to_ids("<image>")
        vh, vl, vn, vi = (int(x) for x in args.vision_size.split(","))
        th, tl, tn, tk, ti = (int(x) for x in args.text_size.split(","))
        vcfg = CLIPVisionConfig(hidden_size=vh, intermediate_size=vi, num_hidden_layers=vl,
                                num_attention_heads=vn, image_size=336, patch_size=14,
                                hidden_act="quick_gelu", projection_dim=vh)
        tcfg = LlamaConfig(vocab_size=len(tok), hidden_size=th, intermediate_size=ti,
                           num_hidden_layers=tl, num_attention_heads=tn, num_key_value_heads=tk,
                           max_position_embeddings=8192, rms_norm_eps=1e-6, bos_token_id=1,
                           eos_token_id=2, pad_token_id=tok.pad_token_id,
                           tie_word_embeddings=False)
        cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg, image_token_id=image_id,
                          vision_feature_layer=-2, vision_feature_select_strategy="default",
                          projector_hidden_act="gelu")
        model = LlavaForConditionalGeneration(cfg).to(device)
    d_text = model.config.text_config.hidden_size
    heads = torch.nn.Linear(d_text, targets.N_SHAPE + targets.N_COLOUR + targets.N_CHAR).to(device)
    heads_path = os.path.join(args.work, "aux_heads.pt")
    if args.init and os.path.exists(heads_path):
        heads.load_state_dict(torch.load(heads_path))
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"vocab {len(tok)}")

    seqs = encode(tok, train, n_img, image_id)
    cap_seqs = encode(tok, captions, n_img, image_id)
    long_seqs = encode(tok, long_train, n_img, image_id)
    if long_seqs:
        lens = [len(q[0]) for q in long_seqs]
        log(f"long items: {len(long_seqs)}, tokens mean {np.mean(lens):.0f} max {max(lens)}")
    rows = torch.tensor([index[it["image"]] for it in train], device=device)
    cap_rows = torch.tensor([index[it["image"]] for it in captions], device=device)
    long_rows = torch.tensor([dindex.get(it.get("image"), 0) for it in long_train], device=device)
    long_text = np.array([i for i, it in enumerate(long_train) if "image" not in it])
    long_dial = np.array([i for i, it in enumerate(long_train) if "image" in it])
    long_tokens = np.array([it["tokens"] for it in long_train])
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    core = getattr(model, "model", model)
    vis_params = list(core.vision_tower.parameters()) + \
        list(core.multi_modal_projector.parameters()) + list(heads.parameters())
    vis_ids = {id(p) for p in vis_params}
    rest = [p for p in model.parameters() if id(p) not in vis_ids]
    groups = [dict(params=rest, mult=1.0), dict(params=vis_params, mult=args.vision_lr_mult)]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.05)
    merge, side = MergeHook(), 336 // 14
    if args.token_merge > 0:
        core.multi_modal_projector.register_forward_hook(merge)
    fwd = torch.compile(model) if args.compile else model
    n_cap = int(round(args.batch * args.caption_frac)) if cap_seqs else 0
    # one sequence length when compiled, so the graph is not rebuilt for every batch
    fixed = max(len(q[0]) for q in seqs + cap_seqs) if args.compile else 0
    warm = set(t for t in args.warm_types.split(",") if t)
    easy = np.array([i for i, it in enumerate(train)
                     if (not warm or it["type"] in warm) and
                     (args.easy_objects <= 0 or it.get("n_objects", 9) <= args.easy_objects)])
    log(f"curriculum: {len(easy)} easy questions for the first {args.easy_frac:.0%} of the steps")
    budget = args.minutes * 60
    planned, warm = 100000, 150
    losses, auxes, longs, step, t_train = [], [], [], 0, time.time()
    model.train()
    while True:
        el = time.time() - t_train
        if step == 20:
            el20 = el
        if step == 60:  # plan the schedule from the measured speed (after any compilation)
            rate = (el - el20) / 40
            planned = max(200, 60 + int((budget - el) / rate))
            log(f"{rate * 1000:.0f} ms/step: planning {planned} steps")
        if step >= planned or el > budget:
            break
        lr = args.lr * min(1, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1, step / planned)))
        for g in opt.param_groups:
            g["lr"] = lr * g["mult"]
        long_step = args.long_every and step % args.long_every == args.long_every - 1 and \
            len(long_seqs)
        if long_step:
            # a long-context step: pass key / multi-key (text only) or, every 4th, an image
            # followed by a long dialogue; eager, since their lengths vary
            dial_step = len(long_dial) and (step // args.long_every) % 4 == 3
            pool = long_dial if dial_step else long_text
            if args.long_ramp > 0:  # the length curriculum
                k = int(len(lengths) * min(1.0, step / (args.long_ramp * planned)))
                cap = lengths[min(k, len(lengths) - 1)]
                short = pool[long_tokens[pool] <= cap]
                pool = short if len(short) else pool
            else:
                cap = lengths[-1]
            n_long = min(256, max(args.long_batch, args.long_step_tokens // max(cap, 1)))
            idx = pool[np.random.randint(0, len(pool), size=n_long)]
            ids, att, lab = batch(long_seqs, idx, tok.pad_token_id, device)
            pv = pixels(dial_u8, long_rows[torch.from_numpy(idx).to(device)], mean, std) \
                if dial_step else None
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(input_ids=ids, attention_mask=att, pixel_values=pv).logits
            ans, ctx = long_losses(logits, ids, att, lab, image_id)
            loss = ans + args.context_lm * ctx
            longs.append(ans.detach())
        else:
            if step < args.easy_frac * planned and len(easy):
                idx = easy[np.random.randint(0, len(easy), size=args.batch - n_cap)]
            else:
                idx = np.random.randint(0, len(seqs), size=args.batch - n_cap)
            cidx = np.random.randint(0, len(cap_seqs), size=n_cap) if n_cap else idx[:0]
            pairs = [(seqs, i) for i in idx] + [(cap_seqs, i) for i in cidx]
            ids, att, lab = batch([src[i] for src, i in pairs], list(range(len(pairs))),
                                  tok.pad_token_id, device, fixed)
            extra, mix = {}, None
            img_rows = torch.cat([rows[torch.from_numpy(idx).to(device)],
                                  cap_rows[torch.from_numpy(cidx).to(device)]])
            # the patches that show an object (the per-patch labels), for --token-bias
            objects = labels_u8[img_rows, 0] > 0 if labels_u8 is not None else None
            if args.token_drop > 0:
                lo, hi = (int(v) for v in args.token_keep.split(","))
                att, extra["position_ids"] = thin_image_tokens(ids, att, image_id,
                                                               args.token_drop, lo, hi,
                                                               objects, args.token_bias)
            if args.token_merge > 0:
                att, pos, mix, merged = merge_image_tokens(ids, att, image_id,
                                                           args.token_merge, side, objects,
                                                           args.token_bias)
                old = extra.get("position_ids", torch.arange(ids.shape[1], device=device))
                extra["position_ids"] = torch.where(merged[:, None], pos, old)
            pv = pixels(images_u8, img_rows, mean, std)
            if step == 0 and args.check:
                pipeline_check(model, tok, train, idx, ids, att, lab, pv, mean, std, image_id,
                               n_img)
            if args.gap_every and step % args.gap_every == 0 and step:
                own, rolled = image_gap(model, ids, att, lab, pv)
                log(f"step {step} image gap: loss {own:.4f} with own images, {rolled:.4f} rolled")
            merge.mix = mix  # for this forward only, not the checks above
            with torch.autocast("cuda", dtype=torch.bfloat16):
                try:
                    out = fwd(input_ids=ids, attention_mask=att, pixel_values=pv, labels=lab,
                              **extra)
                except Exception as e:  # compilation trouble must not cost the run
                    if fwd is model:
                        raise
                    log(f"torch.compile failed ({type(e).__name__}: {e}); continuing eagerly")
                    fwd = model
                    out = fwd(input_ids=ids, attention_mask=att, pixel_values=pv, labels=lab,
                              **extra)
                merge.mix = None
                loss = out.loss
                if labels_u8 is not None:
                    feats = image_features(out, n_img) if merge.raw is None else \
                        merge.raw.reshape(-1, n_img, merge.raw.shape[-1])
                    plab = labels_u8[img_rows]
                    aux = aux_loss(heads, feats, plab)
                    loss = loss + args.aux_weight * aux
                    auxes.append(aux.detach())
                    if step % 500 == 0:
                        log(f"step {step} patch accuracy {patch_accuracy(heads, feats, plab):.3f}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(heads.parameters()), 1.0)
        opt.step()
        if not long_step:
            losses.append(out.loss.detach())  # no host sync per step
        if step % 100 == 0:
            losses = [float(x) for x in losses]
            msg = f"step {step} loss {np.mean(losses[-75:]):.4f}"
            if auxes:
                msg += f" aux {float(torch.stack(auxes[-75:]).mean()):.4f}"
            if longs:
                msg += f" long {float(torch.stack(longs[-25:]).mean()):.4f}"
            log(msg + f" lr {lr:.2e}")
        step += 1
    losses = [float(x) for x in losses]
    log(f"trained {step} steps in {time.time() - t_train:.0f}s")

    # save before evaluating, so a failure there does not lose the training
    os.makedirs(args.out, exist_ok=True)
    ip = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                            resample=3, do_center_crop=True, do_convert_rgb=True,
                            image_mean=MEAN, image_std=STD)
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14,
                          vision_feature_select_strategy="default",
                          num_additional_image_tokens=1)
    model.to(torch.bfloat16).save_pretrained(args.out, max_shard_size="15MB")
    model.float()
    proc.save_pretrained(args.out)
    # the llava-hf layout has preprocessor_config.json; transformers 5 folds the image processor
    # into processor_config.json, so it is written on its own too
    ip.save_pretrained(args.out)
    torch.save(heads.state_dict(), heads_path)
    log(f"saved to {args.out}: {sorted(os.listdir(args.out))}")

    # true float32 for the comparison with prunelm: TF32 matmuls keep 10 mantissa bits and
    # flip close answers (98% agreement with them on, run of 2026-11-23)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    preds = []
    acc, per = evaluate(model, tok, test, test_u8, tindex, mean, std, n_img, image_id, device,
                        preds=preds)
    log(f"test accuracy {acc:.3f}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items())))
    long_acc = {}
    for task in ("passkey", "multikey", "dialogue"):
        its = [it for it in long_test if it["type"] == task]
        if its:
            a, _ = evaluate(model, tok, its, dial_u8, dindex, mean, std, n_img, image_id, device,
                            bs=16, max_new=8, preds=preds)
            long_acc[task] = a
            log(f"{task} at 4096 tokens: {a:.3f} ({len(its)} items)")
    report = dict(steps=step, batch=args.batch, lr=args.lr, minutes=args.minutes,
                  vision_lr_mult=args.vision_lr_mult, easy_frac=args.easy_frac,
                  aux_weight=args.aux_weight, caption_frac=args.caption_frac,
                  long_every=args.long_every, long_lengths=lengths, init=args.init,
                  context_lm=args.context_lm, long_ramp=args.long_ramp,
                  compile=args.compile, check=args.check,
                  train_questions=len(train), test_questions=len(test),
                  test_accuracy=acc, per_type=per, long_accuracy_4096=long_acc,
                  loss_every_100=[float(np.mean(losses[i:i + 75]))
                                  for i in range(0, len(losses), 75)],
                  torch=torch.__version__, seconds=time.time() - t0)
    json.dump(report, open(os.path.join(args.out, "train_report.json"), "w"), indent=1)
    with open(os.path.join(args.work, "predictions.jsonl"), "w") as f:
        for p in preds:
            f.write(json.dumps(p) + "\n")
    log("report written")


if __name__ == "__main__":
    sys.exit(main())
