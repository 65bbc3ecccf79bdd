"""Notebook 00, what every chapter starts from: the ImageNet models and the target datasets.

For each upstream model and each candidate input resolution it measures what a chapter
needs to choose its resolution: parameters and MACs, forward and training throughput, and
linear probes on every target with ImageNet weights against the same network at random
initialisation. It also checks the weights on the ImageNet stub images and measures how far
each target lies from what the ImageNet classifier knows (the entropy of its predictions).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from .. import assets, claims, data, metrics, models
from ..config import NotebookConfig
from ..errors import ConfigError
from ..features import probe_accuracy
from ..results import RunStore
from ..seeding import seed_everything
from ..train import progress_bar

PROBE_KEY = ("model", "resolution", "init", "target")
PROBE_COLUMNS = ("probe_accuracy", "imagenet_entropy", "imagenet_spread", "train_images", "test_images",
                 "seconds")


@dataclass(frozen=True)
class Config(NotebookConfig):
    NOTEBOOK = "00_upstream"

    seed: int
    upstream_models: list[str]
    resolutions: dict[str, list[int]]
    targets: list[str]
    synthetic_per_class: int
    probe_train_per_class: int
    probe_test_per_class: int
    throughput_batch: int
    throughput_seconds: float

    def validate(self) -> None:
        self.check_choices("upstream_models", models.upstream_names())
        self.check_choices("targets", data.REAL + data.SYNTHETIC)
        for key in ("synthetic_per_class", "probe_train_per_class", "probe_test_per_class",
                    "throughput_batch"):
            self.check_range(key, low=1)
        self.check_range("throughput_seconds", low=0, low_open=True)
        missing = [m for m in self.upstream_models if m not in self.resolutions]
        if missing:
            raise ConfigError(f"resolutions has no entry for {missing[0]!r}; give each upstream "
                              f"model its list of candidate resolutions")
        if self.probe_train_per_class > self.synthetic_per_class:
            raise ConfigError(f"probe_train_per_class ({self.probe_train_per_class}) exceeds the "
                              f"{self.synthetic_per_class} generated images per class")


@dataclass(frozen=True)
class Results:
    """Tidy frames of one run of notebook 00."""

    stubs: pd.DataFrame  # model, image, truth, prediction, correct, confidence
    costs: pd.DataFrame  # model, resolution, parameters, macs, forward_img_s, train_img_s
    probes: pd.DataFrame  # PROBE_KEY + PROBE_COLUMNS
    targets: dict[str, tuple[data.ImageSet, data.ImageSet]]  # probe train / test images


def target_sets(cfg: Config) -> dict[str, tuple[data.ImageSet, data.ImageSet]]:
    """Probe train and test images of every target: ``probe_*_per_class`` per class, seeded."""
    sets = {}
    for name in cfg.targets:
        train = data.load_dataset(name, "train", cfg.synthetic_per_class, cfg.seed)
        test = data.load_dataset(name, "test", cfg.synthetic_per_class, cfg.seed)
        sets[name] = (data.few_shot(train, cfg.probe_train_per_class, cfg.seed),
                      data.few_shot(test, min(cfg.probe_test_per_class, int(test.class_counts().min())),
                                    cfg.seed))
    return sets


def stub_table(model_names: list[str]) -> pd.DataFrame:
    """Top-1 prediction of each model on the 16 ImageNet stub images at 224 px, with timm's
    own evaluation transform (resize by crop_pct, centre crop, the model's mean/std)."""
    from timm.data import create_transform, resolve_data_config

    stubs = data.imagenet_stubs()
    rows = []
    for name in model_names:
        model = models.upstream_model(name)
        transform = create_transform(**resolve_data_config({}, model=model))
        with torch.no_grad():
            probs = model(torch.stack([transform(image) for _, image, _ in stubs])).softmax(1)
        for (stem, _, truth), p in zip(stubs, probs):
            rows.append({"model": name, "image": stem, "truth": truth,
                         "prediction": int(p.argmax()), "confidence": float(p.max())})
    frame = pd.DataFrame(rows)
    return frame.assign(correct=frame.truth == frame.prediction)


def train_images_per_second(model: torch.nn.Module, batch: int, side: int, seconds: float) -> float:
    """Images per second of SGD steps (forward, cross-entropy, backward, step) on random data."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 3, side, side), torch.randint(0, 1000, (batch,))
    model.train()
    steps, start = -1, 0.0
    while steps < 2 or time.perf_counter() - start < seconds:
        if steps == 0:  # the first step warms up the allocator
            start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    model.eval()
    return batch * steps / (time.perf_counter() - start)


def cost_table(cfg: Config) -> pd.DataFrame:
    """Parameters, MACs per image and throughput (2 threads) of each model at each resolution."""
    rows = []
    for name in cfg.upstream_models:
        for side in cfg.resolutions[name]:
            model = models.upstream_model(name, side)
            forward = metrics.measure_latency(model, cfg.throughput_batch, (3, side, side),
                                              min_run_time=cfg.throughput_seconds)
            rows.append({"model": name, "resolution": side,
                         "parameters": metrics.count_parameters(model),
                         "macs": metrics.count_macs(model, (1, 3, side, side)),
                         "forward_img_s": forward["images_per_s"],
                         "train_img_s": train_images_per_second(model, cfg.throughput_batch, side,
                                                                 cfg.throughput_seconds)})
    return pd.DataFrame(rows)


@torch.no_grad()
def _features_and_head(model, images: data.ImageSet) -> tuple[np.ndarray, torch.Tensor]:
    """Pre-logit features of every image and the ImageNet head's log-probabilities."""
    feats, logps = [], []
    for batch, _ in data.make_loader(images, 128, shuffle=False):
        pre = model.forward_head(model.forward_features(models.adapt_input(model, batch)), pre_logits=True)
        feats.append(pre)
        logps.append(model.get_classifier()(pre).log_softmax(1))
    return torch.cat(feats).double().numpy(), torch.cat(logps)


def imagenet_entropy(logp: torch.Tensor) -> float:
    """Mean normalised entropy of each image's ImageNet prediction (0: sure of one class)."""
    return float((-(logp.exp() * logp).sum(1) / math.log(logp.shape[1])).mean())


def imagenet_spread(logp: torch.Tensor) -> float:
    """Normalised entropy of the top-1 ImageNet labels over a set of images: near 1 when the
    images spread over many ImageNet classes, as natural photos do, near 0 when the classifier
    files them all under a few (a target far from what ImageNet taught it)."""
    counts = torch.bincount(logp.argmax(1), minlength=logp.shape[1]).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum() / math.log(min(len(logp), logp.shape[1])))


