"""DC-ViT stages A–D, model inversion and the block-dropping baseline (notebook 04) on a small
random ViT, and the study's splits, pairing and config checks."""

import copy
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from compstudy import claims, data, metrics
from compstudy.errors import ConfigError
from compstudy.methods import dcvit, inversion, practise
from compstudy.seeding import seed_everything
from compstudy.studies import dcvit as study


def tiny_vit(num_classes=100):
    """Width 64, depth 6, 2 heads, patch 8 at 32 px: 17 tokens, like DeiT-Tiny at 64 px."""
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=6, num_heads=2,
                              num_classes=num_classes)
    model.pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                            "interpolation": "bicubic"}
    return model.eval()


@pytest.fixture(scope="module")
def vit():
    seed_everything(0)
    return tiny_vit()


@pytest.fixture(scope="module")
def costs(vit):
    return dcvit.measure_costs(vit)


def _images(n, seed=0, side=32):
    """[0, 1] RGB images, the library's convention."""
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- stage A


def test_worked_example_vit_b16_gives_four_blocks_and_rd_061():
    vit_b = dcvit.analytic_vit_costs(convention="thop")  # the profiler of the paper's code
    plan = dcvit.plan_structure(vit_b, 0.751734186)
    assert plan.n_blocks == 4
    assert plan.drop_ratio == pytest.approx(0.61, abs=0.02)
    assert plan.predicted_macs <= plan.budget_macs
    # the keep ratio is "three whole blocks dropped" in that count
    assert 1 - 3 * (vit_b.block + vit_b.norm2) / vit_b.total == pytest.approx(0.751734186, abs=5e-6)
    table = study.worked_example()
    assert table.loc["thop", "n"] == 4 and table.loc["tp", "n"] == 3


def test_analytic_tp_count_equals_the_measured_count(vit, costs):
    assert dcvit.analytic_vit_costs(32, 8, 64, 6, 2, 4.0, 100) == costs
    assert dcvit.analytic_vit_costs().total == 17_593_519_096  # metrics.count_macs of timm ViT-B/16


def test_dropping_a_block_saves_its_attention_norm2_and_mlp(vit, costs):
    dropped = dcvit.model_macs(practise.drop_blocks(vit, [2]))
    assert costs.total - dropped == costs.block + costs.norm2


def test_architecture_costs_equal_the_measured_costs_of_deit_tiny():
    from compstudy import models

    model = models.upstream_model("deit_tiny", 64, pretrained=False)
    model.reset_classifier(10)
    assert dcvit.architecture_costs(model) == dcvit.measure_costs(model)
    assert study.model_costs("deit_tiny", 64, 10) == dcvit.measure_costs(model)


def test_costs_are_counted_at_the_models_own_resolution():
    big = tiny_vit()
    big.pretrained_cfg = {**big.pretrained_cfg}
    wide = VisionTransformer(img_size=64, patch_size=8, embed_dim=64, depth=6, num_heads=2, num_classes=100)
    wide.pretrained_cfg = {**big.pretrained_cfg, "input_size": (3, 64, 64)}
    assert dcvit.measure_costs(wide) == dcvit.analytic_vit_costs(64, 8, 64, 6, 2, 4.0, 100)
    assert dcvit.measure_costs(wide).tokens == 65


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
        measured = dcvit.model_macs(model)
        assert measured == plan.predicted_macs
        assert measured <= plan.budget_macs


def test_forced_n_blocks(costs):
    plan = dcvit.plan_structure(costs, 0.85, n_blocks=3)
    assert plan.n_blocks == 3 and plan.predicted_macs <= plan.budget_macs
    with pytest.raises(ConfigError):
        dcvit.plan_structure(dcvit.analytic_vit_costs(), 0.9, n_blocks=13)


