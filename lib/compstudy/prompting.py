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

For speed on the CPU, prompts that share a model and a training-set size are learned in shared
forward passes (:func:`train_prompts`: the same trajectories as one at a time), and the frozen
model may run under bfloat16 autocast (``precision``).
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
PRECISIONS = ("float32", "bfloat16")  # of the frozen model's passes in VP (prompts stay float32)


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
def source_logits(model: nn.Module, prompts: Sequence[PadPrompt], images: Sequence[torch.Tensor],
                  batch_size: int = 512, precision: str = "float32") -> list[torch.Tensor]:
    """Source logits of ``images[k]`` (uint8) under ``prompts[k]``, for every k, model in eval mode.

    The prompted images of all prompts go through the model in shared batches of
    ``batch_size``: many small prompt jobs make one efficient forward pass.
    """
    model.eval()
    sizes = [len(x) for x in images]
    starts = list(itertools.accumulate(sizes, initial=0))
    outputs = []
    for a in range(0, starts[-1], batch_size):
        b = min(a + batch_size, starts[-1])
        parts = [prompt(data.to_float(x[max(a, lo) - lo:min(b, hi) - lo]))
                 for prompt, x, lo, hi in zip(prompts, images, starts, starts[1:]) if max(a, lo) < min(b, hi)]
        outputs.append(frozen_pass(model, torch.cat(parts), precision))
    return list(torch.cat(outputs).split(sizes)) if outputs else [torch.empty(0, 0) for _ in images]


def mapping_from_logits(logits: torch.Tensor, labels: torch.Tensor, num_target: int) -> torch.Tensor:
    """FLM / ILM mapping: greedy one-to-one assignment on the frequency matrix of the predictions."""
    return greedy_assignment(frequency_matrix(logits.argmax(1), labels, logits.shape[1], num_target))


# ----------------------------------------------------------------------------- training


@dataclass
class PromptResult:
    prompt: PadPrompt
    mapping: torch.Tensor
    mapping_epochs: list[int] = field(default_factory=list)  # epochs (0-based) that (re)computed it
    losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class PromptJob:
    """One prompt to learn: its (few-shot) training set, label mapping, seed and ILM interval."""

    train_set: data.ImageSet
    mapping: str
    seed: int = 0
    mapping_interval: int = 1

    def remaps(self, epoch: int) -> bool:
        """FLM maps once before epoch 0; ILM before every epoch e with e % interval == 0."""
        return (self.mapping == "flm" and epoch == 0) or (
            self.mapping == "ilm" and epoch % self.mapping_interval == 0)


