"""Labelled image sets, the seeded few-shot sampler, disjoint partitions and batch loaders.

Images stay ``uint8`` at their native size (CIFAR-10 32 px, Fashion-MNIST and MNIST 28 px
grey, digits 8 px grey); loaders hand out float images in [0, 1] with three channels, and
each model's own preprocessing (:func:`compstudy.models.adapt_input`) resizes and
normalises them.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from ..errors import ConfigError

SPLITS = ("train", "test")


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A labelled image set.

    Args:
        name: the dataset's name.
        images: uint8, N x C x H x W with C = 1 (grey) or 3 (RGB), native size.
        labels: int64, N.
        classes: class names, indexed by label.
        ids: int64, N: each image's index in its full split, kept by :meth:`subset`, so that
            disjointness of images drawn for different roles can be checked.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise ValueError(f"{self.name}: images must be uint8 N x C x H x W with C in (1, 3)")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"{self.name}: labels must be int64 with one label per image")
        if self.ids is None:
            object.__setattr__(self, "ids", torch.arange(len(self.labels)))
        elif self.ids.shape != self.labels.shape:
            raise ValueError(f"{self.name}: ids must hold one index per image")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        size = "x".join(map(str, self.images.shape[1:]))
        return f"ImageSet({self.name!r}, {len(self)} images of {size}, {len(self.classes)} classes)"

    def subset(self, indices) -> ImageSet:
        """The images at integer ``indices`` (list, array or tensor), same name and classes."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(self.name, self.images[idx], self.labels[idx], self.classes, self.ids[idx])

    def class_counts(self) -> torch.Tensor:
        """Images per class, indexed by label (zeros for empty classes)."""
        return torch.bincount(self.labels, minlength=len(self.classes))


def few_shot_indices(
    labels: torch.Tensor, n_shot: int, seed: int,
    classes: Sequence[str] | None = None, dataset: str = "the dataset",
) -> torch.Tensor:
    """Sorted indices of exactly ``n_shot`` images per class (``-1``: every index).

    A pure function of the labels, so an impossible request fails before any training. The
    pick is a seeded random permutation filtered per class, so with one seed the k-shot set
    is contained in every larger-shot set. ``classes`` (names; its length also counts empty
    classes) and ``dataset`` only improve the error message.
    """
    if isinstance(n_shot, bool) or not isinstance(n_shot, numbers.Integral) or n_shot == 0 or n_shot < -1:
        raise ConfigError(f"n_shot must be a positive number of images per class or -1 (all), got {n_shot!r}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if n_shot == -1:
        return torch.arange(len(labels))
    counts = torch.bincount(labels, minlength=len(classes) if classes is not None else 0)
    if len(counts) and int(counts.min()) < n_shot:
        c = int(counts.argmin())
        cname = classes[c] if classes is not None else str(c)
        raise ConfigError(f"n_shot={n_shot} exceeds the {int(counts[c])} images of class {cname!r} in {dataset}")
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    picks = [perm[labels[perm] == c][:n_shot] for c in range(len(counts))]
    return torch.cat(picks).sort().values if picks else torch.empty(0, dtype=torch.long)


def few_shot(ds: ImageSet, n_shot: int, seed: int) -> ImageSet:
    """The ``n_shot``-per-class subset of ``ds`` (see :func:`few_shot_indices`)."""
    return ds.subset(few_shot_indices(ds.labels, n_shot, seed, ds.classes, ds.name))


def partition(ds: ImageSet, per_class: Mapping[str, int], seed: int) -> dict[str, ImageSet]:
    """Disjoint named parts of ``ds`` with the given images per class each (-1: the rest).

    Parts are cut, in the given order, from one seeded per-class shuffle, so a part never
    shares an image with another, and a part's images do not depend on the sizes of the
    parts after it. At most one part may ask for the rest.
    """
    if sum(n == -1 for n in per_class.values()) > 1:
        raise ConfigError("at most one part of a partition can take the rest (-1)")
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    by_class = [perm[ds.labels[perm] == c] for c in range(len(ds.classes))]
    start = 0
    parts = {}
    for name, n in per_class.items():
        if n != -1 and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise ConfigError(f"part {name!r} must ask for a positive number of images per class or -1, got {n!r}")
        stop = None if n == -1 else start + n
        short = [c for c, idx in enumerate(by_class) if stop is not None and len(idx) < stop]
        if short:
            raise ConfigError(f"{ds.name}: parts {list(parts) + [name]} need {stop} images per "
                              f"class; class {ds.classes[short[0]]!r} has {len(by_class[short[0]])}")
        parts[name] = ds.subset(torch.cat([idx[start:stop] for idx in by_class]).sort().values)
        start = stop if stop is not None else start
    return parts


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 RGB in [0, 1] (grey images are repeated over 3 channels)."""
    x = images_uint8.float().div_(255.0)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def augment(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` pixels and a horizontal flip, per image
    (the CIFAR augmentation of He et al. 2016 and Liu et al. 2019)."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


class _Batches(torch.utils.data.Dataset):
    """Indexed by a list of indices: returns a whole float (and augmented) batch."""

    def __init__(self, ds: ImageSet, augment: bool, seed: int, pad: int = 4):
        self.ds, self.augment, self.pad = ds, augment, pad
        self.g = torch.Generator().manual_seed(seed + 0x5EED)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, idx):
        idx = torch.as_tensor(idx)
        x = to_float(self.ds.images[idx])
        return (augment(x, self.g, self.pad) if self.augment else x), self.ds.labels[idx]


def make_loader(
    ds: ImageSet, batch_size: int, shuffle: bool, seed: int = 0, augment: bool = False,
    drop_last: bool = False, pad: int = 4,
) -> DataLoader:
    """Loader of ``(float32 RGB N x 3 x H x W in [0, 1], int64 labels)`` at native size.

    ``augment`` applies :func:`augment` with zero padding ``pad`` (0: horizontal flips only).

    Batches are sliced and augmented as whole tensors (no per-image Python), in the main
    process. Shuffling and augmentation draw from their own generators seeded from
    ``seed``: the same seed replays the same sequence of epochs.
    """
    order = (RandomSampler(ds.labels, generator=torch.Generator().manual_seed(seed))
             if shuffle else SequentialSampler(ds.labels))
    return DataLoader(
        _Batches(ds, augment, seed, pad), sampler=BatchSampler(order, batch_size, drop_last),
        batch_size=None, num_workers=0, collate_fn=lambda b: b,
    )
