"""SLS: t-SNE silhouette scoring, the threshold walk, truncation, head re-fit, DepGraph, config,
the study's claims and figures."""

import dataclasses
import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from test_petl import tiny_vit, toy_images
from timm.data import create_transform, resolve_data_config

from compstudy import config, data, models
from compstudy.errors import ConfigError
from compstudy.methods import depgraph, petl, sls
from compstudy.studies import sls as study

# ----------------------------------------------------------------------------- scoring


def _clustered(separation: float, rng: np.random.Generator, n_classes=6, per_class=25, dim=24):
    centres = rng.normal(size=(n_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_classes), per_class)
    return centres[labels] * separation + rng.normal(size=(len(labels), dim)), labels


def test_tsne_silhouette_orders_layers_by_cluster_separation():
    rng = np.random.default_rng(0)
    layers = [_clustered(s, rng) for s in (0.0, 2.0, 4.0, 8.0)]
    labels = layers[0][1]
    scores, maps = sls.layer_scores(np.stack([x for x, _ in layers]), labels, perplexity=30, seed=0, n_iter=500)
    assert list(np.argsort(scores)) == [0, 1, 2, 3], scores
    assert abs(scores[0]) < 0.2 and scores[-1] > 0.5
    assert maps.shape == (4, len(labels), 2)
    assert np.allclose(maps.min(1), 0) and np.allclose(maps.max(1), 1)  # min-max normalised


def test_tsne_is_seeded_and_clamps_perplexity_on_tiny_sets():
    x, _ = _clustered(3.0, np.random.default_rng(1), n_classes=3, per_class=4)  # 12 points
    assert sls.effective_perplexity(12, 30) == pytest.approx(11 / 3)
    assert np.array_equal(sls.tsne_map(x, seed=3, n_iter=300), sls.tsne_map(x, seed=3, n_iter=300))
    assert not np.array_equal(sls.tsne_map(x, seed=3, n_iter=300), sls.tsne_map(x, seed=4, n_iter=300))
    with pytest.raises(ValueError):
        sls.effective_perplexity(3, 30)
    with pytest.raises(ValueError, match="250 exaggerated"):
        sls.tsne_map(x, n_iter=250)


def test_tsne_map_does_not_depend_on_its_thread_count():
    # the study runs openTSNE on torch's threads and leaves n_jobs out of the cache key
    x, _ = _clustered(3.0, np.random.default_rng(2), per_class=20)
    assert np.array_equal(sls.tsne_map(x, seed=0, n_iter=300, n_jobs=1),
                          sls.tsne_map(x, seed=0, n_iter=300, n_jobs=2))


# ----------------------------------------------------------------------------- threshold walk

WALK_CASES = [
    # the walk on a worked example: T = 0.3 * 0.60 = 0.18, block 2 (0.10) is the first below
    ([0.05, 0.10, 0.20, 0.30, 0.35, 0.40, 0.45, 0.50, 0.52, 0.55, 0.58, 0.60], 0.3, 3, "walk"),
    # the walk stops at the first dip from the top, even if lower blocks score higher again
    ([0.5, 0.6, 0.1, 0.4, 0.5], 0.3, 4, "walk"),
    # rise then fall in the top blocks: deep blocks are cut although the top is not the peak
    ([0.1, 0.3, 0.6, 0.5, 0.3], 0.5, 2, "walk"),
    # alpha = 1: every kept block must score at least as well as the last one
    ([0.1, 0.5, 0.4, 0.5], 1.0, 4, "walk"),
    ([0.1, 0.6, 0.5, 0.5], 1.0, 2, "walk"),
    # every block above T: the walk reaches the bottom, one block is kept
    ([0.5, 0.5, 0.5], 0.3, 1, "all_above"),
    ([0.4], 0.3, 1, "all_above"),
    # last block does not cluster (negative or zero): no evidence, keep everything
    ([0.2, 0.1, -0.05], 0.3, 3, "last_not_positive"),
    ([0.2, 0.1, 0.0], 0.3, 3, "last_not_positive"),
]


@pytest.mark.parametrize("scores, alpha, depth, rule", WALK_CASES)
def test_threshold_walk(scores, alpha, depth, rule):
    selection = sls.select_depth(scores, alpha)
    assert (selection.depth, selection.rule) == (depth, rule)
    assert selection.threshold == pytest.approx(alpha * scores[-1])


