#!/usr/bin/env python3
"""CPU probe of the LLaVA training recipe, without transformers (this machine has no PyPI;
Debian's python3-torch 1.13 is enough).

A line-for-line re-implementation of what `LlavaForConditionalGeneration` computes for the
trainer's config: CLIP vision tower (conv patch embedding, CLS token, learned positions,
pre_layrnorm, pre-LN encoder layers with quick_gelu, hidden_states[-2], CLS dropped), the
two-layer GELU projector, masked_scatter into a Llama decoder (RMSNorm, RoPE, GQA, SwiGLU),
HF's shifted causal-LM loss, and the HF initialisations (CLIP's own init for the tower, normal
0.02 for Linear/Embedding elsewhere). Used to test whether a small model escapes the
"answer prior" plateau and which change makes it escape; see NOTES.md.

    python3 eval/train/cpu_probe.py --data /tmp/shd --steps 600 [--proj-ln] ...
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


class CLIPLayer(nn.Module):
    def __init__(s, d, heads, inter):
        super().__init__()
        s.h = heads
        s.ln1, s.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        s.q, s.k, s.v, s.o = (nn.Linear(d, d) for _ in range(4))
        s.fc1, s.fc2 = nn.Linear(d, inter), nn.Linear(inter, d)

    def forward(s, x):
        B, T, D = x.shape
        y = s.ln1(x)
        q, k, v = (m(y).view(B, T, s.h, D // s.h).transpose(1, 2) for m in (s.q, s.k, s.v))
        a = sdpa(q, k, v).transpose(1, 2).reshape(B, T, D)
        x = x + s.o(a)
        y = s.fc1(s.ln2(x))
        y = y * torch.sigmoid(1.702 * y)  # quick_gelu
        return x + s.fc2(y)


class CLIPVision(nn.Module):
    def __init__(s, d, layers, heads, inter, image, patch):
        super().__init__()
        s.patch = nn.Conv2d(3, d, patch, patch, bias=False)
        s.cls = nn.Parameter(torch.empty(d))
        n = (image // patch) ** 2 + 1
        s.pos = nn.Embedding(n, d)
        s.pre = nn.LayerNorm(d)
        s.layers = nn.ModuleList(CLIPLayer(d, heads, inter) for _ in range(layers))
        # CLIPPreTrainedModel._init_weights (initializer_range 0.02, factor 1)
        nn.init.normal_(s.cls, std=d ** -0.5)
        nn.init.normal_(s.patch.weight, std=0.02)
        nn.init.normal_(s.pos.weight, std=0.02)
        for l in s.layers:
            ins = d ** -0.5 * (2 * layers) ** -0.5
            for m in (l.q, l.k, l.v):
                nn.init.normal_(m.weight, std=ins)
            nn.init.normal_(l.o.weight, std=d ** -0.5)
            nn.init.normal_(l.fc1.weight, std=(2 * d) ** -0.5)
            nn.init.normal_(l.fc2.weight, std=ins)
            for m in (l.q, l.k, l.v, l.o, l.fc1, l.fc2):
                nn.init.zeros_(m.bias)

    def hidden_states(s, px):
        x = s.patch(px).flatten(2).transpose(1, 2)
        x = torch.cat([s.cls.expand(x.shape[0], 1, -1), x], 1) + s.pos.weight[None]
        x = s.pre(x)
        hs = [x]
        for l in s.layers:
            x = l(x)
            hs.append(x)
        return hs


class RMSNorm(nn.Module):
    def __init__(s, d, eps=1e-6):
        super().__init__()
        s.w, s.eps = nn.Parameter(torch.ones(d)), eps

    def forward(s, x):
        return s.w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + s.eps))


def sdpa(q, k, v, attn_mask=None):
    # F.scaled_dot_product_attention is torch >= 2.0; Debian's torch is 1.13
    w = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        w = w.masked_fill(~attn_mask, float("-inf"))
    return w.softmax(-1) @ v


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], -1)
    return x * cos + rot * sin


class LlamaLayer(nn.Module):
    def __init__(s, d, heads, kv, inter):
        super().__init__()
        s.h, s.kv, s.hd = heads, kv, d // heads
        s.n1, s.n2 = RMSNorm(d), RMSNorm(d)
        s.q = nn.Linear(d, d, bias=False)
        s.k = nn.Linear(d, kv * s.hd, bias=False)
        s.v = nn.Linear(d, kv * s.hd, bias=False)
        s.o = nn.Linear(d, d, bias=False)
        s.g, s.u = nn.Linear(d, inter, bias=False), nn.Linear(d, inter, bias=False)
        s.dn = nn.Linear(inter, d, bias=False)

    def forward(s, x, cos, sin, mask):
        B, T, D = x.shape
        y = s.n1(x)
        q = rope(s.q(y).view(B, T, s.h, s.hd).transpose(1, 2), cos, sin)
        k = rope(s.k(y).view(B, T, s.kv, s.hd).transpose(1, 2), cos, sin)
        v = s.v(y).view(B, T, s.kv, s.hd).transpose(1, 2)
        k = k.repeat_interleave(s.h // s.kv, 1)
        v = v.repeat_interleave(s.h // s.kv, 1)
        a = sdpa(q, k, v, attn_mask=mask)
        x = x + s.o(a.transpose(1, 2).reshape(B, T, D))
        y = s.n2(x)
        return x + s.dn(F.silu(s.g(y)) * s.u(y))


class MiniLlava(nn.Module):
    def __init__(s, vocab, image_id, vd=64, vl=2, vh=4, td=128, tl=2, th=4, tkv=2,
                 image=336, patch=14, feature_layer=-2, proj_ln=False):
        super().__init__()
        s.image_id, s.fl = image_id, feature_layer
        s.vision = CLIPVision(vd, vl, vh, 4 * vd, image, patch)
        s.p1, s.p2 = nn.Linear(vd, td), nn.Linear(td, td)
        s.proj_ln = nn.LayerNorm(vd) if proj_ln else None
        s.embed = nn.Embedding(vocab, td)
        s.layers = nn.ModuleList(LlamaLayer(td, th, tkv, int(2.75 * td)) for _ in range(tl))
        s.norm = RMSNorm(td)
        s.head = nn.Linear(td, vocab, bias=False)
        for m in [s.p1, s.p2, s.head, s.embed] + [x for l in s.layers for x in l.modules()
                                                  if isinstance(x, nn.Linear)]:
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        s.hd = td // th

    def image_features(s, px):
        f = s.vision.hidden_states(px)[s.fl][:, 1:]
        if s.proj_ln is not None:
            f = s.proj_ln(f)
        return s.p2(F.gelu(s.p1(f)))

    def forward(s, ids, att, px, labels, return_parts=False):
        emb = s.embed(ids)
        feats = s.image_features(px)
        m = (ids == s.image_id).unsqueeze(-1).expand_as(emb)
        emb = emb.masked_scatter(m, feats.to(emb.dtype))
        B, T, _ = emb.shape
        pos = torch.arange(T, dtype=torch.float)
        inv = 1.0 / (10000 ** (torch.arange(0, s.hd, 2, dtype=torch.float) / s.hd))
        fr = torch.outer(pos, inv)
        fr = torch.cat([fr, fr], -1)
        cos, sin = fr.cos()[None, None], fr.sin()[None, None]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        mask = causal[None, None] & att.bool()[:, None, None, :]
        x = emb
        for l in s.layers:
            x = l(x, cos, sin, mask)
        logits = s.head(s.norm(x))
        # HF ForCausalLMLoss: shift labels left by one, mean over non-ignored
        lab = F.pad(labels, (0, 1), value=-100)[:, 1:]
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), lab.reshape(-1),
                               ignore_index=-100)
        if return_parts:
            return loss, logits, emb, feats
        return loss


def build(data, n_items, types, image_size, n_test=0):
    items = [json.loads(l) for l in open(os.path.join(data, "train.jsonl"))]
    test = []
    if n_test:
        test = [json.loads(l) for l in open(os.path.join(data, "test.jsonl"))]
    if types:
        items = [it for it in items if it["type"] in types]
        test = [it for it in test if it["type"] in types]
    items = items[:n_items]
    test = test[:n_test]
    for it in test:
        it["heldout"] = True
    items = items + test
    words = sorted({w for it in items for w in (it["question"] + " " + it["answer"]).lower()
                    .replace("?", " ?").split()})
    vocab = {w: i + 4 for i, w in enumerate(words)}  # 0 pad 1 bos 2 eos 3 <image>
    paths = sorted({it["image"] for it in items})
    imgs = []
    for p in paths:
        im = Image.open(os.path.join(data, p)).convert("RGB")
        if image_size != im.size[0]:
            im = im.resize((image_size, image_size), Image.BICUBIC)
        imgs.append(np.asarray(im, dtype=np.uint8))
    imgs = torch.from_numpy(np.stack(imgs))
    row = {p: i for i, p in enumerate(paths)}
    return items, vocab, imgs, row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/shd")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--test", type=int, default=0, help="held-out test questions (test.jsonl)")
    ap.add_argument("--types", default="", help="comma list of question types to keep")
    ap.add_argument("--image", type=int, default=336)
    ap.add_argument("--patch", type=int, default=14)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vision-lr-mult", type=float, default=1.0)
    ap.add_argument("--proj-ln", action="store_true")
    ap.add_argument("--feature-layer", type=int, default=-2)
    ap.add_argument("--vd", type=int, default=64)
    ap.add_argument("--vl", type=int, default=2)
    ap.add_argument("--td", type=int, default=128)
    ap.add_argument("--tl", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pack", action="store_true",
                    help="train on one sequence per image holding all its questions")
    ap.add_argument("--pos-std", type=float, default=0.02,
                    help="init std of the vision position embeddings (CLIP's init: 0.02)")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--log", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    types = [t for t in a.types.split(",") if t]
    items, vocab, imgs, row = build(a.data, a.items, types, a.image, a.test)
    train_idx = np.array([i for i, it in enumerate(items) if not it.get("heldout")])
    n_img = (a.image // a.patch) ** 2
    seqs = []
    for it in items:
        q = [vocab[w] for w in it["question"].lower().replace("?", " ?").split()]
        ans = [vocab[w] for w in it["answer"].lower().split()]
        ids = [1] + [3] * n_img + q + ans + [2]
        seqs.append((ids, len(ids) - len(ans) - 1))
    # packed training sequences: image, then q1 a1 eos q2 a2 eos ..., labels on every answer
    by_img = {}
    for i in train_idx:
        by_img.setdefault(items[i]["image"], []).append(i)
    packs = []
    for img, qs in by_img.items():
        ids, spans = [1] + [3] * n_img, []
        for i in qs:
            s_ids, p = seqs[i]
            body = s_ids[1 + n_img:]
            spans.append((len(ids) + p - 1 - n_img, len(ids) + len(body)))
            ids = ids + body
        packs.append((ids, spans, qs[0]))
    model = MiniLlava(len(vocab) + 4, 3, vd=a.vd, vl=a.vl, td=a.td, tl=a.tl, image=a.image,
                      patch=a.patch, feature_layer=a.feature_layer, proj_ln=a.proj_ln)
    nn.init.normal_(model.vision.pos.weight, std=a.pos_std)
    vis = [p for n, p in model.named_parameters() if n.startswith(("vision", "p1", "p2", "proj_ln"))]
    vid = {id(p) for p in vis}
    rest = [p for p in model.parameters() if id(p) not in vid]
    opt = torch.optim.AdamW([dict(params=rest, mult=1.0), dict(params=vis, mult=a.vision_lr_mult)],
                            lr=a.lr, betas=(0.9, 0.98), weight_decay=0.05)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)

    def batch(idx):
        n = max(len(seqs[i][0]) for i in idx)
        ids = torch.zeros(len(idx), n, dtype=torch.long)
        lab = torch.full((len(idx), n), -100, dtype=torch.long)
        att = torch.zeros(len(idx), n, dtype=torch.long)
        for r, i in enumerate(idx):
            s, p = seqs[i]
            ids[r, :len(s)] = torch.tensor(s)
            att[r, :len(s)] = 1
            lab[r, p:len(s)] = torch.tensor(s[p:])
        px = imgs[[row[items[i]["image"]] for i in idx]].permute(0, 3, 1, 2).float() / 255
        return ids, att, (px - mean) / std, lab

    @torch.no_grad()
    def accuracy():
        model.eval()
        ok = {}
        ev = list(train_idx[:300]) + [i for i, it in enumerate(items) if it.get("heldout")]
        for s in range(0, len(ev), 32):
            idx = ev[s:s + 32]
            ids, att, px, lab = batch(idx)
            _, logits, _, _ = model(ids, att, px, lab, return_parts=True)
            for r, i in enumerate(idx):
                p = seqs[i][1]
                pred = logits[r, p - 1].argmax().item()
                key = ("test " if items[i].get("heldout") else "") + items[i]["type"]
                t = ok.setdefault(key, [0, 0])
                t[0] += pred == seqs[i][0][p]
                t[1] += 1
        model.train()
        return {k: round(v[0] / v[1], 3) for k, v in ok.items()}

    if a.check:
        idx = list(range(4))
        ids, att, px, lab = batch(idx)
        loss, logits, emb, feats = model(ids, att, px, lab, return_parts=True)
        loss.backward()
        g = sum(p.grad.abs().sum().item() for p in model.vision.parameters() if p.grad is not None)
        print("vision grad L1", g, "feature std", feats.std().item(),
              "text emb std", model.embed.weight.std().item())
        model.zero_grad()
    curve, t0 = [], time.time()
    warm = min(50, a.steps // 10)
    for step in range(a.steps):
        lr = a.lr * min(1, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        for gp in opt.param_groups:
            gp["lr"] = lr * gp["mult"]
        if not a.pack:
            idx = train_idx[np.random.randint(0, len(train_idx), a.batch)]
            loss = model(*batch(idx))
        else:
            sel = [packs[j] for j in np.random.randint(0, len(packs), a.batch)]
            n = max(len(x[0]) for x in sel)
            ids = torch.zeros(len(sel), n, dtype=torch.long)
            lab = torch.full((len(sel), n), -100, dtype=torch.long)
            att = torch.zeros(len(sel), n, dtype=torch.long)
            for r, (s_ids, spans, i0) in enumerate(sel):
                ids[r, :len(s_ids)] = torch.tensor(s_ids)
                att[r, :len(s_ids)] = 1
                for b, e in spans:
                    lab[r, b:e] = ids[r, b:e]
            px = imgs[[row[items[x[2]]["image"]] for x in sel]].permute(0, 3, 1, 2).float() / 255
            loss = model(ids, att, (px - mean) / std, lab)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        curve.append(loss.item())
        if (step + 1) % 50 == 0:
            print(f"step {step + 1} loss {np.mean(curve[-50:]):.4f} ({time.time() - t0:.0f}s)",
                  flush=True)
    acc = accuracy()
    print("accuracy (first answer token):", json.dumps(dict(sorted(acc.items()))), flush=True)
    if a.log:
        json.dump(dict(args=vars(a), curve50=[float(np.mean(curve[i:i + 50]))
                                              for i in range(0, len(curve), 50)], acc=acc),
                  open(a.log, "w"))


if __name__ == "__main__":
    main()
