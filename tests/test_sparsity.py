"""Sparse source models: sparsity bookkeeping, the GMP schedule, IMP rewinding, RigL, masks."""

import copy
import itertools

import pytest
import torch
from torch import nn

from compstudy import sparsity
from compstudy.errors import ConfigError


def tiny_net(seed=0, classes=5):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))


def batches(seed=0, classes=5, n=16):
    g = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randn(n, 3, 8, 8, generator=g)
        yield x, torch.randint(0, classes, (n,), generator=g)


RECIPE = sparsity.SparseRecipe(steps=12, lr=0.05, batch_size=16, gmp_prune_every=2,
                               lottery_round_steps=3, lottery_rewind_step=2,
                               acdc_phase_steps=3, rigl_delta=2)


def test_conv_sparsity_counts_conv_weights_only():
    net = tiny_net()
    with torch.no_grad():
        net[0].weight.zero_()  # 8*3*3*3 = 216 of 216 + 1152 conv weights
        net[-1].weight.zero_()  # FC: must not count
    assert sparsity.conv_sparsity(net) == pytest.approx(216 / (216 + 16 * 8 * 9))


@pytest.mark.parametrize("target", [0.0, 0.3, 0.5, 0.8, 0.9, 0.97])
def test_global_magnitude_reaches_the_asked_sparsity(target):
    net = tiny_net()
    masks = sparsity.global_magnitude_masks(net, target)
    sparsity.apply_masks(net, masks)
    assert abs(sparsity.conv_sparsity(net) - target) < 1e-3
    # it is global: the kept weights are exactly the largest magnitudes over all layers
    kept = torch.cat([w.detach().abs().flatten()[m.flatten()] for w, m in
                      zip(sparsity.conv_weights(tiny_net()).values(), masks.values())])
    dropped = torch.cat([w.detach().abs().flatten()[~m.flatten()] for w, m in
                         zip(sparsity.conv_weights(tiny_net()).values(), masks.values())])
    if len(kept) and len(dropped):
        assert kept.min() >= dropped.max()


def test_masks_only_shrink_when_pruning_further():
    net = tiny_net()
    first = sparsity.global_magnitude_masks(net, 0.5)
    second = sparsity.global_magnitude_masks(net, 0.7, first)
    for name in first:
        assert not (second[name] & ~first[name]).any()


def test_gmp_schedule_is_monotone_and_hits_its_ends():
    values = [sparsity.gmp_schedule(t, 0.9, 0.1, start_step=5, n_prunes=8, prune_every=3)
              for t in range(0, 50)]
    assert values[5] == pytest.approx(0.1)
    assert values[5 + 24] == pytest.approx(0.9) and values[-1] == pytest.approx(0.9)
    assert all(b >= a for a, b in zip(values, values[1:]))
    # cubic: most of the pruning happens early
    assert sparsity.gmp_schedule(5 + 12, 0.9, 0.1, 5, 8, 3) == pytest.approx(0.9 - 0.8 * 0.5 ** 3)


@pytest.mark.parametrize("family", ["oneshot", "gmp", "acdc", "rigl"])
def test_each_family_reaches_its_sparsity_and_pruned_weights_stay_zero(family):
    net = tiny_net()
    builder = getattr(sparsity, family)
    out = builder(net, 0.8, batches(), RECIPE)
    assert abs(sparsity.conv_sparsity(out) - 0.8) < 2e-3
    masks = sparsity.masks_of(out)
    sparsity.train_steps(out, batches(1), 5, RECIPE, masks=lambda: masks)  # fixed-mask fine-tune
    for name, w in sparsity.conv_weights(out).items():
        assert (w[~masks[name]] == 0).all()
    assert abs(sparsity.conv_sparsity(out) - 0.8) < 2e-3


def test_weights_change_during_masked_training():
    net = tiny_net()
    masks = sparsity.global_magnitude_masks(net, 0.5)
    sparsity.apply_masks(net, masks)
    before = copy.deepcopy(net.state_dict())
    sparsity.train_steps(net, batches(), 3, RECIPE, masks=lambda: masks)
    w0, w1 = before["0.weight"], net[0].weight.detach()
    assert not torch.equal(w0[masks["0"]], w1[masks["0"]])
    assert (w1[~masks["0"]] == 0).all()


def test_lottery_rewinds_survivors_to_the_saved_early_weights():
    net = tiny_net()
    rewind = copy.deepcopy(net.state_dict())
    sparsity.train_steps(net, batches(), 4, RECIPE)
    masks = sparsity.global_magnitude_masks(net, 0.2)
    sparsity.rewind_to(net, rewind, masks)
    for name, w in sparsity.conv_weights(net).items():
        early = rewind[f"{name}.weight"]
        assert torch.equal(w[masks[name]], early[masks[name]])
        assert (w[~masks[name]] == 0).all()
    assert torch.equal(net[-1].weight, rewind["8.weight"])  # every tensor rewinds


