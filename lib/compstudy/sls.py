"""SLS: straightforward layer-wise pruning of a PETL-transferred ViT (Han & Tang, ECCV 2024).

Pipeline (papers.md §3.2), written from the paper's description:

1. :func:`block_cls_features` — the CLS token after every block (before the final norm) of
   the trained PETL model, on the target's training images;
2. :func:`tsne_map` — openTSNE 2-D map (PCA init, perplexity 30, fixed seed, 750 iterations
   as sklearn's 1000 with 250 of them exaggerated), min-max normalised per axis;
   :func:`silhouette` — sklearn's silhouette of the map with the class labels;
3. :func:`select_depth` — threshold T = alpha * SC_last, walked down from the top: keep
   blocks 1..d with d the shallowest layer such that every layer d..L scores >= T;
4. :func:`truncate` — the model runs only the kept blocks, then the final norm;
5. :func:`depgraph_prune` — the width-pruning baseline: Torch-Pruning's Group-Taylor
   importance on the same PETL model, ratio searched so the removed parameter count
   matches SLS's, attention heads kept (head dims pruned) and reset afterwards;
6. :func:`measure` — accuracy, parameters, per-task storage and throughput.
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from . import config, data, features, metrics, models, paths, petl, train
from .errors import ConfigError
from .results import atomic_write_bytes
from .seeding import seed_everything

DEFAULT_ALPHA = 0.3
BYTES_PER_PARAM = 4  # float32 storage

# ----------------------------------------------------------------------------- validation


def check_alpha(alpha: float) -> float:
    """alpha must lie in (0, 1]: T = alpha * SC_last is a fraction of the last layer's score."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise ConfigError(f"alpha must lie in (0, 1], got {alpha!r}")
    return float(alpha)


def check_layer(layer: int, depth: int, what: str = "layer index") -> int:
    """A 1-based block index of a ``depth``-block model."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= depth:
        raise ConfigError(f"{what} {layer!r} is beyond the model's depth; valid: 1..{depth}")
    return layer


def model_depth(model_name: str) -> int:
    """Number of blocks of a ViT architecture (built at random init, no weights loaded)."""
    model = models.build_model(model_name, num_classes=10)
    if not hasattr(model, "blocks"):
        raise ConfigError(f"SLS needs a ViT; model {model_name!r} has no transformer blocks")
    return len(model.blocks)


def validate_config(cfg) -> int:
    """Check every user-settable value of notebook 03 before any training; return the depth."""
    for method in cfg.petl_methods:
        petl.check_method(method)
    check_alpha(cfg.alpha)
    for alpha in cfg.alphas:
        check_alpha(alpha)
    depth = model_depth(cfg.model)
    for layer in cfg.map_layers:
        check_layer(layer, depth, "map layer")
    for target in cfg.target_datasets:
        data.check_dataset_name(target)
    if cfg.tsne_per_class < 2 or cfg.train_per_class < cfg.tsne_per_class:
        raise ConfigError(f"need 2 <= tsne_per_class <= train_per_class, got "
                          f"{cfg.tsne_per_class} and {cfg.train_per_class}")
    return depth


# ----------------------------------------------------------------------------- features


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = model.patch_embed(x)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    return model.norm_pre(x)


@torch.no_grad()
def block_outputs(model: nn.Module, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
    """Token output of block ``depth`` (1-based; default: the last), before the final norm."""
    depth = len(model.blocks) if depth is None else check_layer(depth, len(model.blocks))
    h = _embed(model, x)
    for block in model.blocks[:depth]:
        h = block(h)
    return h


@torch.no_grad()
def block_cls_features(model: nn.Module, images: data.ImageSet, batch_size: int = 256) -> np.ndarray:
    """CLS token after every block (before the final norm): array L x N x D (float32)."""
    model.eval()
    per_batch = []
    for batch, _ in data.make_loader(images, batch_size, shuffle=False):
        h = _embed(model, models.adapt_input(model, batch))
        cls = []
        for block in model.blocks:
            h = block(h)
            cls.append(h[:, 0])
        per_batch.append(torch.stack(cls))
    return torch.cat(per_batch, dim=1).numpy().astype(np.float32)


# ----------------------------------------------------------------------------- scoring


def effective_perplexity(n_points: int, perplexity: float) -> float:
    """Perplexity clamped for tiny sets: the 3*perplexity neighbours must exist."""
    if n_points < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n_points}")
    return float(min(perplexity, (n_points - 1) / 3))


def tsne_map(x: np.ndarray, perplexity: float = 30.0, seed: int = 0, n_jobs: int = 1,
             n_iter: int = 750) -> np.ndarray:
    """2-D openTSNE map of ``x`` (N x D), min-max normalised per axis to [0, 1].

    Settings follow the paper's sklearn call (papers.md §3.7): PCA initialisation, Euclidean
    metric, Barnes-Hut gradients (theta 0.5), 250 exaggerated iterations then the rest.
    """
    from openTSNE import TSNE

    x = np.asarray(x, dtype=np.float64)
    embedding = TSNE(n_components=2, perplexity=effective_perplexity(len(x), perplexity),
                     initialization="pca", metric="euclidean", negative_gradient_method="bh",
                     early_exaggeration_iter=250, n_iter=max(n_iter - 250, 1),
                     n_jobs=n_jobs, random_state=seed).fit(x)
    y = np.asarray(embedding, dtype=np.float64)
    span = y.max(0) - y.min(0)
    return (y - y.min(0)) / np.where(span > 0, span, 1.0)


def silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    """sklearn's silhouette coefficient (Euclidean) of ``points`` with class ``labels``."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(points, labels, metric="euclidean"))


