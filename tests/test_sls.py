"""SLS: t-SNE silhouette scoring, the threshold walk, truncation, the DepGraph baseline, errors."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from compstudy import data, metrics, models, petl, sls
from compstudy.errors import ConfigError
from compstudy.seeding import seed_everything

# ----------------------------------------------------------------------------- scoring


def _clustered(separation: float, rng: np.random.Generator, n_classes=6, per_class=25, dim=24):
    centres = rng.normal(size=(n_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_classes), per_class)
    return centres[labels] * separation + rng.normal(size=(len(labels), dim)), labels


def test_tsne_silhouette_orders_layers_by_cluster_separation():
    rng = np.random.default_rng(0)
    separations = [0.0, 2.0, 4.0, 8.0]
    layers = [_clustered(s, rng) for s in separations]
    labels = layers[0][1]
    feats = np.stack([x for x, _ in layers])
    scores, maps = sls.layer_scores(feats, labels, perplexity=30, seed=0, n_iter=500)
    assert list(np.argsort(scores)) == [0, 1, 2, 3], scores
    assert abs(scores[0]) < 0.2 and scores[-1] > 0.5
    assert maps.shape == (4, len(labels), 2)
    assert np.allclose(maps.min(1), 0) and np.allclose(maps.max(1), 1)  # min-max normalised


def test_tsne_is_seeded_and_clamps_perplexity_on_tiny_sets():
    rng = np.random.default_rng(1)
    x, _ = _clustered(3.0, rng, n_classes=3, per_class=4)  # 12 points, perplexity 30 impossible
    assert sls.effective_perplexity(12, 30) == pytest.approx(11 / 3)
    assert np.array_equal(sls.tsne_map(x, seed=3, n_iter=300), sls.tsne_map(x, seed=3, n_iter=300))
    with pytest.raises(ValueError):
        sls.effective_perplexity(3, 30)


# ----------------------------------------------------------------------------- threshold walk

WALK_CASES = [
    # SLS's walk (Han & Tang, ECCV 2024) on a worked example: T = 0.3 * 0.60 = 0.18, layer 2
    # (0.10) is the first below
    ([0.05, 0.10, 0.20, 0.30, 0.35, 0.40, 0.45, 0.50, 0.52, 0.55, 0.58, 0.60], 0.3, 3, "walk"),
    # the walk stops at the first dip from the top, even if lower layers score higher again
    ([0.5, 0.6, 0.1, 0.4, 0.5], 0.3, 4, "walk"),
    # rise then fall in the top layers: deep layers are cut although the top is not the peak
    ([0.1, 0.3, 0.6, 0.5, 0.3], 0.5, 2, "walk"),
    # alpha = 1: every kept layer must score at least as well as the last one
    ([0.1, 0.5, 0.4, 0.5], 1.0, 4, "walk"),
    ([0.1, 0.6, 0.5, 0.5], 1.0, 2, "walk"),
    # every layer above T: the walk reaches the bottom, one block is kept
    ([0.5, 0.5, 0.5], 0.3, 1, "all_above"),
    # a single-block model
    ([0.4], 0.3, 1, "all_above"),
    # last layer does not cluster (negative or zero): no evidence, keep everything
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


# ----------------------------------------------------------------------------- truncation


@pytest.fixture(scope="module")
def petl_vit():
    seed_everything(0)
    backbone = models.build_model("vit_mini", num_classes=100).eval()
    model = petl.attach(backbone, "convpass", num_classes=10)
    with torch.no_grad():  # non-trivial adapters, so truncation must keep them right
        for p in petl.petl_parameters(model):
            p.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_truncated_model_equals_the_full_models_intermediate_output(petl_vit, depth):
    truncated = sls.truncate(petl_vit, depth).eval()
    assert len(truncated.blocks) == depth and len(petl_vit.blocks) == 6
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        inner = sls.block_outputs(petl_vit, x, depth)  # before the final norm
        assert torch.allclose(sls.block_outputs(truncated, x), inner, atol=1e-6)
        assert torch.allclose(truncated.forward_features(x), petl_vit.norm(inner), atol=1e-6)
        assert torch.allclose(truncated(x), petl_vit.head(petl_vit.norm(inner)[:, 0]), atol=1e-5)


def test_block_outputs_match_timm_intermediates():
    seed_everything(0)
    vit = models.build_model("vit_mini", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    timm_out = vit.forward_intermediates(x, indices=[2], norm=False, output_fmt="NLC",
                                         intermediates_only=True, return_prefix_tokens=True)
    patches, prefix = timm_out[0]
    ours = sls.block_outputs(vit, x, 3)
    assert torch.allclose(ours[:, :1], prefix, atol=1e-6) and torch.allclose(ours[:, 1:], patches, atol=1e-6)


def test_cls_features_per_block(petl_vit):
    images = data.ImageSet("toy", torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8),
                           torch.arange(5), tuple("abcde"))
    feats = sls.block_cls_features(petl_vit, images)
    assert feats.shape == (6, 5, 64)
    x = data.make_loader(images, 5, shuffle=False).__iter__().__next__()[0]
    assert np.allclose(feats[2], sls.block_outputs(petl_vit, x, 3)[:, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize("depth", [0, 7, -1])
def test_layer_index_beyond_depth_is_a_config_error(petl_vit, depth):
    with pytest.raises(ConfigError, match="beyond the model's depth; valid: 1..6"):
        sls.truncate(petl_vit, depth)


# ----------------------------------------------------------------------------- DepGraph


def test_depgraph_prunes_as_many_parameters_as_sls_with_consistent_heads(petl_vit):
    images = data.ImageSet("toy", torch.randint(0, 255, (64, 3, 32, 32), dtype=torch.uint8),
                           torch.arange(64) % 10, tuple(str(i) for i in range(10)))
    total = metrics.count_parameters(petl_vit)
    target = total - metrics.count_parameters(sls.truncate(petl_vit, 3))
    pruned, info = sls.depgraph_prune(petl_vit, images, target, n_batches=2, batch_size=32)
    removed = total - metrics.count_parameters(pruned)
    assert abs(removed - target) / target < 0.02 and info["removed"] == removed
    assert sls.attention_consistent(pruned)
    heads = [b.block.attn for b in pruned.blocks]
    assert all(a.num_heads == 2 and a.head_dim < 32 for a in heads)
    assert len(pruned.blocks) == 6  # width, not depth, pruning
    assert pruned(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    assert metrics.count_macs(pruned) < metrics.count_macs(petl_vit)
    trainable = {n for n, p in pruned.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in petl_vit.named_parameters() if p.requires_grad}
    # the original is untouched
    assert metrics.count_parameters(petl_vit) == total
    assert all(p.grad is None for p in petl_vit.parameters())


def test_depgraph_with_nothing_to_remove_returns_the_model(petl_vit):
    images = data.ImageSet("toy", torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.arange(4),
                           tuple("abcd"))
    pruned, info = sls.depgraph_prune(petl_vit, images, 0)
    assert info["ratio"] == 0 and metrics.count_parameters(pruned) == metrics.count_parameters(petl_vit)


def test_storage_per_task(petl_vit):
    truncated = sls.truncate(petl_vit, 2)
    assert sls.storage_parameters(truncated, "sls") == petl.count_petl_parameters(truncated) + 1
    assert sls.storage_parameters(truncated, "sls") < sls.storage_parameters(petl_vit, "petl")
    assert sls.storage_parameters(petl_vit, "depgraph") == metrics.count_parameters(petl_vit)


# ----------------------------------------------------------------------------- config errors


def _cfg(**overrides):
    base = dict(petl_methods=["convpass"], alpha=0.3, alphas=[0.3], model="vit_mini",
                map_layers=[2, 6], target_datasets=["near"], tsne_per_class=10, train_per_class=10)
    return SimpleNamespace(**(base | overrides))


@pytest.mark.parametrize("overrides, message", [
    ({"alpha": 1.5}, r"alpha must lie in \(0, 1\], got 1.5"),
    ({"alphas": [0.2, 0.0]}, r"alpha must lie in \(0, 1\], got 0.0"),
    ({"map_layers": [2, 7]}, r"map layer 7 is beyond the model's depth; valid: 1..6"),
    ({"petl_methods": ["lora"]}, r"unknown PETL method 'lora'; valid choices: convpass, adapter"),
    ({"tsne_per_class": 20}, r"tsne_per_class"),
])
def test_validate_config_stops_with_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        sls.validate_config(_cfg(**overrides))
    assert "\n" not in str(info.value)


def test_validate_config_returns_the_depth():
    assert sls.validate_config(_cfg()) == 6
