"""Checks a SigLIP export from clipper loads in open_clip with its logit_bias.

usage: check_siglip_export.py EXPORT_DIR [EXPORT_DIR ...]
Each EXPORT_DIR, in one process (torch and open_clip start once): loads it with open_clip.create_model("local-dir:..."), checks the model has a logit_bias
equal to the file's, and that both the scale and the bias are near OpenCLIP's --siglip init
(ln 10, -10) after a few steps. Exits 1 when any export mismatches.
"""
import json
import math
import os
import sys

import open_clip
import torch
from safetensors.torch import load_file


def check(export):
    cfg = json.load(open(os.path.join(export, "open_clip_config.json")))["model_cfg"]
    state = load_file(os.path.join(export, "open_clip_model.safetensors"))
    model = open_clip.create_model("local-dir:" + export)
    bias = model.logit_bias
    ok = bias is not None and "logit_bias" in state
    if ok:
        ok = torch.equal(bias.detach().reshape(-1), state["logit_bias"].reshape(-1))
        ok = ok and torch.equal(model.logit_scale.detach().reshape(-1), state["logit_scale"].reshape(-1))
        ok = ok and abs(float(bias) + 10) < 0.5 and abs(float(model.logit_scale) - math.log(10)) < 0.5
        ok = ok and cfg.get("init_logit_bias") == -10 and abs(cfg["init_logit_scale"] - math.log(10)) < 1e-9
    with torch.no_grad():
        out = model(torch.zeros(2, 3, cfg["vision_cfg"]["image_size"], cfg["vision_cfg"]["image_size"]),
                    torch.zeros(2, cfg["text_cfg"]["context_length"], dtype=torch.long))
    print(f"{export}: logit_bias {None if bias is None else float(bias):.4f} logit_scale "
          f"{float(model.logit_scale):.4f} output keys {sorted(out) if isinstance(out, dict) else len(out)}")
    return ok


results = [check(export) for export in sys.argv[1:]]
sys.exit(0 if results and all(results) else 1)