def test_threshold_walk_respects_min_depth_and_rejects_bad_input():
    assert sls.select_depth([0.5, 0.5, 0.5, 0.5], 0.3, min_depth=2).depth == 2
    with pytest.raises(ValueError):
        sls.select_depth([0.1, float("nan")], 0.3)
    with pytest.raises(ValueError):
        sls.select_depth([], 0.3)


@pytest.mark.parametrize("alpha", [0, -0.1, 1.01, 2, float("nan")])
def test_alpha_outside_unit_interval_is_a_one_line_config_error(alpha):
    with pytest.raises(ConfigError, match=r"alpha must lie in \(0, 1\]") as info:
        sls.select_depth([0.1, 0.2], alpha)
    assert "\n" not in str(info.value)


def test_kept_depths_walk_every_curve_and_alpha():
    layers = pd.DataFrame([{"target": "t", "method": "m", "petl_seed": 0, "tsne_seed": 0,
                                  "perplexity": 30.0, "layer": i + 1, "silhouette": s}
                                 for i, s in enumerate(WALK_CASES[0][0])])
    table = study.kept_depths(layers, [0.3, 0.5, 0.9]).set_index("alpha")
    assert table.depth.to_dict() == {0.3: 3, 0.5: 4, 0.9: 10}
    assert (table.last_silhouette == 0.60).all()


def test_top_share_of_a_straight_rise_and_of_a_plateau():
    assert study.top_share(np.linspace(0, 1, 12)) == pytest.approx(3 / 11)
    assert study.top_share(np.r_[np.linspace(0, 1, 9), [1, 1, 1]]) == 0


# ----------------------------------------------------------------------------- truncation


@pytest.fixture(scope="module")
def petl_vit():
    model = petl.attach(tiny_vit(), "convpass", num_classes=10)
    with torch.no_grad():  # non-trivial adapters, so truncation must keep them right
        for p in petl.petl_parameters(model):
            p.normal_(0, 0.05)
    return model.eval()


def _reference_block_output(model, x, depth):
    """Block ``depth``'s tokens from an explicit loop over timm's stem and blocks."""
    h = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for block in model.blocks[:depth]:
        h = block(h)
    return h


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_truncated_model_equals_the_full_models_intermediate_output(petl_vit, depth):
    truncated = sls.truncate(petl_vit, depth).eval()
    assert len(truncated.blocks) == depth and len(petl_vit.blocks) == 6
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        inner = _reference_block_output(petl_vit, x, depth)
        assert torch.allclose(sls.block_output(petl_vit, x, depth), inner, atol=1e-6)
        assert torch.allclose(sls.block_output(truncated, x), inner, atol=1e-6)
        assert torch.allclose(truncated.forward_features(x), petl_vit.norm(inner), atol=1e-6)
        assert torch.allclose(truncated(x), petl_vit.head(petl_vit.norm(inner)[:, 0]), atol=1e-5)


@pytest.fixture(scope="module")
def stub_batch():
    model = models.upstream_model("deit_tiny")
    transform = create_transform(**resolve_data_config({}, model=model))
    return model, torch.stack([transform(image) for _, image, _ in data.imagenet_stubs()])


@pytest.mark.parametrize("with_adapters", [False, True])
def test_deit_tiny_truncated_at_d_equals_the_full_models_block_d_output_on_the_stubs(stub_batch, with_adapters):
    model, x = stub_batch
    if with_adapters:
        torch.manual_seed(0)
        model = petl.attach(model, "convpass", num_classes=10)
        with torch.no_grad():
            for p in petl.petl_parameters(model):
                p.normal_(0, 0.02)
        model.eval()
    with torch.no_grad():
        h, reference = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x)))), {}
        for depth, block in enumerate(model.blocks, 1):  # an explicit loop, before the final norm
            h = reference[depth] = block(h)
        for depth in (1, 6, 11):
            truncated = sls.truncate(model, depth)
            out = sls.block_output(truncated, x)
            assert len(truncated.blocks) == depth and out.shape == (16, 197, 192)
            assert torch.allclose(out, reference[depth], atol=1e-5)


