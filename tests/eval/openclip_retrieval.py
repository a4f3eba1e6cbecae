"""open_clip_train's get_clip_metrics on features written by test_retrieval.cpp.

usage: openclip_retrieval.py IN OUT N D
IN holds float32 values: image [N, D], text [N, D]. OUT gets one line: image_to_text R@1 R@5 R@10,
then text_to_image R@1 R@5 R@10 (logit_scale 1).
"""
import sys

import numpy as np
import torch
from open_clip_train.train import get_clip_metrics

src, dst, n, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
a = np.fromfile(src, dtype="<f4")
img = torch.tensor(a[: n * d].reshape(n, d))
txt = torch.tensor(a[n * d : 2 * n * d].reshape(n, d))
m = get_clip_metrics(img, txt, torch.tensor(1.0))
keys = [f"{w}_R@{k}" for w in ("image_to_text", "text_to_image") for k in (1, 5, 10)]
with open(dst, "w") as f:
    f.write(" ".join(repr(float(m[k])) for k in keys) + "\n")
