"""Checks a LoRA run's checkpoints and its export (clipper train with lora.rank > 0).

usage: check_lora_export.py FIRST_CHECKPOINT LAST_CHECKPOINT EXPORT_DIR MODEL_NAME [HF_DIR]
- between the two checkpoints only the adapters (`...lora.A`, `...lora.B`) changed: the base
  weights are frozen, and the adapters trained (B left zero);
- the export holds no adapter and equals the last checkpoint merged here, independently of clipper:
  W + scale * B @ A for each adapter (`P lora.A` beside `P weight`);
- open_clip loads the export strictly, and its features equal those of open_clip's model loaded
  with this script's merge (<= 1e-5);
- with HF_DIR (`clipper export --format hf` of the last checkpoint): transformers' CLIPModel loads
  it with no missing or unexpected key, and its image features equal open_clip's (<= 1e-5).
"""
import json
import os
import sys
import tempfile

import open_clip
import torch
from safetensors.torch import load_file

first_dir, last_dir, export, name = sys.argv[1:5]
first = load_file(os.path.join(first_dir, "model.safetensors"))
last = load_file(os.path.join(last_dir, "model.safetensors"))


def is_lora(k):
    return k.endswith(("lora.A", "lora.B", "lora.scale"))


adapters = [k[: -len("A")] for k in last if k.endswith("lora.A")]
assert adapters, "the checkpoint holds no LoRA adapter"
for k, v in last.items():
    if k.endswith("lora.B"):
        assert v.abs().max() > 0, f"{k} is still zero: the adapter did not train"
        assert not torch.equal(v, first[k]), f"{k} did not change between the checkpoints"
    elif not is_lora(k):
        assert torch.equal(v, first[k]), f"base weight {k} changed: it should be frozen"

merged = {k: v.clone() for k, v in last.items() if not is_lora(k)}
for p in adapters:  # "P lora."
    w = p[: -len("lora.")] + "weight"
    delta = last[p + "B"].double() @ last[p + "A"].double() * last[p + "scale"].double()
    merged[w] = (merged[w].double() + delta).to(merged[w].dtype)

exported = load_file(os.path.join(export, "open_clip_model.safetensors"))
assert set(exported) == set(merged), sorted(set(exported) ^ set(merged))
worst = max(float((exported[k].double() - merged[k].double()).abs().max()) for k in merged)
assert worst <= 1e-6, f"export differs from the merge by {worst}"

cfg = json.load(open(os.path.join(export, "open_clip_config.json")))
d = tempfile.mkdtemp()
with open(os.path.join(d, name + ".json"), "w") as f:
    json.dump(cfg["model_cfg"], f)
open_clip.add_model_config(d)
loaded = open_clip.create_model(name, pretrained=os.path.join(export, "open_clip_model.safetensors"))
ref = open_clip.create_model(name)
ref.load_state_dict(merged, strict=True)
loaded.eval()
ref.eval()
size = cfg["model_cfg"]["vision_cfg"]["image_size"]
torch.manual_seed(0)
images = torch.randn(4, 3, size, size)
tokens = open_clip.get_tokenizer(name)(["a photo of a sneaker.", "a bag", "a dress", "a coat"])
with torch.no_grad():
    diff = max(
        float((loaded.encode_image(images) - ref.encode_image(images)).abs().max()),
        float((loaded.encode_text(tokens) - ref.encode_text(tokens)).abs().max()),
    )
if len(sys.argv) > 5:
    from transformers import CLIPModel

    hf, info = CLIPModel.from_pretrained(sys.argv[5], output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"transformers loading info: {bad}"
    hf.eval()
    with torch.no_grad():
        out = hf.get_image_features(pixel_values=images)
        out = out if torch.is_tensor(out) else out.pooler_output
        hf_diff = float((out - ref.encode_image(images)).abs().max())
    print(f"transformers image features max abs diff {hf_diff:.3g}")
    diff = max(diff, hf_diff)
print(f"{len(adapters)} adapters merged; export vs merge {worst:.3g}; features max abs diff {diff:.3g}")
sys.exit(0 if diff <= 1e-5 else 1)
