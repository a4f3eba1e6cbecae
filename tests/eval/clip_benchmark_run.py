"""Runs `clip_benchmark` (clip-benchmark 1.6.2, pinned in scripts/requirements.txt) with its own
command line: `python clip_benchmark_run.py eval --dataset ...`; several command lines joined by
`+++` run one after the other in this one process (one Python and torch start-up, not several).

Two shims, the metric code otherwise as published:
- clip-benchmark 1.6.2 converts one-element arrays with float() (metrics/zeroshot_classification.py,
  accuracy()), which NumPy 1.x allowed and NumPy 2.x (the project's pin) rejects ("only
  0-dimensional arrays can be converted to Python scalars"). The module's `float` is replaced by one
  that takes a one-element array as NumPy 1.x did.
- Its linear probe (metrics/linear_probe.py) asserts `device == 'cuda'` and moves the head and the
  features with `.cuda()` and `DataParallel`. With `--cpu-linear-probe` first, the probe runs on the
  CPU: the device it is handed is "cpu" but compares equal to "cuda" (the assert), and in that
  module `.cuda()` leaves a tensor or module where it is and DataParallel is the module itself (one
  device, as DataParallel with one device computes). Training, sweep and metrics are unchanged.
"""
import builtins
import sys

import numpy as np
import torch
from clip_benchmark import cli
from clip_benchmark.metrics import linear_probe, zeroshot_classification


def _float(x):
    if isinstance(x, np.ndarray) and x.size == 1:
        return builtins.float(x.reshape(()))
    return builtins.float(x)


zeroshot_classification.float = _float


class _CpuAsCuda(str):
    """"cpu" for torch, equal to "cuda" for linear_probe.evaluate's assert."""

    def __eq__(self, other):
        return other == "cuda" or str.__eq__(self, other)

    __hash__ = str.__hash__


def _cpu_linear_probe():
    evaluate = linear_probe.evaluate
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    linear_probe.torch.nn.DataParallel = lambda module, device_ids=None: module

    def on_cpu(*args, device=None, **kwargs):
        return evaluate(*args, device=_CpuAsCuda("cpu"), **kwargs)

    cli.linear_probe.evaluate = on_cpu


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--cpu-linear-probe":
        _cpu_linear_probe()
        args = args[1:]
    commands, current = [], []
    for a in args + ["+++"]:
        if a == "+++":
            commands.append(current)
            current = []
        else:
            current.append(a)
    for command in commands:
        sys.argv = ["clip_benchmark"] + command
        code = cli.main()
        if code:
            sys.exit(code)
