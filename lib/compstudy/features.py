"""Frozen features: extraction, logistic-regression probes and source-to-target distance."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from . import data, models


@torch.no_grad()
def extract_features(model: nn.Module, images: data.ImageSet, batch_size: int = 256) -> np.ndarray:
    """Pre-logit features of every image, in the model's input format."""
    model.eval()
    chunks = [models.pooled_features(model, models.adapt_input(model, batch))
              for batch, _ in data.make_loader(images, batch_size, shuffle=False)]
    return torch.cat(chunks).numpy().astype(np.float64)


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                   test_y: np.ndarray, seed: int = 0) -> float:
    """Test accuracy of a logistic-regression probe on standardised frozen features."""
    probe = make_pipeline(StandardScaler(),
                          LogisticRegression(max_iter=2000, C=0.5, random_state=seed))
    probe.fit(train_x, train_y)
    return float(probe.score(test_x, test_y))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula).

    Used as the measured source-to-target distance: larger means the target's features
    are distributed further from the source's.
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrt(A B) = sum of sqrt of the eigenvalues of A B (real, >= 0 for PSD A and B);
    # stable where sqrtm warns on the singular covariances of small samples.
    eigenvalues = np.linalg.eigvals(cov_a @ cov_b).real.clip(min=0)
    trace_root = np.sqrt(eigenvalues).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def probe_accuracies(model: nn.Module, train_set: data.ImageSet, test_set: data.ImageSet,
                     shots: list[int], seed: int) -> dict[int, float]:
    """Probe accuracy of ``model``'s frozen features for each few-shot budget (-1: all).

    Features are extracted once; each budget draws its images with the seeded sampler.
    """
    train_x, test_x = extract_features(model, train_set), extract_features(model, test_set)
    results = {}
    for n_shot in shots:
        chosen = data.few_shot_indices(train_set.labels, n_shot, seed).numpy()
        results[n_shot] = probe_accuracy(train_x[chosen], train_set.labels.numpy()[chosen],
                                         test_x, test_set.labels.numpy(), seed=seed)
    return results
