"""Tests for compstudy.metrics: hand-computed calibration, exact op counts, latency sanity."""

import copy
import math

import numpy as np
import pytest
import timm
import torch
import torch_pruning as tp
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.nn.utils import prune
from torch.utils.flop_counter import FlopCounterMode

from compstudy import claims, metrics


def _probs(confidences, preds, k=4):
    """Rows with `conf` on the predicted class and the rest spread evenly over the others."""
    rows = []
    for conf, pred in zip(confidences, preds):
        row = torch.full((k,), (1 - conf) / (k - 1), dtype=torch.float64)
        row[pred] = conf
        rows.append(row)
    return torch.stack(rows)


# ---------------------------------------------------------------- accuracy / calibration


def test_accuracy_from_logits_and_preds():
    labels = torch.tensor([0, 1, 2, 1])
    assert metrics.accuracy(torch.tensor([0, 1, 1, 1]), labels) == 0.75
    logits = torch.tensor([[2.0, 0, 0], [0, 3, 0], [0, 0, 1], [5, 0, 0]])
    assert metrics.accuracy(logits, labels) == 0.75
    with pytest.raises(ValueError):
        metrics.accuracy(torch.tensor([0, 1]), labels)


def test_ece_hand_computed():
    # n_bins=4 -> bins (0,.25] (.25,.5] (.5,.75] (.75,1]; 0.5 is an exact edge and falls in (.25,.5].
    #   conf : .3 ok, .5 wrong | .6 ok, .7 wrong | .9 ok, 1.0 ok
    #   bin (.25,.5]: acc .5, conf .40, gap .10 ; bin (.5,.75]: acc .5, conf .65, gap .15 ;
    #   bin (.75,1]: acc 1, conf .95, gap .05.  ECE = 2/6*(.10 + .15 + .05) = 0.1
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    preds = [0, 0, 2, 0, 0, 1]
    probs = _probs([0.3, 0.5, 0.6, 0.7, 0.9, 1.0], preds)
    assert metrics.expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(0.1)
    bins = metrics.reliability_bins(probs, labels, n_bins=4)
    assert list(bins.columns) == ["bin_lower", "bin_upper", "count", "accuracy", "confidence"]
    assert bins["count"].tolist() == [0, 2, 2, 2]
    assert bins["confidence"].iloc[1:].tolist() == pytest.approx([0.40, 0.65, 0.95])
    assert bins["accuracy"].iloc[1:].tolist() == pytest.approx([0.5, 0.5, 1.0])
    assert math.isnan(bins["accuracy"].iloc[0])


def test_ece_zero_when_calibrated():
    labels = torch.tensor([0, 1, 2, 3])
    assert metrics.expected_calibration_error(_probs([1.0] * 4, labels.tolist()), labels) == 0.0
    # 4 predictions at confidence .75 of which 3 are right: accuracy == confidence in the bin.
    probs = _probs([0.75] * 4, [0, 1, 2, 0])
    assert metrics.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.0)


def test_ece_rejects_logits():
    labels = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="logits"):
        metrics.expected_calibration_error(torch.tensor([[2.0, -1, 0.5]] * 3), labels)
    with pytest.raises(ValueError, match="sum to 1"):  # in [0, 1] but not normalised
        metrics.expected_calibration_error(torch.full((3, 3), 0.5), labels)
    with pytest.raises(ValueError):
        metrics.reliability_bins(torch.softmax(torch.randn(3, 3), 1), torch.tensor([0, 1, 3]))


def test_reliability_bins_counts_sum_to_n_and_true_class_confidence():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(200, 10, generator=g), dim=1)
    labels = torch.randint(0, 10, (200,), generator=g)
    bins = metrics.reliability_bins(probs, labels)
    assert len(bins) == 15 and bins["count"].sum() == 200
    tcc = metrics.true_class_confidence(probs, labels)
    assert list(tcc.columns) == ["confidence_true", "correct"] and len(tcc) == 200
    assert tcc["confidence_true"].tolist() == pytest.approx(probs[torch.arange(200), labels].tolist())
    assert tcc["correct"].mean() == pytest.approx(metrics.accuracy(probs, labels))


# ---------------------------------------------------------------- size


def test_count_parameters():
    lin = nn.Linear(10, 5)
    assert metrics.count_parameters(lin) == 55
    lin.bias.requires_grad_(False)
    assert metrics.count_parameters(lin, trainable_only=True) == 50


def test_count_nonzero_parameters_in_place_and_torch_prune():
    lin = nn.Linear(10, 5)
    with torch.no_grad():
        lin.weight[0] = 0
    assert metrics.count_nonzero_parameters(lin) == 45
    # torch.nn.utils.prune keeps a dense weight_orig parameter; the masked weight must count.
    lin2 = nn.Linear(10, 5)
    prune.l1_unstructured(lin2, "weight", amount=20)
    assert metrics.count_nonzero_parameters(lin2) == 35
    assert metrics.count_parameters(lin2) == 55


# ---------------------------------------------------------------- MACs


