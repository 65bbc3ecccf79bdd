"""DC-ViT: dense few-shot compression of a vision transformer.

Zhang, Zhou, Wang and Wu, "Dense Vision Transformer Compression with Few Samples", CVPR 2024
(arXiv 2403.18708), section 3 and its official code (``run_metric_blks.py``, ``run_prune.py``,
``src/thop/get_structure.py``, ``src/models/block.py``, ``src/finetune.py``). Stage B, the
synthetic metric set, is :mod:`compstudy.methods.inversion`; the block-dropping baseline is
:mod:`compstudy.methods.practise`.

- **Stage A** (:func:`plan_structure`, section 3.2): from the MACs to keep, the number of
  compressed blocks ``n = ceil(R / (A + P))`` and the dropped MLP fraction
  ``rd = (R/n - A) / P``, with ``R`` the MACs to remove, ``A`` those of one attention sub-block
  (norm1 included) and ``P`` those of one MLP; measured on the model (:func:`measure_costs`)
  or counted by hand (:func:`analytic_vit_costs`, for the paper's ViT-B/16 worked example).
- **The compressed block** (:class:`CompressedBlock`): norm1 and the attention are removed;
  norm2 stays, with an MLP made of a subset of the original hidden units (random, the paper's
  ``rand_sample``, or by mean activation, ``GELU_sample``).
- **Feature mimicking** (:func:`mimic_finetune`, section 3.4): MSE between the student's and
  the original model's tokens after the final LayerNorm (all tokens), labels unused; only the
  embeddings, the blocks up to the compressed one plus one, and the final norm train
  (``--update-setting before``), or every block (``all``). The classifier stays frozen.
- **Stage C** (:func:`block_trials`, section 3.3): each candidate block is compressed alone,
  fine-tuned by mimicking, and scored by the KL divergence to the original model on a metric
  set; blocks are ranked by ascending score (:func:`rank_blocks`).
- **Stage D** (:func:`progressive_compress`): blocks are compressed in rank order, one at a
  time, with a mimicking fine-tune after each.

Images are float RGB in [0, 1] at any size everywhere in this module; each call passes them
through :func:`compstudy.models.adapt_input`, which resizes them to the model's side and
normalises them with its ``pretrained_cfg``. Costs (MACs, parameters) come from
:mod:`compstudy.metrics`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from timm.layers import Mlp
from torch import nn
from torch.nn import functional as F

from .. import metrics, models, train
from ..errors import ConfigError, unknown_choice

UPDATE_SETTINGS = ("before", "all")  # blocks <= b+1 (the paper's default) or every block
MLP_INITS = ("random", "activation")  # the paper's rand_sample (default) / GELU_sample


# ----------------------------------------------------------------------------- inputs and costs


def input_size(model: nn.Module) -> tuple[int, int, int]:
    """(channels, height, width) the model expects, from its ``pretrained_cfg``."""
    return tuple(model.pretrained_cfg["input_size"])


def model_macs(model: nn.Module) -> int:
    """MACs per image at the model's own input size (:func:`metrics.count_macs`)."""
    return metrics.count_macs(model, (1, *input_size(model)))


@torch.no_grad()
def _batched(model: nn.Module, images: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor],
             batch_size: int = 250) -> torch.Tensor:
    """``fn`` of the model input made from each batch of [0, 1] images, concatenated."""
    return torch.cat([fn(models.adapt_input(model, images[s:s + batch_size]))
                      for s in range(0, len(images), batch_size)])


