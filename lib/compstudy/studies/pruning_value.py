"""Notebook 02, the value of pruning: units, caching, resumption, tables and claims.

Liu et al. 2019, "Rethinking the Value of Network Pruning": a large network is trained, pruned
and fine-tuned (FT); the same pruned architecture is also trained from scratch for the large
model's epochs (Scratch-E) or its compute (Scratch-B). The algorithms are in
:mod:`compstudy.methods.structured`; this module runs them.

A *unit* is one trained model: ``(target, regime, seed, budget)``. ``target`` names a large
model (regime ``unpruned``) or a pruned architecture (:class:`Target`, from the config),
``budget`` is the large model's epochs (the main runs use ``epochs``; the training-budget curve
adds ``budget_epochs``). Every trained model is cached under ``artifacts/02_pruning_value/``,
keyed by everything that determines it (the large model's data, seed and recipe, the pruning,
the regime's recipe) and the source digest of the methods, training and data code; every
finished unit is a row of ``runs.csv``. So an interrupted run resumes, an ablation that changes
only fine-tuning trains only the fine-tuned models, and an edit of this module's tables re-runs
nothing but evaluation.

Beside the units: the converged-model check (the mirror's ResNet-56, trained to convergence on
the original CIFAR-10, pruned to Li et al.'s ResNet-56-A/B and fine-tuned briefly on the JPEG
train split, with the unpruned model fine-tuned the same way as the control), the measured
CPU speed-up of each structured model, and the claims of the paper's section 4-5 through
:mod:`compstudy.claims`.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import assets, cache, claims, data, metrics, pool, train
from ..config import NotebookConfig
from ..errors import ConfigError, unknown_choice
from ..methods import masks as mk
from ..methods import structured
from ..models import cifar as cm
from ..results import RunStore
from ..seeding import seed_everything

METHODS = ("l1_vgg", "l1_resnet", "slimming", "unstructured")
REGIMES = structured.REGIMES
UNIT_KEY = ("target", "regime", "seed", "budget")
CODE = (structured, train, data)  # what determines a cached model, besides its inputs
ARTIFACTS = "02_pruning_value"
REGIME_NAMES = {"unpruned": "unpruned", "finetune": "FT", "scratch_e": "Scratch-E",
                "scratch_b": "Scratch-B", "uniform_e": "uniform, Scratch-E"}
CONVERGED_DATASETS = ("cifar10", "cifar10_png")
# Every unit trains and is evaluated on one intra-op thread, its model channels-last, in a pool
# of ``workers`` processes (:mod:`compstudy.pool`). Measured on the 2-core machine
# (training steps of batch 64): two such workers train VGG-16 w0.125 1.66x and ResNet-20 w0.25
# 1.25x as fast as one process on two threads. Both settings are in the cache keys.
COMPUTE = {"threads": pool.THREADS, "memory_format": "channels_last"}

# The paper's CIFAR-10 tables (mean ± std of 5 runs) and single-run ImageNet numbers, by family
# and variant: (what, unpruned, FT, Scratch-E, Scratch-B).
PAPER_ROWS = {
    ("l1", "VGG"): ("CIFAR-10 VGG-16-A, 5 runs", "93.63 ± 0.16", "93.41 ± 0.12", "93.62 ± 0.11",
                    "93.78 ± 0.15"),
    ("l1", "A"): ("CIFAR-10 ResNet-56-A, 5 runs", "93.14 ± 0.12", "92.97 ± 0.17", "92.96 ± 0.26",
                  "93.09 ± 0.14"),
    ("l1", "B"): ("CIFAR-10 ResNet-56-B, 5 runs", "93.14 ± 0.12", "92.67 ± 0.14", "92.54 ± 0.19",
                  "93.05 ± 0.18"),
    ("slimming", ""): ("CIFAR-10 VGG-19 slimmed 70 %", "≈ 93.5", "≈ 93.6", "≈ 93.3", "≈ 93.8"),
    ("unstructured", ""): ("ImageNet VGG-16, 60 %, 1 run", "—", "73.63", "71.50", "73.42"),
}
# Li et al.'s ResNet-56 on CIFAR-10 as the paper reports it: FT mean ± std of 5 runs.
PAPER_CONVERGED = {"": (93.14, 0.12), "A": (92.97, 0.17), "B": (92.67, 0.14)}


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
    min_channels: int
    slim_lambda: float
    slim_ratio: float
    unstructured_sparsity: float
    uniform_check: bool
    epochs: int
    lr: float
    warmup_epochs: float
    weight_decay: float
    batch_size: int
    ft_fraction: float
    ft_lr: float
    scratch_b_cap: float
    budget_epochs: list[int]
    budget_seeds: list[int]
    equivalence_margin: float
    converged_check: bool
    converged_ft_per_class: int
    converged_test_per_class: int
    converged_ft_lr: float
    converged_weight_decay: float
    workers: int
    measure_speed: bool
    latency_batches: list[int]
    latency_forwards: int

    def validate(self) -> None:
        data.check_dataset_name(self.dataset)
        for key, kind, choices in (("methods", "pruning method", METHODS),
                                   ("regimes", "training regime", REGIMES)):
            for value in getattr(self, key):
                if value not in choices:
                    raise unknown_choice(kind, value, choices)
        for key in ("methods", "regimes", "seeds"):
            values = getattr(self, key)
            if not values or len(set(values)) != len(values):
                raise ConfigError(f"config key {key!r} of notebook {self.NOTEBOOK} needs at least "
                                  f"one value and no repeats, got {values!r}")
        n_convs = sum(w != "M" for w in cm.VGG_LAYOUTS["vgg16"])
        structured.check_ratio_list("vgg_layer_ratios", self.vgg_layer_ratios, n_convs,
                                    "VGG-16 conv layer")
        cm.blocks_per_stage(self.resnet_depth)
        if "l1_resnet" in self.methods and not self.resnet_stage_ratios:
            raise ConfigError("l1_resnet needs at least one variant in resnet_stage_ratios")
        for variant, ratios in self.resnet_stage_ratios.items():
            self.check_choices_of("resnet_stage_ratios", variant, structured.LI_STAGE_RATIOS)
            structured.check_ratio_list(f"resnet_stage_ratios[{variant}]", ratios, 3, "ResNet stage")
        structured.check_ratio("slim_ratio", self.slim_ratio)
        structured.check_ratio("unstructured_sparsity", self.unstructured_sparsity)
        for key in ("vgg_width", "resnet_width", "lr", "ft_lr", "ft_fraction", "equivalence_margin",
                    "converged_ft_lr"):
            self.check_range(key, low=0, low_open=True)
        for key in ("slim_lambda", "weight_decay", "converged_weight_decay"):
            self.check_range(key, low=0)
        self.check_range("ft_fraction", high=1)
        self.check_range("scratch_b_cap", low=1)
        for key in ("min_channels", "batch_size", "epochs", "budget_epochs", "latency_batches",
                    "converged_ft_per_class", "converged_test_per_class", "latency_forwards"):
            self.check_range(key, low=1)
        if self.measure_speed:
            self.check_range("latency_forwards", low=2)  # each speed-up's interval is over the rounds
        self.check_range("workers", low=0)
        self.check_range("warmup_epochs", low=0, high=min([self.epochs, *self.budget_epochs]))
        for key in ("train_per_class", "test_per_class"):
            if getattr(self, key) != -1:
                self.check_range(key, low=1)
        if self.budget_epochs:
            if "l1_vgg" not in self.methods or not {"finetune", "scratch_b"} <= set(self.regimes):
                raise ConfigError("the training-budget curve (budget_epochs) needs method l1_vgg "
                                  "and regimes finetune and scratch_b")
            missing = [s for s in self.budget_seeds if s not in self.seeds]
            if not self.budget_seeds or missing:
                raise ConfigError(f"budget_seeds must be a non-empty subset of seeds {self.seeds}, "
                                  f"got {self.budget_seeds}")
        if self.converged_check and self.dataset not in CONVERGED_DATASETS:
            raise ConfigError(f"the converged-model check uses CIFAR-10 checkpoints; dataset must be "
                              f"one of {', '.join(CONVERGED_DATASETS)}, got {self.dataset!r}")

    def check_choices_of(self, key: str, value, choices) -> None:
        if value not in choices:
            raise ConfigError(f"unknown {key} key {value!r}; valid choices: "
                              + ", ".join(map(str, choices)))

    # -- the recipes

    def large_settings(self, epochs: float) -> train.FitSettings:
        """The large model's recipe, also Scratch-E's and Scratch-B's (at their epochs)."""
        return train.FitSettings(epochs=epochs, lr=self.lr, weight_decay=self.weight_decay,
                                 warmup_epochs=self.warmup_epochs)

    def ft_settings(self, budget: int) -> train.FitSettings:
        """Fine-tuning: ``ft_fraction`` of the large model's epochs at a constant small rate."""
        return train.FitSettings(epochs=budget * self.ft_fraction, lr=self.ft_lr,
                                 weight_decay=self.weight_decay, schedule="constant")


