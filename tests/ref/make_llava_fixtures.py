#!/usr/bin/env python3
"""Builds small random LLaVA checkpoints and records Hugging Face transformers' outputs for them.

Run on the GPU machine (transformers 5.17, torch 2.11, tokenizers); the reference is computed on
the CPU in float32 so that it is deterministic and free of TF32. For each model variant it writes
into OUT/<name>/:
  checkpoint files   config.json, model.safetensors or shards + index, tokenizer.json,
                     tokenizer_config.json, preprocessor_config.json (as save_pretrained writes them)
  ref/pixels.npy            [3, H, W]   the processor's pixel_values for image.png
  ref/image_features.npy    [N, D]      the projector output (what replaces <image> tokens)
  ref/input_ids.npy         [T]         the processor's ids for the image prompt
  ref/logits.npy            [T, V]      logits at every prompt position (float32 compute)
  ref/greedy.npy            [<=16]      greedy continuation (stops at EOS like generate())
  ref/text_input_ids.npy, ref/text_logits.npy, ref/text_greedy.npy   the same, text-only prompt
  ref/logits_bf16.npy       [T, V]      (bf16-stored models only) logits computed in bfloat16
  image.png                             the input image
  ref/meta.json                         prompts, versions, variant description
Usage: python3 make_llava_fixtures.py OUT
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image

import transformers
from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "eval", "train"))
from llama_bpe import train_llama_bpe  # noqa: E402

QUESTION_PROMPT = "USER: <image>\nWhat colour is the big shape on the left? ASSISTANT:"
TEXT_PROMPT = "USER: Tell me a short story about a red cat and a blue dog. ASSISTANT:"


def train_tokenizer(vocab_size):
    """A Llama-style byte-fallback BPE (legacy normalizer, ByteFallback decoder), trained here."""
    words = ("the a red green blue yellow cat dog circle square triangle star shape colour left "
             "right top bottom big small what is in picture story tell me short and of on how "
             "many there are one two three four five yes no USER ASSISTANT image").split()
    rng = np.random.default_rng(7)
    lines = [" ".join(rng.choice(words, size=12)) + "." for _ in range(3000)]
    return train_llama_bpe(lines, vocab_size)


def make_image(path, w, h, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    img[..., 0] = 255 * xx / max(w - 1, 1)
    img[..., 1] = 255 * yy / max(h - 1, 1)
    img[..., 2] = 128 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    img += rng.normal(0, 20, img.shape)
    cx, cy, r = w * 0.3, h * 0.5, min(w, h) * 0.2
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = [220, 30, 30]
    img[int(h * 0.2):int(h * 0.4), int(w * 0.6):int(w * 0.8)] = [30, 30, 220]
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)


VARIANTS = [
    dict(name="tiny_f32", dtype="float32", shard=None, old_names=False, image=(48, 40),
         vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, image_size=28, patch_size=14, hidden_act="quick_gelu"),
         text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=4),
         llava=dict(vision_feature_layer=-2, vision_feature_select_strategy="default",
                    projector_hidden_act="gelu")),
    dict(name="gqa_bf16_sharded", dtype="bfloat16", shard="150KB", old_names=False, image=(64, 90),
         vision=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                     num_attention_heads=3, image_size=30, patch_size=10, hidden_act="gelu"),
         text=dict(hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                   num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True,
                   rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                     high_freq_factor=4.0,
                                     original_max_position_embeddings=64),
                   max_position_embeddings=512),
         llava=dict(vision_feature_layer=-1, vision_feature_select_strategy="full",
                    projector_hidden_act="gelu")),
    dict(name="mqa_f32_oldnames", dtype="float32", shard="200KB", old_names=True, image=(70, 56),
         vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                     num_attention_heads=2, image_size=56, patch_size=14, hidden_act="quick_gelu"),
         text=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                   rope_theta=500000.0, rope_scaling=dict(rope_type="linear", factor=2.0)),
         llava=dict(vision_feature_layer=-3, vision_feature_select_strategy="default",
                    projector_hidden_act="gelu")),
]


def to_old_names(dirpath):
    """Rewrites the saved weights with the transformers 4.x names the Hub's llava-hf files use."""
    from safetensors.torch import load_file, save_file
    files = sorted(f for f in os.listdir(dirpath) if f.endswith(".safetensors"))
    index_path = os.path.join(dirpath, "model.safetensors.index.json")
    index = json.load(open(index_path)) if os.path.exists(index_path) else None

    def rename(k):
        for new, old in (("model.language_model.", "language_model.model."),
                         ("model.vision_tower.", "vision_tower."),
                         ("model.multi_modal_projector.", "multi_modal_projector."),
                         ("lm_head.", "language_model.lm_head.")):
            if k.startswith(new):
                return old + k[len(new):]
        return k
    for f in files:
        p = os.path.join(dirpath, f)
        sd = load_file(p)
        save_file({rename(k): v.contiguous() for k, v in sd.items()}, p, metadata={"format": "pt"})
    if index:
        index["weight_map"] = {rename(k): v for k, v in index["weight_map"].items()}
        json.dump(index, open(index_path, "w"), indent=2)


