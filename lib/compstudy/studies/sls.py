"""Notebook 03, SLS on an ImageNet DeiT-Tiny: units, caching, tables, claims and figures.

For every target, PETL method and PETL seed the study trains adapters and head on the frozen
ImageNet ViT (cached), extracts the CLS token of every block on the training and test images
in one pass (cached), scores every block by the silhouette of its t-SNE map (one row per block
in ``layers/runs.csv``), picks the kept depth d for each alpha, and measures the full model,
SLS's truncation at d and DepGraph width pruning that removes as many parameters (one row per
model in ``runs.csv``). Both pruned models get the same retraining: a logistic-regression
re-fit of the head on their own features of the training images, then, as the official
``pruning_train.py`` does (strategy FT), adapters and head trained again at a constant learning
rate. The tables, per-target intervals and the claims of the paper (Han & Tang, ECCV 2024) are
computed from those rows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .. import cache, claims, config, data, features, metrics, models, paths, pool
from ..config import NotebookConfig
from ..errors import ConfigError
from ..methods import depgraph, petl, sls
from ..results import RunStore
from ..seeding import seed_everything
from ..train import FitSettings, progress_bar
from . import upstream

CLAIM_GROUPS = ("premise", "depth", "truncation", "natural", "depgraph", "alpha", "tsne")
"""Claims a run tests: the premise (silhouette follows probe accuracy), claim 1 (depth),
2 (truncation loses little, runs faster), 3 (natural targets keep more blocks), 4 (against
DepGraph), 5 (sensitivity to alpha; to the t-SNE seed, the perplexity and the 2-D map)."""
LAYER_KEY = ("target", "method", "petl_seed", "tsne_seed", "perplexity", "layer")
MODEL_KEY = ("target", "method", "petl_seed", "arm", "depth")
ARMS = ("probe", "full", "sls", "depgraph")
"""``probe``: a linear probe on the frozen backbone (method ``frozen``); ``full``: the trained
PETL model; ``sls``: truncated at ``depth``; ``depgraph``: width-pruned to as many removed
parameters as SLS at ``depth``."""
FROZEN = "frozen"


@dataclass(frozen=True)
class Config(NotebookConfig):
    NOTEBOOK = "03_sls"
    UPSTREAM = ("00_upstream/main",)  # the targets' distances from ImageNet (its runs.csv)

    seed: int
    model: str
    resolution: int
    targets: list[str]
    natural_targets: list[str]
    synthetic_per_class: int
    train_per_class: int
    test_per_class: dict[str, int]
    petl_methods: list[str]
    petl_seeds: dict[str, list[int]]
    petl_scale: float
    petl_epochs: int
    petl_warmup_epochs: float
    petl_lr: float
    petl_weight_decay: float
    batch_size: int
    alpha: float
    alphas: list[float]
    tsne_seeds: list[int]
    perplexities: list[float]
    tsne_iter: int
    map_layers: list[int]
    depgraph: bool
    taylor_batches: int
    taylor_batch_size: int
    retrain_epochs: int
    retrain_lr: float
    throughput_batches: list[int]
    timing_forwards: list[int]
    loss_margin: float
    depth_margin: float
    claims: list[str]
    workers: int

    def validate(self) -> None:
        self.check_choices("targets", data.dataset_names())
        self.check_choices("natural_targets", self.targets)
        self.check_choices("petl_methods", petl.METHODS)
        self.check_choices("claims", CLAIM_GROUPS)
        if not self.targets or not self.petl_methods:
            raise ConfigError("targets and petl_methods must each name at least one entry")
        if self.resolution % 16:
            raise ConfigError(f"resolution must be a multiple of the ViT's 16-px patch, got {self.resolution}")
        for key in ("synthetic_per_class", "batch_size", "taylor_batches", "taylor_batch_size",
                    "petl_epochs", "throughput_batches"):
            self.check_range(key, low=1)
        self.check_range("workers", low=0)
        self.check_range("retrain_epochs", low=0)
        self.check_range("retrain_lr", low=0, low_open=True)
        self.check_range("train_per_class", low=2, high=self.synthetic_per_class
                         if set(self.targets) & set(data.SYNTHETIC) else None)
        self.check_range("petl_scale", low=0, low_open=True)
        self.check_range("petl_lr", low=0, low_open=True)
        self.check_range("petl_weight_decay", low=0)
        self.check_range("petl_warmup_epochs", low=0, high=self.petl_epochs)
        self.check_range("perplexities", low=1)
        self.check_range("tsne_iter", low=251)
        self.check_range("timing_forwards", low=2)  # each speed-up is a mean over rounds
        if len(self.timing_forwards) != len(self.throughput_batches):
            raise ConfigError(f"timing_forwards needs one count per throughput batch "
                              f"({self.throughput_batches}), got {self.timing_forwards}")
        self.check_range("loss_margin", low=0, high=100, low_open=True)
        self.check_range("depth_margin", low=0, low_open=True)
        for a in [self.alpha, *self.alphas]:
            sls.check_alpha(a)
        if set(self.test_per_class) != set(self.targets):
            raise ConfigError(f"test_per_class must give one entry per target: {', '.join(self.targets)}")
        for name, n in self.test_per_class.items():
            if n != -1 and (n < 1 or (name in data.SYNTHETIC and n > self.synthetic_per_class)):
                raise ConfigError(f"test_per_class[{name!r}] must be -1 (the whole split) or 1.."
                                  f"{self.synthetic_per_class if name in data.SYNTHETIC else 'its class size'}, got {n}")
        if set(self.petl_seeds) != set(self.petl_methods) or not all(self.petl_seeds.values()):
            raise ConfigError("petl_seeds must give a non-empty list of seeds for each of petl_methods")
        if not self.tsne_seeds or not self.perplexities:
            raise ConfigError("tsne_seeds and perplexities need at least one entry each")
        depth = model_depth(self.model)
        for layer in self.map_layers:
            sls.check_layer(layer, depth, "map layer")
        needs = {"depgraph": (self.depgraph and bool(self.throughput_batches),
                              "depgraph: true and throughput_batches"),
                 "truncation": (bool(self.throughput_batches), "throughput_batches"),
                 "alpha": (len(self.alphas) > 1, "at least two alphas"),
                 "tsne": (len(tsne_settings(self)) > 1, "a second t-SNE seed or perplexity")}
        for group, (ok, what) in needs.items():
            if group in self.claims and not ok:
                raise ConfigError(f"the {group!r} claims need {what}")
        up = config.load_config(self.profile, "00_upstream", "main")
        if self.model not in up.upstream_models or self.resolution not in up.resolutions.get(self.model, []):
            raise ConfigError(f"notebook 00 ({self.profile}) measures no distances for {self.model} at "
                              f"{self.resolution} px; add it to configs/{self.profile}/00_upstream/main.yaml")
        missing = [t for t in self.targets if t not in up.targets]
        if missing:
            raise ConfigError(f"notebook 00 ({self.profile}) measures no distance for targets {missing}")


@functools.cache
def model_depth(name: str) -> int:
    """Blocks of an upstream ViT, built on the meta device (no weights, no memory)."""
    import timm

    arch = models.upstream.ARCHITECTURES.get(name) or models.upstream.PAPER_CHECKPOINTS.get(name, "")
    if not arch:
        raise ConfigError(f"SLS needs a ViT upstream model; {name!r} is not one")
    with torch.device("meta"):
        model = timm.create_model(arch.split(".")[0], pretrained=False)
    if not hasattr(model, "blocks"):
        raise ConfigError(f"SLS needs a ViT; model {name!r} has no transformer blocks")
    return len(model.blocks)


def tsne_settings(cfg: Config) -> list[tuple[int, float]]:
    """(t-SNE seed, perplexity) pairs scored: the first of each (what SLS uses), then one
    factor at a time, every other seed at the first perplexity and every other perplexity
    at the first seed."""
    first_seed, first_perplexity = cfg.tsne_seeds[0], float(cfg.perplexities[0])
    pairs = [(first_seed, first_perplexity)]
    pairs += [(s, first_perplexity) for s in cfg.tsne_seeds[1:]]
    pairs += [(first_seed, float(p)) for p in cfg.perplexities[1:]]
    return list(dict.fromkeys(pairs))


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Target:
    """One target: the pool its training images are drawn from and its fixed test set."""

    name: str
    pool: data.ImageSet
    test: data.ImageSet

    @property
    def num_classes(self) -> int:
        return len(self.test.classes)

    def train(self, per_class: int, seed: int) -> data.ImageSet:
        """The ``per_class`` training images of PETL seed ``seed`` (PETL, t-SNE, probes, re-fits)."""
        return data.few_shot(self.pool, per_class, seed)


def load_target(cfg: Config, name: str) -> Target:
    """One target's training pool and test set (the test draw is fixed by ``cfg.seed``).

    Fails with a ConfigError before any training when a class holds too few images.
    """
    test = data.load_dataset(name, "test", cfg.synthetic_per_class, cfg.seed)
    target = Target(name, data.load_dataset(name, "train", cfg.synthetic_per_class, cfg.seed),
                    data.few_shot(test, cfg.test_per_class[name], cfg.seed))
    target.train(cfg.train_per_class, 0)  # enough images per class?
    return target


def load_targets(cfg: Config) -> dict[str, Target]:
    return {name: load_target(cfg, name) for name in cfg.targets}


def _data_inputs(cfg: Config, target: str) -> dict:
    synthetic = target in data.SYNTHETIC
    return {"target": target, "data_seed": cfg.seed,
            "synthetic_per_class": cfg.synthetic_per_class if synthetic else None}


# ----------------------------------------------------------------------------- cached steps


def petl_settings(cfg: Config) -> FitSettings:
    return FitSettings(cfg.petl_epochs, cfg.petl_lr, optimizer="adamw",
                       weight_decay=cfg.petl_weight_decay, warmup_epochs=cfg.petl_warmup_epochs)


def retrain_settings(cfg: Config) -> FitSettings | None:
    """The retraining after a cut: AdamW at a constant rate, as the official ``pruning_train.py``
    retrains (strategy FT, lr 1e-5 for 100 epochs); None when ``retrain_epochs`` is 0."""
    if not cfg.retrain_epochs:
        return None
    return FitSettings(cfg.retrain_epochs, cfg.retrain_lr, optimizer="adamw",
                       weight_decay=cfg.petl_weight_decay, schedule="constant")


def petl_inputs(cfg: Config, target: str, method: str, seed: int) -> dict:
    """Everything the trained PETL model of one target, method and seed depends on (the
    workers compute on ``pool.THREADS`` threads; the thread count is part of the key)."""
    return {"model": cfg.model, "resolution": cfg.resolution, **_data_inputs(cfg, target),
            "train_per_class": cfg.train_per_class, "method": method, "petl_seed": seed,
            "scale": cfg.petl_scale, "fit": asdict(petl_settings(cfg)), "batch_size": cfg.batch_size,
            "threads": pool.THREADS}


def feature_inputs(cfg: Config, target: str, method: str, seed: int) -> dict:
    return {"petl": petl_inputs(cfg, target, method, seed), "test_per_class": cfg.test_per_class[target]}


def _as_tensors(feats: sls.BlockFeatures) -> dict:
    return {"cls": torch.from_numpy(feats.cls), "logits": torch.from_numpy(feats.logits),
            "labels": torch.from_numpy(feats.labels)}


def _from_tensors(payload: Mapping) -> sls.BlockFeatures:
    return sls.BlockFeatures(payload["cls"].numpy(), payload["logits"].numpy(), payload["labels"].numpy())


@dataclass
class Unit:
    """One model on one target: the model, its images and its per-block features."""

    target: str
    method: str
    seed: int
    model: torch.nn.Module
    train_set: data.ImageSet
    test_set: data.ImageSet
    train: sls.BlockFeatures
    test: sls.BlockFeatures
    inputs: dict

    @property
    def depth(self) -> int:
        return len(self.model.blocks)

    @property
    def num_classes(self) -> int:
        return len(self.test_set.classes)


def petl_unit(cfg: Config, backbone: torch.nn.Module, target: Target, method: str, seed: int,
              progress: bool = True) -> Unit:
    """The PETL model of (target, method, seed) and its per-block features, from the cache or
    computed now (training: ``cfg.petl_epochs`` epochs of adapters and head)."""
    train_set = target.train(cfg.train_per_class, seed)
    inputs = petl_inputs(cfg, target.name, method, seed)
    state = cache.cached(
        "sls_petl", inputs, [petl.train_petl, models.upstream],
        lambda: petl.task_state(petl.train_petl(
            backbone, method, train_set, petl_settings(cfg), cfg.petl_scale, cfg.batch_size, seed,
            desc=f"{method} {target.name} seed {seed}", progress=progress)))
    model = petl.load_task_state(petl.attach(backbone, method, target.num_classes, cfg.petl_scale), state)
    return _with_features(target, method, seed, model, train_set,
                          {"petl": inputs, "test_per_class": cfg.test_per_class[target.name]})


def frozen_unit(cfg: Config, backbone: torch.nn.Module, target: Target, seed: int) -> Unit:
    """The frozen ImageNet backbone on a target: its features, for the linear-probe baseline."""
    train_set = target.train(cfg.train_per_class, seed)
    inputs = {"model": cfg.model, "resolution": cfg.resolution, **_data_inputs(cfg, target.name),
              "train_per_class": cfg.train_per_class, "petl_seed": seed,
              "test_per_class": cfg.test_per_class[target.name], "threads": pool.THREADS}
    return _with_features(target, FROZEN, seed, backbone, train_set, inputs)


def _with_features(target: Target, method: str, seed: int, model, train_set, inputs) -> Unit:
    payload = cache.cached(
        "sls_features", inputs, [sls.block_cls_features, models.upstream],
        lambda: {"train": _as_tensors(sls.block_cls_features(model, train_set)),
                 "test": _as_tensors(sls.block_cls_features(model, target.test))})
    return Unit(target.name, method, seed, model, train_set, target.test,
                _from_tensors(payload["train"]), _from_tensors(payload["test"]), inputs)


def block_scores(unit: Unit, tsne_seed: int, perplexity: float, n_iter: int) -> dict:
    """Silhouette of every block's t-SNE map of the training features, and the maps (cached).

    The maps use torch's thread count as openTSNE's ``n_jobs``; the map does not depend on it
    (tested), so it is not part of the cache key."""
    def build():
        scores, maps = sls.layer_scores(unit.train.cls, unit.train.labels, perplexity, tsne_seed, n_iter,
                                        n_jobs=torch.get_num_threads())
        return {"scores": torch.from_numpy(scores), "maps": torch.from_numpy(maps.astype(np.float32))}

    inputs = {"features": unit.inputs, "tsne_seed": tsne_seed, "perplexity": perplexity, "n_iter": n_iter}
    return cache.cached("sls_scores", inputs, [sls.layer_scores], build)


def last_block_score(cfg: Config, unit: Unit) -> float:
    """Silhouette of the t-SNE map of the unit's last block at SLS's t-SNE setting (cached):
    the frozen backbone's, beside the probe."""
    tsne_seed, perplexity = tsne_settings(cfg)[0]

    def build():
        scores, _ = sls.layer_scores(unit.train.cls[-1:], unit.train.labels, perplexity, tsne_seed, cfg.tsne_iter)
        return {"score": torch.tensor(float(scores[0]), dtype=torch.float64)}

    inputs = {"features": unit.inputs, "tsne_seed": tsne_seed, "perplexity": perplexity,
              "n_iter": cfg.tsne_iter, "blocks": "last"}
    return float(cache.cached("sls_scores", inputs, [sls.layer_scores], build)["score"])


