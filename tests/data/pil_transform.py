"""OpenCLIP's image path for clipper's transform interop test: PIL decode, crop, bicubic resize.

  pil_transform.py IMAGE X Y W H S OUT   writes the S x S RGB result as raw bytes to OUT

torchvision's RandomResizedCrop / Resize on a PIL image come down to these two PIL calls.
"""
import sys

from PIL import Image

path, x, y, w, h, s, out = sys.argv[1], *map(int, sys.argv[2:7]), sys.argv[7]
img = Image.open(path).convert("RGB")
img = img.crop((x, y, x + w, y + h)).resize((s, s), Image.BICUBIC)
with open(out, "wb") as f:
    f.write(img.tobytes())
