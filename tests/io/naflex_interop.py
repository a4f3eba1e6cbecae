"""The NaFlex tower against timm's NaFlexVit (tests/io/test_naflex_interop.cpp runs this with the
venv's Python). Modes:

  --trunk T.json --weights W --inputs I --out O --save-dir D
      T: the trunk's sizes as clipper writes them; W: clipper's tower weights under timm's names.
      Builds timm's model (registering it from T's sizes when timm does not know the name; `depth`
      cuts a model timm knows), loads W strictly, and for every picture img{i} in I runs timm's
      ResizeToSequence(budget{i}) + Patchify + NaFlexVit, one picture at a time (out a_{i}, and
      the patches p_{i}, coordinates c_{i}) and all pictures in one padded batch through timm's
      NaFlexCollator (a_batch). Then a second model of timm's own init: its weights to
      D/b.safetensors, its features as b_{i}, b_batch.
  [--names NAME SHAPES.txt] [--count NAME=PARAMS ...]
      Each timm model (num_classes=0) built on the meta device has PARAMS parameters.
  --names NAME SHAPES.txt
      The state dict of timm's NAME (num_classes=0, meta device) has exactly the names and
      shapes of SHAPES.txt ("name d0,d1,...," per line).
"""
import argparse
import json
import os
import sys
from collections import OrderedDict

import torch
from safetensors.torch import load_file, save_file


def register_naflex_trunk(trunk):
    """Registers a NaFlexVit timm does not ship (tiny-naflex) from clipper's sizes."""
    import timm
    from timm.models import register_model
    from timm.models.naflexvit import NaFlexVitCfg, _create_naflexvit

    name = trunk["timm_model_name"]
    if timm.is_model(name):
        return
    assert abs(trunk["norm_eps"] - 1e-6) < 1e-12, "timm's NaFlexVit LayerNorm has eps 1e-6"
    cfg = NaFlexVitCfg(patch_size=trunk["patch_size"], embed_dim=trunk["embed_dim"],
                       depth=trunk["depth"], num_heads=trunk["num_heads"],
                       mlp_ratio=trunk["mlp_ratio"], act_layer=trunk["act"],
                       global_pool=trunk["global_pool"],
                       pos_embed_grid_size=(trunk["pos_embed_grid"], trunk["pos_embed_grid"]),
                       pos_embed_interp_mode=trunk["pos_embed_interp"])

    def make(pretrained=False, **kwargs):
        return _create_naflexvit("naflexvit_base_patch16_siglip", pretrained=False, cfg=cfg,
                                 **kwargs)
    make.__name__ = name
    register_model(make)


def build(trunk):
    import timm
    register_naflex_trunk(trunk)
    kwargs = {"num_classes": 0}
    if trunk.get("cut_depth"):
        kwargs["depth"] = trunk["cut_depth"]
    return timm.create_model(trunk["timm_model_name"], pretrained=False, **kwargs).eval()


def features(model, trunk, inputs):
    from timm.data.naflex_dataset import NaFlexCollator
    from timm.data.naflex_transforms import Patchify, ResizeToSequence

    out, items = {}, []
    i = 0
    with torch.no_grad():
        while f"img{i}" in inputs:
            img = inputs[f"img{i}"]
            budget = int(inputs[f"budget{i}"].item())
            interp = "bicubic" if int(inputs[f"bicubic{i}"].item()) else "bilinear"
            resized = ResizeToSequence(trunk["patch_size"], max_seq_len=budget,
                                       interpolation=interp)(img)
            d = Patchify(trunk["patch_size"])(resized)
            out[f"p_{i}"] = d["patches"].contiguous()
            out[f"c_{i}"] = d["patch_coord"].contiguous()
            out[f"f_{i}"] = model(d["patches"][None], patch_coord=d["patch_coord"][None],
                                  patch_valid=d["patch_valid"][None])
            items.append((d, 0))
            i += 1
        seq_len = int(inputs["seq_len"].item())
        batch, _ = NaFlexCollator(max_seq_len=seq_len)(items)
        out["f_batch"] = model(batch["patches"], patch_coord=batch["patch_coord"],
                               patch_valid=batch["patch_valid"])
        if "square" in inputs:  # timm's standard path: [B, 3, H, W] patchified inside
            out["f_square"] = model(inputs["square"])
    return out


def interop(args):
    with open(args.trunk) as f:
        trunk = json.load(f)
    inputs = load_file(args.inputs)
    a = build(trunk)
    a.load_state_dict(load_file(args.weights), strict=True)
    result = {}
    for k, v in features(a, trunk, inputs).items():
        result[("a_" if k.startswith("f_") else "") + (k[2:] if k.startswith("f_") else k)] = v
    torch.manual_seed(4321)
    b = build(trunk)
    with torch.no_grad():  # timm's init leaves biases and LayerNorms at 0 / 1: perturb all
        for p in b.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    os.makedirs(args.save_dir, exist_ok=True)
    sd = OrderedDict((k, v.detach().clone().contiguous()) for k, v in b.state_dict().items())
    save_file(dict(sd), os.path.join(args.save_dir, "b.safetensors"))
    for k, v in features(b, trunk, inputs).items():
        if k.startswith("f_"):
            result["b_" + k[2:]] = v
    save_file({k: v.contiguous() for k, v in result.items()}, args.out)
    print("timm naflex ok:", len(sd), "tensors")
    return 0


def count(pairs):
    import timm
    bad = 0
    for pair in pairs:
        name, want = pair.split("=")
        with torch.device("meta"):
            m = timm.create_model(name, pretrained=False, num_classes=0)
        n = sum(p.numel() for p in m.parameters())
        print(f"{name}: timm {n}, clipper {want}")
        bad += n != int(want)
    print("counts", "ok" if bad == 0 else "DIFFER")
    return 1 if bad else 0


def names(name, shapes_file):
    import timm
    with torch.device("meta"):
        m = timm.create_model(name, pretrained=False, num_classes=0)
    theirs = {k: ",".join(str(d) for d in v.shape) + "," for k, v in m.state_dict().items()}
    ours = {}
    with open(shapes_file) as f:
        for line in f:
            if line.strip():
                k, s = line.split()
                ours[k] = s
    if ours != theirs:
        for k in sorted(set(ours) | set(theirs)):
            if ours.get(k) != theirs.get(k):
                print("differs:", k, ours.get(k), theirs.get(k))
        return 1
    print(f"{name}: same names and shapes ({len(ours)} tensors)")
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--trunk")
    p.add_argument("--weights")
    p.add_argument("--inputs")
    p.add_argument("--out")
    p.add_argument("--save-dir")
    p.add_argument("--count", nargs="+")
    p.add_argument("--names", nargs=2)
    args = p.parse_args()
    if args.count or args.names:  # one Python start for both checks
        bad = names(*args.names) if args.names else 0
        return (count(args.count) if args.count else 0) or bad
    return interop(args)


if __name__ == "__main__":
    sys.exit(main())
