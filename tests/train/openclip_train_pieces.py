"""The pieces of open_clip_train that clipper's parity tests drive without its CLI (which needs a
dataset on disk): main.py's AdamW param groups, the args train_one_epoch reads, a dataloader
stand-in and a ClipLoss that records its values. Imported by tests/train/openclip_step_parity.py,
tests/trainer/openclip_resume.py and tests/trainer/make_openclip_checkpoint.py.
"""
from types import SimpleNamespace

import torch
from open_clip.loss import ClipLoss
from open_clip_train.params import get_default_params


def excluded_from_decay(name, p):
    """main.py's rule: gains, biases and logit_scale take no weight decay."""
    return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def main_py_param_groups(model, weight_decay):
    """main.py's two groups over the trainable parameters: no weight decay, then the rest."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if excluded_from_decay(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not excluded_from_decay(n, p)],
         "weight_decay": weight_decay},
    ]


def main_py_adamw(model, model_name, lr, weight_decay):
    """main.py's --opt adamw, betas and eps from open_clip_train.params for the model family."""
    defaults = get_default_params(model_name)
    return torch.optim.AdamW(
        main_py_param_groups(model, weight_decay),
        lr=lr,
        betas=(defaults["beta1"], defaults["beta2"]),
        eps=defaults["eps"],
    )


def train_args(batch_size, grad_clip_norm, accum_freq=1):
    """The args train_one_epoch reads, for one CPU process in fp32."""
    return SimpleNamespace(
        device="cpu", precision="fp32", accum_freq=accum_freq, distill=False,
        skip_scheduler=False, grad_clip_norm=grad_clip_norm, horovod=False,
        log_every_n_steps=10**9, batch_size=batch_size, world_size=1, rank=0, local_rank=0,
        wandb=False,
    )


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
    """What train_one_epoch reads from data['train'].dataloader: the given batches, and counts for
    an epoch of `num_batches` (default: as many as given)."""

    def __init__(self, images, tokens, num_batches=None):
        self.images, self.tokens = images, tokens
        self.num_batches = images.shape[0] if num_batches is None else num_batches
        self.num_samples = self.num_batches * images.shape[1]

    def __iter__(self):
        for i in range(self.images.shape[0]):
            yield self.images[i], self.tokens[i]


def train_data(loader):
    """The `data` dict of train_one_epoch."""
    return {"train": SimpleNamespace(dataloader=loader, set_epoch=lambda epoch: None)}