def probe_units(cfg: Config) -> list[dict]:
    return [{"model": m, "resolution": r, "init": init, "target": t}
            for m in cfg.upstream_models for r in cfg.resolutions[m]
            for init in ("imagenet", "random") for t in cfg.targets]


def run_probes(cfg: Config, targets, progress: bool = True) -> pd.DataFrame:
    """One logistic-regression probe per (model, resolution, init, target); resumable.

    Features of one (model, resolution, init) are extracted target by target, and every
    finished probe is a row of ``runs.csv``, so an interrupted run loses at most one probe.
    """
    store = RunStore(cfg.results_dir, key=PROBE_KEY, required=("probe_accuracy",))
    pending = list(store.pending(probe_units(cfg)))
    bar = progress_bar(len(pending), "probes", progress)
    network = None
    for unit in pending:
        start = time.perf_counter()
        spec = (unit["model"], unit["resolution"], unit["init"])
        if network is None or network[0] != spec:
            seed_everything(cfg.seed)
            network = spec, models.upstream_model(unit["model"], unit["resolution"],
                                                  pretrained=unit["init"] == "imagenet")
        train_set, test_set = targets[unit["target"]]
        train_x, _ = _features_and_head(network[1], train_set)
        test_x, logp = _features_and_head(network[1], test_set)
        accuracy = probe_accuracy(train_x, train_set.labels.numpy(), test_x, test_set.labels.numpy(),
                                  seed=cfg.seed)
        store.add(unit | {"probe_accuracy": accuracy, "imagenet_entropy": imagenet_entropy(logp),
                          "imagenet_spread": imagenet_spread(logp),
                          "train_images": len(train_set), "test_images": len(test_set),
                          "seconds": time.perf_counter() - start})
        bar.update()
    bar.close()
    return store.frame