def _num_source(model: nn.Module) -> int:
    """Number of source classes: the width of the model's last linear layer."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else \
        [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return head.out_features


def frozen_pass(model: nn.Module, inputs: torch.Tensor, precision: str = "float32") -> torch.Tensor:
    """The frozen model's float32 logits; ``"bfloat16"`` runs its layers under autocast
    (about 2x faster on CPUs with AVX-512 BF16; the prompt and its optimiser stay float32)."""
    if precision not in PRECISIONS:
        raise unknown_choice("VP precision", precision, PRECISIONS)
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        return model(inputs).float()


def train_prompts(model: nn.Module, jobs: Sequence[PromptJob], epochs: int, lr: float = 0.01,
                  batch_size: int = 32, canvas: int = 48, precision: str = "float32",
                  progress: bool = False) -> list[PromptResult]:
    """Learn one pad prompt per job on a frozen ``model``, all jobs in the same forward passes.

    Each step concatenates every job's mini-batch (in its own seeded order) and minimises the
    *sum* of the jobs' mean cross-entropies. The model is frozen and in eval mode (BatchNorm
    on running statistics), so images do not interact and each theta receives exactly its
    own job's gradient; Adam is element-wise, so every prompt follows the trajectory it would
    follow alone. Sharing the passes only makes the CPU's small convolutions efficient.
    Jobs need equally many training images, so that they share the batch boundaries.
    """
    for job in jobs:
        if job.mapping not in MAPPINGS:
            raise unknown_choice("label mapping", job.mapping, MAPPINGS)
    sizes = {len(job.train_set) for job in jobs}
    if len(sizes) != 1:
        raise ValueError(f"prompts trained together need one training-set size, got {sorted(sizes)}")
    n = sizes.pop()
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    k_s = _num_source(model)
    results = [PromptResult(PadPrompt(job.train_set.images.shape[-1], canvas),
                            random_mapping(k_s, len(job.train_set.classes), job.seed)) for job in jobs]
    optimizer = torch.optim.Adam([r.prompt.theta for r in results], lr=lr)
    scheduler = _paper_schedule(optimizer, epochs)
    generators = [torch.Generator().manual_seed(job.seed) for job in jobs]
    bar = train.progress_bar(epochs * -(-n // batch_size), f"{len(jobs)} prompt(s)", progress)
    for epoch in range(epochs):
        remap = [k for k, job in enumerate(jobs) if job.remaps(epoch)]
        logits = source_logits(model, [results[k].prompt for k in remap],
                               [jobs[k].train_set.images for k in remap], precision=precision)
        for k, lg in zip(remap, logits):
            results[k].mapping = mapping_from_logits(lg, jobs[k].train_set.labels,
                                                     len(jobs[k].train_set.classes))
            results[k].mapping_epochs.append(epoch)
        orders = [torch.randperm(n, generator=g) for g in generators]
        for i in range(0, n, batch_size):
            batches = [order[i:i + batch_size] for order in orders]
            inputs = torch.cat([r.prompt(data.to_float(job.train_set.images[idx]))
                                for r, job, idx in zip(results, jobs, batches)])
            outputs = frozen_pass(model, inputs, precision).split([len(idx) for idx in batches])
            losses = [F.cross_entropy(out[:, r.mapping], job.train_set.labels[idx])
                      for out, r, job, idx in zip(outputs, results, jobs, batches)]
            optimizer.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
            optimizer.step()
            for r, loss in zip(results, losses):
                r.losses.append(loss.item())
            bar.update()
        scheduler.step()
    bar.close()
    return results


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
                      mapping_interval: int = 1, precision: str = "float32") -> None:
    """ConfigError (one line) for an unknown method or precision, a bad shot count, canvas or
    mapping interval, before training."""
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
    if precision not in PRECISIONS:
        raise unknown_choice("VP precision", precision, PRECISIONS)


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
    vp_precision: str = "float32"
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
    return transfer_prompts(model, [PromptJob(train_set, method, seed, settings.mapping_interval)],
                            test_set, settings)[0]


def transfer_prompts(model: nn.Module, jobs: Sequence[PromptJob], test_set: data.ImageSet,
                     settings: TransferSettings) -> list[dict]:
    """VP transfer of several prompt jobs trained together (:func:`train_prompts`); one
    :func:`transfer`-style output per job (``settings.mapping_interval`` is the jobs')."""
    results = train_prompts(model, jobs, settings.vp_epochs, settings.vp_lr, settings.vp_batch_size,
                            settings.canvas, settings.vp_precision)
    logits = source_logits(model, [r.prompt for r in results], [test_set.images] * len(results),
                           precision=settings.vp_precision)
    return [{"probs": lg[:, r.mapping].softmax(1), "labels": test_set.labels,
             "trainable_parameters": r.prompt.free_parameters(),
             "theta": r.prompt.theta.detach().clone(), "mapping": r.mapping,
             "mapping_updates": len(r.mapping_epochs), "final_loss": r.losses[-1]}
            for r, lg in zip(results, logits)]


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
                shots: Sequence[int], seeds: Sequence[int], canvases: Sequence[int] = (40,),
                mapping_intervals: Sequence[int] = (1,)) -> list[dict]:
    """Every transfer unit of a run (one row each): models x targets x seeds x methods x
    budgets, VP units also x canvases and ILM units x mapping intervals (LP units carry 0 for
    both, FLM / RLM interval 1); probes first, they are cheap."""
    units = []
    for target, model, seed, method in itertools.product(targets, model_labels, seeds, methods):
        vp = method != "lp"
        intervals = mapping_intervals if method == "ilm" else [1 if vp else 0]
        for canvas, interval, n in itertools.product(canvases if vp else [0], intervals, shots):
            units.append({"kind": "transfer", "model": model, "target": target, "method": method,
                          "shots": int(n), "seed": int(seed), "canvas": int(canvas),
                          "mapping_interval": int(interval)})
    return sorted(units, key=lambda u: u["method"] != "lp")


