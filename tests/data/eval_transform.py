"""open_clip's evaluation transform for clipper's preprocess_cfg interop test
(tests/data/test_interop.cpp, Interop.EvalTransformMatchesOpenClipPerResizeModeAndFilter).

  eval_transform.py OUT_DIR S   writes photo.png (RGB, 150 x 97), tall.png (RGB, 45 x 70, enlarged
                                by every mode) and icon.png (RGBA, 72 x 48: opaque shapes, soft
                                edges, coloured fully transparent pixels), then for each picture,
                                resize mode (shortest, longest, squash) and interpolation (bicubic,
                                bilinear) the S x S RGB bytes of
                                open_clip.image_transform(S, is_train=False, resize_mode=...,
                                interpolation=...) up to ToTensor, as NAME.MODE.FILTER.ALPHA.rgb:
                                ALPHA rgb: on Image.open(...).convert("RGB") (open_clip_train's
                                  loaders; clipper's drop), keep: on the picture as PIL opens it
                                  (open_clip's preprocess on an RGBA file; clipper's openclip),
                                  white: on the picture composited over white (transformers'
                                  convert_to_rgb; clipper's white).
                                Prints a JSON list of the files written.
"""
import json
import os
import sys

import numpy as np
import open_clip
from PIL import Image
from torchvision import transforms

out, S = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(23)


def smooth(w, h, channels):
    """Random colours, enlarged (bilinear) so that resizes see structure, plus a little noise."""
    small = rng.integers(0, 256, (max(2, h // 6), max(2, w // 6), channels), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR)).astype(np.int16)
    return np.clip(big + rng.integers(-12, 13, big.shape), 0, 255).astype(np.uint8)


Image.fromarray(smooth(150, 97, 3)).save(os.path.join(out, "photo.png"))
Image.fromarray(smooth(45, 70, 3)).save(os.path.join(out, "tall.png"))
rgba = smooth(72, 48, 4)
yy, xx = np.mgrid[0:48, 0:72]
alpha = np.clip(255 - 6 * np.hypot(xx - 30, yy - 22) + 60, 0, 255)  # an opaque disc, soft edge
alpha[:, 60:] = 0                                                    # transparent, colour under it
alpha[40:, :20] = 128                                                # half transparent
rgba[..., 3] = alpha.astype(np.uint8)
Image.fromarray(rgba, "RGBA").save(os.path.join(out, "icon.png"))


def prepared(path, how):
    img = Image.open(path)
    if how == "rgb":
        return img.convert("RGB")
    if how == "white":
        img = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)),
                                     img).convert("RGB")
    return img


written = []
for name, alphas in (("photo", ["rgb"]), ("tall", ["rgb"]), ("icon", ["rgb", "keep", "white"])):
    for mode in ("shortest", "longest", "squash"):
        for interp in ("bicubic", "bilinear"):
            for how in alphas:
                img = prepared(os.path.join(out, name + ".png"), how)
                for t in open_clip.image_transform(S, is_train=False, resize_mode=mode,
                                                   interpolation=interp).transforms:
                    if not isinstance(t, (transforms.ToTensor, transforms.Normalize)) and \
                            type(t).__name__ != "MaybeToTensor":
                        img = t(img)
                img = img.convert("RGB")  # MaybeConvertMode did it already; a no-op then
                assert img.size == (S, S), (name, mode, img.size)
                file = f"{name}.{mode}.{interp}.{how}.rgb"
                with open(os.path.join(out, file), "wb") as f:
                    f.write(img.tobytes())
                written.append({"picture": name + ".png", "mode": mode, "interpolation": interp,
                                "alpha": how, "file": file})
print(json.dumps(written))
