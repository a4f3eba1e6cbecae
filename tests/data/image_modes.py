"""Images in every mode clipper must turn into RGB, and PIL's pixels for each under clipper's rule.

  image_modes.py OUT_DIR   writes NAME.png / NAME.jpg and, per rule, NAME.RULE.rgb (raw RGB bytes;
                           RULE white, black, hex3366cc, drop),
                           and prints a JSON list of {"name", "file", "width", "height"}

The rule (docs/data.md): transparency composited over a background (PIL's alpha_composite over an
opaque image of that colour) or dropped (PIL's convert("RGB")); 16-bit samples by their high byte
(PIL does so for 16-bit RGB; it clips 16-bit grey at 255, which clipper does not follow); EXIF
orientation ignored (PIL.Image.open does not apply it, nor does open_clip's preprocess).
"""
import io
import json
import os
import struct
import sys
import zlib

import warnings

import numpy as np
from PIL import Image

warnings.simplefilter("ignore")  # PIL's advice on palette transparency

RULES = {"white": (255, 255, 255), "black": (0, 0, 0), "#3366cc": (0x33, 0x66, 0xCC), "drop": None}
W, H = 37, 23
rng = np.random.default_rng(19)


def png16(arr, colortype):
    """A 16-bit PNG by hand (PIL cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colortype, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) +
            chunk(b"IEND", b""))


def saved(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, format=fmt, **kw)
    return b.getvalue()


def samples():
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)
    alpha[:, :5] = 0  # fully transparent columns: their colour must not show
    alpha[:, -5:] = 255
    yield "rgba", "png", saved(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")
    pal = Image.fromarray(rng.integers(0, 6, (H, W), dtype=np.uint8), "L").convert("P")
    pal.putpalette([200, 40, 40, 40, 200, 40, 40, 40, 200, 250, 250, 0, 0, 0, 0, 90, 90, 90])
    yield "palette_trns", "png", saved(pal, "PNG", transparency=bytes([255, 0, 255, 128, 255, 40]))
    yield "la", "png", saved(Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA"), "PNG")
    yield "l", "png", saved(Image.fromarray(rgb[..., 1], "L"), "PNG")
    yield "rgb16", "png", png16(rng.integers(0, 65536, (H, W, 3), dtype=np.uint16), 2)
    yield "grey16", "png", png16(rng.integers(0, 65536, (H, W), dtype=np.uint16), 0)
    smooth = np.linspace(0, 255, W * H * 4).reshape(H, W, 4).astype(np.uint8)
    yield "cmyk", "jpg", saved(Image.fromarray(smooth, "CMYK"), "JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    yield "exif_rotated", "jpg", saved(Image.fromarray(np.ascontiguousarray(rgb[:, :, ::-1])), "JPEG",
                                       quality=95, exif=exif.tobytes())


def to_rgb(im, background):
    transparent = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    if background is not None and transparent:
        under = Image.new("RGBA", im.size, background + (255,))
        return Image.alpha_composite(under, im.convert("RGBA")).convert("RGB")
    if im.mode.startswith("I;16") or im.mode == "I":
        high = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(high, "L").convert("RGB")
    return im.convert("RGB")


out = sys.argv[1]
os.makedirs(out, exist_ok=True)
listing = []
for name, ext, data in samples():
    path = os.path.join(out, f"{name}.{ext}")
    with open(path, "wb") as f:
        f.write(data)
    im = Image.open(path)
    for rule, bg in RULES.items():
        with open(os.path.join(out, f"{name}.{rule.replace('#', 'hex')}.rgb"), "wb") as f:
            f.write(to_rgb(im, bg).tobytes())
    listing.append({"name": name, "file": path, "width": im.width, "height": im.height,
                    "mode": im.mode, "orientation": im.getexif().get(0x0112, 1)})
print(json.dumps(listing))
