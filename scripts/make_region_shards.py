#!/usr/bin/env python3
"""Synthetic localisation shards with regions (docs/data.md "Regions"), for SigLIP 2's LocCa
tasks and `clipper probe-patches` (issue 29 item 4's ablation).

Each sample is a black canvas (default 64 x 64) with 1 or 2 Fashion-MNIST items (the demo's data,
Debian's dataset-fashion-mnist IDX files) pasted at random positions and scales, no two
overlapping. Members per sample:
  png   the canvas (8-bit grey)
  txt   "a photo of a {class}" (two items: "a photo of a {class} and a {class}")
  json  {"regions": [{"box": [x0, y0, x1, y1], "phrase": "{class}"}, ...]}: each item's tight box
        (its pixels above 0) as fractions of the canvas, largest item first
  cls   the class index of the largest item (zero-shot; fashion_mnist.yaml's order)
Writes OUT/train and OUT/test (items drawn from the IDX train and t10k files respectively), each
with shards SPLIT-00000.tar ... and a sizes.json as `clipper shards` writes. Deterministic in
--seed. Only numpy and PIL (the project's .venv).

  .venv/bin/python scripts/make_region_shards.py data/fmnist-regions --train 4000 --test 1000
"""
import argparse
import gzip
import io
import json
import os
import tarfile

import numpy as np
from PIL import Image

CLASSES = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle boot"]  # configs/data/fashion_mnist.yaml, label order of the IDX files


def read_idx(path):
    """An IDX file (gzipped or not) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise SystemExit(f"{path}: holds {body.size} values, its header declares {shape}")
    return body.reshape(shape)


def place(rng, canvas, sizes, taken, tries=50):
    """A top-left corner for a sizes[0] x sizes[1] item inside the canvas that overlaps no box in
    `taken` (x0, y0, x1, y1 pixels), or None."""
    w, h = sizes
    for _ in range(tries):
        x, y = int(rng.integers(0, canvas - w + 1)), int(rng.integers(0, canvas - h + 1))
        if all(x + w <= a or b <= x or y + h <= c or d <= y for a, c, b, d in taken):
            return x, y
    return None


def make_sample(rng, images, labels, canvas, min_side, max_side, max_items):
    """(picture uint8 [canvas, canvas], regions [(box fractions, class)], ...) largest first."""
    pic = np.zeros((canvas, canvas), dtype=np.uint8)
    taken, items = [], []
    for _ in range(int(rng.integers(1, max_items + 1))):
        i = int(rng.integers(0, len(images)))
        side = int(rng.integers(min_side, max_side + 1))
        item = np.asarray(Image.fromarray(images[i]).resize((side, side), Image.BILINEAR))
        ys, xs = np.nonzero(item)
        if len(xs) == 0:
            continue
        tight = item[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        corner = place(rng, canvas, (tight.shape[1], tight.shape[0]), taken)
        if corner is None:
            continue
        x, y = corner
        pic[y:y + tight.shape[0], x:x + tight.shape[1]] = tight
        box = (x, y, x + tight.shape[1], y + tight.shape[0])
        taken.append(box)
        items.append((box, int(labels[i])))
    items.sort(key=lambda it: -(it[0][2] - it[0][0]) * (it[0][3] - it[0][1]))
    return pic, items


def png_bytes(pic):
    buf = io.BytesIO()
    Image.fromarray(pic).save(buf, format="PNG")
    return buf.getvalue()


def add_member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_split(out, split, count, images, labels, args, rng):
    os.makedirs(out, exist_ok=True)
    sizes, tar, shard, in_shard = {}, None, -1, 0
    for n in range(count):
        if tar is None or in_shard == args.per_shard:
            if tar is not None:
                tar.close()
            shard += 1
            in_shard = 0
            name = f"{split}-{shard:05d}.tar"
            sizes[name] = 0
            tar = tarfile.open(os.path.join(out, name), "w", format=tarfile.USTAR_FORMAT)
        items = []
        while not items:  # (an item that finds no room is left out; at least one per picture)
            pic, items = make_sample(rng, images, labels, args.canvas, args.min_side,
                                     args.max_side, args.max_items)
        c = args.canvas
        regions = [{"box": [b[0] / c, b[1] / c, b[2] / c, b[3] / c], "phrase": CLASSES[k]}
                   for b, k in items]
        caption = "a photo of a " + " and a ".join(CLASSES[k] for _, k in items)
        key = f"{split}{n:07d}"
        add_member(tar, key + ".png", png_bytes(pic))
        add_member(tar, key + ".txt", caption.encode())
        add_member(tar, key + ".json", json.dumps({"regions": regions}).encode())
        add_member(tar, key + ".cls", str(items[0][1]).encode())
        sizes[name] += 1
        in_shard += 1
    if tar is not None:
        tar.close()
    with open(os.path.join(out, "sizes.json"), "w") as f:
        json.dump(sizes, f, indent=2)
        f.write("\n")
    print(f"{out}: {count} samples in {len(sizes)} shards")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder (gets train/ and test/)")
    p.add_argument("--train", type=int, default=4000, help="training samples")
    p.add_argument("--test", type=int, default=1000, help="test samples")
    p.add_argument("--canvas", type=int, default=64, help="canvas side in pixels")
    p.add_argument("--min-side", type=int, default=20, help="smallest item side in pixels")
    p.add_argument("--max-side", type=int, default=36, help="largest item side in pixels")
    p.add_argument("--max-items", type=int, default=2, help="items per picture: 1 to this")
    p.add_argument("--per-shard", type=int, default=1000, help="samples per shard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--idx-dir", default="/usr/share/datasets/fashion-mnist",
                   help="folder of the Fashion-MNIST IDX files (Debian's dataset-fashion-mnist)")
    a = p.parse_args()
    if not 1 <= a.min_side <= a.max_side <= a.canvas:
        raise SystemExit("need 1 <= --min-side <= --max-side <= --canvas")
    if a.max_items < 1 or a.per_shard < 1 or a.train < 0 or a.test < 0:
        raise SystemExit("--max-items and --per-shard must be >= 1, --train and --test >= 0")
    for split, prefix, count, salt in (("train", "train", a.train, 0), ("test", "t10k", a.test, 1)):
        images = read_idx(os.path.join(a.idx_dir, f"{prefix}-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(a.idx_dir, f"{prefix}-labels-idx1-ubyte.gz"))
        if len(images) != len(labels):
            raise SystemExit(f"{a.idx_dir}: {prefix} has {len(images)} images, {len(labels)} labels")
        rng = np.random.default_rng([a.seed, salt])
        write_split(os.path.join(a.out, split), split, count, images, labels, a, rng)


if __name__ == "__main__":
    main()
