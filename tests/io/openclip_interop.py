"""The open_clip side of clipper's interop tests (tests/io/test_interop.cpp).

1. Loads the model clipper exported into DIR with open_clip, strictly: through
   create_model("local-dir:DIR") (which reads clipper's open_clip_config.json) and, for a built-in
   OpenCLIP name, through create_model(NAME, pretrained=DIR/open_clip_model.safetensors), after
   checking that clipper's model_cfg equals OpenCLIP's own config for that name.
2. Computes its image and text features for the inputs clipper wrote (fp32, CPU, eval mode).
3. Builds a model of the same config with open_clip's own random init, saves its state dict with
   safetensors and with torch.save (an OrderedDict inside {"state_dict": ...}, keys prefixed with
   "module."), and its features, for clipper to load and compare.
"""
import argparse
import json
import os
import sys
from collections import OrderedDict

import torch
import open_clip
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP
from safetensors.torch import load_file, save_file


def register_timm_trunk(name, trunk):
    """Registers a timm trunk timm does not ship (tiny-siglip, a full-size SigLIP trunk cut to a
    few blocks for speed) from the sizes clipper writes in open_clip_config.json's clipper block;
    open_clip then builds it by name as it builds timm's own."""
    import functools
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import _create_vision_transformer

    if timm.is_model(name):
        return
    if trunk.get("tower") == "naflex_vit":
        from naflex_interop import register_naflex_trunk
        register_naflex_trunk(dict(trunk, timm_model_name=name))
        return
    args = dict(img_size=trunk["img_size"], patch_size=trunk["patch_size"],
                embed_dim=trunk["embed_dim"], depth=trunk["depth"], num_heads=trunk["num_heads"],
                mlp_ratio=trunk["mlp_ratio"], class_token=False, global_pool=trunk["global_pool"],
                act_layer=trunk["act"],
                norm_layer=functools.partial(torch.nn.LayerNorm, eps=trunk["norm_eps"]))

    def make(pretrained=False, **kwargs):
        return _create_vision_transformer("vit_base_patch16_siglip_224", pretrained=False,
                                          **dict(args, **kwargs))
    make.__name__ = name
    register_model(make)


def build_model(model_cfg):
    """open_clip's own model of a config, as create_model builds it (CLIP or CustomTextCLIP)."""
    cfg = dict(model_cfg)
    if cfg.pop("custom_text", False):
        return CustomTextCLIP(**cfg)
    return CLIP(**cfg)


def features(model, images, tokens):
    with torch.no_grad():
        return {
            "image": model.encode_image(images, normalize=False),
            "image_norm": model.encode_image(images, normalize=True),
            "text": model.encode_text(tokens, normalize=False),
            "text_norm": model.encode_text(tokens, normalize=True),
        }


def perturb_batchnorm(model, seed):
    """Random BatchNorm weights and statistics, so every ResNet branch contributes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)


def same_config(ours, name):
    theirs = open_clip.get_model_config(name)
    if theirs is None:
        raise SystemExit(f"open_clip has no config named {name}")
    problems = []
    if CLIPVisionCfg(**ours["vision_cfg"]) != CLIPVisionCfg(**theirs["vision_cfg"]):
        problems.append(f"vision_cfg: clipper {ours['vision_cfg']} vs open_clip {theirs['vision_cfg']}")
    if CLIPTextCfg(**ours["text_cfg"]) != CLIPTextCfg(**theirs["text_cfg"]):
        problems.append(f"text_cfg: clipper {ours['text_cfg']} vs open_clip {theirs['text_cfg']}")
    for key in ("embed_dim", "custom_text", "init_logit_bias"):
        if ours.get(key) != theirs.get(key):
            problems.append(f"{key}: clipper {ours[key]} vs open_clip {theirs[key]}")
    if bool(ours.get("quick_gelu", False)) != bool(theirs.get("quick_gelu", False)):
        problems.append("quick_gelu differs")
    if problems:
        raise SystemExit("model_cfg differs from open_clip's:\n" + "\n".join(problems))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--check-configs":
        # --check-configs FILE=NAME ...: each FILE holds clipper's model_cfg for OpenCLIP's NAME.
        for pair in sys.argv[2:]:
            path, name = pair.rsplit("=", 1)
            with open(path) as f:
                same_config(json.load(f), name)
        print("configs ok:", len(sys.argv) - 2)
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--clipper-dir", required=True)
    ap.add_argument("--builtin", default="", help="OpenCLIP's name for the same architecture")
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--save-dir", required=True)
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    inputs = load_file(args.inputs)
    images, tokens = inputs["images"], inputs["tokens"]
    with open(os.path.join(args.clipper_dir, "open_clip_config.json")) as f:
        config = json.load(f)
    model_cfg = config["model_cfg"]
    if "timm_trunk" in config.get("clipper", {}):
        register_timm_trunk(model_cfg["vision_cfg"]["timm_model_name"],
                            config["clipper"]["timm_trunk"])

    out = {}
    # 1-2: clipper's export, loaded by open_clip (strict).
    a = open_clip.create_model("local-dir:" + args.clipper_dir, device="cpu", precision="fp32")
    a.eval()
    for k, v in features(a, images, tokens).items():
        out["a_" + k] = v
    if args.builtin:
        same_config(model_cfg, args.builtin)
        weights = os.path.join(args.clipper_dir, "open_clip_model.safetensors")
        a2 = open_clip.create_model(args.builtin, pretrained=weights, device="cpu", precision="fp32")
        a2.eval()
        sa, sb = a.state_dict(), a2.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
        del a2

    # 3: open_clip's own model and weights, for clipper to load.
    torch.manual_seed(1234)
    b = build_model(model_cfg)
    perturb_batchnorm(b, 99)
    b.eval()
    sd = OrderedDict((k, v.detach().clone().contiguous()) for k, v in b.state_dict().items())
    os.makedirs(args.save_dir, exist_ok=True)
    save_file(dict(sd), os.path.join(args.save_dir, "b.safetensors"))
    torch.save({"epoch": 3, "name": "interop",
                "state_dict": OrderedDict(("module." + k, v) for k, v in sd.items())},
               os.path.join(args.save_dir, "b.pt"))
    for k, v in features(b, images, tokens).items():
        out["b_" + k] = v
    save_file({k: v.contiguous() for k, v in out.items()}, args.out)
    print("open_clip", open_clip.__version__, "ok:", len(sd), "tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
