"""Frozen-feature helpers: probes and the Fréchet distance."""

import numpy as np
import pytest
from scipy import linalg

from compstudy import data, features, models


def test_frechet_distance_is_zero_for_identical_sets_and_matches_the_sqrtm_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6))
    b = rng.normal(loc=0.5, scale=1.5, size=(400, 6))
    assert features.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b)
                 - 2 * np.trace(linalg.sqrtm(cov_a @ cov_b).real))
    assert features.frechet_distance(a, b) == pytest.approx(reference, rel=1e-6)
    shifted = features.frechet_distance(a, a + 3.0)
    assert shifted == pytest.approx(6 * 9.0, rel=1e-6)  # mean shift of 3 in 6 dims


def test_probe_separates_separable_features_and_not_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    separable = np.eye(4)[labels] * 5 + rng.normal(size=(200, 4))
    noise = rng.normal(size=(200, 4))
    assert features.probe_accuracy(separable[::2], labels[::2], separable[1::2], labels[1::2]) > 0.95
    assert features.probe_accuracy(noise[::2], labels[::2], noise[1::2], labels[1::2]) < 0.5


def test_probe_accuracies_draws_each_budget_and_extracts_once(monkeypatch):
    train = data.load_dataset("digits", "train")
    test = data.load_dataset("digits", "test").subset(range(100))
    calls = []
    real_extract = features.extract_features
    monkeypatch.setattr(features, "extract_features",
                        lambda m, s: calls.append(len(s)) or real_extract(m, s))
    model = models.upstream_model("deit_tiny", 32, pretrained=False)
    accuracies = features.probe_accuracies(model, train, test, [1, 3], seed=0)
    assert set(accuracies) == {1, 3} and calls == [len(train), len(test)]
