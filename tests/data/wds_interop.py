"""Interop helper for clipper's data tests: the real `webdataset` package writes and reads shards.

  wds_interop.py write DIR N PER_SHARD   writes DIR/wds-%05d.tar and prints a JSON manifest
                                         [{key, txt, jpg_fnv}, ...]
  wds_interop.py read PATTERN            reads shards with webdataset and prints JSON lines
                                         {key, txt, jpg_fnv, cls, size}
"""
import io
import json
import sys

import webdataset as wds
from PIL import Image


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def write(out_dir, n, per_shard):
    manifest = []
    with wds.ShardWriter(f"{out_dir}/wds-%05d.tar", maxcount=per_shard, verbose=0) as sink:
        for i in range(n):
            img = Image.new("RGB", (40 + i % 7, 30 + i % 5))
            px = img.load()
            for y in range(img.height):
                for x in range(img.width):
                    px[x, y] = ((x * 7 + i) % 256, (y * 9) % 256, (x * y + i * 13) % 256)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            jpg = buf.getvalue()
            key = f"sample{i:06d}"
            txt = f"a generated picture number {i}, with a comma"
            sink.write({"__key__": key, "jpg": jpg, "txt": txt, "json": {"caption": txt, "i": i}})
            manifest.append({"key": key, "txt": txt, "jpg_fnv": fnv1a64(jpg)})
    print(json.dumps(manifest))


def read(pattern):
    ds = wds.WebDataset(pattern, shardshuffle=False)
    for s in ds:
        out = {"key": s["__key__"], "txt": s["txt"].decode(), "jpg_fnv": fnv1a64(s["jpg"])}
        if "cls" in s:
            out["cls"] = int(s["cls"])
        out["size"] = list(Image.open(io.BytesIO(s["jpg"])).size)
        print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        read(sys.argv[2])
