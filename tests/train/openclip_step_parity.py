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
from types import SimpleNamespace

import torch
import open_clip
from open_clip.loss import ClipLoss
from open_clip_train.params import get_default_params
from open_clip_train.scheduler import cosine_lr
from open_clip_train.train import train_one_epoch
from safetensors.torch import load_file, save_file


class RecordingClipLoss(ClipLoss):
    """open_clip's ClipLoss that remembers the value of each call."""

    def __init__(self):
        super().__init__()
        self.values = []

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        loss = out["contrastive_loss"] if isinstance(out, dict) else out
        self.values.append(loss.detach().item())
        return out


class Batches:
    """What train_one_epoch reads from data['train']: a dataloader with its counts."""

    def __init__(self, images, tokens):
        self.images, self.tokens = images, tokens
        self.num_batches = images.shape[0]
        self.num_samples = images.shape[0] * images.shape[1]

    def __iter__(self):
        for i in range(self.num_batches):
            yield self.images[i], self.tokens[i]


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
    defaults = get_default_params(a.model)
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    named = list(model.named_parameters())
    gain_or_bias = [p for n, p in named if exclude(n, p) and p.requires_grad]
    rest = [p for n, p in named if not exclude(n, p) and p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": gain_or_bias, "weight_decay": 0.0}, {"params": rest, "weight_decay": a.wd}],
        lr=a.lr,
        betas=(defaults["beta1"], defaults["beta2"]),
        eps=defaults["eps"],
    )

    batches = load_file(a.batches)
    loader = Batches(batches["images"], batches["tokens"])
    steps = loader.num_batches // a.accum_freq
    scheduler = cosine_lr(optimizer, a.lr, a.warmup, steps)
    data = {"train": SimpleNamespace(dataloader=loader, set_epoch=lambda epoch: None)}
    args = SimpleNamespace(
        device="cpu", precision="fp32", accum_freq=a.accum_freq, distill=False,
        skip_scheduler=False, grad_clip_norm=a.grad_clip_norm, horovod=False,
        log_every_n_steps=10**9, batch_size=loader.images.shape[1], world_size=1, rank=0,
        local_rank=0, wandb=False,
    )
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
