"""The open_clip side of clipper's CoCa interop test (tests/io/test_coca_interop.cpp), one process.

usage: coca_interop.py JOB.json
JOB: {"cases": [{"dir": D, "inputs": I, "out": O, "name": N}], "named": {"name": NAME, "dir": D,
      "inputs": I, "out": O}, "counts": {NAME: PARAMS}, "configs": {NAME: MODEL_CFG.json}}
  cases: the model clipper exported into D is loaded strictly through
      create_model("local-dir:D"); for the images and tokens of I (fp32, CPU, eval mode) it writes
      to O its image and text features, caption logits, labels, CoCaLoss (clip weight 1, caption
      weight 2) terms, the gradient of their sum for every parameter ("g." + name), and its
      generate() outputs (greedy: top_k 1; beam_search with its defaults) when I holds
      gen_images.
  named: create_model(NAME, pretrained=D/open_clip_model.safetensors), strictly, after checking
      that clipper's model_cfg equals open_clip's config for NAME; its features for I.
  counts: open_clip's CoCa built on the meta device from its own config has PARAMS parameters.
  configs: clipper's exported model_cfg for NAME equals open_clip's shipped config field by field
      (the keys open_clip's CoCa reads).
"""
import json
import os
import sys

import torch
import open_clip
from open_clip.coca_model import CoCa
from open_clip.loss import CoCaLoss
from safetensors.torch import load_file, save_file


def meta_coca(name):
    cfg = dict(open_clip.get_model_config(name))
    cfg.pop("custom_text", None)
    with torch.device("meta"):
        return CoCa(**cfg)


def outputs(model, inputs):
    images, tokens = inputs["images"], inputs["tokens"]
    model.eval()
    out = model(images, tokens)
    loss_fn = CoCaLoss(caption_loss_weight=2.0, clip_loss_weight=1.0)
    clip_loss, caption_loss = loss_fn(out["image_features"], out["text_features"], out["logits"],
                                      out["labels"], out["logit_scale"])
    total = clip_loss + caption_loss
    model.zero_grad()
    total.backward()
    res = {
        "image_features": out["image_features"],
        "text_features": out["text_features"],
        "logits": out["logits"],
        "labels": out["labels"],
        "clip_loss": clip_loss.reshape(1),
        "caption_loss": caption_loss.reshape(1),
    }
    for name, p in model.named_parameters():
        if p.grad is not None:
            res["g." + name] = p.grad
    if "gen_images" in inputs:
        gen = inputs["gen_images"]
        seq_len = int(inputs["gen_seq_len"].item())
        with torch.no_grad():
            res["greedy"] = model.generate(gen, generation_type="top_k", top_k=1, seq_len=seq_len)
            res["beam"] = model.generate(gen, generation_type="beam_search", seq_len=seq_len)
    return {k: v.detach().contiguous() for k, v in res.items()}


def check_config(name, path):
    ours = json.load(open(path))
    theirs = open_clip.get_model_config(name)
    bad = []
    for section in ("vision_cfg", "text_cfg", "multimodal_cfg"):
        for k, v in theirs.get(section, {}).items():
            if section == "multimodal_cfg" and k not in ("width", "heads", "layers",
                                                         "context_length"):
                continue  # open_clip's decoder does not read them
            if ours[section].get(k) != v:
                bad.append(f"{section}.{k}: clipper {ours[section].get(k)}, open_clip {v}")
    for k in ("embed_dim", "custom_text"):
        if ours.get(k) != theirs.get(k):
            bad.append(f"{k}: clipper {ours.get(k)}, open_clip {theirs.get(k)}")
    if bad:
        raise SystemExit(f"{name}: configs differ: {bad}")
    print(f"{name}: config equal")


def main():
    job = json.load(open(sys.argv[1]))
    torch.manual_seed(0)
    for name, path in job.get("configs", {}).items():
        check_config(name, path)
    for name, ours in job.get("counts", {}).items():
        theirs = sum(p.numel() for p in meta_coca(name).parameters())
        if int(ours) != theirs:
            raise SystemExit(f"{name}: clipper counts {ours} parameters, open_clip {theirs}")
        print(f"{name}: {theirs} parameters in both")
    for case in job.get("cases", []):
        model = open_clip.create_model("local-dir:" + case["dir"])
        save_file(outputs(model, load_file(case["inputs"])), case["out"])
        print(f"{case['name']}: outputs written")
    named = job.get("named")
    if named:
        weights = os.path.join(named["dir"], "open_clip_model.safetensors")
        model = open_clip.create_model(named["name"], pretrained=weights)
        inputs = load_file(named["inputs"])
        model.eval()
        with torch.no_grad():
            out = model(inputs["images"], inputs["tokens"])
        save_file({"image_features": out["image_features"].contiguous(),
                   "text_features": out["text_features"].contiguous(),
                   "logits": out["logits"].contiguous()}, named["out"])
        print(f"{named['name']}: loaded strictly from {weights}")
    print("coca interop ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
