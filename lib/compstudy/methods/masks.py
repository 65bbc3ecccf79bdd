"""Weight masks for unstructured sparsity: one implementation for every chapter.

A mask is a boolean tensor per pruned weight, True where the weight survives, keyed by the
module's name. The pruned weights are the weights of every ``nn.Conv2d`` (depthwise and
pointwise included); linear layers, biases and normalisation layers stay dense. That is
the convention of the Hidden-Cost code's ``check_sparsity`` and of Liu et al.'s
weight-level pruning (conv weights only), so every sparsity the study reports is
:func:`conv_sparsity`: zeros / total over those weights. Masks are re-applied after every
optimiser step (:func:`apply_masks`), and gradients of pruned weights are zeroed before it
(:func:`zero_pruned_gradients`), so pruned weights stay exactly zero through training.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import ConfigError

Masks = dict[str, torch.Tensor]


def conv_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight of every ``nn.Conv2d`` of ``model``, by module name."""
    return {name: m.weight for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def conv_sparsity(model: nn.Module) -> float:
    """zeros / total over the weights of all Conv2d layers (the study's sparsity)."""
    weights = conv_weights(model).values()
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """zeros / total of each Conv2d weight, by module name."""
    return {name: float((w == 0).float().mean()) for name, w in conv_weights(model).items()}


def masks_of(model: nn.Module) -> Masks:
    """Masks read off the weights: True where a conv weight is non-zero."""
    return {name: (w != 0) for name, w in conv_weights(model).items()}


def mask_sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of False entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every conv weight outside its mask (in place)."""
    for name, w in conv_weights(model).items():
        if name in masks:
            w.mul_(masks[name].to(w.dtype))


def zero_pruned_gradients(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the gradients of pruned weights (an ``after_backward`` hook of ``train.fit``), so
    that momentum and weight decay cannot move them either."""
    for name, w in conv_weights(model).items():
        if name in masks and w.grad is not None:
            w.grad.mul_(masks[name].to(w.grad.dtype))


def check_sparsity(sparsity: float) -> float:
    """``sparsity`` as a float in [0, 1), else ConfigError."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ConfigError(f"sparsity must lie in [0, 1), got {sparsity!r}")
    return float(sparsity)


def _keep_largest(scores: torch.Tensor, n_pruned: int) -> torch.Tensor:
    """True for all but the ``n_pruned`` smallest scores; ties at the threshold are pruned
    in order of position (as a stable sort would), so exactly ``n_pruned`` are False. A k-th
    value selection instead of a full sort stays fast on millions of weights."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if n_pruned:
        threshold = torch.kthvalue(scores, n_pruned).values
        keep = scores > threshold
        ties = torch.nonzero(scores == threshold).flatten()
        keep[ties[n_pruned - int((scores < threshold).sum()):]] = True
    return keep


def global_magnitude_masks(model: nn.Module, sparsity: float,
                           current: Mapping[str, torch.Tensor] | None = None) -> Masks:
    """Prune the ``round(sparsity * N)`` smallest-|w| conv weights over all layers at once.

    One global threshold (Han et al. 2015; Zhu & Gupta 2017). Weights already outside
    ``current`` count as smallest, so masks only shrink when pruning is repeated.
    """
    check_sparsity(sparsity)
    weights = conv_weights(model)
    scores = []
    for name, w in weights.items():
        s = w.detach().abs().flatten().double()
        if current is not None and name in current:
            s = torch.where(current[name].flatten(), s, torch.full_like(s, -1.0))
        scores.append(s)
    flat = torch.cat(scores)
    keep = _keep_largest(flat, int(round(sparsity * flat.numel())))
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start:start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def layerwise_magnitude_masks(model: nn.Module, sparsity: float) -> Masks:
    """Each conv layer keeps its ``1 - sparsity`` largest-|w| weights (uniform allocation)."""
    check_sparsity(sparsity)
    masks = {}
    for name, w in conv_weights(model).items():
        flat = w.detach().abs().flatten().double()
        masks[name] = _keep_largest(flat, int(round(sparsity * flat.numel()))).view_as(w)
    return masks
