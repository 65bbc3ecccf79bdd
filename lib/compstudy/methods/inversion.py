"""Model inversion: a synthetic image set made from a classifier alone.

DC-ViT's stage B (Zhang et al., "Dense Vision Transformer Compression with Few Samples",
CVPR 2024, section 3.3 and ``gen_metric/imagenet_inversion.py`` of its code) builds its metric
set with DeepInversion (Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via
DeepInversion", CVPR 2020, section 3.2) without the batch-norm statistics term, which ViTs
lack. A batch ``x`` starts from N(0, 1) noise in the model's normalised input space and
minimises

    CE(f(x), y) + λ_TV · Σ_d ‖Δ_d x‖_F^β + λ_2 · mean_i ‖x_i‖₂

(``Δ_d``: pixel differences along the four neighbour directions, horizontal, vertical and
the two diagonals, over the whole batch) with Adam (betas 0.5, 0.9), a linear warm-up and
cosine decay of the learning rate, a random roll of up to ``jitter`` pixels and a random
horizontal flip each step, and pixels clipped to the valid range. The iterate with the
lowest loss is kept (``--store_best_images``).

The input side and the normalisation come from the model's ``pretrained_cfg``; images are
returned as float RGB in [0, 1] at that side, like every other image set of the library.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ..train import progress_bar, warmup_cosine

PAPER_JITTER_FRACTION = 30 / 224  # 30 px of jitter at 224 px in the official scripts


def total_variation(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Σ over 4 neighbour directions of ‖Δ_d x‖_F^β (Frobenius norm over the whole batch)."""
    diffs = (x[..., :, :-1] - x[..., :, 1:], x[..., :-1, :] - x[..., 1:, :],
             x[..., 1:, :-1] - x[..., :-1, 1:], x[..., :-1, :-1] - x[..., 1:, 1:])
    return sum(d.norm() ** beta for d in diffs)


def inversion_loss(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, tv_weight: float,
                   l2_weight: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, per-image cross-entropy) of the inversion objective on model inputs ``x``."""
    ce = F.cross_entropy(model(x), targets, reduction="none")
    loss = ce.mean() + tv_weight * total_variation(x, beta) + l2_weight * x.flatten(1).norm(dim=1).mean()
    return loss, ce


def inversion_targets(num_images: int, num_classes: int, seed: int) -> torch.Tensor:
    """Sorted random classes, all distinct while ``num_images <= num_classes``, then cycled."""
    g = torch.Generator().manual_seed(seed)
    reps = math.ceil(num_images / num_classes)
    picks = torch.cat([torch.randperm(num_classes, generator=g) for _ in range(reps)])[:num_images]
    return picks.sort().values


def default_jitter(side: int, jitter: int | None = None) -> int:
    """The largest roll at an input side: ``jitter`` when set, else the paper's 30 px at 224 px
    scaled to ``side``."""
    return max(1, round(side * PAPER_JITTER_FRACTION)) if jitter is None else jitter


def _normalisation(model: nn.Module) -> tuple[int, torch.Tensor, torch.Tensor]:
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return int(cfg["input_size"][-1]), mean, std


def invert(model: nn.Module, targets: torch.Tensor, steps: int, lr: float = 0.25,
           tv_weight: float = 1e-4, l2_weight: float = 1e-5, beta: float = 0.6,
           jitter: int | None = None, flip: bool = True, warmup: float = 0.05, seed: int = 0,
           progress: bool = False) -> tuple[torch.Tensor, pd.DataFrame]:
    """Synthesise one image per entry of ``targets`` (class indices) from Gaussian noise.

    Args:
        steps: optimiser steps (the paper: 2000 at 224 px).
        jitter: largest roll in pixels (default :func:`default_jitter` of the model's side).
        warmup: fraction of the steps with a linear warm-up of the learning rate.

    The model is frozen during the run (its ``requires_grad`` flags are restored after) and
    kept in eval mode.

    Returns:
        (images in [0, 1] at the model's side, history with columns step, loss, ce).
    """
    side, mean, std = _normalisation(model)
    jitter = default_jitter(side, jitter)
    g = torch.Generator().manual_seed(seed)
    model.eval()
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    x = torch.randn(len(targets), 3, side, side, generator=g).requires_grad_(True)
    low, high = (0 - mean) / std, (1 - mean) / std
    optimizer = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.9))
    scheduler = warmup_cosine(optimizer, steps, max(1, round(warmup * steps)))
    best, best_loss, rows = x.detach().clone(), math.inf, []
    bar = progress_bar(steps, "inversion", progress)
    try:
        for step in range(steps):
            dx, dy = torch.randint(-jitter, jitter + 1, (2,), generator=g).tolist() if jitter else (0, 0)
            view = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            if flip and torch.rand(1, generator=g).item() < 0.5:
                view = view.flip(3)
            loss, ce = inversion_loss(model, view, targets, tv_weight, l2_weight, beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if loss.item() < best_loss:  # scored on the iterate the gradient was taken at
                best_loss, best = loss.item(), x.detach().clone()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, high), low))
            rows.append((step, loss.item(), ce.mean().item()))
            bar.update()
    finally:
        bar.close()
        for p, flag in flags:
            p.requires_grad_(flag)
    images = (best * std + mean).clamp_(0, 1)
    return images, pd.DataFrame(rows, columns=["step", "loss", "ce"])
