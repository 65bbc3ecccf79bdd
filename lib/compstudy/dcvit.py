"""DC-ViT (Zhang et al., CVPR 2024) and a PRACTISE-style whole-block-dropping baseline.

Few-shot compression of a timm ``VisionTransformer`` (papers.md §4), written from the
paper's description:

- **Stage A** (:func:`plan_structure`): from the MACs to keep, the number of compressed
  blocks ``n = ceil(R / (A + P))`` and the dropped MLP fraction ``rd = (R/n - A) / P``, with
  ``R`` the MACs to remove, ``A`` the MACs of one attention sub-block (norm1 included) and
  ``P`` those of one MLP; measured on our model (:func:`measure_costs`) or counted
  analytically (:func:`analytic_vit_costs`, for the paper's ViT-B/16 worked example).
- **Stage B** (:func:`invert`): a synthetic metric set by model inversion from Gaussian
  noise (cross-entropy + total variation with exponent + L2 prior, jitter and flips, Adam
  with a cosine schedule, the lowest-loss iterate of every image kept).
- **Stage C** (:func:`block_trials`): every candidate block is compressed alone (attention
  and norm1 removed, a subset of MLP hidden units kept), the model is fine-tuned by feature
  mimicking on the few-shot images, and the KL divergence to the original model on the
  metric set scores the block; low = recoverable.
- **Stage D** (:func:`progressive_compress`): compress blocks in rank order, one at a time,
  fine-tuning after each.
- **Baseline** (:func:`practise_scores`, :func:`drop_blocks`): whole blocks dropped, scored by
  recoverability (MSE after training identity-initialised linear adaptors) divided by the
  latency reduction, then the same feature-mimicking fine-tune.

Every cost here (MACs, parameters, latency) comes from :mod:`compstudy.metrics`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from timm.layers import Mlp
from torch import nn
from torch.nn import functional as F

from . import data, metrics
from .errors import ConfigError, unknown_choice
from .train import progress_bar

UPDATE_SETTINGS = ("before", "all")  # blocks <= b+1 (paper default) or every block
MLP_INITS = ("random", "activation")  # paper: rand_sample (default) / GELU_sample


# ----------------------------------------------------------------------------- stage A


@dataclass(frozen=True)
class BlockCosts:
    """MACs of a ViT and of the parts of one block that DC-ViT removes.

    ``attention`` (A) = norm1 + qkv + the two attention matmuls + proj (+ softmax/scaling
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

    ``convention="thop"`` mimics the profiler the paper used (papers.md §4.2, §4.7): linear
    and conv MACs without biases, LayerNorm 2 ops per element, and nothing for GELU, softmax
    or the attention matmuls (functional calls thop cannot see). In it the paper's keep
    ratio 0.751734186 is 1 − 3·block/total to 6 digits, i.e. "3 blocks dropped".
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


def _compress_inplace(model: nn.Module, block: int, kept_units: int | torch.Tensor) -> None:
    model.blocks[block] = CompressedBlock(model.blocks[block], kept_units)


def measure_costs(model: nn.Module) -> BlockCosts:
    """A, P and the per-unit MACs of one block measured with :func:`metrics.count_macs`."""
    total = metrics.count_macs(model)
    hidden = model.blocks[0].mlp.fc1.out_features
    probe = copy.deepcopy(model)
    _compress_inplace(probe, 0, hidden)
    no_attention = metrics.count_macs(probe)
    _compress_inplace(probe, 0, 1)
    one_unit = metrics.count_macs(probe)
    _compress_inplace(probe, 0, 0)
    no_mlp = metrics.count_macs(probe)
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

    ``kept`` is the number of units (a random subset is drawn) or the indices to keep;
    with 0 units the block is the identity.
    """

    def __init__(self, block: nn.Module, kept: int | torch.Tensor, generator: torch.Generator | None = None):
        super().__init__()
        source = block.mlp if hasattr(block, "mlp") else None
        hidden = source.fc1.out_features if source is not None else 0
        if isinstance(kept, int):
            if not 0 <= kept <= max(hidden, 0):
                raise ConfigError(f"kept units {kept} must lie in 0..{hidden}")
            kept = torch.randperm(hidden, generator=generator)[:kept].sort().values
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


def compress_block(model: nn.Module, block: int, kept_units: int, init: str = "random",
                   activations: torch.Tensor | None = None, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with ``block`` replaced by a :class:`CompressedBlock`.

    ``init="random"`` keeps a seeded random subset of units; ``"activation"`` keeps the
    units with the largest mean |GELU output| (``activations``: mean per unit of that block,
    see :func:`mlp_activation_stats`).
    """
    if init not in MLP_INITS:
        raise unknown_choice("mlp init", init, MLP_INITS)
    out = copy.deepcopy(model)
    if init == "random":
        g = torch.Generator().manual_seed(int(seed) * 1000 + block)
        kept = torch.randperm(model.blocks[block].mlp.fc1.out_features, generator=g)[:kept_units]
    else:
        kept = activations.argsort(descending=True)[:kept_units]
    out.blocks[block] = CompressedBlock(model.blocks[block], kept.sort().values)
    return out


@torch.no_grad()
def mlp_activation_stats(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> list[torch.Tensor]:
    """Mean |GELU output| of every MLP hidden unit of every (uncompressed) block."""
    sums, hooks = {}, []
    for i, block in enumerate(model.blocks):
        if hasattr(block, "mlp") and isinstance(block.mlp, Mlp):
            def hook(_m, _inp, out, i=i):
                sums[i] = sums.get(i, 0) + out.abs().sum(dim=(0, 1))
            hooks.append(block.mlp.act.register_forward_hook(hook))
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            model.forward_features(images[start:start + batch_size])
    finally:
        for h in hooks:
            h.remove()
    return [sums.get(i) for i in range(len(model.blocks))]


def is_compressed(model: nn.Module) -> list[int]:
    return [i for i, b in enumerate(model.blocks) if isinstance(b, CompressedBlock)]


def attention_parameters(block: nn.Module) -> int:
    """Parameters of a block's attention sub-module and norm1 (0 for a compressed block)."""
    return sum(p.numel() for name, p in block.named_parameters()
               if name.startswith(("attn.", "norm1.")))


# ----------------------------------------------------------------------------- stage B


def total_variation(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Σ over 4 neighbour directions of ‖Δ_d x‖_F^β (Frobenius norm over the whole batch)."""
    diffs = (x[..., :, :-1] - x[..., :, 1:], x[..., :-1, :] - x[..., 1:, :],
             x[..., 1:, :-1] - x[..., :-1, 1:], x[..., :-1, :-1] - x[..., 1:, 1:])
    return sum(d.norm() ** beta for d in diffs)


def inversion_loss(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, tv_weight: float,
                   l2_weight: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, per-image cross-entropy) of the inversion objective."""
    ce = F.cross_entropy(model(x), targets, reduction="none")
    loss = ce.mean() + tv_weight * total_variation(x, beta) + l2_weight * x.flatten(1).norm(dim=1).mean()
    return loss, ce


def invert(model: nn.Module, targets: torch.Tensor, steps: int, lr: float = 0.25,
           tv_weight: float = 1e-4, l2_weight: float = 1e-5, beta: float = 0.6,
           jitter: int = 4, flip: bool = True, warmup: float = 0.05, seed: int = 0,
           progress: bool = False) -> tuple[torch.Tensor, pd.DataFrame]:
    """Stage B: synthesise one image per target class from N(0, 1) noise.

    Adam (betas 0.5, 0.9), linear warm-up over ``warmup`` of the steps then cosine decay;
    every step a random roll of up to ``jitter`` pixels and a random horizontal flip;
    pixels clipped to the valid normalised range. Each image keeps its lowest-CE iterate.

    Returns:
        (normalised images, history with columns step, loss, ce).
    """
    g = torch.Generator().manual_seed(seed)
    model.eval()
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    x = torch.randn(len(targets), 3, 32, 32, generator=g).requires_grad_(True)
    mean, std = torch.tensor(data.MEAN).view(1, 3, 1, 1), torch.tensor(data.STD).view(1, 3, 1, 1)
    low, high = (0 - mean) / std, (1 - mean) / std
    optimizer = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.9))
    warm = max(1, int(round(warmup * steps)))
    schedule = lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(steps - warm, 1)))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    best, best_ce, rows = x.detach().clone(), torch.full((len(targets),), float("inf")), []
    bar = progress_bar(steps, "inversion", progress)
    try:
        for step in range(steps):
            dx, dy = (torch.randint(-jitter, jitter + 1, (2,), generator=g).tolist() if jitter else (0, 0))
            view = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            if flip and torch.rand(1, generator=g).item() < 0.5:
                view = view.flip(3)
            loss, ce = inversion_loss(model, view, targets, tv_weight, l2_weight, beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                better = ce.detach() < best_ce  # scored on the iterate the gradient was taken at
                best[better], best_ce[better] = x.detach()[better], ce.detach()[better]
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                x.data = torch.maximum(torch.minimum(x.data, high), low)
            rows.append((step, loss.item(), ce.mean().item()))
            bar.update()
    finally:
        bar.close()
        for p, flag in flags:
            p.requires_grad_(flag)
    return best, pd.DataFrame(rows, columns=["step", "loss", "ce"])


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Normalised images back to uint8 pixels (for image grids)."""
    mean, std = torch.tensor(data.MEAN).view(1, 3, 1, 1), torch.tensor(data.STD).view(1, 3, 1, 1)
    return ((images * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)


def inversion_targets(num_images: int, num_classes: int, seed: int) -> torch.Tensor:
    """Sorted distinct random classes (cycled when more images than classes are asked)."""
    g = torch.Generator().manual_seed(seed)
    reps = math.ceil(num_images / num_classes)
    picks = torch.cat([torch.randperm(num_classes, generator=g) for _ in range(reps)])[:num_images]
    return picks.sort().values


# ----------------------------------------------------------------------------- fine-tuning and scores


@dataclass(frozen=True)
class MimicSettings:
    """Feature-mimicking fine-tune: AdamW, cosine LR over ``steps``, random flips."""

    steps: int
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    update: str = "before"

    def __post_init__(self):
        if self.update not in UPDATE_SETTINGS:
            raise unknown_choice("update setting", self.update, UPDATE_SETTINGS)


@torch.no_grad()
def teacher_targets(teacher: nn.Module, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Teacher features (all tokens after the final norm) and logits of images and their flips."""
    teacher.eval()
    out = {}
    for key, batch in (("features", images), ("features_flip", images.flip(3))):
        out[key] = torch.cat([teacher.forward_features(batch[s:s + batch_size])
                              for s in range(0, len(batch), batch_size)])
    out["logits"] = torch.cat([teacher.forward_head(out["features"][s:s + batch_size])
                               for s in range(0, len(images), batch_size)])
    return out


def trainable_parameters(model: nn.Module, last_changed: int, update: str) -> list[nn.Parameter]:
    """Embeddings, blocks ≤ last_changed + 1 (``before``) or all blocks, and the final norm.

    The classifier stays frozen in both settings (paper: `--update-setting before`).
    """
    if update not in UPDATE_SETTINGS:
        raise unknown_choice("update setting", update, UPDATE_SETTINGS)
    limit = len(model.blocks) - 1 if update == "all" else last_changed + 1
    params = [model.cls_token, model.pos_embed, *model.patch_embed.parameters(), *model.norm.parameters()]
    for i, block in enumerate(model.blocks):
        if i <= limit:
            params += list(block.parameters())
    return [p for p in params if p is not None]


def mimic_finetune(student: nn.Module, images: torch.Tensor, targets: dict[str, torch.Tensor],
                   settings: MimicSettings, last_changed: int, seed: int = 0,
                   params: Sequence[nn.Parameter] | None = None,
                   optimizer: Callable | None = None) -> list[float]:
    """Fine-tune ``student`` in place: MSE between its and the teacher's final-norm tokens.

    Only ``params`` (default: :func:`trainable_parameters`) change; returns the step losses.
    """
    params = list(trainable_parameters(student, last_changed, settings.update) if params is None else params)
    wanted = {id(p) for p in params}
    frozen = [(p, p.requires_grad) for p in student.parameters() if id(p) not in wanted]
    for p, _ in frozen:
        p.requires_grad_(False)
    opt = (optimizer(params) if optimizer is not None else
           torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(settings.steps, 1))
    g = torch.Generator().manual_seed(seed)
    losses = []
    student.train()
    try:
        for _ in range(settings.steps):
            idx = torch.randint(0, len(images), (min(settings.batch_size, len(images)),), generator=g)
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], images[idx].flip(3), images[idx])
            t = torch.where(flip[:, None, None], targets["features_flip"][idx], targets["features"][idx])
            loss = F.mse_loss(student.forward_features(x), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        student.eval()
    return losses


@torch.no_grad()
def kl_to_teacher(student: nn.Module, images: torch.Tensor, teacher_logits: torch.Tensor,
                  batch_size: int = 256) -> float:
    """Mean over images of KL(softmax(teacher) ‖ softmax(student)) — the paper's metric loss."""
    student.eval()
    logits = torch.cat([student(images[s:s + batch_size]) for s in range(0, len(images), batch_size)])
    return F.kl_div(F.log_softmax(logits, 1), F.log_softmax(teacher_logits, 1), log_target=True,
                    reduction="batchmean").item()


@torch.no_grad()
def feature_mse(student: nn.Module, images: torch.Tensor, teacher_features: torch.Tensor,
                batch_size: int = 256) -> float:
    student.eval()
    feats = torch.cat([student.forward_features(images[s:s + batch_size])
                       for s in range(0, len(images), batch_size)])
    return F.mse_loss(feats, teacher_features).item()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    logits = torch.cat([model(images[s:s + batch_size]) for s in range(0, len(images), batch_size)])
    return metrics.accuracy(logits, labels)


# ----------------------------------------------------------------------------- stage C and D


def candidate_blocks(depth: int, min_block: int, max_block: int) -> list[int]:
    """Blocks min_block..max_block (0-indexed, inclusive); the paper excludes the first and last."""
    if not 0 <= min_block <= max_block < depth:
        raise ConfigError(f"candidate blocks {min_block}..{max_block} must lie within the model's "
                          f"{depth} blocks (0..{depth - 1})")
    return list(range(min_block, max_block + 1))


def block_trials(model: nn.Module, blocks: Sequence[int], kept_units: int, images: torch.Tensor,
                 targets: dict[str, torch.Tensor], settings: MimicSettings,
                 metric_sets: dict[str, tuple[torch.Tensor, torch.Tensor]], init: str = "random",
                 seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Stage C: compress each block alone, fine-tune by mimicking, score KL on each metric set.

    ``metric_sets`` maps a name (e.g. ``synthetic``, ``real``) to (images, teacher logits).
    Returns one row per block: block, kl_<name> for every set, final mimic loss.
    """
    activations = mlp_activation_stats(model, images) if init == "activation" else None
    rows = []
    bar = progress_bar(len(blocks), "block trials", progress)
    for b in blocks:
        trial = compress_block(model, b, kept_units, init, activations[b] if activations else None, seed)
        losses = mimic_finetune(trial, images, targets, settings, last_changed=b, seed=seed + b)
        row = {"block": b, "mimic_loss": float(np.mean(losses[-5:])) if losses else float("nan")}
        for name, (x, logits) in metric_sets.items():
            row[f"kl_{name}"] = kl_to_teacher(trial, x, logits)
        rows.append(row)
        bar.update()
    bar.close()
    return pd.DataFrame(rows)


def rank_blocks(scores: pd.DataFrame, column: str) -> list[int]:
    """Blocks by ascending score (most recoverable first); ties broken by block index."""
    return scores.sort_values([column, "block"])["block"].astype(int).tolist()


def progressive_compress(model: nn.Module, order: Sequence[int], n_blocks: int, kept_units: int,
                         images: torch.Tensor, targets: dict[str, torch.Tensor],
                         settings: MimicSettings, init: str = "random", seed: int = 0,
                         after_step: Callable[[int, nn.Module], None] | None = None) -> nn.Module:
    """Stage D: compress ``order[0]``, fine-tune, then ``order[1]``, ... until ``n_blocks``.

    ``after_step(k, model)`` sees the model after its k-th block is compressed and tuned.
    """
    if n_blocks > len(order):
        raise ConfigError(f"n_blocks={n_blocks} exceeds the {len(order)} ranked candidate blocks")
    current = copy.deepcopy(model)
    for k, b in enumerate(order[:n_blocks], start=1):
        activations = mlp_activation_stats(current, images)[b] if init == "activation" else None
        current = compress_block(current, b, kept_units, init, activations, seed)
        mimic_finetune(current, images, targets, settings, last_changed=b, seed=seed * 100 + k)
        if after_step is not None:
            after_step(k, current)
    return current


# ----------------------------------------------------------------------------- baseline


class _Adapted(nn.Module):
    """``module`` followed (after=True) or preceded by an identity-initialised linear adaptor."""

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
    """PRACTISE for ViTs: drop a block; adaptors after fc2 of earlier blocks, before qkv of later ones."""
    out = drop_blocks(model, [dropped])
    params = []
    for i, block in enumerate(out.blocks):
        if i < dropped and hasattr(block, "mlp"):
            block.mlp.fc2 = _Adapted(block.mlp.fc2, block.mlp.fc2.out_features, after=True)
            params += list(block.mlp.fc2.adaptor.parameters())
        elif i > dropped and hasattr(block, "attn"):
            block.attn.qkv = _Adapted(block.attn.qkv, block.attn.qkv.in_features, after=False)
            params += list(block.attn.qkv.adaptor.parameters())
    return out, params


def practise_scores(model: nn.Module, blocks: Sequence[int], images: torch.Tensor,
                    targets: dict[str, torch.Tensor], steps: int, latency_reduction: dict[int, float],
                    lr: float = 0.02, batch_size: int = 32, seed: int = 0,
                    progress: bool = False) -> pd.DataFrame:
    """Recoverability of dropping each block, divided by its latency reduction (lower = drop first).

    Only the adaptors train (SGD, momentum 0.9, wd 1e-4, as PRACTISE); recoverability is the
    feature MSE on the same few-shot images afterwards (PRACTISE's metric loader re-reads
    the training images).
    """
    rows = []
    bar = progress_bar(len(blocks), "recoverability", progress)
    settings = MimicSettings(steps=steps, batch_size=batch_size, lr=lr)
    for b in blocks:
        adapted, params = with_adaptors(model, b)
        mimic_finetune(adapted, images, targets, settings, last_changed=b, seed=seed + b, params=params,
                       optimizer=lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=1e-4))
        recover = feature_mse(adapted, images, targets["features"])
        rows.append({"block": b, "recoverability": recover, "latency_reduction": latency_reduction[b],
                     "score": recover / max(latency_reduction[b], 1e-9)})
        bar.update()
    bar.close()
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- measurement and checks


def describe(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, full_macs: float) -> dict:
    """Source accuracy, MACs (and the kept fraction) and parameters of a model."""
    macs = metrics.count_macs(model)
    return {"accuracy": accuracy(model, images, labels), "macs": macs, "macs_kept": macs / full_macs,
            "params": metrics.count_parameters(model)}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    ra, rb = pd.Series(list(a)).rank().to_numpy(), pd.Series(list(b)).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def random_spearman(reference: Sequence[float], draws: int = 1000, seed: int = 0) -> np.ndarray:
    """Spearman ρ of random block rankings against ``reference`` (the chance level)."""
    rng = np.random.default_rng(seed)
    ref = np.asarray(reference, dtype=float)
    return np.array([spearman(rng.permutation(len(ref)), ref) for _ in range(draws)])


def few_shot_pick(labels: torch.Tensor, num_samples: int, seed: int, classes: Sequence[str],
                  dataset: str = "source train") -> torch.Tensor:
    """Indices of ``num_samples`` training images: ⌈N/K⌉ per class, then a seeded N of those."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be a positive number of images, got {num_samples!r}")
    if num_samples > len(labels):
        raise ConfigError(f"num_samples={num_samples} exceeds the {len(labels)} images of {dataset}")
    per_class = math.ceil(num_samples / len(classes))
    idx = data.few_shot_indices(labels, per_class, seed, classes, dataset)
    g = torch.Generator().manual_seed(seed)
    return idx[torch.randperm(len(idx), generator=g)[:num_samples]].sort().values


def validate_config(cfg, train_size: int, model: nn.Module | None = None) -> BlockCosts:
    """All user errors of notebook 04 in one place, before any training; returns the measured costs.

    ``model`` may be an untrained copy of the architecture (MACs do not depend on weights).
    """
    for update in cfg.update_settings:
        if update not in UPDATE_SETTINGS:
            raise unknown_choice("update setting", update, UPDATE_SETTINGS)
    for init in cfg.mlp_inits:
        if init not in MLP_INITS:
            raise unknown_choice("mlp init", init, MLP_INITS)
    for n in cfg.num_samples:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"num_samples entries must be positive integers, got {n!r}")
        if n > train_size:
            raise ConfigError(f"num_samples={n} exceeds the {train_size} images of the source training set")
    if model is None:
        from . import models
        model = models.build_model(cfg.model, 100)
    depth = len(model.blocks)
    candidates = candidate_blocks(depth, cfg.min_block, cfg.max_block)
    for k in cfg.drop_blocks:
        if not 1 <= k <= len(candidates):
            raise ConfigError(f"drop_blocks entry {k} must lie in 1..{len(candidates)} "
                              f"(the candidate blocks of the {depth}-block model)")
    costs = measure_costs(model)
    for ratio in cfg.keep_ratios:
        plan_structure(costs, ratio, max_blocks=len(candidates))
    if cfg.n_blocks is not None:
        if cfg.n_blocks > depth:
            raise ConfigError(f"n_blocks={cfg.n_blocks} exceeds the {depth} blocks of {cfg.model}")
        for ratio in cfg.keep_ratios:
            plan_structure(costs, ratio, n_blocks=cfg.n_blocks, max_blocks=len(candidates))
    if not 0 <= cfg.trial_drop_ratio <= 1:
        raise ConfigError(f"trial_drop_ratio {cfg.trial_drop_ratio} must lie in [0, 1]")
    return costs


