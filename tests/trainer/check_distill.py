"""Checks that a student distilled from a teacher has learned from it.

usage: check_distill.py TEACHER_EXPORT DISTILLED_EXPORT PLAIN_EXPORT SHARD.tar
Runs the three exports (open_clip.create_model_and_transforms("local-dir:...")) on the shard's
images and captions, and scores each student against the teacher with open_clip's
DistillClipLoss (less the teacher's own entropy: the KL divergence). The distilled student's
must be lower than that of the student
trained the same way without the teacher. Exits 1 otherwise.
"""
import io
import sys
import tarfile

import open_clip
import torch
from open_clip.loss import DistillClipLoss
from PIL import Image

teacher_dir, distilled_dir, plain_dir, shard = sys.argv[1:5]
samples = {}
with tarfile.open(shard) as tar:
    for m in tar.getmembers():
        key, ext = m.name.rsplit(".", 1)
        if ext in ("jpg", "txt"):
            samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
keys = sorted(samples)[:256]


def features(export):
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + export)
    tokenizer = open_clip.get_tokenizer("local-dir:" + export)
    model.eval()
    images = torch.stack([preprocess(Image.open(io.BytesIO(samples[k]["jpg"]))) for k in keys])
    texts = tokenizer([samples[k]["txt"].decode() for k in keys])
    with torch.no_grad():
        return (model.encode_image(images, normalize=True), model.encode_text(texts, normalize=True),
                model.logit_scale.exp())


teacher = features(teacher_dir)
loss = DistillClipLoss()
with torch.no_grad():  # the term's floor: the teacher's own entropy
    floor = loss(*teacher, *teacher, output_dict=True)["distill_loss"].item()
scores = {}
for name, export in (("distilled", distilled_dir), ("plain", plain_dir)):
    with torch.no_grad():
        scores[name] = loss(*features(export), *teacher, output_dict=True)["distill_loss"].item()
        scores[name] -= floor  # the KL divergence from the teacher
print(f"KL from the teacher's logits (DistillClipLoss's term minus the teacher's entropy "
      f"{floor:.4f}): distilled {scores['distilled']:.4f}, plain {scores['plain']:.4f}")
sys.exit(0 if scores["distilled"] < scores["plain"] else 1)
