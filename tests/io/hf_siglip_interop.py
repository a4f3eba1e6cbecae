"""The transformers side of clipper's SigLIP interop test (tests/io/test_hf_siglip_interop.cpp).

  load DIR INPUTS OUT [--strings S]
      SiglipModel / Siglip2Model.from_pretrained(DIR) as it is (config.json's model_type picks
      the class; every tensor must be in the file and nothing else). For the inputs clipper
      wrote (float images [B, 3, H, W], token ids) it writes, fp32 on CPU in eval mode: image,
      text (get_image_features / get_text_features), logit_scale, logit_bias. Siglip2Model takes
      the images as transformers' processor lays them out: patches flattened (row, column,
      channel), spatial_shapes the full grid, every patch attended. With --strings (a JSON list)
      and tokenizer files in DIR: hf_ids, AutoTokenizer's ids padded to the context length, and
      text_hf_ids, their features.
  random CONFIG_DIR SAVE_DIR INPUTS OUT --seed N
      A random SiglipModel / Siglip2Model from CONFIG_DIR/config.json, every parameter moved off
      its init (LayerNorms included: an init of ones and zeros would hide a swapped name), saved
      with save_pretrained(SAVE_DIR); the same outputs as `load` for INPUTS.
"""
import argparse
import json
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, Siglip2Config, Siglip2Model, SiglipConfig, SiglipModel

CLASSES = {"siglip": (SiglipModel, SiglipConfig), "siglip2": (Siglip2Model, Siglip2Config)}


def model_type(directory):
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        return json.load(f)["model_type"]


def features(output):
    return output if torch.is_tensor(output) else output.pooler_output


def image_features(model, images):
    if not isinstance(model, Siglip2Model):
        return features(model.get_image_features(pixel_values=images))
    p = model.config.vision_config.patch_size
    b, c, h, w = images.shape
    patches = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    patches = patches.reshape(b, (h // p) * (w // p), p * p * c)
    shapes = torch.tensor([[h // p, w // p]] * b)
    mask = torch.ones(b, patches.shape[1], dtype=torch.int32)
    return features(model.get_image_features(pixel_values=patches, pixel_attention_mask=mask,
                                             spatial_shapes=shapes))


def outputs(model, inputs):
    model.eval()
    with torch.no_grad():
        return {
            "image": image_features(model, inputs["images"]),
            "text": features(model.get_text_features(input_ids=inputs["tokens"])),
            "logit_scale": model.logit_scale.detach().clone(),
            "logit_bias": model.logit_bias.detach().clone(),
        }


def tokenizer_outputs(model, directory, strings_path):
    tok = AutoTokenizer.from_pretrained(directory)
    with open(strings_path, encoding="utf-8") as f:
        strings = json.load(f)
    length = model.config.text_config.max_position_embeddings
    enc = tok(strings, padding="max_length", max_length=length, truncation=True,
              return_tensors="pt")
    with torch.no_grad():
        text = features(model.get_text_features(input_ids=enc["input_ids"]))
    print(f"tokenizer {type(tok).__name__}: pad id {tok.pad_token_id}, eos id {tok.eos_token_id}")
    return {"hf_ids": enc["input_ids"], "text_hf_ids": text}


def load(a):
    cls = CLASSES[model_type(a.dir)][0]
    model, info = cls.from_pretrained(a.dir, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise SystemExit(f"{cls.__name__}.from_pretrained({a.dir}) was not exact: {problems}")
    out = outputs(model, load_file(a.inputs))
    if a.strings:
        out.update(tokenizer_outputs(model, a.dir, a.strings))
    print(f"transformers: {cls.__name__} loaded {a.dir} exactly")
    return out


def random(a):
    cls, config_cls = CLASSES[model_type(a.dir)]
    config = config_cls.from_pretrained(a.dir)
    torch.manual_seed(a.seed)
    model = cls(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(a.save_dir)
    print(f"transformers: a random {cls.__name__} saved to {a.save_dir}")
    return outputs(model, load_file(a.inputs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["load", "random"])
    ap.add_argument("dir")
    ap.add_argument("--save-dir")
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--strings")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    out = load(a) if a.mode == "load" else random(a)
    save_file({k: v.contiguous() for k, v in out.items()}, a.out)


if __name__ == "__main__":
    main()
