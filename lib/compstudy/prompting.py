"""Visual prompting with RLM / FLM / ILM label mapping, and linear probing, on a frozen model.

Written from the description of ILM-VP (Chen et al. 2023) and its Hidden-Cost fork in
``docs/papers.md`` section 1.2-1.4:

* **Pad prompt**: the s x s target image (values in [0, 1]) is centred in a zero canvas of
  side S (left/top pad floor((S - s + 1)/2)); a parameter theta (3 x S x S, initialised to 0)
  adds sigmoid(theta) on the border only (a fixed mask is 0 on the image window); the
  source normalisation is applied *after* the prompt. Only theta trains.
* **Label mapping**: target class j reads source logit pi(j). RLM: pi = first K_t entries of
  a seeded random permutation, fixed. FLM: the frequency matrix C[a, j] (how many training
  images of target class j the model predicts as source class a under the *initial* prompt)
  is turned into a one-to-one mapping by greedy assignment, once. ILM: the same, recomputed
  every ``mapping_interval`` epochs with the current prompt.
* **Greedy assignment**: K_t times, take the global arg-max (a*, j*) of C, set pi(j*) = a*,
  remove row a* and column j* (not the Hungarian optimum, kept for fidelity).
* **Linear probe**: a new linear head on frozen pooled features, trained with Adam.

The optimiser of the prompt is Adam with MultiStepLR (x0.1 at 50 % and 72 % of the epochs),
as in the paper; the accuracy reported is the one after the final epoch (never a checkpoint
chosen on the test set).
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from . import data, models, train
from .errors import ConfigError, unknown_choice

MAPPINGS = ("rlm", "flm", "ilm")
METHODS = MAPPINGS + ("lp",)


# ----------------------------------------------------------------------------- prompt


class PadPrompt(nn.Module):
    """The expansive padding prompt: x' = N(Pad(x) + sigmoid(theta) * M).

    Args:
        image_size: side s of the target images.
        canvas: side S of the prompted input (S > s).
        mean, std: normalisation applied after the prompt (the source statistics).
    """

    def __init__(self, image_size: int = 32, canvas: int = 48,
                 mean: Sequence[float] = data.MEAN, std: Sequence[float] = data.STD):
        super().__init__()
        if canvas <= image_size:
            raise ConfigError(f"prompt canvas must exceed the image size {image_size}, got {canvas}")
        self.image_size, self.canvas = image_size, canvas
        self.pad_lo = (canvas - image_size + 1) // 2
        self.pad_hi = (canvas - image_size) // 2
        self.theta = nn.Parameter(torch.zeros(3, canvas, canvas))
        mask = torch.ones(1, canvas, canvas)
        lo = self.pad_lo
        mask[:, lo:lo + image_size, lo:lo + image_size] = 0
        self.register_buffer("mask", mask)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    @property
    def window(self) -> tuple[slice, slice]:
        lo = self.pad_lo
        return slice(lo, lo + self.image_size), slice(lo, lo + self.image_size)

    def border(self) -> torch.Tensor:
        """The additive prompt sigmoid(theta) * M (3 x S x S), zero on the image window."""
        return torch.sigmoid(self.theta) * self.mask

    def unnormalized(self, images01: torch.Tensor) -> torch.Tensor:
        """Pad(x) + prompt, before normalisation (values in [0, 1]); for pictures and tests."""
        padded = F.pad(images01, (self.pad_lo, self.pad_hi, self.pad_lo, self.pad_hi))
        return padded + self.border()

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        return (self.unnormalized(images01) - self.mean) / self.std

    def free_parameters(self) -> int:
        """Values the prompt can actually change: 3 (S^2 - s^2)."""
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
        flat = int(torch.argmax(work))
        a, j = divmod(flat, k_t)
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


@torch.no_grad()
def source_logits(model: nn.Module, prompt: PadPrompt, images_uint8: torch.Tensor,
                  batch_size: int = 256) -> torch.Tensor:
    """Source logits of the prompted images, model and prompt in eval mode."""
    model.eval()
    return torch.cat([model(prompt(data.to_float(images_uint8[i:i + batch_size])))
                      for i in range(0, len(images_uint8), batch_size)])


def frequency_mapping(model: nn.Module, prompt: PadPrompt, images: data.ImageSet,
                      num_source: int) -> torch.Tensor:
    """FLM / ILM mapping at the current prompt over the (possibly few-shot) training set."""
    preds = source_logits(model, prompt, images.images).argmax(1)
    return greedy_assignment(frequency_matrix(preds, images.labels, num_source, len(images.classes)))


# ----------------------------------------------------------------------------- training


@dataclass
class PromptResult:
    prompt: PadPrompt
    mapping: torch.Tensor
    mapping_epochs: list[int] = field(default_factory=list)  # epochs (0-based) that (re)computed it
    losses: list[float] = field(default_factory=list)


def _num_source(model: nn.Module) -> int:
    """Number of source classes: the width of the model's last linear layer."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else \
        [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return head.out_features


