"""open_clip's DistillClipLoss on features written by test_loss_openclip.cpp.

usage: openclip_distill_loss.py IN OUT N D DT
IN holds float64 values: image [N, D], text [N, D], logit_scale (exp'd), teacher image [N, DT],
teacher text [N, DT], teacher logit_scale (exp'd).
OUT gets float64 values: contrastive loss, distill loss, and the gradients of their sum (what
open_clip_train minimizes) with respect to image [N, D], text [N, D] and the scale.
"""
import sys

import numpy as np
import torch
from open_clip.loss import DistillClipLoss

src, dst = sys.argv[1], sys.argv[2]
n, d, dt = (int(x) for x in sys.argv[3:6])
a = np.fromfile(src, dtype="<f8")
sizes = [n * d, n * d, 1, n * dt, n * dt, 1]
parts, at = [], 0
for s in sizes:
    parts.append(torch.tensor(a[at : at + s]))
    at += s
img = parts[0].reshape(n, d).requires_grad_(True)
txt = parts[1].reshape(n, d).requires_grad_(True)
scale = parts[2].reshape(()).requires_grad_(True)
losses = DistillClipLoss()(img, txt, scale, parts[3].reshape(n, dt), parts[4].reshape(n, dt),
                           parts[5].reshape(()), output_dict=True)
sum(losses.values()).backward()
out = torch.cat([losses["contrastive_loss"].detach().reshape(1),
                 losses["distill_loss"].detach().reshape(1), img.grad.reshape(-1),
                 txt.grad.reshape(-1), scale.grad.reshape(1)])
out.numpy().astype("<f8").tofile(dst)
