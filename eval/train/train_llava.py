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


def batch(seqs, idx, pad_id, device):
    n = max(len(seqs[i][0]) for i in idx)
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
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.05)
    budget = args.minutes * 60
    planned, warm = 100000, 150
    losses, step, t_train = [], 0, time.time()
    model.train()
    while True:
        el = time.time() - t_train
        if step == 40:  # plan the schedule from the measured speed
            planned = max(200, int(budget / (el / 40)))
            log(f"{el / 40 * 1000:.0f} ms/step: planning {planned} steps")
        if step >= planned or el > budget:
            break
        lr = args.lr * min(1, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1, step / planned)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = np.random.randint(0, len(seqs), size=args.batch)
        ids, att, lab = batch(seqs, idx, tok.pad_token_id, device)
        pv = pixels(images_u8, rows[torch.from_numpy(idx).to(device)], mean, std)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=att, pixel_values=pv, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0:
            log(f"step {step} loss {np.mean(losses[-100:]):.4f} lr {lr:.2e}")
        step += 1
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
                  train_questions=len(train), test_questions=len(test),
                  test_accuracy=acc, per_type=per, loss_every_100=[float(np.mean(losses[i:i + 100]))
                                                                    for i in range(0, len(losses), 100)],
                  torch=torch.__version__, seconds=time.time() - t0)
    json.dump(report, open(os.path.join(args.out, "train_report.json"), "w"), indent=1)
    log(f"saved to {args.out}: {sorted(os.listdir(args.out))}")


if __name__ == "__main__":
    sys.exit(main())