def test_count_macs_linear_and_conv():
    # tp convention: Linear MACs = in*out per row; a bias adds one op per output feature.
    assert metrics.count_macs(nn.Linear(10, 5, bias=False), (1, 10)) == 50
    assert metrics.count_macs(nn.Linear(10, 5), (1, 10)) == 55
    # Conv: Cout*Cin*k*k*Hout*Wout (+ one add per output element for the bias).
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
    assert metrics.count_macs(conv, (1, 3, 16, 16)) == 8 * 3 * 3 * 3 * 8 * 8
    conv_b = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    assert metrics.count_macs(conv_b, (1, 3, 16, 16)) == 8 * 3 * 3 * 3 * 8 * 8 + 8 * 8 * 8
    # per image: a batch of 4 gives the same conv count
    assert metrics.count_macs(conv, (4, 3, 16, 16)) == 8 * 3 * 3 * 3 * 8 * 8


def test_count_macs_resnet18_matches_flop_counter_plus_elementwise():
    model = timm.create_model("resnet18", num_classes=100)
    model.train()
    macs = metrics.count_macs(model)
    assert model.training and model.layer1[0].bn1.training  # mode restored
    # timm's ImageNet stem (7x7/2 conv + maxpool) leaves 8x8 maps at 32x32 input: ~37 M MACs.
    assert 30e6 < macs < 45e6
    # FlopCounterMode counts conv/matmul FLOPs = 2*MACs and nothing else; tp also counts
    # BN (2 ops/element), ReLU and pooling (1/element) and the fc bias (once per feature).
    # Enumerate exactly those extras with hooks, so the comparison is exact, not a tolerance.
    extra = {"ops": model.fc.out_features}

    def hook(mod, inp, out):
        if isinstance(mod, nn.BatchNorm2d):
            extra["ops"] += 2 * inp[0].numel()
        elif isinstance(mod, nn.ReLU):
            extra["ops"] += out.numel()
        else:  # MaxPool2d, AdaptiveAvgPool2d
            extra["ops"] += inp[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d))]
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32))
    for h in handles:
        h.remove()
    matmul_macs = counter.get_total_flops() // 2
    assert macs == matmul_macs + extra["ops"]
    assert macs / matmul_macs - 1 < 0.01


def test_count_macs_vit_matches_analytic_formula():
    d, p, depth, heads, classes = 128, 8, 12, 4, 100
    model = VisionTransformer(img_size=32, patch_size=p, embed_dim=d, depth=depth,
                              num_heads=heads, num_classes=classes)
    t_patch = (32 // p) ** 2
    t = t_patch + 1  # + class token
    block = 3 * d * d * t + 2 * t * t * d + d * d * t + 2 * 4 * d * d * t  # qkv, qk^T+av, proj, mlp
    analytic = t_patch * d * 3 * p * p + depth * block + d * classes  # + patch embed + head
    macs = metrics.count_macs(model)
    assert 0 <= macs / analytic - 1 < 0.01  # the attention matmuls are included
    # The remainder is exactly the documented non-MAC ops: patch-embed bias per element;
    # per block 2 LayerNorms (2/element), qkv+proj bias per token, softmax (heads*T^2),
    # q scaling (T*d), GELU (T*4d), fc1/fc2 bias once per feature; final norm; head bias.
    per_block = 2 * 2 * t * d + 4 * d * t + heads * t * t + t * d + 4 * d * t + 4 * d + d
    assert macs - analytic == t_patch * d + depth * per_block + 2 * t * d + classes


def test_count_macs_timm_attention_with_pruned_width():
    # attention width 2 heads x 16 = 32 != embedding width 96 (as after structured pruning);
    # tp's built-in hook would count proj as 32x32, ours as 32x96.
    from timm.layers import Attention
    t, dim, a = 10, 96, 32
    attn = Attention(dim, num_heads=2, attn_head_dim=16, qkv_bias=False)
    expected = t * dim * 3 * a + 2 * t * t * a + t * a * dim + 2 * t * t + t * a + t * dim
    assert metrics.count_macs(attn, (1, t, dim)) == expected


def test_count_macs_remembers_an_architecture_but_not_across_different_ones(monkeypatch):
    from timm.layers import Attention
    monkeypatch.setattr(metrics, "_MACS_BY_ARCHITECTURE", {})
    counted = []
    real = tp.utils.count_ops_and_params
    monkeypatch.setattr(tp.utils, "count_ops_and_params", lambda *a, **k: counted.append(1) or real(*a, **k))
    t, dim = 10, 96
    four_heads = Attention(dim, num_heads=4, attn_head_dim=8, qkv_bias=False)
    macs = metrics.count_macs(four_heads, (1, t, dim))
    with torch.no_grad():  # other weights, same architecture: remembered, not counted again
        four_heads.qkv.weight.normal_()
    assert metrics.count_macs(copy.deepcopy(four_heads), (1, t, dim)) == macs and len(counted) == 1
    # the same shapes with another head count: only num_heads differs, and the softmax ops with it
    eight_heads = Attention(dim, num_heads=8, attn_head_dim=4, qkv_bias=False)
    assert metrics.count_macs(eight_heads, (1, t, dim)) == macs + 4 * t * t and len(counted) == 2
    # another input size, or a layer replaced in place, is a new count
    assert metrics.count_macs(four_heads, (1, 2 * t, dim)) != macs and len(counted) == 3
    four_heads.proj = nn.Linear(32, 48)  # half the outputs, and half the bias ops
    assert metrics.count_macs(four_heads, (1, t, dim)) == macs - t * 32 * 48 - t * 48 and len(counted) == 4


# ---------------------------------------------------------------- latency


def test_measure_latency_reports_requested_settings():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).train()
    threads_before = torch.get_num_threads()
    out = metrics.measure_latency(model, batch_size=4, input_size=(3, 8, 8), num_threads=1,
                                  min_run_time=0.05)
    assert set(out) == {"batch_size", "num_threads", "median_ms", "iqr_ms", "images_per_s"}
    assert out["batch_size"] == 4 and out["num_threads"] == 1
    assert out["median_ms"] > 0 and out["iqr_ms"] >= 0 and out["images_per_s"] > 0
    assert out["images_per_s"] == pytest.approx(4 / (out["median_ms"] / 1e3))
    assert model.training and torch.get_num_threads() == threads_before


