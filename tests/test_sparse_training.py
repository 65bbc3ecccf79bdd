"""Sparse sources by distillation: masks, the GMP schedule, IMP rounds and rewinding, AC/DC
phases, RigL updates, exact masks through KD fine-tuning (compstudy.methods.sparse_training)."""

import copy

import pytest
import torch
from torch import nn

from compstudy.errors import ConfigError
from compstudy.methods import masks
from compstudy.methods import sparse_training as st


def tiny_net(seed=0, classes=7):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),  # depthwise
        nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes)).eval()


def proxy(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 8, 8, generator=g)
    with torch.no_grad():
        teacher = tiny_net()(images)
    return images, teacher


RECIPE = st.KDRecipe(steps=12, batch_size=8, lr=0.01, gmp_prune_every=2, gmp_end_step=8,
                     imp_round_steps=2, acdc_phase_steps=3, rigl_every=2, rigl_end_step=9)


# ----------------------------------------------------------------------------- masks


def test_conv_sparsity_counts_every_conv_weight_and_nothing_else():
    net = tiny_net()
    with torch.no_grad():
        net[3].weight.zero_()  # depthwise: 8 * 9 = 72 of 216 + 72 + 128 conv weights
        net[-1].weight.zero_()  # the classifier must not count
    assert masks.conv_sparsity(net) == pytest.approx(72 / (216 + 72 + 128))


@pytest.mark.parametrize("target", [0.0, 0.3, 0.5, 0.8, 0.9, 0.97])
def test_global_magnitude_reaches_the_asked_sparsity_and_is_global(target):
    net = tiny_net()
    m = masks.global_magnitude_masks(net, target)
    weights = masks.conv_weights(tiny_net())
    masks.apply_masks(net, m)
    assert masks.conv_sparsity(net) == pytest.approx(round(target * 416) / 416)
    kept = torch.cat([w.detach().abs()[m[n]] for n, w in weights.items()])
    dropped = torch.cat([w.detach().abs()[~m[n]] for n, w in weights.items()])
    if len(kept) and len(dropped):
        assert kept.min() >= dropped.max()


def test_masks_only_shrink_when_pruning_further():
    net = tiny_net()
    first = masks.global_magnitude_masks(net, 0.5)
    second = masks.global_magnitude_masks(net, 0.7, first)
    assert all(not (second[n] & ~first[n]).any() for n in first)


def test_bad_sparsities_are_one_line_config_errors():
    for bad in (1.0, -0.1, 1.5, True):
        with pytest.raises(ConfigError, match=r"\[0, 1\)"):
            masks.check_sparsity(bad)
    with pytest.raises(ConfigError, match="unknown sparse family 'snip'"):
        st.make_sparse("snip", tiny_net(), [0.5], *proxy(), RECIPE, 0)


# ----------------------------------------------------------------------------- schedules


def test_gmp_schedule_is_cubic_monotone_and_hits_its_ends():
    values = [st.gmp_schedule(t, 0.9, 20) for t in range(0, 30)]
    assert values[0] == 0 and values[20] == pytest.approx(0.9) and values[-1] == pytest.approx(0.9)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert st.gmp_schedule(10, 0.8, 20) == pytest.approx(0.8 * (1 - 0.5 ** 3))


def test_imp_rounds_prune_about_the_rate_and_hit_every_asked_sparsity():
    rounds = st.imp_rounds([0.9, 0.5, 0.8], 0.2)
    for s in (0.5, 0.8, 0.9):
        assert any(r == pytest.approx(s) for r in rounds)
    densities = [1.0] + [1 - r for r in rounds]
    rates = [1 - b / a for a, b in zip(densities, densities[1:])]
    assert all(0.13 < r < 0.27 for r in rates)  # about 20 % of the survivors, no sliver round
    assert rounds == sorted(rounds) and rounds[-1] == 0.9


def test_acdc_alternates_and_ends_with_a_long_sparse_phase():
    phases = [st.acdc_sparse_phase(t, 30, 5) for t in range(30)]
    assert phases == [True] * 5 + [False] * 5 + [True] * 5 + [False] * 5 + [True] * 10


def test_rigl_update_keeps_the_count_drops_by_magnitude_and_regrows_by_gradient():
    torch.manual_seed(0)
    w, g = torch.randn(50), torch.randn(50)
    mask = torch.zeros(50, dtype=torch.bool)
    mask[:20] = True
    new = st.rigl_drop_grow(w, g, mask, 0.3)
    assert int(new.sum()) == 20
    k = 6  # int(0.3 * 20) dropped among the active by magnitude, 6 regrown by gradient
    active = torch.nonzero(mask).flatten()
    expected = mask.clone()
    expected[active[w.abs()[active].argsort()[:k]]] = False
    inactive = torch.nonzero(~mask).flatten()
    expected[inactive[g.abs()[inactive].argsort(descending=True)[:k]]] = True
    assert torch.equal(new, expected)
    assert st.rigl_fraction(0, 0.3, 20) == pytest.approx(0.3) and st.rigl_fraction(20, 0.3, 20) == pytest.approx(0)


