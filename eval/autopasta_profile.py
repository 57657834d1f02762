#!/usr/bin/env python3
"""AutoPASTA's coarse-to-fine head profiling (Zhang et al. 2024, after PASTA's model profiling,
ICLR 2024): which attention heads to steer, chosen on validation items by what steering them
does to accuracy.

  coarse: steer every head of one layer at a time (autopasta:heads=L), L = 0 .. n_layers-1;
  fine:   in the --top-layers best layers, steer one head at a time (heads=L.H);
  result: the --top-heads best single heads that did not lose against no steering, steered
          together, checked on the same items, and written as a --kv spec file.

Each setting is one `prunelm eval` run (--kv BASE+autopasta:...), in OUT/<setting>/, so an
interrupted profile resumes where it stopped. BASE (default none) is the KV policy steering
is profiled on top of, e.g. snapkv:ratio=0.2. Ties (accuracy on a few dozen items ties often)
go to the lower layer or head. Writes OUT/profile.md and OUT/autopasta.spec.

  python3 eval/autopasta_profile.py --prunelm build/prunelm --model assets/models/default \\
      --data val-dialogue.jsonl --out runs/ap_profile
"""
import argparse
import json
import os
import subprocess
import sys


def layers_heads(model):
    cfg = json.load(open(os.path.join(model, "config.json")))
    t = cfg.get("text_config", cfg)
    return int(t["num_hidden_layers"]), int(t["num_attention_heads"])


def joined(base, steer):
    return steer if base in ("", "none") else base + "+" + steer


def accuracy(args, name, kv):
    """Runs (or resumes) one setting; returns its accuracy on the items."""
    out = os.path.join(args.out, name)
    summ = os.path.join(out, "summary.json")
    if not os.path.exists(summ):
        cmd = [args.prunelm, "eval", "--model", args.model, "--data", args.data, "--out", out,
               "--max-tokens", str(args.max_tokens), "--kv", kv, "-q"]
        if os.path.exists(os.path.join(out, "results.jsonl")):
            cmd.append("--resume")
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        r = subprocess.run(cmd)
        if r.returncode != 0:
            sys.exit(f"autopasta_profile.py: {' '.join(cmd)} failed ({r.returncode})")
    acc = json.load(open(summ))["accuracy"]
    print(f"{name:24s} {kv:60s} {100 * acc:5.1f}%", flush=True)
    return acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prunelm", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="validation items (never the test split)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", default="none", help="KV policy under the steering")
    ap.add_argument("--steer", default="autopasta",
                    help="the steering spec without heads= (e.g. autopasta:alpha=0.05)")
    ap.add_argument("--top-layers", type=int, default=2)
    ap.add_argument("--top-heads", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=4)
    args = ap.parse_args()
    if any(json.loads(l).get("split") == "test" for l in open(args.data) if l.strip()):
        sys.exit(f"autopasta_profile.py: {args.data} holds test items; profile on validation")
    os.makedirs(args.out, exist_ok=True)
    n_layers, n_heads = layers_heads(args.model)
    sep = "," if ":" in args.steer else ":"

    def steer(heads):
        return joined(args.base, f"{args.steer}{sep}heads={heads}")

    base = accuracy(args, "base", args.base)
    every = accuracy(args, "all", steer("all"))
    by_layer = [(accuracy(args, f"layer{L}", steer(str(L))), -L, L) for L in range(n_layers)]
    best_layers = [L for _, _, L in sorted(by_layer, reverse=True)[:args.top_layers]]
    by_head = []
    for L in sorted(best_layers):
        for H in range(n_heads):
            by_head.append((accuracy(args, f"head{L}.{H}", steer(f"{L}.{H}")), -L, -H, f"{L}.{H}"))
    chosen = [h for a, _, _, h in sorted(by_head, reverse=True) if a >= base][:args.top_heads]
    final_spec = steer("/".join(chosen)) if chosen else args.base
    final = accuracy(args, "chosen", final_spec) if chosen else base

    with open(os.path.join(args.out, "autopasta.spec"), "w") as f:
        f.write(f"# autopasta_profile.py on {args.data} ({args.limit or 'all'} items): "
                f"{100 * final:.1f}% against {100 * base:.1f}% unsteered\n{final_spec}\n")
    with open(os.path.join(args.out, "profile.md"), "w") as f:
        f.write(f"# AutoPASTA head profile\n\nModel `{args.model}`, data `{args.data}`"
                f"{f' (first {args.limit})' if args.limit else ''}, base `{args.base}`, steering "
                f"`{args.steer}`.\n\n| setting | accuracy |\n| --- | --- |\n")
        f.write(f"| no steering | {100 * base:.1f}% |\n| every head | {100 * every:.1f}% |\n")
        for a, _, L in by_layer:
            f.write(f"| layer {L} (all heads) | {100 * a:.1f}% |\n")
        for a, _, _, h in by_head:
            f.write(f"| head {h} | {100 * a:.1f}% |\n")
        f.write(f"| **chosen: `{final_spec}`** | **{100 * final:.1f}%** |\n")
    print(f"chosen: {final_spec} ({100 * final:.1f}% against {100 * base:.1f}% unsteered)")


if __name__ == "__main__":
    main()