def block_probes(unit: Unit) -> dict:
    """Per block: linear-probe test accuracy and the silhouette of the raw features (cached)."""
    def build():
        return {"probe": torch.from_numpy(sls.layer_probes(unit.train, unit.test, unit.seed)),
                "raw": torch.tensor([sls.silhouette(f, unit.train.labels) for f in unit.train.cls])}

    return cache.cached("sls_probes", {"features": unit.inputs}, [sls.layer_probes], build)


def _test_logits(model: torch.nn.Module, images: data.ImageSet) -> torch.Tensor:
    head = model.head
    return torch.from_numpy(sls.head_logits(features.extract_features(model, images),
                                            head.weight.detach(), head.bias.detach()))


def retrain(cfg: Config, unit: Unit, model: torch.nn.Module) -> torch.nn.Module:
    """Adapters and head of a pruned copy of the unit's model trained again on the unit's
    training images (backbone frozen; :func:`retrain_settings`); ``model`` itself is trained."""
    torch.manual_seed(unit.seed)
    petl.fit_petl(petl.freeze_backbone(model), unit.train_set, retrain_settings(cfg), cfg.batch_size,
                  unit.seed, progress=False)
    return model.eval()


def _retrain_inputs(cfg: Config, settings: FitSettings | None) -> dict | None:
    """The cache key of a retraining (``settings``, None when there is none)."""
    return None if settings is None else asdict(settings) | {"batch_size": cfg.batch_size}


