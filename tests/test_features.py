"""Frozen-feature helpers: probes, Fréchet distance and input adaptation."""

import numpy as np
import pytest
import torch
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
    model = models.build_model("vit_mini", 10)
    accuracies = features.probe_accuracies(model, train, test, [1, 3], seed=0)
    assert set(accuracies) == {1, 3} and calls == [len(train), len(test)]


def test_adapt_input_leaves_local_batches_and_converts_for_imagenet_models():
    local = models.build_model("resnet18", 10)
    batch = torch.randn(2, 3, 32, 32)
    assert models.adapt_input(local, batch) is batch
    local.pretrained_cfg = {**local.pretrained_cfg, "input_size": (3, 64, 64),
                            "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    grey = torch.full((1, 3, 32, 32), 0.5)
    normalised = (grey - torch.tensor(data.MEAN).view(1, 3, 1, 1)) / torch.tensor(data.STD).view(1, 3, 1, 1)
    adapted = models.adapt_input(local, normalised)
    assert adapted.shape == (1, 3, 64, 64)
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(adapted[0, :, 10, 10], expected, atol=1e-5)