def main():
    out_root = sys.argv[1]
    torch.manual_seed(0)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for v in VARIANTS:
        out = os.path.join(out_root, v["name"])
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(os.path.join(out, "ref"))
        tok = train_tokenizer(512)
        vocab = len(tok)
        vcfg = CLIPVisionConfig(**v["vision"])
        text = dict(v["text"])
        text.setdefault("max_position_embeddings", 256)
        tcfg = LlamaConfig(vocab_size=vocab, bos_token_id=1, eos_token_id=2,
                           pad_token_id=tok.pad_token_id, **text)
        cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg,
                          image_token_id=tok.convert_tokens_to_ids("<image>"),
                          tie_word_embeddings=text.get("tie_word_embeddings", False), **v["llava"])
        torch.manual_seed(hash(v["name"]) % 1000)
        model = LlavaForConditionalGeneration(cfg).eval()
        with torch.no_grad():  # random init is small; widen it so logits are not flat
            for name, p in model.named_parameters():
                if p.dim() >= 2:
                    p.normal_(0, 0.08)
                elif "norm" in name and name.endswith("weight"):
                    p.uniform_(0.8, 1.2)
                else:
                    p.normal_(0, 0.02)
        size = vcfg.image_size
        ip = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                resample=3, do_center_crop=True, do_convert_rgb=True,
                                image_mean=[0.48145466, 0.4578275, 0.40821073],
                                image_std=[0.26862954, 0.26130258, 0.27577711])
        proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=vcfg.patch_size,
                              vision_feature_select_strategy=v["llava"]["vision_feature_select_strategy"],
                              num_additional_image_tokens=1)
        save_kwargs = {"max_shard_size": v["shard"]} if v["shard"] else {}
        model.to(getattr(torch, v["dtype"])).save_pretrained(out, **save_kwargs)
        proc.save_pretrained(out)
        # Reload from disk through the Auto classes, as a user would.
        proc = transformers.AutoProcessor.from_pretrained(out)
        print(v["name"], "processor:", type(proc).__name__, type(proc.image_processor).__name__)
        model = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
        img_path = os.path.join(out, "image.png")
        make_image(img_path, *v["image"], seed=len(v["name"]))
        image = Image.open(img_path)

        feats = {}
        model.model.multi_modal_projector.register_forward_hook(
            lambda m, i, o: feats.__setitem__("f", o.detach()))
        enc = proc(images=image, text=QUESTION_PROMPT, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0].float().numpy()
            gen = model.generate(**enc, max_new_tokens=16, do_sample=False)
        ref = os.path.join(out, "ref")
        np.save(os.path.join(ref, "pixels.npy"), enc["pixel_values"][0].float().numpy())
        np.save(os.path.join(ref, "image_features.npy"),
                feats["f"].reshape(-1, feats["f"].shape[-1]).float().numpy())
        np.save(os.path.join(ref, "input_ids.npy"), enc["input_ids"][0].numpy().astype(np.int64))
        np.save(os.path.join(ref, "logits.npy"), logits)
        np.save(os.path.join(ref, "greedy.npy"),
                gen[0, enc["input_ids"].shape[1]:].numpy().astype(np.int64))

        tenc = proc.tokenizer(TEXT_PROMPT, return_tensors="pt")
        with torch.no_grad():
            tlog = model(**tenc).logits[0].float().numpy()
            tgen = model.generate(**tenc, max_new_tokens=16, do_sample=False)
        np.save(os.path.join(ref, "text_input_ids.npy"), tenc["input_ids"][0].numpy().astype(np.int64))
        np.save(os.path.join(ref, "text_logits.npy"), tlog)
        np.save(os.path.join(ref, "text_greedy.npy"),
                tgen[0, tenc["input_ids"].shape[1]:].numpy().astype(np.int64))
        if v["dtype"] == "bfloat16":
            mb = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.bfloat16).eval()
            with torch.no_grad():
                np.save(os.path.join(ref, "logits_bf16.npy"), mb(**enc).logits[0].float().numpy())
        if v["old_names"]:
            to_old_names(out)
        meta = dict(variant=v, question_prompt=QUESTION_PROMPT, text_prompt=TEXT_PROMPT,
                    transformers=transformers.__version__, torch=torch.__version__,
                    processor=type(proc.image_processor).__name__,
                    n_image_tokens=int((enc["input_ids"][0] == cfg.image_token_id).sum()),
                    greedy_text=proc.tokenizer.decode(gen[0, enc["input_ids"].shape[1]:],
                                                      skip_special_tokens=True))
        json.dump(meta, open(os.path.join(ref, "meta.json"), "w"), indent=2)
        print(v["name"], "files:", sorted(os.listdir(out)))
        print(v["name"], "config:", open(os.path.join(out, "config.json")).read()[:3000])
        from safetensors import safe_open
        for f in sorted(os.listdir(out)):
            if f.endswith(".safetensors"):
                with safe_open(os.path.join(out, f), "pt") as sf:
                    print(v["name"], f, sorted(sf.keys())[:6], "...", len(list(sf.keys())))
        print(v["name"], "tokens", enc["input_ids"].shape, "greedy", meta["greedy_text"])


if __name__ == "__main__":
    main()
