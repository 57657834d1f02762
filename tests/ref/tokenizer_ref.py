#!/usr/bin/env python3
"""Reference ids for prunelm's tokenizer tests, recorded with Hugging Face `tokenizers`.

Run on the GPU machine (tokenizers 0.23.2, sentencepiece 0.2.2 there; no network needed):
  python3 tests/ref/tokenizer_ref.py --llama2 PATH/tokenizer.json [--spm PATH/tokenizer.model] \
      --corpus tests/fixtures/tokenizer/corpus.jsonl --out DIR

Writes into DIR:
  llama2_ids.jsonl                      the corpus through the real Llama-2 tokenizer.json
  bytelevel/tokenizer.json + _ids       a small GPT-2-style ByteLevel BPE trained here
  llama3style/tokenizer.json + _ids     Llama-3 Split regex + ByteLevel(use_regex=False)
  qwen2style/tokenizer.json + _ids      Qwen2 regex (single digits) + NFC normalizer
  metaspace/tokenizer.json + _ids       Metaspace(prepend_scheme first, split false) + byte_fallback
  NAME_decode.jsonl                     decodes of deterministic random id sequences
  summary.json                          counts, and the sentencepiece cross-check (informational)
Each _ids line: {"i", "text_hex", "ids" (add_special_tokens=True), "ids_plain" (False),
"dec_hex" (decode(ids)), "dec_skip_hex" (decode(ids, skip_special_tokens=True)),
"dec_plain_hex" (decode(ids_plain)), "roundtrip" (decode(ids_plain) == text)}. Text is stored as
UTF-8 hex so that NUL and other controls survive any JSON reader.

Training is deterministic: the training text is built here from a seeded generator and the
trainer runs single-threaded."""
import argparse
import json
import os
import random
import sys
import traceback
import zlib

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,  # noqa: E402
                        pre_tokenizers, processors, trainers)

GPT2_PAT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

WORDS = ("the of and to in is that it was for on are as with his they at be this from have or "
         "by one had not but what all were when we there can an your which their said if do will "
         "each about how up out them then she many some so these would other into has more her two "
         "like him see time could no make than first been its who now people my made over did down "
         "only way find use may water long little very after words called just where most know "
         "hello world token tokenizer model language vision image pruning cache attention layer "
         "don't I'm you're we'll they've it's she'd Hello World The A In It This").split()
EXTRA = ["caf\u00e9", "na\u00efve", "\u00fcber", "Stra\u00dfe", "\u4f60\u597d", "\u4e16\u754c",
         "\u65e5\u672c", "\u041f\u0440\u0438\u0432\u0435\u0442", "\u03b1\u03b2\u03b3", "\U0001f600",
         "\U0001f44d", "\u2764\ufe0f", "\u0645\u0631\u062d\u0628\u0627", "\uc548\ub155"]
CODE = ["def f(x):", "    return x + 1", "int main(void) {", "    printf(\"%d\\n\", n);", "}",
        "for i in range(10):", "if (a == b) { c++; }", "import os", "x = [1, 2, 3]",
        "// comment", "# comment", "{\"a\": 1, \"b\": [true, null]}", "https://example.com/a?b=c"]


def training_text():
    rng = random.Random(20240607)
    lines = []
    for _ in range(2500):
        n = rng.randint(3, 14)
        ws = []
        for _ in range(n):
            r = rng.random()
            if r < 0.80:
                ws.append(rng.choice(WORDS))
            elif r < 0.90:
                ws.append(str(rng.randint(0, 99999)))
            elif r < 0.95:
                ws.append(rng.choice(EXTRA))
            else:
                ws.append(rng.choice([",", ".", "!", "?", ";", ":", "(", ")", "-", "'", "\""]))
        sep = rng.choice([" ", " ", " ", "  ", "\t"])
        line = sep.join(ws)
        if rng.random() < 0.2:
            line = "\n".join([line, rng.choice(CODE)])
        if rng.random() < 0.1:
            line = "  " + line
        lines.append(line)
    for c in CODE:
        lines.extend([c] * 5)
    return lines


def hexs(s):
    return s.encode("utf-8").hex()


def record(tok, corpus, path):
    n_rt = 0
    with open(path, "w", encoding="ascii") as f:
        for i, s in enumerate(corpus):
            ids = tok.encode(s, add_special_tokens=True).ids
            ids_plain = tok.encode(s, add_special_tokens=False).ids
            dec_plain = tok.decode(ids_plain, skip_special_tokens=False)
            rt = dec_plain == s
            n_rt += rt
            f.write(json.dumps({
                "i": i, "text_hex": hexs(s), "ids": ids, "ids_plain": ids_plain,
                "dec_hex": hexs(tok.decode(ids, skip_special_tokens=False)),
                "dec_skip_hex": hexs(tok.decode(ids, skip_special_tokens=True)),
                "dec_plain_hex": hexs(dec_plain), "roundtrip": rt}) + "\n")
    return n_rt


def record_decode_cases(tok, path, seed, byte_range=None, n=200):
    """Random id sequences, biased towards byte tokens and special tokens, to pin down the
    decoder chain on inputs no encoder would produce (broken UTF-8, lone specials)."""
    rng = random.Random(seed)
    size = tok.get_vocab_size(with_added_tokens=True)
    specials = [t for t in tok.get_added_tokens_decoder().keys()]
    with open(path, "w", encoding="ascii") as f:
        for _ in range(n):
            ids = []
            for _ in range(rng.randint(1, 12)):
                r = rng.random()
                if byte_range and r < 0.4:
                    ids.append(rng.randrange(*byte_range))
                elif r < 0.5 and specials:
                    ids.append(rng.choice(specials))
                else:
                    ids.append(rng.randrange(size))
            f.write(json.dumps({
                "ids": ids, "dec_hex": hexs(tok.decode(ids, skip_special_tokens=False)),
                "dec_skip_hex": hexs(tok.decode(ids, skip_special_tokens=True))}) + "\n")