def test_nested_budgets_share_one_chain(costs):
    """Budgets at the MACs of k blocks compressed with u units each, rounded up: stage A
    gives n = k and u for each, so one progressive chain serves them all."""
    kept = costs.hidden // 4
    saved = costs.attention + (costs.hidden - kept) * costs.per_unit
    for k in range(1, 5):
        ratio = np.ceil((1 - k * saved / costs.total) * 1e4) / 1e4
        plan = dcvit.plan_structure(costs, ratio)
        assert (plan.n_blocks, plan.kept_units) == (k, kept)


# ----------------------------------------------------------------------------- the compressed block


def test_compressed_block_has_no_attention_and_the_expected_width(vit, costs):
    kept = 100
    compressed = dcvit.compress_block(vit, 2, kept, seed=1)
    block = compressed.blocks[2]
    assert dcvit.attention_parameters(block) == 0
    assert dcvit.attention_parameters(vit.blocks[2]) > 0
    assert not hasattr(block, "attn") and not hasattr(block, "norm1")
    assert block.mlp.fc1.out_features == kept and block.mlp.fc2.in_features == kept
    assert dcvit.is_compressed(compressed) == [2]
    saved = dcvit.model_macs(vit) - dcvit.model_macs(compressed)
    assert saved == costs.attention + (costs.hidden - kept) * costs.per_unit
    params = metrics.count_parameters(vit) - metrics.count_parameters(compressed)
    assert params == dcvit.attention_parameters(vit.blocks[2]) + (costs.hidden - kept) * (64 + 1 + 64)


def test_kept_units_copy_the_original_weights(vit):
    keep = torch.tensor([3, 7, 200])
    block = dcvit.CompressedBlock(vit.blocks[1], keep)
    assert torch.equal(block.mlp.fc1.weight, vit.blocks[1].mlp.fc1.weight[keep])
    assert torch.equal(block.mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight[:, keep])
    assert torch.equal(block.mlp.fc2.bias, vit.blocks[1].mlp.fc2.bias)


def test_random_units_are_seeded_and_activation_units_are_the_most_active(vit):
    a = dcvit.compress_block(vit, 1, 10, seed=3).blocks[1].mlp.fc1.weight
    assert torch.equal(a, dcvit.compress_block(vit, 1, 10, seed=3).blocks[1].mlp.fc1.weight)
    assert not torch.equal(a, dcvit.compress_block(vit, 1, 10, seed=4).blocks[1].mlp.fc1.weight)
    stats = dcvit.mlp_activation_stats(vit, _images(16))
    compressed = dcvit.compress_block(vit, 1, 10, init="activation", activations=stats[1])
    top = stats[1].argsort(descending=True)[:10].sort().values
    assert torch.equal(compressed.blocks[1].mlp.fc1.weight, vit.blocks[1].mlp.fc1.weight[top])


def test_all_mlp_units_dropped_makes_an_identity_block(vit):
    block = dcvit.CompressedBlock(vit.blocks[0], 0)
    x = torch.randn(2, 17, 64)
    assert torch.equal(block(x), x)


# ----------------------------------------------------------------------------- stage B


