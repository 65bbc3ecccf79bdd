"""Visual prompting with RLM / FLM / ILM label mapping, and linear probing, on a frozen model.

From ILM-VP (Chen et al., "Understanding and Improving Visual Prompting: A Label-Mapping
Perspective", CVPR 2023, section 3 and its released code) as used by Misra et al.,
"Uncovering the Hidden Cost of Model Compression" (2024, section 3, "Visual prompting"):

* **Pad prompt**: the target image, resized to side s, is centred in a zero canvas of side S
  (left/top pad floor((S - s + 1) / 2)); a parameter theta (3 x S x S, initialised to 0) adds
  sigmoid(theta) on the border only (a fixed mask is 0 on the image window), and the source
  normalisation is applied *after* the prompt. Only theta trains.
* **Label mapping**: target class j reads source logit pi(j). RLM: pi = the first K_t entries
  of a seeded random permutation, fixed. FLM: the frequency matrix C[a, j] (how many training
  images of target class j the model predicts as source class a under the *initial* prompt)
  is turned into a one-to-one map by greedy assignment, once. ILM: the same, recomputed at
  the start of every ``mapping_interval`` epochs with the current prompt.
* **Greedy assignment**: K_t times, take the global arg-max (a*, j*) of C, set pi(j*) = a*,
  and remove row a* and column j* (not the Hungarian optimum; kept for fidelity).
* **Optimiser**: Adam on theta with MultiStepLR (x0.1 at 50 % and 72 % of the epochs). The
  accuracy reported is the one after the final epoch, never a checkpoint chosen on the test set.
* **Linear probe** (the paper's LP baseline): a new linear head on frozen pooled features,
  Adam with the same schedule.

Prompts that share a model and a training-set size are learned in shared forward passes
(:func:`train_prompts`): each follows the trajectory it would follow alone, and the CPU's small
convolutions run at an efficient batch. The frozen model runs in float32: on CPUs without
bfloat16 units, autocast makes EfficientNet's depthwise convolutions many times slower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError, unknown_choice
from ..train import progress_bar

MAPPINGS = ("rlm", "flm", "ilm")
METHODS = MAPPINGS + ("lp",)


# ----------------------------------------------------------------------------- images


def resize(images: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 (or [0, 1] float) N x C x h x w images as float32 RGB in [0, 1] at ``side`` px.

    Grey images are repeated over three channels; resizing is bicubic, clamped to [0, 1]
    (bicubic overshoots), with antialiasing when shrinking.
    """
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != side or x.shape[-2] != side:
        x = F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False,
                          antialias=x.shape[-1] > side).clamp_(0, 1)
    return x.contiguous()


def source_statistics(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation (mean, std) a model expects, from its timm ``pretrained_cfg``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))