def layer_scores(feats: np.ndarray, labels: np.ndarray, perplexity: float = 30.0, seed: int = 0,
                 n_jobs: int = 1, n_iter: int = 750) -> tuple[np.ndarray, np.ndarray]:
    """Silhouette of the t-SNE map of every layer; returns (scores L, maps L x N x 2)."""
    maps = np.stack([tsne_map(f, perplexity, seed, n_jobs, n_iter) for f in feats])
    return np.array([silhouette(m, labels) for m in maps]), maps


# ----------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Selection:
    """Outcome of the threshold walk: kept ``depth`` (1-based), threshold and which rule applied."""

    depth: int
    threshold: float
    rule: str  # "walk" | "all_above" | "last_not_positive"


def select_depth(scores: Sequence[float], alpha: float = DEFAULT_ALPHA, min_depth: int = 1) -> Selection:
    """The SLS threshold walk over per-layer scores (``scores[0]`` = block 1).

    T = alpha * SC_L. Walking l = L, L-1, ...: while SC_l >= T the kept depth is l; the walk
    stops at the first layer below T. Edge cases, made explicit:

    * SC_L <= 0 (the last layer does not cluster the classes; the official code aborts):
      no evidence to prune, keep the full depth (rule ``last_not_positive``);
    * every layer scores >= T: the walk reaches the bottom, d = ``min_depth`` (1 by default;
      a model keeps at least one block) (rule ``all_above``).
    """
    alpha = check_alpha(alpha)
    scores = [float(s) for s in scores]
    if not scores or any(math.isnan(s) for s in scores):
        raise ValueError(f"need a non-empty sequence of finite scores, got {scores}")
    n = len(scores)
    check_layer(min_depth, n, "min_depth")
    last = scores[-1]
    threshold = alpha * last
    if last <= 0:
        return Selection(n, threshold, "last_not_positive")
    depth = n
    for layer in range(n, min_depth - 1, -1):
        if scores[layer - 1] < threshold:
            return Selection(depth, threshold, "walk")
        depth = layer
    return Selection(depth, threshold, "all_above")