def sls_model(cfg: Config, unit: Unit, depth: int) -> tuple[torch.nn.Module, dict]:
    """SLS's model at ``depth``: truncated, its head re-fitted on its own features, then
    retrained (:func:`retrain`). Cached as the task state and the test logits at each stage:
    the old head (``logits_before``), the re-fitted head (``logits_refit``) and the retrained
    model (``logits``). Where SLS keeps every block it is the unit's PETL model itself: nothing
    was cut, so there is nothing to re-fit or retrain."""
    if depth == unit.depth:
        logits = unit.test.logits
        return unit.model, {"logits": logits, "logits_refit": logits, "logits_before": logits}
    settings = retrain_settings(cfg)

    def build():
        weight, bias, refit, before = refit_at_depth(unit, depth)
        model = sls.set_head(sls.truncate(unit.model, depth), weight, bias)
        if settings is not None:
            retrain(cfg, unit, model)
        return {"state": petl.task_state(model), "logits_before": before, "logits_refit": refit,
                "logits": refit if settings is None else _test_logits(model, unit.test_set)}

    inputs = {"features": unit.inputs, "depth": depth, "retrain": _retrain_inputs(cfg, settings)}
    payload = cache.cached("sls_truncated", inputs, [sls.fit_head, sls.truncate, petl.fit_petl], build)
    return petl.load_task_state(sls.truncate(unit.model, depth), payload["state"]), payload


def depgraph_model(cfg: Config, unit: Unit, depth: int) -> tuple[torch.nn.Module, dict]:
    """DepGraph width pruning of the unit's PETL model to the parameters SLS removes at
    ``depth``, retrained as SLS's is (head re-fit, then :func:`retrain`). Cached as state dict,
    search and test logits (old head, re-fitted head, retrained model)."""
    removed = depgraph.count_parameters(unit.model) - depgraph.count_parameters(sls.truncate(unit.model, depth))
    settings = retrain_settings(cfg)

    def build():
        pruned, search = depgraph.prune_to_removed(unit.model, unit.train_set, removed, cfg.taylor_batches,
                                                   cfg.taylor_batch_size, unit.seed)
        test_x = features.extract_features(pruned, unit.test_set)
        before = sls.head_logits(test_x, pruned.head.weight.detach(), pruned.head.bias.detach())
        weight, bias = sls.fit_head(features.extract_features(pruned, unit.train_set),
                                    unit.train.labels, unit.num_classes, unit.seed)
        sls.set_head(pruned, weight, bias)
        refit = torch.from_numpy(sls.head_logits(test_x, weight, bias))
        if settings is not None:
            retrain(cfg, unit, pruned)
        return {"state": pruned.state_dict(), "search": asdict(search),
                "logits_before": torch.from_numpy(before), "logits_refit": refit,
                "logits": refit if settings is None else _test_logits(pruned, unit.test_set)}

    inputs = {"features": unit.inputs, "removed": removed, "taylor_batches": cfg.taylor_batches,
              "taylor_batch_size": cfg.taylor_batch_size, "retrain": _retrain_inputs(cfg, settings)}
    payload = cache.cached("sls_depgraph", inputs,
                           [depgraph.prune_to_removed, sls.fit_head, features.extract_features, petl.fit_petl],
                           build)
    return depgraph.restore_widths(unit.model, payload["state"]), payload


# ----------------------------------------------------------------------------- units


def _correct(logits, labels) -> np.ndarray:
    return np.asarray(logits).argmax(1) == np.asarray(labels)


def kept_depths(layers: pd.DataFrame, alphas: list[float]) -> pd.DataFrame:
    """The SLS walk on every silhouette curve of ``layers``, for every alpha: one row per
    (target, method, petl_seed, tsne_seed, perplexity, alpha) with depth, threshold, rule and
    the last block's silhouette."""
    rows = []
    curve_key = [k for k in LAYER_KEY if k != "layer"]
    for key, curve in layers.sort_values("layer").groupby(curve_key, sort=False):
        for alpha in alphas:
            pick = sls.select_depth(curve.silhouette.to_numpy(), alpha)
            rows.append(dict(zip(curve_key, key)) | {
                "alpha": float(alpha), "depth": pick.depth, "threshold": pick.threshold,
                "rule": pick.rule, "last_silhouette": float(curve.silhouette.iloc[-1])})
    return pd.DataFrame(rows)


def measure_models(cfg: Config, arms: Mapping[tuple, tuple[torch.nn.Module, str]], reference: tuple,
                   progress: bool = False) -> dict[tuple, dict]:
    """Size, MACs, storage and throughput of a unit's models (``arms``: key -> (model, kind)).

    The models are timed together, one forward each per round (``metrics.measure_latencies``),
    and each gets ``speedup_b{batch}``: 1 / the mean over rounds of its time ÷ the
    ``reference`` model's (the full one) in the same round. The speed ratios the claims compare
    are thus paired round by round, and a slow spell of the machine cancels out of them;
    ``images_per_s_b{batch}`` (from the median time) is the throughput a page shows. Without
    ``throughput_batches`` (ablation runs that claim no speed) nothing is timed.
    """
    side = cfg.resolution
    rows = {key: {"parameters": depgraph.count_parameters(model),
                  "macs": metrics.count_macs(model, (1, 3, side, side)),
                  "storage_parameters": sls.storage_parameters(model, kind)}
            for key, (model, kind) in arms.items()}
    for batch, forwards in zip(cfg.throughput_batches, cfg.timing_forwards):
        timings = metrics.measure_latencies({key: model for key, (model, _) in arms.items()},
                                            batch, (3, side, side), forwards, progress, reference)
        for key, timing in timings.items():
            rows[key] |= {f"images_per_s_b{batch}": timing["images_per_s"],
                          f"speedup_b{batch}": timing["speedup"]}
    return rows


