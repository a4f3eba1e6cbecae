"""Training-step throughput, clipper against OpenCLIP, side by side in one run.

Both run the same model, batch, precision and thread count on synthetic batches: clipper through
`clipper bench train` (a subprocess), OpenCLIP through its own model, ClipLoss and a fused AdamW
with the same parameter groups, as its training script does. The two alternate for --rounds rounds
and the medians are compared.

    .venv/bin/python scripts/bench/train_vs_openclip.py --model tiny-vit --batch 64 --threads 2
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import yaml
import open_clip

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def openclip_name(model: str) -> str:
    """Registers configs/models/<model>.yaml with open_clip unless open_clip knows the name."""
    if model in open_clip.list_models():
        return model
    with open(os.path.join(ROOT, "configs", "models", model + ".yaml")) as f:
        spec = yaml.safe_load(f)
    cfg = {k: spec[k] for k in ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu") if k in spec}
    d = tempfile.mkdtemp()
    with open(os.path.join(d, model + ".json"), "w") as f:
        json.dump(cfg, f)
    open_clip.add_model_config(d)
    return model


def openclip_rate(name, batch, steps, warmup, device, bf16, compile_model=False):
    model = open_clip.create_model(name, device=device, output_dict=True)
    model.train()
    if compile_model:  # OpenCLIP's --torchcompile
        model.compile()
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if exclude(n, p) and p.requires_grad], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p) and p.requires_grad], "weight_decay": 0.2},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.98), eps=1e-6, fused=True)
    loss_fn = open_clip.ClipLoss()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    ctx = model.context_length
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=device).view(1, 3, 1, 1)
    raw = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
    text = torch.randint(1, model.vocab_size - 2, (batch, ctx), device=device)
    text[:, -1] = model.vocab_size - 1

    def step():
        images = (raw.permute(0, 3, 1, 2).float() / 255 - mean) / std
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            out = model(images, text)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        return loss

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def clipper_rate(binary, model, batch, steps, warmup, device, precision, threads):
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as f:
        cmd = [binary, "bench", "train", "--model", model, "--batch", str(batch), "--steps", str(steps),
               "--warmup", str(warmup), "--device", device, "--precision", precision, "--json", f.name]
        if threads:
            cmd += ["--threads", str(threads)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(open(f.name).read().splitlines()[-1])["samples_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-vit")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads for both (0: default)")
    ap.add_argument("--clipper", default=os.path.join(ROOT, "build", "bin", "clipper"))
    ap.add_argument("--openclip-compile", action="store_true",
                    help="torch.compile OpenCLIP's model, as its --torchcompile flag does")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    bf16 = a.precision == "bf16" or (a.device == "cuda" and a.precision == "auto")
    name = openclip_name(a.model)
    ours, theirs = [], []
    for r in range(a.rounds):
        ours.append(clipper_rate(a.clipper, a.model, a.batch, a.steps, a.warmup, a.device, a.precision, a.threads))
        theirs.append(openclip_rate(name, a.batch, a.steps, a.warmup, a.device, bf16, a.openclip_compile))
        print(f"round {r + 1}: clipper {ours[-1]:.1f} samples/s, OpenCLIP {theirs[-1]:.1f} samples/s", flush=True)
    o, t = statistics.median(ours), statistics.median(theirs)
    print(f"{a.model} batch {a.batch} {a.device} {'bf16' if bf16 else 'fp32'} threads {a.threads or torch.get_num_threads()}: "
          f"clipper {o:.1f} samples/s, OpenCLIP {open_clip.__version__}{' compiled' if a.openclip_compile else ''} "
          f"{t:.1f} samples/s, ratio {o / t:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
