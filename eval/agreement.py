#!/usr/bin/env python3
"""Compares two engines' answers item by item: the trainer's predictions.jsonl (transformers)
and a `prunelm eval` results.jsonl, and prints a Markdown table per question type: accuracy of
each and the share of items where the two answers are identical.

    python3 eval/agreement.py WORK/predictions.jsonl OUT/results.jsonl [--md FILE]

Items present in only one file are counted and listed, not silently dropped."""
import argparse
import json
import sys


def load(path):
    rows = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON ({e})")
            rows[r["id"]] = r
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reference", help="predictions.jsonl of eval/train/train_llava.py")
    ap.add_argument("prunelm", help="results.jsonl of prunelm eval")
    ap.add_argument("--md", help="also write the table to this file")
    a = ap.parse_args()
    ref, plm = load(a.reference), load(a.prunelm)
    both = [i for i in ref if i in plm]
    per = {}
    for i in both:
        r, p = ref[i], plm[i]
        t = per.setdefault(r.get("type", "?"), [0, 0, 0, 0])
        t[0] += 1
        t[1] += bool(r["correct"])
        t[2] += bool(p["correct"])
        t[3] += r["prediction"].strip().lower() == p["prediction"].strip().lower()
    lines = ["| type | items | transformers | prunelm | same answer |", "| --- | --- | --- | --- | --- |"]
    tot = [0, 0, 0, 0]
    for k in sorted(per):
        n, cr, cp, same = per[k]
        tot = [x + y for x, y in zip(tot, per[k])]
        lines.append(f"| {k} | {n} | {cr / n:.1%} | {cp / n:.1%} | {same / n:.1%} |")
    n = max(1, tot[0])
    lines.append(f"| **all** | {tot[0]} | **{tot[1] / n:.1%}** | **{tot[2] / n:.1%}** | "
                 f"**{tot[3] / n:.1%}** |")
    only = [i for i in ref if i not in plm], [i for i in plm if i not in ref]
    lines.append("")
    lines.append(f"{len(only[0])} items only in {a.reference}, {len(only[1])} only in {a.prunelm}")
    diff = [i for i in both if ref[i]["prediction"].strip().lower() !=
            plm[i]["prediction"].strip().lower()]
    if diff:
        lines.append("")
        lines.append("Differing answers (id: transformers / prunelm / expected):")
        for i in diff[:40]:
            lines.append(f"- {i}: {ref[i]['prediction']!r} / {plm[i]['prediction']!r} / "
                         f"{ref[i]['answer']!r}")
    text = "\n".join(lines)
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