def measure_unit(cfg: Config, unit: Unit, depths: dict[float, int], model_store: RunStore,
                 with_depgraph: bool, correct: dict, progress: bool = False) -> None:
    """The model rows of one PETL unit: full, SLS at each kept depth, DepGraph at cfg.alpha's.

    Per-image test correctness goes into ``correct`` (keyed like the rows) whether or not the
    row was already in ``runs.csv``: it is recomputed from cached features and models. When any
    row is missing, all the unit's models are measured again together (``measure_models``) and
    the missing rows are added.
    """
    base = {"target": unit.target, "method": unit.method, "petl_seed": unit.seed}
    n_test = len(unit.test.labels)
    total = depgraph.count_parameters(unit.model)
    arms, values = {}, {}
    full_key = tuple((base | {"arm": "full", "depth": unit.depth}).values())
    correct[full_key] = _correct(unit.test.logits, unit.test.labels)
    arms[full_key] = (unit.model, "petl")
    values[full_key] = {"accuracy": correct[full_key].mean(), "accuracy_refit": np.nan,
                        "accuracy_before_refit": np.nan}
    for depth in sorted(set(depths.values())):
        key = tuple((base | {"arm": "sls", "depth": depth}).values())
        model, payload = sls_model(cfg, unit, depth)
        correct[key] = _correct(payload["logits"], unit.test.labels)
        arms[key] = (model, "sls")
        values[key] = _stage_accuracies(payload, unit.test.labels)
    depth = depths[cfg.alpha]
    if with_depgraph and depth != unit.depth:
        key = tuple((base | {"arm": "depgraph", "depth": depth}).values())
        pruned, payload = depgraph_model(cfg, unit, depth)
        correct[key] = _correct(payload["logits"], unit.test.labels)
        search = payload["search"]
        arms[key] = (pruned, "depgraph")
        values[key] = _stage_accuracies(payload, unit.test.labels) | {
            "depgraph_ratio": search["ratio"], "depgraph_rel_error": search["rel_error"],
            "depgraph_trials": search["trials"], "heads_consistent": depgraph.attention_consistent(pruned)}
    keys = [dict(zip(MODEL_KEY, key)) for key in arms]
    if next(model_store.pending(keys), None) is None:
        return
    measured = measure_models(cfg, arms, full_key, progress)
    model_store.add_many(model_store.pending([row | values[key] | {"test_images": n_test} | measured[key]
                                              | {"removed_parameters": total - measured[key]["parameters"]}
                                              for key, row in zip(arms, keys)]))


def _stage_accuracies(payload: Mapping, labels: np.ndarray) -> dict:
    """Test accuracy of a pruned model retrained (``accuracy``), after the head re-fit only and
    with the old head (``accuracy_before_refit``)."""
    return {column: _correct(payload[logits], labels).mean() for column, logits in
            (("accuracy", "logits"), ("accuracy_refit", "logits_refit"), ("accuracy_before_refit", "logits_before"))}