def test_inversion_lowers_the_ce_and_returns_images_at_the_models_side(vit):
    targets = inversion.inversion_targets(8, 100, seed=0)
    assert len(set(targets.tolist())) == 8
    images, history = inversion.invert(vit, targets, steps=30, lr=0.1, seed=0)
    assert images.shape == (8, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert history.loss.iloc[-5:].mean() < history.loss.iloc[:5].mean()
    noise = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = torch.nn.functional.cross_entropy(dcvit.logits(vit, noise), targets).item()
    after = torch.nn.functional.cross_entropy(dcvit.logits(vit, images), targets).item()
    assert after < before
    assert all(p.requires_grad for p in vit.parameters())  # model left trainable


def test_inversion_uses_the_models_normalisation_and_side():
    model = VisionTransformer(img_size=48, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=5)
    model.pretrained_cfg = {"input_size": (3, 48, 48), "mean": (0.485, 0.456, 0.406),
                            "std": (0.229, 0.224, 0.225), "interpolation": "bicubic"}
    images, _ = inversion.invert(model, torch.arange(3), steps=2, seed=0)
    assert images.shape == (3, 3, 48, 48) and 0 <= images.min() and images.max() <= 1
    assert inversion.default_jitter(224) == 30 and inversion.default_jitter(64) == 9
    assert inversion.default_jitter(64, 8) == 8 and inversion.default_jitter(64, 0) == 0  # a set jitter wins


def test_inversion_targets_cycle_through_the_classes():
    targets = inversion.inversion_targets(20, 10, seed=1)
    assert torch.bincount(targets, minlength=10).tolist() == [2] * 10


def test_total_variation_is_zero_for_constant_images():
    assert inversion.total_variation(torch.ones(2, 3, 8, 8), 0.6).item() == 0
    assert inversion.total_variation(torch.randn(2, 3, 8, 8), 0.6).item() > 0


# ----------------------------------------------------------------------------- stages C and D


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


def test_mimicking_trains_a_copy_of_a_frozen_teacher(vit):
    """A student deep-copied from a teacher whose parameters are frozen still trains, and its
    flags are restored afterwards."""
    frozen = copy.deepcopy(vit).requires_grad_(False)
    x = _images(8)
    student = dcvit.compress_block(frozen, 1, 32)
    start = copy.deepcopy(student)
    flags = [p.requires_grad for p in student.parameters()]
    dcvit.mimic_finetune(student, x, dcvit.teacher_targets(frozen, x), dcvit.MimicSettings(2, 4, 1e-3),
                         last_changed=1)
    assert {"blocks.0.attn.qkv.weight", "blocks.2.mlp.fc1.weight", "norm.weight"} <= _changed(start, student)
    assert [p.requires_grad for p in student.parameters()] == flags


def test_mimicking_lowers_the_feature_loss(vit):
    x = _images(8)
    targets = dcvit.teacher_targets(vit, x)
    student = dcvit.compress_block(vit, 3, 16)
    before = dcvit.feature_mse(student, x, targets["features"])
    dcvit.mimic_finetune(student, x, targets, dcvit.MimicSettings(20, 8, 1e-3), last_changed=3)
    assert dcvit.feature_mse(student, x, targets["features"]) < before


def test_mimic_batches_are_epochs_of_shuffled_images():
    batches = dcvit.mimic_batches(10, 4, 5, seed=0)
    first = torch.cat([idx for idx, _ in batches])[:10]
    assert sorted(first.tolist()) == list(range(10))  # one epoch sees every image once
    assert [len(idx) for idx, _ in batches] == [4] * 5
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, dcvit.mimic_batches(10, 4, 5, seed=0)))


def test_block_trials_score_every_candidate_and_rank_ascending(vit):
    x = _images(16)
    targets = dcvit.teacher_targets(vit, x)
    syn = _images(4, seed=1)
    trials = dcvit.block_trials(vit, [1, 2, 3], 64, x, targets, dcvit.MimicSettings(1, 8),
                                {"synthetic": (syn, dcvit.logits(vit, syn))})
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
    assert dcvit.kl_to_teacher(vit, x, dcvit.logits(vit, x)) == pytest.approx(0, abs=1e-6)


# ----------------------------------------------------------------------------- baseline


def test_adaptors_start_as_identity_and_dropping_removes_the_block(vit):
    adapted, params = practise.with_adaptors(vit, 2)
    dropped = practise.drop_blocks(vit, [2])
    x = _images(2)
    assert torch.allclose(dcvit.logits(adapted, x), dcvit.logits(dropped, x), atol=1e-5)
    assert len(params) == 2 * 5  # weight + bias for blocks 0, 1 (after fc2) and 3, 4, 5 (before qkv)
    assert metrics.count_parameters(vit) - metrics.count_parameters(dropped) == sum(
        p.numel() for p in vit.blocks[2].parameters())