# ----------------------------------------------------------------------------- targets and units


@dataclass(frozen=True)
class Target:
    """A model of the study: a large model (``family`` ``unpruned``) or a pruned architecture.

    ``name`` keys the units; ``large`` names the large model it is pruned from (itself for a
    large model); ``variant`` is Li et al.'s ResNet variant (``A``/``B``), else empty.
    """

    name: str
    label: str
    family: str
    large: str
    variant: str = ""
    regimes: tuple[str, ...] = field(default=(), compare=False)


def targets(cfg: Config) -> dict[str, Target]:
    """The large models and pruned architectures of a run, in table order."""
    depth, out = cfg.resnet_depth, {}
    plain = "l1_vgg" in cfg.methods or "unstructured" in cfg.methods
    pruned_regimes = tuple(cfg.regimes)
    if plain:
        out["vgg16"] = Target("vgg16", "VGG-16", "unpruned", "vgg16", regimes=("unpruned",))
    if "l1_vgg" in cfg.methods:
        out["vgg16_a"] = Target("vgg16_a", "VGG-16-A", "l1", "vgg16", "VGG", pruned_regimes)
    if "l1_resnet" in cfg.methods:
        out[f"resnet{depth}"] = Target(f"resnet{depth}", f"ResNet-{depth}", "unpruned",
                                       f"resnet{depth}", regimes=("unpruned",))
        for variant in cfg.resnet_stage_ratios:
            name = f"resnet{depth}_{variant.lower()}"
            out[name] = Target(name, f"ResNet-{depth}-{variant}", "l1", f"resnet{depth}", variant,
                               pruned_regimes)
    if "slimming" in cfg.methods:
        out["vgg16_bnl1"] = Target("vgg16_bnl1", "VGG-16 (sparsity-trained)", "unpruned",
                                   "vgg16_bnl1", regimes=("unpruned",))
        extra = ("uniform_e",) if cfg.uniform_check and "scratch_e" in cfg.regimes else ()
        out["vgg16_slimmed"] = Target("vgg16_slimmed", f"VGG-16 slimmed {cfg.slim_ratio:.0%}",
                                      "slimming", "vgg16_bnl1", regimes=pruned_regimes + extra)
    if "unstructured" in cfg.methods:
        # no Scratch-E: no claim reads it, and the masked network trains at dense cost
        out["vgg16_sparse"] = Target("vgg16_sparse", f"VGG-16 {cfg.unstructured_sparsity:.0%} sparse",
                                     "unstructured", "vgg16",
                                     regimes=tuple(r for r in pruned_regimes if r != "scratch_e"))
    return out


BUDGET_TARGET = "vgg16_a"
BUDGET_REGIMES = ("unpruned", "finetune", "scratch_b")


def units(cfg: Config) -> list[dict]:
    """Every unit of a run: each target × regime × seed at ``epochs``, then the extra budgets of
    the training-budget curve (the large VGG-16, FT and Scratch-B of VGG-16-A)."""
    found = targets(cfg)
    out = [{"target": t.name, "regime": r, "seed": s, "budget": cfg.epochs}
           for s in cfg.seeds for t in found.values() for r in t.regimes]
    for budget in cfg.budget_epochs:
        if budget == cfg.epochs:
            continue
        for s in cfg.budget_seeds:
            out.append({"target": "vgg16", "regime": "unpruned", "seed": s, "budget": budget})
            out += [{"target": BUDGET_TARGET, "regime": r, "seed": s, "budget": budget}
                    for r in BUDGET_REGIMES[1:]]
    return out


def _unit_seed(inputs: dict) -> int:
    return int(cache.digest(inputs), 16) % 2**31


def _save(obj: tuple[nn.Module, dict]) -> bytes:
    return cm.to_bytes(obj[0], obj[1])


def _widths(model: nn.Module) -> list[int]:
    return model.conv_widths() if isinstance(model, cm.CifarVGG) else list(model.spec["inner_widths"])


