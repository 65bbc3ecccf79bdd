"""One fit / evaluate loop for every chapter: seeded, with hooks, tqdm progress and early stopping.

Loader batches (float RGB in [0, 1] at native size) pass through
:func:`compstudy.models.adapt_input`, so one loader feeds models of any input side and
normalisation. Sparse, structured and mimicking training reuse :func:`fit` through its loss
function and its ``after_backward`` / ``after_step`` hooks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import models
from .errors import ConfigError

OPTIMIZERS = ("sgd", "adamw", "adam")
SCHEDULES = ("cosine", "constant")


def progress_bar(total: int, desc: str, progress: bool = True) -> tqdm:
    """A text progress bar (no widgets in the book); ``TQDM_DISABLE=1`` silences it in batch runs."""
    return tqdm(total=total, desc=desc, leave=False, **({} if progress else {"disable": True}))


@dataclass(frozen=True)
class FitSettings:
    """Hyper-parameters of :func:`fit`.

    Args:
        epochs: passes over the training loader; a fraction ends the last pass early
            (``round(epochs * batches per pass)`` optimiser steps in all, at least one).
        lr: peak learning rate; after the warm-up it is cosine-annealed to 0, or kept
            (``schedule="constant"``, the constant-rate fine-tuning of Liu et al. 2019).
        optimizer: ``sgd`` (momentum 0.9, Nesterov), ``adamw`` or ``adam``.
        weight_decay: decoupled for AdamW, L2 for SGD.
        label_smoothing: of the cross-entropy.
        patience: stop when validation accuracy has not improved for this many epochs
            (None: never); the weights of the best validation epoch are restored.
        warmup_epochs: linear warm-up from 0 to ``lr`` over this many epochs (fractions
            allowed), which keeps SGD at lr 0.1 and AdamW on ViTs from stalling early.
    """

    epochs: int
    lr: float
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    patience: int | None = None
    warmup_epochs: float = 0.0
    schedule: str = "cosine"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; valid choices: "
                              + ", ".join(OPTIMIZERS))
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; valid choices: "
                              + ", ".join(SCHEDULES))
        if not self.epochs > 0 or self.lr <= 0:
            raise ConfigError(f"epochs and lr must be > 0, got {self.epochs}, {self.lr}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")


def make_optimizer(params, settings: FitSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=0.9, nesterov=True,
                               weight_decay=settings.weight_decay)
    kind = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=settings.lr, weight_decay=settings.weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_steps: int = 0, anneal: bool = True) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then cosine annealing to 0 at ``total_steps``
    (``anneal=False``: the rate stays at its peak after the warm-up)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not anneal:
            return 1.0
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of a whole loader, in eval mode."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for images, targets in loader:
        logits.append(model(models.adapt_input(model, images)))
        labels.append(targets)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, loader: DataLoader) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``loader``."""
    logits, labels = predict(model, loader)
    return {"loss": F.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(1) == labels).float().mean().item()}


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    """The default loss of :func:`fit`: cross-entropy on the labels; returns (loss, logits)."""
    def loss(model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        logits = model(images)
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing), logits
    return loss


def fit(model: nn.Module, train_loader: DataLoader, settings: FitSettings,
        val_loader: DataLoader | None = None, desc: str = "fit", progress: bool = True,
        params=None, loss_fn: LossFn | None = None,
        after_backward: Callable[[], None] | None = None,
        after_step: Callable[[], None] | None = None) -> pd.DataFrame:
    """Train ``model``; return the history as a tidy frame.

    Args:
        params: the tensors to train (default: all of ``model``).
        loss_fn: ``(model, adapted images, targets) -> (loss, logits or None)``; default
            cross-entropy with the settings' label smoothing. Train accuracy is logged when
            logits are returned.
        after_backward: called after every backward pass, before the step (e.g. to add a
            sub-gradient or zero the gradients of pruned weights).
        after_step: called after every optimiser step (e.g. to re-apply a sparsity mask).

    Returns:
        Columns ``epoch, split, metric, value`` with split ``train`` (running means) and
        ``val`` (when a validation loader is given).
    """
    loss_fn = loss_fn or cross_entropy_loss(settings.label_smoothing)
    params = list(model.parameters() if params is None else params)
    optimizer = make_optimizer(params, settings)
    total = max(1, round(settings.epochs * len(train_loader)))
    scheduler = warmup_cosine(optimizer, total, round(settings.warmup_epochs * len(train_loader)),
                              anneal=settings.schedule == "cosine")
    rows, best, best_state, stale, step = [], -1.0, None, 0, 0
    bar = progress_bar(total, desc, progress)
    for epoch in range(1, math.ceil(total / len(train_loader)) + 1):
        model.train()
        loss_sum = correct = seen = 0
        for images, targets in train_loader:
            if step == total:
                break
            step += 1
            loss, logits = loss_fn(model, models.adapt_input(model, images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward()
            optimizer.step()
            scheduler.step()
            if after_step is not None:
                after_step()
            loss_sum += loss.item() * len(targets)
            if logits is not None:
                correct += (logits.argmax(1) == targets).sum().item()
            seen += len(targets)
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
        rows.append((epoch, "train", "loss", loss_sum / seen))
        if logits is not None:
            rows.append((epoch, "train", "accuracy", correct / seen))
        if val_loader is not None:
            metrics = evaluate(model, val_loader)
            rows += [(epoch, "val", name, value) for name, value in metrics.items()]
            if metrics["accuracy"] > best:
                best, stale = metrics["accuracy"], 0
                if settings.patience is not None:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if settings.patience is not None and stale >= settings.patience:
                    break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return pd.DataFrame(rows, columns=["epoch", "split", "metric", "value"])