def test_recoverability_trains_only_the_adaptors_and_divides_by_the_reduction(vit):
    x = _images(8)
    targets = dcvit.teacher_targets(vit, x)
    start = copy.deepcopy(vit)
    scores = practise.recoverability_scores(vit, [1, 2], x, targets, steps=2,
                                            latency_reduction={1: 0.5, 2: 0.25}, metric_images=4)
    assert scores.score.tolist() == pytest.approx((scores.recoverability / scores.latency_reduction).tolist())
    assert not _changed(start, vit)  # the model itself is untouched
    assert practise.blocks_to_drop(scores, 1) == [int(scores.sort_values("score").block.iloc[0])]
    with pytest.raises(ConfigError):
        practise.blocks_to_drop(scores, 3)


# ----------------------------------------------------------------------------- the study


def _fake_cifar(n_per_class, split_seed):
    labels = torch.arange(10).repeat_interleave(n_per_class)
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))]
    images = torch.zeros(len(labels), 3, 1, 1, dtype=torch.uint8)
    return data.ImageSet("cifar10", images, labels, tuple(map(str, range(10))))


def test_a_loader_without_crop_padding_only_flips():
    ds = data.ImageSet("toy", torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8), torch.zeros(8, dtype=torch.long),
                       ("a",))
    (x, _), = list(data.make_loader(ds, 8, shuffle=False, augment=True, pad=0))
    plain = data.to_float(ds.images)
    flipped = (x == plain.flip(3)).flatten(1).all(1)
    assert ((x == plain).flatten(1).all(1) | flipped).all() and flipped.any()


def test_finetune_fewshot_and_test_images_are_disjoint():
    """The cpu profile's split of CIFAR-10's 50,000 / 10,000 images: fine-tune, every few-shot
    set and the test images share no image; the held-out images are not test images."""
    cfg = study.Config.from_overrides({"profile": "cpu", "run": "main"})
    train, test = _fake_cifar(5000, 1), _fake_cifar(1000, 2)
    splits = study.make_splits(train, test, cfg.finetune_per_class, cfg.test_per_class,
                               cfg.heldout_per_class, cfg.seed)
    few = [study.few_shot_set(splits.fewshot_pool, n, s) for n in cfg.num_samples for s in cfg.seeds]
    assert len(splits.finetune) == 10 * cfg.finetune_per_class and len(splits.test) == 10 * cfg.test_per_class
    assert len(splits.heldout) == 10 * cfg.heldout_per_class
    finetune, test_ids = set(splits.finetune.ids.tolist()), set(splits.test.ids.tolist())
    assert not finetune & set(splits.fewshot_pool.ids.tolist())
    for f in few:
        assert not finetune & set(f.ids.tolist())
        assert set(f.ids.tolist()) <= set(splits.fewshot_pool.ids.tolist())
    assert not test_ids & set(splits.heldout.ids.tolist())
    study.check_disjoint(splits, few)
    broken = study.Splits(splits.finetune, splits.fewshot_pool, splits.test, splits.test)
    with pytest.raises(AssertionError, match="overlap"):
        study.check_disjoint(broken, few)
    with pytest.raises(AssertionError, match="fine-tuning"):
        study.check_disjoint(splits, [splits.finetune.subset([0, 1])])


def test_few_shot_sets_have_n_images_are_nested_and_fail_when_too_large():
    pool = _fake_cifar(60, 3)
    small, large = study.few_shot_set(pool, 20, 0), study.few_shot_set(pool, 500, 0)
    assert len(small) == 20 and torch.bincount(small.labels).tolist() == [2] * 10
    assert set(small.ids.tolist()) <= set(large.ids.tolist())
    assert len(study.few_shot_set(pool, 23, 0)) == 23
    with pytest.raises(ConfigError, match="exceeds"):
        study.few_shot_set(pool, 700, 0)