def meta(tok, extra=None):
    m = {"vocab_size_with_added": tok.get_vocab_size(with_added_tokens=True),
         "vocab_size": tok.get_vocab_size(with_added_tokens=False)}
    if extra:
        m.update(extra)
    return m


def strings_to_legacy_merges(path):
    """Rewrites [a, b] merges as "a b" strings, the older serialisation, so both forms are
    exercised by the fixtures (safe for ByteLevel vocabularies: no token contains a space)."""
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    d["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in d["model"]["merges"]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False)


def save_and_reload(tok, outdir):
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "tokenizer.json")
    tok.save(path)
    return path


def build_bytelevel(train, outdir):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|bos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train, trainer)
    bos, eos = tok.token_to_id("<|bos|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A <|endoftext|>", pair="<|bos|> $A <|endoftext|> $B:1 <|endoftext|>:1",
        special_tokens=[("<|bos|>", bos), ("<|endoftext|>", eos)])
    tok.add_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False),
                    AddedToken("hello_sw", single_word=True, normalized=False),
                    AddedToken("[TOOL]", normalized=True)])
    path = save_and_reload(tok, outdir)
    strings_to_legacy_merges(path)
    return Tokenizer.from_file(path), meta(tok, {"bos": bos, "eos": eos})


def build_split_bytelevel(train, outdir, pattern, ignore_merges, nfc, specials, template):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train, trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.add_tokens([AddedToken("foo_bar", normalized=True)])
    extra = {}
    if template:
        bos = tok.token_to_id(specials[0])
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{specials[0]} $A",
                                          pair=f"{specials[0]} $A {specials[0]}:1 $B:1",
                                          special_tokens=[(specials[0], bos)])])
        extra["bos"] = bos
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    path = save_and_reload(tok, outdir)
    return Tokenizer.from_file(path), meta(tok, extra)


def build_metaspace(train, outdir):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first",
                                                 split=False)
    trainer = trainers.BpeTrainer(vocab_size=900, min_frequency=2, show_progress=False,
                                  limit_alphabet=120, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(train, trainer)
    d = json.loads(tok.to_str())
    # Llama/Mistral files keep the 256 <0xNN> byte tokens as ordinary vocabulary right after
    # the specials; the trainer does not make them, so put them there by hand.
    old = sorted(d["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {}
    for s in ["<unk>", "<s>", "</s>"]:
        vocab[s] = len(vocab)
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for t, _ in old:
        if t not in vocab:
            vocab[t] = len(vocab)
    d["model"]["vocab"] = vocab
    for at in d["added_tokens"]:
        at["id"] = vocab[at["content"]]
    d["normalizer"] = None
    d["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    d["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    tok = Tokenizer.from_str(json.dumps(d))
    tok.add_tokens([AddedToken("[TOOL]", normalized=False, special=False)])
    path = save_and_reload(tok, outdir)
    return Tokenizer.from_file(path), meta(tok, {"bos": 1, "eos": 2})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama2", required=True)
    ap.add_argument("--spm")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(a.corpus, encoding="ascii") as f:
        corpus = [json.loads(line) for line in f if line.strip()]
    import tokenizers
    summary = {"tokenizers": tokenizers.__version__, "corpus": len(corpus)}
    train = training_text()

    jobs = [
        ("llama2", lambda: (Tokenizer.from_file(a.llama2), {}), (3, 259)),
        ("bytelevel", lambda: build_bytelevel(train, os.path.join(a.out, "bytelevel")), None),
        ("llama3style", lambda: build_split_bytelevel(
            train, os.path.join(a.out, "llama3style"), LLAMA3_PAT, True, False,
            ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>"], True), None),
        ("qwen2style", lambda: build_split_bytelevel(
            train, os.path.join(a.out, "qwen2style"), QWEN2_PAT, False, True,
            ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], False), None),
        ("metaspace", lambda: build_metaspace(train, os.path.join(a.out, "metaspace")), (3, 259)),
    ]
    for name, build, byte_range in jobs:
        try:
            tok, m = build()
            m["roundtrip"] = record(tok, corpus, os.path.join(a.out, f"{name}_ids.jsonl"))
            record_decode_cases(tok, os.path.join(a.out, f"{name}_decode.jsonl"),
                                seed=zlib.crc32(name.encode()), byte_range=byte_range)
            summary[name] = m
            print(name, m, flush=True)
        except Exception:
            summary[name] = {"error": traceback.format_exc()}
            print(name, "FAILED", traceback.format_exc(), flush=True)

    if a.spm:
        try:
            import sentencepiece as spm
            sp = spm.SentencePieceProcessor(model_file=a.spm)
            hf = Tokenizer.from_file(a.llama2)
            bad = []
            for i, s in enumerate(corpus):
                x = sp.encode(s)
                y = hf.encode(s, add_special_tokens=False).ids
                if x != y:
                    bad.append({"i": i, "spm": x[:40], "hf": y[:40]})
            summary["spm_disagreements"] = len(bad)
            summary["spm_examples"] = bad[:20]
            print("sentencepiece disagreements:", len(bad), flush=True)
        except Exception:
            summary["spm_error"] = traceback.format_exc()
    with open(os.path.join(a.out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
