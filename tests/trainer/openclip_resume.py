"""An OpenCLIP run that stops after its first epoch and continues (test_openclip_resume.cpp).

usage: openclip_resume.py --clipper-dir DIR --model NAME --batches FILE --out-dir OUT
           --lr LR --warmup N --wd WD --grad-clip-norm C --epochs E

What it reproduces of open_clip_train/main.py (the CLI itself needs a dataset on disk, so its
pieces are driven here instead): the model from clipper's export (DIR, strict), main.py's AdamW
(--opt adamw, betas and eps from open_clip_train.params for the model family, param group 0 the
gains and biases without weight decay, group 1 the rest), cosine_lr over E epochs of S steps
(S = the batches of FILE less one), and open_clip_train.train.train_one_epoch for epoch 0 over S
batches, on the CPU in fp32. Then main.py's save: OUT/epoch_1.pt = {"epoch": 1, "name",
"state_dict", "optimizer": optimizer.state_dict()}, and OUT/epoch_1_module.pt with "module."
names (what a DDP-wrapped model's state_dict gives). Then main.py's --resume: a fresh model and
optimizer, model.load_state_dict and optimizer.load_state_dict from epoch_1.pt, start_epoch 1, and
train_one_epoch for epoch 1 over the last batch of FILE (an epoch of S batches of which only the
first is run: its step is S). Writes OUT/next.safetensors: `loss` (that step's) and the state dict
after it. Also OUT/epoch_1_sgd.pt, epoch_1_amsgrad.pt (the same groups with torch.optim.SGD's and
amsgrad's state) and bare.pt (a state dict alone), which clipper refuses.
"""
import argparse
import os
import sys

import torch
import open_clip
from open_clip.loss import ClipLoss
from open_clip_train.scheduler import cosine_lr
from open_clip_train.train import train_one_epoch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train"))
from openclip_train_pieces import (  # noqa: E402
    Batches, RecordingClipLoss, main_py_adamw, main_py_param_groups, train_args, train_data)


def make_model_and_optimizer(a):
    model = open_clip.create_model("local-dir:" + a.clipper_dir, device="cpu", precision="fp32")
    model.output_dict = True
    return model, main_py_adamw(model, a.model, a.lr, a.wd)


def run_epoch(a, model, optimizer, images, tokens, steps, epoch, loss):
    scheduler = cosine_lr(optimizer, a.lr, a.warmup, steps * a.epochs)
    loader = Batches(images, tokens, steps)
    args = train_args(images.shape[1], a.grad_clip_norm)
    train_one_epoch(model, train_data(loader), loss, epoch, optimizer, None, scheduler, None, args)


def save_refused(a, model):
    """Checkpoints clipper must refuse: SGD's state, amsgrad's, a bare state dict."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # Fresh dicts for each optimizer: torch.optim writes its defaults into the ones it is given.
    groups = lambda: main_py_param_groups(model, a.wd)
    for name, opt in (
        ("sgd", torch.optim.SGD(groups(), lr=0.1, momentum=0.9)),
        ("amsgrad", torch.optim.AdamW(groups(), lr=0.1, amsgrad=True)),
    ):
        for _, p in named:
            p.grad = torch.ones_like(p)
        opt.step()
        checkpoint_dict = {"epoch": 1, "name": name, "state_dict": model.state_dict(),
                           "optimizer": opt.state_dict()}
        torch.save(checkpoint_dict, os.path.join(a.out_dir, f"epoch_1_{name}.pt"))
    torch.save(model.state_dict(), os.path.join(a.out_dir, "bare.pt"))


def main():
    ap = argparse.ArgumentParser()
    for name in ("--clipper-dir", "--model", "--batches", "--out-dir"):
        ap.add_argument(name, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--wd", type=float, required=True)
    ap.add_argument("--grad-clip-norm", type=float, required=True)
    ap.add_argument("--epochs", type=int, required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    batches = load_file(a.batches)
    images, tokens = batches["images"], batches["tokens"]
    steps = images.shape[0] - 1

    model, optimizer = make_model_and_optimizer(a)
    run_epoch(a, model, optimizer, images[:steps], tokens[:steps], steps, 0, ClipLoss())
    checkpoint_dict = {
        "epoch": 1,
        "name": "openclip-resume-test",
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(checkpoint_dict, os.path.join(a.out_dir, "epoch_1.pt"))
    checkpoint_dict["state_dict"] = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save(checkpoint_dict, os.path.join(a.out_dir, "epoch_1_module.pt"))

    # main.py's --resume of epoch_1.pt, then the first step of epoch 1.
    model, optimizer = make_model_and_optimizer(a)
    checkpoint = torch.load(os.path.join(a.out_dir, "epoch_1.pt"), map_location="cpu")
    model.load_state_dict(checkpoint["state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    loss = RecordingClipLoss()
    run_epoch(a, model, optimizer, images[steps:], tokens[steps:], steps, checkpoint["epoch"], loss)
    assert len(loss.values) == 1, loss.values
    out = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    out["loss"] = torch.tensor([loss.values[0]], dtype=torch.float64)
    save_file(out, os.path.join(a.out_dir, "next.safetensors"))
    save_refused(a, model)
    print("open_clip", open_clip.__version__, "step", steps + 1, "loss", loss.values[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
