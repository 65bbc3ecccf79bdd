"""Notebook 03, layer selection by separability (SLS): its typed config."""

from __future__ import annotations

from dataclasses import dataclass

from .. import petl, sls
from ..config import NotebookConfig
from ..errors import ConfigError


@dataclass(frozen=True)
class Config(NotebookConfig):
    NOTEBOOK = "03_sls"
    UPSTREAM = ("00_upstream/main",)  # the upstream ViT and notebook 00's distances (its runs.csv)

    seed: int
    threads: int
    model: str
    target_datasets: list[str]
    petl_methods: list[str]
    petl_scale: float
    petl_scale_per_target: dict[str, float]
    train_per_class: int
    test_per_class: int
    tsne_per_class: int
    petl_epochs: int
    petl_lr: float
    retrain_epochs: int
    retrain_lr: float
    batch_size: int
    alpha: float
    alphas: list[float]
    perplexity: float
    tsne_seed: int
    tsne_iter: int
    tsne_jobs: int
    map_layers: list[int]
    depgraph: bool
    taylor_batches: int
    probe_check: bool
    throughput_batches: list[int]
    latency_seconds: float
    source_test_per_class: int

    def validate(self) -> None:
        """The checks that need no model; sls.validate_config adds the depth checks."""
        for method in self.petl_methods:
            petl.check_method(method)
        for alpha in [self.alpha, *self.alphas]:
            sls.check_alpha(alpha)
        if self.tsne_per_class < 2 or self.train_per_class < self.tsne_per_class:
            raise ConfigError(f"need 2 <= tsne_per_class <= train_per_class, got "
                              f"{self.tsne_per_class} and {self.train_per_class}")
