"""Notebook 04, DC-ViT (compressing ViT blocks from few images): its typed config."""

from __future__ import annotations

from dataclasses import dataclass

from .. import dcvit
from ..config import NotebookConfig


@dataclass(frozen=True)
class Config(NotebookConfig):
    NOTEBOOK = "04_dcvit"
    UPSTREAM = ("00_upstream/main",)  # the upstream ViT (the teacher and the model compressed)

    seed: int
    seeds: list[int]
    model: str
    source_train_per_class: int
    source_test_per_class: int
    test_per_class: int
    heldout_per_class: int
    num_samples: list[int]
    keep_ratios: list[float]
    n_blocks: int | None
    min_block: int
    max_block: int
    trial_drop_ratio: float
    trial_steps: int
    finetune_steps: int
    batch_size: int
    lr: float
    weight_decay: float
    update_settings: list[str]
    mlp_inits: list[str]
    drop_blocks: list[int]
    run_block_drop: bool
    adaptor_steps: int
    adaptor_lr: float
    inv_images: int
    inv_steps: int
    inv_lr: float
    inv_tv: float
    inv_l2: float
    inv_beta: float
    inv_jitter: int
    latency_batch: int
    latency_min_time: float
    latency_probe_blocks: list[int]

    def validate(self) -> None:
        """The checks that need no model or data; dcvit.validate_config adds those that do."""
        self.check_choices("update_settings", dcvit.UPDATE_SETTINGS)
        self.check_choices("mlp_inits", dcvit.MLP_INITS)
        self.check_range("num_samples", low=1)
        self.check_range("trial_drop_ratio", 0, 1)
