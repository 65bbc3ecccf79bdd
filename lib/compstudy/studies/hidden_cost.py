"""Notebook 01, the hidden cost of sparse models under visual prompting: its typed config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import prompting, sparsity
from ..config import NotebookConfig
from ..errors import ConfigError, unknown_choice


@dataclass(frozen=True)
class Config(NotebookConfig):
    NOTEBOOK = "01_hidden_cost"
    UPSTREAM = ("00_upstream/main",)  # the dense source models and notebook 00's source data

    seed: int
    source_model: str
    sparse_source_per_class: int
    source_test_per_class: int
    sparse_families: dict[str, list[float]]
    sparse_recipe: dict[str, Any]
    heatmap_family: str
    target_datasets: list[str]
    target_train_per_class: int
    target_test_per_class: int
    shots: list[int]
    seeds: list[int]
    methods: list[str]
    transfer_labels: list[str]
    canvases: list[int]
    mapping_intervals: list[int]
    vp_epochs: int
    vp_lr: float
    vp_batch_size: int
    vp_precision: str
    lp_epochs: int
    lp_lr: float
    ece_bins: int
    picture_dataset: str

    def validate(self) -> None:
        sparsity.validate_families(self.sparse_families)
        for key in ("canvases", "mapping_intervals"):
            if not getattr(self, key):
                raise ConfigError(f"config key {key!r} of notebook {self.NOTEBOOK} needs at least one value")
        for canvas in self.canvases:
            for interval in self.mapping_intervals:
                prompting.validate_transfer(self.methods, self.shots, canvas, interval, self.vp_precision)
        labels = ["dense"] + [sparsity.model_label(f, s) for f, ss in self.sparse_families.items() for s in ss]
        for name in self.transfer_labels:
            if name not in labels:
                raise unknown_choice("model label", name, labels)
