"""Chapter 2 study: config checks, the units of a run, the tables and the claims (no training)."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from compstudy import claims, config
from compstudy.errors import ConfigError
from compstudy.studies import pruning_value as pv

NB = "02_pruning_value"


def _cfg(**changes):
    return pv.Config.from_overrides({"profile": "smoke"} | changes)


@pytest.mark.parametrize("changes, message", [
    ({"methods": ["l1_vgg", "thinet"]}, r"^unknown pruning method 'thinet'; valid choices: l1_vgg, l1_resnet"),
    ({"regimes": ["lottery"]}, r"^unknown training regime 'lottery'"),
    ({"seeds": [0, 0]}, r"'seeds' of notebook 02_pruning_value needs at least one value and no repeats"),
    ({"slim_ratio": 1.0}, r"^slim_ratio must lie in \[0, 1\), got 1.0$"),
    ({"unstructured_sparsity": -0.1}, r"^unstructured_sparsity must lie in \[0, 1\)"),
    ({"vgg_layer_ratios": [0.5] * 12}, r"^vgg_layer_ratios needs one ratio per VGG-16 conv layer \(13\), got 12"),
    ({"vgg_layer_ratios": [0.5] * 12 + [1.2]}, r"^vgg_layer_ratios\[12\] must lie in \[0, 1\)"),
    ({"resnet_stage_ratios": {"A": [0.1, 0.1]}}, r"^resnet_stage_ratios\[A\] needs one ratio per ResNet stage \(3\)"),
    ({"resnet_stage_ratios": {"C": [0.1, 0.1, 0.1]}}, r"^unknown resnet_stage_ratios key 'C'; valid choices: A, B"),
    ({"resnet_depth": 21}, r"6n\+2"),
    ({"dataset": "cifar11"}, r"^unknown dataset 'cifar11'"),
    ({"methods": ["l1_resnet"], "budget_epochs": [2]}, r"budget curve .* needs method l1_vgg"),
    ({"budget_seeds": [7], "budget_epochs": [2]}, r"budget_seeds must be a non-empty subset of seeds"),
    ({"warmup_epochs": 3.0, "epochs": 2}, r"warmup_epochs"),
    ({"dataset": "cifar100", "converged_check": True}, r"converged-model check uses CIFAR-10 checkpoints"),
    ({"measure_speed": True, "latency_forwards": 1}, r"'latency_forwards' .* must lie in \[2, inf\]"),
])
def test_impossible_requests_stop_in_the_config_with_one_line(changes, message):
    with pytest.raises(ConfigError, match=message) as error:
        _cfg(**changes)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_every_run_of_every_profile_validates(profile):
    for run in config.run_names(profile, NB):
        cfg = pv.Config.from_overrides(config.read_overrides(profile, NB, run) | {"profile": profile})
        assert pv.units(cfg)


def test_units_of_the_cpu_defaults():
    cfg = pv.Config.from_overrides({})
    units = pv.units(cfg)
    keys = {tuple(u[k] for k in pv.UNIT_KEY) for u in units}
    assert len(keys) == len(units)  # no unit twice
    n = len(cfg.seeds)
    main = [u for u in units if u["budget"] == cfg.epochs]
    count = lambda target, regime: sum(u["target"] == target and u["regime"] == regime for u in main)
    for large in ("vgg16", "resnet20", "vgg16_bnl1"):
        assert count(large, "unpruned") == n
    for target in ("vgg16_a", "resnet20_b", "vgg16_slimmed"):
        assert all(count(target, r) == n for r in ("finetune", "scratch_e", "scratch_b"))
    assert count("vgg16_slimmed", "uniform_e") == n
    assert count("vgg16_sparse", "scratch_b") == n and count("vgg16_sparse", "scratch_e") == 0
    extra = [u for u in units if u["budget"] != cfg.epochs]
    assert {u["budget"] for u in extra} == set(cfg.budget_epochs)
    assert len(extra) == 3 * len(cfg.budget_epochs) * len(cfg.budget_seeds)
    assert {(u["target"], u["regime"]) for u in extra} == {
        ("vgg16", "unpruned"), ("vgg16_a", "finetune"), ("vgg16_a", "scratch_b")}


def test_recipes_follow_the_paper():
    cfg = pv.Config.from_overrides({})
    ft = cfg.ft_settings(cfg.epochs)
    assert ft.schedule == "constant" and ft.lr == 0.001 and ft.epochs == cfg.epochs * 0.25
    large = cfg.large_settings(cfg.epochs)
    assert large.schedule == "cosine" and large.warmup_epochs == 1.0 and large.lr == 0.1


EPOCHS = 8  # the large model's epochs of the claim tests


def _runs(gap_sb_ft=(4.0, 3.0, 5.0, 4.5), gap_se_ft=(0.2, -0.3, 0.1, 0.0)):
    """A runs frame: FT at 50, Scratch-B / Scratch-E at 50 + gap, for each structured target."""
    rows = []
    for target in ("vgg16_a", "resnet20_b", "vgg16_slimmed", "vgg16_sparse"):
        for seed, (b, e) in enumerate(zip(gap_sb_ft, gap_se_ft)):
            rows += [{"target": target, "regime": "finetune", "seed": seed, "budget": EPOCHS, "accuracy": 50.0},
                     {"target": target, "regime": "scratch_b", "seed": seed, "budget": EPOCHS, "accuracy": 50.0 + b},
                     {"target": target, "regime": "scratch_e", "seed": seed, "budget": EPOCHS, "accuracy": 50.0 + e},
                     {"target": target, "regime": "uniform_e", "seed": seed, "budget": EPOCHS, "accuracy": 45.0 + e}]
    return pd.DataFrame(rows)


def test_claims_read_the_paired_differences():
    cfg = pv.Config.from_overrides({"seeds": [0, 1, 2, 3], "epochs": EPOCHS})
    found = {r.claim.id: r for r in pv.claim_results(_runs(), cfg)}
    assert set(found) == {"1.1", "1.2", "2.1", "2.2", "3.1", "3.2", "4", "5"}
    assert found["1.1"].verdict == "reproduced" and found["1.1"].effect == pytest.approx(4.125)
    assert found["2.2"].verdict == "reproduced" and found["2.2"].effect == pytest.approx(5.0)
    assert found["3.1"].verdict == "contradicted"  # +4 points: outside the ±2 margin
    assert found["4"].verdict == "reproduced" and found["4"].n == 12
    assert found["5"].verdict == "reproduced" and found["5"].n == 12  # within ±2 points
    assert found["3.2"].verdict == "not testable"


def test_seed_subsets_show_what_one_seed_does_to_the_verdicts():
    cfg = pv.Config.from_overrides({"seeds": [0, 1, 2, 3], "epochs": EPOCHS})
    subsets = pv.seed_subsets(_runs(gap_sb_ft=(4.0, 3.0, 5.0, -6.0)), cfg, 3)  # seed 3 an outlier
    assert subsets.seeds.tolist() == ["0, 1, 2", "0, 1, 3", "0, 2, 3", "1, 2, 3"]
    assert (subsets[list(claims.VERDICTS)].sum(axis=1) == 8).all()  # every claim, once per subset
    without_outlier, with_outlier = subsets.inconclusive[0], subsets.inconclusive[1:]
    assert (with_outlier > without_outlier).all()
    stability = pv.seed_stability(_runs(gap_sb_ft=(4.0, 3.0, 5.0, -6.0)), cfg)
    assert stability.index.tolist() == [3, 4] and stability.subsets.tolist() == [4, 1]
    assert stability.loc[3, "fewest"] == without_outlier
    assert stability.loc[3, "most"] == with_outlier.max()


def test_claims_leave_out_what_the_run_does_not_train():
    cfg = pv.Config.from_overrides({"regimes": ["finetune"], "budget_epochs": [],
                                    "methods": ["l1_vgg"]})
    assert pv.claim_results(_runs(), cfg) == []


def test_crossover_interpolates_in_log_budget():
    gaps = pd.DataFrame({"budget": [2, 4, 8, 16], "gap": [6.0, 4.0, 2.0, -2.0], "n": 1})
    assert pv.crossover(gaps) == pytest.approx(math.sqrt(8 * 16))
    assert math.isnan(pv.crossover(gaps.assign(gap=[6.0, 4.0, 2.0, 1.0])))
    assert pv.crossover(gaps.assign(gap=[-1.0, 4.0, 2.0, 1.0])) == 2


def test_crossover_text_never_prints_a_missing_budget():
    gaps = pd.DataFrame({"budget": [2, 4, 8, 16], "gap": [6.0, 4.0, 2.0, -2.0], "n": 1})
    assert pv.crossover_text(gaps) == (f"it reaches zero at about {math.sqrt(8 * 16):.1f} epochs "
                                       "(interpolated in log budget)")
    assert pv.crossover_text(gaps.assign(gap=[6.0, 4.0, 2.0, 1.0])) == \
        "it stays above zero at every budget run, up to 16 epochs"
    assert pv.crossover_text(gaps.iloc[:0]) == "no budget curve was run"


def test_precision_text_names_the_widest_spread_or_says_one_seed_measures_none():
    spread = pd.DataFrame({"mean": [90.0, 80.0], "sd": [0.5, 1.25]})
    diffs = pd.DataFrame({"comparison": ["Scratch-B − FT", "Scratch-E − FT", "Scratch-B − FT"],
                          "half_width": [1.5, 9.0, 2.25]})
    assert pv.precision_text(spread, diffs) == (
        "The seed standard deviation of the unpruned models is at most 1.25 points, and the widest "
        "95-percent interval of a Scratch-B − FT difference has a half-width of 2.25 points")
    one_seed = pv.precision_text(spread.assign(sd=np.nan), diffs.assign(half_width=np.nan))
    assert one_seed.startswith("With one seed, the run measures neither") and "nan" not in one_seed


def test_converged_table_compares_with_the_fine_tuned_control():
    rows = []
    for model, variant, before, after in (("resnet56", "", 83.0, 86.0), ("resnet56_a", "A", 82.5, 86.5),
                                          ("resnet56_b", "B", 70.0, 85.0)):
        for stage, acc in (("before_ft", before), ("after_ft", after)):
            rows.append({"model": model, "stage": stage, "variant": variant, "accuracy": acc,
                         "params": 853_018, "macs": 1e8, "mac_reduction": 1.0})
    table = pv.converged_table(pd.DataFrame(rows))
    assert table.loc["resnet56_b", "vs FT control (points)"] == pytest.approx(-1.0)
    assert table.loc["resnet56_a", "paper: vs unpruned (points)"] == "-0.17"
    assert table.loc["resnet56", "paper: FT (%)"] == "93.14 ± 0.12"
    assert list(table.architecture) == ["ResNet-56", "ResNet-56-A", "ResNet-56-B"]
    assert table.loc["resnet56", "params (k)"] == 853


def test_speedup_table_divides_by_the_mac_reduction():
    frame = pd.DataFrame([{"model": "L", "large": "L", "params": 10, "macs": 200, "latency_ms_b1": 0.7,
                           "speedup_b1": 1.0, "speedup_b1_low": 1.0, "speedup_b1_high": 1.0},
                          {"model": "P", "large": "L", "params": 5, "macs": 100, "latency_ms_b1": 0.56,
                           "speedup_b1": 1.25, "speedup_b1_low": 1.2, "speedup_b1_high": 1.3}])
    table = pv.speedup_table(frame, [1]).set_index("model")
    assert table.loc["P", "mac_reduction"] == 2
    assert table.loc["P", ["speedup_over_mac_b1_low", "speedup_over_mac_b1", "speedup_over_mac_b1_high"]
                     ].tolist() == pytest.approx([0.6, 0.625, 0.65])
    assert np.isclose(table.loc["L", "speedup_over_mac_b1"], 1)
    page = pv.speed_page_table(table.reset_index(), [1])
    assert list(page.index) == [("P", "L", "2.00", 1)]
    assert page.loc[("P", "L", "2.00", 1), "speed-up ÷ MAC reduction"] == "0.62 [0.60, 0.65]"
    assert page.loc[("P", "L", "2.00", 1), "latency, ms"] == "0.56 / 0.70"  # the model's, then its large model's


def test_time_speedups_pairs_each_model_with_its_own_large_model_round_by_round(clocked, monkeypatch):
    from compstudy import metrics
    monkeypatch.setattr(metrics, "count_macs", lambda model: 100)  # a forward would spend the fake durations
    # warm-up, then three rounds; a slow spell in round 2 doubles L1 and P1 alike
    models = {"L1": ("L1", clocked([9.0, 1.0, 2.0, 1.0])), "P1": ("L1", clocked([9.0, 0.5, 1.0, 0.6])),
              "L2": ("L2", clocked([9.0, 4.0, 4.0, 4.0])), "P2": ("L2", clocked([9.0, 1.0, 1.0, 1.0]))}
    table = pv.time_speedups(models, [1], forwards=3, input_size=(4,)).set_index("model")
    ratios = claims.t_interval([0.5, 0.5, 0.6])
    assert table.loc["P1", "speedup_b1"] == pytest.approx(1 / ratios.effect)
    assert table.loc["P1", "speedup_b1_low"] == pytest.approx(1 / ratios.ci_high)
    assert table.loc["P1", "speedup_b1_high"] == pytest.approx(1 / ratios.ci_low)
    # P2 is paired with L2, not with L1: exactly 4 in every round
    assert table.loc["P2", ["speedup_b1_low", "speedup_b1", "speedup_b1_high"]].tolist() == pytest.approx([4, 4, 4])
    assert table.loc["L1", "speedup_b1"] == table.loc["L2", "speedup_b1"] == 1.0
    with pytest.raises(ValueError, match="large model 'L3' is not among the models timed"):
        pv.time_speedups({"P3": ("L3", clocked([1.0] * 4))}, [1], forwards=3, input_size=(4,))


def test_fit_runs_fractional_epochs_and_the_constant_fine_tuning_rate():
    """FT trains epochs × ft_fraction (a fraction of a pass is allowed) at a constant rate."""
    import torch
    from compstudy import data, train
    from compstudy.models import cifar as cm

    ds = data.ImageSet("t", torch.randint(0, 255, (32, 3, 32, 32), dtype=torch.uint8),
                       torch.arange(32) % 10, tuple("abcdefghij"))
    loader = data.make_loader(ds, 8, shuffle=True)  # 4 batches per pass
    steps = []
    train.fit(cm.resnet(10, 20, 0.25), loader, train.FitSettings(epochs=1.5, lr=0.01, schedule="constant"),
              after_step=lambda: steps.append(1), progress=False)
    assert len(steps) == 6
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    constant = train.warmup_cosine(optimizer, 10, warmup_steps=2, anneal=False)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        constant.step()
    assert rates[:3] == [0.5, 1.0, 1.0] and rates[-1] == 1.0
    with pytest.raises(ConfigError, match="unknown schedule 'step'"):
        train.FitSettings(epochs=1, lr=0.1, schedule="step")


def test_the_pool_trains_large_models_first_and_matches_one_process():
    """Two one-thread workers train every model to the same weights as the in-process run
    (``workers=0``), and a pruned unit starts only after its large model has finished."""
    import shutil

    import torch
    from compstudy import paths
    from compstudy.models import cifar as cm

    cfg = _cfg(methods=["l1_vgg"], regimes=["finetune", "scratch_e"], seeds=[0, 1], budget_epochs=[],
               train_per_class=4, test_per_class=5, batch_size=16, workers=2, converged_check=False, measure_speed=False)
    root = paths.ARTIFACTS_DIR / pv.ARTIFACTS
    wanted = pv.units(cfg)

    def models() -> dict:
        return {p.relative_to(root): cm.load_model(p)[0].state_dict() for p in root.rglob("*.pt")}

    shutil.rmtree(root, ignore_errors=True)
    threads = torch.get_num_threads()
    in_process = dataclasses.replace(cfg, workers=0)
    alone = {(r["target"], r["regime"], r["seed"]): r
             for r in pv.unit_rows(in_process, pv._Study(in_process, progress=False), wanted, progress=False)}
    assert torch.get_num_threads() == threads  # the in-process run gives the threads back
    trained_alone = models()
    assert len(trained_alone) == 6
    shutil.rmtree(root)  # the pool must train every model again
    pooled = list(pv.unit_rows(cfg, pv._Study(cfg, progress=False), wanted, progress=False))
    trained_pooled = models()
    assert trained_pooled.keys() == trained_alone.keys()
    for name, state in trained_pooled.items():
        assert all(torch.equal(state[k], trained_alone[name][k]) for k in state), name
    assert len(pooled) == len(wanted) == 6
    order = [(r["target"], r["seed"]) for r in pooled]
    for seed in (0, 1):
        assert order.index(("vgg16", seed)) < min(i for i, key in enumerate(order) if key == ("vgg16_a", seed))
    for row in pooled:
        assert row["accuracy"] == alone[(row["target"], row["regime"], row["seed"])]["accuracy"]
    ordered = pv.in_unit_order(pd.DataFrame(pooled[::-1]), wanted)
    assert [tuple(r) for r in ordered[list(pv.UNIT_KEY)].itertuples(index=False)] == [
        tuple(u[k] for k in pv.UNIT_KEY) for u in wanted]