# ----------------------------------------------------------------------------- the runner of units


class _Study:
    """Data, cached models and one method per unit; models are memoised for the run."""

    def __init__(self, cfg: Config, progress: bool):
        self.cfg, self.progress = cfg, progress
        self.train_full = data.load_dataset(cfg.dataset, "train")
        self.test_full = data.load_dataset(cfg.dataset, "test")
        self.train_set = data.few_shot(self.train_full, cfg.train_per_class, cfg.seed)
        self.test_set = data.few_shot(self.test_full, cfg.test_per_class, cfg.seed)
        self.num_classes = len(self.train_set.classes)
        self.test_loader = data.make_loader(self.test_set, 500, shuffle=False)
        self.targets = targets(cfg)
        self._large: dict[tuple, tuple[nn.Module, dict, dict]] = {}
        self._pruned: dict[tuple, dict] = {}

    # -- inputs that determine a model
    def data_inputs(self) -> dict:
        c = self.cfg
        return {"dataset": c.dataset, "train_per_class": c.train_per_class, "data_seed": c.seed,
                "batch_size": c.batch_size, "augment": "crop4+flip", "drop_last": True}

    def large_inputs(self, name: str, seed: int, budget: int) -> dict:
        c = self.cfg
        arch = ({"arch": "resnet", "depth": c.resnet_depth, "width": c.resnet_width}
                if name.startswith("resnet") else {"arch": "vgg16", "width": c.vgg_width})
        return {"large": arch, "slim_lambda": c.slim_lambda if name == "vgg16_bnl1" else 0.0,
                "seed": seed, "fit": asdict(c.large_settings(budget)), "data": self.data_inputs(),
                "compute": COMPUTE}

    def prune_inputs(self, target: Target) -> dict:
        c = self.cfg
        if target.family == "l1" and target.variant == "VGG":
            how = {"ratios": list(c.vgg_layer_ratios)}
        elif target.family == "l1":
            how = {"variant": target.variant, "ratios": list(c.resnet_stage_ratios[target.variant])}
        elif target.family == "slimming":
            how = {"slim_ratio": c.slim_ratio}
        else:
            how = {"sparsity": c.unstructured_sparsity}
        return {"family": target.family, "floor": c.min_channels, **how}

    def loader(self, seed: int):
        return data.make_loader(self.train_set, self.cfg.batch_size, shuffle=True, seed=seed,
                                augment=True, drop_last=True)

    def _fit(self, model, settings, seed, desc, after_backward=None, after_step=None) -> dict:
        """Train channels-last (see :data:`COMPUTE`), then return the model to the contiguous
        layout a model loaded from the cache has, so both evaluate alike."""
        start = time.process_time()
        model.to(memory_format=torch.channels_last)
        train.fit(model, self.loader(seed), settings, desc=desc, progress=self.progress,
                  after_backward=after_backward, after_step=after_step)
        model.to(memory_format=torch.contiguous_format)
        return {"train_cpu_s": round(time.process_time() - start, 2)}

    # -- models
    def large(self, name: str, seed: int, budget: int) -> tuple[nn.Module, dict, dict]:
        """(trained large model, its extras, its inputs), cached."""
        key = (name, seed, budget)
        if key not in self._large:
            inputs = self.large_inputs(name, seed, budget)
            c = self.cfg

            def build():
                unit_seed = _unit_seed(inputs)
                seed_everything(unit_seed, threads=pool.THREADS)
                model = (cm.resnet(self.num_classes, c.resnet_depth, c.resnet_width)
                         if name.startswith("resnet") else cm.vgg(self.num_classes, "vgg16", c.vgg_width))
                hook = structured.bn_l1_hook(model, c.slim_lambda) if name == "vgg16_bnl1" else None
                extra = self._fit(model, c.large_settings(budget), unit_seed, f"{name} s{seed} E{budget}",
                                  after_backward=hook)
                return model.eval(), extra

            model, extra = cache.cached(f"{ARTIFACTS}/large", inputs, CODE, build, save=_save,
                                        load=cm.load_model)
            self._large[key] = (model, extra, inputs)
        return self._large[key]

    def pruned(self, target: Target, seed: int, budget: int) -> dict:
        """The pruned model with inherited weights (and masks), its MACs and its large model's."""
        key = (target.name, seed, budget)
        if key not in self._pruned:
            c = self.cfg
            large, _, large_inputs = self.large(target.large, seed, budget)
            masks = None
            if target.family == "l1" and target.variant == "VGG":
                model = structured.prune_vgg(large, structured.vgg_l1_keep(
                    large, c.vgg_layer_ratios, c.min_channels))
            elif target.family == "l1":
                model = structured.li_resnet(large, target.variant,
                                             c.resnet_stage_ratios[target.variant], c.min_channels)
            elif target.family == "slimming":
                model = structured.prune_vgg(large, structured.slimming_keep(
                    large, c.slim_ratio, c.min_channels))
            else:
                model = copy.deepcopy(large)
                masks = mk.global_magnitude_masks(model, c.unstructured_sparsity)
                mk.apply_masks(model, masks)
            macs_large = metrics.count_macs(large)
            macs = structured.sparse_macs(model) if masks else metrics.count_macs(model)
            self._pruned[key] = {"model": model.eval(), "masks": masks, "macs": macs,
                                 "macs_large": macs_large,
                                 "inputs": {"large": large_inputs, "prune": self.prune_inputs(target)}}
        return self._pruned[key]

    def trained(self, target: Target, regime: str, seed: int, budget: int):
        """(model trained in ``regime``, extras, epochs, MACs of the large model), cached."""
        c = self.cfg
        p = self.pruned(target, seed, budget)
        if regime == "finetune":
            settings = c.ft_settings(budget)
        else:
            epochs = (structured.scratch_b_epochs(budget, p["macs_large"], p["macs"], c.scratch_b_cap)
                      if regime == "scratch_b" else budget)
            settings = c.large_settings(epochs)
        inputs = {**p["inputs"], "regime": regime, "fit": asdict(settings)}

        def build():
            unit_seed = _unit_seed(inputs)
            seed_everything(unit_seed, threads=pool.THREADS)
            if regime == "finetune":
                model = copy.deepcopy(p["model"])
            elif regime == "uniform_e":
                model = structured.uniform_vgg_like(self.num_classes,
                                                    metrics.count_parameters(p["model"]), c.vgg_width)
            else:
                model = structured.fresh_copy(p["model"], p["masks"])
            after_backward, after_step = structured.mask_hooks(model, p["masks"])
            extra = self._fit(model, settings, unit_seed, f"{target.name} {regime} s{seed} E{budget}",
                              after_backward, after_step)
            return model.eval(), extra

        model, extra = cache.cached(f"{ARTIFACTS}/trained", inputs, CODE, build, save=_save,
                                    load=cm.load_model)
        return model, extra, settings.epochs, p

    def accuracy(self, model: nn.Module) -> float:
        return 100 * train.evaluate(model, self.test_loader)["accuracy"]

    # -- one unit
    def row(self, unit: dict) -> dict:
        target = self.targets[unit["target"]]
        seed, budget, regime = unit["seed"], unit["budget"], unit["regime"]
        out = {**unit, "label": target.label, "family": target.family, "large": target.large}
        if regime == "unpruned":
            model, extra, _ = self.large(target.name, seed, budget)
            macs = metrics.count_macs(model)
            return out | self._measures(model, macs, macs, budget, extra)
        model, extra, epochs, p = self.trained(target, regime, seed, budget)
        macs = p["macs"] if regime != "uniform_e" else metrics.count_macs(model)
        row = out | self._measures(model, macs, p["macs_large"], epochs, extra)
        if regime == "finetune":
            row["accuracy_before_ft"] = self.accuracy(p["model"])
        return row

    def _measures(self, model, macs, macs_large, epochs, extra) -> dict:
        return {"accuracy": self.accuracy(model), "epochs": float(epochs), "macs": int(macs),
                "mac_reduction": macs_large / macs, "params": metrics.count_parameters(model),
                "nonzeros": metrics.count_nonzero_parameters(model),
                "widths": json.dumps(_widths(model)), "train_cpu_s": extra.get("train_cpu_s")}


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Results:
    """Tidy frames of one run of notebook 02.

    ``runs``: one row per unit (:data:`UNIT_KEY`, ``label``, ``family``, ``large``, ``accuracy``
    (% on the test split), ``accuracy_before_ft`` (FT rows), ``epochs``, ``macs``,
    ``mac_reduction``, ``params``, ``nonzeros``, ``widths`` (JSON list), ``train_cpu_s``).
    ``claims``: the run's claims.csv. ``converged``, ``speed`` and ``gammas`` are empty when
    the run does not measure them.
    """

    runs: pd.DataFrame
    targets: dict[str, Target]
    epochs: int
    claims: pd.DataFrame
    converged: pd.DataFrame
    speed: pd.DataFrame
    gammas: pd.DataFrame
    train_images: int
    test_images: int
    converged_test_images: int


