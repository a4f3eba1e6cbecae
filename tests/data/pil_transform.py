"""OpenCLIP's image path for clipper's transform interop test.

  pil_transform.py IMAGE X Y W H S OUT   training: PIL crop of the box, bicubic resize to S x S
  pil_transform.py IMAGE eval S OUT      evaluation: open_clip.image_transform(S, is_train=False)
                                         up to (not including) ToTensor and Normalize
Each writes the S x S RGB result as raw bytes to OUT.

torchvision's RandomResizedCrop on a PIL image comes down to the two PIL calls of the first form.
"""
import sys

from PIL import Image

path = sys.argv[1]
img = Image.open(path).convert("RGB")
if sys.argv[2] == "eval":
    import open_clip
    from torchvision import transforms

    s, out = int(sys.argv[3]), sys.argv[4]
    for t in open_clip.image_transform(s, is_train=False).transforms:
        if not isinstance(t, (transforms.ToTensor, transforms.Normalize)):
            img = t(img)
else:
    x, y, w, h, s = map(int, sys.argv[2:7])
    out = sys.argv[7]
    img = img.crop((x, y, x + w, y + h)).resize((s, s), Image.BICUBIC)
assert img.size == (s, s), img.size
with open(out, "wb") as f:
    f.write(img.tobytes())
