"""open_clip's own training step on clipper's initial weights and batches (test_step_parity.cpp).

usage: openclip_step_parity.py --clipper-dir DIR --model NAME --batches FILE --out FILE
           --lr LR --warmup N --wd WD --grad-clip-norm C --accum-freq A [--freeze-logit-scale]

Loads clipper's export (DIR, strict) with open_clip, builds the optimizer as open_clip_train's
main.py does (AdamW with its defaults for the model family from open_clip_train.params, no weight
decay for gains, biases and logit_scale), the warmup + cosine schedule of
open_clip_train.scheduler, and runs open_clip_train.train.train_one_epoch over the batches of
FILE (images [steps * A, B, 3, H, W] float, tokens [steps * A, B, L]) on the CPU in fp32: its
forward, ClipLoss, backward, gradient clipping, optimizer step and logit-scale clamp. Writes
FILE: `losses` (each step's loss) and the final state dict.
"""
import argparse
import sys

import torch
import open_clip
from open_clip_train.scheduler import cosine_lr
from open_clip_train.train import train_one_epoch
from safetensors.torch import load_file, save_file

from openclip_train_pieces import Batches, RecordingClipLoss, main_py_adamw, train_args, train_data


def main():
    ap = argparse.ArgumentParser()
    for name in ("--clipper-dir", "--model", "--batches", "--out"):
        ap.add_argument(name, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--wd", type=float, required=True)
    ap.add_argument("--grad-clip-norm", type=float, required=True)
    ap.add_argument("--accum-freq", type=int, default=1)
    ap.add_argument("--freeze-logit-scale", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)

    model = open_clip.create_model("local-dir:" + a.clipper_dir, device="cpu", precision="fp32")
    model.output_dict = True
    if a.freeze_logit_scale:
        model.logit_scale.requires_grad_(False)

    # The optimizer of open_clip_train/main.py (--opt adamw, betas and eps left to the defaults).
    optimizer = main_py_adamw(model, a.model, a.lr, a.wd)

    batches = load_file(a.batches)
    loader = Batches(batches["images"], batches["tokens"])
    steps = loader.num_batches // a.accum_freq
    scheduler = cosine_lr(optimizer, a.lr, a.warmup, steps)
    data = train_data(loader)
    args = train_args(loader.images.shape[1], a.grad_clip_norm, a.accum_freq)
    loss = RecordingClipLoss()
    train_one_epoch(model, data, loss, 0, optimizer, None, scheduler, None, args)

    # Each step's loss: the last call of the step (under accumulation every call of a step is
    # the loss of the whole accumulated batch).
    losses = torch.tensor(loss.values[a.accum_freq - 1 :: a.accum_freq], dtype=torch.float64)
    assert losses.numel() == steps, (losses.numel(), steps)
    out = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    out["losses"] = losses
    save_file(out, a.out)
    print("open_clip", open_clip.__version__, "steps:", steps, "last loss:", losses[-1].item())
    return 0


if __name__ == "__main__":
    sys.exit(main())