def run(cfg: Config, progress: bool = True) -> Results:
    """Every unit of the run (resumed from ``runs.csv``), the checks, the tables' data and
    claims.csv."""
    seed_everything(cfg.seed)
    study = _Study(cfg, progress)
    store = RunStore(cfg.results_dir, key=UNIT_KEY, required=("accuracy",))
    wanted = units(cfg)
    for row in unit_rows(cfg, study, list(store.pending(wanted)), progress):
        store.add(row)
    runs = in_unit_order(store.frame, wanted)
    converged, n_converged = (converged_check(cfg, study) if cfg.converged_check
                              else (pd.DataFrame(), 0))
    speed = speed_check(cfg, study) if cfg.measure_speed else pd.DataFrame()
    gammas = gamma_frame(study) if "slimming" in cfg.methods else pd.DataFrame()
    results = claim_results(runs, cfg)
    claims.write_claims(cfg.results_dir, results)
    return Results(runs=runs, targets=study.targets, epochs=cfg.epochs, claims=claims.read_claims(cfg.results_dir),
                   converged=converged, speed=speed, gammas=gammas,
                   train_images=len(study.train_set), test_images=len(study.test_set),
                   converged_test_images=n_converged)


def in_unit_order(frame: pd.DataFrame, wanted: list[dict]) -> pd.DataFrame:
    """The rows in the order of :func:`units`: the pool writes them as units finish, and the
    tables and figures should not depend on which finished first."""
    rank = {tuple(u[k] for k in UNIT_KEY): i for i, u in enumerate(wanted)}
    keys = frame[list(UNIT_KEY)].itertuples(index=False, name=None)
    order = np.argsort([rank.get(key, len(rank)) for key in keys], kind="stable")
    return frame.iloc[order].reset_index(drop=True)


# ----------------------------------------------------------------------------- the pool of workers

def _start_worker(cfg: Config) -> _Study:
    seed_everything(cfg.seed, threads=pool.THREADS)
    return _Study(cfg, progress=False)


def _expected_epochs(cfg: Config, unit: dict) -> float:
    """A unit's rough cost in large-model epochs, so that the longest units start first."""
    factor = {"finetune": cfg.ft_fraction, "scratch_b": cfg.scratch_b_cap}.get(unit["regime"], 1.0)
    return unit["budget"] * factor


def unit_rows(cfg: Config, study: _Study, pending: list[dict], progress: bool = True) -> Iterator[dict]:
    """The row of every pending unit, yielded as each finishes, from ``workers``
    processes (:func:`compstudy.pool.results`). A unit pruned from a large model that is still
    pending waits for it: the worker that trains a model caches it, and the others load it.
    The longest units start first."""
    def needs(unit):
        large = (study.targets[unit["target"]].large, unit["seed"], unit["budget"])
        return large if unit["regime"] != "unpruned" else None

    rows = pool.results(_Study.row, pending, start=_start_worker, start_args=(cfg,),
                        workers=cfg.workers, cost=lambda u: _expected_epochs(cfg, u),
                        desc="units", progress=progress, needs=needs,
                        provides=lambda u: (u["target"], u["seed"], u["budget"]))
    for _, row in rows:
        yield row


def gamma_frame(study: _Study) -> pd.DataFrame:
    """|γ| of every conv BN channel of the first seed's plain and sparsity-trained VGG-16."""
    c, rows = study.cfg, []
    seed = c.seeds[0]
    for name in ("vgg16", "vgg16_bnl1"):
        if name == "vgg16" and "vgg16" not in study.targets:
            continue
        model = study.large(name, seed, c.epochs)[0]
        for layer, (_, bn) in enumerate(model.conv_bn_pairs(), start=1):
            rows += [{"model": study.targets[name].label, "layer": layer, "gamma": float(g)}
                     for g in bn.weight.detach().abs()]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- converged check


def converged_check(cfg: Config, study: _Study) -> tuple[pd.DataFrame, int]:
    """Li et al.'s ResNet-56-A/B of the mirror's converged ResNet-56, before and after a brief
    fine-tuning on the JPEG train split, and the unpruned model fine-tuned the same way (the
    JPEG-adaptation control); resumable (``converged/runs.csv``)."""
    store = RunStore(cfg.results_dir / "converged", key=("model", "stage"), required=("accuracy",))
    test_set = data.few_shot(study.test_full, cfg.converged_test_per_class, cfg.seed)
    ft_set = data.few_shot(study.train_full, cfg.converged_ft_per_class, cfg.seed)
    loader = data.make_loader(test_set, 500, shuffle=False)
    settings = train.FitSettings(epochs=1, lr=cfg.converged_ft_lr, schedule="constant",
                                 weight_decay=cfg.converged_weight_decay)
    variants = {"resnet56": "", "resnet56_a": "A", "resnet56_b": "B"}
    wanted = [{"model": m, "stage": s} for m in variants for s in ("before_ft", "after_ft")]
    pending = list(store.pending(wanted))
    if pending:
        base = cm.akamaster_resnet(56)
        macs_base = metrics.count_macs(base)
        for unit in pending:
            variant = variants[unit["model"]]
            model = structured.li_resnet(base, variant) if variant else copy.deepcopy(base)
            extra = {}
            if unit["stage"] == "after_ft":
                inputs = {"asset": assets.MANIFEST["cifar10_resnet56"].sha256, "variant": variant,
                          "fit": asdict(settings), "dataset": cfg.dataset,
                          "ft_per_class": cfg.converged_ft_per_class, "data_seed": cfg.seed,
                          "batch_size": cfg.batch_size, "augment": "crop4+flip", "drop_last": True}

                def build(model=model, inputs=inputs):
                    unit_seed = _unit_seed(inputs)
                    seed_everything(unit_seed)
                    start = time.process_time()
                    train.fit(model, data.make_loader(ft_set, cfg.batch_size, shuffle=True,
                                                      seed=unit_seed, augment=True, drop_last=True),
                              settings, desc=f"{unit['model']} FT", progress=study.progress)
                    return model.eval(), {"train_cpu_s": round(time.process_time() - start, 2)}

                model, extra = cache.cached(f"{ARTIFACTS}/converged", inputs, CODE, build,
                                            save=_save, load=cm.load_model)
            macs = metrics.count_macs(model)
            store.add({**unit, "variant": variant,
                       "accuracy": 100 * train.evaluate(model, loader)["accuracy"],
                       "params": metrics.count_parameters(model), "macs": macs,
                       "mac_reduction": macs_base / macs, "widths": json.dumps(_widths(model)),
                       "ft_images": len(ft_set) if unit["stage"] == "after_ft" else 0,
                       "train_cpu_s": extra.get("train_cpu_s"),
                       "best_prec1": base.pretrained_cfg["best_prec1"]})
    frame = store.frame
    frame["variant"] = frame["variant"].fillna("").astype(str)
    return frame, len(test_set)


def converged_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per model (index: ``resnet56``, ``resnet56_a``, ``resnet56_b``): ours before and
    after the JPEG fine-tuning, the difference from the fine-tuned unpruned control, and the
    paper's numbers (original CIFAR-10, FT 40 epochs; the unpruned row is the paper's baseline).
    Short headers keep the nine columns within a page's text column."""
    wide = frame.pivot_table(index=["model", "variant"], columns="stage", values="accuracy").reset_index()
    info = frame[frame.stage == "after_ft"].set_index("model")
    control = float(wide.loc[wide.variant == "", "after_ft"].iloc[0])
    unpruned = PAPER_CONVERGED[""][0]
    rows = []
    for r in wide.itertuples():
        paper, paper_sd = PAPER_CONVERGED[r.variant]
        rows.append({
            "model": r.model, "architecture": f"ResNet-56-{r.variant}" if r.variant else "ResNet-56",
            "params (k)": round(info.loc[r.model, "params"] / 1e3),
            "MACs (M)": info.loc[r.model, "macs"] / 1e6, "MAC reduction": info.loc[r.model, "mac_reduction"],
            "before FT (%)": r.before_ft, "after FT (%)": r.after_ft,
            "vs FT control (points)": r.after_ft - control,
            "paper: FT (%)": f"{paper:.2f} ± {paper_sd:.2f}",
            "paper: vs unpruned (points)": f"{paper - unpruned:+.2f}" if r.variant else "—"})
    return pd.DataFrame(rows).set_index("model")


# ----------------------------------------------------------------------------- speed


def speed_check(cfg: Config, study: _Study) -> pd.DataFrame:
    """Params, MACs and CPU speed-up (the process's threads, batch sizes of the config) of every
    structured model of the first seed at the main budget over its large model
    (:func:`time_speedups`); resumable (``speed/runs.csv``)."""
    store = RunStore(cfg.results_dir / "speed", key=("model",), required=("macs",))
    seed, makers = cfg.seeds[0], {}
    for t in study.targets.values():
        if t.family == "unpruned":
            makers[t.label] = (t.label, lambda t=t: study.large(t.name, seed, cfg.epochs)[0])
        elif t.family in ("l1", "slimming"):
            large = study.targets[t.large].label
            makers[t.label] = (large, lambda t=t: study.pruned(t, seed, cfg.epochs)["model"])
            if "uniform_e" in t.regimes:
                makers["VGG-16 uniform, params of slimmed"] = (large, lambda t=t: structured.uniform_vgg_like(
                    study.num_classes, metrics.count_parameters(study.pruned(t, seed, cfg.epochs)["model"]),
                    cfg.vgg_width))
    if next(store.pending([{"model": m} for m in makers]), None):
        models = {name: (large, make()) for name, (large, make) in makers.items()}
        timed = time_speedups(models, cfg.latency_batches, cfg.latency_forwards)
        store.add_many(store.pending(timed.to_dict("records")))
    return speedup_table(store.frame, cfg.latency_batches)


