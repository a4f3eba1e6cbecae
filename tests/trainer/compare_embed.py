"""Checks `clipper embed --texts` against open_clip on the same exported weights.

usage: compare_embed.py EXPORT_DIR MODEL_NAME CAPTIONS_FILE CLIPPER_NPY
Prints the largest absolute difference; exits 1 when it is above 1e-5.
"""
import json
import os
import sys
import tempfile

import numpy as np
import open_clip
import torch

export, name, captions, npy = sys.argv[1:5]
cfg = json.load(open(os.path.join(export, "open_clip_config.json")))
d = tempfile.mkdtemp()
with open(os.path.join(d, name + ".json"), "w") as f:
    json.dump(cfg["model_cfg"], f)
open_clip.add_model_config(d)
model = open_clip.create_model(name, pretrained=os.path.join(export, "open_clip_model.safetensors"))
model.eval()
lines = open(captions).read().splitlines()
tok = open_clip.get_tokenizer(name)
with torch.no_grad():
    ref = model.encode_text(tok(lines), normalize=True).numpy()
ours = np.load(npy)
diff = float(np.abs(ours - ref).max())
print(f"max abs diff {diff:.3g} over {ours.shape}")
sys.exit(0 if ours.shape == ref.shape and diff <= 1e-5 else 1)