def run(cfg: Config, progress: bool = True) -> Results:
    """Everything notebook 00 shows, as tidy frames (probes resume from ``runs.csv``)."""
    seed_everything(cfg.seed)
    targets = target_sets(cfg)
    return Results(stubs=stub_table(cfg.upstream_models), costs=cost_table(cfg),
                   probes=run_probes(cfg, targets, progress), targets=targets)


def probe_gains(probes: pd.DataFrame) -> pd.DataFrame:
    """Per (model, resolution, target): ImageNet and random-init probe accuracy, their gap
    (``gain``) and its 95 % CI (``gain_low``, ``gain_high``; Newcombe's interval over each
    probe's test images, conservative since both probes see the same images)."""
    wide = probes.pivot_table(index=["model", "resolution", "target"], columns="init",
                              values=["probe_accuracy", "test_images"])
    wide.columns = [f"{init}_{value}" for value, init in wide.columns]
    intervals = [claims.proportion_difference_ci(r.imagenet_probe_accuracy, int(r.imagenet_test_images),
                                                 r.random_probe_accuracy, int(r.random_test_images))
                 for r in wide.itertuples()]
    return pd.DataFrame({"imagenet": wide.imagenet_probe_accuracy, "random": wide.random_probe_accuracy,
                         "gain": [i.effect for i in intervals], "gain_low": [i.ci_low for i in intervals],
                         "gain_high": [i.ci_high for i in intervals]}, index=wide.index).reset_index()


def gain_table(gains: pd.DataFrame, costs: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """Per (model, resolution): the probe gain on each target in whole points (:func:`probe_gains`;
    its CI spans several) and ``training cost (x)``, a training step's cost per image as a
    multiple of its cost at the model's smallest side: what a chapter pays for a larger input."""
    table = 100 * gains.pivot_table(index=["model", "resolution"], columns="target", values="gain")[targets]
    train_speed = costs.set_index(["model", "resolution"]).train_img_s
    at_smallest = train_speed.groupby("model").transform(lambda speeds: speeds.sort_index().iloc[0])
    table = table.round(0).astype(int)  # whole points: each gain's CI spans several
    table["training cost (x)"] = (at_smallest / train_speed).round(1)
    table.columns.name = None
    return table


def gain_figure(gains: pd.DataFrame, targets: list[str], columns: int = 4):
    """The probe gain of :func:`probe_gains` in points with its 95 % CI, one panel per target
    (``columns`` to a row), against the input side, one line per model: how sure each gain is at
    these test sizes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    models_ = list(dict.fromkeys(gains.model))
    colours = dict(zip(models_, sns.color_palette(n_colors=len(models_))))
    rows = -(-len(targets) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.2 * rows), sharey=True, squeeze=False)
    for ax, target in zip(axes.flat, targets):
        for model in models_:
            found = gains[(gains.target == target) & (gains.model == model)].sort_values("resolution")
            ax.errorbar(found.resolution, 100 * found.gain, capsize=2, marker="o", markersize=3,
                        yerr=[100 * (found.gain - found.gain_low), 100 * (found.gain_high - found.gain)],
                        color=colours[model], label=model)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title(target, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("input side (px)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("gain (points)", fontsize=8)
    for ax in axes.flat[len(targets):]:
        ax.axis("off")
    legend_at = axes.flat[-1] if len(targets) < axes.size else axes.flat[0]
    legend_at.legend(*axes.flat[0].get_legend_handles_labels(), title="ImageNet − random init,\n95 % CI",
                     fontsize=8, title_fontsize=8, frameon=False, loc="center")
    fig.tight_layout()
    return fig


def distances(probes: pd.DataFrame) -> pd.DataFrame:
    """Each target's distance from ImageNet as the ImageNet head sees it, per model and
    resolution: 1 - :func:`imagenet_spread` of its test images (ImageNet weights only)."""
    pretrained = probes[probes.init == "imagenet"].assign(distance=lambda f: 1 - f.imagenet_spread)
    return pretrained.pivot_table(index="target", columns=["model", "resolution"], values="distance")


def asset_table() -> pd.DataFrame:
    """Provenance, licence and caveats of every external file, from the asset manifest."""
    return pd.DataFrame([{"asset": a.name, "source": a.url, "licence": a.licence,
                          "citation": a.citation, "caveat": a.caveat}
                         for a in assets.MANIFEST.values()]).set_index("asset")
