"""The upstream model zoo that every chapter starts from.

Local architectures are pretrained on the synthetic ``source`` dataset (the ImageNet
stand-in) with the recipe of notebook 00's config; the checkpoint is cached under
``artifacts/zoo/`` keyed by everything that determines it, so a chapter asking for a model
gets exactly the one notebook 00 trained (or trains it the same way). timm names
(``paper`` profile) come with their ImageNet weights instead.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from . import config, data, models, paths, train
from .errors import ConfigError
from .results import atomic_write_bytes
from .seeding import seed_everything

ZOO_VERSION = 2  # bump when the training code or a local architecture changes what a checkpoint holds
UPSTREAM_NOTEBOOK = "00_upstream"


@dataclass(frozen=True)
class SourceSpec:
    """The source data a zoo model is pretrained on."""

    dataset: str
    train_per_class: int
    test_per_class: int
    val_per_class: int
    seed: int

    def splits(self) -> tuple[data.ImageSet, data.ImageSet, data.ImageSet]:
        """Train (without validation images), validation and test sets."""
        full = data.load_dataset(self.dataset, "train", self.train_per_class, self.seed)
        val_idx = data.few_shot_indices(full.labels, self.val_per_class, self.seed)
        keep = torch.ones(len(full), dtype=torch.bool)
        keep[val_idx] = False
        test = data.load_dataset(self.dataset, "test", self.test_per_class, self.seed)
        return full.subset(torch.nonzero(keep).flatten()), full.subset(val_idx), test


@dataclass(frozen=True)
class ZooSpec:
    """Everything that determines one pretrained checkpoint."""

    arch: str
    source: SourceSpec
    fit: train.FitSettings
    batch_size: int
    seed: int
    teacher: ZooSpec | None = None  # distillation teacher (its whole spec enters the key)
    versions: Mapping[str, int] = field(default_factory=lambda: {
        "zoo": ZOO_VERSION, "data": data.GENERATOR_VERSION})

    @property
    def key(self) -> str:
        return config.digest(asdict(self))

    @property
    def path(self) -> Path:
        return paths.ARTIFACTS_DIR / "zoo" / f"{self.arch}-{self.key}.pt"


def is_local(arch: str) -> bool:
    return arch in models.LOCAL_ARCHITECTURES


def specs_from_params(params: Mapping[str, Any]) -> dict[str, ZooSpec]:
    """The zoo of a notebook-00 config: one spec per local model."""
    source = SourceSpec(params["source_dataset"], params["source_train_per_class"],
                        params["source_test_per_class"], params["source_val_per_class"],
                        params["seed"])
    local = [arch for arch in params["zoo_models"] if is_local(arch)]
    teachers = {s: t for s, t in params["teachers"].items() if s in local}
    for student, teacher in teachers.items():
        if teacher not in local or teacher in teachers:
            raise ConfigError(f"teacher {teacher!r} of {student!r} must be a zoo model without "
                              f"a teacher of its own; valid choices: "
                              + ", ".join(a for a in local if a not in teachers))
    specs = {}
    for arch in sorted(local, key=lambda a: a in teachers):  # teachers first
        if arch not in params["epochs"]:
            raise ConfigError(f"zoo model {arch!r} has no entry in epochs "
                              f"({', '.join(params['epochs']) or 'empty'})")
        recipe = dict(params["vit_recipe"] if arch.startswith("vit") else params["cnn_recipe"])
        if (arch in teachers) != (recipe.get("distillation", 0) > 0):
            raise ConfigError(f"zoo model {arch!r}: give a teacher exactly when its recipe "
                              "has distillation > 0")
        specs[arch] = ZooSpec(arch, source, train.FitSettings(epochs=params["epochs"][arch],
                              **recipe), params["batch_size"], params["seed"],
                              teacher=specs.get(teachers.get(arch)))
    return {arch: specs[arch] for arch in local}


def load_checkpoint(spec: ZooSpec) -> tuple[nn.Module, dict]:
    """Rebuild the model of ``spec`` from its cached checkpoint (architecture + state dict)."""
    payload = torch.load(spec.path, map_location="cpu", weights_only=False)
    model = models.build_model(spec.arch, payload["num_classes"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload


def pretrain(spec: ZooSpec, progress: bool = True) -> tuple[nn.Module, dict]:
    """Return the pretrained model of ``spec``, training and caching it on a cache miss.

    The payload holds the training history and the source test accuracy.
    """
    if spec.path.exists():
        return load_checkpoint(spec)
    teacher = pretrain(spec.teacher, progress)[0] if spec.teacher is not None else None
    train_set, val_set, test_set = spec.source.splits()
    seed_everything(spec.seed)
    model = models.build_model(spec.arch, len(train_set.classes))
    loader = data.make_loader(train_set, spec.batch_size, shuffle=True, seed=spec.seed,
                              augment=True, drop_last=True)
    val_loader = data.make_loader(val_set, 256, shuffle=False)
    history = train.fit(model, loader, spec.fit, val_loader=val_loader,
                        desc=f"pretrain {spec.arch}", progress=progress, teacher=teacher)
    test = train.evaluate(model, data.make_loader(test_set, 256, shuffle=False))
    payload = {"arch": spec.arch, "num_classes": len(train_set.classes),
               "state_dict": model.state_dict(), "history": history.to_dict("list"),
               "source_test_accuracy": test["accuracy"], "spec": asdict(spec)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(spec.path, buffer.getvalue())
    return model.eval(), payload


def history_frame(payload: dict) -> pd.DataFrame:
    return pd.DataFrame(payload["history"]).assign(model=payload["arch"])


def upstream_params(profile: str) -> dict[str, Any]:
    """Resolved parameters of notebook 00's main run in ``profile``."""
    return config.validate(UPSTREAM_NOTEBOOK,
                           config.load_overrides(profile, UPSTREAM_NOTEBOOK, "main"))


def upstream_model(arch: str, profile: str, progress: bool = False) -> nn.Module:
    """The source-pretrained ``arch`` of ``profile``'s zoo (timm names: ImageNet weights).

    Chapters call this; a model notebook 00 has not trained yet is trained here the same way.
    """
    if not is_local(arch):
        return models.build_model(arch, num_classes=1000, pretrained=True).eval()
    specs = specs_from_params(upstream_params(profile))
    if arch not in specs:
        raise ConfigError(f"model {arch!r} is not in the {profile} zoo; valid choices: "
                          + ", ".join(specs))
    return pretrain(specs[arch], progress=progress)[0]