class _Logged(nn.Module):
    """Appends its name to a shared log at every forward, with its training flag."""

    def __init__(self, name: str, log: list):
        super().__init__()
        self.name, self.log, self.linear = name, log, nn.Linear(4, 2)

    def forward(self, x):
        self.log.append((self.name, self.training))
        return self.linear(x)


def test_measure_latencies_times_models_in_turn_in_eval_mode():
    log = []
    models = {"a": _Logged("a", log).train(), "b": _Logged("b", log).train(), "c": _Logged("c", log).eval()}
    timings = metrics.measure_latencies(models, batch_size=3, input_size=(4,), forwards=4)
    names = [name for name, _ in log]
    assert names == ["a", "b", "c"] + ["a", "b", "c"] * 4  # one warm-up each, then rounds in turn
    assert not any(training for _, training in log)
    assert models["a"].training and models["b"].training and not models["c"].training
    assert set(timings) == {"a", "b", "c"}
    for timing in timings.values():
        assert set(timing) == {"batch_size", "num_threads", "median_ms", "iqr_ms", "images_per_s"}
        assert timing["batch_size"] == 3 and timing["num_threads"] == torch.get_num_threads()
        assert timing["median_ms"] > 0 and timing["iqr_ms"] >= 0
        assert timing["images_per_s"] == pytest.approx(3 / (timing["median_ms"] / 1e3))
    with pytest.raises(ValueError, match="forwards must be >= 1"):
        metrics.measure_latencies(models, 1, (4,), forwards=0)


def test_measure_latencies_pairs_each_models_time_with_the_references_in_the_same_round(clocked):
    # a slow spell in round 2 doubles both times: the paired ratios stay 0.5, 0.5, 0.6
    full = [9.0, 1.0, 2.0, 1.0]  # warm-up, then three rounds
    half = [9.0, 0.5, 1.0, 0.6]
    models = {"full": clocked(full), "half": clocked(half)}
    timings = metrics.measure_latencies(models, 1, (4,), forwards=3, reference="full")
    ratios = np.array([0.5, 0.5, 0.6])
    expected = claims.t_interval(ratios)
    assert timings["half"]["ratio"] == pytest.approx(ratios.mean())
    assert timings["half"]["ratio_low"] == pytest.approx(expected.ci_low)
    assert timings["half"]["ratio_high"] == pytest.approx(expected.ci_high)
    assert timings["half"]["ratio_low"] < ratios.mean() < timings["half"]["ratio_high"]
    # the ratio of medians (1.0 / 0.6 here) is not what is reported
    assert timings["half"]["median_ms"] / timings["full"]["median_ms"] != pytest.approx(ratios.mean())
    assert timings["full"]["ratio"] == timings["full"]["ratio_low"] == timings["full"]["ratio_high"] == 1.0
    # the speed-up is the inverted ratio, its interval the ratio's ends swapped and inverted
    assert timings["half"]["speedup"] == pytest.approx(1 / ratios.mean())
    assert timings["half"]["speedup_low"] == pytest.approx(1 / expected.ci_high)
    assert timings["half"]["speedup_high"] == pytest.approx(1 / expected.ci_low)
    assert timings["half"]["speedup_low"] < timings["half"]["speedup"] < timings["half"]["speedup_high"]


def test_measure_latencies_refuses_a_reference_it_cannot_interval():
    models = {"a": nn.Identity(), "b": nn.Identity()}
    with pytest.raises(ValueError, match="not one of the models"):
        metrics.measure_latencies(models, 1, (4,), forwards=3, reference="c")
    with pytest.raises(ValueError, match="forwards must be >= 2"):
        metrics.measure_latencies(models, 1, (4,), forwards=1, reference="a")
