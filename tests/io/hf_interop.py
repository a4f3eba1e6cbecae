"""The transformers side of clipper's Hugging Face export test (tests/io/test_hf_interop.cpp).

Loads what `clipper export --format hf` wrote into DIR with transformers' own classes, as they
are: CLIPModel.from_pretrained(DIR) (every tensor must be in the file and nothing else) and
CLIPTokenizer.from_pretrained(DIR). For the inputs clipper wrote (float images, clipper's token
ids) it writes, fp32 on CPU in eval mode:
  image, text       get_image_features / get_text_features of clipper's ids
  hf_ids            CLIPTokenizer's ids of the same strings (padding to the context length,
                    truncation on), -1 after the end-of-text token (transformers pads with
                    <|endoftext|>, open_clip with 0)
  text_hf_ids       get_text_features of CLIPTokenizer's own padded ids
"""
import argparse
import json

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPModel, CLIPTokenizer


def features(output):
    # transformers 5 returns a model output whose pooler_output is the projected feature.
    return output if torch.is_tensor(output) else output.pooler_output


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--strings", required=True, help="a JSON list of strings")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    model, info = CLIPModel.from_pretrained(a.dir, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise SystemExit(f"CLIPModel.from_pretrained({a.dir}) was not exact: {problems}")
    model.eval()
    tok = CLIPTokenizer.from_pretrained(a.dir)
    inputs = load_file(a.inputs)
    with open(a.strings, encoding="utf-8") as f:
        strings = json.load(f)
    length = model.config.text_config.max_position_embeddings
    if tok.model_max_length != length:
        raise SystemExit(f"tokenizer model_max_length {tok.model_max_length} != {length}")
    enc = tok(strings, padding="max_length", max_length=length, truncation=True,
              return_tensors="pt")
    hf_ids = enc["input_ids"].clone()
    eot = tok.eos_token_id
    for row in hf_ids:
        end = int((row == eot).nonzero()[0])
        row[end + 1:] = -1
    with torch.no_grad():
        out = {
            "image": features(model.get_image_features(pixel_values=inputs["images"])),
            "text": features(model.get_text_features(input_ids=inputs["tokens"])),
            "text_hf_ids": features(model.get_text_features(input_ids=enc["input_ids"])),
            "hf_ids": hf_ids,
        }
    save_file({k: v.contiguous() for k, v in out.items()}, a.out)
    print(f"transformers: loaded {a.dir} exactly; {len(strings)} strings, eos id {eot}, "
          f"pad id {tok.pad_token_id}")


if __name__ == "__main__":
    main()