def transfer_groups(units: Sequence[dict]) -> list[list[dict]]:
    """The units computed together, in order of first appearance: VP units that share model,
    target, budget and canvas train their prompts in shared passes (:func:`train_prompts`;
    they differ in mapping, seed and ILM interval); LP units of one model and target share
    the frozen features and are probed one after the other."""
    groups: dict[tuple, list[dict]] = {}
    for unit in units:
        vp = unit["method"] != "lp"
        key = (unit["model"], unit["target"]) + ((unit["shots"], unit["canvas"]) if vp else ("lp",))
        groups.setdefault(key, []).append(unit)
    return list(groups.values())


def run_sweep(store, units: Sequence[dict], models_by_label: Mapping[str, nn.Module],
              targets: Mapping[str, tuple[data.ImageSet, data.ImageSet]], settings: TransferSettings,
              results_dir, ece_bins: int = 15, progress: bool = True) -> None:
    """Compute every pending unit and add its row to ``store`` (resumable, one row per unit).

    A group (:func:`transfer_groups`) with any pending unit is computed whole, so a resumed
    run gives the same numbers as an uninterrupted one; its missing rows are written in one
    go. Test probabilities and prompts are saved per unit for the reliability diagrams and
    pictures. ``seconds`` of a VP unit is its group's time divided by the group's size.
    """
    import time
    from dataclasses import replace

    from .seeding import seed_everything

    pending = {store.unit_key(u) for u in store.pending(units)}
    bar = train.progress_bar(len(pending), "transfer units", progress)
    for group in transfer_groups(units):
        if not any(store.unit_key(u) in pending for u in group):
            continue
        first = group[0]
        model = models_by_label[first["model"]]
        train_full, test = targets[first["target"]]
        indices = [data.few_shot_indices(train_full.labels, u["shots"], u["seed"], train_full.classes,
                                         train_full.name) for u in group]
        seed_everything(first["seed"])
        if first["method"] == "lp":
            train_x, test_x = frozen_features(model, train_full.images), frozen_features(model, test.images)
            outputs, seconds = [], []
            for unit, idx in zip(group, indices):
                start = time.perf_counter()
                outputs.append(transfer(model, "lp", train_full.subset(idx), test, settings, unit["seed"],
                                        (train_x[idx], test_x)))
                seconds.append(time.perf_counter() - start)
        else:
            start = time.perf_counter()
            jobs = [PromptJob(train_full.subset(idx), u["method"], u["seed"], u["mapping_interval"] or 1)
                    for u, idx in zip(group, indices)]
            outputs = transfer_prompts(model, jobs, test, replace(settings, canvas=first["canvas"] or settings.canvas))
            seconds = [(time.perf_counter() - start) / len(group)] * len(group)
        rows = []
        for unit, idx, out, sec in zip(group, indices, outputs, seconds):
            if store.unit_key(unit) in pending:
                save_unit(results_dir, unit, out)
                rows.append(dict(unit) | summarize(out["probs"], out["labels"], ece_bins) | {
                    "train_images": len(idx), "trainable_parameters": out["trainable_parameters"],
                    "mapping_updates": out.get("mapping_updates", 0), "seconds": sec})
        store.add_many(rows)
        bar.update(len(rows))
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
