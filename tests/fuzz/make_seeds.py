#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora, tests/fuzz/corpus/<target>/, from the test fixtures and
from small inputs built here (Python standard library only). Deterministic: running it again
gives the same files. Each corpus directory is rewritten whole.

    python3 tests/fuzz/make_seeds.py
"""
import json
import os
import shutil
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def fixture(*parts):
    with open(os.path.join(FIX, *parts), "rb") as f:
        return f.read()


# ---- images ---------------------------------------------------------------------------------

def png(width, height, bit_depth, color_type, rows, extra_chunks=()):
    """A PNG from raw scanlines (each already prefixed with its filter byte)."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    for kind, body in extra_chunks:
        out += chunk(kind, body)
    return out + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")


def bmp24(width, height):
    row = bytearray()
    for x in range(width):
        row += bytes((x * 40 % 256, 255 - x * 40 % 256, 128))
    row += b"\0" * ((4 - len(row) % 4) % 4)
    pixels = bytes(row) * height
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def tga(width, height, rle):
    header = struct.pack("<BBBHHBHHHHBB", 0, 0, 10 if rle else 2, 0, 0, 0, 0, 0, width, height,
                         24, 0x20)
    if rle:  # one run packet per row, then one raw packet of a single pixel
        body = b""
        for y in range(height):
            body += bytes((0x80 | (width - 1),)) + bytes((y * 50 % 256, 100, 200))
        return header + body
    return header + bytes((x * 30 % 256 for x in range(width * height * 3)))


def images():
    out = {}
    for name in ["rgb_tiny.png", "gray1.png", "palette1_interlaced.png", "palette4.png",
                 "gray16_interlaced.png", "palette8_trns.png", "gray_alpha8.png", "rgb_trns.png",
                 "rgb_odd.png", "gray.jpg", "photo_odd420.jpg", "progressive.jpg"]:
        out[name] = fixture("images", name)
    # truncated files: the decoders must refuse them, not read past the end
    out["trunc_rgb_tiny.png"] = out["rgb_tiny.png"][: len(out["rgb_tiny.png"]) // 2]
    out["trunc_photo_odd420.jpg"] = out["photo_odd420.jpg"][:1500]
    # built here: what the fixtures lack
    out["rgba16_3x2.png"] = png(3, 2, 16, 6, [b"\0" + bytes(range(24)), b"\0" + bytes(24)])
    out["palette2_4x1.png"] = png(4, 1, 2, 3, [b"\0\x1b"],
                                  [(b"PLTE", bytes(range(12))), (b"tRNS", b"\x80")])
    out["rgb8_sub_filter_2x2.png"] = png(2, 2, 8, 2, [b"\x01" + bytes(6), b"\x02" + bytes(6)])
    out["bmp24_5x3.bmp"] = bmp24(5, 3)
    out["p6_3x2.ppm"] = b"P6\n3 2\n255\n" + bytes(range(18))
    out["p5_4x2_comment.pgm"] = b"P5\n# a comment\n4 2\n255\n" + bytes(range(0, 256, 32))
    out["tga_raw_3x2.tga"] = tga(3, 2, False)
    out["tga_rle_4x2.tga"] = tga(4, 2, True)
    # GIF89a 1x1: a global palette of 2, a transparent colour, one LZW-coded pixel (clear, 0,
    # end of information in 3-bit codes)
    out["gif_1x1.gif"] = (b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) +
                          b"\x00\x00\x00\xff\xff\xff" + b"\x21\xf9\x04\x01\x00\x00\x00\x00" +
                          b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) +
                          b"\x02\x02\x44\x01\x00" + b"\x3b")
    return out


# ---- safetensors ----------------------------------------------------------------------------

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "F64": 8, "I64": 8}


