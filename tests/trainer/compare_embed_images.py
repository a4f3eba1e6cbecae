"""`clipper embed --images` against open_clip's own preprocess, on images with transparency, a
palette, grey, CMYK and an EXIF orientation (issue 19.2), and `clipper embed --texts` against
open_clip's tokenizer and text tower. One process loads open_clip ("make"); the checks need only
NumPy, so they start in a fraction of a second.

  compare_embed_images.py make EXPORT_DIR OUT_DIR [CAPTIONS_FILE]
      writes S x S images (S: the export's image size, so no resize enters the comparison) and
      open_clip's embeddings of them: drop.npy (preprocess(Image.open(f)): open_clip converts to
      RGB, dropping alpha) and white.npy (the same on the image composited over white with PIL);
      with CAPTIONS_FILE also text.npy, open_clip's normalized text features of its lines;
      prints the image paths, one per line
  compare_embed_images.py check OUT_DIR RULE CLIPPER_NPY
      drop / white: prints the smallest cosine between clipper's rows and RULE.npy, exits 1 below
      0.9999; text: prints the largest absolute difference from text.npy, exits 1 above 1e-5
"""
import io
import json
import os
import sys
import warnings

import numpy as np
from PIL import Image

warnings.simplefilter("ignore")


def images(s, rng):
    rgb = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (s, s), dtype=np.uint8)
    alpha[:, : s // 4] = 0
    yield "rgba.png", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), {}
    pal = Image.fromarray(rng.integers(0, 4, (s, s), dtype=np.uint8), "L").convert("P")
    pal.putpalette([200, 40, 40, 40, 200, 40, 40, 40, 200, 250, 250, 0])
    yield "palette.png", pal, {"transparency": bytes([255, 0, 128, 255])}
    yield "la.png", Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA"), {}
    yield "l.png", Image.fromarray(rgb[..., 1], "L"), {}
    smooth = np.linspace(0, 255, s * s * 4).reshape(s, s, 4).astype(np.uint8)
    yield "cmyk.jpg", Image.fromarray(smooth, "CMYK"), {"quality": 95}
    exif = Image.Exif()
    exif[0x0112] = 6
    yield "exif.jpg", Image.fromarray(rgb), {"quality": 95, "exif": exif.tobytes()}


def on_white(im):
    if im.mode in ("RGBA", "LA") or "transparency" in im.info:
        under = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(under, im.convert("RGBA"))
    return im


def make(export, out, captions=None):
    import open_clip
    import torch

    cfg = json.load(open(os.path.join(export, "open_clip_config.json")))
    s = cfg["model_cfg"]["vision_cfg"]["image_size"]
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + export)
    model.eval()
    os.makedirs(out, exist_ok=True)
    paths, drop, white = [], [], []
    for name, im, kw in images(s, np.random.default_rng(192)):
        path = os.path.join(out, name)
        im.save(path, **kw)
        paths.append(path)
        loaded = Image.open(path)
        drop.append(preprocess(loaded))
        white.append(preprocess(on_white(loaded)))
    with torch.no_grad():
        for rule, batch in (("drop", drop), ("white", white)):
            e = model.encode_image(torch.stack(batch), normalize=True).numpy()
            np.save(os.path.join(out, rule + ".npy"), e)
        if captions:
            lines = open(captions).read().splitlines()
            tok = open_clip.get_tokenizer("local-dir:" + export)
            e = model.encode_text(tok(lines), normalize=True).numpy()
            np.save(os.path.join(out, "text.npy"), e)
    print("\n".join(paths))


def check(out, rule, npy):
    ref = np.load(os.path.join(out, rule + ".npy"))
    ours = np.load(npy)
    if rule == "text":
        diff = float(np.abs(ours - ref).max())
        print(f"text: max abs diff {diff:.3g} over {ours.shape}")
        sys.exit(0 if ours.shape == ref.shape and diff <= 1e-5 else 1)
    cos = (ref * ours).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(ours, axis=1)
    print(f"{rule}: cosine per image {np.round(cos, 6).tolist()}, min {cos.min():.6f}")
    sys.exit(0 if ours.shape == ref.shape and cos.min() >= 0.9999 else 1)


if sys.argv[1] == "make":
    make(*sys.argv[2:5])
else:
    check(sys.argv[2], sys.argv[3], sys.argv[4])
