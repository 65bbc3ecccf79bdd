"""The study of notebook 01 (compstudy.studies.hidden_cost): the proxy set is disjoint from every
transfer image, the config refuses impossible requests, the Latin square of sparse seeds, the
resumable sweep, claims decided on paired units, and the figures."""

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from compstudy import config, data, metrics, paths
from compstudy.errors import ConfigError
from compstudy.studies import hidden_cost as hc


@pytest.fixture(scope="module")
def smoke():
    return config.load_config("smoke", "01_hidden_cost", "main")


def configured(base, **overrides):
    return hc.Config.from_overrides(dict(base.params) | overrides)


# ----------------------------------------------------------------------------- proxy


def test_the_proxy_set_is_disjoint_from_every_transfer_image(smoke):
    split = hc.proxy_split(smoke)
    full = data.load_dataset(smoke.proxy_dataset, "train")
    roles = {"kd": split.kd.ids, "agreement": split.agreement.ids, "calibration": split.calibration.ids}
    for (a, x), (b, y) in itertools.combinations(roles.items(), 2):
        assert not set(x.tolist()) & set(y.tolist()), f"{a} and {b} share images"
    proxy, transfer = set(split.proxy_ids.tolist()), set(split.transfer.ids.tolist())
    assert not proxy & transfer
    assert len(proxy) == 10 * smoke.proxy_per_class - 0 or len(proxy) == len(split.proxy_ids)
    assert proxy | transfer <= set(range(len(full))) and len(transfer) == len(full) - smoke.proxy_per_class * 10
    targets = hc.target_sets(smoke, split)
    pool, test = targets[smoke.proxy_dataset]
    assert set(pool.ids.tolist()) == transfer  # the only training images a transfer unit may draw
    for shots, seed in itertools.product(smoke.shots, smoke.seeds + [7]):
        picked = pool.ids[data.few_shot_indices(pool.labels, shots, seed)]
        assert not set(picked.tolist()) & proxy
    assert test.name == smoke.proxy_dataset and len(test) == 10 * smoke.test_per_class  # from the test split
    assert torch.equal(pool.images[0], full.images[int(pool.ids[0])])


def test_the_proxy_split_is_fixed_by_the_seed(smoke):
    a, b = hc.proxy_split(smoke), hc.proxy_split(smoke)
    assert torch.equal(a.kd.ids, b.kd.ids) and torch.equal(a.transfer.ids, b.transfer.ids)
    c = hc.proxy_split(configured(smoke, seed=1))
    assert not torch.equal(a.kd.ids, c.kd.ids)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("override, message", [
    ({"sparse_families": {"snip": [0.5]}}, "unknown sparse family 'snip'"),
    ({"sparse_families": {"gmp": [1.0]}}, r"\[0, 1\)"),
    ({"kd_per_class": 40}, "exceed proxy_per_class"),
    ({"compressed_methods": {"ilm": ["mnist"]}}, "not one of the targets"),
    ({"vp_image_sides": {"digits": [16]}}, "no side for target 'far'"),
    ({"shots": [2, 40]}, "exceed the 10 generated images"),
    ({"dense_methods": ["ilm", "fft"]}, "unknown dense_methods value 'fft'"),
    ({"sparse_seeds": "random"}, "unknown sparse_seeds value"),
    ({"quant_bits": [16]}, r"quant_bits must lie in \[2, 8\]"),
    ({"kd_recipe": {"steps": 3, "momentum": 0.9}}, "kd_recipe"),
    ({"proxy_dataset": "far"}, "unknown proxy_dataset value 'far'"),
])
def test_impossible_requests_fail_before_any_training(smoke, override, message):
    with pytest.raises(ConfigError, match=message):
        configured(smoke, **override)


def test_more_shots_than_a_real_class_holds_fail_before_training(smoke):
    cfg = configured(smoke, proxy_per_class=120, kd_per_class=16, shots=[2, 5],
                     synthetic_per_class=10)  # digits keep about 5 images per class for transfer
    with pytest.raises(ConfigError, match="n_shot=5 exceeds"):
        hc.target_sets(cfg, hc.proxy_split(cfg))


# ----------------------------------------------------------------------------- units


def fake_sources(cfg, model=None):
    out = [hc.Source("dense", "dense", 0.0, 32, model, model), hc.Source("quantized", "fake-quant", 0.0, 8, model, model)]
    out += [hc.Source("sparse", f, float(s), 32, model, model) for f, ss in cfg.sparse_families.items() for s in ss]
    return out


