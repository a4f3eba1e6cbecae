"""Cuts N 256-px JPEG crops (quality 95) from real photographs, each with a caption file beside it.

  make_photo_crops.py PHOTO_DIR OUT_DIR N

Crops are random boxes (at least 256 px on the shorter side, aspect 3:4..4:3) of the photos,
resized so the shorter side is 256 (bicubic), like img2dataset's output.
"""
import os
import random
import sys

from PIL import Image

WORDS = ["a", "photo", "of", "the", "city", "street", "with", "trees", "fruit", "on", "table", "building",
         "old", "bright", "view", "close", "up", "plant", "in", "pot", "painting", "scene", "sky", "people"]


def main(photo_dir, out_dir, n):
    rng = random.Random(0)
    photos = []
    for name in sorted(os.listdir(photo_dir)):
        if name.lower().endswith((".jpg", ".jpeg", ".png")):
            im = Image.open(os.path.join(photo_dir, name)).convert("RGB")
            if min(im.size) >= 256:
                photos.append(im)
    if not photos:
        sys.exit(f"no photograph of at least 256 px in {photo_dir}")
    os.makedirs(out_dir, exist_ok=True)
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        side = rng.randint(256, min(w, h))
        ratio = rng.uniform(3 / 4, 4 / 3)
        cw, ch = min(w, int(side * ratio)), side
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = im.crop((x, y, x + cw, y + ch))
        s = 256 / min(crop.size)
        crop = crop.resize((max(256, round(crop.width * s)), max(256, round(crop.height * s))), Image.BICUBIC)
        stem = os.path.join(out_dir, f"{i:06d}")
        crop.save(stem + ".jpg", quality=95)
        with open(stem + ".txt", "w") as f:
            f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
