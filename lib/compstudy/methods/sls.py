"""SLS: straightforward layer-wise pruning of a PETL-transferred ViT.

Han & Tang, "Straightforward Layer-wise Pruning for More Efficient Visual Adaptation", ECCV
2024 (method section; official code github.com/RuiZiHan/SLS, ``visualization.py``,
``set_pruning.py``, ``pruning_train.py``):

1. :func:`block_cls_features`: the CLS token after every block, before the final norm, of the
   trained PETL model (timm's ``forward_intermediates``);
2. :func:`tsne_map`: a 2-D t-SNE map of one block's features (the paper calls sklearn's TSNE
   with PCA initialisation, perplexity 30 and ``random_state=0``; we use openTSNE with the same
   settings), min-max normalised per axis; :func:`silhouette`: scikit-learn's silhouette
   coefficient of the map with the class labels;
3. :func:`select_depth`: threshold T = alpha * SC_last, walked down from the top: keep blocks
   1..d with d the shallowest block such that every block d..L scores at least T;
4. :func:`truncate`: the model runs only the kept blocks, then the final norm and the head;
5. retraining: the paper fine-tunes adapters and head of the truncated model for 100 epochs at a
   constant learning rate of 1e-5; :func:`fit_head` is the cheap analogue a CPU budget allows,
   a logistic-regression re-fit of the head on the truncated model's own features.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import data, models
from ..errors import ConfigError
from . import petl

DEFAULT_ALPHA = 0.3
BYTES_PER_PARAM = 4  # float32 storage


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


# ----------------------------------------------------------------------------- features


@dataclass(frozen=True)
class BlockFeatures:
    """Per-block CLS features of one image set and the model's logits on it.

    ``cls``: L x N x D (float32), block 1 first, before the final norm; ``logits``: N x K of
    the full model; ``labels``: N.
    """

    cls: np.ndarray
    logits: np.ndarray
    labels: np.ndarray


@torch.no_grad()
def block_cls_features(model: nn.Module, images: data.ImageSet, batch_size: int = 250) -> BlockFeatures:
    """CLS token after every block (before the final norm) and the logits, in one pass."""
    model.eval()
    cls, logits = [], []
    for batch, _ in data.make_loader(images, batch_size, shuffle=False):
        final, inner = model.forward_intermediates(
            models.adapt_input(model, batch), indices=None, return_prefix_tokens=True,
            norm=False, output_fmt="NLC")
        cls.append(torch.stack([prefix[:, 0] for _, prefix in inner]))
        logits.append(model.forward_head(final))
    return BlockFeatures(torch.cat(cls, dim=1).numpy(), torch.cat(logits).numpy(),
                         images.labels.numpy())


@torch.no_grad()
def block_output(model: nn.Module, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
    """All tokens after block ``depth`` (1-based; default the last), before the final norm."""
    depth = len(model.blocks) if depth is None else check_layer(depth, len(model.blocks))
    patches, prefix = model.forward_intermediates(
        x, indices=[depth - 1], return_prefix_tokens=True, norm=False, output_fmt="NLC",
        intermediates_only=True, stop_early=True)[0]
    return torch.cat([prefix, patches], dim=1)


# ----------------------------------------------------------------------------- scores


def effective_perplexity(n_points: int, perplexity: float) -> float:
    """Perplexity clamped for tiny sets: the 3*perplexity neighbours must exist."""
    if n_points < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n_points}")
    return float(min(perplexity, (n_points - 1) / 3))


def tsne_map(x: np.ndarray, perplexity: float = 30.0, seed: int = 0, n_iter: int = 750,
             n_jobs: int = 1) -> np.ndarray:
    """2-D openTSNE map of ``x`` (N x D), min-max normalised per axis to [0, 1].

    The paper's sklearn settings: PCA initialisation, Euclidean metric, Barnes-Hut gradients
    (theta 0.5), perplexity 30; ``n_iter`` counts all iterations, the first 250 with early
    exaggeration 12 (sklearn's default run is 1000).
    """
    from openTSNE import TSNE

    if n_iter <= 250:
        raise ValueError(f"t-SNE needs more than its 250 exaggerated iterations, got n_iter={n_iter}")
    x = np.asarray(x, dtype=np.float64)
    embedding = TSNE(n_components=2, perplexity=effective_perplexity(len(x), perplexity),
                     initialization="pca", metric="euclidean", negative_gradient_method="bh",
                     early_exaggeration_iter=250, n_iter=n_iter - 250,
                     n_jobs=n_jobs, random_state=seed).fit(x)
    y = np.asarray(embedding, dtype=np.float64)
    span = y.max(0) - y.min(0)
    return (y - y.min(0)) / np.where(span > 0, span, 1.0)


def silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's silhouette coefficient (Euclidean) of ``points`` with class ``labels``."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(points, labels, metric="euclidean"))


def layer_scores(cls: np.ndarray, labels: np.ndarray, perplexity: float = 30.0, seed: int = 0,
                 n_iter: int = 750, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Silhouette of the t-SNE map of every block: (scores L, maps L x N x 2)."""
    maps = np.stack([tsne_map(f, perplexity, seed, n_iter, n_jobs) for f in cls])
    return np.array([silhouette(m, labels) for m in maps]), maps


# ----------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Selection:
    """Outcome of the threshold walk: kept ``depth`` (1-based), threshold and which rule applied."""

    depth: int
    threshold: float
    rule: str  # "walk" | "all_above" | "last_not_positive"


def select_depth(scores: Sequence[float], alpha: float = DEFAULT_ALPHA, min_depth: int = 1) -> Selection:
    """The SLS threshold walk over per-block scores (``scores[0]`` = block 1).

    T = alpha * SC_L. Walking l = L, L-1, ...: while SC_l >= T the kept depth is l; the walk
    stops at the first block below T. Edge cases, made explicit:

    * SC_L <= 0 (the last block does not cluster the classes; the official code aborts):
      no evidence to prune, keep the full depth (rule ``last_not_positive``);
    * every block scores >= T: the walk reaches the bottom, d = ``min_depth`` (1 by default;
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
    """A copy of ``model`` running blocks 1..depth, then the final norm and the head.

    timm's ``prune_intermediate_layers`` drops the blocks above ``depth`` and keeps the norm
    and head, so the copy's features are the full model's block-``depth`` output, normed.
    """
    check_layer(depth, len(model.blocks), "kept depth")
    model = copy.deepcopy(model)
    model.prune_intermediate_layers(indices=[depth - 1], prune_norm=False, prune_head=False)
    return model


# ----------------------------------------------------------------------------- retraining


@torch.no_grad()
def normed_cls(model: nn.Module, cls: np.ndarray) -> np.ndarray:
    """The head's input from a block's CLS features: the final norm applied (N x D -> N x D).

    timm's ViT norms every token separately and its head reads the CLS token, so norming the
    cached CLS of block d gives exactly what the model truncated at d feeds its head.
    """
    return model.norm(torch.from_numpy(np.ascontiguousarray(cls, dtype=np.float32))).numpy()


def fit_head(features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0,
             c: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear head fitted by logistic regression on standardised features.

    Returns ``(weight K x D, bias K)`` with the standardisation folded in, ready for the
    model's ``head`` (a plain ``nn.Linear`` on the normed CLS token).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, dtype=np.float64)
    scaler = StandardScaler().fit(features)
    clf = LogisticRegression(max_iter=2000, C=c, random_state=seed).fit(scaler.transform(features), labels)
    if list(clf.classes_) != list(range(num_classes)):
        raise ValueError(f"every class needs training images; found classes {list(clf.classes_)}")
    coef = clf.coef_ / scaler.scale_
    bias = clf.intercept_ - (coef * scaler.mean_).sum(1)
    return torch.tensor(coef, dtype=torch.float32), torch.tensor(bias, dtype=torch.float32)


def layer_probes(train: BlockFeatures, test: BlockFeatures, seed: int = 0) -> np.ndarray:
    """Test accuracy of a linear probe on every block's CLS features (the paper's premise: the
    silhouette follows how linearly separable each block's features are)."""
    from ..features import probe_accuracy

    return np.array([probe_accuracy(a, train.labels, b, test.labels, seed)
                     for a, b in zip(train.cls, test.cls)])


def set_head(model: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    with torch.no_grad():
        model.head.weight.copy_(weight)
        model.head.bias.copy_(bias)
    return model


def head_logits(features: np.ndarray, weight: torch.Tensor, bias: torch.Tensor) -> np.ndarray:
    """The logits a head gives on already-normed features (N x D)."""
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    return (x @ weight.T + bias).numpy()


# ----------------------------------------------------------------------------- storage


def storage_parameters(model: nn.Module, kind: str) -> int:
    """Parameters stored per task.

    ``petl`` / ``sls``: the adapters of the blocks the model runs and the head (the backbone
    is shared by all tasks; SLS adds one integer, the kept depth). ``depgraph``: every
    parameter, since each task gets its own width-pruned backbone.
    """
    if kind in ("petl", "sls"):
        return petl.count_petl_parameters(model) + (1 if kind == "sls" else 0)
    if kind == "depgraph":
        return sum(p.numel() for p in model.parameters())
    raise ValueError(f"unknown storage kind {kind!r}; valid choices: petl, sls, depgraph")