class AttentionOnlyBlock(nn.Module):
    """A ViT block whose MLP (and norm2) is removed: the opposite probe of a compressed block."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.norm1, self.attn = copy.deepcopy(block.norm1), copy.deepcopy(block.attn)
        self.ls1 = copy.deepcopy(getattr(block, "ls1", nn.Identity()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ls1(self.attn(self.norm1(x)))


def structural_model(model: nn.Module, blocks: Sequence[int], kind: str, kept_units: int = 0) -> nn.Module:
    """A copy of ``model`` with ``blocks`` changed, for timing (which blocks does not matter).

    kind: ``dcvit`` (compressed, ``kept_units`` each), ``drop`` (identity),
    ``no_attention`` (compressed keeping every unit), ``no_mlp`` (:class:`AttentionOnlyBlock`).
    """
    out = copy.deepcopy(model)
    hidden = model.blocks[0].mlp.fc1.out_features
    for b in blocks:
        if kind == "dcvit":
            out.blocks[b] = CompressedBlock(model.blocks[b], torch.arange(kept_units))
        elif kind == "no_attention":
            out.blocks[b] = CompressedBlock(model.blocks[b], torch.arange(hidden))
        elif kind == "no_mlp":
            out.blocks[b] = AttentionOnlyBlock(model.blocks[b])
        elif kind == "drop":
            out.blocks[b] = nn.Identity()
        else:
            raise unknown_choice("structure kind", kind, ("dcvit", "drop", "no_attention", "no_mlp"))
    return out.eval()


def interpolate_curve(curve: pd.DataFrame, at: float, x: str = "macs_kept", y: str = "accuracy") -> float:
    """Linear interpolation of a (dense) accuracy-vs-MACs curve; NaN outside its range."""
    curve = curve.groupby(x, as_index=False)[y].mean().sort_values(x)
    if curve.empty or not curve[x].min() <= at <= curve[x].max():
        return float("nan")
    return float(np.interp(at, curve[x], curve[y]))
