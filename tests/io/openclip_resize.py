"""The open_clip side of clipper's fine-tuning-at-another-size interop tests
(tests/io/test_interop.cpp, OpenClipResize.*).

tensors IN OUT GRID LENGTH: open_clip.model.resize_pos_embed on IN's "image" (a ViT positional
  embedding, as visual.positional_embedding) to a GRID x GRID grid, and resize_text_pos_embed on
  IN's "text" to LENGTH positions; writes "image" and "text" to OUT.
model DIR INPUTS OUT SIZE: open_clip.create_model("local-dir:DIR", force_image_size=SIZE,
  force_quick_gelu=True), which resizes the exported weights on load; writes its image and text
  features for INPUTS to OUT.
export DIR INPUTS OUT: open_clip.create_model("local-dir:DIR") as the export describes it (no
  force_*: an export of a model.force_image_size run must say its size itself); writes its image
  and text features for INPUTS to OUT.
"""
import sys
from types import SimpleNamespace

import torch
import open_clip
from open_clip.model import resize_pos_embed, resize_text_pos_embed
from safetensors.torch import load_file, save_file


def tensors(src, dst, grid, length):
    t = load_file(src)
    sd = {"visual.positional_embedding": t["image"], "positional_embedding": t["text"]}
    fake = SimpleNamespace(visual=SimpleNamespace(grid_size=(grid, grid)),
                           positional_embedding=torch.empty(length, t["text"].shape[1]))
    resize_pos_embed(sd, fake)
    resize_text_pos_embed(sd, fake)
    save_file({"image": sd["visual.positional_embedding"].contiguous(),
               "text": sd["positional_embedding"].contiguous()}, dst)


def model(folder, inputs, dst, size):
    m = open_clip.create_model("local-dir:" + folder, device="cpu", precision="fp32",
                               force_image_size=size, force_quick_gelu=True)
    features(m, inputs, dst)


def export(folder, inputs, dst):
    features(open_clip.create_model("local-dir:" + folder, device="cpu", precision="fp32"),
             inputs, dst)


def features(m, inputs, dst):
    m.eval()
    x = load_file(inputs)
    with torch.no_grad():
        out = {"image": m.encode_image(x["images"]), "text": m.encode_text(x["tokens"])}
    save_file({k: v.contiguous() for k, v in out.items()}, dst)


def main():
    torch.set_num_threads(1)
    if sys.argv[1] == "tensors":
        tensors(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "export":
        export(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        model(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    print("open_clip", open_clip.__version__, "ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
