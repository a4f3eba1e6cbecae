"""Small CLIP_benchmark-format webdataset folders from the Fashion-MNIST test files, for the
agreement test of `clipper benchmark` with `clip_benchmark eval` (tests/eval/test_benchmark_interop.cpp).

OUT/fmnist_cls    classification: classnames.txt, templates, test/{0,1}.tar (.png + .cls); with
                  --train N also train/{0,1}.tar: N images of the Fashion-MNIST training file (the
                  linear probe's training split)
OUT/fmnist_multi  multilabel: dataset_type.txt "multilabel", .npy vectors (the class and, for every
                  third image, the next class too)
OUT/fmnist_retr   retrieval: dataset_type.txt "retrieval", .txt with two captions per image (each
                  caption names its image's number, so no two captions are the same text and no
                  score ties decide a recall)
OUT/fmnist_geo    with --grouped N: classification as DataComp's GeoDE folder: .png, .cls and an .npy
                  metadata row [region, country] (int64; region = i % 3, country = i % 5)
Images are 28x28 grey PNGs (lossless: both sides decode the same pixels).
"""
import argparse
import gzip
import io
import os
import tarfile

import numpy as np
from PIL import Image

CLASSES = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle boot"]
TEMPLATES = ["a photo of a {c}.", "a black and white photo of a {c}.", "a low resolution photo of a {c}."]


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def png(pixels):
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def add(tar, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(payload))


def npy(vector):
    buf = io.BytesIO()
    np.save(buf, vector)
    return buf.getvalue()


def write_folder(root, samples, shards, dataset_type=None, classes=True, split="test"):
    os.makedirs(os.path.join(root, split), exist_ok=True)
    if classes:
        with open(os.path.join(root, "classnames.txt"), "w") as f:
            f.write("\n".join(CLASSES) + "\n")
        with open(os.path.join(root, "zeroshot_classification_templates.txt"), "w") as f:
            f.write("\n".join(TEMPLATES) + "\n")
    if dataset_type:
        with open(os.path.join(root, "dataset_type.txt"), "w") as f:
            f.write(dataset_type + "\n")
    with open(os.path.join(root, split, "nshards.txt"), "w") as f:
        f.write(f"{shards}\n")
    per = (len(samples) + shards - 1) // shards
    for s in range(shards):
        with tarfile.open(os.path.join(root, split, f"{s}.tar"), "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s * per, min(len(samples), (s + 1) * per)):
                key = f"s{i:07d}"
                for ext, payload in samples[i]:
                    add(tar, f"{key}.{ext}", payload)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fmnist", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", required=True)
    ap.add_argument("--classification", type=int, default=1000)
    ap.add_argument("--multilabel", type=int, default=300)
    ap.add_argument("--retrieval", type=int, default=200)
    ap.add_argument("--train", type=int, default=0, help="fmnist_cls/train: this many training images")
    ap.add_argument("--grouped", type=int, default=0, help="fmnist_geo: this many test images")
    a = ap.parse_args()
    images = idx(os.path.join(a.fmnist, "t10k-images-idx3-ubyte.gz"))
    labels = idx(os.path.join(a.fmnist, "t10k-labels-idx1-ubyte.gz"))

    cls = [[("png", png(images[i])), ("cls", str(int(labels[i])).encode())]
           for i in range(a.classification)]
    write_folder(os.path.join(a.out, "fmnist_cls"), cls, 2)
    if a.train > 0:
        train_images = idx(os.path.join(a.fmnist, "train-images-idx3-ubyte.gz"))
        train_labels = idx(os.path.join(a.fmnist, "train-labels-idx1-ubyte.gz"))
        train = [[("png", png(train_images[i])), ("cls", str(int(train_labels[i])).encode())]
                 for i in range(a.train)]
        write_folder(os.path.join(a.out, "fmnist_cls"), train, 2, split="train")
    if a.multilabel == 0 and a.retrieval == 0:  # a classification folder only (speed runs)
        return

    multi = []
    for i in range(a.multilabel):
        j = a.classification + i
        v = np.zeros(len(CLASSES), dtype=np.float32)
        v[labels[j]] = 1
        if i % 3 == 0:
            v[(labels[j] + 1) % len(CLASSES)] = 1
        multi.append([("png", png(images[j])), ("npy", npy(v))])
    write_folder(os.path.join(a.out, "fmnist_multi"), multi, 2, "multilabel")

    retr = []
    for i in range(a.retrieval):
        j = a.classification + a.multilabel + i
        name = CLASSES[labels[j]]
        captions = [f"a photo of a {name}, number {i}.", f"picture {i}: a {name}."]
        retr.append([("png", png(images[j])), ("txt", "\n".join(captions).encode())])
    write_folder(os.path.join(a.out, "fmnist_retr"), retr, 2, "retrieval", classes=False)

    geo = []
    for i in range(a.grouped):
        j = a.classification + a.multilabel + a.retrieval + i
        row = np.array([i % 3, i % 5], dtype=np.int64)
        geo.append([("png", png(images[j])), ("cls", str(int(labels[j])).encode()), ("npy", npy(row))])
    if geo:
        write_folder(os.path.join(a.out, "fmnist_geo"), geo, 2)


if __name__ == "__main__":
    main()
