"""Datasets of the study: one loader for real and synthetic sets, the few-shot sampler, loaders.

- Real, offline through the asset layer: ``cifar10`` (JPEG copy), ``fashion_mnist``,
  ``mnist`` (5,000-image subset) and ``digits`` (:mod:`compstudy.data.real`).
- Synthetic, at a controlled distance: ``near``, ``middle``, ``far``
  (:mod:`compstudy.data.synthetic`).
- ``$DATA_ROOT`` sets for the ``paper`` profile (``cifar10_png``, ``cifar100``, ``svhn``, ...).

Every loader returns uint8 images at native size; the model's preprocessing resizes and
normalises (:func:`compstudy.models.adapt_input`). Decoded and generated sets are cached
under ``artifacts/datasets/``; a cache hit returns exactly the tensors a fresh load would.
"""

from __future__ import annotations

import numbers

import torch

from .. import cache
from ..errors import ConfigError, unknown_choice
from . import real, synthetic
from .imageset import (SPLITS, ImageSet, augment, few_shot, few_shot_indices, make_loader,
                       partition, to_float)
from .real import TORCHVISION_DATASETS, imagenet_stubs

__all__ = ["ImageSet", "SPLITS", "augment", "few_shot", "few_shot_indices", "make_loader",
           "partition", "to_float", "imagenet_stubs", "load_dataset", "dataset_names",
           "check_dataset_name", "REAL", "SYNTHETIC"]

REAL: tuple[str, ...] = real.OFFLINE
SYNTHETIC: tuple[str, ...] = synthetic.NAMES  # sets that need per_class and seed


def dataset_names() -> tuple[str, ...]:
    """Every valid dataset name: real offline sets, synthetic sets, then ``$DATA_ROOT`` sets."""
    return REAL + SYNTHETIC + tuple(TORCHVISION_DATASETS)


def check_dataset_name(name: str) -> str:
    """Return ``name`` if it names a dataset, else raise the standard unknown-choice ConfigError."""
    if name not in dataset_names():
        raise unknown_choice("dataset", name, dataset_names())
    return name


def _generated(name: str, split: str, per_class: int, seed: int) -> ImageSet:
    def build() -> dict:
        ds = synthetic.generate(name, split, per_class, seed)
        return {"images": ds.images, "labels": ds.labels, "classes": list(ds.classes)}

    inputs = {"name": name, "split": split, "per_class": per_class, "seed": seed}
    payload = cache.cached("datasets", inputs, [synthetic], build,
                           load=lambda p: torch.load(p, weights_only=True))
    return ImageSet(name, payload["images"], payload["labels"], tuple(payload["classes"]))


def load_dataset(name: str, split: str, per_class: int | None = None, seed: int = 0) -> ImageSet:
    """Load one split of a dataset as an :class:`ImageSet` of uint8 images at native size.

    Generated sets need ``per_class`` and depend on ``seed``; train and test come from
    different random streams, so they are disjoint draws. Real sets ignore both and return
    every image of their split (take subsets with :func:`few_shot` or :func:`partition`).
    """
    check_dataset_name(name)
    if split not in SPLITS:
        raise unknown_choice("split", split, SPLITS)
    if name in REAL:
        return real.load_offline(name, split)
    if name in TORCHVISION_DATASETS:
        return real.load_data_root(name, split)
    if not isinstance(per_class, numbers.Integral) or isinstance(per_class, bool) or per_class < 1:
        raise ConfigError(f"synthetic dataset {name!r} needs per_class >= 1 images per class, got {per_class!r}")
    return _generated(name, split, int(per_class), int(seed))
