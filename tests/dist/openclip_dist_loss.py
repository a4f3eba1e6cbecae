"""open_clip's ClipLoss on 2+ ranks (torchrun, Gloo), for test_dist_openclip.cpp.

usage: torchrun --nproc-per-node W openclip_dist_loss.py IN OUT_DIR B D
IN holds float64 values: image [W*B, D], text [W*B, D], logit_scale (already exponentiated).
For each (local_loss, gather_with_grad) every rank writes OUT_DIR/openclip_l<L>g<G>_rank<R>.bin:
float64 loss, d image [B, D], d text [B, D], d scale (its own, before any reduction).
"""
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from open_clip.loss import ClipLoss


def main():
    src, out_dir, b, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    a = np.fromfile(src, dtype="<f8")
    n = world * b * d
    img_all = torch.tensor(a[:n].reshape(world * b, d))
    txt_all = torch.tensor(a[n : 2 * n].reshape(world * b, d))
    for local in (0, 1):
        for grad in (0, 1):
            img = img_all[rank * b : (rank + 1) * b].clone().requires_grad_(True)
            txt = txt_all[rank * b : (rank + 1) * b].clone().requires_grad_(True)
            scale = torch.tensor(a[2 * n], requires_grad=True)
            loss_fn = ClipLoss(
                local_loss=bool(local), gather_with_grad=bool(grad), rank=rank, world_size=world
            )
            loss = loss_fn(img, txt, scale)
            loss.backward()
            out = torch.cat(
                [loss.detach().reshape(1), img.grad.reshape(-1), txt.grad.reshape(-1), scale.grad.reshape(1)]
            )
            name = os.path.join(out_dir, f"openclip_l{local}g{grad}_rank{rank}.bin")
            out.numpy().astype("<f8").tofile(name)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
