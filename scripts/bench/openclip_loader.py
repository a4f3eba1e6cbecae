"""OpenCLIP's training input pipeline (open_clip_train/data.py, get_wds_dataset) on the same shards:
webdataset + PIL decode + open_clip's train transform + its tokenizer, batched, with a torch
DataLoader of N worker processes. Prints samples/s.

  openclip_loader.py SHARDS --threads N [--batch B] [--samples S] [--size 224]
"""
import argparse
import resource
import time

import open_clip
import torch
import webdataset as wds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("shards")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--size", type=int, default=224)
    a = p.parse_args()
    torch.set_num_threads(1)
    preprocess = open_clip.image_transform(a.size, is_train=True)  # RandomResizedCrop(0.9, 1), bicubic
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    pipeline = [
        wds.SimpleShardList(a.shards),
        wds.split_by_worker,
        wds.tarfile_to_samples(handler=wds.warn_and_continue),
        wds.shuffle(1000, initial=100),
        wds.decode("pilrgb", handler=wds.warn_and_continue),
        wds.rename(image="jpg;png;jpeg;webp", text="txt"),
        wds.map_dict(image=preprocess, text=lambda t: tokenizer(t)[0]),
        wds.to_tuple("image", "text"),
        wds.batched(a.batch, partial=False),
    ]
    ds = wds.DataPipeline(*pipeline).repeat()
    loader = wds.WebLoader(ds, batch_size=None, shuffle=False, num_workers=a.threads, persistent_workers=True)
    it = iter(loader)
    next(it)  # start-up and the shuffle buffer's first fill are not timed
    t0 = time.perf_counter()
    c0 = sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime
             for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    n = 0
    while n < a.samples:
        images, texts = next(it)
        n += images.shape[0]
    wall = time.perf_counter() - t0
    print(f"openclip: {n} samples in {wall:.1f} s with {a.threads} worker(s): {n / wall:.1f} samples/s, "
          f"{n / wall / a.threads:.1f} per worker ({a.size} px, train transform, images {tuple(images.shape)} "
          f"{images.dtype}, texts {tuple(texts.shape)})")


if __name__ == "__main__":
    main()
