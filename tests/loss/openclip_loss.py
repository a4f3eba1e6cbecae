"""open_clip's ClipLoss / SigLipLoss on features written by test_loss_openclip.cpp.

usage: openclip_loss.py IN OUT N D clip|siglip
IN holds float64 values: image [N, D], text [N, D], logit_scale (exp'd), logit_bias.
OUT gets float64 values: loss, d image [N, D], d text [N, D], d scale, d bias.
"""
import sys

import numpy as np
import torch
from open_clip.loss import ClipLoss, SigLipLoss

src, dst, n, d, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
a = np.fromfile(src, dtype="<f8")
img = torch.tensor(a[: n * d].reshape(n, d), requires_grad=True)
txt = torch.tensor(a[n * d : 2 * n * d].reshape(n, d), requires_grad=True)
scale = torch.tensor(a[2 * n * d], requires_grad=True)
bias = torch.tensor(a[2 * n * d + 1], requires_grad=True)
if kind == "clip":
    loss = ClipLoss()(img, txt, scale)
else:
    loss = SigLipLoss()(img, txt, scale, bias)
loss.backward()
bias_grad = bias.grad.reshape(1) if bias.grad is not None else torch.zeros(1, dtype=torch.float64)
out = torch.cat([loss.detach().reshape(1), img.grad.reshape(-1), txt.grad.reshape(-1), scale.grad.reshape(1), bias_grad])
out.numpy().astype("<f8").tofile(dst)
