#!/usr/bin/env python3
"""prunelm against Hugging Face transformers (sdpa and eager) on one checkpoint, in one session.

    python3 eval/bench_vs_hf.py --model DIR --prunelm build-cuda/prunelm --out results.md

Measures, for one 336 px image and a question of --prompt-tokens tokens, batch 1: the vision
tower + projector, the time to first token, decode tokens/s over --gen tokens and peak device
memory; and the two ceilings the targets are stated against, measured here: device-to-device
copy bandwidth (bytes read + written) and the bf16 matrix rate. Prints a table and writes it
as Markdown to --out.
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

WORDS = ["describe", "the", "image", "in", "detail", "and", "count", "every", "shape", "colour"]


def cuda_time(fn, warmup=2, reps=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def ceilings():
    x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = cuda_time(lambda: y.copy_(x), 3, 10)
    bw = 2 * x.numel() / (ms / 1e3)  # bytes read + written per second
    del x, y
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    ms = cuda_time(lambda: a @ b, 3, 10)
    return bw, 2 * 8192 ** 3 / (ms / 1e3)


def question(tok, n):
    q = ""
    i = 0
    while len(tok(q, add_special_tokens=False)["input_ids"]) < n:
        q += (" " if q else "") + WORDS[i % len(WORDS)]
        i += 1
    return q


def bench_hf(model_dir, image, q, gen, attn):
    proc = AutoProcessor.from_pretrained(model_dir)
    model = LlavaForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.bfloat16, attn_implementation=attn).cuda().eval()
    inputs = proc(images=image, text=f"USER: <image>\n{q} ASSISTANT:", return_tensors="pt").to("cuda")
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        vision = cuda_time(lambda: model.get_image_features(pixel_values=inputs["pixel_values"]))
        ttft = cuda_time(lambda: model.generate(**inputs, max_new_tokens=1, do_sample=False))
        total = cuda_time(lambda: model.generate(**inputs, max_new_tokens=gen + 1,
                                                 min_new_tokens=gen + 1, do_sample=False), 1, 3)
    peak = torch.cuda.max_memory_allocated()
    n_prompt = inputs["input_ids"].shape[1]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    cfg = model.config.text_config
    del model
    torch.cuda.empty_cache()
    return dict(vision_ms=vision, ttft_ms=ttft, decode_tokens_per_s=gen / ((total - ttft) / 1e3),
                peak_bytes=peak, prompt_tokens=n_prompt, weight_bytes=weights, cfg=cfg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prunelm", required=True, help="the prunelm executable (CUDA build)")
    ap.add_argument("--image", default=None)
    ap.add_argument("--prompt-tokens", type=int, default=40)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    image_path = args.image or os.path.join(args.model, "bench.png")
    if not args.image:
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (336, 336, 3), dtype=np.uint8)).save(image_path)
    image = Image.open(image_path)
    tok = AutoProcessor.from_pretrained(args.model).tokenizer
    q = question(tok, args.prompt_tokens)
    bw, flops = ceilings()
    rows = {}
    for attn in ("sdpa", "eager"):
        rows[f"transformers ({attn})"] = bench_hf(args.model, image, q, args.gen, attn)
    cfg = rows["transformers (sdpa)"]["cfg"]
    weights = rows["transformers (sdpa)"]["weight_bytes"]
    js = os.path.join(os.path.dirname(os.path.abspath(args.out)), "prunelm_bench.json")
    subprocess.run([args.prunelm, "bench", "--model", args.model, "--image", image_path,
                    "--prompt-tokens", str(args.prompt_tokens), "--gen", str(args.gen),
                    "--device", "cuda", "--json", js], check=True)
    p = json.load(open(js))
    rows["prunelm"] = dict(vision_ms=p["vision_ms"], ttft_ms=p["ttft_ms"],
                           decode_tokens_per_s=p["decode_tokens_per_s"],
                           peak_bytes=p.get("device_used_bytes", float("nan")),
                           prompt_tokens=p["prompt_tokens"])
    # the floors: decode reads every weight and the KV cache once per token; prefill is
    # 2 x parameters x tokens (+ attention) at the measured matrix rate
    n = rows["prunelm"]["prompt_tokens"]
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (
        cfg.hidden_size // cfg.num_attention_heads) * 2
    # bw counts the copy's reads and writes: the memory system moves bw bytes/s in all, and a
    # decode step only reads
    decode_bound = bw / (weights + kv_per_token * (n + args.gen / 2))
    prefill_flops = 2 * weights / 2 * n
    lines = [f"# prunelm vs transformers — {time.strftime('%Y-%m-%d')}",
             "", f"{torch.cuda.get_device_name()}; copy bandwidth {bw / 1e12:.2f} TB/s "
             f"(read + write), bf16 matmul {flops / 1e12:.0f} TFLOP/s; {n} prompt tokens, "
             f"{args.gen} generated.",
             f"Decode bound {decode_bound:.0f} tokens/s; time-to-first-token floor "
             f"{prefill_flops / flops * 1e3:.1f} ms (weights only).", "",
             "| engine | vision + projector ms | time to first token ms | decode tokens/s | peak GiB "
             "(torch: max allocated; prunelm: driver's in-use incl. context) |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['vision_ms']:.2f} | {r['ttft_ms']:.2f} | "
                     f"{r['decode_tokens_per_s']:.1f} | {r['peak_bytes'] / 2**30:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    open(args.out, "w").write(text)


if __name__ == "__main__":
    main()
