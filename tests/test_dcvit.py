"""DC-ViT stages A–D and the block-dropping baseline (notebook 04) on small random ViTs."""

import copy
from types import SimpleNamespace

import pytest
import torch

from compstudy import dcvit, metrics, models
from compstudy.errors import ConfigError
from compstudy.seeding import seed_everything


@pytest.fixture(scope="module")
def vit():
    seed_everything(0)
    return models.build_model("vit_mini", 100).eval()


@pytest.fixture(scope="module")
def costs(vit):
    return dcvit.measure_costs(vit)


def _images(n, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- stage A


def test_worked_example_vit_b16_gives_four_blocks_and_rd_061():
    vit_b = dcvit.analytic_vit_costs(convention="thop")  # the paper's profiler
    plan = dcvit.plan_structure(vit_b, 0.751734186)
    assert plan.n_blocks == 4
    assert plan.drop_ratio == pytest.approx(0.61, abs=0.02)
    assert plan.predicted_macs <= plan.budget_macs
    # the keep ratio is "three whole blocks dropped" in that count
    assert 1 - 3 * (vit_b.block + vit_b.norm2) / vit_b.total == pytest.approx(0.751734186, abs=5e-6)


def test_analytic_tp_count_equals_the_measured_count(vit, costs):
    assert dcvit.analytic_vit_costs(32, 8, 64, 6, 2, 4.0, 100) == costs
    assert dcvit.analytic_vit_costs().total == 17_593_519_096  # metrics.count_macs of timm ViT-B/16


@pytest.mark.parametrize("convention", dcvit.COST_CONVENTIONS)
def test_stage_a_never_exceeds_the_budget_analytic(convention):
    vit_b = dcvit.analytic_vit_costs(convention=convention)
    for i in range(1, 80):
        ratio = 1 - i * 0.01
        plan = dcvit.plan_structure(vit_b, ratio)
        assert plan.predicted_macs <= plan.budget_macs
        assert plan.n_blocks == 1 or (plan.n_blocks - 1) * vit_b.block < plan.removed_target


def test_stage_a_never_exceeds_the_budget_on_the_model(vit, costs):
    for ratio in (0.97, 0.9, 0.81, 0.73, 0.6, 0.45):
        plan = dcvit.plan_structure(costs, ratio)
        model = vit
        for b in range(plan.n_blocks):
            model = dcvit.compress_block(model, b, plan.kept_units)
        measured = metrics.count_macs(model)
        assert measured == plan.predicted_macs
        assert measured <= plan.budget_macs


def test_forced_n_blocks(costs):
    plan = dcvit.plan_structure(costs, 0.85, n_blocks=3)
    assert plan.n_blocks == 3 and plan.predicted_macs <= plan.budget_macs


# ----------------------------------------------------------------------------- the compressed block


def test_compressed_block_has_no_attention_and_the_expected_width(vit, costs):
    kept = 100
    compressed = dcvit.compress_block(vit, 2, kept, seed=1)
    block = compressed.blocks[2]
    assert dcvit.attention_parameters(block) == 0
    assert dcvit.attention_parameters(vit.blocks[2]) > 0
    assert not hasattr(block, "attn") and not hasattr(block, "norm1")
    assert block.mlp.fc1.out_features == kept and block.mlp.fc2.in_features == kept
    assert block.mlp.fc1.weight.shape == (kept, 64) and block.mlp.fc2.weight.shape == (64, kept)
    assert dcvit.is_compressed(compressed) == [2]
    saved = metrics.count_macs(vit) - metrics.count_macs(compressed)
    assert saved == costs.attention + (costs.hidden - kept) * costs.per_unit
    expected = dcvit.analytic_vit_costs(32, 8, 64, 6, 2, 4.0, 100)
    assert saved == expected.attention + (expected.hidden - kept) * expected.per_unit
    params = metrics.count_parameters(vit) - metrics.count_parameters(compressed)
    assert params == dcvit.attention_parameters(vit.blocks[2]) + (costs.hidden - kept) * (64 + 1 + 64)


def test_kept_units_copy_the_original_weights(vit):
    keep = torch.tensor([3, 7, 200])
    block = dcvit.CompressedBlock(vit.blocks[1], keep)
    assert torch.equal(block.mlp.fc1.weight, vit.blocks[1].mlp.fc1.weight[keep])
    assert torch.equal(block.mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight[:, keep])
    assert torch.equal(block.mlp.fc2.bias, vit.blocks[1].mlp.fc2.bias)


def test_activation_init_keeps_the_most_active_units(vit):
    x = _images(16)
    stats = dcvit.mlp_activation_stats(vit, x)
    compressed = dcvit.compress_block(vit, 1, 10, init="activation", activations=stats[1])
    top = stats[1].argsort(descending=True)[:10].sort().values
    assert torch.equal(compressed.blocks[1].mlp.fc1.weight, vit.blocks[1].mlp.fc1.weight[top])


def test_all_mlp_units_dropped_makes_an_identity_block(vit):
    block = dcvit.CompressedBlock(vit.blocks[0], 0)
    x = torch.randn(2, 17, 64)
    assert torch.equal(block(x), x)


# ----------------------------------------------------------------------------- stage B


def test_inversion_lowers_its_loss_and_the_ce_on_the_targets(vit):
    targets = dcvit.inversion_targets(8, 100, seed=0)
    assert len(set(targets.tolist())) == 8
    noise = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    images, history = dcvit.invert(vit, targets, steps=30, lr=0.1, seed=0)
    assert history.loss.iloc[-5:].mean() < history.loss.iloc[:5].mean()
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(vit(noise), targets).item()
        after = torch.nn.functional.cross_entropy(vit(images), targets).item()
    assert after < before
    assert all(p.requires_grad for p in vit.parameters())  # model left trainable


def test_total_variation_is_zero_for_constant_images():
    assert dcvit.total_variation(torch.ones(2, 3, 8, 8), 0.6).item() == 0
    assert dcvit.total_variation(torch.randn(2, 3, 8, 8), 0.6).item() > 0


# ----------------------------------------------------------------------------- stage C and D


def _changed(before, after):
    a, b = dict(before.named_parameters()), dict(after.named_parameters())
    return {name for name in b if name in a and a[name].shape == b[name].shape and not torch.equal(a[name], b[name])}


@pytest.mark.parametrize("update", dcvit.UPDATE_SETTINGS)
def test_feature_mimicking_updates_only_the_allowed_blocks(vit, update):
    x = _images(16)
    targets = dcvit.teacher_targets(vit, x)
    student = dcvit.compress_block(vit, 2, 64)
    start = copy.deepcopy(student)
    losses = dcvit.mimic_finetune(student, x, targets, dcvit.MimicSettings(3, 8, 1e-3, update=update),
                                  last_changed=2)
    assert len(losses) == 3
    changed = _changed(start, student)
    limit = 3 if update == "before" else 5
    for i in range(6):
        touched = any(n.startswith(f"blocks.{i}.") for n in changed)
        assert touched == (i <= limit), (update, i)
    assert not any(n.startswith("head.") for n in changed)
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight"} <= changed


def test_block_trials_score_every_candidate_and_rank_ascending(vit):
    x = _images(16)
    targets = dcvit.teacher_targets(vit, x)
    syn = _images(4, seed=1)
    with torch.no_grad():
        syn_logits = vit(syn)
    trials = dcvit.block_trials(vit, [1, 2, 3], 64, x, targets, dcvit.MimicSettings(1, 8),
                                {"synthetic": (syn, syn_logits)})
    assert trials.block.tolist() == [1, 2, 3] and (trials.kl_synthetic >= 0).all()
    order = dcvit.rank_blocks(trials, "kl_synthetic")
    assert trials.set_index("block").kl_synthetic.loc[order].is_monotonic_increasing


def test_progressive_compression_follows_the_ranking(vit):
    x = _images(8)
    targets = dcvit.teacher_targets(vit, x)
    seen = []
    final = dcvit.progressive_compress(vit, [4, 1, 3, 2], 3, 50, x, targets, dcvit.MimicSettings(1, 8),
                                       after_step=lambda k, m: seen.append((k, dcvit.is_compressed(m))))
    assert seen == [(1, [4]), (2, [1, 4]), (3, [1, 3, 4])]
    assert dcvit.is_compressed(final) == [1, 3, 4]
    assert all(final.blocks[b].kept_units == 50 for b in (1, 3, 4))
    assert dcvit.is_compressed(vit) == []  # the original is untouched


def test_kl_to_teacher_is_zero_for_the_teacher(vit):
    x = _images(4)
    with torch.no_grad():
        logits = vit(x)
    assert dcvit.kl_to_teacher(vit, x, logits) == pytest.approx(0, abs=1e-6)


# ----------------------------------------------------------------------------- baseline


def test_adaptors_start_as_identity_and_dropping_removes_the_block(vit):
    adapted, params = dcvit.with_adaptors(vit, 2)
    dropped = dcvit.drop_blocks(vit, [2])
    x = _images(2)
    with torch.no_grad():
        assert torch.allclose(adapted(x), dropped(x), atol=1e-5)
    assert len(params) == 2 * 5  # weight + bias for blocks 0, 1 (after fc2) and 3, 4, 5 (before qkv)
    assert metrics.count_parameters(vit) - metrics.count_parameters(dropped) == sum(
        p.numel() for p in vit.blocks[2].parameters())


def test_practise_scores_divide_recoverability_by_latency_reduction(vit):
    x = _images(8)
    targets = dcvit.teacher_targets(vit, x)
    scores = dcvit.practise_scores(vit, [1, 2], x, targets, steps=1, latency_reduction={1: 0.5, 2: 0.25})
    assert scores.score.tolist() == pytest.approx((scores.recoverability / scores.latency_reduction).tolist())


def test_spearman_and_chance_level():
    assert dcvit.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1)
    assert dcvit.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)
    assert abs(dcvit.random_spearman(range(10), draws=500).mean()) < 0.1


