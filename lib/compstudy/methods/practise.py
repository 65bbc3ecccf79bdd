"""PRACTISE-style whole-block dropping for vision transformers: the baseline of DC-ViT.

Wang and Wu, "Practical Network Acceleration with Tiny Sets", CVPR 2023, section 3 (the
recoverability of a dropped block, its score and the MiR fine-tune), as ported to ViTs in
the DC-ViT code (``src/practise.py`` of Zhang et al., "Dense Vision Transformer Compression
with Few Samples", CVPR 2024, section 4.1):

- dropping a block replaces it by the identity (:func:`drop_blocks`);
- its **recoverability** is measured by inserting identity-initialised linear adaptors after
  ``fc2`` of every earlier block and before ``qkv`` of every later block
  (:func:`with_adaptors`), training only the adaptors to mimic the original model's final
  features on the tiny set (SGD, lr 0.02, weight decay 1e-4), and taking the feature MSE
  that remains on the same images (:func:`recoverability_scores`);
- the **score** is recoverability divided by the latency reduction of dropping the block;
  the blocks with the lowest scores are dropped, the adaptors discarded, and the pruned
  model is fine-tuned by feature mimicking (MiR), as DC-ViT's models are
  (:func:`compstudy.methods.dcvit.mimic_finetune`).

Deviations, all for the short CPU budget: the adaptors train with
:func:`compstudy.train.fit`'s SGD (Nesterov momentum, cosine schedule) instead of plain
momentum with a step decay, and the recoverability MSE may be taken on a seeded subset of
the tiny set (``metric_images``) rather than on all of it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError
from ..train import progress_bar
from .dcvit import MimicSettings, feature_mse, mimic_finetune


class Adapted(nn.Module):
    """``module`` followed (``after=True``) or preceded by an identity-initialised linear adaptor."""

    def __init__(self, module: nn.Module, dim: int, after: bool):
        super().__init__()
        self.module, self.after = module, after
        self.adaptor = nn.Linear(dim, dim)
        with torch.no_grad():
            self.adaptor.weight.copy_(torch.eye(dim))
            self.adaptor.bias.zero_()

    def forward(self, x):
        return self.adaptor(self.module(x)) if self.after else self.module(self.adaptor(x))


def drop_blocks(model: nn.Module, blocks: Sequence[int]) -> nn.Module:
    """A copy of ``model`` with the given blocks replaced by the identity."""
    out = copy.deepcopy(model)
    for b in blocks:
        if not 0 <= b < len(out.blocks):
            raise ConfigError(f"block {b} does not exist (the model has {len(out.blocks)} blocks)")
        out.blocks[b] = nn.Identity()
    return out


def with_adaptors(model: nn.Module, dropped: int) -> tuple[nn.Module, list[nn.Parameter]]:
    """``model`` without block ``dropped``, with adaptors after fc2 of the earlier blocks and
    before qkv of the later ones; returns the copy and the adaptors' parameters."""
    out = drop_blocks(model, [dropped])
    params = []
    for i, block in enumerate(out.blocks):
        if i < dropped and hasattr(block, "mlp"):
            block.mlp.fc2 = Adapted(block.mlp.fc2, block.mlp.fc2.out_features, after=True)
            params += list(block.mlp.fc2.adaptor.parameters())
        elif i > dropped and hasattr(block, "attn"):
            block.attn.qkv = Adapted(block.attn.qkv, block.attn.qkv.in_features, after=False)
            params += list(block.attn.qkv.adaptor.parameters())
    return out, params


def recoverability_scores(model: nn.Module, blocks: Sequence[int], images: torch.Tensor,
                          targets: Mapping[str, torch.Tensor], steps: int,
                          latency_reduction: Mapping[int, float], lr: float = 0.02,
                          batch_size: int = 32, metric_images: int | None = None, seed: int = 0,
                          progress: bool = False) -> pd.DataFrame:
    """Recoverability of dropping each block, and the score that ranks them (lower: drop first).

    ``images`` are the tiny set ([0, 1] floats) and ``targets`` the original model's features
    on them (:func:`compstudy.methods.dcvit.teacher_targets`). Only the adaptors train. The
    recoverability is the final-feature MSE on ``metric_images`` of the tiny set (a seeded
    subset; None: all of them, as PRACTISE). ``latency_reduction`` maps each block to the
    fraction of cost its removal saves.

    Returns one row per block: block, recoverability, latency_reduction, score.
    """
    settings = MimicSettings(steps=steps, batch_size=batch_size, lr=lr, optimizer="sgd")
    if metric_images is None or metric_images >= len(images):
        chosen = torch.arange(len(images))
    else:
        chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:metric_images]
    rows = []
    bar = progress_bar(len(blocks), "recoverability", progress)
    for b in blocks:
        adapted, params = with_adaptors(model, b)
        mimic_finetune(adapted, images, targets, settings, last_changed=b, seed=seed * 100 + b,
                       params=params)
        recover = feature_mse(adapted, images[chosen], targets["features"][chosen])
        rows.append({"block": b, "recoverability": recover, "latency_reduction": latency_reduction[b],
                     "score": recover / max(latency_reduction[b], 1e-12)})
        bar.update()
    bar.close()
    return pd.DataFrame(rows)


def blocks_to_drop(scores: pd.DataFrame, k: int) -> list[int]:
    """The ``k`` blocks with the lowest scores, in block order."""
    if not 1 <= k <= len(scores):
        raise ConfigError(f"cannot drop {k} blocks: {len(scores)} candidates were scored")
    return sorted(scores.sort_values(["score", "block"])["block"].astype(int).tolist()[:k])
