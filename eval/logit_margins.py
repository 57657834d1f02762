#!/usr/bin/env python3
"""prunelm's first-answer-token margin on chosen items of a dataset: where prunelm and
transformers answer differently (eval/agreement.py lists them), a margin of a few hundredths
of a logit with the other engine's answer as the runner-up means a near tie that summation
order decides, not a bug.

    python3 eval/logit_margins.py --data test.jsonl --model DIR --prunelm build/prunelm ID...

Standard library only (the CI machine has no numpy): reads the .npy that `prunelm ask
--dump-logits` writes."""
import argparse, array, ast, json, math, os, subprocess, sys, tempfile


def last_row(path):
    b = open(path, 'rb').read()
    if b[:6] != b'\x93NUMPY':
        sys.exit(f"{path}: not an .npy file")
    hl = int.from_bytes(b[8:10], 'little')
    h = ast.literal_eval(b[10:10 + hl].decode())
    if h.get('descr') != '<f4' or len(h['shape']) != 2:
        sys.exit(f"{path}: expected a 2-D float32 array, got {h}")
    a = array.array('f')
    a.frombytes(b[10 + hl:])
    r, c = h['shape']
    return list(a[(r - 1) * c:r * c])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', required=True)
    ap.add_argument('--model', required=True)
    ap.add_argument('--prunelm', default='build/prunelm')
    ap.add_argument('ids', nargs='+')
    a = ap.parse_args()
    items = {}
    with open(a.data) as f:
        for line in f:
            d = json.loads(line)
            if d['id'] in a.ids:
                items[d['id']] = d
    missing = [i for i in a.ids if i not in items]
    if missing:
        sys.exit(f"{a.data}: no item {', '.join(missing)}")
    vocab = json.load(open(os.path.join(a.model, 'tokenizer.json')))['model']['vocab']
    name = {v: k for k, v in vocab.items()}
    base = os.path.dirname(os.path.abspath(a.data))
    with tempfile.TemporaryDirectory() as tmp:
        npy = os.path.join(tmp, 'logits.npy')
        for i in a.ids:
            d = items[i]
            cmd = [a.prunelm, 'ask', '--model', a.model, '--max-tokens', '1', '--dump-logits', npy]
            if d.get('image'):
                cmd += ['--image', os.path.join(base, d['image'])]
            r = subprocess.run(cmd + [d['question']], capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"{i}: prunelm ask failed: {r.stderr.strip()}")
            L = last_row(npy)
            top = sorted(range(len(L)), key=lambda j: -L[j])[:2]
            z = sum(math.exp(v - L[top[0]]) for v in L)
            print(f"- {i}: {name.get(top[0])!r} {L[top[0]]:.3f} (p {1 / z:.3f}), runner-up "
                  f"{name.get(top[1])!r} {L[top[1]]:.3f}: margin {L[top[0]] - L[top[1]]:.3f}")


if __name__ == '__main__':
    main()
