"""Notebook 00, the upstream model zoo: its typed config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import NotebookConfig


@dataclass(frozen=True)
class Config(NotebookConfig):
    NOTEBOOK = "00_upstream"

    seed: int
    source_dataset: str
    source_train_per_class: int
    source_val_per_class: int
    source_test_per_class: int
    target_datasets: list[str]
    target_train_per_class: int
    target_test_per_class: int
    probe_shots: list[int]
    zoo_models: list[str]
    epochs: dict[str, int]
    cnn_recipe: dict[str, Any]
    vit_recipe: dict[str, Any]
    teachers: dict[str, str]
    batch_size: int
    distance_model: str

    def validate(self) -> None:
        for key in ("source_train_per_class", "source_test_per_class", "target_train_per_class",
                    "target_test_per_class", "batch_size"):
            self.check_range(key, low=1)
        self.check_range("source_val_per_class", low=0)