def test_the_latin_square_gives_every_family_and_sparsity_every_seed(smoke):
    cfg = configured(smoke, seeds=[0, 1, 2], sparse_families={f: [0.5, 0.8, 0.9] for f in
                                                              ["oneshot", "gmp", "imp", "acdc", "rigl"]})
    frame = pd.DataFrame(hc.units(cfg, fake_sources(cfg)))
    sparse = frame[frame.compression == "sparse"]
    assert sparse.groupby(["family", "sparsity"]).seed.nunique().eq(1).all()  # one seed per model
    assert sparse.groupby("family").seed.nunique().eq(3).all()
    assert sparse.groupby("sparsity").seed.nunique().eq(3).all()
    dense = frame[frame.compression == "dense"]
    assert len(dense) == len(cfg.dense_methods) * len(cfg.targets) * len(cfg.shots) * 3
    quant = frame[frame.compression == "quantized"]
    assert quant.seed.nunique() == 3 and set(quant.method) == set(cfg.compressed_methods)
    assert not frame.duplicated(list(hc.UNIT_KEY)).any()
    everything = pd.DataFrame(hc.units(configured(cfg, sparse_seeds="all"), fake_sources(cfg)))
    assert len(everything[everything.compression == "sparse"]) == 3 * len(sparse)