def logits(model: nn.Module, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Logits of [0, 1] images, in eval mode."""
    model.eval()
    return _batched(model, images, model, batch_size)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (a fraction) of ``model`` on [0, 1] images."""
    return metrics.accuracy(logits(model, images), labels)


@dataclass(frozen=True)
class BlockCosts:
    """MACs of a ViT and of the parts of one block that DC-ViT removes.

    ``attention`` (A) = norm1 + qkv + the two attention matmuls + proj (+ softmax and scaling
    ops); ``mlp`` (P) = fc1 + GELU + fc2; ``per_unit`` = MACs of one MLP hidden unit, so
    removing ``u`` units of one block saves ``u * per_unit``. norm2 stays in a compressed
    block and belongs to neither.
    """

    total: float
    attention: float
    mlp: float
    per_unit: float
    hidden: int
    depth: int
    tokens: int
    norm2: float = 0.0  # ops of norm2, saved too when a block keeps no MLP unit

    @property
    def block(self) -> float:
        return self.attention + self.mlp

    def as_dict(self) -> dict:
        return asdict(self) | {"attention_share_of_block": self.attention / self.block,
                               "block_share_of_total": self.block / self.total}


COST_CONVENTIONS = ("tp", "thop")


def analytic_vit_costs(img_size: int = 224, patch: int = 16, dim: int = 768, depth: int = 12,
                       heads: int = 12, mlp_ratio: float = 4.0, num_classes: int = 1000,
                       convention: str = "tp") -> BlockCosts:
    """MACs of a plain timm ViT counted by hand.

    ``convention="tp"`` is torch-pruning's, i.e. :func:`metrics.count_macs` exactly (ViT-B/16:
    17,593,519,096): linear layers in·out per token plus bias ops (once per output feature
    for plain linears, per token inside timm attention), LayerNorm 2 ops per element, GELU
    1, softmax 1 per attention entry, q scaling 1 per element, both attention matmuls, the
    patch-embedding conv with 3 extra ops per output element; the head sees the CLS token.

    ``convention="thop"`` mimics the profiler of the DC-ViT code (``src/thop``): linear and
    conv MACs without biases, LayerNorm 2 ops per element, and nothing for GELU, softmax or
    the attention matmuls (functional calls thop cannot see). In it the README's keep ratio
    0.751734186 is 1 − 3·block/total to 6 digits, i.e. "3 blocks dropped".
    """
    if convention not in COST_CONVENTIONS:
        raise unknown_choice("cost convention", convention, COST_CONVENTIONS)
    t = (img_size // patch) ** 2 + 1
    patches = t - 1
    hidden = int(dim * mlp_ratio)
    norm = 2 * t * dim
    if convention == "tp":
        attention = (norm + t * dim * 3 * dim + 2 * t * t * dim + heads * t * t + t * dim
                     + t * dim * dim + t * 4 * dim)
        per_unit = 2 * t * dim + t + 1  # fc1 row + fc2 column + GELU + fc1 bias op
        mlp = hidden * per_unit + dim  # + fc2 bias op
        embed = patches * dim * 3 * patch * patch + 3 * patches * dim
        head = 2 * dim + dim * num_classes + num_classes  # final norm on the CLS token + head
    else:
        attention = norm + t * dim * 3 * dim + t * dim * dim
        per_unit = 2 * t * dim
        mlp = hidden * per_unit
        embed = patches * dim * 3 * patch * patch
        head = norm + dim * num_classes  # thop sees the final norm on all tokens
    total = embed + depth * (attention + norm + mlp) + head
    return BlockCosts(float(total), float(attention), float(mlp), float(per_unit), hidden, depth, t,
                      float(norm))


def architecture_costs(model: nn.Module) -> BlockCosts:
    """:func:`analytic_vit_costs` of a plain timm ``VisionTransformer`` (one class token),
    read from its attributes without running it: equal to :func:`measure_costs`, and usable
    on a model built on the ``meta`` device."""
    side = input_size(model)[-1]
    return analytic_vit_costs(side, model.patch_embed.patch_size[0], model.embed_dim, len(model.blocks),
                              model.blocks[0].attn.num_heads,
                              model.blocks[0].mlp.fc1.out_features / model.embed_dim, model.num_classes)


def measure_costs(model: nn.Module) -> BlockCosts:
    """A, P and the per-unit MACs of one block, counted at the model's input size."""
    total = model_macs(model)
    hidden = model.blocks[0].mlp.fc1.out_features
    probe = copy.deepcopy(model)
    probe.blocks[0] = CompressedBlock(model.blocks[0], hidden)
    no_attention = model_macs(probe)
    probe.blocks[0] = CompressedBlock(model.blocks[0], 1)
    one_unit = model_macs(probe)
    probe.blocks[0] = CompressedBlock(model.blocks[0], 0)
    no_mlp = model_macs(probe)
    tokens = model.patch_embed.num_patches + getattr(model, "num_prefix_tokens", 1)
    norm2 = 2 * tokens * model.blocks[0].norm2.normalized_shape[0]  # tp: 2 ops per element
    return BlockCosts(float(total), float(total - no_attention), float(no_attention - no_mlp - norm2),
                      (no_attention - one_unit) / (hidden - 1), hidden, len(model.blocks), tokens,
                      float(norm2))


@dataclass(frozen=True)
class Structure:
    """What stage A decides for one MACs budget."""

    keep_ratio: float
    budget_macs: float
    removed_target: float  # R
    n_blocks: int  # n
    drop_ratio: float  # rd of the paper's formula
    kept_units: int  # hidden units each compressed block keeps (rounded so the budget holds)
    hidden: int
    predicted_macs: float  # MACs after compressing n blocks with kept_units each

    @property
    def mlp_ratio(self) -> float:
        """The paper's r' = 4 (1 - rd) for a ViT with MLP ratio 4."""
        return 4 * self.kept_units / self.hidden


def plan_structure(costs: BlockCosts, keep_ratio: float, n_blocks: int | None = None,
                   max_blocks: int | None = None) -> Structure:
    """Stage A: n = ceil(R/(A+P)), rd = (R/n - A)/P; kept units rounded down (budget never exceeded).

    Args:
        keep_ratio: fraction of the model's MACs to keep (the paper's ρ), in (0, 1).
        n_blocks: force n (the paper's ``--rm-num``).
        max_blocks: how many blocks may be compressed (the candidates); default all.

    Raises:
        ConfigError: the budget is >= the model's MACs, or cannot be reached with
            ``max_blocks`` compressed blocks, or ``n_blocks`` exceeds ``max_blocks``.
    """
    max_blocks = costs.depth if max_blocks is None else max_blocks
    if not 0 < keep_ratio < 1:
        raise ConfigError(f"keep ratio {keep_ratio!r} must lie in (0, 1): a budget >= the model's "
                          f"{costs.total:.0f} MACs needs no compression")
    removed = (1 - keep_ratio) * costs.total
    lowest = 1 - max_blocks * costs.block / costs.total
    if removed > max_blocks * costs.block * (1 + 1e-12):
        raise ConfigError(f"keep ratio {keep_ratio} is unreachable: compressing all {max_blocks} "
                          f"candidate blocks keeps at least {lowest:.4f} of the MACs")
    n = math.ceil(removed / costs.block - 1e-12) if n_blocks is None else int(n_blocks)
    if n > max_blocks or n < 1:
        raise ConfigError(f"n_blocks={n} must lie in 1..{max_blocks} (the candidate blocks)")
    if n * costs.block < removed * (1 - 1e-12):
        raise ConfigError(f"keep ratio {keep_ratio} is unreachable with n_blocks={n}")
    rd = (removed / n - costs.attention) / costs.mlp
    units_to_drop = math.ceil(max(removed / n - costs.attention, 0.0) / costs.per_unit - 1e-9)
    kept = max(costs.hidden - units_to_drop, 0)
    saved = costs.attention + (costs.mlp + costs.norm2 if kept == 0 else (costs.hidden - kept) * costs.per_unit)
    return Structure(keep_ratio, keep_ratio * costs.total, removed, n, rd, kept, costs.hidden,
                     costs.total - n * saved)


# ----------------------------------------------------------------------------- the compressed block


class CompressedBlock(nn.Module):
    """A ViT block without attention (and norm1) whose MLP keeps a subset of hidden units.

    ``kept`` is the number of units (the first ones; :func:`compress_block` chooses which) or
    the indices to keep; with 0 units the block is the identity.
    """

    def __init__(self, block: nn.Module, kept: int | torch.Tensor):
        super().__init__()
        source = block.mlp
        hidden = source.fc1.out_features
        if isinstance(kept, int):
            if not 0 <= kept <= hidden:
                raise ConfigError(f"kept units {kept} must lie in 0..{hidden}")
            kept = torch.arange(kept)
        kept = torch.as_tensor(kept, dtype=torch.long)
        self.norm2 = copy.deepcopy(block.norm2)
        self.ls2 = copy.deepcopy(getattr(block, "ls2", nn.Identity()))
        self.kept_units = len(kept)
        self.mlp = None
        if len(kept):
            dim = source.fc1.in_features
            self.mlp = Mlp(dim, len(kept), dim)
            with torch.no_grad():
                self.mlp.fc1.weight.copy_(source.fc1.weight[kept])
                self.mlp.fc1.bias.copy_(source.fc1.bias[kept])
                self.mlp.fc2.weight.copy_(source.fc2.weight[:, kept])
                self.mlp.fc2.bias.copy_(source.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            return x
        return x + self.ls2(self.mlp(self.norm2(x)))


def kept_unit_indices(hidden: int, kept_units: int, init: str = "random",
                      activations: torch.Tensor | None = None, seed: int = 0,
                      block: int = 0) -> torch.Tensor:
    """Sorted indices of the MLP units a compressed block keeps.

    ``random``: a seeded random subset (seed and block index make the draw); ``activation``:
    the units with the largest mean |GELU output| (``activations``, see
    :func:`mlp_activation_stats`).
    """
    if init not in MLP_INITS:
        raise unknown_choice("mlp init", init, MLP_INITS)
    if init == "random":
        g = torch.Generator().manual_seed(int(seed) * 1000 + block)
        kept = torch.randperm(hidden, generator=g)[:kept_units]
    else:
        if activations is None:
            raise ValueError("init='activation' needs the units' mean activations")
        kept = activations.argsort(descending=True)[:kept_units]
    return kept.sort().values


def compress_block(model: nn.Module, block: int, kept_units: int, init: str = "random",
                   activations: torch.Tensor | None = None, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with ``block`` replaced by a :class:`CompressedBlock`."""
    out = copy.deepcopy(model)
    hidden = model.blocks[block].mlp.fc1.out_features
    out.blocks[block] = CompressedBlock(
        model.blocks[block], kept_unit_indices(hidden, kept_units, init, activations, seed, block))
    return out


@torch.no_grad()
def mlp_activation_stats(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor | None]:
    """Mean |GELU output| of every MLP hidden unit of every (uncompressed) block."""
    sums, hooks = {}, []
    for i, block in enumerate(model.blocks):
        if isinstance(getattr(block, "mlp", None), Mlp) and not isinstance(block, CompressedBlock):
            def hook(_m, _inp, out, i=i):
                sums[i] = sums.get(i, 0) + out.abs().sum(dim=(0, 1))
            hooks.append(block.mlp.act.register_forward_hook(hook))
    model.eval()
    try:
        _batched(model, images, model.forward_features)
    finally:
        for h in hooks:
            h.remove()
    return [sums.get(i) for i in range(len(model.blocks))]


def is_compressed(model: nn.Module) -> list[int]:
    """Indices of the blocks that are :class:`CompressedBlock`."""
    return [i for i, b in enumerate(model.blocks) if isinstance(b, CompressedBlock)]


def attention_parameters(block: nn.Module) -> int:
    """Parameters of a block's attention sub-module and norm1 (0 for a compressed block)."""
    return sum(p.numel() for name, p in block.named_parameters()
               if name.startswith(("attn.", "norm1.")))


# ----------------------------------------------------------------------------- feature mimicking


@dataclass(frozen=True)
class MimicSettings:
    """Feature-mimicking fine-tune: ``steps`` optimiser steps over epochs of the images.

    The learning rate is cosine-annealed to 0 (:func:`compstudy.train.warmup_cosine`, no
    warm-up); every image is flipped horizontally with probability 1/2.
    """

    steps: int
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    update: str = "before"
    optimizer: str = "adamw"

    def __post_init__(self):
        if self.update not in UPDATE_SETTINGS:
            raise unknown_choice("update setting", self.update, UPDATE_SETTINGS)
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"mimicking needs steps >= 1 and batch_size >= 1, got "
                              f"{self.steps}, {self.batch_size}")


@torch.no_grad()
def teacher_targets(teacher: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the student mimics: the teacher's tokens after its final norm for the images
    (``features``) and for their mirror images (``features_flip``), and its ``logits``."""
    teacher.eval()
    features = _batched(teacher, images, teacher.forward_features)
    return {"features": features,
            "features_flip": _batched(teacher, images.flip(3), teacher.forward_features),
            "logits": torch.cat([teacher.forward_head(features[s:s + 250])
                                 for s in range(0, len(features), 250)])}


def trainable_parameters(model: nn.Module, last_changed: int, update: str) -> list[nn.Parameter]:
    """Embeddings, blocks ≤ last_changed + 1 (``before``) or all blocks, and the final norm.

    The classifier stays frozen in both settings, as in the official code's
    ``--update-setting before``, which also leaves the final LayerNorm trainable.
    """
    if update not in UPDATE_SETTINGS:
        raise unknown_choice("update setting", update, UPDATE_SETTINGS)
    limit = len(model.blocks) - 1 if update == "all" else last_changed + 1
    params = [model.cls_token, model.pos_embed, *model.patch_embed.parameters(), *model.norm.parameters()]
    for i, block in enumerate(model.blocks):
        if i <= limit:
            params += list(block.parameters())
    return [p for p in params if p is not None]


def mimic_batches(n_images: int, batch_size: int, steps: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(indices, flip flags) of ``steps`` batches: seeded shuffled epochs over the images."""
    g = torch.Generator().manual_seed(seed)
    size = min(batch_size, n_images)
    order = torch.cat([torch.randperm(n_images, generator=g)
                       for _ in range(math.ceil(steps * size / n_images))])
    batches = []
    for s in range(steps):
        idx = order[s * size:(s + 1) * size]
        batches.append((idx, torch.rand(len(idx), generator=g) < 0.5))
    return batches


def mimic_finetune(student: nn.Module, images: torch.Tensor, targets: Mapping[str, torch.Tensor],
                   settings: MimicSettings, last_changed: int, seed: int = 0,
                   params: Sequence[nn.Parameter] | None = None, progress: bool = False) -> list[float]:
    """Fine-tune ``student`` in place by feature mimicking; return the loss of every step.

    The loss is the MSE between the student's and the teacher's tokens after the final norm
    (``targets`` from :func:`teacher_targets`). Only ``params`` (default:
    :func:`trainable_parameters`) train: they get ``requires_grad`` for the run, every other
    parameter is frozen, and all flags are restored afterwards. The loop is
    :func:`compstudy.train.fit` over one pass of :func:`mimic_batches`.
    """
    params = list(trainable_parameters(student, last_changed, settings.update) if params is None else params)
    wanted = {id(p) for p in params}
    flags = [(p, p.requires_grad) for p in student.parameters()]
    for p, _ in flags:
        p.requires_grad_(id(p) in wanted)
    for p in params:  # parameters outside the student (e.g. adaptors held elsewhere)
        p.requires_grad_(True)
    loader = []
    for idx, flip in mimic_batches(len(images), settings.batch_size, settings.steps, seed):
        x = torch.where(flip[:, None, None, None], images[idx].flip(3), images[idx])
        loader.append((x, torch.stack([idx, flip.long()], dim=1)))
    losses: list[float] = []

    def loss_fn(model, x, which):
        idx, flip = which[:, 0], which[:, 1].bool()[:, None, None]
        t = torch.where(flip, targets["features_flip"][idx], targets["features"][idx])
        loss = F.mse_loss(model.forward_features(x), t)
        losses.append(loss.item())
        return loss, None

    fit_settings = train.FitSettings(epochs=1, lr=settings.lr, optimizer=settings.optimizer,
                                     weight_decay=settings.weight_decay)
    try:
        train.fit(student, loader, fit_settings, desc="mimicking", progress=progress, params=params,
                  loss_fn=loss_fn)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        student.eval()
    return losses


@torch.no_grad()
def kl_to_teacher(student: nn.Module, images: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Mean over images of KL(softmax(teacher) ‖ softmax(student)): the paper's metric loss."""
    out = logits(student, images)
    return F.kl_div(F.log_softmax(out, 1), F.log_softmax(teacher_logits, 1), log_target=True,
                    reduction="batchmean").item()


@torch.no_grad()
def feature_mse(student: nn.Module, images: torch.Tensor, teacher_features: torch.Tensor) -> float:
    """MSE between the student's final-norm tokens and the teacher's."""
    student.eval()
    return F.mse_loss(_batched(student, images, student.forward_features), teacher_features).item()


# ----------------------------------------------------------------------------- stages C and D


def candidate_blocks(depth: int, min_block: int, max_block: int) -> list[int]:
    """Blocks min_block..max_block (0-indexed, inclusive); the paper excludes the first and last."""
    if not 0 <= min_block <= max_block < depth:
        raise ConfigError(f"candidate blocks {min_block}..{max_block} must lie within the model's "
                          f"{depth} blocks (0..{depth - 1})")
    return list(range(min_block, max_block + 1))


def block_trials(model: nn.Module, blocks: Sequence[int], kept_units: int, images: torch.Tensor,
                 targets: Mapping[str, torch.Tensor], settings: MimicSettings,
                 metric_sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], init: str = "random",
                 seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Stage C: compress each block alone, fine-tune it by mimicking, score KL on each metric set.

    ``metric_sets`` maps a name (``synthetic``, ``real``, ...) to (images, teacher logits).
    Returns one row per block: ``block``, ``mimic_loss`` (mean of the last 5 steps) and
    ``kl_<name>`` for every metric set.
    """
    activations = mlp_activation_stats(model, images) if init == "activation" else None
    rows = []
    bar = train.progress_bar(len(blocks), "block trials", progress)
    for b in blocks:
        trial = compress_block(model, b, kept_units, init, activations[b] if activations else None, seed)
        losses = mimic_finetune(trial, images, targets, settings, last_changed=b, seed=seed * 100 + b)
        row = {"block": b, "mimic_loss": float(np.mean(losses[-5:]))}
        for name, (x, teacher_logits) in metric_sets.items():
            row[f"kl_{name}"] = kl_to_teacher(trial, x, teacher_logits)
        rows.append(row)
        bar.update()
    bar.close()
    return pd.DataFrame(rows)


def rank_blocks(scores: pd.DataFrame, column: str) -> list[int]:
    """Blocks by ascending score (most recoverable first); ties broken by block index."""
    return scores.sort_values([column, "block"])["block"].astype(int).tolist()


def progressive_compress(model: nn.Module, order: Sequence[int], n_blocks: int, kept_units: int,
                         images: torch.Tensor, targets: Mapping[str, torch.Tensor],
                         settings: MimicSettings, init: str = "random", seed: int = 0,
                         after_step: Callable[[int, nn.Module], None] | None = None,
                         progress: bool = False) -> nn.Module:
    """Stage D: compress ``order[0]``, fine-tune, then ``order[1]``, ... until ``n_blocks``.

    ``after_step(k, model)`` sees the model after its k-th block is compressed and tuned, so
    one chain yields the models of every budget that shares its kept units. The original
    model is left untouched.
    """
    if n_blocks > len(order):
        raise ConfigError(f"n_blocks={n_blocks} exceeds the {len(order)} ranked candidate blocks")
    current = model
    bar = train.progress_bar(n_blocks, "progressive compression", progress)
    for k, b in enumerate(order[:n_blocks], start=1):
        activations = mlp_activation_stats(current, images)[b] if init == "activation" else None
        current = compress_block(current, b, kept_units, init, activations, seed)
        mimic_finetune(current, images, targets, settings, last_changed=b, seed=seed * 100 + k)
        if after_step is not None:
            after_step(k, current)
        bar.update()
    bar.close()
    return current if current is not model else copy.deepcopy(model)


# ----------------------------------------------------------------------------- latency probes


class AttentionOnlyBlock(nn.Module):
    """A ViT block whose MLP (and norm2) is removed: the opposite probe of a compressed block."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.norm1, self.attn = copy.deepcopy(block.norm1), copy.deepcopy(block.attn)
        self.ls1 = copy.deepcopy(getattr(block, "ls1", nn.Identity()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ls1(self.attn(self.norm1(x)))


STRUCTURE_KINDS = ("dcvit", "drop", "no_attention", "no_mlp")


def structural_model(model: nn.Module, blocks: Sequence[int], kind: str, kept_units: int = 0) -> nn.Module:
    """A copy of ``model`` with ``blocks`` changed, for timing (which blocks does not matter).

    kind: ``dcvit`` (compressed, ``kept_units`` each), ``drop`` (identity),
    ``no_attention`` (compressed keeping every unit), ``no_mlp`` (:class:`AttentionOnlyBlock`).
    """
    if kind not in STRUCTURE_KINDS:
        raise unknown_choice("structure kind", kind, STRUCTURE_KINDS)
    out = copy.deepcopy(model)
    hidden = model.blocks[0].mlp.fc1.out_features
    for b in blocks:
        if kind == "dcvit":
            out.blocks[b] = CompressedBlock(model.blocks[b], kept_units)
        elif kind == "no_attention":
            out.blocks[b] = CompressedBlock(model.blocks[b], hidden)
        elif kind == "no_mlp":
            out.blocks[b] = AttentionOnlyBlock(model.blocks[b])
        else:
            out.blocks[b] = nn.Identity()
    return out.eval()
