"""Visual prompting: the pad prompt, greedy label mapping, RLM/FLM/ILM schedules, probes, ECE,
and the resumable sweep of notebook 01."""

import itertools

import pandas as pd
import pytest
import torch
from torch import nn

from compstudy import data, metrics, prompting
from compstudy.errors import ConfigError
from compstudy.results import RunStore


def toy_set(n_per_class=6, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_per_class * classes, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return data.ImageSet("toy", images, labels, tuple(map(str, range(classes))))


def train_one(model, train_set, mapping, epochs, lr=0.01, batch_size=32, canvas=48,
              mapping_interval=1, seed=0):
    """One prompt learned alone: a single job for :func:`prompting.train_prompts`."""
    job = prompting.PromptJob(train_set, mapping, seed, mapping_interval)
    return prompting.train_prompts(model, [job], epochs, lr, batch_size, canvas)[0]


def tiny_source_model(num_source=12):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, num_source))


# ----------------------------------------------------------------------------- prompt


def test_prompt_changes_only_the_border_and_normalises_after():
    prompt = prompting.PadPrompt(32, 48)
    with torch.no_grad():
        prompt.theta.normal_()
    x = torch.rand(2, 3, 32, 32)
    raw = prompt.unnormalized(x)
    rows, cols = prompt.window
    assert raw.shape == (2, 3, 48, 48)
    assert torch.equal(raw[:, :, rows, cols], x)  # the image window is untouched
    border = torch.ones(48, 48, dtype=torch.bool)
    border[rows, cols] = False
    expected = torch.sigmoid(prompt.theta)[:, border]
    assert torch.allclose(raw[:, :, border], expected.expand(2, -1, -1))
    mean, std = torch.tensor(data.MEAN).view(1, 3, 1, 1), torch.tensor(data.STD).view(1, 3, 1, 1)
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


def test_frequency_matrix_counts_predictions_per_target_class():
    preds, labels = torch.tensor([2, 2, 0, 1, 2]), torch.tensor([0, 0, 1, 1, 1])
    expected = torch.tensor([[0, 1], [0, 1], [2, 1]])
    assert torch.equal(prompting.frequency_matrix(preds, labels, 3, 2), expected)


def test_random_mapping_is_seeded_and_injective():
    a, b = prompting.random_mapping(100, 10, 3), prompting.random_mapping(100, 10, 3)
    assert torch.equal(a, b) and len(set(a.tolist())) == 10
    assert not torch.equal(a, prompting.random_mapping(100, 10, 4))


@pytest.mark.parametrize("mapping, interval, expected", [
    ("ilm", 1, [0, 1, 2, 3]), ("ilm", 2, [0, 2]), ("ilm", 3, [0, 3]),
    ("flm", 1, [0]), ("rlm", 1, []),
])
def test_mapping_is_recomputed_every_interval_for_ilm_only(mapping, interval, expected):
    result = train_one(tiny_source_model(), toy_set(), mapping, epochs=4, lr=0.1,
                                    batch_size=8, canvas=36, mapping_interval=interval)
    assert result.mapping_epochs == expected
    assert len(set(result.mapping.tolist())) == 4


def test_flm_mapping_is_the_greedy_map_of_the_initial_prompt():
    model, train_set = tiny_source_model(), toy_set()
    logits = prompting.source_logits(model, [prompting.PadPrompt(32, 36)], [train_set.images])[0]
    initial = prompting.mapping_from_logits(logits, train_set.labels, len(train_set.classes))
    result = train_one(model, train_set, "flm", epochs=2, lr=0.1, batch_size=8, canvas=36)
    assert torch.equal(result.mapping, initial)


def test_only_the_prompt_trains():
    model = tiny_source_model()
    before = [p.clone() for p in model.parameters()]
    result = train_one(model, toy_set(), "ilm", epochs=2, lr=0.1, batch_size=8, canvas=36)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert result.prompt.theta.abs().sum() > 0


def test_linear_probe_learns_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat(20)
    x = torch.randn(80, 8, generator=g) * 0.1 + nn.functional.one_hot(y, 8).float()
    head = prompting.linear_probe(x, y, 4, epochs=30, lr=0.05)
    assert (head(x).argmax(1) == y).float().mean() == 1.0
    assert prompting.probe_parameters(512, 10) == 5130


def test_transfer_returns_probabilities_for_each_method():
    model, train_set, test_set = tiny_source_model(), toy_set(), toy_set(seed=1)
    settings = prompting.TransferSettings(vp_epochs=1, canvas=36, lp_epochs=2)
    feats = (torch.randn(len(train_set), 16), torch.randn(len(test_set), 16))  # no timm head here
    for method in prompting.METHODS:
        out = prompting.transfer(model, method, train_set, test_set, settings, seed=0,
                                 features=feats if method == "lp" else None)
        assert out["probs"].shape == (len(test_set), 4)
        assert torch.allclose(out["probs"].sum(1), torch.ones(len(test_set)))
        summary = prompting.summarize(out["probs"], out["labels"])
        assert 0 <= summary["ece"] <= 1 and 0 <= summary["accuracy"] <= 1


# ----------------------------------------------------------------------------- metrics