def truncate(model: nn.Module, depth: int) -> nn.Module:
    """A copy of ``model`` running blocks 1..depth then the final norm and head."""
    check_layer(depth, len(model.blocks), "kept depth")
    model = copy.deepcopy(model)
    model.blocks = model.blocks[:depth]
    return model


# ----------------------------------------------------------------------------- DepGraph


def _taylor_gradients(model: nn.Module, train_set: data.ImageSet, n_batches: int,
                      batch_size: int, seed: int) -> None:
    """Accumulate cross-entropy gradients on every parameter (backbone included)."""
    for p in model.parameters():
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    model.eval()
    loader = data.make_loader(train_set, batch_size, shuffle=True, seed=seed)
    for i, (images, labels) in enumerate(loader):
        if i >= n_batches:
            break
        F.cross_entropy(model(models.adapt_input(model, images)), labels).backward()


def _fix_attention(model: nn.Module) -> None:
    """After head-dim pruning: reset head_dim / attn_dim / scale from the pruned qkv width."""
    from timm.layers import Attention

    for m in model.modules():
        if isinstance(m, Attention):
            m.head_dim = m.qkv.out_features // (3 * m.num_heads)
            m.attn_dim = m.num_heads * m.head_dim
            m.scale = m.head_dim ** -0.5
            if m.attn_dim * 3 != m.qkv.out_features or m.proj.in_features != m.attn_dim:
                raise RuntimeError("inconsistent attention after pruning")


def prune_width(model: nn.Module, ratio: float, example: torch.Tensor, round_to: int = 2) -> nn.Module:
    """Group-Taylor width pruning of a copy of ``model`` (its .grad must hold Taylor gradients).

    Settings of the paper's DepGraph run (papers.md §3.3): local (per-layer) ratio, head
    dims pruned, head count kept, adapters and the classifier head ignored.
    """
    import torch_pruning as tp
    from timm.layers import Attention

    pruned = copy.deepcopy(model)
    grads = dict(model.named_parameters())
    for name, p in pruned.named_parameters():  # deepcopy drops .grad, which Taylor reads
        p.grad = None if grads[name].grad is None else grads[name].grad.clone()
    if ratio <= 0:
        return pruned
    ignored = [pruned.head] + [m for a in petl.adapter_modules(pruned) for m in a.modules()
                               if isinstance(m, (nn.Linear, nn.Conv2d))]
    num_heads = {m.qkv: m.num_heads for m in pruned.modules() if isinstance(m, Attention)}
    with warnings.catch_warnings():  # cls_token / pos_embed are unwrapped; the width they
        warnings.simplefilter("ignore")  # follow is kept (adapters are ignored), so no effect
        pruner = tp.pruner.BasePruner(
            pruned, example, importance=tp.importance.GroupTaylorImportance(),
            pruning_ratio=ratio, global_pruning=False, ignored_layers=ignored, round_to=round_to,
            num_heads=num_heads, prune_num_heads=False, prune_head_dims=True)
        pruner.step()
    _fix_attention(pruned)
    return pruned