def safetensors(tensors, metadata=None, pad_header=0, raw_header=None):
    """tensors: list of (name, dtype, shape); data is laid out in order, filled with a ramp."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = DTYPE_SIZE[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + n]}
        data += bytes((i * 7 + 3) % 256 for i in range(n))
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":"))
    text = text.encode() + b" " * pad_header  # the format allows trailing spaces
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    out = {
        "f32_2x3.safetensors": safetensors([("w", "F32", [2, 3])]),
        "mixed.safetensors": safetensors(
            [("model.embed.weight", "BF16", [4, 2]), ("model.norm.weight", "F16", [2]),
             ("lm_head.weight", "F32", [2, 2])], metadata={"format": "pt"}, pad_header=5),
        "scalar_and_empty.safetensors": safetensors(
            [("scalar", "F32", []), ("empty", "F32", [0, 3]), ("after", "F16", [1])]),
        "other_dtypes.safetensors": safetensors([("ids", "I64", [2]), ("q", "I8", [3]),
                                                 ("d", "F64", [1])]),
        "four_dims.safetensors": safetensors([("conv", "F32", [1, 3, 2, 2])]),
        "no_tensors.safetensors": safetensors([], metadata={}),
    }
    # refused ones, so the error paths start covered
    good = out["f32_2x3.safetensors"]
    out["bad_header_len.safetensors"] = struct.pack("<Q", 1 << 40) + good[8:]
    out["bad_overlap.safetensors"] = safetensors([], raw_header=(
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}')) + bytes(12)
    out["bad_shape_bytes.safetensors"] = safetensors([], raw_header=(
        '{"a":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}')) + bytes(8)
    out["truncated_data.safetensors"] = good[:-5]
    return out


# ---- config.json ----------------------------------------------------------------------------

def config_seeds():
    out = {}
    for model in ["tiny_f32", "gqa_bf16_sharded", "mqa_f32_oldnames"]:
        out[model + ".json"] = fixture("models", model, "config.json")
    llama = {"model_type": "llama", "vocab_size": 300, "hidden_size": 64,
             "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
             "rope_theta": 500000.0, "eos_token_id": [2, 7],
             "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 256}}
    out["llama_text_only_llama3_rope.json"] = json.dumps(llama, indent=1).encode()
    llava = {"model_type": "llava", "image_token_index": 5, "projector_hidden_act": "gelu",
             "vision_feature_layer": [-2, -1], "vision_feature_select_strategy": "full",
             "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                               "num_attention_heads": 2, "image_size": 28, "patch_size": 14,
                               "hidden_act": "quick_gelu"},
             "text_config": {"model_type": "llama", "vocab_size": 64, "hidden_size": 32,
                             "head_dim": 8, "num_attention_heads": 4, "num_key_value_heads": 1,
                             "rope_parameters": {"rope_type": "linear", "factor": 2.0}}}
    # the part after the NUL is generation_config.json (see fuzz_config.c)
    out["llava_with_generation_config.json"] = (json.dumps(llava, indent=1).encode() + b"\0" +
                                                b'{"eos_token_id": [3, 4], "bos_token_id": 1}')
    return out


# ---- tokenizer.json and text ------------------------------------------------------------------

def tokenizer_json_seeds():
    return {name: fixture("tokenizer", name)
            for name in ["tiny_bpe.json", "tiny_bytelevel.json", "tiny_metaspace.json"]}


def tokenize_seeds():
    texts = {
        "english.txt": "The quick brown fox jumps over the lazy dog.",
        "spaces_and_newlines.txt": "  leading spaces,\ttabs\n\nand  double  spaces  \n",
        "cjk.txt": "日本語のテキストと中文文本，还有한국어.",
        "emoji.txt": "emoji 😀👍🏽 and a family 👨‍👩‍👧 with ZWJ",
        "combining.txt": "e\u0301 cafe\u0301 Å Å ﬁ",  # NFC matters here
        "special_tokens.txt": "<s>USER: <image>\nWhat is it? ASSISTANT: a cat</s>",
        "numbers_punct.txt": "3.14159, 1,000,000 -- (a) [b] {c} 'quotes' \"double\" ...!?",
        "prompt.txt": "USER: What colour is the large circle? ASSISTANT:",
        "empty.txt": "",
    }
    out = {k: v.encode("utf-8") for k, v in texts.items()}
    out["invalid_utf8.bin"] = b"ok \xc3\x28 \xed\xa0\x80 \xf4\x90\x80\x80 \xff"
    out["truncated_utf8.bin"] = "日本".encode("utf-8")[:-1]
    # read as int32 ids: valid ones, negative, past the vocabulary
    out["ids.bin"] = struct.pack("<8i", 1, 2, 100, 3000, -1, 2 ** 31 - 1, 0, 259)
    return out


# ---- JSONL -----------------------------------------------------------------------------------

SHAPES_LINES = [
    {"id": "test-000000-q0", "image": "images/test-000000.png",
     "question": "What letter is shown?", "answer": "r", "type": "letter", "split": "test",
     "seed": 2000000000000, "n_objects": 4, "target_size": "small",
     "background": "checkerboard"},
    {"id": "test-000000-q1", "image": "images/test-000000.png",
     "question": "Is the orange square at the top or the bottom?", "answer": "top",
     "type": "position", "split": "test", "seed": 2000000000000, "n_objects": 4,
     "target_size": "large", "background": "checkerboard"},
    {"id": "test-000000-q2", "image": "/abs/images/test-000000.png",
     "question": "Is the large square to the right of the red star?", "answer": "no",
     "type": "relation"},
]
PASSKEY = {"id": "test-passkey-000000",
           "context": "There is an important piece of information hidden inside a lot of "
                      "irrelevant text. The pass key is 25805. Remember it.",
           "question": "What is the pass key?", "answer": "25805", "type": "passkey",
           "tokens": 64}
RESULT = {"id": "test-000000-q0", "type": "letter", "answer": "r", "prediction": "r",
          "correct": True, "tokens": {"prompt": 40, "image": 576, "generated": 2},
          "kv_bytes": 123456, "timings": {"vision_ms": 1.5, "prefill_ms": 3.0,
                                          "decode_ms": 0.5}}


def jsonl_seeds():
    def lines(objs, tail=""):
        return ("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs) + tail).encode()
    return {
        "shapes_vqa.jsonl": lines(SHAPES_LINES),
        "passkey.jsonl": lines([PASSKEY]),
        "numeric_and_null.jsonl": lines([{"id": 7, "question": "Sum?", "answer": 12,
                                          "type": None, "image": None}]),
        "blank_lines_crlf.jsonl": b"\r\n" + lines(SHAPES_LINES[:1]).replace(b"\n", b"\r\n") +
                                  b"  \n\t\n",
        "results_torn_tail.jsonl": lines([RESULT, dict(RESULT, id="test-000000-q1")],
                                         tail='{"id": "test-000000-q2", "pred'),
        "duplicate_ids.jsonl": lines([SHAPES_LINES[0], SHAPES_LINES[0]]),
        "missing_answer.jsonl": lines([{"id": "x", "question": "q"}]),
        "unicode.jsonl": lines([{"id": "ü-1", "question": "Welche Farbe? 色は？ 🟥",
                                 "answer": "rot", "type": "colour"}]),
    }


# ---- prune specs -------------------------------------------------------------------------------

def prune_seeds():
    specs = [
        "vflowopt:tokens=64", "fastv:k=2,ratio=0.5", "pyramiddrop:layers=8/16/24,lambda=0.5",
        "visionzip:tokens=64,contextual=10", "random:tokens=4,seed=3", "none",
        "uniform-grid:tokens=16", "fastv:k=3,tokens=100",
        "vflowopt:r0=0.2,t=10,m=3,alpha=0.5,layers=4/12,r1=0.9,r2=0.5",
        "pyramiddrop:lambda=0.001", "visionzip:tokens=2,contextual=1",
        "# a tuned spec file\n\n  fastv:k=2,ratio=0.25  \n",  # the @FILE form
    ]
    return {"spec%02d.txt" % i: s.encode() for i, s in enumerate(specs)}


def main():
    targets = {
        "image": images(), "safetensors": safetensors_seeds(), "config": config_seeds(),
        "tokenizer_json": tokenizer_json_seeds(), "tokenize": tokenize_seeds(),
        "jsonl": jsonl_seeds(), "prune_spec": prune_seeds(),
    }
    total = 0
    for target, files in targets.items():
        d = os.path.join(CORPUS, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in sorted(files.items()):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            total += len(data)
        print("%-15s %3d seeds" % (target, len(files)))
    print("total %d bytes" % total)


if __name__ == "__main__":
    main()
