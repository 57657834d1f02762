#!/usr/bin/env python3
"""Writes a checkpoint of the real LLaVA-1.5-7B architecture with random bf16 weights, for
benchmarks: CLIP ViT-L/14 at 336 px (576 image tokens), a 2-layer GELU projector, a 32-layer
4096-wide Llama with vocab 32064, in the llava-hf layout (save_pretrained: config.json,
safetensors shards, tokenizer.json, processor config).

    python3 eval/make_random_llava7b.py --tokenizer PATH/tokenizer.json --out DIR

The tokenizer is the Llama-2 one (../shared/tokenizers/llama2 carried to the GPU machine) with
<image> and <pad> added, as llava-hf's is. Weights are drawn on the GPU (normal, std 0.02; norms
at 1), so writing the ~14 GB takes about a minute.
"""
import argparse
import os
import time

import torch
from tokenizers import Tokenizer
from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(args.tokenizer),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tok.add_special_tokens({"pad_token": "<pad>"})
    vcfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                            num_attention_heads=16, image_size=336, patch_size=14,
                            projection_dim=768, hidden_act="quick_gelu")
    tcfg = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=1,
                       eos_token_id=2, pad_token_id=tok.pad_token_id)
    cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg,
                      image_token_id=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-2, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu")
    torch.manual_seed(args.seed)
    with torch.device("cuda"):
        model = LlavaForConditionalGeneration(cfg).to(torch.bfloat16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif p.dim() >= 2:
                p.normal_(0, 0.02)
            else:
                p.zero_()
    print(f"model built: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters "
          f"in {time.time() - t0:.0f}s", flush=True)
    model.save_pretrained(args.out, max_shard_size="5GB")
    ip = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                            resample=3, do_center_crop=True, do_convert_rgb=True,
                            image_mean=[0.48145466, 0.4578275, 0.40821073],
                            image_std=[0.26862954, 0.26130258, 0.27577711])
    LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14,
                   vision_feature_select_strategy="default",
                   num_additional_image_tokens=1).save_pretrained(args.out)
    print(f"saved to {args.out} in {time.time() - t0:.0f}s: {sorted(os.listdir(args.out))}",
          flush=True)


if __name__ == "__main__":
    main()
