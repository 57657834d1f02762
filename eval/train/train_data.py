"""ShapesVQA data for the trainer: generating the splits with prunelm-shapes, decoding the
images, training the BPE tokenizer, and turning items into token sequences and batches in
LlavaProcessor's layout (prompt with <image> expanded to the 576 patch tokens, then the answer).
"""
import json
import os
import subprocess
from multiprocessing.pool import ThreadPool

import numpy as np
import torch
from PIL import Image

from llama_bpe import train_llama_bpe

TEMPLATE = "USER: <image>\n{q} ASSISTANT:"
TEXT_TEMPLATE = "USER: {q} ASSISTANT:"  # prunelm's template without an image


def generate(shapes, work, split, count, task="vqa", tokens=0, seed_base=0):
    name = split if task == "vqa" else f"{split}-{task}-{tokens}"
    out = os.path.join(work, name)
    jsonl = os.path.join(out, f"{split}.jsonl" if task == "vqa" else f"{split}-{task}.jsonl")
    if not os.path.exists(jsonl):
        cmd = [shapes, "--out", out, "--split", split, "--count", str(count), "--task", task,
               "--seed-base", str(seed_base), "--jobs", str(os.cpu_count() or 8), "-q"]
        subprocess.run(cmd + (["--tokens", str(tokens)] if tokens else []), check=True)
    items = [json.loads(l) for l in open(jsonl)]
    for it in items:
        if "image" in it:
            it["image"] = os.path.join(out, it["image"])
    return items


def prompt_of(it):
    """The prompt prunelm eval builds for an item: context and question on two lines."""
    q = it["question"] if "context" not in it else it["context"] + "\n" + it["question"]
    return (TEMPLATE if "image" in it else TEXT_TEMPLATE).format(q=q)


def load_png(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def load_images(items, cache=None):
    """All images of `items` as one uint8 array (N, 336, 336, 3) and path -> row. With `cache`
    (a .npy path) the decoded array is kept on disk: a second run on a warm machine maps it in
    seconds instead of decoding 40k PNGs again."""
    paths = sorted({it["image"] for it in items})
    index = {p: i for i, p in enumerate(paths)}
    if cache and os.path.exists(cache):
        arr = np.load(cache, mmap_mode="r")
        if arr.shape[0] == len(paths):
            return arr, index
    # threads writing into one array: PIL decodes without the GIL, and nothing is pickled (a
    # process pool spent most of its minute sending 13 GB of decoded pixels back through pipes)
    arr = np.empty((len(paths), 336, 336, 3), np.uint8)

    def fill(i):
        arr[i] = load_png(paths[i])

    with ThreadPool(2 * (os.cpu_count() or 8)) as pool:
        pool.map(fill, range(len(paths)), chunksize=64)
    if cache:
        np.save(cache + ".tmp.npy", arr)
        os.replace(cache + ".tmp.npy", cache)
    return arr, index


def train_tokenizer(items, captions, long_items, vocab_size):
    # questions, answers and the template words as separate lines, so no merge spans the
    # "ASSISTANT:" / answer boundary and the prompt stays a token prefix of prompt + answer.
    # The long contexts teach it the filler's words, digits removed: a digit is then always
    # its own token, so a pass key reads the same in the context and in the answer.
    lines = [it["question"] for it in items[:50000]] + [it["answer"] for it in items[:50000]]
    lines += ["USER:", "ASSISTANT:"] * 100 + [it["question"] for it in captions[:1]]
    lines += [it["answer"] for it in captions[:20000]]
    nodigit = str.maketrans("", "", "0123456789")
    for it in long_items[:600]:
        lines += [l.translate(nodigit) for l in it["context"].split("\n") if l]
        lines.append(it["question"])
    return train_llama_bpe(lines, vocab_size)


def encode(tok, items, n_img, image_id):
    """input ids with <image> expanded like LlavaProcessor, and the answer span for the loss.
    Prompt and answer are tokenized apart: the model learns to continue the prompt's tokens with
    the answer's own tokens, which is what generation produces, whatever merges the BPE learned
    across ": " in the long contexts' dialogue lines. Batched calls: one per list, not per item
    (the per-item calls took 45 s of a 10-minute run)."""
    if not items:
        return []
    prompts = tok([prompt_of(it) for it in items])["input_ids"]
    answers = sorted({it["answer"] for it in items})
    a_ids = dict(zip(answers, tok(answers, add_special_tokens=False)["input_ids"]))
    for a, ids in a_ids.items():
        if tok.decode(ids, skip_special_tokens=True).strip() != a:
            raise SystemExit(f"answer does not round-trip through the tokenizer: {a!r}")
    seqs = []
    for it, p_ids in zip(items, prompts):
        if "image" in it:
            k = p_ids.index(image_id)
            p_ids = p_ids[:k] + [image_id] * n_img + p_ids[k + 1:]
        seqs.append((p_ids + a_ids[it["answer"]] + [tok.eos_token_id], len(p_ids)))
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


def long_tasks(args, split, counts, lengths):
    """Pass-key, multi-key and image-then-dialogue items (counts: per task, split evenly over
    the context lengths; each length draws its own seed range)."""
    items = []
    for task, count in counts.items():
        for k, tokens in enumerate(lengths):
            n = max(1, count // len(lengths))
            got = generate(args.shapes, args.work, split, n, task, tokens, 100000 * k)
            for it in got:
                it["type"], it["tokens"] = task, tokens
            items += got
    return items