def depgraph_prune(model: nn.Module, train_set: data.ImageSet, target_removed: int,
                   n_batches: int = 10, batch_size: int = 32, seed: int = 0,
                   tolerance: float = 0.015, max_trials: int = 6) -> tuple[nn.Module, dict]:
    """Width-prune a copy of the PETL ``model`` so it loses ``target_removed`` parameters.

    The per-layer ratio is found by a secant / bisection search on the removed count
    (stops within ``tolerance`` relative error). Returns the pruned model, its backbone
    frozen and its adapters + head trainable again, and ``{ratio, removed, rel_error}``.
    """
    work = copy.deepcopy(model)
    total = metrics.count_parameters(work)
    example = torch.randn(1, *work.pretrained_cfg["input_size"])
    if target_removed <= 0:
        return _refreeze(work), {"ratio": 0.0, "removed": 0, "rel_error": 0.0}
    _taylor_gradients(work, train_set, n_batches, batch_size, seed)

    lo, hi = 0.0, 0.98
    # first guess: the widths Taylor pruning can remove are qkv/proj/fc1/fc2 of every block
    prunable = sum(p.numel() for n, p in work.blocks.named_parameters()
                   if any(k in n for k in (".qkv.", ".proj.", ".fc1.", ".fc2.")))
    ratio = min(target_removed / max(prunable, 1), hi)
    best = None
    trials = 0
    for trials in range(1, max_trials + 1):
        pruned = prune_width(work, ratio, example)
        removed = total - metrics.count_parameters(pruned)
        error = (removed - target_removed) / target_removed
        if best is None or abs(error) < abs(best[2]):
            best = (pruned, ratio, error, removed)
        if abs(error) <= tolerance:
            break
        if removed < target_removed:
            lo = ratio
        else:
            hi = ratio
        guess = ratio * target_removed / max(removed, 1)  # removed count ~ linear in ratio
        ratio = guess if lo < guess < hi else (lo + hi) / 2
    pruned, ratio, error, removed = best
    for p in pruned.parameters():
        p.grad = None
    return _refreeze(pruned), {"ratio": ratio, "removed": removed, "rel_error": error,
                               "trials": trials}


def _refreeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    for p in petl.petl_parameters(model):
        p.requires_grad_(True)
    return model.eval()


def attention_consistent(model: nn.Module) -> bool:
    """Every timm Attention's head count x head dim equals its qkv / proj widths."""
    from timm.layers import Attention

    return all(m.num_heads * m.head_dim * 3 == m.qkv.out_features
               and m.proj.in_features == m.num_heads * m.head_dim
               for m in model.modules() if isinstance(m, Attention))


# ----------------------------------------------------------------------------- measurement


def storage_parameters(model: nn.Module, kind: str) -> int:
    """Parameters stored per task.

    ``petl`` / ``sls``: the adapters of the blocks the model runs + head (the backbone is
    shared by all tasks; SLS adds one integer, the kept depth). ``depgraph``: every
    parameter, since each task gets its own pruned backbone.
    """
    if kind in ("petl", "sls"):
        return petl.count_petl_parameters(model) + (1 if kind == "sls" else 0)
    if kind == "depgraph":
        return metrics.count_parameters(model)
    raise ValueError(f"unknown storage kind {kind!r}")


def measure(model: nn.Module, test_set: data.ImageSet, kind: str,
            batch_sizes: Iterable[int] = (1, 64), min_run_time: float = 0.5) -> dict:
    """Accuracy, parameters, MACs, per-task storage and throughput at each batch size.

    Throughput uses the run's torch thread count (``COMPSTUDY_THREADS``, 2 by default).
    """
    model.eval()
    loader = data.make_loader(test_set, 256, shuffle=False)
    row = {"accuracy": train.evaluate(model, loader)["accuracy"],
           "depth": len(model.blocks),
           "parameters": metrics.count_parameters(model),
           "macs": metrics.count_macs(model),
           "storage_parameters": storage_parameters(model, kind)}
    row["storage_kib"] = row["storage_parameters"] * BYTES_PER_PARAM / 1024
    for b in batch_sizes:
        row[f"images_per_s_b{b}"] = metrics.measure_latency(
            model, b, input_size=tuple(model.pretrained_cfg["input_size"]),
            num_threads=torch.get_num_threads(), min_run_time=min_run_time)["images_per_s"]
    return row


