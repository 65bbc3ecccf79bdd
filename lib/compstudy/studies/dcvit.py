"""Notebook 04, DC-ViT: dense few-shot compression of DeiT-Tiny against whole-block dropping.

The model to compress is DeiT-Tiny from its ImageNet weights, fine-tuned on CIFAR-10 (the
"dense" model, cached as an artifact keyed by its recipe). CIFAR-10's training split is cut
into a fine-tuning part and a few-shot pool; its test split into the test images and a
real held-out set for the ranking check; the four are disjoint (:func:`make_splits`).

For every few-shot size N and seed, the study runs DC-ViT's stages
(:mod:`compstudy.methods.dcvit`, :mod:`compstudy.methods.inversion`) and the PRACTISE-style
baseline (:mod:`compstudy.methods.practise`), each unit resumable through ``runs.csv``:

- ``trial``: stage C, one row per candidate block (KL on the synthetic and on the real
  held-out set);
- ``dcvit``: stage D, one progressive chain per (N, seed, update setting, MLP init, kept
  units); one row per compressed block k, evaluated on the test images; the MACs budgets of
  the config are the chain's steps when stage A gives them the same kept units;
- ``recover`` and ``drop``: recoverability scores, then k whole blocks dropped and
  fine-tuned the same way;
- ``latency``: batch latency of each structure and of attention-only / MLP-only probes.

The inversion is computed once per (model, seed), the teacher targets once per (model, N,
seed), and the trial scores and chains once per their inputs: all through
:func:`compstudy.cache.cached`, so ablation runs reuse what the main run computed. The
claims of the paper's section 4 are decided by :mod:`compstudy.claims`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .. import cache, claims, data, metrics, models, pool, train
from ..config import NotebookConfig
from ..errors import ConfigError
from ..methods import dcvit, inversion, practise
from ..results import RunStore
from ..seeding import seed_everything

KEY = ("kind", "method", "update", "init", "num_samples", "seed", "kept_units", "k", "block")
NONE = "-"  # the value of a key column that does not apply to a unit
CLAIM_IDS = ("1", "2", "3", "4", "5", "6")
RANK_METRICS = ("synthetic", "real")  # the paper's synthetic metric set, or real held-out images
MAIN = ("before", "random")  # the paper's default update setting and MLP init
POINTS = 100  # accuracies and MACs fractions are reported in percentage points


@dataclass(frozen=True)
class Config(NotebookConfig):
    NOTEBOOK = "04_dcvit"
    UPSTREAM = ("00_upstream/main",)  # the resolution is chosen from notebook 00's cost table

    seed: int
    seeds: list[int]
    model: str
    resolution: int
    dataset: str
    finetune_per_class: int
    test_per_class: int
    heldout_per_class: int
    dense_epochs: int
    dense_batch_size: int
    dense_lr: float
    dense_weight_decay: float
    dense_warmup_epochs: float
    dense_label_smoothing: float
    dense_crop_pad: int
    num_samples: list[int]
    keep_ratios: list[float]
    n_blocks: int | None
    min_block: int
    max_block: int
    trial_drop_ratio: float
    rank_metric: str
    trial_steps: int
    finetune_steps: int
    batch_size: int
    lr: float
    weight_decay: float
    update_settings: list[str]
    mlp_inits: list[str]
    run_block_drop: bool
    drop_blocks: list[int]
    adaptor_steps: int
    adaptor_lr: float
    recover_images: int | None
    inv_images: int
    inv_steps: int
    inv_lr: float
    inv_tv: float
    inv_l2: float
    inv_beta: float
    inv_jitter: int | None
    latency_batch: int
    latency_forwards: int
    latency_probe_blocks: list[int]
    claims: list[str]
    workers: int

    def validate(self) -> None:
        self.check_choices("update_settings", dcvit.UPDATE_SETTINGS)
        self.check_choices("mlp_inits", dcvit.MLP_INITS)
        self.check_choices("claims", CLAIM_IDS)
        self.check_choices("rank_metric", RANK_METRICS)
        for key in ("seeds", "num_samples", "drop_blocks", "latency_probe_blocks"):
            if len(set(getattr(self, key))) != len(getattr(self, key)):
                raise ConfigError(f"config key {key!r} of notebook {self.NOTEBOOK} repeats a value")
        for key in ("finetune_per_class", "test_per_class", "heldout_per_class", "dense_epochs",
                    "dense_batch_size", "num_samples", "trial_steps", "finetune_steps", "batch_size",
                    "adaptor_steps", "inv_images", "inv_steps", "latency_batch", "latency_forwards",
                    "drop_blocks", "latency_probe_blocks"):
            self.check_range(key, low=1)
        for key in ("dense_lr", "lr", "adaptor_lr", "inv_lr"):
            self.check_range(key, low=0, low_open=True)
        if self.latency_probe_blocks:
            self.check_range("latency_forwards", low=2)  # claim 6b's interval is over the rounds
        self.check_range("trial_drop_ratio", 0, 1, high_open=True)
        self.check_range("dense_crop_pad", low=0)
        self.check_range("workers", low=0)
        self.check_range("keep_ratios", 0, 1, low_open=True, high_open=True)
        if self.recover_images is not None:
            self.check_range("recover_images", low=1)
        if not self.seeds or not self.num_samples or not self.keep_ratios:
            raise ConfigError("seeds, num_samples and keep_ratios each need at least one value")
        if MAIN[0] not in self.update_settings or MAIN[1] not in self.mlp_inits:
            raise ConfigError(f"update_settings must include {MAIN[0]!r} and mlp_inits {MAIN[1]!r}: "
                              "the paper's defaults rank the blocks every variant compresses")
        needs = {"1": self.run_block_drop, "2": self.run_block_drop,
                 "4": len(self.update_settings) > 1,
                 "5": self.run_block_drop and len(self.num_samples) > 1,
                 "6": bool(self.latency_probe_blocks) and self.run_block_drop}
        what = {"1": "run_block_drop", "2": "run_block_drop", "4": "update_settings [before, all]",
                "5": "run_block_drop and two num_samples", "6": "latency_probe_blocks and run_block_drop"}
        for claim in self.claims:
            if not needs.get(claim, True):
                raise ConfigError(f"claim {claim} needs {what[claim]} in the config of {self.NOTEBOOK}")
        plan(self)  # budgets, candidate blocks and drops against the model's real costs


@functools.cache
def model_costs(name: str, resolution: int, num_classes: int | None = None) -> dcvit.BlockCosts:
    """Stage A's block costs of ``name`` at ``resolution`` with a ``num_classes``-way head
    (default: the upstream one), counted from the architecture alone (built on the ``meta``
    device: no weights, no forward pass)."""
    with torch.device("meta"):
        model = models.upstream_model(name, resolution, pretrained=False)
        if num_classes is not None:
            model.reset_classifier(num_classes)
    return dcvit.architecture_costs(model)


@dataclass(frozen=True)
class Plan:
    """What the config asks of the model, checked against its costs before any training."""

    costs: dcvit.BlockCosts
    candidates: list[int]
    structures: list[dcvit.Structure]  # one per keep ratio, in config order
    trial_kept: int

    @property
    def chains(self) -> dict[int, int]:
        """Kept units -> blocks to compress: one progressive chain serves every budget that
        shares its kept units (the chain's k-th model has the structure of n = k)."""
        out: dict[int, int] = {}
        for s in self.structures:
            out[s.kept_units] = max(out.get(s.kept_units, 0), s.n_blocks)
        return out


def plan(cfg: Config, costs: dcvit.BlockCosts | None = None) -> Plan:
    """Stage A for every budget of ``cfg``; raises ConfigError for an impossible request.

    ``costs`` default to those of the architecture with its upstream (ImageNet) head, which
    is enough to check a config: the head is under 0.3 % of DeiT-Tiny's MACs. The run plans
    with the costs of the fine-tuned model itself.
    """
    costs = model_costs(cfg.model, cfg.resolution) if costs is None else costs
    candidates = dcvit.candidate_blocks(costs.depth, cfg.min_block, cfg.max_block)
    structures = [dcvit.plan_structure(costs, r, n_blocks=cfg.n_blocks, max_blocks=len(candidates))
                  for r in cfg.keep_ratios]
    for k in cfg.drop_blocks:
        if k > len(candidates):
            raise ConfigError(f"drop_blocks entry {k} must lie in 1..{len(candidates)} "
                              f"(the candidate blocks of the {costs.depth}-block model)")
    for k in cfg.latency_probe_blocks:
        if k > len(candidates):
            raise ConfigError(f"latency_probe_blocks entry {k} must lie in 1..{len(candidates)}")
    trial_kept = round(costs.hidden * (1 - cfg.trial_drop_ratio))
    return Plan(costs, candidates, structures, trial_kept)


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Splits:
    """The disjoint image sets of the study (``ids`` index the dataset's full splits)."""

    finetune: data.ImageSet  # training split: the dense fine-tune
    fewshot_pool: data.ImageSet  # training split, the rest: every few-shot set is drawn here
    test: data.ImageSet  # test split: accuracy
    heldout: data.ImageSet  # test split, disjoint: the real metric set of the ranking check


def make_splits(train_set: data.ImageSet, test_set: data.ImageSet, finetune_per_class: int,
                test_per_class: int, heldout_per_class: int, seed: int) -> Splits:
    """Cut the training split into fine-tune / few-shot pool and the test split into test /
    held-out, per class and seeded (:func:`compstudy.data.partition`)."""
    fit_parts = data.partition(train_set, {"finetune": finetune_per_class, "fewshot_pool": -1}, seed)
    eval_parts = data.partition(test_set, {"test": test_per_class, "heldout": heldout_per_class}, seed)
    return Splits(fit_parts["finetune"], fit_parts["fewshot_pool"], eval_parts["test"],
                  eval_parts["heldout"])


def few_shot_set(pool: data.ImageSet, num_samples: int, seed: int) -> data.ImageSet:
    """``num_samples`` images of the pool: ⌈N/K⌉ per class, then a seeded N of those.

    With one seed the sets of increasing N are nested (:func:`compstudy.data.few_shot_indices`).
    """
    per_class = math.ceil(num_samples / len(pool.classes))
    idx = data.few_shot_indices(pool.labels, per_class, seed, pool.classes, f"the {pool.name} few-shot pool")
    if len(idx) > num_samples:
        g = torch.Generator().manual_seed(seed)
        idx = idx[torch.randperm(len(idx), generator=g)[:num_samples]].sort().values
    return pool.subset(idx)


def check_disjoint(splits: Splits, few_shot: list[data.ImageSet]) -> None:
    """Raise unless fine-tune, few-shot and test images share no image (held-out neither)."""
    train_side = {"fine-tune": splits.finetune.ids, **{f"few-shot {i}": f.ids for i, f in enumerate(few_shot)}}
    for name, ids in train_side.items():
        if name != "fine-tune" and np.intersect1d(ids.numpy(), splits.finetune.ids.numpy()).size:
            raise AssertionError(f"{name} images overlap the fine-tuning images")
    if np.intersect1d(splits.test.ids.numpy(), splits.heldout.ids.numpy()).size:
        raise AssertionError("test and held-out images overlap")


# ----------------------------------------------------------------------------- the dense model


def dense_recipe(cfg: Config) -> dict:
    """Everything that determines the dense model: the key of its artifact."""
    return {"model": cfg.model, "resolution": cfg.resolution, "dataset": cfg.dataset,
            "finetune_per_class": cfg.finetune_per_class, "split_seed": cfg.seed,
            "epochs": cfg.dense_epochs, "batch_size": cfg.dense_batch_size, "lr": cfg.dense_lr,
            "weight_decay": cfg.dense_weight_decay, "warmup_epochs": cfg.dense_warmup_epochs,
            "label_smoothing": cfg.dense_label_smoothing, "optimizer": "adamw",
            "augment": "random crop after zero padding, horizontal flip", "crop_pad": cfg.dense_crop_pad,
            "seed": cfg.seed}


def _empty_model(cfg: Config, num_classes: int) -> torch.nn.Module:
    model = models.upstream_model(cfg.model, cfg.resolution)
    model.reset_classifier(num_classes)
    return model


def dense_model(cfg: Config, splits: Splits, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """The fine-tuned model to compress, from the cache or trained now; and its history, CPU
    seconds and ``id`` (its artifact key: recipe and code), which keys everything made from it."""
    num_classes = len(splits.finetune.classes)

    def build() -> dict:
        start = time.process_time()
        seed_everything(cfg.seed)
        model = _empty_model(cfg, num_classes)
        loader = data.make_loader(splits.finetune, cfg.dense_batch_size, shuffle=True, seed=cfg.seed,
                                  augment=True, pad=cfg.dense_crop_pad)
        settings = train.FitSettings(cfg.dense_epochs, cfg.dense_lr, "adamw", cfg.dense_weight_decay,
                                     cfg.dense_label_smoothing, warmup_epochs=cfg.dense_warmup_epochs)
        history = train.fit(model, loader, settings, desc="dense fine-tune", progress=progress)
        return {"state": model.state_dict(), "history": history.to_dict("list"),
                "cpu_seconds": time.process_time() - start}

    code = [train, data, models]
    payload = cache.cached("dcvit_dense", dense_recipe(cfg), code, build)
    model = _empty_model(cfg, num_classes)
    model.load_state_dict(payload["state"])
    return model.eval(), {"history": pd.DataFrame(payload["history"]), "cpu_seconds": payload["cpu_seconds"],
                          "id": cache.artifact_path("dcvit_dense", dense_recipe(cfg), code).stem}


# ----------------------------------------------------------------------------- shared artifacts


@dataclass
class Context:
    """What every unit of one run reads: the dense model, the data and the shared artifacts."""

    cfg: Config
    plan: Plan
    splits: Splits
    teacher: torch.nn.Module
    dense_id: str
    test_x: torch.Tensor
    test_y: torch.Tensor
    heldout_x: torch.Tensor
    heldout_logits: torch.Tensor
    progress: bool

    def few_shot(self, n: int, seed: int) -> data.ImageSet:
        return few_shot_set(self.splits.fewshot_pool, n, seed)

    def key(self, **inputs) -> dict:
        """The cache key of an artifact made from the dense model: it, the workers' thread count
        (the numbers depend on it) and ``inputs``."""
        return {"dense": self.dense_id, "threads": pool.THREADS, **inputs}

    def ids(self, images: data.ImageSet) -> str:
        return cache.digest(images.ids.tolist())

    def inversion(self, seed: int) -> dict:
        """Stage B for ``seed``: once per (model, seed), shared by every N and ablation."""
        cfg = self.cfg
        inputs = self.key(seed=seed, images=cfg.inv_images, steps=cfg.inv_steps, lr=cfg.inv_lr, tv=cfg.inv_tv,
                          l2=cfg.inv_l2, beta=cfg.inv_beta, jitter=cfg.inv_jitter)

        def build() -> dict:
            start = time.process_time()
            targets = inversion.inversion_targets(cfg.inv_images, self.teacher.num_classes, seed)
            images, history = inversion.invert(self.teacher, targets, cfg.inv_steps, cfg.inv_lr, cfg.inv_tv,
                                               cfg.inv_l2, cfg.inv_beta, cfg.inv_jitter, seed=seed,
                                               progress=self.progress)
            return {"images": images, "targets": targets, "logits": dcvit.logits(self.teacher, images),
                    "history": history.to_dict("list"), "cpu_seconds": time.process_time() - start}

        return cache.cached("dcvit_inversion", inputs, [inversion, dcvit], build)

    def targets(self, few: data.ImageSet) -> dict:
        """The teacher's final-norm tokens (and of the mirrored images) and logits on a few-shot
        set: once per (model, few-shot set), shared by trials, chains, drops and ablations."""
        return cache.cached("dcvit_targets", self.key(images=self.ids(few)), [dcvit],
                            lambda: dcvit.teacher_targets(self.teacher, data.to_float(few.images)))

    def mimic(self, steps: int, update: str) -> dcvit.MimicSettings:
        return dcvit.MimicSettings(steps, self.cfg.batch_size, self.cfg.lr, self.cfg.weight_decay, update)

    def evaluate(self, model: torch.nn.Module) -> dict:
        """Accuracy on the test images, MACs (and the fraction kept) and parameters."""
        macs = dcvit.model_macs(model)
        return {"accuracy": dcvit.accuracy(model, self.test_x, self.test_y), "macs": macs,
                "macs_kept": macs / self.plan.costs.total, "params": metrics.count_parameters(model)}


def _unit(kind: str, method: str, n: int, seed: int, update: str = NONE, init: str = NONE,
          kept_units: int = 0, k: int = 0, block: int = -1) -> dict:
    return {"kind": kind, "method": method, "update": update, "init": init, "num_samples": n,
            "seed": seed, "kept_units": kept_units, "k": k, "block": block}


def _timed(build: Callable[[], list[dict]]) -> Callable[[], list[dict]]:
    """``build`` whose rows carry the CPU seconds it took (stored with the artifact)."""
    def wrapped() -> list[dict]:
        start = time.process_time()
        rows = build()
        seconds = (time.process_time() - start) / max(len(rows), 1)
        return [r | {"cpu_seconds": seconds} for r in rows]
    return wrapped


def trial_rows(ctx: Context, n: int, seed: int, init: str) -> list[dict]:
    """Stage C for one few-shot set: a row per candidate block (paper's default update)."""
    cfg, few = ctx.cfg, ctx.few_shot(n, seed)
    inv = ctx.inversion(seed)
    settings = ctx.mimic(cfg.trial_steps, MAIN[0])
    inputs = ctx.key(images=ctx.ids(few), inversion=cache.digest(inv["images"].tolist()),
                     heldout=ctx.ids(ctx.splits.heldout), blocks=ctx.plan.candidates,
                     kept=ctx.plan.trial_kept, settings=settings, init=init, seed=seed)

    def build() -> list[dict]:
        frame = dcvit.block_trials(ctx.teacher, ctx.plan.candidates, ctx.plan.trial_kept,
                                   data.to_float(few.images), ctx.targets(few), settings,
                                   {"synthetic": (inv["images"], inv["logits"]),
                                    "real": (ctx.heldout_x, ctx.heldout_logits)},
                                   init=init, seed=seed, progress=ctx.progress)
        return frame.to_dict("records")

    rows = cache.cached("dcvit_trials", inputs, [dcvit], _timed(build))
    return [_unit("trial", "dcvit", n, seed, MAIN[0], init, ctx.plan.trial_kept, 1, int(r["block"])) | r
            for r in rows]


def ranking(trials: pd.DataFrame, n: int, seed: int, init: str, metric: str = "synthetic") -> list[int]:
    """Stage C's order for one few-shot set: blocks by ascending KL on the ``metric`` set (the
    paper: the synthetic set; ``real``: the real held-out images, a sensitivity check)."""
    mine = trials[(trials.num_samples == n) & (trials.seed == seed) & (trials["init"] == init)]
    return dcvit.rank_blocks(mine, f"kl_{metric}")


def chain_rows(ctx: Context, n: int, seed: int, update: str, init: str, kept: int, length: int,
               order: list[int]) -> list[dict]:
    """Stage D: one progressive chain, a row per step k (k blocks compressed), evaluated."""
    cfg, few = ctx.cfg, ctx.few_shot(n, seed)
    settings = ctx.mimic(cfg.finetune_steps, update)
    inputs = ctx.key(images=ctx.ids(few), test=ctx.ids(ctx.splits.test), order=order[:length], kept=kept,
                     settings=settings, init=init, seed=seed)

    def build() -> list[dict]:
        rows = []

        def record(k: int, model: torch.nn.Module) -> None:
            rows.append({"compressed": " ".join(map(str, sorted(dcvit.is_compressed(model)))),
                         "block_compressed": order[k - 1]} | ctx.evaluate(model))

        dcvit.progressive_compress(ctx.teacher, order, length, kept, data.to_float(few.images),
                                   ctx.targets(few), settings, init=init, seed=seed, after_step=record,
                                   progress=ctx.progress)
        return rows

    rows = cache.cached("dcvit_chain", inputs, [dcvit], _timed(build))
    return [_unit("dcvit", "dcvit", n, seed, update, init, kept, k) | r for k, r in enumerate(rows, start=1)]


def recover_rows(ctx: Context, n: int, seed: int) -> list[dict]:
    """PRACTISE's recoverability of dropping each candidate block."""
    cfg, few = ctx.cfg, ctx.few_shot(n, seed)
    costs = ctx.plan.costs  # a dropped block takes its attention (with norm1), norm2 and MLP
    reduction = {b: (costs.block + costs.norm2) / costs.total for b in ctx.plan.candidates}
    inputs = ctx.key(images=ctx.ids(few), blocks=ctx.plan.candidates, steps=cfg.adaptor_steps,
                     lr=cfg.adaptor_lr, batch=cfg.batch_size, metric_images=cfg.recover_images,
                     reduction=reduction, seed=seed)

    def build() -> list[dict]:
        frame = practise.recoverability_scores(
            ctx.teacher, ctx.plan.candidates, data.to_float(few.images), ctx.targets(few), cfg.adaptor_steps,
            reduction, cfg.adaptor_lr, cfg.batch_size, cfg.recover_images, seed, ctx.progress)
        return frame.to_dict("records")

    rows = cache.cached("dcvit_recover", inputs, [practise], _timed(build))
    return [_unit("recover", "practise", n, seed, block=int(r["block"])) | r for r in rows]


def drop_row(ctx: Context, n: int, seed: int, k: int, scores: pd.DataFrame) -> dict:
    """k whole blocks dropped (lowest scores), fine-tuned by mimicking, evaluated."""
    cfg, few = ctx.cfg, ctx.few_shot(n, seed)
    chosen = practise.blocks_to_drop(scores, k)
    settings = ctx.mimic(cfg.finetune_steps, MAIN[0])
    inputs = ctx.key(images=ctx.ids(few), test=ctx.ids(ctx.splits.test), blocks=chosen, settings=settings,
                     seed=seed)

    def build() -> list[dict]:
        model = practise.drop_blocks(ctx.teacher, chosen)
        dcvit.mimic_finetune(model, data.to_float(few.images), ctx.targets(few), settings,
                             last_changed=max(chosen), seed=seed * 100 + k)
        return [{"compressed": " ".join(map(str, chosen))} | ctx.evaluate(model)]

    row = cache.cached("dcvit_drop", inputs, [practise], _timed(build))[0]
    return _unit("drop", "practise", n, seed, MAIN[0], k=k) | row


def latency_units(ctx: Context) -> list[dict]:
    """Every structure the run compares, and the attention-only / MLP-only probes."""
    cfg = ctx.cfg
    units = [_unit("latency", "full", 0, -1)]
    units += [_unit("latency", "dcvit", 0, -1, kept_units=kept, k=k)
              for kept, length in ctx.plan.chains.items() for k in range(1, length + 1)]
    units += [_unit("latency", "drop", 0, -1, k=k) for k in cfg.drop_blocks]
    units += [_unit("latency", kind, 0, -1, k=k) for kind in ("no_attention", "no_mlp")
              for k in cfg.latency_probe_blocks]
    return units


def latency_rows(ctx: Context, units: list[dict]) -> list[dict]:
    """Batch latency (the config's threads and batch) and MACs of each structure in ``units``,
    the structures timed together, one forward each in turn (``metrics.measure_latencies``).
    ``latency_kept`` is the mean over rounds of the structure's time over the full model's in
    the same round, with its 95 % CI (``latency_kept_low``, ``latency_kept_high``)."""
    probes = []
    for unit in units:
        kind = unit["method"]
        probes.append(ctx.teacher if kind == "full" else dcvit.structural_model(
            ctx.teacher, ctx.plan.candidates[:unit["k"]], kind, unit["kept_units"]))
    full = next(i for i, unit in enumerate(units) if unit["method"] == "full")
    timings = metrics.measure_latencies(dict(enumerate(probes)), ctx.cfg.latency_batch,
                                        dcvit.input_size(ctx.teacher), ctx.cfg.latency_forwards, ctx.progress,
                                        reference=full)
    kept = {"ratio": "latency_kept", "ratio_low": "latency_kept_low", "ratio_high": "latency_kept_high"}
    return [unit | {"macs_kept": dcvit.model_macs(probe) / ctx.plan.costs.total}
            | {kept.get(key, key): value for key, value in timings[i].items()}
            for i, (unit, probe) in enumerate(zip(units, probes))]


def few_shot_steps(ctx: Context, n: int, s: int, add: Callable[[dict, Callable[[], list[dict]]], None],
                   typed: Callable[[str], pd.DataFrame]) -> None:
    """Stages C and D for the few-shot set of size ``n`` and seed ``s``, and the block-dropping
    baseline: every unit through ``add(unit, compute)``; ``typed(kind)`` reads the rows of a
    kind back (the ranking needs the trials, the drops the recoverability scores)."""
    cfg, the_plan = ctx.cfg, ctx.plan
    for init in cfg.mlp_inits:
        add(_unit("trial", "dcvit", n, s, MAIN[0], init, the_plan.trial_kept, 1, the_plan.candidates[0]),
            lambda: trial_rows(ctx, n, s, init))
    order = ranking(typed("trial"), n, s, MAIN[1], cfg.rank_metric)  # every variant compresses one ranking
    for update in cfg.update_settings:
        for init in cfg.mlp_inits:
            for kept, length in the_plan.chains.items():
                add(_unit("dcvit", "dcvit", n, s, update, init, kept, 1),
                    lambda: chain_rows(ctx, n, s, update, init, kept, length, order))
    if cfg.run_block_drop:
        add(_unit("recover", "practise", n, s, block=the_plan.candidates[0]), lambda: recover_rows(ctx, n, s))
        scores = typed("recover")
        scores = scores[(scores.num_samples == n) & (scores.seed == s)]
        for k in cfg.drop_blocks:
            add(_unit("drop", "practise", n, s, MAIN[0], k=k), lambda: [drop_row(ctx, n, s, k, scores)])


def few_shot_runs(cfg: Config) -> list[tuple[int, int]]:
    """Every (N, seed) of the run, N first."""
    return [(n, s) for n in cfg.num_samples for s in cfg.seeds]


def _all_steps(ctx: Context, few_shot_run: tuple[int, int]) -> None:
    rows: list[dict] = []
    few_shot_steps(ctx, *few_shot_run, add=lambda unit, compute: rows.extend(compute()),
                   typed=lambda kind: _typed(pd.DataFrame(rows), kind))


def fill_caches(ctx: Context, progress: bool) -> None:
    """Run every (N, seed) that misses a cached step in ``cfg.workers`` one-thread processes
    (:func:`compstudy.pool.results`). The first N of a seed computes the seed's inversion, so
    the other Ns of that seed wait for it. The notebook's process then reads the caches and
    times the structures alone."""
    cfg = ctx.cfg
    todo = []
    for few_shot_run in few_shot_runs(cfg):
        try:
            with cache.lookup_only():
                _all_steps(ctx, few_shot_run)
        except cache.Missing:
            todo.append(few_shot_run)
    first = cfg.num_samples[0]
    for _ in pool.results(_all_steps, todo, start=_start_worker, start_args=(cfg,), workers=cfg.workers,
                          cost=lambda run: 2 if run[0] == first else 1, desc="DC-ViT few-shot sets",
                          progress=progress, provides=lambda run: run[1] if run[0] == first else None,
                          needs=lambda run: None if run[0] == first else run[1]):
        pass


def _start_worker(cfg: Config) -> Context:
    """A worker's own context, computed on ``pool.THREADS`` threads (the held-out teacher
    logits among it), so that its numbers do not depend on the number of workers."""
    seed_everything(cfg.seed, threads=pool.THREADS)
    return make_context(cfg, load_data(cfg), progress=False)[0]


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Results:
    """Tidy frames of one run of notebook 04."""

    splits: pd.DataFrame  # role, images, images per class
    classes: tuple[str, ...]
    dense: pd.DataFrame  # one row: accuracy, test images, fine-tune images, epochs, cpu seconds
    dense_history: pd.DataFrame  # epoch, split, metric, value
    costs: dcvit.BlockCosts
    structures: pd.DataFrame  # stage A per budget
    example: pd.DataFrame  # stage A on the paper's ViT-B/16 example, both MACs conventions
    inversion: pd.DataFrame  # per seed: CE of noise and of the inverted images, hit rate
    inverted: dict  # first seed's artifact: images, targets, history
    trials: pd.DataFrame
    rankings: pd.DataFrame  # per (N, seed): rho(synthetic, real), orders
    chains: pd.DataFrame  # DC-ViT models, every variant
    accuracy: pd.DataFrame  # mean accuracy and 95 % CI over seeds per method, N and level
    recover: pd.DataFrame
    drops: pd.DataFrame
    placement: pd.DataFrame  # per (N, seed): mean index of the blocks each method removes first
    equal_macs: pd.DataFrame  # DC-ViT interpolated at block dropping's MACs, paired by (N, seed)
    update_pairs: pd.DataFrame  # before − all per (N, seed, k), when the run has both
    coverage: pd.DataFrame  # reachable MACs for a grid of budgets
    latency: pd.DataFrame
    claims: pd.DataFrame  # claims.csv of this run
    cpu: pd.DataFrame  # CPU seconds per kind of unit


def worked_example() -> pd.DataFrame:
    """Stage A on ViT-B/16 at the README's keep ratio 0.751734186, with both MACs counts."""
    rows = []
    for convention in dcvit.COST_CONVENTIONS:
        vit_b = dcvit.analytic_vit_costs(convention=convention)
        s = dcvit.plan_structure(vit_b, 0.751734186)
        rows.append({"convention": convention, "GMACs": vit_b.total / 1e9,
                     "keep ratio of dropping 3 blocks": 1 - 3 * (vit_b.block + vit_b.norm2) / vit_b.total,
                     "R/(A+P)": s.removed_target / vit_b.block, "n": s.n_blocks, "rd": s.drop_ratio,
                     "r'": s.mlp_ratio, "kept units": s.kept_units})
    return pd.DataFrame(rows).set_index("convention")


def make_context(cfg: Config, splits: Splits, progress: bool) -> tuple[Context, dict]:
    """The dense model (cached, or trained now), the plan and the data every unit reads; and
    the dense model's history, CPU seconds and id."""
    teacher, dense_info = dense_model(cfg, splits, progress)
    heldout_x = data.to_float(splits.heldout.images)
    ctx = Context(cfg, plan(cfg, dcvit.measure_costs(teacher)), splits, teacher, dense_info["id"],
                  data.to_float(splits.test.images), splits.test.labels, heldout_x,
                  dcvit.logits(teacher, heldout_x), progress)
    return ctx, dense_info


def load_data(cfg: Config) -> Splits:
    train_set = data.load_dataset(cfg.dataset, "train")
    test_set = data.load_dataset(cfg.dataset, "test")
    return make_splits(train_set, test_set, cfg.finetune_per_class, cfg.test_per_class,
                       cfg.heldout_per_class, cfg.seed)


def _typed(frame: pd.DataFrame, kind: str, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    out = frame[frame.kind == kind].dropna(axis=1, how="all").drop(columns=["kind", *drop], errors="ignore")
    ints = [c for c in ("num_samples", "seed", "kept_units", "k", "block", "macs", "params") if c in out]
    return out.astype({c: int for c in ints}).reset_index(drop=True)


def run(cfg: Config, progress: bool = True) -> Results:
    """Everything notebook 04 shows, as tidy frames; units resume from ``runs.csv``."""
    seed_everything(cfg.seed)
    splits = load_data(cfg)
    combos = few_shot_runs(cfg)
    few_sets = [few_shot_set(splits.fewshot_pool, n, s) for n, s in combos]
    check_disjoint(splits, few_sets)
    ctx, dense_info = make_context(cfg, splits, progress)
    teacher, the_plan = ctx.teacher, ctx.plan
    dense = pd.DataFrame([{"model": cfg.model, "resolution": cfg.resolution, "dataset": cfg.dataset,
                           "finetune_images": len(splits.finetune), "epochs": cfg.dense_epochs,
                           "test_images": len(splits.test), "heldout_images": len(splits.heldout),
                           "cpu_seconds": dense_info["cpu_seconds"]} | ctx.evaluate(teacher)])

    fill_caches(ctx, progress)
    store = RunStore(cfg.results_dir, key=KEY)
    units = len(combos) * (len(cfg.mlp_inits) * (1 + len(cfg.update_settings) * len(the_plan.chains))
                           + (1 + len(cfg.drop_blocks) if cfg.run_block_drop else 0))
    bar = train.progress_bar(units, "units of 04_dcvit", progress)

    def add(unit: dict, compute: Callable[[], list[dict]]) -> None:
        if list(store.pending([unit])):
            store.add_many(compute())
        bar.update()

    for n, s in combos:
        few_shot_steps(ctx, n, s, add, lambda kind: _typed(store.frame, kind))
    bar.close()
    if cfg.latency_probe_blocks:
        units = latency_units(ctx)
        if next(store.pending(units), None):
            store.add_many(store.pending(latency_rows(ctx, units)))

    runs = store.frame
    chains = _typed(runs, "dcvit")
    trials = _typed(runs, "trial")
    drops = _typed(runs, "drop") if cfg.run_block_drop else pd.DataFrame()
    recover = _typed(runs, "recover") if cfg.run_block_drop else pd.DataFrame()
    latency = _typed(runs, "latency", drop=("update", "init", "num_samples", "seed", "block")) \
        if cfg.latency_probe_blocks else pd.DataFrame()
    structures = structure_table(the_plan)
    chains = label_budgets(chains, structures)
    results = Results(
        splits=split_table(splits, few_sets), classes=splits.test.classes, dense=dense, dense_history=dense_info["history"],
        costs=the_plan.costs, structures=structures, example=worked_example(),
        inversion=inversion_table(ctx), inverted=ctx.inversion(cfg.seeds[0]),
        trials=trials, rankings=ranking_table(trials), chains=chains,
        accuracy=accuracy_table(chains, drops), recover=recover, drops=drops,
        placement=placement(chains, recover, max(cfg.drop_blocks)) if cfg.run_block_drop else pd.DataFrame(),
        equal_macs=equal_macs(chains, drops, float(dense.accuracy.iloc[0])) if cfg.run_block_drop else pd.DataFrame(),
        update_pairs=update_pairs(chains), coverage=coverage(the_plan, cfg.drop_blocks),
        latency=latency_table(latency), claims=pd.DataFrame(), cpu=cpu_table(runs, dense_info))
    decided = decide(cfg, results)
    path = claims.write_claims(cfg.results_dir, decided)
    return Results(**{**results.__dict__, "claims": claims.read_claims(path)})


# ----------------------------------------------------------------------------- tables


def split_table(splits: Splits, few_sets: list[data.ImageSet]) -> pd.DataFrame:
    """Size of each role's image set (few-shot sets: the largest drawn)."""
    largest = max(few_sets, key=len)
    rows = [("fine-tune (train split)", splits.finetune), ("few-shot pool (train split)", splits.fewshot_pool),
            ("largest few-shot set", largest), ("test (test split)", splits.test),
            ("real held-out (test split)", splits.heldout)]
    return pd.DataFrame([{"role": role, "images": len(s), "per class": int(s.class_counts().min())}
                         for role, s in rows]).set_index("role")


def structure_table(the_plan: Plan) -> pd.DataFrame:
    """Stage A for each budget: n, rd, kept units and the MACs kept it predicts."""
    total = the_plan.costs.total
    return pd.DataFrame([{"keep_ratio": s.keep_ratio, "n_blocks": s.n_blocks, "drop_ratio": s.drop_ratio,
                          "kept_units": s.kept_units, "mlp_ratio": s.mlp_ratio,
                          "predicted_kept": s.predicted_macs / total} for s in the_plan.structures])


def label_budgets(chains: pd.DataFrame, structures: pd.DataFrame) -> pd.DataFrame:
    """Each chain model with the budget (keep ratio) whose structure it has, NaN for others."""
    if chains.empty:
        return chains
    budgets = structures.rename(columns={"n_blocks": "k"})[["kept_units", "k", "keep_ratio"]]
    budgets = budgets.drop_duplicates(["kept_units", "k"])
    return chains.merge(budgets, on=["kept_units", "k"], how="left")


def inversion_table(ctx: Context) -> pd.DataFrame:
    """Per seed: the teacher's cross-entropy on noise and on the inverted images, and how
    many inverted images it assigns to their target class."""
    rows = []
    for seed in ctx.cfg.seeds:
        inv = ctx.inversion(seed)
        side = dcvit.input_size(ctx.teacher)[-1]
        noise = torch.randn(len(inv["targets"]), 3, side, side, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ce_noise = torch.nn.functional.cross_entropy(ctx.teacher(noise), inv["targets"]).item()
        probs = inv["logits"].softmax(1)
        rows.append({"seed": seed, "images": len(inv["targets"]), "ce_noise": ce_noise,
                     "ce_inverted": torch.nn.functional.cross_entropy(inv["logits"], inv["targets"]).item(),
                     "hit_rate": float((probs.argmax(1) == inv["targets"]).float().mean()),
                     "max_prob": float(probs.max(1).values.mean()), "cpu_seconds": inv["cpu_seconds"]})
    return pd.DataFrame(rows)


def ranking_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (MLP init, N, seed): Spearman ρ between KL on the synthetic and on the real held-out
    set over the candidate blocks, both orders, and the overlap of their first three blocks."""
    rows = []
    for (init, n, seed), group in trials.groupby(["init", "num_samples", "seed"]):
        synthetic, real = dcvit.rank_blocks(group, "kl_synthetic"), dcvit.rank_blocks(group, "kl_real")
        rows.append({"init": init, "num_samples": n, "seed": seed,
                     "rho": float(stats.spearmanr(group.kl_synthetic, group.kl_real).statistic),
                     "order_synthetic": " ".join(map(str, synthetic)), "order_real": " ".join(map(str, real)),
                     "top3_overlap": len(set(synthetic[:3]) & set(real[:3]))})
    return pd.DataFrame(rows)


def main_chains(chains: pd.DataFrame) -> pd.DataFrame:
    """The chains of the paper's default update setting and MLP init."""
    return chains[(chains["update"] == MAIN[0]) & (chains["init"] == MAIN[1])]


def equal_macs(chains: pd.DataFrame, drops: pd.DataFrame, dense_accuracy: float) -> pd.DataFrame:
    """DC-ViT's accuracy at each block-dropping model's MACs, paired by (N, seed).

    Each (N, seed) curve is the dense model (all MACs) and the DC-ViT models of the budgets,
    interpolated linearly in MACs kept; NaN outside the curve's range.
    """
    curves = main_chains(chains).dropna(subset=["keep_ratio"])
    rows = []
    for d in drops.itertuples():
        curve = curves[(curves.num_samples == d.num_samples) & (curves.seed == d.seed)]
        x = np.r_[curve.macs_kept.to_numpy(), 1.0]
        y = np.r_[curve.accuracy.to_numpy(), dense_accuracy]
        order = np.argsort(x)
        inside = x.min() <= d.macs_kept <= x.max()
        dc = float(np.interp(d.macs_kept, x[order], y[order])) if inside else float("nan")
        rows.append({"num_samples": d.num_samples, "seed": d.seed, "k": d.k, "macs_kept": d.macs_kept,
                     "block_drop": d.accuracy, "dcvit": dc, "difference": dc - d.accuracy})
    return pd.DataFrame(rows)


def placement(chains: pd.DataFrame, recover: pd.DataFrame, k: int) -> pd.DataFrame:
    """Where each method removes computation, per (N, seed): the mean index of the first ``k``
    blocks DC-ViT compresses (its ranking, main variant) and of the ``k`` blocks block dropping
    removes (lowest PRACTISE scores)."""
    rows = []
    for (n, seed), chain in main_chains(chains).groupby(["num_samples", "seed"]):
        scores = recover[(recover.num_samples == n) & (recover.seed == seed)]
        first = chain.sort_values("k").block_compressed.to_numpy()[:k]
        rows.append({"num_samples": n, "seed": seed, "blocks": k, "dcvit": float(np.mean(first)),
                     "block_drop": float(np.mean(practise.blocks_to_drop(scores, k)))})
    return pd.DataFrame(rows)

def accuracy_table(chains: pd.DataFrame, drops: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy over seeds with its 95 % t-interval, per method, N and level (the DC-ViT
    budgets of the main variant, the numbers of blocks dropped), in percentage points."""
    parts = [main_chains(chains).dropna(subset=["keep_ratio"]).assign(method="DC-ViT")]
    if len(drops):
        parts.append(drops.assign(method="block drop"))
    rows = []
    for (method, n, k), group in pd.concat(parts).groupby(["method", "num_samples", "k"]):
        acc = POINTS * group.accuracy.to_numpy()
        interval = claims.t_interval(acc) if len(acc) > 1 else None
        rows.append({"method": method, "num_samples": n, "k": k, "macs_kept": group.macs_kept.mean(),
                     "accuracy": acc.mean(), "ci_low": interval.ci_low if interval else float("nan"),
                     "ci_high": interval.ci_high if interval else float("nan"), "seeds": len(acc)})
    return pd.DataFrame(rows).set_index(["method", "num_samples", "k"])


def update_pairs(chains: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of ``before`` − ``all`` for each chain model (same N, seed, init, step)."""
    if chains.empty or chains["update"].nunique() < 2:
        return pd.DataFrame()
    wide = chains.pivot_table(index=["init", "num_samples", "seed", "kept_units", "k"], columns="update",
                              values="accuracy").dropna().reset_index()
    return wide.assign(difference=wide["before"] - wide["all"])


def coverage(the_plan: Plan, drop_blocks: list[int], points: int = 50) -> pd.DataFrame:
    """For a grid of MACs budgets between the deepest drop and the full model: the MACs that
    each method must give up beyond the budget to meet it (fractions of the model's MACs).

    DC-ViT's structure comes from stage A; block dropping must drop the fewest whole blocks
    whose removal meets the budget (each block, norms included, is the same share).
    """
    costs = the_plan.costs
    share = (costs.block + costs.norm2) / costs.total
    lowest = 1 - max(drop_blocks) * share
    rows = []
    for target in np.linspace(lowest, 1, points + 2)[1:-1]:
        s = dcvit.plan_structure(costs, float(target), max_blocks=len(the_plan.candidates))
        dropped = math.ceil((1 - target) / share - 1e-12)
        rows.append({"budget": float(target), "dcvit_kept": s.predicted_macs / costs.total,
                     "drop_blocks": dropped, "drop_kept": 1 - dropped * share})
    frame = pd.DataFrame(rows)
    return frame.assign(dcvit_excess=frame.budget - frame.dcvit_kept, drop_excess=frame.budget - frame.drop_kept)


def latency_table(latency: pd.DataFrame) -> pd.DataFrame:
    """The latency rows with the latency gain per MACs gain, (1 - latency kept) / (1 - MACs
    kept), and its 95 % CI from that of the latency kept (the MACs are counted, not timed)."""
    if latency.empty:
        return latency
    removed = 1 - latency.macs_kept
    with np.errstate(divide="ignore", invalid="ignore"):
        return latency.assign(gain_per_macs=(1 - latency.latency_kept) / removed,
                              gain_per_macs_low=(1 - latency.latency_kept_high) / removed,
                              gain_per_macs_high=(1 - latency.latency_kept_low) / removed)


def attention_latency_gain(latency: pd.DataFrame, rounds: int) -> claims.Interval:
    """Claim 6b's effect: latency gain per MACs gain, minus 1, of attention removed from the
    most blocks probed. The largest removal divides the least timing noise by its MAC share
    (a block's attention is a few % of the model's MACs); its interval is over the ``rounds``
    timing rounds (the config's ``latency_forwards``)."""
    attention = latency[latency.method == "no_attention"]
    row = attention.loc[attention.k.idxmax()]
    return claims.Interval(row.gain_per_macs - 1, row.gain_per_macs_low - 1, row.gain_per_macs_high - 1,
                           rounds, f"t-interval over {rounds} timing rounds, attention removed from {int(row.k)} blocks",
                           float(rounds - 1))


def cpu_table(runs: pd.DataFrame, dense_info: dict) -> pd.DataFrame:
    """CPU seconds spent per kind of unit (as stored with the artifacts) and on the dense model."""
    rows = [{"kind": "dense fine-tune", "cpu_seconds": dense_info["cpu_seconds"]}]
    if "cpu_seconds" in runs:
        rows += [{"kind": kind, "cpu_seconds": float(seconds)}
                 for kind, seconds in runs.groupby("kind").cpu_seconds.sum().items()]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- claims


UPDATE_MARGIN = 1.0
"""Claim 4's non-inferiority margin, in points: "at least as good" holds when the 95 % CI of
before − all lies above −UPDATE_MARGIN (tested as before − all + margin > 0)."""

CLAIMS = {
    "1": claims.Claim(
        "1", "At equal MACs, removing attention and part of the MLP (DC-ViT) recovers more accuracy "
        "than dropping whole blocks (PRACTISE-style) after the same feature-mimicking fine-tune.",
        "Abstract: about 10 points above few-shot baselines; DeiT-B at 16.6 % fewer FLOPs: "
        "DC-ViT 81.26 % vs PRACTISE 79.30 % ImageNet top-1",
        "equal-MACs figure: DC-ViT − block drop per (N, seed, blocks dropped), points"),
    "2": claims.Claim(
        "2", "DC-ViT reaches any MACs budget; whole-block dropping reaches only a few levels.",
        "Section 1 and Figure 1: dense against sparse compression",
        "coverage table: MACs given up beyond the budget, block drop − DC-ViT, points of MACs"),
    "3": claims.Claim(
        "3", "Ranking blocks by metric loss on the synthetic (inverted) set agrees with the ranking "
        "on real held-out images (Spearman ρ > 0).",
        "Section 3.3: the synthetic set stands in for real held-out data",
        "ranking-check figure: ρ per (N, seed), mean ρ"),
    "4": claims.Claim(
        "4", "Updating only the blocks up to the compressed one plus one is at least as good as "
        f"updating every block with few samples (non-inferiority: it loses less than {UPDATE_MARGIN:g} "
        "point, so the effect is before − all plus that margin).",
        "Ablation of the update setting (section 4.4): 'before' is the default",
        f"update-setting figure: before − all + {UPDATE_MARGIN:g} per (N, seed, blocks compressed), points"),
    "5a": claims.Claim(
        "5a", "DC-ViT's accuracy rises with the number of few-shot images.",
        "Tables for 50 / 100 / 500 / 1000 samples (section 4.2)",
        "accuracy-vs-MACs figure: DC-ViT at the largest − the smallest N per (seed, budget), points"),
    "5b": claims.Claim(
        "5b", "Block dropping's accuracy rises with the number of few-shot images.",
        "Tables for 50 / 100 / 500 / 1000 samples (section 4.2)",
        "accuracy-vs-MACs figure: block drop at the largest − the smallest N per (seed, blocks), points"),
    "5c": claims.Claim(
        "5c", "DC-ViT's advantage over block dropping is largest at the smallest N.",
        "Tables for 50 / 100 / 500 / 1000 samples (section 4.2)",
        "equal-MACs figure: advantage at the smallest − at the largest N per (seed, blocks), points"),
    "6a": claims.Claim(
        "6a", "Batch latency falls with the MACs removed.",
        "Latency columns of the ViT tables (batch 64)",
        "latency figure: Spearman ρ of latency kept with MACs kept over the structures"),
    "6b": claims.Claim(
        "6b", "Removing attention saves more latency than its share of the MACs.",
        "Section 1: lower latency than block dropping at the same MACs",
        "latency figure: latency gain ÷ MACs gain − 1 of attention-only removal in the most blocks "
        "probed, each structure's time over the full model's in the same timing round"),
}


def _by_n(frame: pd.DataFrame, value: str, keys: list[str]) -> pd.DataFrame:
    """``value`` at the largest and the smallest N side by side, paired on ``keys``."""
    small, large = frame.num_samples.min(), frame.num_samples.max()
    pairs = frame[frame.num_samples == small].merge(frame[frame.num_samples == large], on=keys,
                                                    suffixes=("_small", "_large"))
    return pairs.assign(difference=POINTS * (pairs[f"{value}_large"] - pairs[f"{value}_small"]))


def decide(cfg: Config, r: Results) -> list[claims.ClaimResult]:
    """The verdict of every claim ``cfg.claims`` names."""
    out = []
    for claim_id in cfg.claims:
        if claim_id == "1":
            out.append(claims.directional(CLAIMS["1"], POINTS * r.equal_macs.difference.dropna()))
        elif claim_id == "2":
            excess = POINTS * (r.coverage.drop_excess - r.coverage.dcvit_excess)
            out.append(claims.directional(CLAIMS["2"], excess))
        elif claim_id == "3":
            rho = r.rankings[r.rankings["init"] == MAIN[1]].rho
            out.append(claims.directional(CLAIMS["3"], rho))
        elif claim_id == "4":
            pairs = r.update_pairs[r.update_pairs["init"] == MAIN[1]]
            out.append(claims.directional(CLAIMS["4"], POINTS * pairs.difference + UPDATE_MARGIN))
        elif claim_id == "5":
            chain = main_chains(r.chains).dropna(subset=["keep_ratio"])
            out.append(claims.directional(CLAIMS["5a"], _by_n(chain, "accuracy", ["seed", "k"]).difference))
            out.append(claims.directional(CLAIMS["5b"], _by_n(r.drops, "accuracy", ["seed", "k"]).difference))
            advantage = _by_n(r.equal_macs.dropna(subset=["difference"]), "difference", ["seed", "k"])
            out.append(claims.directional(CLAIMS["5c"], -advantage.difference))
        elif claim_id == "6":
            compressed = r.latency[r.latency.method.isin(["dcvit", "drop"])]
            out.append(claims.correlation(CLAIMS["6a"], compressed.macs_kept, compressed.latency_kept))
            out.append(claims.judge(CLAIMS["6b"], attention_latency_gain(r.latency, cfg.latency_forwards)))
    return out