def test_equal_macs_interpolates_each_seeds_curve_and_pairs_by_seed():
    chains = pd.DataFrame({"update": "before", "init": "random", "num_samples": 50, "seed": [0, 0, 1, 1],
                           "k": [1, 2, 1, 2], "keep_ratio": [0.9, 0.8, 0.9, 0.8],
                           "macs_kept": [0.9, 0.8, 0.9, 0.8], "accuracy": [0.70, 0.60, 0.50, 0.40]})
    drops = pd.DataFrame({"num_samples": 50, "seed": [0, 1], "k": 1, "macs_kept": [0.85, 0.95],
                          "accuracy": [0.60, 0.50]})
    equal = study.equal_macs(chains, drops, dense_accuracy=0.80)
    assert equal.dcvit.tolist() == pytest.approx([0.65, 0.65])  # seed 1 between 0.9 and the dense 1.0
    assert equal.difference.tolist() == pytest.approx([0.05, 0.15])



def test_ranking_reads_the_synthetic_or_the_real_kl():
    trials = pd.DataFrame({"init": "random", "num_samples": 50, "seed": 0, "block": [1, 2, 3],
                           "kl_synthetic": [0.3, 0.1, 0.2], "kl_real": [0.1, 0.3, 0.2]})
    assert study.ranking(trials, 50, 0, "random") == [2, 3, 1]
    assert study.ranking(trials, 50, 0, "random", "real") == [1, 3, 2]
    assert study.ranking(trials, 50, 1, "random") == []  # another seed's trials are not read


def test_placement_averages_the_first_compressed_and_the_dropped_blocks():
    chains = pd.DataFrame({"update": "before", "init": "random", "num_samples": 50, "seed": 0,
                           "k": [3, 1, 2, 4], "block_compressed": [4, 1, 2, 9]})
    recover = pd.DataFrame({"num_samples": 50, "seed": [0] * 4 + [1] * 4, "block": [1, 2, 9, 10] * 2,
                            "score": [0.4, 0.3, 0.2, 0.1, 0.1, 0.2, 0.3, 0.4]})
    place = study.placement(chains, recover, 2)
    assert place.to_dict("records") == [{"num_samples": 50, "seed": 0, "blocks": 2, "dcvit": 1.5,
                                         "block_drop": 9.5}]


@pytest.mark.parametrize("loss, verdict", [(0.2, "reproduced"), (3.0, "contradicted"), (-1.0, "reproduced")])
def test_claim_4_is_non_inferiority_with_a_one_point_margin(loss, verdict):
    pairs = pd.DataFrame({"init": "random", "num_samples": 50, "seed": [0, 0, 1, 1, 2, 2], "k": [1, 2] * 3,
                          "difference": -loss / 100 + np.array([-1, 1, -2, 2, 0.5, -0.5]) * 1e-3})
    r = type("R", (), {"update_pairs": pairs})()
    cfg = type("C", (), {"claims": ["4"]})()
    (result,) = study.decide(cfg, r)
    assert result.verdict == verdict and result.effect == pytest.approx(study.UPDATE_MARGIN - loss)

def test_accuracy_table_has_a_t_interval_over_seeds_per_method_and_level():
    chains = pd.DataFrame({"update": "before", "init": "random", "num_samples": 50, "seed": [0, 1, 2],
                           "k": 1, "keep_ratio": 0.9, "macs_kept": 0.9, "accuracy": [0.70, 0.72, 0.74]})
    drops = pd.DataFrame({"num_samples": 50, "seed": [0, 1, 2], "k": 1, "macs_kept": 0.92,
                          "accuracy": [0.75, 0.75, 0.75]})
    table = study.accuracy_table(chains, drops)
    dc, drop = table.loc[("DC-ViT", 50, 1)], table.loc[("block drop", 50, 1)]
    assert dc.accuracy == pytest.approx(72.0) and dc.seeds == 3
    half = 4.302653 * 2.0 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n), in points
    assert (dc.ci_low, dc.ci_high) == pytest.approx((72.0 - half, 72.0 + half), rel=1e-4)
    assert drop.accuracy == pytest.approx(75.0) and drop.ci_low == pytest.approx(drop.ci_high)

