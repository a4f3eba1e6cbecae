"""Runs `clip_benchmark` (clip-benchmark 1.6.2, pinned in scripts/requirements.txt) with its own
command line: `python clip_benchmark_run.py eval --dataset ...`.

One shim, nothing else changed: clip-benchmark 1.6.2 converts one-element arrays with float()
(metrics/zeroshot_classification.py, accuracy()), which NumPy 1.x allowed and NumPy 2.x (the
project's pin) rejects ("only 0-dimensional arrays can be converted to Python scalars"). The
module's `float` is replaced by one that takes a one-element array as NumPy 1.x did; the metric
code runs as published.
"""
import builtins
import sys

import numpy as np
from clip_benchmark import cli
from clip_benchmark.metrics import zeroshot_classification


def _float(x):
    if isinstance(x, np.ndarray) and x.size == 1:
        return builtins.float(x.reshape(()))
    return builtins.float(x)


zeroshot_classification.float = _float

if __name__ == "__main__":
    sys.argv = ["clip_benchmark"] + sys.argv[1:]
    sys.exit(cli.main())
