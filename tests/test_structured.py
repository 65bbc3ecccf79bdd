"""Chapter 2 pruning methods: L1 filters (VGG-16-A, ResNet-A/B), slimming, unstructured masks,
the Scratch-B budget and the regimes' initialisation."""

import copy

import pytest
import torch
from torch import nn

from compstudy import data, metrics, train
from compstudy.errors import ConfigError
from compstudy.methods import masks as mk
from compstudy.methods import structured
from compstudy.models import cifar as cm


def _randomise_bn(model, seed=0):
    """Non-trivial BN statistics so slicing mistakes show in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
    return model.eval()


def _zero_channels(conv, bn, keep):
    """The original network with the removed filters zeroed: conv filter and its BN output."""
    drop = torch.ones(conv.out_channels, dtype=torch.bool)
    drop[keep] = False
    conv.weight.data[drop] = 0
    bn.weight.data[drop] = 0
    bn.bias.data[drop] = 0


def test_l1_keeps_exactly_the_filters_of_largest_l1_norm():
    conv = nn.Conv2d(3, 8, 3, bias=False)
    norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
    keep = structured.l1_keep(conv, 5)
    assert set(keep.tolist()) == set(norms.argsort(descending=True)[:5].tolist())
    assert keep.tolist() == sorted(keep.tolist())
    assert structured.n_keep(16, 0.5) == 8 and structured.n_keep(16, 0.1) == 14  # int(n (1 - r))


def test_pruned_vgg_equals_original_with_those_filters_zeroed():
    torch.manual_seed(0)
    model = _randomise_bn(cm.vgg(10, "vgg16", 0.125))
    keep = structured.vgg_l1_keep(model, structured.VGG16_A_RATIOS)
    pruned = structured.prune_vgg(model, keep)
    assert pruned.conv_widths() == [len(k) for k in keep]
    assert pruned.conv_widths() == cm.vgg(10, "vgg16_a", 0.125).conv_widths()  # VGG-16-A
    reference = copy.deepcopy(model)
    for (conv, bn), idx in zip(reference.conv_bn_pairs(), keep):
        _zero_channels(conv, bn, idx)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(pruned(x), reference(x), rtol=1e-4, atol=1e-5)


def test_pruned_resnet_equals_original_with_those_filters_zeroed():
    torch.manual_seed(1)
    model = _randomise_bn(cm.resnet(10, 20, 0.5))
    skip = structured.resnet56_skip_blocks(structured.RESNET56_SKIP_IDS["B"], 20)
    keep = structured.resnet_l1_keep(model, [0.6, 0.3, 0.1], skip)
    pruned = structured.prune_resnet(model, keep)
    assert pruned.spec["inner_widths"] == [len(k) for k in keep]
    assert [len(k) for k in keep] == [3, 3, 8, 16, 11, 16, 32, 28, 32]
    reference = copy.deepcopy(model)
    for block, idx in zip(reference.blocks, keep):
        _zero_channels(block.conv1, block.bn1, idx)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(pruned(x), reference(x), rtol=1e-4, atol=1e-5)


def _pruned(arch):
    """A pruned VGG-16-A or ResNet-20-B with non-trivial BN statistics."""
    torch.manual_seed(5)
    if arch == "vgg":
        model = _randomise_bn(cm.vgg(10, "vgg16", 0.125))
        return structured.prune_vgg(model, structured.vgg_l1_keep(model, structured.VGG16_A_RATIOS))
    model = _randomise_bn(cm.resnet(10, 20, 0.5))
    skip = structured.resnet56_skip_blocks(structured.RESNET56_SKIP_IDS["B"], 20)
    return structured.prune_resnet(model, structured.resnet_l1_keep(model, [0.6, 0.3, 0.1], skip))


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_pruned_model_saves_and_reloads_from_its_spec(tmp_path, arch):
    pruned = _pruned(arch)
    loaded, _ = cm.load_model(cm.save_model(pruned, tmp_path / "p.pt"))
    x = torch.randn(4, 3, 32, 32)
    assert not pruned.training and torch.equal(pruned(x), loaded(x))
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {
        k: v.shape for k, v in pruned.state_dict().items()}


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_pruning_leaves_the_original_model_untouched(arch):
    torch.manual_seed(6)
    model = cm.vgg(10, "vgg16", 0.125) if arch == "vgg" else cm.resnet(10, 20, 0.5)
    before, spec = copy.deepcopy(model.state_dict()), copy.deepcopy(model.spec)
    keep = (structured.vgg_l1_keep(model, structured.VGG16_A_RATIOS) if arch == "vgg"
            else structured.resnet_l1_keep(model, [0.5, 0.5, 0.5]))
    pruned = (structured.prune_vgg if arch == "vgg" else structured.prune_resnet)(model, keep)
    assert model.training and model.spec == spec and pruned.spec != spec
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_pruning_guards_residual_channels_and_stale_specs():
    model = cm.resnet(10, 20, 0.5)
    block = model.blocks[3]
    inner = {(block.conv1, True), (block.bn1, True), (block.conv2, False)}
    with pytest.raises(RuntimeError, match="would touch"):  # conv2 outputs feed the residual sum
        structured._remove_filters(model, [(block.conv2, torch.arange(1, 16), inner)])
    with pytest.raises(ValueError, match="every filter"):
        structured.prune_resnet(model, [torch.tensor([], dtype=torch.long)]
                                + [torch.arange(b.conv1.out_channels) for b in model.blocks[1:]])
    with pytest.raises(ConfigError, match="9 blocks, got 2"):
        structured.prune_resnet(model, [torch.arange(8)] * 2)
    pruned = _pruned("resnet")
    pruned.spec = model.spec
    with pytest.raises(RuntimeError, match="does not rebuild"):
        structured._checked_spec(pruned)


def test_resnet56_skip_ids_map_to_blocks():
    assert structured.resnet56_skip_blocks([16, 20, 38, 54], 56) == {7, 9, 18, 26}
    assert structured.resnet56_skip_blocks([16, 20, 38, 54], 20) == {2, 3, 6, 8}


def test_slimming_threshold_removes_the_asked_fraction():
    torch.manual_seed(2)
    model = _randomise_bn(cm.vgg(10, "vgg16", 0.25))
    total = sum(bn.num_features for _, bn in model.conv_bn_pairs())
    for ratio in (0.3, 0.5, 0.7):
        keep = structured.slimming_keep(model, ratio)
        kept = sum(len(k) for k in keep)
        assert total - kept == int(ratio * total)
        # one global threshold: every kept |γ| exceeds every removed |γ|
        kept_g = torch.cat([bn.weight.abs()[k] for (_, bn), k in zip(model.conv_bn_pairs(), keep)])
        all_g = torch.cat([bn.weight.abs() for _, bn in model.conv_bn_pairs()])
        assert kept_g.min() > all_g.sort().values[int(ratio * total) - 1] - 1e-12
        pruned = structured.prune_vgg(model, keep)
        assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_slimming_penalty_changes_only_bn_scale_gradients():
    torch.manual_seed(3)
    model = cm.vgg(10, "vgg16", 0.125).train()
    nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    structured.add_bn_l1_subgradient(model, 0.01)
    bn2d_scales = {f"features.{i}.weight" for i, m in enumerate(model.features) if isinstance(m, nn.BatchNorm2d)}
    for name, p in model.named_parameters():
        if name in bn2d_scales:
            torch.testing.assert_close(p.grad, before[name] + 0.01 * torch.sign(p.detach()))
        else:
            assert torch.equal(p.grad, before[name]), name


def test_unstructured_masks_reach_sparsity_and_stay_zero_through_training():
    torch.manual_seed(4)
    model = cm.vgg(10, "vgg16", 0.125)
    masks = mk.global_magnitude_masks(model, 0.6)
    n = sum(m.numel() for m in masks.values())
    assert sum(int((m == 0).sum()) for m in masks.values()) == int(0.6 * n)
    mk.apply_masks(model, masks)
    ds = data.ImageSet("t", torch.randint(0, 255, (32, 3, 32, 32), dtype=torch.uint8),
                       torch.arange(32) % 10, tuple("abcdefghij"))
    loader = data.make_loader(ds, 16, shuffle=True)
    after_backward, after_step = structured.mask_hooks(model, masks)
    train.fit(model, loader, train.FitSettings(epochs=2, lr=0.1, weight_decay=5e-4),
              after_backward=after_backward, after_step=after_step, progress=False)
    weights = mk.conv_weights(model)
    for name, mask in masks.items():
        assert torch.all(weights[name][~mask.bool()] == 0), name
    assert (weights["features.0"] != 0).any() and mk.conv_sparsity(model) == pytest.approx(0.6, abs=1e-3)
    assert structured.sparse_macs(model) < metrics.count_macs(model)


def test_scratch_init_of_a_masked_model_keeps_the_mask_and_the_papers_fan():
    torch.manual_seed(7)
    model = cm.vgg(10, "vgg16", 0.25)
    masks = mk.global_magnitude_masks(model, 0.6)
    fresh = structured.fresh_copy(model, masks)
    weights = mk.conv_weights(fresh)
    for name, mask in masks.items():
        assert torch.all(weights[name][~mask.bool()] == 0), name
        assert weights[name][mask.bool()].abs().sum() > 0, name
    assert structured.fresh_copy(model).spec == model.spec


@pytest.mark.parametrize("macs_pruned, expected", [(100, 10), (80, 12.5), (50, 20), (10, 20), (66, 1000 / 66),
                                                    (120, 10)])
def test_scratch_b_epochs_follow_the_macs_ratio_and_the_cap(macs_pruned, expected):
    assert structured.scratch_b_epochs(10, 100, macs_pruned, cap=2.0) == pytest.approx(expected)


def test_scratch_b_without_cap_and_bad_macs():
    assert structured.scratch_b_epochs(160, 300, 100, cap=10.0) == 480
    with pytest.raises(ConfigError):
        structured.scratch_b_epochs(10, 100, 0)


def test_prune_ratio_errors_from_library_calls():
    model = cm.vgg(10, "vgg16", 0.125)
    with pytest.raises(ConfigError, match="one ratio per VGG conv layer"):
        structured.vgg_l1_keep(model, [0.5, 0.5])
    with pytest.raises(ConfigError, match="must lie in"):
        structured.slimming_keep(model, 1.5)
    with pytest.raises(ConfigError, match="unknown ResNet variant of Li et al. 'C'"):
        structured.li_resnet(cm.resnet(10, 20, 0.5), "C")
    with pytest.raises(ConfigError, match="MACs must be positive"):
        structured.scratch_b_epochs(10, 100, 0)


@pytest.mark.parametrize("variant, widths", [
    ("A", [14] * 7 + [16, 14] + [32] + [28] * 8 + [64] + [57] * 7 + [64]),
    ("B", [6] * 7 + [16, 16] + [32] + [22] * 6 + [32, 22] + [64] + [57] * 7 + [64]),
])
def test_resnet56_a_and_b_have_the_widths_of_li_et_al_ratios(variant, widths):
    """Li et al.'s res56prune.py: int(n·(1 − r)) per stage (A: 0.1 each; B: 0.6 / 0.3 / 0.1),
    the listed blocks kept whole; the MACs fall by the paper's 10.4 % and 27.6 %."""
    torch.manual_seed(8)
    large = cm.resnet(10, 56, 1.0)
    pruned = structured.li_resnet(large, variant)
    assert pruned.spec["inner_widths"] == widths
    reduction = 1 - metrics.count_macs(pruned) / metrics.count_macs(large)
    assert reduction == pytest.approx({"A": 0.104, "B": 0.276}[variant], abs=0.003)


def test_floor_keeps_width_scaled_resnets_from_one_channel_layers():
    torch.manual_seed(9)
    model = cm.resnet(10, 20, 0.25)
    assert min(structured.li_resnet(model, "B").spec["inner_widths"]) == 1
    assert min(structured.li_resnet(model, "B", floor=2).spec["inner_widths"]) == 2
    assert structured.n_keep(4, 0.6, floor=2) == 2 and structured.n_keep(4, 0.6) == 1


def test_uniform_vgg_matches_the_asked_parameters():
    target = 60_000
    model = structured.uniform_vgg_like(10, target, max_width=0.125)
    assert abs(metrics.count_parameters(model) - target) / target < 0.05