def test_coverage_dcvit_meets_any_budget_block_dropping_overshoots(costs):
    the_plan = study.Plan(costs, list(range(1, 5)), [], 64)
    cover = study.coverage(the_plan, [1, 2, 3])
    assert (cover.dcvit_excess >= 0).all() and (cover.drop_excess >= 0).all()
    dense = cover[cover.budget <= 1 - costs.attention / costs.total]  # below one attention's share
    assert len(dense) > 40 and dense.dcvit_excess.max() <= 4 * costs.per_unit / costs.total
    share = (costs.block + costs.norm2) / costs.total
    assert cover.drop_excess.max() < share and cover.drop_excess.mean() > 10 * cover.dcvit_excess.mean()


@pytest.mark.parametrize("overrides, match", [
    ({"keep_ratios": [1.0]}, "must lie in"),
    ({"keep_ratios": [0.1]}, "unreachable"),
    ({"n_blocks": 11}, "must lie in 1..10"),
    ({"n_blocks": 1, "keep_ratios": [0.6]}, "unreachable"),
    ({"max_block": 12}, "must lie within the model's 12 blocks"),
    ({"drop_blocks": [11]}, "drop_blocks entry 11"),
    ({"update_settings": ["after"]}, "unknown update_settings value"),
    ({"mlp_inits": ["magnitude"]}, "unknown mlp_inits value"),
    ({"update_settings": ["all"]}, "must include 'before'"),
    ({"claims": ["4"]}, "claim 4 needs update_settings"),
    ({"claims": ["5"], "num_samples": [50]}, "claim 5 needs"),
    ({"seeds": [0, 0]}, "repeats"),
    ({"resolution": 60}, "divisible by 16"),
    ({"latency_forwards": 1}, "'latency_forwards' .* must lie in \\[2, inf\\]"),
    ({"rank_metric": "fewshot"}, "unknown rank_metric value"),
])
def test_user_errors_are_one_line_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match) as error:
        study.Config.from_overrides({"profile": "cpu", "run": "main", **overrides})
    assert "\n" not in str(error.value)


def test_the_cpu_budgets_are_one_nested_chain():
    cfg = study.Config.from_overrides({"profile": "cpu", "run": "main"})
    the_plan = study.plan(cfg, study.model_costs(cfg.model, cfg.resolution, num_classes=10))
    assert the_plan.chains == {the_plan.trial_kept: len(cfg.keep_ratios)}


def test_latency_rows_time_every_structure_in_one_pass_in_turn(vit, costs, monkeypatch):
    passes = []
    measure = metrics.measure_latencies

    def recorded(models, *args, **kwargs):
        passes.append(len(models))
        return measure(models, *args, **kwargs)

    monkeypatch.setattr(metrics, "measure_latencies", recorded)
    cfg = SimpleNamespace(latency_batch=2, latency_forwards=2, drop_blocks=[1, 2], latency_probe_blocks=[1, 2])
    plan = SimpleNamespace(candidates=[5, 4, 3], chains={32: 2}, costs=costs)
    ctx = SimpleNamespace(cfg=cfg, plan=plan, teacher=vit, progress=False)
    units = study.latency_units(ctx)
    rows = study.latency_rows(ctx, units)
    assert passes == [len(units)] == [1 + 2 + 2 + 4]  # full, two DC-ViT, two drops, four probes
    by = {(r["method"], r["k"]): r for r in rows}
    assert by["full", 0]["macs_kept"] == pytest.approx(1.0)
    assert by["drop", 2]["macs_kept"] < by["drop", 1]["macs_kept"] < 1
    assert by["no_attention", 2]["macs_kept"] < by["no_attention", 1]["macs_kept"] < 1
    assert all(r["median_ms"] > 0 and r["batch_size"] == 2 for r in rows)
    assert by["full", 0]["latency_kept"] == by["full", 0]["latency_kept_low"] == 1.0
    assert all(r["latency_kept_low"] <= r["latency_kept"] <= r["latency_kept_high"] for r in rows)