class TinyBackbone(nn.Module):
    """A timm-like model small enough for a sweep in seconds (pooled features, 12 classes)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 12)

    def forward_features(self, x):
        return torch.relu(self.bn(self.conv(x)))

    def forward_head(self, x, pre_logits=False):
        x = x.mean((2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_an_interrupted_sweep_resumes_to_the_numbers_of_an_uninterrupted_one(smoke, tmp_path, monkeypatch):
    cfg = configured(smoke, sparse_families={"oneshot": [0.5]}, quant_bits=[], seeds=[0, 1])
    split = hc.proxy_split(cfg)
    targets = hc.target_sets(cfg, split)
    dense, sparse = hc.frozen(TinyBackbone(0)).eval(), hc.frozen(TinyBackbone(1)).eval()
    sources = [hc.Source("dense", "dense", 0.0, 32, dense, dense),
               hc.Source("sparse", "oneshot", 0.5, 32, sparse, sparse)]
    all_units = hc.units(cfg, sources)

    def sweep(folder, keep_rows=None):
        monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path / folder)
        hc.run_sweep(cfg, sources, hc.Images(targets), all_units, progress=False)
        if keep_rows is not None:  # a crash: only the first rows reached runs.csv
            path = cfg.results_dir / "runs.csv"
            pd.read_csv(path).head(keep_rows).to_csv(path, index=False)
            hc.run_sweep(cfg, sources, hc.Images(targets), all_units, progress=False)
        frame = pd.read_csv(cfg.results_dir / "runs.csv")
        return frame.sort_values(list(hc.UNIT_KEY)).reset_index(drop=True)

    whole = sweep("whole")
    resumed = sweep("resumed", keep_rows=5)  # cuts a group of shared prompts in the middle
    assert len(whole) == len(all_units) and not resumed.duplicated(list(hc.UNIT_KEY)).any()
    pd.testing.assert_frame_equal(whole.drop(columns="cpu_seconds"), resumed.drop(columns="cpu_seconds"))
    assert set(whole.method) == {"rlm", "flm", "ilm", "lp"}
    probs, labels = hc.load_probabilities(cfg, whole.iloc[0])
    assert probs.shape == (len(labels), 10)


def test_two_workers_give_the_rows_and_probabilities_of_the_in_process_sweep(smoke, tmp_path, monkeypatch):
    """Spawned one-thread workers, which load the models from the cache, transfer to the same
    numbers as the sweep in the notebook's process (``workers=0``) on the run's own models."""
    cfg = configured(smoke, sparse_families={"oneshot": [0.5]}, quant_bits=[8], seeds=[0, 1])
    split = hc.proxy_split(cfg)
    sources = hc.make_sources(cfg, split, progress=False)
    images = hc.Images(hc.target_sets(cfg, split))
    all_units = hc.units(cfg, sources)
    threads = torch.get_num_threads()

    def sweep(workers):
        monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path / str(workers))
        run = configured(cfg, workers=workers)
        frame = hc.run_sweep(run, sources, images, all_units, progress=False)
        assert torch.get_num_threads() == threads
        probs = {tuple(unit[k] for k in hc.UNIT_KEY): hc.load_probabilities(run, unit)[0]
                 for unit in frame.to_dict("records")}
        return frame.sort_values(list(hc.UNIT_KEY)).reset_index(drop=True), probs

    (alone, alone_probs), (pooled, pooled_probs) = sweep(0), sweep(2)
    assert len(alone) == len(all_units) and set(alone.compression) == {"dense", "sparse", "quantized"}
    pd.testing.assert_frame_equal(alone.drop(columns="cpu_seconds"), pooled.drop(columns="cpu_seconds"))
    assert alone_probs.keys() == pooled_probs.keys() and len(alone_probs) == len(all_units)
    assert all(torch.equal(alone_probs[key], pooled_probs[key]) for key in alone_probs)


# ----------------------------------------------------------------------------- claims


def synthetic_runs(seed=0, ilm_gain=0.05, sparse_cost=0.1, quant_ece=0.0):
    """Runs with known effects: ILM beats FLM by ``ilm_gain``, FLM beats RLM, sparse models lose
    ``sparse_cost`` x sparsity under VP and nothing under LP, and gain ECE."""
    rng = np.random.default_rng(seed)
    rows = []
    base = dict(bits=32, image_side=40, canvas=48, classes=10, trainable_parameters=1)
    for target, shots, s in itertools.product(["a", "b", "c"], [4, 36], [0, 1, 2]):
        for method, acc in {"rlm": 0.1, "flm": 0.2, "ilm": 0.2 + ilm_gain, "lp": 0.5}.items():
            rows.append(base | dict(compression="dense", family="dense", sparsity=0.0, target=target,
                                    method=method, shots=shots, seed=s,
                                    accuracy=acc + rng.normal(0, 0.01), ece=0.3 + rng.normal(0, 0.01)))
        for family, sparsity in itertools.product(["gmp", "imp"], [0.5, 0.9]):
            for method in ("ilm", "lp"):
                cost = sparse_cost * sparsity * (4 / shots) ** 0.5 if method == "ilm" else 0.0
                rows.append(base | dict(compression="sparse", family=family, sparsity=sparsity, target=target,
                                        method=method, shots=shots, seed=s,
                                        accuracy=0.25 - cost + rng.normal(0, 0.01) if method == "ilm" else 0.5,
                                        ece=0.35 + rng.normal(0, 0.01)))
        rows.append(base | dict(compression="quantized", family="fake-quant", sparsity=0.0, target=target,
                                method="ilm", shots=shots, seed=s, bits=8, accuracy=0.25,
                                ece=0.3 + quant_ece + rng.normal(0, 0.005)))
    frame = pd.DataFrame(rows)
    return frame.assign(model=frame.family)


def test_claims_are_decided_on_paired_units(smoke):
    cfg = configured(smoke, shots=[4, 36] if max(smoke.shots) < 36 else smoke.shots, synthetic_per_class=40)
    verdicts = {r.claim.id: r for r in hc.decide(cfg, synthetic_runs())}
    assert verdicts["1a"].verdict == "reproduced" and verdicts["1a"].effect == pytest.approx(5, abs=0.5)
    assert verdicts["1b"].verdict == "reproduced" and verdicts["1b"].effect == pytest.approx(10, abs=0.5)
    assert verdicts["2a"].verdict == "reproduced"  # the VP gap exceeds the zero LP gap
    assert verdicts["2b"].verdict == "reproduced"  # the VP cost shrinks with data
    assert verdicts["3"].verdict == "reproduced"  # and grows with sparsity
    assert verdicts["4"].verdict == "reproduced" and verdicts["4"].effect == pytest.approx(5, abs=0.5)
    assert verdicts["5"].verdict == "reproduced" and verdicts["5"].kind == "non-inferiority"
    assert verdicts["6"].verdict == "not testable"
    assert verdicts["2a"].n == 18  # clustered by the dense units the pairs share
    penalised = {r.claim.id: r for r in hc.decide(cfg, synthetic_runs(quant_ece=0.05))}
    assert penalised["5"].verdict == "contradicted"
    better = {r.claim.id: r for r in hc.decide(cfg, synthetic_runs(quant_ece=-0.05))}
    assert better["5"].verdict == "reproduced"  # a lower ECE is no calibration penalty
    flat = {r.claim.id: r for r in hc.decide(cfg, synthetic_runs(ilm_gain=0.0, sparse_cost=0.0))}
    assert flat["1a"].verdict == "inconclusive" and flat["3"].verdict == "inconclusive"


def test_pairs_subtract_the_dense_unit_of_the_same_target_budget_and_seed():
    runs = synthetic_runs()
    p = hc.pairs(runs)
    row = p[(p.family == "gmp") & (p.sparsity == 0.9) & (p.method == "ilm")].iloc[0]
    dense = runs[(runs.compression == "dense") & (runs.method == "ilm") & (runs.target == row.target)
                 & (runs.shots == row.shots) & (runs.seed == row.seed)].accuracy.item()
    assert row.gap == pytest.approx(100 * (dense - row.accuracy))
    assert set(p.compression) == {"sparse", "quantized"}


# ----------------------------------------------------------------------------- figures


def test_sources_figure_draws_a_line_per_family_beside_the_dense_level():
    sources = pd.DataFrame(
        [{"compression": "dense", "family": "dense", "sparsity": 0.0, "agreement_top1": 1.0, "stubs_correct": 12}]
        + [{"compression": "sparse", "family": f, "sparsity": s, "agreement_top1": 0.9 - s / 2 - 0.1 * i,
            "stubs_correct": 11 - 10 * s} for i, f in enumerate(["gmp", "imp"]) for s in (0.5, 0.9)])
    fig = hc.sources_figure(sources)
    assert len(fig.axes) == 2
    for ax, dense in zip(fig.axes, [1.0, 12]):
        dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [dense, dense]
        drawn = [line for line in ax.lines if line.get_marker() == "o" and len(line.get_xdata())]
        assert [list(line.get_xdata()) for line in drawn] == [[0.5, 0.9], [0.5, 0.9]]  # sparse models only
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["gmp", "imp"]
    assert fig.axes[1].get_legend() is None
    plt.close(fig)


def test_gap_budget_figure_has_a_panel_per_family_and_a_line_per_method():
    sparse = hc.pairs(synthetic_runs()).query("compression == 'sparse'")
    fig = hc.gap_budget_figure(sparse, [4, 36])
    assert [ax.get_title() for ax in fig.axes] == ["gmp", "imp"]
    means = hc.interval_frame(sparse, ["family", "method", "shots"], "gap").set_index(["family", "method"])
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["4", "36"]
        for container, method in zip(ax.containers, ["ilm", "lp"]):
            assert np.allclose(container.lines[0].get_ydata(), means.loc[(ax.get_title(), method), "mean"])
    assert [t.get_text() for t in fig.axes[-1].get_legend().get_texts()] == ["ILM", "LP"]
    plt.close(fig)


def test_gap_sparsity_figure_has_a_panel_per_method_with_a_zero_line():
    sparse = hc.pairs(synthetic_runs()).query("compression == 'sparse'")
    fig = hc.gap_sparsity_figure(sparse)
    assert [ax.get_title() for ax in fig.axes] == ["method = ilm", "method = lp"]
    for ax in fig.axes:
        assert [list(line.get_ydata()) for line in ax.lines if line.get_color() == "k"] == [[0, 0]]
        assert ax.get_xlabel() == "conv sparsity"
    plt.close(fig)


def test_reliability_figure_draws_each_models_bins_titled_with_its_ece():
    generator = torch.Generator().manual_seed(0)
    frames = []
    for name in ("dense", "sparse 90%"):
        probs = torch.softmax(3 * torch.randn(200, 10, generator=generator), 1)
        labels = torch.randint(0, 10, (200,), generator=generator)
        frames.append(metrics.reliability_bins(probs, labels, 15).assign(
            model=name, ece=metrics.expected_calibration_error(probs, labels, 15)))
    bins = pd.concat(frames, ignore_index=True)
    fig = hc.reliability_figure(bins, 15)
    assert [ax.get_title() for ax in fig.axes] == [f"{f.model[0]} · ECE {100 * f.ece[0]:.1f}" for f in frames]
    for ax, frame in zip(fig.axes, frames):
        bars = ax.patches
        assert len(bars) == 15 and all(b.get_width() == pytest.approx(1 / 15) for b in bars)
        assert np.allclose([b.get_height() for b in bars], frame.accuracy.fillna(0))
    plt.close(fig)