def test_lottery_tickets_hit_every_asked_sparsity_in_20_percent_rounds():
    seen = []
    tickets = sparsity.lottery(tiny_net(), [0.5, 0.8], batches(), RECIPE, progress=seen.append)
    assert sorted(tickets) == [0.5, 0.8]
    for s, model in tickets.items():
        assert abs(sparsity.conv_sparsity(model) - s) < 2e-3
    # 20 % of the survivors per round, capped at each asked sparsity
    assert seen[:3] == pytest.approx([0.2, 0.36, 0.488])
    assert seen[3] == pytest.approx(0.5) and seen[-1] == pytest.approx(0.8)
    densities = [1 - s for s in seen]
    assert all(b / a >= 0.8 - 1e-9 for a, b in zip(densities, densities[1:]))


def test_rigl_update_keeps_the_count_and_regrows_by_gradient():
    torch.manual_seed(0)
    w, g = torch.randn(50), torch.randn(50)
    mask = torch.zeros(50, dtype=torch.bool)
    mask[:20] = True
    new = sparsity.rigl_drop_grow(w, g, mask, 0.3)
    assert int(new.sum()) == 20
    k = int(0.3 * 20)  # 6 dropped by magnitude among the active, 6 regrown by gradient
    active = torch.nonzero(mask).flatten()
    drop = active[w.abs()[active].argsort()[:k]]
    kept = mask.clone()
    kept[drop] = False
    candidates = torch.nonzero(~kept).flatten()  # just-dropped weights may regrow
    grow = candidates[g.abs()[candidates].argsort(descending=True)[:k]]
    expected = kept.clone()
    expected[grow] = True
    assert torch.equal(new, expected)


def test_rigl_keeps_sparsity_constant_through_training():
    net = tiny_net()
    recorded = []
    original = sparsity.rigl_drop_grow

    def spy(weight, grad, mask, fraction):
        new = original(weight, grad, mask, fraction)
        recorded.append((int(mask.sum()), int(new.sum()), bool((new != mask).any())))
        return new

    sparsity.rigl_drop_grow = spy
    try:
        out = sparsity.rigl(net, 0.7, batches(), RECIPE)
    finally:
        sparsity.rigl_drop_grow = original
    assert recorded and all(a == b for a, b, _ in recorded)
    assert any(changed for *_, changed in recorded), "RigL never changed the topology"
    for w in sparsity.conv_weights(out).values():  # uniform: every layer at 70 %
        assert abs((w == 0).float().mean().item() - 0.7) < 0.02


def test_bad_families_and_sparsities_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="unknown sparse family 'snip'"):
        sparsity.validate_families({"snip": [0.5]})
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"\[0, 1\)"):
            sparsity.validate_families({"gmp": [bad]})


def test_cached_family_is_reused(tmp_path, monkeypatch):
    from compstudy import data, paths
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path)
    images = torch.randint(0, 255, (40, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40) % 5
    source = data.ImageSet("toy", images, labels, tuple("abcde"))
    spec = sparsity.SparseSpec("oneshot", (0.6,), "up", 8, 0,
                               sparsity.SparseRecipe(steps=2, batch_size=8))
    dense = tiny_net()
    first = sparsity.build_family(dense, spec, source)
    assert spec.path(0.6).exists()
    second = sparsity.build_family(dense, spec, source)
    for a, b in itertools.product([first[0.6][0]], [second[0.6][0]]):
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y)
    assert first[0.6][1]["conv_sparsity"] == pytest.approx(0.6, abs=1e-3)


def test_a_sparse_model_does_not_depend_on_what_else_is_cached(tmp_path, monkeypatch):
    """Building 0.8 alone or after 0.5 in the same call gives the same model (same batches)."""
    from compstudy import data, paths
    images = torch.randint(0, 255, (40, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    source = data.ImageSet("toy", images, torch.arange(40) % 5, tuple("abcde"))
    recipe = sparsity.SparseRecipe(steps=3, batch_size=8)
    models = []
    for folder, asked in (("both", (0.5, 0.8)), ("alone", (0.8,))):
        monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path / folder)
        spec = sparsity.SparseSpec("gmp", asked, "up", 8, 0, recipe)
        models.append(sparsity.build_family(tiny_net(), spec, source)[0.8][0])
    for x, y in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(x, y)