def test_claim_6b_takes_the_largest_attention_removal_and_carries_its_round_interval():
    """Gain per MACs is (1 - latency kept) / (1 - MACs kept); its CI maps the latency CI's ends
    across (a higher latency kept is a smaller gain), and 6b reads the most blocks probed."""
    rows = pd.DataFrame([
        {"method": "full", "k": 0, "macs_kept": 1.0, "latency_kept": 1.0, "latency_kept_low": 1.0,
         "latency_kept_high": 1.0},
        {"method": "no_attention", "k": 2, "macs_kept": 0.95, "latency_kept": 0.90, "latency_kept_low": 0.85,
         "latency_kept_high": 0.95},
        {"method": "no_attention", "k": 4, "macs_kept": 0.90, "latency_kept": 0.86, "latency_kept_low": 0.85,
         "latency_kept_high": 0.87},
    ])
    table = study.latency_table(rows)
    four = table[table.k == 4].iloc[0]
    assert four.gain_per_macs == pytest.approx(1.4)
    assert (four.gain_per_macs_low, four.gain_per_macs_high) == pytest.approx((1.3, 1.5))
    gain = study.attention_latency_gain(table, rounds=25)
    assert (gain.effect, gain.ci_low, gain.ci_high) == pytest.approx((0.4, 0.3, 0.5))
    assert gain.n == 25 and gain.df == 24 and "4 blocks" in gain.method
    result = claims.judge(study.CLAIMS["6b"], gain)
    assert result.verdict == claims.REPRODUCED


def test_workers_fill_the_caches_bit_for_bit_as_one_process_and_leave_nothing_missing():
    """Two one-thread workers write every artifact of every (N, seed), to the last bit (all but
    the CPU seconds), as the in-process run (``workers=0``) does, the larger N of a seed after
    the seed's inversion; afterwards a lookup-only pass finds nothing to build."""
    import dataclasses
    import shutil

    from compstudy import cache, config, paths

    cfg = dataclasses.replace(config.load_config("smoke", "04_dcvit", "main"), seeds=[0, 1])
    ctx, _ = study.make_context(cfg, study.load_data(cfg), progress=False)
    kinds = ("dcvit_inversion", "dcvit_targets", "dcvit_trials", "dcvit_chain", "dcvit_recover", "dcvit_drop")

    def fill(workers: int) -> dict:
        for kind in kinds:
            shutil.rmtree(paths.ARTIFACTS_DIR / kind, ignore_errors=True)
        threads = torch.get_num_threads()
        study.fill_caches(dataclasses.replace(ctx, cfg=dataclasses.replace(cfg, workers=workers)), progress=False)
        assert torch.get_num_threads() == threads
        return {p.relative_to(paths.ARTIFACTS_DIR): cache.torch_load(p)
                for kind in kinds for p in (paths.ARTIFACTS_DIR / kind).glob("*.pt")}

    def same(a, b) -> bool:
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and torch.equal(a, b)
        if isinstance(a, dict):  # the CPU seconds a step took are a measurement, not a result
            return isinstance(b, dict) and a.keys() == b.keys() and all(
                same(a[k], b[k]) for k in a if k != "cpu_seconds")
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b or (a != a and b != b)  # NaN equals NaN here

    alone, pooled = fill(0), fill(2)
    assert pooled.keys() == alone.keys()
    assert {p.parts[0] for p in alone} == set(kinds)
    assert len([p for p in alone if p.parts[0] == "dcvit_inversion"]) == 2  # one per seed
    assert len([p for p in alone if p.parts[0] == "dcvit_trials"]) == 4  # 2 Ns x 2 seeds
    assert all(same(pooled[p], alone[p]) for p in alone)
    with cache.lookup_only():
        for few_shot_run in study.few_shot_runs(cfg):
            study._all_steps(ctx, few_shot_run)