def time_speedups(models: dict[str, tuple[str, nn.Module]], batch_sizes, forwards: int,
                  input_size: tuple[int, ...] = (3, 32, 32)) -> pd.DataFrame:
    """Params, MACs, median latency and speed-up over its large model of every model
    (``models``: name -> (name of its large model, model); the large models are among them).

    Each large model is timed in turn with the models pruned from it, one forward each per
    round (:func:`metrics.measure_latencies` with the large model as reference). The speed-up
    is 1 / the mean over rounds of (model's time ÷ large model's time in the same round), with
    the 95 % t-interval over the rounds, so a slow spell of the machine cancels out of it.
    """
    rows = {name: {"model": name, "large": large, "params": metrics.count_parameters(model),
                   "macs": metrics.count_macs(model)} for name, (large, model) in models.items()}
    for large in dict.fromkeys(large for large, _ in models.values()):
        if large not in models:
            raise ValueError(f"large model {large!r} is not among the models timed")
        group = {name: model for name, (of, model) in models.items() if of == large}
        for b in batch_sizes:
            timings = metrics.measure_latencies(group, b, input_size, forwards, reference=large)
            for name, t in timings.items():
                rows[name] |= {f"latency_ms_b{b}": t["median_ms"]} | {
                    f"speedup_b{b}{end}": t[f"speedup{end}"] for end in ("", "_low", "_high")}
    return pd.DataFrame(rows.values())


def speedup_table(frame: pd.DataFrame, batch_sizes) -> pd.DataFrame:
    """Per model: MAC reduction from its large model and, per batch size, the measured speed-up
    and speed-up ÷ MAC reduction (1: every saved MAC is saved time), each with its 95 %
    interval (:func:`time_speedups`)."""
    table = frame.copy()
    table["mac_reduction"] = table["large"].map(frame.set_index("model")["macs"]) / table["macs"]
    for b in batch_sizes:
        for end in ("", "_low", "_high"):
            table[f"speedup_over_mac_b{b}{end}"] = table[f"speedup_b{b}{end}"] / table["mac_reduction"]
    return table


def speed_page_table(table: pd.DataFrame, batch_sizes) -> pd.DataFrame:
    """The pruned models' rows of :func:`speedup_table` as a page shows them, one row per model
    and batch size: MAC reduction, the median latencies of the model and its large model
    (``0.58 / 0.70``, ms), speed-up and speed-up ÷ MAC reduction, each ``1.23 [1.20, 1.26]``."""
    latency = table.set_index("model")
    pruned = table[table.model != table.large]
    rows = []
    for _, r in pruned.iterrows():
        for b in batch_sizes:
            rows.append({"model": r["model"], "batch": b, "large model": r["large"],
                         "MAC reduction": f"{r['mac_reduction']:.2f}",
                         "latency, ms": f"{r[f'latency_ms_b{b}']:.2f} / "
                                        f"{latency.loc[r['large'], f'latency_ms_b{b}']:.2f}"}
                        | {name: claims.interval_text(r[column], r[column + "_low"], r[column + "_high"])
                           for name, column in (("speed-up", f"speedup_b{b}"),
                                                ("speed-up ÷ MAC reduction", f"speedup_over_mac_b{b}"))})
    return pd.DataFrame(rows).set_index(["model", "large model", "MAC reduction", "batch"])


# ----------------------------------------------------------------------------- tables


def main_runs(results: Results) -> pd.DataFrame:
    """The rows at the main budget (the large model's ``epochs``)."""
    return results.runs[results.runs.budget == results.epochs]


def regime_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and number of seeds of each target × regime (accuracy, %)."""
    return (runs.groupby(["target", "label", "family", "large", "regime"], sort=False)
            .accuracy.agg(mean="mean", sd="std", n="count").reset_index())


def _fmt(mean: float, sd: float, n: int) -> str:
    return f"{mean:.2f} ± {sd:.2f}" if n > 1 else f"{mean:.2f}"


def main_table(results: Results) -> pd.DataFrame:
    """architecture | source | unpruned | FT | Scratch-E | Scratch-B | uniform, Scratch-E:
    test accuracy (%), mean ± sd over seeds, with the paper's row under ours."""
    runs = main_runs(results)
    summary = regime_summary(runs).set_index(["target", "regime"])
    rows = []
    for t in results.targets.values():
        if t.family == "unpruned":
            continue
        n = int(runs[runs.target == t.name].seed.nunique())
        row = {"architecture": t.label, "source": f"ours, {n} seeds"}
        for regime in ("unpruned", *REGIMES, "uniform_e"):
            key = (t.large, regime) if regime == "unpruned" else (t.name, regime)
            if key in summary.index:
                s = summary.loc[key]
                row[REGIME_NAMES[regime]] = _fmt(s["mean"], s["sd"], int(s["n"]))
        rows.append(row)
        paper = PAPER_ROWS.get((t.family, t.variant))
        if paper:
            rows.append({"architecture": t.label, "source": f"paper: {paper[0]}",
                         **dict(zip(["unpruned", "FT", "Scratch-E", "Scratch-B"], paper[1:]))})
    return pd.DataFrame(rows).set_index(["architecture", "source"]).fillna("")


def _pairs(runs: pd.DataFrame, target_a: str, regime_a: str, target_b: str, regime_b: str) -> pd.Series:
    """Accuracy of (target_a, regime_a) minus (target_b, regime_b), paired by seed."""
    a = runs[(runs.target == target_a) & (runs.regime == regime_a)].set_index("seed").accuracy
    b = runs[(runs.target == target_b) & (runs.regime == regime_b)].set_index("seed").accuracy
    return (a - b).dropna()


COMPARISONS = (("scratch_b", "finetune"), ("scratch_e", "finetune"), ("scratch_b", "scratch_e"),
               ("finetune", "unpruned"), ("scratch_b", "unpruned"), ("scratch_e", "uniform_e"))


def differences(results: Results) -> pd.DataFrame:
    """Per pruned target: paired differences between regimes (points), with their t-interval."""
    runs, rows = main_runs(results), []
    for t in results.targets.values():
        if t.family == "unpruned":
            continue
        for a, b in COMPARISONS:
            d = _pairs(runs, t.name, a, t.large if b == "unpruned" else t.name, b)
            if len(d) < 1:
                continue
            row = {"architecture": t.label, "comparison": f"{REGIME_NAMES[a]} − {REGIME_NAMES[b]}",
                   "mean": float(d.mean()), "sd": float(d.std()) if len(d) > 1 else float("nan"),
                   "n": len(d), "ci_low": float("nan"), "ci_high": float("nan")}
            if len(d) > 1:
                interval = claims.t_interval(d.to_numpy())
                row.update(ci_low=interval.ci_low, ci_high=interval.ci_high)
            rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["half_width"] = (frame.ci_high - frame.ci_low) / 2
    return frame


def unpruned_spread(results: Results) -> pd.DataFrame:
    """Seed mean and sd (points) of every large model at the main budget (index: target)."""
    runs = main_runs(results)
    return (runs[runs.regime == "unpruned"].groupby(["target", "label"], sort=False).accuracy
            .agg(mean="mean", sd="std", n="count").reset_index("label"))


