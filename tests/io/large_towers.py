"""The large towers (ViT-H-14, ViT-g-14, ViT-bigG-14, the SigLIP family) against open_clip without
their memory.

usage: large_towers.py COUNTS_FILE SHAPES_FILE SHAPES_NAME
  COUNTS_FILE: lines "NAME PARAMS" (clipper's parameter counts)
  SHAPES_FILE: lines "TENSOR_NAME D0,D1,..." (clipper's export state dict of SHAPES_NAME)
open_clip's CLIP(**config) is built on torch.device('meta'): shapes and counts, no storage.
"""
import sys

import open_clip
import torch


def meta_model(name):
    cfg = dict(open_clip.get_model_config(name))
    with torch.device("meta"):
        if cfg.pop("custom_text", False):  # SigLIP: a timm trunk and a TextTransformer
            return open_clip.model.CustomTextCLIP(**cfg)
        return open_clip.model.CLIP(**cfg)


def main():
    counts, shapes, shapes_name = sys.argv[1:4]
    for line in open(counts):
        name, ours = line.split()
        theirs = sum(p.numel() for p in meta_model(name).parameters())
        if int(ours) != theirs:
            raise SystemExit(f"{name}: clipper counts {ours} parameters, open_clip {theirs}")
        print(f"{name}: {theirs / 1e6:.2f} M parameters in both")
    theirs = {k: tuple(v.shape) for k, v in meta_model(shapes_name).state_dict().items()}
    ours = {}
    for line in open(shapes):
        k, *dims = line.split()  # a 0-d tensor (logit_scale) has no dimensions
        ours[k] = tuple(int(d) for d in "".join(dims).split(",") if d)
    if ours.keys() != theirs.keys():
        raise SystemExit(f"{shapes_name}: names differ: only clipper {sorted(ours.keys() - theirs.keys())[:5]}, "
                         f"only open_clip {sorted(theirs.keys() - ours.keys())[:5]}")
    bad = [k for k in ours if ours[k] != theirs[k]]
    if bad:
        raise SystemExit(f"{shapes_name}: shapes differ for {bad[:5]}")
    print(f"{shapes_name}: {len(ours)} tensors, same names and shapes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
