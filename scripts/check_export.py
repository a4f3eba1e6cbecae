"""Loads a clipper export with the real open_clip, strictly, and embeds a caption.

    .venv/bin/python scripts/check_export.py runs/<run>/export [NAME]

The export folder holds open_clip_model.safetensors and open_clip_config.json; NAME (default: the
folder's parent's config) registers the model config with open_clip under that name first.
"""
import json
import os
import sys
import tempfile

import open_clip
import torch


def main():
    export = sys.argv[1]
    name = sys.argv[2] if len(sys.argv) > 2 else "clipper-export"
    cfg = json.load(open(os.path.join(export, "open_clip_config.json")))
    d = tempfile.mkdtemp()
    with open(os.path.join(d, name + ".json"), "w") as f:
        json.dump(cfg["model_cfg"], f)
    open_clip.add_model_config(d)
    weights = os.path.join(export, "open_clip_model.safetensors")
    model = open_clip.create_model(name, pretrained=weights)  # strict load
    tok = open_clip.get_tokenizer(name)
    with torch.no_grad():
        f = model.encode_text(tok(["a photo of a sneaker."]), normalize=True)
    n = sum(p.numel() for p in model.parameters())
    print(f"open_clip {open_clip.__version__} loaded {weights} strictly: {n / 1e6:.2f} M parameters, "
          f"text embedding {tuple(f.shape)}")


if __name__ == "__main__":
    main()