def test_cls_features_per_block_and_logits(petl_vit):
    images = toy_images(6)
    feats = sls.block_cls_features(petl_vit, images, batch_size=4)
    assert feats.cls.shape == (6, 6, 64) and feats.logits.shape == (6, 10)
    x = models.adapt_input(petl_vit, data.to_float(images.images))
    with torch.no_grad():
        assert np.allclose(feats.cls[2], _reference_block_output(petl_vit, x, 3)[:, 0].numpy(), atol=1e-5)
        assert np.allclose(feats.logits, petl_vit(x).numpy(), atol=1e-5)
    assert np.array_equal(feats.labels, images.labels.numpy())


def test_head_refit_from_cached_features_is_the_truncated_models_head(petl_vit):
    images = toy_images(40)
    feats = sls.block_cls_features(petl_vit, images)
    depth = 4
    normed = sls.normed_cls(petl_vit, feats.cls[depth - 1])
    weight, bias = sls.fit_head(normed, feats.labels, 10)
    truncated = sls.set_head(sls.truncate(petl_vit, depth), weight, bias)
    x = models.adapt_input(petl_vit, data.to_float(images.images))
    with torch.no_grad():
        assert np.allclose(truncated(x).numpy(), sls.head_logits(normed, weight, bias), atol=1e-4)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5, random_state=0))
    pipe.fit(normed.astype(np.float64), feats.labels)
    assert np.allclose(pipe.decision_function(normed.astype(np.float64)),
                       sls.head_logits(normed, weight, bias), atol=1e-3)
    with pytest.raises(ValueError, match="every class"):
        sls.fit_head(normed[:5], feats.labels[:5], 10)


def _toy_unit(model):
    """A study unit on toy images: the model, 40 training and 30 test images, their features."""
    train, test = toy_images(40), toy_images(30)
    return study.Unit("toy", "convpass", 0, model, train, test, sls.block_cls_features(model, train),
                      sls.block_cls_features(model, test), {"toy_unit": 1})


def test_retraining_after_the_cut_trains_only_adapters_and_head(petl_vit):
    cfg = dataclasses.replace(config.load_config("smoke", "03_sls", "main"), retrain_epochs=2, retrain_lr=0.01)
    unit = _toy_unit(petl_vit)
    before = {n: t.clone() for n, t in sls.truncate(petl_vit, 3).state_dict().items()}
    model, payload = study.sls_model(cfg, unit, 3)
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trained = {n for n in before if ".adapter_" in n or n.startswith("head.")}
    assert changed and changed <= trained  # the backbone is untouched
    assert all(p.grad is None for p in petl_vit.parameters())  # nor is the unit's model
    assert not torch.equal(payload["logits"], payload["logits_refit"])
    with torch.no_grad():  # the stored logits are the retrained model's
        x = models.adapt_input(model, data.to_float(unit.test_set.images))
        assert torch.allclose(model.eval()(x), payload["logits"], atol=1e-4)
    head_only = study.sls_model(dataclasses.replace(cfg, retrain_epochs=0), unit, 3)[1]
    assert torch.equal(head_only["logits"], head_only["logits_refit"])
    assert torch.equal(head_only["logits_refit"], payload["logits_refit"])  # the same first step
    uncut_model, uncut = study.sls_model(cfg, unit, len(petl_vit.blocks))  # nothing cut: the PETL model
    assert uncut_model is petl_vit
    assert all(np.array_equal(np.asarray(logits), unit.test.logits) for logits in uncut.values())
    accuracies = study._stage_accuracies(payload, unit.test.labels)
    assert set(accuracies) == {"accuracy", "accuracy_refit", "accuracy_before_refit"}


def test_retrain_gains_average_the_first_methods_cut_arms_only():
    cfg = config.load_config("cpu", "03_sls", "main")
    rows = [("a", "convpass", "full", 12, 80.0, float("nan")), ("a", "convpass", "sls", 8, 79.0, 77.0),
            ("a", "convpass", "depgraph", 8, 75.0, 70.0), ("b", "convpass", "sls", 6, 90.0, 89.0),
            ("b", "convpass", "depgraph", 6, 85.0, 82.0), ("c", "convpass", "sls", 12, 50.0, 40.0),
            ("a", "adapter", "sls", 8, 99.0, 10.0)]
    summary = pd.DataFrame(rows, columns=["target", "method", "arm", "depth", "accuracy (%)",
                                          "head re-fit only (%)"]).set_index(["target", "method", "arm"])
    gains = study.retrain_gains(cfg, summary)
    assert list(gains.index) == ["sls", "depgraph"]
    assert gains["sls"] == pytest.approx(1.5) and gains["depgraph"] == pytest.approx(4.0)
    assert study.retraining_text(gains).startswith("Over the head re-fit, retraining adds +1.5 points to "
                                                   "SLS and +4.0 to DepGraph")
    assert "more to recover" in study.retraining_text(gains)  # DepGraph gains more
    assert "more to recover" not in study.retraining_text(gains[::-1].set_axis(gains.index))
    assert study.retraining_text(gains * np.nan) == "With no target truncated, the run retrains neither pruned arm"


