"""One seeding helper, called first by every run (PyTorch reproducibility notes)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, threads: int | None = None) -> torch.Generator:
    """Seed Python, NumPy and torch, optionally fix the CPU thread count; return a generator.

    CPU kernels used here are deterministic for a fixed thread count, so the same config and
    seed give the same numbers on the same machine and library versions.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads is None:
        threads = int(os.environ.get("COMPSTUDY_THREADS", min(os.cpu_count() or 1, 2)))
    torch.set_num_threads(threads)
    return torch.Generator().manual_seed(seed)
