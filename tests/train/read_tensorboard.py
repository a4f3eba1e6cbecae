"""Reads a TensorBoard event folder with the real tensorboard package and prints tag step value."""
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1])
acc.Reload()
for tag in sorted(acc.Tags()["scalars"]):
    for ev in acc.Scalars(tag):
        print(f"{tag} {ev.step} {ev.value:.6g}")