@pytest.mark.parametrize("depth", [0, 7, -1])
def test_layer_index_beyond_depth_is_a_config_error(petl_vit, depth):
    with pytest.raises(ConfigError, match="beyond the model's depth; valid: 1..6"):
        sls.truncate(petl_vit, depth)


def test_storage_per_task(petl_vit):
    truncated = sls.truncate(petl_vit, 2)
    assert sls.storage_parameters(truncated, "sls") == petl.count_petl_parameters(truncated) + 1
    assert sls.storage_parameters(truncated, "sls") < sls.storage_parameters(petl_vit, "petl")
    assert sls.storage_parameters(petl_vit, "depgraph") == depgraph.count_parameters(petl_vit)


# ----------------------------------------------------------------------------- DepGraph


def test_depgraph_prunes_as_many_parameters_as_sls_with_consistent_heads(petl_vit):
    total = depgraph.count_parameters(petl_vit)
    target = total - depgraph.count_parameters(sls.truncate(petl_vit, 3))
    pruned, search = depgraph.prune_to_removed(petl_vit, toy_images(64), target, n_batches=2, batch_size=32)
    removed = total - depgraph.count_parameters(pruned)
    assert abs(removed - target) / target < 0.02 and search.removed == removed
    assert depgraph.attention_consistent(pruned)
    heads = [b.block.attn for b in pruned.blocks]
    assert all(a.num_heads == 2 and a.head_dim < 32 for a in heads)
    assert len(pruned.blocks) == 6 and pruned.pos_embed.shape[-1] == 64  # width, not depth or residual
    assert pruned(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    trainable = {n for n, p in pruned.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in petl_vit.named_parameters() if p.requires_grad}
    assert depgraph.count_parameters(petl_vit) == total  # the original is untouched
    assert all(p.grad is None for p in petl_vit.parameters())
    restored = depgraph.restore_widths(petl_vit, pruned.state_dict())  # architecture + state dict
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(restored(x), pruned(x), atol=1e-6)


def test_depgraph_with_nothing_to_remove_returns_the_model(petl_vit):
    pruned, search = depgraph.prune_to_removed(petl_vit, toy_images(4), 0)
    assert search.ratio == 0 and depgraph.count_parameters(pruned) == depgraph.count_parameters(petl_vit)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("overrides, message", [
    ({"alpha": 1.5}, r"alpha must lie in (0, 1], got 1.5"),
    ({"map_layers": [2, 13]}, "map layer 13 is beyond the model's depth; valid: 1..12"),
    ({"petl_methods": ["lora"]}, "unknown petl_methods value 'lora'; valid choices: convpass, adapter"),
    ({"petl_seeds": {"convpass": [0]}}, "petl_seeds must give a non-empty list of seeds"),
    ({"test_per_class": {"cifar10": 100}}, "test_per_class must give one entry per target"),
    ({"test_per_class": {"cifar10": 100, "fashion_mnist": 100, "mnist": -1, "digits": -1, "near": 100,
                         "middle": 500, "far": 100}}, "test_per_class['middle'] must be -1 (the whole split) or 1..100"),
    ({"natural_targets": ["svhn"]}, "unknown natural_targets value 'svhn'"),
    ({"resolution": 100}, "multiple of the ViT's 16-px patch"),
    ({"resolution": 112}, "notebook 00 (cpu) measures no distances for deit_tiny at 112 px"),
    ({"claims": ["tsne"]}, "the 'tsne' claims need a second t-SNE seed or perplexity"),
    ({"claims": ["alpha"]}, "the 'alpha' claims need at least two alphas"),
    ({"tsne_iter": 200}, "'tsne_iter' of notebook 03_sls must lie in [251, inf]"),
    ({"timing_forwards": [20]}, "timing_forwards needs one count per throughput batch ([1, 64]), got [20]"),
    ({"timing_forwards": [20, 1]}, "must lie in [2, inf]"),
])
def test_config_errors_are_one_line_before_any_training(overrides, message):
    with pytest.raises(ConfigError) as info:
        config.validate("03_sls", overrides | {"profile": "cpu", "run": "main"})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_too_many_images_per_class_fails_before_training():
    cfg = config.load_config("smoke", "03_sls", "main")
    with pytest.raises(ConfigError, match="exceeds the"):
        study.load_targets(dataclasses.replace(cfg, targets=["digits"], test_per_class={"digits": 10},
                                               train_per_class=500))


def test_tsne_settings_vary_one_factor_at_a_time():
    cfg = config.load_config("cpu", "03_sls", "tsne")
    assert study.tsne_settings(cfg) == [(0, 30.0), (1, 30.0), (2, 30.0), (0, 10.0), (0, 50.0)]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_workers_fill_the_caches_bit_for_bit_as_one_process_and_leave_nothing_missing():
    """Two one-thread workers write the same artifacts, to the last bit, as the in-process run
    (``workers=0``), the second t-SNE seed's maps once the unit's features exist; afterwards a
    lookup-only pass over every work finds nothing to build."""
    import shutil

    from compstudy import cache, paths

    cfg = dataclasses.replace(config.load_config("smoke", "03_sls", "main"), tsne_seeds=[0, 1])
    backbone = models.upstream_model(cfg.model, cfg.resolution)
    targets = study.load_targets(cfg)
    kinds = ("sls_petl", "sls_features", "sls_scores", "sls_probes", "sls_truncated", "sls_depgraph")

    def fill(workers: int) -> dict:
        for kind in kinds:
            shutil.rmtree(paths.ARTIFACTS_DIR / kind, ignore_errors=True)
        threads = torch.get_num_threads()
        study.fill_caches(dataclasses.replace(cfg, workers=workers), backbone, targets, progress=False)
        assert torch.get_num_threads() == threads
        return {p.relative_to(paths.ARTIFACTS_DIR): cache.torch_load(p)
                for kind in kinds for p in (paths.ARTIFACTS_DIR / kind).glob("*.pt")}

    alone, pooled = fill(0), fill(2)
    assert pooled.keys() == alone.keys()
    assert {p.parts[0] for p in alone} >= {"sls_petl", "sls_features", "sls_scores", "sls_probes"}
    assert len([p for p in alone if p.parts[0] == "sls_petl"]) == 4  # 2 targets x 2 methods
    assert len([p for p in alone if p.parts[0] == "sls_scores"]) == 4 * 2 + 2  # 2 t-SNE seeds; frozen
    # the smoke units keep every block, and an uncut model is the PETL model itself: nothing to cache
    assert not [p for p in alone if p.parts[0] == "sls_truncated"]
    assert all(_same(pooled[p], alone[p]) for p in alone)
    with cache.lookup_only():
        for work in study.plan(cfg):
            study.do_work(cfg, backbone, targets[work.target], work)
    shutil.rmtree(paths.ARTIFACTS_DIR / "sls_probes")
    with pytest.raises(cache.Missing), cache.lookup_only():
        study.do_work(cfg, backbone, targets["digits"], study.plan(cfg)[0])


# ----------------------------------------------------------------------------- claims of the study

CLAIM_TARGETS = {"cifar10": 3.0, "fashion_mnist": 1.5, "mnist": 1.7, "far": 2.0}
"""Silhouette curve (l / L) ** exponent per target: the convex natural curve crosses
T = 0.3 * SC_L late (d = 9), the others earlier (d = 6, 6, 7)."""


def _claim_inputs(sls_ahead: bool):
    cfg = config.load_config("cpu", "03_sls", "main")
    cfg = dataclasses.replace(cfg, targets=list(CLAIM_TARGETS), natural_targets=["cifar10"],
                              petl_methods=["convpass"], petl_seeds={"convpass": [0]},
                              test_per_class={t: 100 for t in CLAIM_TARGETS})
    rng = np.random.default_rng(0)
    layers = pd.DataFrame([
        {"target": t, "method": "convpass", "petl_seed": 0, "tsne_seed": 0, "perplexity": 30.0,
         "layer": layer, "silhouette": 0.6 * (layer / 12) ** e + 0.001 * rng.normal(),
         "raw_silhouette": 0.2 * (layer / 12) ** e, "probe_accuracy": 0.5 + 0.4 * (layer / 12) ** e}
        for t, e in CLAIM_TARGETS.items() for layer in range(1, 13)])
    table = study.kept_depths(layers, [cfg.alpha])
    depths = study.chosen_depths(cfg, table)
    correct, rows = {}, []
    for i, t in enumerate(CLAIM_TARGETS):
        d = depths[t, "convpass", 0]
        full = rng.random(400) < 0.8
        sls_ = full.copy()
        sls_[rng.choice(400, 4, replace=False)] ^= True  # truncation flips a handful of answers
        dg = np.where(rng.random(400) < 0.1 + 0.02 * i, False, sls_)  # width pruning loses more
        if not sls_ahead:
            sls_, dg = dg, sls_
        for arm, depth, answers, speed, storage in (("full", 12, full, 100.0, 90_000),
                                                    ("sls", d, sls_, 100 * 12 / d, 8_000 * d),
                                                    ("depgraph", d, dg, 90 * 12 / d + i, 4_000_000)):
            correct[t, "convpass", 0, arm, depth] = answers
            rows.append({"target": t, "method": "convpass", "petl_seed": 0, "arm": arm, "depth": depth,
                         "images_per_s_b1": speed, "images_per_s_b64": speed * (1.2 + 0.01 * i),
                         "speedup_b1": speed / 100, "speedup_b64": speed / 100, "storage_parameters": storage})
    return cfg, layers, table, pd.DataFrame(rows), correct


def test_kept_depths_follow_where_each_curve_crosses_the_threshold():
    cfg, _, table, _, _ = _claim_inputs(True)
    depths = study.chosen_depths(cfg, table)
    assert {t: depths[t, "convpass", 0] for t in CLAIM_TARGETS} == \
        {"cifar10": 9, "fashion_mnist": 6, "mnist": 6, "far": 7}


@pytest.mark.parametrize("sls_ahead", [True, False])
def test_claims_follow_the_designed_effects(sls_ahead):
    cfg, layers, table, frame, correct = _claim_inputs(sls_ahead)
    results = {r.claim.id: r for r in study.test_claims(cfg, layers, table, frame, correct, pd.Series(dtype=float))}
    verdict = {k: r.verdict for k, r in results.items()}
    assert all(verdict[f"P.{t}"] == "reproduced" for t in CLAIM_TARGETS)
    assert verdict["1.cut"] == verdict["3"] == verdict["2.speed"] == verdict["4.storage"] == "reproduced"
    assert results["3"].effect == pytest.approx(9 - np.mean([6, 6, 7]))
    assert results["1.cut"].effect == pytest.approx(np.mean([6, 6, 5]))
    # convex curves gain more than a straight line at the top; the natural target is left out
    shares = [3 / 11 - study.top_share(0.6 * (np.arange(1, 13) / 12) ** CLAIM_TARGETS[t])
              for t in ("fashion_mnist", "mnist", "far")]
    assert verdict["1.plateau"] == "contradicted" and results["1.plateau"].n == 3
    assert results["1.plateau"].effect == pytest.approx(np.mean(shares), abs=0.01)
    natural = study.top_share(0.6 * (np.arange(1, 13) / 12) ** CLAIM_TARGETS["cifar10"])
    assert study.natural_top_share(cfg, layers) == pytest.approx(natural, abs=0.01)
    assert np.isnan(study.natural_top_share(dataclasses.replace(cfg, natural_targets=[]), layers))
    assert study.linear_top_share(cfg) == pytest.approx(3 / 11)  # 12 blocks: 3 of 11 steps
    assert study.natural_top_share_text(cfg, layers) == (
        f"the natural target gains {100 * natural:.0f} % there, "
        + ("the opposite of a plateau" if 100 * natural > 100 * 3 / 11 else "a plateau too"))
    assert study.natural_top_share_text(dataclasses.replace(cfg, natural_targets=[]), layers) == \
        "no natural target of this run has a rising silhouette to set beside it"
    # SLS ahead of DepGraph: reproduced; the arms swapped: contradicted, on the same data
    assert verdict["4.accuracy"] == ("reproduced" if sls_ahead else "contradicted")
    assert (results["4.accuracy"].effect > 0) == sls_ahead
    if sls_ahead:  # a handful of flipped answers in 400: within the 2-point margin
        assert verdict["2.accuracy"] == "reproduced"
        assert abs(results["2.accuracy"].effect) <= 1
    else:  # the swapped arm loses 8 to 12 points: more than the margin
        assert verdict["2.accuracy"] == "contradicted" and results["2.accuracy"].kind == "non-inferiority"
    comparisons = study.compare(cfg, table, correct)
    assert set(comparisons.comparison) == {"sls_vs_full", "sls_vs_depgraph"}
    assert (comparisons.ci_low_pp <= comparisons.effect_pp).all()
    assert (comparisons.effect_pp <= comparisons.ci_high_pp).all()


def test_truncation_claim_counts_only_the_targets_sls_cut():
    cfg, layers, table, frame, correct = _claim_inputs(True)

    def claim_2(depth_table):
        results = study.test_claims(cfg, layers, depth_table, frame, correct, pd.Series(dtype=float))
        return next(r for r in results if r.claim.id == "2.accuracy")

    cut_everywhere = claim_2(table)
    uncut_far = table.assign(depth=table.depth.where(table.target != "far", 12))
    correct["far", "convpass", 0, "sls", 12] = ~correct["far", "convpass", 0, "full", 12]  # all wrong
    far_left_out = claim_2(uncut_far)
    assert (cut_everywhere.n, far_left_out.n) == (4, 3)
    assert far_left_out.verdict == "reproduced" and abs(far_left_out.effect) <= 1


# ----------------------------------------------------------------------------- figures

FIGURE_DEPTHS = {"convpass": {"cifar10": 9, "fashion_mnist": 6, "mnist": 6, "far": 7},
                 "adapter": dict.fromkeys(CLAIM_TARGETS, 4)}
"""Kept depths of the figure fixture: the claim curves under Convpass, and a straight rise
0.6 * l / 12 under the adapter (block 3 scores 0.15 < T = 0.18)."""


@pytest.fixture(scope="module")
def figure_inputs():
    """Results of a run with the claim curves under Convpass plus a second PETL method."""
    cfg, layers, table, frame, correct = _claim_inputs(True)
    adapter = layers.assign(method="adapter", silhouette=0.6 * layers.layer / 12)
    tsne_maps = {t: np.random.default_rng(i).random((12, 30, 2)) for i, t in enumerate(CLAIM_TARGETS)}
    results = study.Results(
        layers=pd.concat([layers, adapter], ignore_index=True),
        depths=pd.concat([table, study.kept_depths(adapter, [cfg.alpha])], ignore_index=True),
        models=frame, comparisons=study.compare(cfg, table, correct),
        distances=pd.Series({t: 0.1 * (i + 1) for i, t in enumerate(CLAIM_TARGETS)}),
        claims=pd.DataFrame([r.row() for r in study.test_claims(cfg, layers, table, frame, correct,
                                                                  pd.Series(dtype=float))]),
        maps=tsne_maps, map_labels={t: np.arange(30) % 3 for t in CLAIM_TARGETS},
        test_images=dict.fromkeys(CLAIM_TARGETS, 400))
    cfg = dataclasses.replace(cfg, petl_methods=["convpass", "adapter"],
                              petl_seeds={"convpass": [0], "adapter": [0]})
    return cfg, results


def test_kept_table_shows_whole_depths_per_method_beside_the_frozen_backbone(figure_inputs):
    cfg, results = figure_inputs
    probes = pd.DataFrame([{"target": t, "method": study.FROZEN, "petl_seed": 0, "arm": "probe", "depth": 12,
                            "frozen_last_silhouette": -0.1 * i} for i, t in enumerate(CLAIM_TARGETS)])
    table = study.kept_table(cfg, dataclasses.replace(results, models=pd.concat([results.models, probes])))
    assert list(table.index) == list(CLAIM_TARGETS)
    for method in ("convpass", "adapter"):
        assert table["depth", method].dtype == int
        assert table["depth", method].to_dict() == FIGURE_DEPTHS[method]
    assert table["last_silhouette", "frozen backbone"].tolist() == [0.0, -0.1, -0.2, -0.3]
    two_seeds = pd.concat([results.depths, results.depths.assign(petl_seed=1, depth=results.depths.depth + 1)])
    halves = study.kept_table(cfg, dataclasses.replace(results, depths=two_seeds,
                                                       models=pd.concat([results.models, probes])))
    assert halves["depth", "convpass"]["cifar10"] == 9.5  # seeds disagree: the mean, not rounded


def test_silhouette_figure_marks_each_targets_kept_depth_in_its_colour_per_method(figure_inputs):
    cfg, results = figure_inputs
    fig = study.silhouette_figure(results, cfg)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        method = ax.get_title().split(":")[0]
        curves = [line for line in ax.lines if line.get_marker() == "o" and len(line.get_xdata())]
        dotted = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert [line.get_xdata()[0] for line in dotted] == [FIGURE_DEPTHS[method][t] for t in cfg.targets]
        assert [line.get_color() for line in dotted] == [line.get_color() for line in curves]
        assert len(curves) == len(cfg.targets) and list(curves[0].get_xdata()) == list(range(1, 13))
    assert {ax.get_title().split(":")[0] for ax in fig.axes} == set(FIGURE_DEPTHS)
    plt.close(fig)


def test_tsne_maps_figure_has_a_map_per_target_and_block_titled_kept_or_cut(figure_inputs):
    cfg, results = figure_inputs
    fig = study.tsne_maps_figure(results, cfg)
    assert len(fig.axes) == len(cfg.targets) * len(cfg.map_layers)
    curves = results.layers.query("method == 'convpass'").set_index(["target", "layer"]).silhouette
    for ax, (target, layer) in zip(fig.axes, itertools.product(cfg.targets, cfg.map_layers)):
        kept = "kept" if layer <= FIGURE_DEPTHS["convpass"][target] else "cut"
        assert ax.get_title() == f"{target} · block {layer} ({kept})\nSC = {curves[target, layer]:.2f}"
        assert np.array_equal(ax.collections[0].get_offsets(), results.maps[target][layer - 1])
    plt.close(fig)


def test_premise_figure_titles_each_target_with_its_spearman_rho(figure_inputs):
    cfg, results = figure_inputs
    fig = study.premise_figure(results, cfg)
    rho = results.claims.set_index("claim").effect
    assert [ax.get_title() for ax in fig.axes] == [f"{t}: ρ = {rho[f'P.{t}']:.2f}" for t in cfg.targets]
    assert all(len(ax.collections[0].get_offsets()) == 12 for ax in fig.axes)  # one point per block
    plt.close(fig)


def test_depth_distance_figure_puts_each_target_at_its_distance_and_kept_depth(figure_inputs):
    cfg, results = figure_inputs
    fig = study.depth_distance_figure(results, cfg)
    (ax,) = fig.axes
    points = [tuple(c.get_offsets()[0]) for c in ax.collections]
    assert points == [(results.distances[t], FIGURE_DEPTHS["convpass"][t]) for t in cfg.targets]
    drop = results.comparisons.query("comparison == 'sls_vs_full'").set_index("target").effect_pp
    assert [a.get_text() for a in ax.texts] == [f"{t} {drop[t]:+.1f}" for t in cfg.targets]
    assert ax.get_ylim() == (0, 12.5)
    plt.close(fig)
    # two targets at one point: their labels go one under the other, not on top of each other
    results = dataclasses.replace(results, distances=results.distances.replace(
        results.distances["mnist"], results.distances["fashion_mnist"]))
    fig = study.depth_distance_figure(results, cfg)
    offsets = {a.get_text().split()[0]: a.xyann for a in fig.axes[0].texts}
    assert offsets["fashion_mnist"] != offsets["mnist"]
    plt.close(fig)


def test_rounded_tables_show_units_without_float_noise():
    table = pd.DataFrame({"depth": [12.0, 8.0, 12.0], "accuracy (%)": [90.53333, 89.0, 75.0],
                          "parameters (M)": [5.58817, 3.777866, np.nan], "MACs (M)": [212.47, 143.42, np.nan],
                          "images/s, batch 1": [34.15179, 49.69214, np.nan]})
    shown = study.rounded(table)
    assert shown.to_dict("list") == {"depth": ["12", "8", "12"], "accuracy (%)": ["90.5", "89.0", "75.0"],
                                     "parameters (M)": ["5.59", "3.78", "—"], "MACs (M)": ["212", "143", "—"],
                                     "images/s, batch 1": ["34.2", "49.7", "—"]}
    assert study.rounded(table.assign(depth=[12.0, 7.5, 12.0])).depth.tolist() == ["12.0", "7.5", "12.0"]