def train_prompt(model: nn.Module, train_set: data.ImageSet, mapping: str, epochs: int,
                 lr: float = 0.01, batch_size: int = 32, canvas: int = 48,
                 mapping_interval: int = 1, seed: int = 0, progress: bool = False) -> PromptResult:
    """Learn a pad prompt on a frozen ``model`` with the given label-mapping scheme.

    The mapping is computed before epoch 0 (FLM, ILM; RLM draws it from ``seed``) and, for
    ILM only, again at the start of every epoch e with e % mapping_interval == 0.
    """
    if mapping not in MAPPINGS:
        raise unknown_choice("label mapping", mapping, MAPPINGS)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    k_s = _num_source(model)
    prompt = PadPrompt(train_set.images.shape[-1], canvas)
    result = PromptResult(prompt, random_mapping(k_s, len(train_set.classes), seed))
    optimizer = torch.optim.Adam(prompt.parameters(), lr=lr)
    scheduler = _paper_schedule(optimizer, epochs)
    g = torch.Generator().manual_seed(seed)
    n = len(train_set)
    bar = train.progress_bar(epochs * -(-n // batch_size), f"prompt {mapping}", progress)
    for epoch in range(epochs):
        if (mapping == "flm" and epoch == 0) or (mapping == "ilm" and epoch % mapping_interval == 0):
            result.mapping = frequency_mapping(model, prompt, train_set, k_s)
            result.mapping_epochs.append(epoch)
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            logits = model(prompt(data.to_float(train_set.images[idx])))[:, result.mapping]
            loss = F.cross_entropy(logits, train_set.labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            result.losses.append(loss.item())
            bar.update()
        scheduler.step()
    bar.close()
    return result


@torch.no_grad()
def prompt_logits(model: nn.Module, result: PromptResult, images_uint8: torch.Tensor) -> torch.Tensor:
    """Target logits (the mapped source logits) of prompted images."""
    return source_logits(model, result.prompt, images_uint8)[:, result.mapping]


def _paper_schedule(optimizer: torch.optim.Optimizer, epochs: int):
    """The ILM-VP schedule for both VP and LP: x0.1 at 50 % and 72 % of the epochs (§1.4)."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[int(0.5 * epochs), int(0.72 * epochs)], gamma=0.1)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, epochs: int = 100,
                 lr: float = 0.01, batch_size: int = 128, seed: int = 0) -> nn.Linear:
    """A new linear head on frozen features: Adam, MultiStepLR x0.1 at 50 % / 72 % of epochs."""
    torch.manual_seed(seed)
    head = nn.Linear(train_x.shape[1], num_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    scheduler = _paper_schedule(optimizer, epochs)
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


@torch.no_grad()
def frozen_features(model: nn.Module, images_uint8: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Pooled pre-logit features of 32x32 images (source normalisation, no prompt)."""
    model.eval()
    return torch.cat([models.pooled_features(model, data.normalize(images_uint8[i:i + batch_size]))
                      for i in range(0, len(images_uint8), batch_size)])


def probe_parameters(feature_dim: int, num_classes: int) -> int:
    """Trainable values of a linear probe: feature_dim * K_t + K_t."""
    return feature_dim * num_classes + num_classes


# ----------------------------------------------------------------------------- validation


def validate_transfer(methods: Sequence[str], shots: Sequence[int], canvas: int,
                      mapping_interval: int = 1) -> None:
    """ConfigError (one line) for an unknown method, a bad shot count or canvas, before training."""
    for m in methods:
        if m not in METHODS:
            raise unknown_choice("transfer method", m, METHODS)
    for n in shots:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n == 0 or n < -1:
            raise ConfigError(f"n_shot must be a positive number of images per class or -1 (all), got {n!r}")
    if not isinstance(canvas, numbers.Integral) or canvas <= data.SIZE:
        raise ConfigError(f"prompt canvas must be an integer above {data.SIZE}, got {canvas!r}")
    if not isinstance(mapping_interval, numbers.Integral) or mapping_interval < 1:
        raise ConfigError(f"mapping_interval must be an integer >= 1, got {mapping_interval!r}")


def check_shots(train_set: data.ImageSet, shots: Sequence[int]) -> None:
    """Raise ConfigError if any budget asks more images than a class of ``train_set`` holds."""
    for n in shots:
        data.few_shot_indices(train_set.labels, n, 0, train_set.classes, train_set.name)


# ----------------------------------------------------------------------------- one transfer unit


@dataclass(frozen=True)
class TransferSettings:
    """Hyper-parameters of a transfer (paper defaults: VP Adam lr 0.01, LP Adam lr 0.01)."""

    vp_epochs: int = 3
    vp_lr: float = 0.01
    vp_batch_size: int = 32
    canvas: int = 40
    mapping_interval: int = 1
    lp_epochs: int = 100
    lp_lr: float = 0.01
    lp_batch_size: int = 128


def transfer(model: nn.Module, method: str, train_set: data.ImageSet, test_set: data.ImageSet,
             settings: TransferSettings, seed: int,
             features: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Transfer a frozen ``model`` to a target with VP (``rlm``/``flm``/``ilm``) or ``lp``.

    ``train_set`` is the (few-shot) training set. For ``lp``, ``features`` = (train, test)
    frozen features may be passed to skip extraction. Returns ``probs`` (softmax over the
    K_t target logits of the test set, after the final epoch), ``labels``,
    ``trainable_parameters`` and, for VP, the learned ``theta`` and ``mapping``.
    """
    if method not in METHODS:
        raise unknown_choice("transfer method", method, METHODS)
    torch.manual_seed(seed)
    if method == "lp":
        train_x, test_x = features if features is not None else (
            frozen_features(model, train_set.images), frozen_features(model, test_set.images))
        head = linear_probe(train_x, train_set.labels, len(train_set.classes), settings.lp_epochs,
                            settings.lp_lr, settings.lp_batch_size, seed)
        with torch.no_grad():
            logits = head(test_x)
        return {"probs": logits.softmax(1), "labels": test_set.labels,
                "trainable_parameters": probe_parameters(train_x.shape[1], len(train_set.classes))}
    result = train_prompt(model, train_set, method, settings.vp_epochs, settings.vp_lr,
                          settings.vp_batch_size, settings.canvas, settings.mapping_interval, seed)
    logits = prompt_logits(model, result, test_set.images)
    return {"probs": logits.softmax(1), "labels": test_set.labels,
            "trainable_parameters": result.prompt.free_parameters(),
            "theta": result.prompt.theta.detach().clone(), "mapping": result.mapping,
            "mapping_updates": len(result.mapping_epochs), "final_loss": result.losses[-1]}


def summarize(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, ECE, mean confidence and true-class confidence of right / wrong predictions."""
    from . import metrics

    tcc = metrics.true_class_confidence(probs, labels)
    right, wrong = tcc[tcc.correct], tcc[~tcc.correct]
    return {
        "accuracy": metrics.accuracy(probs, labels),
        "ece": metrics.expected_calibration_error(probs, labels, n_bins),
        "mean_confidence": float(probs.max(1).values.mean()),
        "nll": float(F.nll_loss(probs.clamp_min(1e-12).log(), labels)),
        "true_conf_correct": float(right.confidence_true.mean()) if len(right) else float("nan"),
        "true_conf_wrong": float(wrong.confidence_true.mean()) if len(wrong) else float("nan"),
    }


def prompt_with_theta(theta: torch.Tensor, image_size: int = 32) -> PadPrompt:
    """Rebuild a prompt from saved ``theta`` (for pictures of learned prompts)."""
    prompt = PadPrompt(image_size, theta.shape[-1])
    with torch.no_grad():
        prompt.theta.copy_(theta)
    return prompt


def save_unit(folder, unit: dict, outputs: dict) -> None:
    """Save the test probabilities (and prompt) of one unit next to ``runs.csv``."""
    import io
    from pathlib import Path

    from . import config
    from .results import atomic_write_bytes

    keep = {k: v for k, v in outputs.items() if isinstance(v, torch.Tensor)}
    buffer = io.BytesIO()
    torch.save({"unit": dict(unit), **keep}, buffer)
    atomic_write_bytes(Path(folder) / "predictions" / f"{config.digest(dict(unit))}.pt", buffer.getvalue())


def load_unit(folder, unit: dict) -> dict:
    from pathlib import Path

    from . import config

    return torch.load(Path(folder) / "predictions" / f"{config.digest(dict(unit))}.pt",
                      map_location="cpu", weights_only=False)


# ----------------------------------------------------------------------------- the sweep of notebook 01

SWEEP_KEY = ("kind", "model", "target", "method", "shots", "seed", "canvas", "mapping_interval")


def sweep_units(model_labels: Sequence[str], targets: Sequence[str], methods: Sequence[str],
                mapping_models: Sequence[str], core_methods: Sequence[str], shots: Sequence[int],
                seeds: Sequence[int], reduced_models: Sequence[str] = (),
                reduced_seeds: Sequence[int] = (), canvases: Sequence[int] = (40,),
                mapping_intervals: Sequence[int] = (1,)) -> list[dict]:
    """Every transfer unit of a run (one row each), in a cheap-first order.

    Models in ``mapping_models`` get every method of ``methods``; the others the
    ``core_methods``. Models in ``reduced_models`` run only ``reduced_seeds``. Canvases and
    mapping intervals multiply the VP units (LP units carry 0 for both).
    """
    units = []
    for target, model, seed in itertools.product(targets, model_labels, seeds):
        if model in reduced_models and seed not in reduced_seeds:
            continue
        for method in (methods if model in mapping_models else [m for m in core_methods if m in methods]):
            vp = method != "lp"
            for canvas, interval, n in itertools.product(canvases if vp else [0],
                                                         mapping_intervals if method == "ilm" else [0 if not vp else 1],
                                                         shots):
                units.append({"kind": "transfer", "model": model, "target": target, "method": method,
                              "shots": int(n), "seed": int(seed), "canvas": int(canvas),
                              "mapping_interval": int(interval)})
    return sorted(units, key=lambda u: u["method"] != "lp")  # probes first: they are cheap


def run_sweep(store, units: Sequence[dict], models_by_label: Mapping[str, nn.Module],
              targets: Mapping[str, tuple[data.ImageSet, data.ImageSet]], settings: TransferSettings,
              results_dir, ece_bins: int = 15, progress: bool = True) -> None:
    """Compute every pending unit and add its row to ``store`` (resumable, one row per unit).

    Frozen features for the probes are extracted once per (model, target); test
    probabilities and prompts are saved per unit for the reliability diagrams and pictures.
    """
    import time
    from dataclasses import replace

    from .seeding import seed_everything

    pending = list(store.pending(units))
    features: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    bar = train.progress_bar(len(pending), "transfer units", progress)
    for unit in pending:
        model = models_by_label[unit["model"]]
        train_full, test = targets[unit["target"]]
        idx = data.few_shot_indices(train_full.labels, unit["shots"], unit["seed"],
                                    train_full.classes, train_full.name)
        feats = None
        if unit["method"] == "lp":
            key = (unit["model"], unit["target"])
            if key not in features:
                features[key] = (frozen_features(model, train_full.images), frozen_features(model, test.images))
            feats = (features[key][0][idx], features[key][1])
        unit_settings = replace(settings, canvas=unit["canvas"] or settings.canvas,
                                mapping_interval=unit["mapping_interval"] or 1)
        seed_everything(unit["seed"])
        start = time.perf_counter()
        out = transfer(model, unit["method"], train_full.subset(idx), test, unit_settings, unit["seed"], feats)
        seconds = time.perf_counter() - start
        save_unit(results_dir, unit, out)
        store.add(dict(unit) | summarize(out["probs"], out["labels"], ece_bins) | {
            "train_images": len(idx), "trainable_parameters": out["trainable_parameters"],
            "mapping_updates": out.get("mapping_updates", 0), "seconds": seconds})
        bar.update()
    bar.close()


def shots_label(shots: int, full: int) -> int:
    """Images per class of a budget (-1 = the full, capped, training set)."""
    return full if shots == -1 else shots


def claims(frame, dense: str = "dense", family: str = "lottery", main_sparse: str | None = None):
    """The numbers that decide the paper's claims (section 1.8), from a run's rows.

    Returns a dict of small DataFrames: ``mappings`` (dense accuracy per mapping and budget),
    ``gap`` (dense - sparse accuracy per sparse model, method and budget, paired by target
    and seed), ``ece`` (ECE per model and method) and ``params`` (trainable values).
    """
    import pandas as pd

    t = frame[frame.kind == "transfer"]
    out = {}
    dense_rows = t[t.model == dense]
    out["mappings"] = dense_rows.pivot_table(index="shots", columns="method", values="accuracy")
    keys = ["target", "method", "shots", "seed", "canvas", "mapping_interval"]
    base = dense_rows.set_index(keys)[["accuracy", "ece"]]
    gaps = []
    for model, rows in t[t.model != dense].groupby("model"):
        joined = rows.set_index(keys)[["accuracy", "ece"]].merge(
            base, left_index=True, right_index=True, suffixes=("", "_dense"))
        joined = joined.assign(model=model, gap=joined.accuracy_dense - joined.accuracy,
                               ece_gap=joined.ece - joined.ece_dense).reset_index()
        gaps.append(joined)
    out["pairs"] = pd.concat(gaps, ignore_index=True) if gaps else pd.DataFrame()
    if gaps:
        out["gap"] = out["pairs"].pivot_table(index=["model", "method"], columns="shots", values="gap")
    out["ece"] = t.pivot_table(index="model", columns="method", values="ece")
    out["params"] = t.groupby("method")["trainable_parameters"].first()
    return out