def test_ece_matches_a_hand_computed_value():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right) -> bins (0.867, 0.933], (0.6-)
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 0, 1])
    # bin of 0.9: acc 0.5, conf 0.9, weight 1/2; bin of 0.6: acc 1, conf 0.6, weight 1/2
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert metrics.expected_calibration_error(probs, labels, 15) == pytest.approx(expected)
    summary = prompting.summarize(probs, labels)
    assert summary["ece"] == pytest.approx(expected)
    assert summary["true_conf_wrong"] == pytest.approx(0.1)


def test_ece_is_zero_when_perfectly_calibrated():
    # confidence 0.75 in one bin and 3 of 4 right
    probs = torch.tensor([[0.75, 0.25]] * 4)
    labels = torch.tensor([0, 0, 0, 1])
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.0)


# ----------------------------------------------------------------------------- validation, resumption


def test_user_errors_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="unknown transfer method 'fft'"):
        prompting.validate_transfer(["ilm", "fft"], [5], 40)
    with pytest.raises(ConfigError, match="unknown label mapping 'hungarian'"):
        train_one(tiny_source_model(), toy_set(), "hungarian", epochs=1)
    with pytest.raises(ConfigError, match="n_shot"):
        prompting.validate_transfer(["lp"], [0], 40)
    with pytest.raises(ConfigError, match="exceeds the 6 images"):
        prompting.check_shots(toy_set(), [5, 7])
    with pytest.raises(ConfigError, match="canvas"):
        prompting.validate_transfer(["ilm"], [5], 32)
    with pytest.raises(ConfigError, match="unknown VP precision 'float16'"):
        prompting.validate_transfer(["ilm"], [5], 40, 1, "float16")


def test_bfloat16_passes_keep_a_float32_prompt_on_the_border_only():
    model, train_set = tiny_source_model(), toy_set()
    [result] = prompting.train_prompts(model, [prompting.PromptJob(train_set, "ilm")], epochs=2, lr=0.1,
                                       batch_size=8, canvas=36, precision="bfloat16")
    theta = result.prompt.theta
    assert theta.dtype == torch.float32 and theta.abs().sum() > 0
    rows, cols = result.prompt.window
    assert torch.equal(result.prompt.border()[:, rows, cols], torch.zeros(3, 32, 32))
    logits = prompting.source_logits(model, [result.prompt], [train_set.images], precision="bfloat16")[0]
    assert logits.dtype == torch.float32 and logits.shape == (len(train_set), 12)


def test_prompts_trained_together_follow_their_solo_trajectories():
    """Shared passes are only a speed-up: each prompt ends where training it alone ends."""
    model, full = tiny_source_model(), toy_set(n_per_class=8)
    jobs = [prompting.PromptJob(full.subset(data.few_shot_indices(full.labels, 5, seed)), mapping, seed, interval)
            for mapping, seed, interval in [("ilm", 0, 1), ("flm", 1, 1), ("rlm", 2, 1), ("ilm", 3, 2)]]
    together = prompting.train_prompts(model, jobs, epochs=3, lr=0.1, batch_size=8, canvas=36)
    for job, joint in zip(jobs, together):
        alone = train_one(model, job.train_set, job.mapping, epochs=3, lr=0.1, batch_size=8,
                                       canvas=36, mapping_interval=job.mapping_interval, seed=job.seed)
        assert torch.allclose(joint.prompt.theta, alone.prompt.theta, atol=1e-5)
        assert torch.equal(joint.mapping, alone.mapping) and joint.mapping_epochs == alone.mapping_epochs
    assert not torch.allclose(together[0].prompt.theta, together[1].prompt.theta)
    with pytest.raises(ValueError, match="one training-set size"):
        prompting.train_prompts(model, [jobs[0], prompting.PromptJob(full, "ilm")], epochs=1)


def test_an_interrupted_sweep_resumes_without_losing_or_duplicating_rows(tmp_path):
    """Rows lost mid-group are recomputed to exactly the numbers of an uninterrupted sweep."""
    model = tiny_source_model()
    targets = {"near": (toy_set(n_per_class=6), toy_set(n_per_class=3, seed=1))}
    units = prompting.sweep_units(["dense"], ["near"], ["ilm", "flm"], [2, -1], [0, 1], canvases=[36])
    settings = prompting.TransferSettings(vp_epochs=2, vp_lr=0.1, vp_batch_size=4, canvas=36)
    key = prompting.SWEEP_KEY

    def sweep(folder, keep_rows=None):
        store = RunStore(folder, key=key)
        prompting.run_sweep(store, units, {"dense": model}, targets, settings, folder, progress=False)
        if keep_rows is not None:  # simulate a crash: only the first rows reached runs.csv
            store.frame.head(keep_rows).to_csv(folder / "runs.csv", index=False)
            store = RunStore(folder, key=key)
            prompting.run_sweep(store, units, {"dense": model}, targets, settings, folder, progress=False)
        return RunStore(folder, key=key).frame.sort_values(list(key)).reset_index(drop=True)

    whole = sweep(tmp_path / "whole")
    resumed = sweep(tmp_path / "resumed", keep_rows=5)  # groups hold 4 prompts: 5 cuts one
    assert len(whole) == len(units) == 8 and not resumed.duplicated(list(key)).any()
    pd.testing.assert_frame_equal(whole.drop(columns="seconds"), resumed.drop(columns="seconds"))
