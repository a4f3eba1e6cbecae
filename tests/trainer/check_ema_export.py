"""Checks that a clipper export of a checkpoint's weight average holds the average.

usage: check_ema_export.py EXPORT_DIR CHECKPOINT_DIR
Loads EXPORT_DIR with open_clip.create_model("local-dir:..."); every tensor of the checkpoint's
ema.safetensors must equal the loaded model's, every other tensor the checkpoint's
model.safetensors', and most averaged tensors must differ from the raw weights. Exits 1 otherwise.
"""
import os
import sys

import open_clip
import torch
from safetensors.torch import load_file

export, ckpt = sys.argv[1], sys.argv[2]
model = open_clip.create_model("local-dir:" + export)
loaded = {k: v.detach() for k, v in model.state_dict().items()}
ema = load_file(os.path.join(ckpt, "ema.safetensors"))
raw = load_file(os.path.join(ckpt, "model.safetensors"))
bad = [k for k, v in ema.items() if not torch.equal(loaded[k].reshape(v.shape), v)]
bad += [k for k, v in raw.items() if k not in ema and not torch.equal(loaded[k].reshape(v.shape), v)]
differ = sum(not torch.equal(v, raw[k]) for k, v in ema.items())
print(f"{len(ema)} averaged tensors of {len(raw)}, {differ} differ from the weights, "
      f"{len(bad)} mismatched {bad[:5]}")
sys.exit(0 if not bad and differ > len(ema) // 2 else 1)
