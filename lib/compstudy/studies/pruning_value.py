"""Notebook 02, the value of pruning (structured and unstructured): its typed config."""

from __future__ import annotations

from dataclasses import dataclass

from .. import structured
from ..config import NotebookConfig


@dataclass(frozen=True)
class Config(NotebookConfig):
    NOTEBOOK = "02_pruning_value"

    seed: int
    dataset: str
    train_per_class: int
    test_per_class: int
    seeds: list[int]
    methods: list[str]
    regimes: list[str]
    vgg_width: float
    resnet_depth: int
    resnet_width: float
    vgg_layer_ratios: list[float]
    resnet_stage_ratios: dict[str, list[float]]
    slim_lambda: float
    slim_ratio: float
    unstructured_sparsity: float
    uniform_check: bool
    base_epochs: int
    base_lr: float
    base_schedule: str
    ft_epochs: int
    ft_lr: float
    ft_schedule: str
    weight_decay: float
    batch_size: int
    scratch_b_cap: float
    latency_batches: list[int]
    latency_min_run_time: float
    measure_speed: bool

    def validate(self) -> None:
        structured.validate_config(self.params)