def layer_probe_accuracies(train_feats: np.ndarray, train_y: np.ndarray,
                           test_feats: np.ndarray, test_y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Linear-probe test accuracy on the CLS features of every layer (the paper's Fig. 2)."""
    return np.array([features.probe_accuracy(a, train_y, b, test_y, seed)
                     for a, b in zip(train_feats, test_feats)])


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


# ----------------------------------------------------------------------------- domain distance


def read_distances(profile: str) -> pd.Series | None:
    """Fréchet distances measured by notebook 00 (rows kind == distance), if it ran."""
    path = paths.RESULTS_DIR / profile / "00_upstream" / "main" / "runs.csv"
    if not path.exists():
        return None
    runs = pd.read_csv(path)
    if "kind" not in runs or "distance" not in runs:
        return None
    rows = runs[runs.kind == "distance"]
    return rows.set_index("dataset")["distance"] if len(rows) else None


def measure_distances(model: nn.Module, source: data.ImageSet,
                      targets: Mapping[str, data.ImageSet]) -> pd.Series:
    """Fréchet distance source -> target in ``model``'s pooled feature space."""
    src = features.extract_features(model, source)
    return pd.Series({name: features.frechet_distance(src, features.extract_features(model, t))
                      for name, t in targets.items()}, name="distance")


def domain_distances(profile: str, model: nn.Module, source: data.ImageSet,
                     targets: Mapping[str, data.ImageSet]) -> tuple[pd.Series, str]:
    """Notebook 00's distances when they cover every target, else measured here."""
    stored = read_distances(profile)
    if stored is not None and set(targets) <= set(stored.index):
        return stored.loc[list(targets)], "notebook 00 (resnet18 features)"
    return measure_distances(model, source, targets), "measured here (upstream ViT features)"


# ----------------------------------------------------------------------------- caching


def cache_path(kind: str, key: str, suffix: str) -> Path:
    return paths.ARTIFACTS_DIR / "sls" / f"{kind}-{key}.{suffix}"


def cached_scores(key: str) -> dict | None:
    path = cache_path("scores", key, "npz")
    if not path.exists():
        return None
    with np.load(path) as payload:
        return {k: payload[k] for k in payload.files}


def save_scores(key: str, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(cache_path("scores", key, "npz"), buffer.getvalue())


def petl_model(backbone: nn.Module, method: str, target: str, train_set: data.ImageSet,
               settings: train.FitSettings, spec: Mapping, scale: float = 1.0,
               batch_size: int = 64, seed: int = 0) -> tuple[nn.Module, str, bool]:
    """The trained full-depth PETL model of one target, from the cache or trained now.

    ``spec`` holds everything else that determines the model (backbone name, profile, data
    sizes); returns (model, cache key, whether it was trained now).
    """
    key = config.digest({"method": method, "target": target, "fit": asdict(settings),
                         "scale": scale, "batch_size": batch_size, "seed": seed,
                         "data": data.GENERATOR_VERSION, **spec})
    model = petl.load_petl(backbone, key, len(train_set.classes), scale)
    if model is not None:
        return model, key, False
    seed_everything(seed, threads=torch.get_num_threads())
    model = petl.attach(backbone, method, len(train_set.classes), scale)
    petl.fit_petl(model, train_set, settings, batch_size, seed, desc=f"{method} {target}")
    petl.save_petl(model, key)
    return model.eval(), key, True


# ----------------------------------------------------------------------------- figures


def plot_tsne_maps(maps: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                   scores: Mapping[str, np.ndarray], layers: Sequence[int], depths: Mapping[str, int]):
    """Grid of t-SNE maps: one row per target, one column per layer (1-based), class colours."""
    import matplotlib.pyplot as plt

    targets = list(maps)
    fig, axes = plt.subplots(len(targets), len(layers), squeeze=False,
                             figsize=(2.1 * len(layers), 2.1 * len(targets)))
    for r, target in enumerate(targets):
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            points = maps[target][layer - 1]
            ax.scatter(points[:, 0], points[:, 1], c=labels[target], cmap="tab10", s=5,
                       vmin=0, vmax=9, linewidths=0)
            kept = "kept" if layer <= depths[target] else "cut"
            ax.set_title(f"{target} · block {layer} ({kept})\nSC = {scores[target][layer - 1]:.2f}",
                         fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig
