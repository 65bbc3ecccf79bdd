"""Visual prompting: the pad prompt, greedy label mapping, RLM/FLM/ILM schedules, shared passes,
linear probes (compstudy.methods.prompting)."""

import itertools

import pytest
import torch
from torch import nn

from compstudy import metrics
from compstudy.errors import ConfigError
from compstudy.methods import prompting


def toy_pool(n_per_class=6, classes=4, seed=0, side=32):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n_per_class * classes, 3, side, side, generator=g)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return images, labels


def tiny_source_model(num_source=12):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, num_source))


def settings(**kw):
    return prompting.PromptSettings(**{"epochs": 2, "lr": 0.1, "batch_size": 8, "canvas": 36} | kw)


def train_one(model, images, labels, mapping, seed=0, interval=1, **kw):
    """One prompt learned alone: a single job for train_prompts."""
    job = prompting.PromptJob(torch.arange(len(labels)), mapping, seed, interval)
    return prompting.train_prompts(model, images, labels, int(labels.max()) + 1, [job], settings(**kw))[0]


# ----------------------------------------------------------------------------- prompt


def test_prompt_changes_only_the_border_and_normalises_after():
    prompt = prompting.PadPrompt(32, 48, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    with torch.no_grad():
        prompt.theta.normal_()
    x = torch.rand(2, 3, 32, 32)
    raw = prompt.unnormalized(x)
    rows, cols = prompt.window
    assert raw.shape == (2, 3, 48, 48)
    assert torch.equal(raw[:, :, rows, cols], x)  # the image window is untouched
    border = torch.ones(48, 48, dtype=torch.bool)
    border[rows, cols] = False
    assert torch.allclose(raw[:, :, border], torch.sigmoid(prompt.theta)[:, border].expand(2, -1, -1))
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)
    assert torch.allclose(prompt(x), (raw - mean) / std)
    assert prompt.free_parameters() == 3 * (48 ** 2 - 32 ** 2)


def test_prompt_starts_at_grey_and_its_gradient_lives_on_the_border():
    prompt = prompting.PadPrompt(32, 40)
    assert torch.allclose(prompt.border()[:, 0, 0], torch.full((3,), 0.5))
    prompt(torch.rand(1, 3, 32, 32)).sum().backward()
    rows, cols = prompt.window
    assert (prompt.theta.grad[:, rows, cols] == 0).all()
    assert (prompt.theta.grad[:, 0, :] != 0).all()


def test_odd_padding_puts_the_extra_pixel_top_left():
    prompt = prompting.PadPrompt(32, 37)
    assert (prompt.pad_lo, prompt.pad_hi) == (3, 2)
    with pytest.raises(ConfigError, match="canvas"):
        prompting.PadPrompt(32, 32)


def test_resize_makes_rgb_in_unit_range_at_the_asked_side():
    grey = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    out = prompting.resize(grey, 40)
    assert out.shape == (3, 3, 40, 40) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(out[:, 0], out[:, 2])  # grey repeated over the channels
    assert torch.equal(prompting.resize(grey, 8)[:, 0], grey[:, 0].float() / 255)


# ----------------------------------------------------------------------------- mapping


def brute_force_greedy(freq):
    """Reference: scan every (a, j) pair each round, first maximum in row-major order."""
    k_s, k_t = freq.shape
    used_a, used_j, mapping = set(), set(), {}
    for _ in range(k_t):
        best = None
        for a, j in itertools.product(range(k_s), range(k_t)):
            if a in used_a or j in used_j:
                continue
            if best is None or freq[a, j] > freq[best]:
                best = (a, j)
        mapping[best[1]] = best[0]
        used_a.add(best[0])
        used_j.add(best[1])
    return torch.tensor([mapping[j] for j in range(k_t)])


@pytest.mark.parametrize("seed", range(20))
def test_greedy_assignment_is_one_to_one_and_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    k_s, k_t = int(torch.randint(3, 9, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g))
    freq = torch.randint(0, 4, (k_s, k_t), generator=g)  # small counts: many ties
    mapping = prompting.greedy_assignment(freq)
    assert len(set(mapping.tolist())) == k_t
    assert torch.equal(mapping, brute_force_greedy(freq))


def test_greedy_is_not_hungarian():
    freq = torch.tensor([[10, 9], [8, 0]])  # greedy takes 10 then 0; the optimum is 9 + 8
    assert prompting.greedy_assignment(freq).tolist() == [0, 1]
    with pytest.raises(ConfigError, match="at most 2 target classes"):
        prompting.greedy_assignment(torch.zeros(2, 3))


def test_frequency_matrix_counts_predictions_per_target_class():
    preds, labels = torch.tensor([2, 2, 0, 1, 2]), torch.tensor([0, 0, 1, 1, 1])
    expected = torch.tensor([[0, 1], [0, 1], [2, 1]])
    assert torch.equal(prompting.frequency_matrix(preds, labels, 3, 2), expected)


def test_random_mapping_is_seeded_and_injective():
    a, b = prompting.random_mapping(100, 10, 3), prompting.random_mapping(100, 10, 3)
    assert torch.equal(a, b) and len(set(a.tolist())) == 10
    assert not torch.equal(a, prompting.random_mapping(100, 10, 4))


@pytest.mark.parametrize("mapping, interval, expected", [
    ("ilm", 1, [0, 1, 2, 3]), ("ilm", 2, [0, 2]), ("ilm", 3, [0, 3]), ("flm", 1, [0]), ("rlm", 1, []),
])
def test_mapping_is_recomputed_every_interval_for_ilm_only(mapping, interval, expected):
    images, labels = toy_pool()
    result = train_one(tiny_source_model(), images, labels, mapping, interval=interval, epochs=4)
    assert result.mapping_epochs == expected
    assert len(set(result.mapping.tolist())) == 4


def test_flm_mapping_is_the_greedy_map_of_the_initial_prompt():
    model, (images, labels) = tiny_source_model(), toy_pool()
    logits = prompting.prompted_logits(model, prompting.PadPrompt(32, 36), images)
    initial = prompting.mapping_from_logits(logits, labels, 4)
    assert torch.equal(train_one(model, images, labels, "flm").mapping, initial)


def test_only_the_prompt_trains():
    model, (images, labels) = tiny_source_model(), toy_pool()
    before = [p.clone() for p in model.parameters()]
    result = train_one(model, images, labels, "ilm")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert result.prompt.theta.abs().sum() > 0
    assert result.losses and all(torch.isfinite(torch.tensor(result.losses)))


def test_prompts_trained_together_follow_their_solo_trajectories():
    """Shared passes are only a speed-up: each prompt ends where training it alone ends."""
    model, (images, labels) = tiny_source_model(), toy_pool(n_per_class=8)
    picks = [torch.randperm(32, generator=torch.Generator().manual_seed(s))[:20] for s in range(4)]
    jobs = [prompting.PromptJob(idx, mapping, seed, interval) for idx, (mapping, seed, interval) in
            zip(picks, [("ilm", 0, 1), ("flm", 1, 1), ("rlm", 2, 1), ("ilm", 3, 2)])]
    jobs.append(prompting.PromptJob(picks[0], "flm", 5))  # same images as job 0: shares the theta=0 pass
    together = prompting.train_prompts(model, images, labels, 4, jobs, settings(epochs=3))
    for job, joint in zip(jobs, together):
        alone = prompting.train_prompts(model, images, labels, 4, [job], settings(epochs=3))[0]
        assert torch.allclose(joint.prompt.theta, alone.prompt.theta, atol=1e-5)
        assert torch.equal(joint.mapping, alone.mapping) and joint.mapping_epochs == alone.mapping_epochs
    assert not torch.allclose(together[0].prompt.theta, together[1].prompt.theta)
    with pytest.raises(ValueError, match="one training-set size"):
        prompting.train_prompts(model, images, labels, 4, [jobs[0], prompting.PromptJob(torch.arange(8), "ilm")],
                                settings())


def test_target_probabilities_select_the_mapped_logits():
    model, (images, labels) = tiny_source_model(), toy_pool()
    result = train_one(model, images, labels, "ilm")
    probs = prompting.target_probabilities(model, [result], images)[0]
    logits = prompting.prompted_logits(model, result.prompt, images)
    assert torch.allclose(probs, logits[:, result.mapping].softmax(1))
    assert probs.shape == (len(images), 4)


# ----------------------------------------------------------------------------- probe, errors


def test_linear_probe_learns_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat(20)
    x = torch.randn(80, 8, generator=g) * 0.1 + nn.functional.one_hot(y, 8).float()
    head = prompting.linear_probe(x, y, 4, epochs=30, lr=0.05)
    assert (head(x).argmax(1) == y).float().mean() == 1.0
    assert prompting.probe_parameters(1280, 10) == 12810


def test_ece_matches_a_hand_computed_value():
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 0, 1])
    # bin of 0.9: accuracy 0.5, confidence 0.9, weight 1/2; bin of 0.6: accuracy 1, confidence 0.6
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert metrics.expected_calibration_error(probs, labels, 15) == pytest.approx(expected)


def test_user_errors_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="unknown label mapping 'hungarian'"):
        prompting.PromptJob(torch.arange(4), "hungarian")
    with pytest.raises(ConfigError, match="mapping_interval"):
        prompting.PromptJob(torch.arange(4), "ilm", mapping_interval=0)
