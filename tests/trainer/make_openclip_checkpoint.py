"""An open_clip_train epoch_N.pt for a model clipper exported (test_train_e2e.cpp).

usage: make_openclip_checkpoint.py --export-dir DIR --model NAME --epoch N --out FILE [--amp]

Loads DIR with open_clip (strict), builds main.py's AdamW (--opt adamw: group 0 the gains and
biases without weight decay, group 1 the rest at weight decay 0.2, betas and eps from
open_clip_train.params for the model family), takes one step of ClipLoss on a random batch (CPU,
fp32) and saves what main.py saves after epoch N: {"epoch": N, "name", "state_dict",
"optimizer"}. One optimizer step stands in for N epochs of them: the test only needs the file's
form, its epoch and its AdamW state. With --amp the step goes through a GradScaler, as main.py's
--precision amp does (on the CPU), and its state is saved under "scaler".
"""
import argparse
import os
import sys

import torch
import open_clip
from open_clip.loss import ClipLoss

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train"))
from openclip_train_pieces import main_py_adamw  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    for name in ("--export-dir", "--model", "--out"):
        ap.add_argument(name, required=True)
    ap.add_argument("--epoch", type=int, required=True)
    ap.add_argument("--amp", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    model = open_clip.create_model("local-dir:" + a.export_dir, device="cpu", precision="fp32")
    model.output_dict = True
    optimizer = main_py_adamw(model, a.model, 1e-4, 0.2)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    images = torch.randn(8, 3, size, size)
    tokens = torch.randint(1, 1000, (8, model.context_length))
    tokens[:, -1] = model.vocab_size - 1  # the pooled (argmax) token
    out = model(images, tokens)
    loss = ClipLoss()(out["image_features"], out["text_features"], out["logit_scale"])
    checkpoint = {"epoch": a.epoch, "name": "from-openclip"}
    if a.amp:
        scaler = torch.amp.GradScaler("cpu")
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        checkpoint["scaler"] = scaler.state_dict()
    else:
        loss.backward()
        optimizer.step()
    checkpoint["state_dict"] = model.state_dict()
    checkpoint["optimizer"] = optimizer.state_dict()
    torch.save(checkpoint, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