# ----------------------------------------------------------------------------- errors


def _cfg(**overrides):
    base = dict(update_settings=["before"], mlp_inits=["random"], num_samples=[50], model="vit_mini",
                min_block=1, max_block=4, drop_blocks=[1], keep_ratios=[0.8], n_blocks=None,
                trial_drop_ratio=0.5)
    return SimpleNamespace(**(base | overrides))


@pytest.mark.parametrize("overrides, match", [
    ({"keep_ratios": [1.0]}, "needs no compression"),
    ({"keep_ratios": [1.3]}, "needs no compression"),
    ({"keep_ratios": [0.1]}, "unreachable"),
    ({"n_blocks": 7}, "exceeds the 6 blocks"),
    ({"n_blocks": 1, "keep_ratios": [0.6]}, "unreachable"),
    ({"max_block": 6}, "must lie within the model's 6 blocks"),
    ({"drop_blocks": [5]}, "drop_blocks entry 5"),
    ({"num_samples": [1201]}, "exceeds the 1200 images"),
    ({"update_settings": ["after"]}, "unknown update setting"),
    ({"mlp_inits": ["magnitude"]}, "unknown mlp init"),
])
def test_user_errors_are_one_line_config_errors(vit, overrides, match):
    with pytest.raises(ConfigError, match=match) as error:
        dcvit.validate_config(_cfg(**overrides), train_size=1200, model=vit)
    assert "\n" not in str(error.value)


def test_validate_config_returns_the_measured_costs(vit, costs):
    assert dcvit.validate_config(_cfg(), train_size=1200, model=vit) == costs


def test_few_shot_pick_sizes_and_errors():
    labels = torch.arange(10).repeat(5)  # 10 classes x 5 images
    classes = [str(i) for i in range(10)]
    idx = dcvit.few_shot_pick(labels, 23, 0, classes)
    assert len(idx) == 23 and len(set(idx.tolist())) == 23
    assert torch.equal(idx, dcvit.few_shot_pick(labels, 23, 0, classes))
    with pytest.raises(ConfigError, match="exceeds the 50 images"):
        dcvit.few_shot_pick(labels, 51, 0, classes)
    with pytest.raises(ConfigError):
        dcvit.plan_structure(dcvit.analytic_vit_costs(), 0.9, n_blocks=13)