def _forward(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The model on a channels-last copy of ``inputs`` (the fast layout for CPU convolutions)."""
    return model(inputs.contiguous(memory_format=torch.channels_last))


# ----------------------------------------------------------------------------- prompt


class PadPrompt(nn.Module):
    """The expansive padding prompt: x' = N(Pad(x) + sigmoid(theta) * M).

    Args:
        image_size: side s of the (already resized) target images.
        canvas: side S of the prompted input (S > s).
        mean, std: the source normalisation, applied after the prompt.
    """

    def __init__(self, image_size: int, canvas: int, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5)):
        super().__init__()
        if canvas <= image_size:
            raise ConfigError(f"prompt canvas must exceed the image side {image_size}, got {canvas}")
        self.image_size, self.canvas = image_size, canvas
        self.pad_lo = (canvas - image_size + 1) // 2
        self.pad_hi = (canvas - image_size) // 2
        self.theta = nn.Parameter(torch.zeros(3, canvas, canvas))
        mask = torch.ones(1, canvas, canvas)
        rows, cols = self.window
        mask[:, rows, cols] = 0
        self.register_buffer("mask", mask)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def window(self) -> tuple[slice, slice]:
        lo = self.pad_lo
        return slice(lo, lo + self.image_size), slice(lo, lo + self.image_size)

    def border(self) -> torch.Tensor:
        """The additive prompt sigmoid(theta) * M (3 x S x S), zero on the image window."""
        return torch.sigmoid(self.theta) * self.mask

    def unnormalized(self, images01: torch.Tensor) -> torch.Tensor:
        """Pad(x) + prompt before normalisation (values in [0, 1]); for pictures and tests."""
        padded = F.pad(images01, (self.pad_lo, self.pad_hi, self.pad_lo, self.pad_hi))
        return padded + self.border()

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        return (self.unnormalized(images01) - self.mean) / self.std

    def free_parameters(self) -> int:
        """Values the prompt can change: 3 (S^2 - s^2), whatever the number of target classes."""
        return 3 * (self.canvas ** 2 - self.image_size ** 2)


# ----------------------------------------------------------------------------- label mapping


def greedy_assignment(freq: torch.Tensor) -> torch.Tensor:
    """One-to-one map target j -> source a from a K_s x K_t count matrix, greedily.

    Ties go to the first maximum in row-major order (``argmax`` of the flattened matrix).
    """
    k_s, k_t = freq.shape
    if k_t > k_s:
        raise ConfigError(f"label mapping needs at most {k_s} target classes, got {k_t}")
    work = freq.detach().double().clone()
    mapping = torch.full((k_t,), -1, dtype=torch.long)
    for _ in range(k_t):
        a, j = divmod(int(torch.argmax(work)), k_t)
        mapping[j] = a
        work[a, :] = -float("inf")
        work[:, j] = -float("inf")
    return mapping


def frequency_matrix(source_predictions: torch.Tensor, labels: torch.Tensor,
                     num_source: int, num_target: int) -> torch.Tensor:
    """C[a, j] = number of images of target class j predicted as source class a."""
    flat = source_predictions.long() * num_target + labels.long()
    return torch.bincount(flat, minlength=num_source * num_target).view(num_source, num_target)


def random_mapping(num_source: int, num_target: int, seed: int) -> torch.Tensor:
    """RLM: the first K_t entries of a seeded random permutation of the source classes."""
    return torch.randperm(num_source, generator=torch.Generator().manual_seed(seed))[:num_target]


def mapping_from_logits(logits: torch.Tensor, labels: torch.Tensor, num_target: int) -> torch.Tensor:
    """FLM / ILM mapping: greedy one-to-one assignment on the frequency matrix of the predictions."""
    return greedy_assignment(frequency_matrix(logits.argmax(1), labels, logits.shape[1], num_target))


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class PromptJob:
    """One prompt to learn: its training images (indices into a shared pool), its label
    mapping, the seed of its batch order and RLM permutation, and its ILM interval."""

    indices: torch.Tensor
    mapping: str
    seed: int = 0
    mapping_interval: int = 1

    def __post_init__(self):
        if self.mapping not in MAPPINGS:
            raise unknown_choice("label mapping", self.mapping, MAPPINGS)
        if self.mapping_interval < 1:
            raise ConfigError(f"mapping_interval must be >= 1, got {self.mapping_interval}")

    def remaps(self, epoch: int) -> bool:
        """FLM maps once before epoch 0; ILM before every epoch e with e % interval == 0."""
        return (self.mapping == "flm" and epoch == 0) or (
            self.mapping == "ilm" and epoch % self.mapping_interval == 0)


@dataclass
class PromptResult:
    prompt: PadPrompt
    mapping: torch.Tensor
    mapping_epochs: list[int] = field(default_factory=list)  # epochs (0-based) that (re)computed it
    losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class PromptSettings:
    """Hyper-parameters of VP training (ILM-VP: Adam lr 0.01, batch 128, 200 epochs)."""

    epochs: int = 2
    lr: float = 0.01
    batch_size: int = 32
    canvas: int = 48
    eval_batch_size: int = 250


def paper_schedule(optimizer: torch.optim.Optimizer, epochs: int):
    """ILM-VP's schedule for both VP and LP: x0.1 at 50 % and 72 % of the epochs."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[int(0.5 * epochs), int(0.72 * epochs)], gamma=0.1)


def num_source_classes(model: nn.Module) -> int:
    """Number of source classes: the width of the model's last linear layer."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


@torch.no_grad()
def prompted_logits(model: nn.Module, prompt: PadPrompt, images01: torch.Tensor,
                    batch_size: int = 250) -> torch.Tensor:
    """Source logits of ``images01`` (side s, [0, 1]) under ``prompt``, model in eval mode."""
    model.eval()
    return torch.cat([_forward(model, prompt(images01[i:i + batch_size]))
                      for i in range(0, len(images01), batch_size)])


def _freeze(model: nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def train_prompts(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                  jobs: Sequence[PromptJob], settings: PromptSettings,
                  progress: bool = False) -> list[PromptResult]:
    """Learn one pad prompt per job on a frozen ``model``, all jobs in the same forward passes.

    ``images`` (N x 3 x s x s in [0, 1]) and ``labels`` are the pool every job's ``indices``
    point into. Each step concatenates every job's mini-batch (in its own seeded order) and
    minimises the *sum* of the jobs' mean cross-entropies. The model is frozen in eval mode,
    so images do not interact and each theta receives exactly its own job's gradient; Adam is
    element-wise, so every prompt follows the trajectory it would follow alone. Jobs need
    equally many training images, so that they share the batch boundaries.

    Mappings before epoch 0 are computed under the initial prompt (theta = 0), identical for
    every job, so jobs with the same images (FLM and ILM of one seed) share that pass.
    """
    sizes = {len(job.indices) for job in jobs}
    if len(sizes) != 1:
        raise ValueError(f"prompts trained together need one training-set size, got {sorted(sizes)}")
    n = sizes.pop()
    _freeze(model)
    k_s = num_source_classes(model)
    mean, std = source_statistics(model)
    side = images.shape[-1]
    results = [PromptResult(PadPrompt(side, settings.canvas, mean, std),
                            random_mapping(k_s, num_classes, job.seed)) for job in jobs]
    optimizer = torch.optim.Adam([r.prompt.theta for r in results], lr=settings.lr)
    scheduler = paper_schedule(optimizer, settings.epochs)
    generators = [torch.Generator().manual_seed(job.seed) for job in jobs]
    bar = progress_bar(settings.epochs * -(-n // settings.batch_size), f"{len(jobs)} prompt(s)", progress)
    for epoch in range(settings.epochs):
        initial: dict[tuple, torch.Tensor] = {}
        for job, result in zip(jobs, results):
            if not job.remaps(epoch):
                continue
            if epoch == 0:  # every prompt is still the initial one
                key = tuple(job.indices.tolist())
                if key not in initial:
                    initial[key] = prompted_logits(model, result.prompt, images[job.indices],
                                                   settings.eval_batch_size)
                logits = initial[key]
            else:
                logits = prompted_logits(model, result.prompt, images[job.indices],
                                         settings.eval_batch_size)
            result.mapping = mapping_from_logits(logits, labels[job.indices], num_classes)
            result.mapping_epochs.append(epoch)
        orders = [job.indices[torch.randperm(n, generator=g)] for job, g in zip(jobs, generators)]
        for i in range(0, n, settings.batch_size):
            batches = [order[i:i + settings.batch_size] for order in orders]
            inputs = torch.cat([r.prompt(images[idx]) for r, idx in zip(results, batches)])
            outputs = _forward(model, inputs).split([len(idx) for idx in batches])
            losses = [F.cross_entropy(out[:, r.mapping], labels[idx])
                      for out, r, idx in zip(outputs, results, batches)]
            optimizer.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
            optimizer.step()
            for r, loss in zip(results, losses):
                r.losses.append(loss.item())
            bar.update()
        scheduler.step()
    bar.close()
    return results


@torch.no_grad()
def target_probabilities(model: nn.Module, results: Sequence[PromptResult], images01: torch.Tensor,
                         batch_size: int = 250) -> list[torch.Tensor]:
    """Softmax over the K_t mapped source logits of ``images01``, for every learned prompt."""
    return [prompted_logits(model, r.prompt, images01, batch_size)[:, r.mapping].softmax(1)
            for r in results]


# ----------------------------------------------------------------------------- linear probe


@torch.no_grad()
def pooled_features(model: nn.Module, images01: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Pre-logit pooled features of ``images01`` ([0, 1], any side), source-normalised."""
    model.eval()
    mean, std = source_statistics(model)
    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(images01), batch_size):
        x = ((images01[i:i + batch_size] - mean) / std).contiguous(memory_format=torch.channels_last)
        out.append(model.forward_head(model.forward_features(x), pre_logits=True))
    return torch.cat(out)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, epochs: int = 100,
                 lr: float = 0.01, batch_size: int = 128, seed: int = 0) -> nn.Linear:
    """A new linear head on frozen features: Adam, MultiStepLR x0.1 at 50 % / 72 % of epochs."""
    torch.manual_seed(seed)
    head = nn.Linear(train_x.shape[1], num_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    scheduler = paper_schedule(optimizer, epochs)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(train_y), generator=g)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(head(train_x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return head.eval()


def probe_parameters(feature_dim: int, num_classes: int) -> int:
    """Trainable values of a linear probe: feature_dim * K_t + K_t."""
    return feature_dim * num_classes + num_classes