def budget_curve(results: Results) -> pd.DataFrame:
    """The training-budget curve: per budget and regime (unpruned VGG-16, FT and Scratch-B of
    VGG-16-A), mean and sd of the accuracy and the number of seeds."""
    runs = results.runs
    part = runs[((runs.target == BUDGET_TARGET) & runs.regime.isin(BUDGET_REGIMES[1:]))
                | ((runs.target == "vgg16") & (runs.regime == "unpruned"))]
    if part.empty:
        return pd.DataFrame(columns=["budget", "regime", "mean", "sd", "n", "epochs"])
    return (part.groupby(["budget", "regime"]).agg(mean=("accuracy", "mean"), sd=("accuracy", "std"),
                                                   n=("accuracy", "count"), epochs=("epochs", "mean"))
            .reset_index())


def budget_gaps(results: Results) -> pd.DataFrame:
    """Scratch-B − FT of VGG-16-A at each large-model budget: paired by seed where both ran."""
    runs, rows = results.runs, []
    for budget, part in runs[runs.target == BUDGET_TARGET].groupby("budget"):
        d = _pairs(part, BUDGET_TARGET, "scratch_b", BUDGET_TARGET, "finetune")
        if len(d):
            rows.append({"budget": int(budget), "gap": float(d.mean()), "n": len(d)})
    return pd.DataFrame(rows, columns=["budget", "gap", "n"])


def precision_text(spread: pd.DataFrame, diffs: pd.DataFrame) -> str:
    """The run's precision as a sentence of the chapter's prose: the largest seed standard
    deviation of the unpruned models (:func:`unpruned_spread`) and the widest Scratch-B − FT
    half-width (:func:`differences`), or that one seed measures neither."""
    sb_ft = diffs[diffs.comparison == "Scratch-B − FT"]
    if spread["sd"].isna().all() or sb_ft.half_width.isna().all():
        return ("With one seed, the run measures neither a seed standard deviation nor an interval "
                "of a Scratch-B − FT difference")
    return (f"The seed standard deviation of the unpruned models is at most {spread['sd'].max():.2f} "
            "points, and the widest 95-percent interval of a Scratch-B − FT difference has a "
            f"half-width of {sb_ft.half_width.max():.2f} points")


def crossover(gaps: pd.DataFrame) -> float:
    """The large-model budget (epochs) at which Scratch-B − FT first reaches zero, interpolated
    linearly in log budget between the budgets run; NaN when it does not within them."""
    g = gaps.sort_values("budget")
    for (b0, g0), (b1, g1) in zip(g[["budget", "gap"]].to_numpy()[:-1], g[["budget", "gap"]].to_numpy()[1:]):
        if g0 > 0 >= g1:
            x = math.log(b0) + (math.log(b1) - math.log(b0)) * g0 / (g0 - g1)
            return float(math.exp(x))
    if len(g) and g.gap.iloc[0] <= 0:
        return float(g.budget.iloc[0])
    return float("nan")


def crossover_text(gaps: pd.DataFrame) -> str:
    """Where Scratch-B − FT reaches zero, as a clause of the chapter's prose: the interpolated
    budget, or that the gap stays above zero up to the largest budget run."""
    at = crossover(gaps)
    if not math.isnan(at):
        return f"it reaches zero at about {at:.1f} epochs (interpolated in log budget)"
    if len(gaps):
        return f"it stays above zero at every budget run, up to {int(gaps.budget.max())} epochs"
    return "no budget curve was run"


def cost_table(results: Results) -> pd.DataFrame:
    """CPU seconds spent training, per target and regime (as measured when each model was
    trained; cached models report the time they took then)."""
    runs = results.runs
    return (runs.groupby(["label", "regime"], sort=False)
            .agg(models=("train_cpu_s", "count"), epochs=("epochs", "mean"),
                 train_cpu_s=("train_cpu_s", "sum")).reset_index())


# ----------------------------------------------------------------------------- claims


def _claim_rows(runs: pd.DataFrame, names: list[str], regime_a: str, regime_b: str) -> np.ndarray:
    """Paired differences (points) of two regimes, pooled over the targets ``names``."""
    parts = [_pairs(runs, n, regime_a, n, regime_b).to_numpy() for n in names]
    return np.concatenate(parts) if parts else np.array([])


