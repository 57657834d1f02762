#!/usr/bin/env python3
"""Writes a LLaVA checkpoint of any size with random bf16 weights, with numpy alone (no torch,
no transformers), for measuring on a CPU what does not depend on training: KV bytes, image
tokens and timings of every pruning setting at the reference model's real 24x24 grid, and the
sweep scripts end to end.

    python3 eval/make_random_llava.py --like tests/fixtures/models/tiny_f32 --out /tmp/ref \
        [--vision 256,6,4,1024] [--text 384,6,6,2,1024] [--image-size 336]

--like names a checkpoint whose tokenizer (tokenizer.json, tokenizer_config.json) and config
keys are reused; the sizes default to the reference model's (eval/train/train_llava.py). The
tensor names and layout are transformers 5's LlavaForConditionalGeneration, as in the fixtures.
Weights are N(0, 0.02) (norms at 1, biases 0), seeded: the same arguments give the same bytes.
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np


def bf16(a):
    """Rounds float32 to bfloat16 bit patterns (round to nearest even)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def tensors(vh, vl, vn, vi, th, tl, tn, tk, ti, vocab, image_size, patch, rng):
    n_pos = (image_size // patch) ** 2 + 1
    hd = th // tn
    t = {}

    def w(name, *shape):
        t[name] = rng.normal(0, 0.02, size=shape).astype(np.float32)

    def ones(name, n):
        t[name] = np.ones(n, np.float32)

    def zeros(name, n):
        t[name] = np.zeros(n, np.float32)

    v = "vision_tower."
    w(v + "embeddings.class_embedding", vh)
    w(v + "embeddings.patch_embedding.weight", vh, 3, patch, patch)
    w(v + "embeddings.position_embedding.weight", n_pos, vh)
    for pre in ("pre_layrnorm", "post_layernorm"):
        ones(v + pre + ".weight", vh)
        zeros(v + pre + ".bias", vh)
    for i in range(vl):
        L = f"{v}encoder.layers.{i}."
        for ln in ("layer_norm1", "layer_norm2"):
            ones(L + ln + ".weight", vh)
            zeros(L + ln + ".bias", vh)
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w(L + f"self_attn.{p}.weight", vh, vh)
            zeros(L + f"self_attn.{p}.bias", vh)
        w(L + "mlp.fc1.weight", vi, vh)
        zeros(L + "mlp.fc1.bias", vi)
        w(L + "mlp.fc2.weight", vh, vi)
        zeros(L + "mlp.fc2.bias", vh)
    w("multi_modal_projector.linear_1.weight", th, vh)
    zeros("multi_modal_projector.linear_1.bias", th)
    w("multi_modal_projector.linear_2.weight", th, th)
    zeros("multi_modal_projector.linear_2.bias", th)
    m = "language_model.model."
    w(m + "embed_tokens.weight", vocab, th)
    w("language_model.lm_head.weight", vocab, th)
    ones(m + "norm.weight", th)
    for i in range(tl):
        L = f"{m}layers.{i}."
        ones(L + "input_layernorm.weight", th)
        ones(L + "post_attention_layernorm.weight", th)
        w(L + "self_attn.q_proj.weight", tn * hd, th)
        w(L + "self_attn.k_proj.weight", tk * hd, th)
        w(L + "self_attn.v_proj.weight", tk * hd, th)
        w(L + "self_attn.o_proj.weight", th, tn * hd)
        w(L + "mlp.gate_proj.weight", ti, th)
        w(L + "mlp.up_proj.weight", ti, th)
        w(L + "mlp.down_proj.weight", th, ti)
    return t


def write_safetensors(path, t):
    header, off, blobs = {}, 0, []
    for name in sorted(t):
        b = bf16(t[name]).tobytes()
        header[name] = dict(dtype="BF16", shape=list(t[name].shape), data_offsets=[off, off + len(b)])
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--like", required=True, help="a checkpoint whose tokenizer and config keys are reused")
    ap.add_argument("--out", required=True)
    ap.add_argument("--vision", default="256,6,4,1024", help="hidden,layers,heads,intermediate")
    ap.add_argument("--text", default="384,6,6,2,1024", help="hidden,layers,heads,kv_heads,intermediate")
    ap.add_argument("--image-size", type=int, default=336)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    vh, vl, vn, vi = (int(x) for x in args.vision.split(","))
    th, tl, tn, tk, ti = (int(x) for x in args.text.split(","))
    if th % tn or tn % tk or vh % vn:
        raise SystemExit("make_random_llava.py: hidden sizes must divide by the head counts and "
                         "heads by kv heads")
    cfg = json.load(open(os.path.join(args.like, "config.json")))
    vocab = cfg["text_config"]["vocab_size"]
    patch = cfg["vision_config"]["patch_size"]
    cfg["dtype"] = "bfloat16"
    cfg["image_seq_length"] = (args.image_size // patch) ** 2
    cfg["vision_config"].update(hidden_size=vh, num_hidden_layers=vl, num_attention_heads=vn,
                                intermediate_size=vi, image_size=args.image_size)
    cfg["text_config"].update(hidden_size=th, num_hidden_layers=tl, num_attention_heads=tn,
                              num_key_value_heads=tk, intermediate_size=ti, head_dim=th // tn,
                              max_position_embeddings=max(8192,
                                                          cfg["text_config"].get("max_position_embeddings", 0)))
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    write_safetensors(os.path.join(args.out, "model.safetensors"),
                      tensors(vh, vl, vn, vi, th, tl, tn, tk, ti, vocab, args.image_size, patch, rng))
    json.dump(cfg, open(os.path.join(args.out, "config.json"), "w"), indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(args.like, name)):
            shutil.copy(os.path.join(args.like, name), args.out)
    proc = os.path.join(args.like, "processor_config.json")
    pre = os.path.join(args.like, "preprocessor_config.json")
    src = proc if os.path.exists(proc) else pre
    p = json.load(open(src))
    ip = p.get("image_processor", p)
    ip["crop_size"] = {"height": args.image_size, "width": args.image_size}
    ip["size"] = {"shortest_edge": args.image_size}
    json.dump(ip, open(os.path.join(args.out, "preprocessor_config.json"), "w"), indent=2)
    print(f"{args.out}: vision {vh}x{vl}, text {th}x{tl} ({tn}/{tk} heads), vocab {vocab}, "
          f"{(args.image_size // patch) ** 2} image tokens")


if __name__ == "__main__":
    main()
