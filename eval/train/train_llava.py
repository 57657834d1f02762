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
import subprocess
import sys
import time
from multiprocessing import Pool

import numpy as np
import torch
from PIL import Image
from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_bpe import train_llama_bpe  # noqa: E402

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
TEMPLATE = "USER: <image>\n{q} ASSISTANT:"


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def generate(shapes, work, split, count):
    out = os.path.join(work, split)
    if not os.path.exists(os.path.join(out, f"{split}.jsonl")):
        subprocess.run([shapes, "--out", out, "--split", split, "--count", str(count),
                        "--jobs", str(os.cpu_count() or 8), "-q"], check=True)
    items = [json.loads(l) for l in open(os.path.join(out, f"{split}.jsonl"))]
    for it in items:
        it["image"] = os.path.join(out, it["image"])
    return items


def load_png(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def load_images(items):
    paths = sorted({it["image"] for it in items})
    with Pool(os.cpu_count() or 8) as pool:
        arrays = pool.map(load_png, paths, chunksize=64)
    index = {p: i for i, p in enumerate(paths)}
    return np.stack(arrays), index


def train_tokenizer(items, vocab_size):
    # questions, answers and the template words as separate lines, so no merge spans the
    # "ASSISTANT:" / answer boundary and the prompt stays a token prefix of prompt + answer
    lines = [it["question"] for it in items[:50000]] + [it["answer"] for it in items[:50000]]
    lines += ["USER:", "ASSISTANT:"] * 100
    return train_llama_bpe(lines, vocab_size)


def encode(tok, items, n_img, image_id):
    """input ids with <image> expanded like LlavaProcessor, and the answer span for the loss."""
    seqs = []
    for it in items:
        prompt = TEMPLATE.format(q=it["question"])
        full = prompt + " " + it["answer"]
        p_ids = tok(prompt)["input_ids"]
        f_ids = tok(full)["input_ids"] + [tok.eos_token_id]
        if f_ids[:len(p_ids)] != p_ids:
            raise SystemExit(f"prompt is not a token prefix of prompt+answer: {full!r}")
        k = p_ids.index(image_id)
        ids = f_ids[:k] + [image_id] * n_img + f_ids[k + 1:]
        seqs.append((ids, len(p_ids) - 1 + n_img))
    return seqs


def batch(seqs, idx, pad_id, device, fixed=0):
    n = max(fixed, max(len(seqs[i][0]) for i in idx))
    ids = torch.full((len(idx), n), pad_id, dtype=torch.long)
    lab = torch.full((len(idx), n), -100, dtype=torch.long)
    att = torch.zeros((len(idx), n), dtype=torch.long)
    for r, i in enumerate(idx):
        s, p = seqs[i]
        ids[r, :len(s)] = torch.tensor(s)
        att[r, :len(s)] = 1
        lab[r, p:len(s)] = torch.tensor(s[p:])
    return ids.to(device), att.to(device), lab.to(device)


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
def evaluate(model, tok, items, images_u8, index, mean, std, n_img, image_id, device, bs=64):
    model.eval()
    correct, per = 0, {}
    for s in range(0, len(items), bs):
        chunk = items[s:s + bs]
        prompts = []
        for it in chunk:
            p = tok(TEMPLATE.format(q=it["question"]))["input_ids"]
            k = p.index(image_id)
            prompts.append(p[:k] + [image_id] * n_img + p[k + 1:])
        n = max(len(p) for p in prompts)
        ids = torch.full((len(chunk), n), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        for r, p in enumerate(prompts):  # left padding for generation
            ids[r, n - len(p):] = torch.tensor(p)
            att[r, n - len(p):] = 1
        pv = pixels(images_u8, torch.tensor([index[it["image"]] for it in chunk], device=device),
                    mean, std)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device),
                                 pixel_values=pv, max_new_tokens=4, do_sample=False)
        for it, o in zip(chunk, out[:, n:]):
            pred = tok.decode(o, skip_special_tokens=True).strip().lower().rstrip(".")
            ok = pred == it["answer"]
            correct += ok
            t = per.setdefault(it["type"], [0, 0])
            t[0] += ok
            t[1] += 1
    model.train()
    return correct / max(1, len(items)), {k: v[0] / v[1] for k, v in per.items()}


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
    ap.add_argument("--vision-lr-mult", type=float, default=1.0,
                    help="learning-rate factor for the vision tower and projector")
    ap.add_argument("--easy-frac", type=float, default=0.0,
                    help="share of the steps (from the start) drawn only from images with at "
                         "most 3 objects: a curriculum so the image pathway learns on clear "
                         "scenes before cluttered ones")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
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
    assert all(it["split"] == "train" for it in train), "test data in the training set"
    log(f"data: {len(train)} train / {len(test)} test questions in {time.time() - t0:.0f}s")
    imgs, index = load_images(train)
    timgs, tindex = load_images(test)
    images_u8 = torch.from_numpy(imgs).to(device)
    test_u8 = torch.from_numpy(timgs).to(device)
    log(f"images on the GPU: {images_u8.shape} {test_u8.shape} at {time.time() - t0:.0f}s")

    tok = train_tokenizer(train, 1024)
    image_id = tok.convert_tokens_to_ids("<image>")
    vcfg = CLIPVisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=6,
                            num_attention_heads=4, image_size=336, patch_size=14,
                            hidden_act="quick_gelu", projection_dim=256)
    n_img = (336 // 14) ** 2
    tcfg = LlamaConfig(vocab_size=len(tok), hidden_size=512, intermediate_size=1408,
                       num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
                       max_position_embeddings=8192, rms_norm_eps=1e-6, bos_token_id=1,
                       eos_token_id=2, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg, image_token_id=image_id,
                      vision_feature_layer=-2, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu")
    model = LlavaForConditionalGeneration(cfg).to(device)
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"vocab {len(tok)}")

    seqs = encode(tok, train, n_img, image_id)
    rows = torch.tensor([index[it["image"]] for it in train], device=device)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    core = getattr(model, "model", model)
    vis_params = list(core.vision_tower.parameters()) + \
        list(core.multi_modal_projector.parameters())
    vis_ids = {id(p) for p in vis_params}
    rest = [p for p in model.parameters() if id(p) not in vis_ids]
    groups = [dict(params=rest, mult=1.0), dict(params=vis_params, mult=args.vision_lr_mult)]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.05)
    fwd = torch.compile(model) if args.compile else model
    # one sequence length when compiled, so the graph is not rebuilt for every batch
    fixed = max(len(q[0]) for q in seqs) if args.compile else 0
    warm = set(t for t in args.warm_types.split(",") if t)
    easy = np.array([i for i, it in enumerate(train)
                     if (not warm or it["type"] in warm) and
                     (args.easy_objects <= 0 or it.get("n_objects", 9) <= args.easy_objects)])
    log(f"curriculum: {len(easy)} easy questions for the first {args.easy_frac:.0%} of the steps")
    budget = args.minutes * 60
    planned, warm = 100000, 150
    losses, step, t_train = [], 0, time.time()
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
        if step < args.easy_frac * planned and len(easy):
            idx = easy[np.random.randint(0, len(easy), size=args.batch)]
        else:
            idx = np.random.randint(0, len(seqs), size=args.batch)
        ids, att, lab = batch(seqs, idx, tok.pad_token_id, device, fixed)
        pv = pixels(images_u8, rows[torch.from_numpy(idx).to(device)], mean, std)
        if step == 0 and args.check:
            pipeline_check(model, tok, train, idx, ids, att, lab, pv, mean, std, image_id, n_img)
        if args.gap_every and step % args.gap_every == 0 and step:
            own, rolled = image_gap(model, ids, att, lab, pv)
            log(f"step {step} image gap: loss {own:.4f} with own images, {rolled:.4f} rolled")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            try:
                loss = fwd(input_ids=ids, attention_mask=att, pixel_values=pv, labels=lab).loss
            except Exception as e:  # compilation trouble must not cost the run
                if fwd is model:
                    raise
                log(f"torch.compile failed ({type(e).__name__}: {e}); continuing eagerly")
                fwd = model
                loss = fwd(input_ids=ids, attention_mask=att, pixel_values=pv, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.detach())  # no host sync per step
        if step % 100 == 0:
            losses = [float(x) for x in losses]
            log(f"step {step} loss {np.mean(losses[-100:]):.4f} lr {lr:.2e}")
        step += 1
    losses = [float(x) for x in losses]
    log(f"trained {step} steps in {time.time() - t_train:.0f}s")

    acc, per = evaluate(model, tok, test, test_u8, tindex, mean, std, n_img, image_id, device)
    log(f"test accuracy {acc:.3f}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items())))

    os.makedirs(args.out, exist_ok=True)
    ip = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                            resample=3, do_center_crop=True, do_convert_rgb=True,
                            image_mean=MEAN, image_std=STD)
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14,
                          vision_feature_select_strategy="default",
                          num_additional_image_tokens=1)
    model.to(torch.bfloat16).save_pretrained(args.out, max_shard_size="15MB")
    proc.save_pretrained(args.out)
    report = dict(steps=step, batch=args.batch, lr=args.lr, minutes=args.minutes,
                  vision_lr_mult=args.vision_lr_mult, easy_frac=args.easy_frac,
                  compile=args.compile, check=args.check,
                  train_questions=len(train), test_questions=len(test),
                  test_accuracy=acc, per_type=per, loss_every_100=[float(np.mean(losses[i:i + 100]))
                                                                    for i in range(0, len(losses), 100)],
                  torch=torch.__version__, seconds=time.time() - t0)
    json.dump(report, open(os.path.join(args.out, "train_report.json"), "w"), indent=1)
    log(f"saved to {args.out}: {sorted(os.listdir(args.out))}")


if __name__ == "__main__":
    sys.exit(main())