def claim_results(runs: pd.DataFrame, cfg: Config) -> list[claims.ClaimResult]:
    """The claims of Liu et al.'s sections 4-5 that the run's units can test.

    "Scratch-B ≥ FT" is directional (the paper: comparable or better), "≈" claims are
    equivalence claims within ``equivalence_margin`` points. Pooled claims treat each
    (architecture, seed) as a unit; a claim whose regimes the run does not train is left out.
    """
    main = runs[runs.budget == cfg.epochs]
    found = targets(cfg)
    trained = set(cfg.regimes)
    margin = cfg.equivalence_margin
    out: list[claims.ClaimResult] = []
    l1 = [t for t in found.values() if t.family == "l1"]
    structured_targets = [t.name for t in found.values() if t.family in ("l1", "slimming")]

    if {"finetune", "scratch_b"} <= trained:
        for i, t in enumerate(l1, start=1):
            paper = PAPER_ROWS[("l1", t.variant)]
            claim = claims.Claim(
                f"1.{i}", f"L1 filter pruning, {t.label}: Scratch-B matches or beats fine-tuning",
                f"{paper[0]}: FT {paper[2]}, Scratch-B {paper[4]}", "main table; paired differences")
            out.append(claims.directional(claim, _claim_rows(main, [t.name], "scratch_b", "finetune")))
        if "vgg16_slimmed" in found:
            claim = claims.Claim(
                "2.1", "Network slimming: the slimmed architecture trained from scratch (Scratch-B) "
                "matches or beats fine-tuning", "CIFAR-10 VGG-19 slimmed 70 %: FT ≈ 93.6, Scratch-B ≈ 93.8",
                "main table; paired differences")
            out.append(claims.directional(claim, _claim_rows(main, ["vgg16_slimmed"],
                                                             "scratch_b", "finetune")))
    if "vgg16_slimmed" in found and "uniform_e" in found["vgg16_slimmed"].regimes:
        claim = claims.Claim(
            "2.2", "Network slimming finds better widths: the slimmed VGG-16 beats a uniformly "
            "thinned VGG-16 with the same parameters (both Scratch-E)",
            "section 5, pruning as architecture search: slimmed architectures beat uniform pruning",
            "slimming widths figure; paired differences")
        out.append(claims.directional(claim, _claim_rows(main, ["vgg16_slimmed"],
                                                         "scratch_e", "uniform_e")))
    if "vgg16_sparse" in found and {"finetune", "scratch_b"} <= trained:
        claim = claims.Claim(
            "3.1", f"Unstructured pruning at {cfg.unstructured_sparsity:.0%} on small data: Scratch-B "
            "≈ fine-tuning", "ImageNet VGG-16 60 %: FT 73.63, Scratch-B 73.42; CIFAR: comparable",
            "main table; paired differences")
        out.append(claims.equivalence(claim, _claim_rows(main, ["vgg16_sparse"],
                                                         "scratch_b", "finetune"), margin))
        out.append(claims.not_testable(claims.Claim(
            "3.2", "Unstructured pruning at high sparsity or on harder data: scratch training falls "
            "short of fine-tuning", "ImageNet ResNet-50 60 %: FT 76.09, Scratch-B 74.90",
            "—", direction=-1),
            f"the run prunes one sparsity ({cfg.unstructured_sparsity:.0%}) of one small data set"))
    if {"scratch_e", "scratch_b"} <= trained and structured_targets:
        claim = claims.Claim(
            "4", "Scratch-B beats Scratch-E: the pruned model gains from the longer schedule "
            "(pooled over the structured pruned models)",
            "every CIFAR row of the L1 table, e.g. ResNet-56-B: Scratch-E 92.54, Scratch-B 93.05",
            "paired differences")
        out.append(claims.directional(claim, _claim_rows(main, structured_targets,
                                                         "scratch_b", "scratch_e")))
    if {"scratch_e", "finetune"} <= trained and structured_targets:
        claim = claims.Claim(
            "5", "Inherited weights are not needed: the pruned architecture from a random "
            "initialisation at the large model's epochs (Scratch-E) ≈ fine-tuning (pooled over the "
            "structured pruned models)",
            "CIFAR-10 L1: Scratch-E − FT +0.21 (VGG-16-A), −0.01 (ResNet-56-A), −0.13 (ResNet-56-B)",
            "paired differences")
        out.append(claims.equivalence(claim, _claim_rows(main, structured_targets,
                                                         "scratch_e", "finetune"), margin))
    return out


def seed_subsets(runs: pd.DataFrame, cfg: Config, size: int) -> pd.DataFrame:
    """The claims again on every subset of ``size`` of the run's seeds: how much each verdict
    owes to the draw of seeds. One row per subset (``seeds``, then the count of each verdict)."""
    main = runs[runs.budget == cfg.epochs]
    rows = []
    for seeds in itertools.combinations(sorted(main.seed.unique()), size):
        verdicts = [r.verdict for r in claim_results(main[main.seed.isin(seeds)], cfg)]
        rows.append({"seeds": ", ".join(map(str, seeds)),
                     **{v: verdicts.count(v) for v in claims.VERDICTS}})
    return pd.DataFrame(rows)


def seed_stability(runs: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """How many claims are inconclusive on a subset of the seeds: the fewest, the most and the
    mean over the subsets of each size, from three seeds (or fewer when the run has fewer) up
    to all of them."""
    n = runs[runs.budget == cfg.epochs].seed.nunique()
    rows = {}
    for size in range(min(3, n), n + 1):
        counts = seed_subsets(runs, cfg, size).inconclusive
        rows[size] = {"subsets": len(counts), "fewest": counts.min(), "most": counts.max(),
                      "mean": counts.mean()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("seeds per subset")


# ----------------------------------------------------------------------------- figures


def budget_figure(results: Results, epochs: int):
    """Accuracy of the large VGG-16, and of FT and Scratch-B of VGG-16-A, against the large
    model's training budget (mean ± sd over the seeds at each budget)."""
    curve = budget_curve(results)
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    for regime, marker in (("unpruned", "s"), ("finetune", "o"), ("scratch_b", "^")):
        part = curve[curve.regime == regime].sort_values("budget")
        label = "VGG-16 (large)" if regime == "unpruned" else f"VGG-16-A, {REGIME_NAMES[regime]}"
        ax.errorbar(part.budget, part["mean"], yerr=part["sd"].fillna(0), marker=marker, capsize=3,
                    label=label, linestyle="--" if regime == "unpruned" else "-")
    ax.axvline(epochs, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", xlabel="large model's training budget (epochs)", ylabel="test accuracy (%)")
    ax.set_xticks(sorted(curve.budget.unique()), [str(b) for b in sorted(curve.budget.unique())])
    ax.minorticks_off()
    ax.legend(fontsize=8)
    return fig


def regimes_figure(results: Results):
    """Accuracy (mean ± sd over seeds) against MACs, one panel per pruned architecture."""
    runs = main_runs(results)
    pruned = [t for t in results.targets.values() if t.family != "unpruned"]
    fig, axes = plt.subplots(1, len(pruned), figsize=(3.2 * len(pruned), 3.2), squeeze=False)
    summary = runs.groupby(["target", "regime"]).agg(mean=("accuracy", "mean"), sd=("accuracy", "std"),
                                                     macs=("macs", "mean")).reset_index()
    for ax, t in zip(axes[0], pruned):
        part = summary[(summary.target == t.name) | ((summary.target == t.large)
                                                     & (summary.regime == "unpruned"))]
        for r in part.itertuples():
            ax.errorbar(r.macs / 1e6, r.mean, yerr=0 if pd.isna(r.sd) else r.sd, fmt="o", capsize=3,
                        label=REGIME_NAMES[r.regime])
        ax.set(title=t.label, xlabel="MACs (M)")
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return fig


def widths_frame(results: Results) -> pd.DataFrame:
    """Conv widths of the slimmed VGG-16 (one per seed), of the uniform VGG-16 with its
    parameters and of the unpruned VGG-16, layer by layer."""
    runs = main_runs(results)
    kinds = {("vgg16_slimmed", "finetune"): "slimmed", ("vgg16_slimmed", "uniform_e"): "uniform",
             ("vgg16_bnl1", "unpruned"): "unpruned"}
    rows = []
    for r in runs.itertuples():
        kind = kinds.get((r.target, r.regime))
        if kind:
            rows += [{"model": kind, "seed": r.seed, "layer": i, "width": w}
                     for i, w in enumerate(json.loads(r.widths), start=1)]
    return pd.DataFrame(rows, columns=["model", "seed", "layer", "width"])