def test_kd_loss_is_zero_at_the_teacher_and_positive_elsewhere():
    t = torch.randn(5, 7)
    assert st.kd_loss(t, t, 2.0).item() == pytest.approx(0, abs=1e-6)
    assert st.kd_loss(torch.randn(5, 7), t, 2.0).item() > 0


# ----------------------------------------------------------------------------- distillation


@pytest.mark.parametrize("family", ["oneshot", "gmp", "acdc", "rigl", "imp"])
def test_kd_fine_tuning_keeps_masks_exact_and_reaches_the_sparsity(family):
    """Every family's models hit the asked sparsity and, fine-tuned further by distillation
    with their masks fixed, keep every pruned weight exactly zero."""
    images, teacher = proxy()
    made = st.make_sparse(family, tiny_net(), [0.5, 0.8], images, teacher, RECIPE, seed=0)
    assert sorted(made) == [0.5, 0.8]
    for s, model in made.items():
        if family == "rigl":  # regrown weights whose gradient was zero stay zero
            assert s - 1e-9 <= masks.conv_sparsity(model) < s + 0.02
        else:
            assert masks.conv_sparsity(model) == pytest.approx(s, abs=2e-3)
        fixed = masks.masks_of(model)
        before = copy.deepcopy(model.state_dict())
        st.distill(model, st.kd_batches(images, teacher, 5, 8, 1), RECIPE, st.MaskedTraining(model, fixed))
        moved = False
        for name, w in masks.conv_weights(model).items():
            assert (w[~fixed[name]] == 0).all()
            moved |= not torch.equal(w[fixed[name]], before[f"{name}.weight"][fixed[name]])
        assert moved, "distillation did not change the surviving weights"


def test_distillation_keeps_batchnorm_statistics_and_moves_towards_the_teacher():
    images, teacher = proxy()
    student = tiny_net(seed=3)
    stats = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    loss_before = st.kd_loss(student(images), teacher, 2.0).item()
    st.distill(student, st.kd_batches(images, teacher, 20, 8, 0), RECIPE, st.MaskedTraining(student, None))
    assert all(torch.equal(student.state_dict()[k], v) for k, v in stats.items())
    assert not student.training
    with torch.no_grad():
        assert st.kd_loss(student(images), teacher, 2.0).item() < loss_before


def test_a_sparse_model_does_not_depend_on_its_siblings_and_is_seeded():
    images, teacher = proxy()
    alone = st.make_sparse("gmp", tiny_net(), [0.8], images, teacher, RECIPE, seed=0)[0.8]
    both = st.make_sparse("gmp", tiny_net(), [0.5, 0.8], images, teacher, RECIPE, seed=0)[0.8]
    other = st.make_sparse("gmp", tiny_net(), [0.8], images, teacher, RECIPE, seed=1)[0.8]
    assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), both.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), other.state_dict().values()))


def test_imp_tickets_rewind_survivors_to_the_pretrained_weights():
    """With a vanishing learning rate a ticket is the pretrained model under its mask, and each
    ticket's mask lies inside the previous one (one trajectory)."""
    images, teacher = proxy()
    pretrained = tiny_net()
    still = st.KDRecipe(steps=3, batch_size=8, lr=1e-12, imp_round_steps=1)
    tickets = st.make_sparse("imp", pretrained, [0.5, 0.8], images, teacher, still, seed=0)
    previous = None
    for s in (0.5, 0.8):
        ticket = tickets[s]
        current = masks.masks_of(ticket)
        for name, w in masks.conv_weights(ticket).items():
            original = masks.conv_weights(pretrained)[name].detach()
            assert torch.allclose(w[current[name]], original[current[name]], atol=1e-6)
            if previous is not None:
                assert not (current[name] & ~previous[name]).any()
        assert torch.allclose(ticket[-1].weight, pretrained[-1].weight)  # every tensor rewinds
        previous = current


def test_rigl_changes_the_topology_at_a_constant_mask_size():
    images, teacher = proxy()
    student = tiny_net()
    start = masks.global_magnitude_masks(student, 0.7)
    recorded = []

    def regrow(step, net, current):
        new = {n: st.rigl_drop_grow(w, w.grad, current[n], 0.3) for n, w in masks.conv_weights(net).items()}
        recorded.append((sum(int(m.sum()) for m in current.values()), sum(int(m.sum()) for m in new.values()),
                         any(bool((new[n] != current[n]).any()) for n in new)))
        return new

    hooks = st.MaskedTraining(student, start, regrow=regrow)
    st.distill(student, st.kd_batches(images, teacher, 4, 8, 0), RECIPE, hooks)
    assert len(recorded) == 4 and all(a == b for a, b, _ in recorded)
    assert any(changed for *_, changed in recorded)
    for name, w in masks.conv_weights(student).items():
        assert (w[~hooks.masks[name]] == 0).all()
