"""The open_clip side of clipper's optimizer interop tests (tests/optim/test_optim_interop.cpp).

groups: builds open_clip's CLIP(**model_cfg), locks towers with open_clip's own lock functions,
  and prints, per trainable parameter, the learning rate and weight decay of its optimizer group
  as JSON. The weight-decay split is --no-decay's: openclip3, open_clip 3.3.0's
  (open_clip_train/main.py), or modern, open_clip main's (open_clip_train/optim.py: ndim <= 1 or
  a name in the model's no_weight_decay(), which 3.3.0's CLIP already declares). Layer-wise LR
  decay is not in open_clip 3.3.0; it is open_clip main's rule (open_clip_train/optim.py
  layer_decay_param_groups with the towers' layer_groups()), reimplemented here over 3.3.0's
  modules: a tower's groups in input-to-output order get decay ** (n - 1 - index), parameters
  outside every group 1.0, groups keyed by (scale, no_wd). The per-tower multipliers (image_lr,
  text_lr) are clipper's own: they multiply every parameter of model.visual, resp. of the text
  groups.
schedule: prints open_clip_train.scheduler's const-cooldown learning rates for every step.
"""
import argparse
import json
import sys

import torch
from open_clip.model import CLIP
from open_clip.modified_resnet import ModifiedResNet
from open_clip_train.scheduler import const_lr_cooldown, cosine_lr, const_lr


def exclude(n, p):  # open_clip 3.3.0, open_clip_train/main.py
    return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n


def modern_exclude(model):  # open_clip main, open_clip_train/optim.py make_wd_exclude
    names = model.no_weight_decay()
    return lambda n, p: p.ndim <= 1 or n in names


def image_layer_groups(v):
    if isinstance(v, ModifiedResNet):
        groups = [[v.conv1, v.bn1, v.conv2, v.bn2, v.conv3, v.bn3],
                  [v.layer1], [v.layer2], [v.layer3], [v.layer4]]
        if v.attnpool is not None:
            groups.append([v.attnpool])
        return groups
    groups = [[v.conv1, v.class_embedding, v.positional_embedding, v.ln_pre]]
    blocks = list(v.transformer.resblocks)
    for i, b in enumerate(blocks):
        groups.append([b] + ([v.ln_post] if i == len(blocks) - 1 else []))
    if v.proj is not None:
        groups.append([v.proj])
    return groups


def text_layer_groups(m):
    groups = [[x for x in (m.token_embedding, m.positional_embedding, getattr(m, "cls_emb", None))
               if x is not None]]
    blocks = list(m.transformer.resblocks)
    for i, b in enumerate(blocks):
        groups.append([b] + ([m.ln_final] if i == len(blocks) - 1 else []))
    if m.text_projection is not None:
        groups.append([m.text_projection])
    return groups


def members_params(members):
    for m in members:
        if isinstance(m, torch.nn.Parameter):
            yield m
        else:
            yield from m.parameters()


def assign(groups, decay, mult, scale):
    n = len(groups)
    for idx, members in enumerate(groups):
        for p in members_params(members):
            scale[id(p)] = mult * decay ** (n - 1 - idx)


def groups_main(args):
    with open(args.model_cfg) as f:
        cfg = json.load(f)
    model = CLIP(**cfg)
    if args.lock_image >= 0:
        model.lock_image_tower(unlocked_groups=args.lock_image)
    if args.lock_text >= 0:
        model.lock_text_tower(unlocked_layers=args.lock_text)
    no_wd_of = modern_exclude(model) if args.no_decay == "modern" else exclude
    scale = {}
    # Multipliers first cover every tower parameter; the layer groups then refine them.
    for p in model.visual.parameters():
        scale[id(p)] = args.image_lr
    assign(image_layer_groups(model.visual), args.image_decay, args.image_lr, scale)
    assign(text_layer_groups(model), args.text_decay, args.text_lr, scale)
    buckets = {}
    out = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        s = scale.get(id(p), 1.0)
        no_wd = no_wd_of(n, p)
        key = (round(s, 8), no_wd)
        buckets.setdefault(key, len(buckets))
        out[n] = {"lr": args.lr * s, "weight_decay": 0.0 if no_wd else args.wd,
                  "group": buckets[key]}
    json.dump({"params": out, "groups": len(buckets)}, sys.stdout)
    return 0


class _Opt:
    param_groups = [{}]


def schedule_main(args):
    sched = {"cosine": lambda o: cosine_lr(o, args.lr, args.warmup, args.steps),
             "const": lambda o: const_lr(o, args.lr, args.warmup, args.steps),
             "const-cooldown": lambda o: const_lr_cooldown(
                 o, args.lr, args.warmup, args.steps, args.cooldown, args.power, args.end)}
    adjust = sched[args.kind](_Opt())
    json.dump([adjust(step) for step in range(args.steps)], sys.stdout)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("groups")
    g.add_argument("--model-cfg", required=True)
    g.add_argument("--lr", type=float, default=1.0)
    g.add_argument("--wd", type=float, default=0.2)
    g.add_argument("--image-decay", type=float, default=1.0)
    g.add_argument("--text-decay", type=float, default=1.0)
    g.add_argument("--image-lr", type=float, default=1.0)
    g.add_argument("--text-lr", type=float, default=1.0)
    g.add_argument("--lock-image", type=int, default=-1)
    g.add_argument("--lock-text", type=int, default=-1)
    g.add_argument("--no-decay", choices=["openclip3", "modern"], default="openclip3")
    s = sub.add_parser("schedule")
    s.add_argument("--kind", default="const-cooldown")
    s.add_argument("--lr", type=float, required=True)
    s.add_argument("--warmup", type=int, required=True)
    s.add_argument("--steps", type=int, required=True)
    s.add_argument("--cooldown", type=int, default=0)
    s.add_argument("--power", type=float, default=1.0)
    s.add_argument("--end", type=float, default=0.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    return groups_main(args) if args.cmd == "groups" else schedule_main(args)


if __name__ == "__main__":
    sys.exit(main())