def refit_at_depth(unit: Unit, depth: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first step of SLS's retraining, from the cached features: the head re-fitted on block
    ``depth``'s normed CLS of the training images. Returns (weight, bias, test logits of the
    re-fitted head, test logits of the old head)."""
    train_x = sls.normed_cls(unit.model, unit.train.cls[depth - 1])
    test_x = sls.normed_cls(unit.model, unit.test.cls[depth - 1])
    weight, bias = sls.fit_head(train_x, unit.train.labels, unit.num_classes, unit.seed)
    head = unit.model.head
    return (weight, bias, torch.from_numpy(sls.head_logits(test_x, weight, bias)),
            torch.from_numpy(sls.head_logits(test_x, head.weight.detach(), head.bias.detach())))


def probe_unit(cfg: Config, unit: Unit, model_store: RunStore, correct: dict) -> None:
    """The linear probe on the frozen backbone (final-normed CLS, the same re-fit as SLS's) and
    the silhouette of the frozen last block: what PETL adds."""
    key = {"target": unit.target, "method": FROZEN, "petl_seed": unit.seed, "arm": "probe",
           "depth": unit.depth}
    after = _correct(refit_at_depth(unit, unit.depth)[2], unit.test.labels)
    correct[tuple(key.values())] = after
    if next(model_store.pending([key]), None):
        model_store.add(key | {"accuracy": after.mean(), "test_images": len(unit.test.labels),
                               "frozen_last_silhouette": last_block_score(cfg, unit)})


def score_unit(cfg: Config, unit: Unit, layer_store: RunStore) -> None:
    """The per-block rows of one unit for every (t-SNE seed, perplexity) setting."""
    for tsne_seed, perplexity in tsne_settings(cfg):
        base = {"target": unit.target, "method": unit.method, "petl_seed": unit.seed,
                "tsne_seed": tsne_seed, "perplexity": perplexity}
        if next(layer_store.pending([base | {"layer": 1}]), None) is None:
            continue
        scores = block_scores(unit, tsne_seed, perplexity, cfg.tsne_iter)["scores"].numpy()
        probes = block_probes(unit)
        layer_store.add_many([base | {"layer": layer, "silhouette": float(scores[layer - 1]),
                                      "raw_silhouette": float(probes["raw"][layer - 1]),
                                      "probe_accuracy": float(probes["probe"][layer - 1])}
                              for layer in range(1, unit.depth + 1)])


# ----------------------------------------------------------------------------- the workers


@dataclass(frozen=True)
class Work:
    """The cached steps of one PETL unit at one t-SNE setting.

    At SLS's setting (``first``): adapters and head, the features of every block, the scores,
    the per-block probes, SLS's retrained model at every alpha's kept depth, DepGraph at
    ``cfg.alpha``'s kept depth for the first method, and the frozen backbone's features and
    last-block score for the first unit of a target. At any
    other setting only that setting's scores, after the first work of the unit has cached its
    features: the t-SNE ablation then spreads its maps over the workers.
    """

    target: str
    method: str
    seed: int
    tsne_seed: int
    perplexity: float
    first: bool
    depgraph: bool
    probe: bool
    retrain: float = 0.0  # cost of one retraining, in PETL trainings

    @property
    def unit(self) -> tuple[str, str, int]:
        return self.target, self.method, self.seed

    @property
    def cost(self) -> float:
        """Rough cost in PETL trainings, so that the longest works start first (measured on
        chapter 3's cpu config: DepGraph adds about a quarter, the frozen probe and the t-SNE
        maps of one setting about a sixth each; each retrained arm ``retrain``)."""
        if not self.first:
            return 0.15
        return 1 + 0.25 * self.depgraph + 0.15 * self.probe + self.retrain * (1 + self.depgraph)


def plan(cfg: Config) -> list[Work]:
    first = cfg.petl_methods[0]
    # a retraining runs the kept blocks (half to most of them on the cpu targets) for retrain_epochs
    retrain = 0.7 * cfg.retrain_epochs / cfg.petl_epochs
    return [Work(t, m, s, tsne_seed, perplexity, i == 0, i == 0 and cfg.depgraph and m == first,
                 i == 0 and m == first and s == cfg.petl_seeds[first][0], retrain)
            for t in cfg.targets for m in cfg.petl_methods for s in cfg.petl_seeds[m]
            for i, (tsne_seed, perplexity) in enumerate(tsne_settings(cfg))]


def do_work(cfg: Config, backbone: torch.nn.Module, target: Target, work: Work, progress: bool = False) -> None:
    """Every cached step of ``work``; inside ``cache.lookup_only()`` it finds whether any is missing."""
    unit = petl_unit(cfg, backbone, target, work.method, work.seed, progress)
    scores = block_scores(unit, work.tsne_seed, work.perplexity, cfg.tsne_iter)["scores"]
    if not work.first:
        return
    block_probes(unit)
    # float64, as the parent reads the silhouettes back from layers/runs.csv
    depths = {a: sls.select_depth(scores.double().numpy(), a).depth for a in {cfg.alpha, *cfg.alphas}}
    for depth in sorted(set(depths.values())):
        sls_model(cfg, unit, depth)
    depth = depths[cfg.alpha]
    if work.depgraph and depth != unit.depth:
        depgraph_model(cfg, unit, depth)
    if work.probe:
        last_block_score(cfg, frozen_unit(cfg, backbone, target, work.seed))


def fill_caches(cfg: Config, backbone: torch.nn.Module, targets: Mapping[str, Target], progress: bool) -> None:
    """Run every unit that misses a cached step in ``cfg.workers`` one-thread processes
    (:func:`compstudy.pool.results`); the parent then reads the caches and times the models
    alone, in turn."""
    todo = []
    for work in plan(cfg):
        try:
            with cache.lookup_only():
                do_work(cfg, backbone, targets[work.target], work)
        except cache.Missing:
            todo.append(work)
    for _ in pool.results(_work_in_worker, todo, start=_start_worker, start_args=(cfg,), workers=cfg.workers,
                          cost=lambda work: work.cost, desc="SLS units: adapters, t-SNE, DepGraph",
                          progress=progress, provides=lambda work: work.unit if work.first else None,
                          needs=lambda work: None if work.first else work.unit):
        pass


def _start_worker(cfg: Config) -> dict:
    seed_everything(cfg.seed, threads=pool.THREADS)
    return {"cfg": cfg, "backbone": models.upstream_model(cfg.model, cfg.resolution), "targets": {}}


def _work_in_worker(state: dict, work: Work) -> None:
    cfg, targets = state["cfg"], state["targets"]
    if work.target not in targets:  # a worker loads only the targets it is given
        targets[work.target] = load_target(cfg, work.target)
    do_work(cfg, state["backbone"], targets[work.target], work)


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Results:
    """Tidy frames of one run of notebook 03."""

    layers: pd.DataFrame  # LAYER_KEY + silhouette, raw_silhouette, probe_accuracy
    depths: pd.DataFrame  # kept depth per curve and alpha (kept_depths)
    models: pd.DataFrame  # MODEL_KEY + accuracy, sizes, throughput (runs.csv)
    comparisons: pd.DataFrame  # per target and method: paired accuracy differences with CIs
    distances: pd.Series  # per target: 1 - ImageNet spread (notebook 00)
    claims: pd.DataFrame  # claims.csv
    maps: dict[str, np.ndarray]  # per target: the t-SNE maps (L x N x 2) of the first unit
    map_labels: dict[str, np.ndarray]
    test_images: dict[str, int]


def read_distances(cfg: Config) -> pd.Series:
    """Each target's distance from ImageNet, 1 - the spread of the ImageNet classifier's
    top-1 labels over its test images, as notebook 00 measured it for this model and
    resolution (its runs.csv)."""
    path = paths.RESULTS_DIR / cfg.profile / "00_upstream" / "main" / "runs.csv"
    if not path.exists():
        raise ConfigError(f"notebook 00 has not run in profile {cfg.profile} ({path} is missing): "
                          f"run `make run NB=00_upstream PROFILE={cfg.profile}` first")
    table = upstream.distances(pd.read_csv(path))
    column = (cfg.model, cfg.resolution)
    found = table[column].reindex(cfg.targets) if column in table else None
    if found is None or found.isna().any():
        raise ConfigError(f"{path} lacks the distance of some target for {cfg.model} at {cfg.resolution} px")
    return found.rename("distance")


def run(cfg: Config, progress: bool = True) -> Results:
    """Every unit of the run (resuming from ``runs.csv`` and ``layers/runs.csv``), the tables
    and the claims (written to ``claims.csv``)."""
    seed_everything(cfg.seed)
    distances = read_distances(cfg)
    targets = load_targets(cfg)
    backbone = models.upstream_model(cfg.model, cfg.resolution)
    layer_store = RunStore(cfg.results_dir / "layers", key=LAYER_KEY, required=("silhouette",))
    model_store = RunStore(cfg.results_dir, key=MODEL_KEY, required=("accuracy",))
    default = tsne_settings(cfg)[0]
    alphas = sorted({cfg.alpha, *cfg.alphas})
    correct: dict[tuple, np.ndarray] = {}
    maps, map_labels = {}, {}
    fill_caches(cfg, backbone, targets, progress)
    works = [work for work in plan(cfg) if work.first]
    bar = progress_bar(len(works), "SLS units: re-fits and timing", progress)
    for work in works:
        target = targets[work.target]
        unit = petl_unit(cfg, backbone, target, work.method, work.seed, progress)
        score_unit(cfg, unit, layer_store)
        mine = _at(layer_store.frame, target=work.target, method=work.method, petl_seed=work.seed,
                   tsne_seed=default[0], perplexity=default[1])
        depths = kept_depths(mine, alphas).set_index("alpha").depth.to_dict()
        measure_unit(cfg, unit, depths, model_store, work.depgraph, correct, progress)
        if work.probe:
            maps[work.target] = block_scores(unit, *default, cfg.tsne_iter)["maps"].numpy()
            map_labels[work.target] = unit.train.labels
            probe_unit(cfg, frozen_unit(cfg, backbone, target, work.seed), model_store, correct)
        bar.update()
    bar.close()
    layers = layer_store.frame
    depth_table = kept_depths(layers, alphas)
    model_rows = model_store.frame
    comparisons = compare(cfg, depth_table, correct)
    results = test_claims(cfg, layers, depth_table, model_rows, correct, distances)
    claims.write_claims(cfg.results_dir, results)
    return Results(layers, depth_table, model_rows, comparisons, distances,
                   claims.read_claims(cfg.results_dir), maps, map_labels,
                   {t: len(targets[t].test) for t in cfg.targets})


# ----------------------------------------------------------------------------- tables


def _at(frame: pd.DataFrame, **values) -> pd.DataFrame:
    """Rows of ``frame`` whose columns equal ``values``."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in values.items():
        mask &= (frame[column] == value).to_numpy()
    return frame[mask]


def _sls_setting(cfg: Config, frame: pd.DataFrame, **values) -> pd.DataFrame:
    """Rows of ``frame`` (per block or per kept depth) at the t-SNE setting SLS uses (the first
    seed and perplexity) whose columns equal ``values``."""
    tsne_seed, perplexity = tsne_settings(cfg)[0]
    return _at(frame, tsne_seed=tsne_seed, perplexity=perplexity, **values)


def chosen_depths(cfg: Config, depth_table: pd.DataFrame, alpha: float | None = None) -> dict[tuple, int]:
    """Kept depth per (target, method, petl_seed) at ``alpha`` (default: cfg.alpha) with the
    t-SNE setting SLS uses (the first seed and perplexity)."""
    rows = _sls_setting(cfg, depth_table, alpha=float(cfg.alpha if alpha is None else alpha))
    return {(r.target, r.method, int(r.petl_seed)): int(r.depth) for r in rows.itertuples()}


COMPARISONS = {"sls_vs_full": ("sls", "full"), "sls_vs_depgraph": ("sls", "depgraph"),
               "full_vs_probe": ("full", "probe")}
"""Paired accuracy comparisons: (arm a, arm b); the difference is a - b."""


def paired_differences(cfg: Config, depth_table: pd.DataFrame, correct: Mapping[tuple, np.ndarray],
                       comparison: str, target: str, method: str) -> dict[int, np.ndarray]:
    """Per PETL seed: per-test-image correctness of arm a minus arm b (``COMPARISONS``), at
    cfg.alpha's kept depth. Seeds where either model is missing are left out."""
    arm_a, arm_b = COMPARISONS[comparison]
    depths = chosen_depths(cfg, depth_table)
    out = {}
    for seed in cfg.petl_seeds[method]:
        if (target, method, seed) not in depths:
            continue
        d = depths[target, method, seed]
        full_depth = model_depth(cfg.model)
        key = {"sls": (target, method, seed, "sls", d), "depgraph": (target, method, seed, "depgraph", d),
               "full": (target, method, seed, "full", full_depth),
               "probe": (target, FROZEN, seed, "probe", full_depth)}
        if key[arm_a] in correct and key[arm_b] in correct:
            out[seed] = correct[key[arm_a]].astype(float) - correct[key[arm_b]].astype(float)
    return out


def compare(cfg: Config, depth_table: pd.DataFrame, correct: Mapping[tuple, np.ndarray]) -> pd.DataFrame:
    """Per target, method and comparison: the accuracy difference in percentage points with a
    95 % CI from a paired bootstrap over the test images (per-image differences averaged over
    the PETL seeds). The interval covers the test sample, given the trained models."""
    rows = []
    for comparison in COMPARISONS:
        for target in cfg.targets:
            for method in cfg.petl_methods:
                diffs = paired_differences(cfg, depth_table, correct, comparison, target, method)
                if not diffs:
                    continue
                per_image = np.mean(list(diffs.values()), axis=0) * 100
                ci = claims.mean_interval(per_image, method="bootstrap", seed=cfg.seed)
                rows.append({"comparison": comparison, "target": target, "method": method,
                             "effect_pp": ci.effect, "ci_low_pp": ci.ci_low, "ci_high_pp": ci.ci_high,
                             "test_images": len(per_image), "petl_seeds": len(diffs)})
    return pd.DataFrame(rows)


def summary_table(cfg: Config, models_frame: pd.DataFrame, depth_table: pd.DataFrame) -> pd.DataFrame:
    """Per target, method and arm at cfg.alpha (mean over PETL seeds): kept depth, accuracy,
    parameters and those removed, MACs, storage per task and throughput, in the units a page
    shows (%, millions, KiB, images/s); the columns of ``ACCURACY_COLUMNS`` and
    ``speed_columns``."""
    depths = chosen_depths(cfg, depth_table)
    full_depth = model_depth(cfg.model)
    keep = []
    for r in models_frame.itertuples():
        wanted = full_depth if r.arm in ("full", "probe") else depths.get((r.target, r.method, int(r.petl_seed)))
        keep.append(int(r.depth) == wanted)
    rows = models_frame[np.array(keep, dtype=bool)]
    speeds = {f"images/s, batch {b}": f"images_per_s_b{b}" for b in cfg.throughput_batches}
    table = rows.groupby(["target", "method", "arm"], sort=False)[
        ["depth", "accuracy", "accuracy_refit", "parameters", "removed_parameters", "macs", "storage_parameters",
         *speeds.values()]].mean()
    return pd.DataFrame({"depth": table.depth, "accuracy (%)": 100 * table.accuracy,
                         "head re-fit only (%)": 100 * table.accuracy_refit,
                         "parameters (M)": table.parameters / 1e6,
                         "removed (M)": table.removed_parameters / 1e6, "MACs (M)": table.macs / 1e6,
                         "storage (KiB)": table.storage_parameters * sls.BYTES_PER_PARAM / 1024,
                         **{name: table[column] for name, column in speeds.items()}})


def retrain_gains(cfg: Config, summary: pd.DataFrame) -> pd.Series:
    """Per pruned arm (``sls``, ``depgraph``): the accuracy points retraining adds over the head
    re-fit, mean over the first method's truncated targets of ``summary`` (``summary_table``)."""
    table = summary.reset_index()
    cut = table[(table.method == cfg.petl_methods[0]) & table.arm.isin(["sls", "depgraph"])
                & (table.depth < model_depth(cfg.model))]
    gain = cut["accuracy (%)"] - cut["head re-fit only (%)"]
    return gain.groupby(cut.arm).mean().reindex(["sls", "depgraph"])


def retraining_text(gains: pd.Series) -> str:
    """What retraining adds over the head re-fit (:func:`retrain_gains`), as a sentence of the
    chapter's prose, or that no target was truncated, so that neither arm was retrained."""
    if gains.isna().any():
        return "With no target truncated, the run retrains neither pruned arm"
    text = (f"Over the head re-fit, retraining adds {gains.sls:+.1f} points to SLS and "
            f"{gains.depgraph:+.1f} to DepGraph, on average over the truncated targets")
    if gains.depgraph > gains.sls:
        text += (": DepGraph, whose features change inside every block, has more to recover, "
                 "and a longer retraining may narrow claim 4’s gap further")
    return text


def kept_table(cfg: Config, results: Results) -> pd.DataFrame:
    """Per target and PETL method at cfg.alpha and SLS's t-SNE setting (mean over PETL seeds):
    the kept depth, whole when every seed agrees, and the last block's silhouette, beside the
    frozen backbone's last-block silhouette (before PETL)."""
    last = _sls_setting(cfg, results.depths, alpha=cfg.alpha)
    table = last.pivot_table(index="target", columns="method", values=["last_silhouette", "depth"]).loc[cfg.targets]
    frozen = _at(results.models, arm="probe").groupby("target").frozen_last_silhouette.mean()
    table[("last_silhouette", "frozen backbone")] = frozen.reindex(cfg.targets)
    depth = table["depth"]
    if depth.notna().all().all() and depth.mod(1).eq(0).all().all():
        table[depth.columns.map(lambda method: ("depth", method))] = depth.astype(int)
    return table.round(3)


ACCURACY_COLUMNS = ["depth", "accuracy (%)", "head re-fit only (%)", "parameters (M)", "removed (M)"]


def speed_columns(cfg: Config) -> list[str]:
    """The columns of ``summary_table`` on cost: depth, MACs, storage and throughput."""
    return ["depth", "MACs (M)", "storage (KiB)", *[f"images/s, batch {b}" for b in cfg.throughput_batches]]


def rounded(table: pd.DataFrame) -> pd.DataFrame:
    """``summary_table`` columns as text a page shows: depth and MACs whole, accuracy, storage and
    throughput to one decimal, parameters to two; a value that does not apply (the probe's
    sizes) as a dash."""
    digits = {"depth": 1, "accuracy (%)": 1, "parameters (M)": 2, "removed (M)": 2, "MACs (M)": 0,
              "storage (KiB)": 1}
    out = table.copy()
    for column in out:
        places = digits.get(column, 1)
        if column == "depth" and out[column].dropna().mod(1).eq(0).all():
            places = 0
        out[column] = [("—" if pd.isna(v) else f"{v:.{places}f}") for v in table[column]]
    return out


# ----------------------------------------------------------------------------- claims

PAPER = {
    "premise": "The paper scores blocks by how well their CLS features cluster the classes, "
               "motivated by the features' separability across layers.",
    "rise": "VTAB-1k, ViT-B/16 with Convpass: the silhouette grows with depth (method, figures).",
    "plateau": "Deep blocks add little on cross-domain data: the silhouette levels off or falls "
               "at the top (abstract, method).",
    "cut": "Structured and specialised VTAB tasks lose many top blocks at alpha = 0.3.",
    "accuracy": "Truncated models lose little accuracy against full-depth Convpass (tables).",
    "speed": "Throughput rises with the removed blocks (tables, batch 1).",
    "natural": "Natural VTAB tasks keep more blocks than structured and specialised ones.",
    "dg_accuracy": "At the same number of pruned parameters SLS is more accurate than DepGraph.",
    "dg_speed": "At the same number of pruned parameters SLS is faster than DepGraph.",
    "dg_storage": "SLS stores one index per task; width pruning stores a pruned backbone per task.",
    "alpha": "The kept depth is set by alpha (ablation over alpha).",
    "tsne": "t-SNE is stochastic; its seed and perplexity should not change the kept depth.",
    "raw": "The 2-D t-SNE map is what SLS scores; the raw features' silhouette is the "
           "alternative without t-SNE.",
}


def _claim(id_: str, statement: str, paper: str, evidence: str, direction: int = 1) -> claims.Claim:
    return claims.Claim(id_, statement, PAPER[paper], evidence, direction)


def method_curves(cfg: Config, layers: pd.DataFrame, method: str) -> dict[str, pd.DataFrame]:
    """Per target: the per-block means over PETL seeds of ``method``, t-SNE setting of SLS."""
    rows = _sls_setting(cfg, layers, method=method)
    return {t: rows[rows.target == t].groupby("layer")[["silhouette", "raw_silhouette", "probe_accuracy"]].mean()
            for t in cfg.targets if (rows.target == t).any()}


def top_share(curve: np.ndarray) -> float:
    """Share of the silhouette's rise (block 1 to L) gained in the top quarter of the blocks.

    A straight rise gives k / (L - 1) with k = L // 4; a plateau at the top gives less.
    """
    k = len(curve) // 4
    rise = curve[-1] - curve[0]
    return float((curve[-1] - curve[-1 - k]) / rise) if rise > 0 else float("nan")


def natural_top_share(cfg: Config, layers: pd.DataFrame) -> float:
    """``top_share`` of the natural targets' silhouette curves (first method, mean over them):
    the in-domain contrast to claim 1.plateau; NaN without a natural target."""
    curves = method_curves(cfg, layers, cfg.petl_methods[0])
    shares = [top_share(curves[t].silhouette.to_numpy()) for t in cfg.natural_targets if t in curves]
    return float(np.mean(shares)) if shares else float("nan")


def linear_top_share(cfg: Config) -> float:
    """The share of a straight rise that falls in its top quarter of blocks (as ``top_share``
    measures a curve): the yardstick of claim 1.plateau."""
    depth = model_depth(cfg.model)
    return (depth // 4) / (depth - 1)


def natural_top_share_text(cfg: Config, layers: pd.DataFrame) -> str:
    """The natural targets' :func:`natural_top_share` beside a straight rise's, as a clause of
    the chapter's prose, or that no natural target has a rising silhouette to compare."""
    share = natural_top_share(cfg, layers)
    if np.isnan(share):
        return "no natural target of this run has a rising silhouette to set beside it"
    subject = "target gains" if len(cfg.natural_targets) == 1 else "targets gain"
    verdict = "the opposite of a plateau" if share > linear_top_share(cfg) else "a plateau too"
    return f"the natural {subject} {100 * share:.0f} % there, {verdict}"


def test_claims(cfg: Config, layers: pd.DataFrame, depth_table: pd.DataFrame, models_frame: pd.DataFrame,
                correct: Mapping[tuple, np.ndarray], distances: pd.Series) -> list[claims.ClaimResult]:
    """The claims of the groups in ``cfg.claims``, each through the claims engine."""
    out: list[claims.ClaimResult] = []
    first = cfg.petl_methods[0]
    curves = method_curves(cfg, layers, first)
    depths = chosen_depths(cfg, depth_table)
    full_depth = model_depth(cfg.model)
    natural = [t for t in cfg.targets if t in cfg.natural_targets]
    others = [t for t in cfg.targets if t not in cfg.natural_targets]
    units = [(t, s) for t in cfg.targets for s in cfg.petl_seeds[first] if (t, first, s) in depths]
    if "premise" in cfg.claims:
        for t, curve in curves.items():
            claim = _claim(f"P.{t}", f"{t}: blocks rank alike by silhouette and by linear-probe "
                           "accuracy (Spearman rho over blocks)", "premise", "premise figure")
            out.append(claims.correlation(claim, curve.silhouette, curve.probe_accuracy, seed=cfg.seed))
    if "depth" in cfg.claims:
        out.append(claims.pooled_correlation(_claim(
            "1.rise", "The silhouette rises with depth (Spearman rho of silhouette and block index, "
            "pooled over targets)", "rise", "silhouette-versus-depth figure"),
            [(c.index.to_numpy(), c.silhouette.to_numpy()) for c in curves.values()]))
        k = full_depth // 4
        shares = [linear_top_share(cfg) - top_share(curves[t].silhouette.to_numpy()) for t in others if t in curves]
        shares = [s for s in shares if math.isfinite(s)]
        out.append(claims.directional(_claim(
            "1.plateau", f"On targets other than the natural ones the silhouette levels off at the "
            f"top: the top {k} blocks gain less of the rise than a straight line would (linear "
            "share minus measured share, mean over those targets)", "plateau",
            "silhouette-versus-depth figure"), shares))
        cut = [(t, full_depth - depths[t, first, s]) for t, s in units if t in others]
        claim = _claim("1.cut", f"Targets other than the natural ones lose top blocks at alpha "
                       f"{cfg.alpha} (blocks removed)", "cut", "kept-depth table")
        out.append(claims.directional(claim, [c for _, c in cut], cluster=[t for t, _ in cut])
                   if len({t for t, _ in cut}) >= 2 else
                   claims.not_testable(claim, "fewer than two targets besides the natural ones"))
    if "truncation" in cfg.claims:
        diff = [(t, 100 * d.mean()) for t in cfg.targets
                for s, d in paired_differences(cfg, depth_table, correct, "sls_vs_full", t, first).items()
                if depths[t, first, s] < full_depth]
        out.append(claims.non_inferiority(_claim(
            "2.accuracy", f"Truncating at the kept depth and retraining loses less than "
            f"{cfg.loss_margin:g} points (SLS minus full over the truncated models, points)", "accuracy",
            "accuracy table"), [d for _, d in diff], cfg.loss_margin, cluster=[t for t, _ in diff]))
        batch = max(cfg.throughput_batches)
        share = _ideal_shares(models_frame, depths, units, first, batch, full_depth)
        claim = _claim("2.speed", f"The truncated model is faster than the full one (share of the "
                       f"ideal speed-up L/d realised, %, batch {batch})", "speed", "throughput table")
        out.append(_directional_or_not(claim, share))
    if "natural" in cfg.claims:
        claim = _claim("3", "Natural targets keep more blocks than the others (kept depth of the "
                       "natural targets minus each other target's)", "natural", "kept-depth table")
        if natural and len(others) >= 2:
            mean_depth = {t: np.mean([depths[t, first, s] for tt, s in units if tt == t]) for t in cfg.targets}
            nat = np.mean([mean_depth[t] for t in natural])
            out.append(claims.directional(claim, [nat - mean_depth[t] for t in others]))
        else:
            out.append(claims.not_testable(claim, "needs a natural target and two others"))
    if "depgraph" in cfg.claims:
        diff = [(t, 100 * d.mean()) for t in cfg.targets
                for d in paired_differences(cfg, depth_table, correct, "sls_vs_depgraph", t, first).values()]
        claim = _claim("4.accuracy", "At equal removed parameters SLS is more accurate than DepGraph "
                       "(both retrained alike; points)", "dg_accuracy", "accuracy table")
        out.append(_directional_or_not(claim, diff))
        for name, batch in (("latency", min(cfg.throughput_batches)), ("throughput", max(cfg.throughput_batches))):
            gain = _speed_ratios(models_frame, depths, units, first, "sls", "depgraph", batch, full_depth)
            out.append(_directional_or_not(_claim(
                f"4.{name}", f"At equal removed parameters SLS is faster than DepGraph "
                f"(throughput gain in %, batch {batch})", "dg_speed", "throughput table"), gain))
        store = _pairs(models_frame, depths, units, first, "sls", "depgraph", full_depth, "storage_parameters")
        out.append(_directional_or_not(_claim(
            "4.storage", "SLS stores less per task than DepGraph (storage saved, % of DepGraph's)",
            "dg_storage", "storage table"), [(t, 100 * (1 - a / b)) for t, a, b in store]))
    if "alpha" in cfg.claims:
        lo, hi = min(cfg.alphas), max(cfg.alphas)
        at_lo, at_hi = chosen_depths(cfg, depth_table, lo), chosen_depths(cfg, depth_table, hi)
        diff = [(k[0], at_hi[k] - at_lo[k]) for k in at_lo]
        out.append(claims.directional(_claim(
            "5.alpha", f"A larger alpha keeps more blocks (kept depth at alpha {hi:g} minus at {lo:g})",
            "alpha", "alpha figure"), [d for _, d in diff], cluster=[t for t, _ in diff]))
    if "tsne" in cfg.claims:
        settings = tsne_settings(cfg)
        base = _at(depth_table, alpha=float(cfg.alpha))
        ref = {(r.target, r.method, r.petl_seed): r.depth for r in base.itertuples()
               if (r.tsne_seed, r.perplexity) == settings[0]}
        diff = [(r.target, r.depth - ref[r.target, r.method, r.petl_seed]) for r in base.itertuples()
                if (r.tsne_seed, r.perplexity) != settings[0]]
        out.append(claims.equivalence(_claim(
            "5.tsne", f"Another t-SNE seed or perplexity moves the kept depth by less than "
            f"{cfg.depth_margin:g} block(s)", "tsne", "t-SNE sensitivity table"),
            [d for _, d in diff], cfg.depth_margin, cluster=[t for t, _ in diff]))
        out.append(claims.pooled_correlation(_claim(
            "5.raw", "The raw features' silhouette ranks blocks as the t-SNE map's does (Spearman "
            "rho over blocks, pooled over targets)", "raw", "t-SNE sensitivity table"),
            [(c.silhouette.to_numpy(), c.raw_silhouette.to_numpy()) for c in curves.values()]))
    return out


def _directional_or_not(claim: claims.Claim, pairs: list[tuple[str, float]]) -> claims.ClaimResult:
    """Directional over (target, value) pairs clustered by target; not testable below two targets."""
    if len({t for t, _ in pairs}) < 2:
        return claims.not_testable(claim, f"SLS truncated fewer than two targets ({len(pairs)} models)")
    return claims.directional(claim, [v for _, v in pairs], cluster=[t for t, _ in pairs])


def _pairs(models_frame, depths, units, method, arm_a, arm_b, full_depth, column):
    """(target, value of arm a, value of arm b) per unit where both rows exist."""
    out = []
    for t, s in units:
        d = depths[t, method, s]
        rows = {arm: _at(models_frame, target=t, method=method, petl_seed=s, arm=arm,
                         depth=full_depth if arm == "full" else d) for arm in (arm_a, arm_b)}
        if all(len(r) for r in rows.values()):
            out.append((t, float(rows[arm_a][column].iloc[0]), float(rows[arm_b][column].iloc[0])))
    return out


def _ideal_shares(models_frame, depths, units, method, batch, full_depth):
    """(target, share of the ideal speed-up realised in %) per truncated unit.

    Truncating L blocks to d ideally multiplies throughput by L / d; the share is
    (measured speed-up - 1) / (L / d - 1): 0 means no faster, 100 the ideal. Dividing by the
    ideal puts a one-block cut and a seven-block cut on one scale, so the targets' different
    kept depths do not become the claim's spread. The speed-up over the full model is paired
    round by round (:func:`measure_models`).
    """
    column = f"speedup_b{batch}"
    out = []
    for t, s in units:
        d = depths[t, method, s]
        pair = _pairs(models_frame, depths, [(t, s)], method, "sls", "full", full_depth, column)
        if d < full_depth and pair:
            out.append((t, 100 * (pair[0][1] - 1) / (full_depth / d - 1)))
    return out


def _speed_ratios(models_frame, depths, units, method, arm_a, arm_b, batch, full_depth):
    """(target, throughput gain of arm a over arm b in %) per unit, from each arm's speed-up
    over the full model timed in the same rounds."""
    column = f"speedup_b{batch}"
    return [(t, 100 * (a / b - 1))
            for t, a, b in _pairs(models_frame, depths, units, method, arm_a, arm_b, full_depth, column)]


# ----------------------------------------------------------------------------- figures


def _target_colours(cfg: Config) -> dict[str, tuple]:
    """One colour per target, in the order of cfg.targets (the hue order of the figures)."""
    return dict(zip(cfg.targets, sns.color_palette(n_colors=len(cfg.targets))))


def _mean_depth(depths: Mapping[tuple, int], target: str, method: str) -> float:
    """Kept depth of ``target`` under ``method``, mean over the PETL seeds (chosen_depths)."""
    return float(np.mean([d for (t, m, _), d in depths.items() if t == target and m == method]))


def silhouette_figure(results: Results, cfg: Config):
    """Silhouette of each block's t-SNE map against depth, one panel per PETL method, with each
    target's kept depth at alpha (dotted): where SLS cuts each curve."""
    depths = chosen_depths(cfg, results.depths)
    grid = sns.relplot(data=_sls_setting(cfg, results.layers), x="layer", y="silhouette", hue="target",
                       col="method", kind="line", marker="o", errorbar=None, height=3.2, aspect=1.25,
                       hue_order=cfg.targets)
    colours = _target_colours(cfg)
    for method, ax in grid.axes_dict.items():
        for target in cfg.targets:
            ax.axvline(_mean_depth(depths, target, method), color=colours[target], ls=":", lw=1.5)
        ax.axhline(0, color="grey", lw=0.8)
    grid.set_titles("{col_name}")
    grid.set_axis_labels("block", "silhouette of the t-SNE map")
    grid.figure.suptitle("dotted: each target's kept depth", y=1.03)
    return grid.figure


def tsne_maps_figure(results: Results, cfg: Config):
    """t-SNE maps of the blocks cfg.map_layers, one row per target (first method, first PETL
    seed), coloured by class and titled with the block's silhouette and whether SLS keeps it:
    what the score sees."""
    first = cfg.petl_methods[0]
    seed = cfg.petl_seeds[first][0]
    depths = chosen_depths(cfg, results.depths)
    fig, axes = plt.subplots(len(cfg.targets), len(cfg.map_layers), squeeze=False,
                             figsize=(2.1 * len(cfg.map_layers), 2.1 * len(cfg.targets)))
    for r, target in enumerate(cfg.targets):
        scores = _sls_setting(cfg, results.layers, target=target, method=first, petl_seed=seed).set_index("layer")
        for c, layer in enumerate(cfg.map_layers):
            points = results.maps[target][layer - 1]
            ax = axes[r, c]
            ax.scatter(points[:, 0], points[:, 1], c=results.map_labels[target], cmap="tab10", s=4,
                       vmin=0, vmax=9, linewidths=0)
            kept = "kept" if layer <= depths[target, first, seed] else "cut"
            ax.set_title(f"{target} · block {layer} ({kept})\nSC = {scores.silhouette[layer]:.2f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def premise_figure(results: Results, cfg: Config):
    """Linear-probe accuracy against silhouette per block, one panel per target titled with
    Spearman's rho (claim P): whether the silhouette ranks blocks as separability does."""
    curves = method_curves(cfg, results.layers, cfg.petl_methods[0])
    premise = pd.concat(curves, names=["target"]).reset_index()
    grid = sns.relplot(data=premise, x="silhouette", y="probe_accuracy", hue="layer", col="target",
                       col_wrap=min(3, len(cfg.targets)), palette="viridis", height=2.6, col_order=cfg.targets,
                       facet_kws={"sharex": False, "sharey": False})
    claim_rows = results.claims.set_index("claim")
    for target, ax in grid.axes_dict.items():
        if f"P.{target}" in claim_rows.index:
            ax.set_title(f"{target}: ρ = {claim_rows.effect[f'P.{target}']:.2f}")
    grid.set_axis_labels("silhouette (t-SNE map)", "linear-probe accuracy")
    return grid.figure


def depth_distance_figure(results: Results, cfg: Config):
    """Kept depth at alpha (first method) against each target's distance from ImageNet, each
    point labelled with SLS's accuracy change against the full model: does depth follow domain?"""
    first = cfg.petl_methods[0]
    depths = chosen_depths(cfg, results.depths)
    drop = _at(results.comparisons, comparison="sls_vs_full", method=first).set_index("target").effect_pp
    colours = _target_colours(cfg)
    span = float(np.ptp(results.distances.reindex(cfg.targets))) or 1.0
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    placed: list[tuple[float, float]] = []
    for target in cfg.targets:
        x, d = results.distances[target], _mean_depth(depths, target, first)
        ax.scatter(x, d, color=colours[target], s=60)
        stacked = sum(abs(x - px) < 0.08 * span and abs(d - pd_) < 0.6 for px, pd_ in placed)
        placed.append((x, d))  # labels of points that (nearly) coincide go one under another
        label = target + (f" {drop[target]:+.1f}" if target in drop else "")
        ax.annotate(label, (x, d), textcoords="offset points", xytext=(7, 3 - 10 * stacked), fontsize=8,
                    color=colours[target])
    ax.set(xlabel="distance from ImageNet (1 − label spread, notebook 00)", ylabel=f"kept depth at α = {cfg.alpha}",
           ylim=(0, model_depth(cfg.model) + 0.5), title=f"{first}: kept depth (labels: SLS − full, points)")
    ax.margins(x=0.15)
    return fig
