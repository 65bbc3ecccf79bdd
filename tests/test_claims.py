"""The claims engine on hand-made data: verdicts, MDE, coverage, claims.csv, glue."""

import html
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from compstudy import claims as C

UP = C.Claim("1.2", "The gap grows as N falls.", "Fig. 3: 4.1 points at N=10", "fig-gap")
DOWN = C.Claim("2.1", "Pruning lowers accuracy.", "Table 2: -0.8", "tab-acc", direction=-1)
SAME = C.Claim("2.4", "Scratch-B matches fine-tuning.", "Table 4: +-0.3", "tab-scratch")
Z975, Z80 = stats.norm.ppf(0.975), stats.norm.ppf(0.80)


def normal(mean, sd, n, seed=0):
    return np.random.default_rng(seed).normal(mean, sd, n)


def test_clear_effect_is_reproduced_on_the_papers_side():
    up = C.directional(UP, normal(2.0, 1.0, 40))
    assert up.verdict == C.REPRODUCED and up.ci_low > 0 and up.n == 40
    assert up.method.startswith("paired bootstrap") and up.mde is None
    down = C.directional(DOWN, normal(-2.0, 1.0, 6))
    assert down.verdict == C.REPRODUCED and down.ci_high < 0 and down.method == "t-interval"


def test_clear_opposite_effect_is_contradicted():
    assert C.directional(UP, normal(-2.0, 1.0, 5)).verdict == C.CONTRADICTED
    assert C.directional(DOWN, normal(2.0, 1.0, 40)).verdict == C.CONTRADICTED


def test_ci_that_excludes_the_papers_effect_contradicts_the_claim():
    # Read literally, the rule contradicts a claim whose CI misses the paper's effect size,
    # even when the CI lies on the paper's side of zero.
    sized = C.Claim("1.3", "The gap is about 5 points.", "Table 1: 5.0", "fig-gap", paper_effect=5.0)
    assert C.judge(sized, C.Interval(1.0, 0.5, 1.5, 9, "given")).verdict == C.CONTRADICTED
    assert C.judge(sized, C.Interval(4.0, 2.5, 5.5, 9, "given")).verdict == C.REPRODUCED
    with pytest.raises(ValueError, match="not on the side"):
        C.Claim("1.4", "s", "p", "e", direction=-1, paper_effect=5.0)


def test_zero_effect_with_wide_ci_is_inconclusive_with_the_t_mde():
    d = np.array([-3.0, -1.0, 0.0, 1.0, 3.0])
    result = C.directional(UP, d)
    assert result.verdict == C.INCONCLUSIVE and result.method == "t-interval"
    se = d.std(ddof=1) / math.sqrt(5)
    assert result.ci_low < 0 < result.ci_high
    assert result.mde == pytest.approx((stats.t.ppf(0.975, 4) + stats.t.ppf(0.80, 4)) * se)


def test_mde_of_a_bootstrap_or_given_interval_uses_normal_quantiles():
    result = C.judge(UP, C.Interval(0.1, -1.0, 1.2, 12, "interpolated curves"))
    se = (1.2 - (-1.0)) / 2 / Z975
    assert result.verdict == C.INCONCLUSIVE
    assert result.mde == pytest.approx((Z975 + Z80) * se) == pytest.approx(2.8016 * se, rel=1e-4)
    boot = C.directional(UP, normal(0.0, 5.0, 30))
    assert boot.verdict == C.INCONCLUSIVE
    assert boot.mde == pytest.approx((Z975 + Z80) * (boot.ci_high - boot.ci_low) / 2 / Z975)


def test_equivalence_is_reproduced_only_inside_the_margin():
    def verdict(low, high):
        return C.judge(SAME, C.Interval((low + high) / 2, low, high, 9, "given"), margin=1.0).verdict

    assert verdict(-0.6, 0.8) == C.REPRODUCED
    assert verdict(0.2, 0.9) == C.REPRODUCED  # excludes zero, yet inside the margin
    assert verdict(-0.5, 1.4) == C.INCONCLUSIVE
    assert verdict(-3.0, 3.0) == C.INCONCLUSIVE
    assert verdict(1.2, 2.5) == C.CONTRADICTED
    assert verdict(-2.5, -1.1) == C.CONTRADICTED
    tight = C.equivalence(SAME, normal(0.1, 0.3, 40), margin=0.5)
    assert tight.verdict == C.REPRODUCED and tight.margin == 0.5 and tight.kind == "equivalence"
    noisy = C.equivalence(SAME, normal(0.0, 3.0, 5), margin=0.5)
    assert noisy.verdict == C.INCONCLUSIVE and noisy.mde > 0.5
    with pytest.raises(ValueError, match="margin"):
        C.equivalence(SAME, normal(0.0, 1.0, 5), margin=0.0)


def test_non_inferiority_accepts_any_gain_and_at_most_the_margin_of_loss():
    loses_little = C.Claim("2", "Truncation loses little accuracy.", "Table 1", "tab-acc")
    no_penalty = C.Claim("5", "Quantization adds no ECE.", "abstract", "fig-ece", direction=-1)

    def verdict(claim, low, high):
        interval = C.Interval((low + high) / 2, low, high, 6, "given")
        return C._result(claim, "non-inferiority", interval, 2.0).verdict

    assert verdict(loses_little, -1.5, 0.5) == C.REPRODUCED
    assert verdict(loses_little, 3.0, 8.0) == C.REPRODUCED  # a gain: equivalence would contradict
    assert verdict(loses_little, -3.4, 1.3) == C.INCONCLUSIVE
    assert verdict(loses_little, -6.0, -2.5) == C.CONTRADICTED
    assert verdict(no_penalty, -2.9, -0.6) == C.REPRODUCED  # lower ECE is no penalty
    assert verdict(no_penalty, -0.5, 2.4) == C.INCONCLUSIVE
    assert verdict(no_penalty, 2.1, 4.0) == C.CONTRADICTED
    tested = C.non_inferiority(no_penalty, normal(-1.7, 1.0, 27), margin=2.0)
    assert tested.verdict == C.REPRODUCED and tested.kind == "non-inferiority"
    assert tested.margin == 2.0 and tested.mde is None  # the signed bound: above it is a penalty
    noisy = C.non_inferiority(loses_little, [-5.0, -2.0, 0.0, 1.0, 2.0, -2.0], margin=2.0)
    assert noisy.verdict == C.INCONCLUSIVE and noisy.margin == -2.0 and noisy.mde > 0
    table = C.claims_table(pd.DataFrame([tested.row(), noisy.row()]))
    assert list(table.note.str.split(";").str[0]) == ["non-inferiority bound +2.0",
                                                      "non-inferiority bound -2.0"]
    with pytest.raises(ValueError, match="non-inferiority margin"):
        C.non_inferiority(loses_little, normal(0.0, 1.0, 5), margin=-1.0)


def coverage(interval, sample, truth, draws=300):
    rng = np.random.default_rng(12345)
    hits = 0
    for i in range(draws):
        iv = interval(sample(rng), i)
        hits += iv.ci_low <= truth <= iv.ci_high
    return hits / draws


# 300 draws: a binomial sd of 1.3 points around 95 %, so [0.90, 0.99] is about -4 and +3 sd.
def test_bootstrap_covers_about_95_percent_at_moderate_n():
    cov = coverage(lambda d, i: C.paired_bootstrap(d, n_boot=1000, seed=i),
                   lambda rng: rng.normal(1.5, 2.0, 30), 1.5)
    assert 0.90 <= cov <= 0.99


def test_t_interval_covers_about_95_percent_at_n_5():
    cov = coverage(lambda d, i: C.t_interval(d), lambda rng: rng.normal(1.5, 2.0, 5), 1.5)
    assert 0.90 <= cov <= 0.99


def test_cluster_bootstrap_covers_nested_units_where_a_naive_one_does_not():
    targets = np.repeat(np.arange(20), 3)  # 20 targets x 3 seeds, strong target effect

    def sample(rng):
        return 1.0 + rng.normal(0, 1, 20)[targets] + rng.normal(0, 0.5, targets.size)

    clustered = coverage(lambda d, i: C.paired_bootstrap(d, 1000, i, cluster=targets), sample, 1.0)
    naive = coverage(lambda d, i: C.paired_bootstrap(d, 1000, i), sample, 1.0)
    assert 0.90 <= clustered <= 0.99 and naive < 0.88


def test_spearman_intervals_cover_about_95_percent():
    r = 0.5
    truth = 6 / math.pi * math.asin(r / 2)  # Spearman's rho of a bivariate normal

    def pairs(n):
        def sample(rng):
            x = rng.normal(size=n)
            return x, r * x + math.sqrt(1 - r * r) * rng.normal(size=n)
        return sample

    fisher = coverage(lambda xy, i: C.spearman_ci(*xy), pairs(10), truth)
    boot = coverage(lambda xy, i: C.spearman_ci(*xy, n_boot=1000, seed=i), pairs(30), truth)
    assert 0.90 <= fisher <= 0.99 and 0.90 <= boot <= 0.99


def test_correlation_verdicts_follow_the_sign_of_rho():
    x = np.arange(30.0)
    noise = normal(0.0, 3.0, 30)
    ranks = C.Claim("4.3", "Synthetic ranking tracks real ranking.", "rho > 0", "fig-rank")
    assert C.correlation(ranks, x, x + noise).verdict == C.REPRODUCED
    assert C.correlation(ranks, x, -x + noise).verdict == C.CONTRADICTED
    flat = C.correlation(ranks, x[:8], normal(0.0, 1.0, 8))
    assert flat.verdict == C.INCONCLUSIVE and flat.method.startswith("Spearman, Fisher")
    assert 0 < flat.mde < 1
    assert flat.effect == pytest.approx(stats.spearmanr(x[:8], normal(0.0, 1.0, 8)).statistic)
    tied = np.arange(12) % 5
    assert C.spearman_ci(x[:12], tied).effect == pytest.approx(stats.spearmanr(x[:12], tied).statistic)
    perfect = C.spearman_ci(x[:6], x[:6])
    assert perfect.effect == 1.0 and perfect.ci_high == 1.0 and perfect.ci_low < 0.9


def _blocks(noise_sd, sign=1.0, seed=0):
    """Twelve (block, score) pairs: a score that follows the block index, with noise."""
    x = np.arange(12.0)
    return x, sign * x + normal(0.0, noise_sd, 12, seed) if noise_sd else sign * x


def test_pooled_correlations_stay_inside_minus_one_to_one_and_are_judged_on_fishers_z():
    raw = C.Claim("5.raw", "Raw and t-SNE silhouettes rank blocks alike.", "rho > 0", "tab-tsne")
    samples = [_blocks(sd, seed=i) for i, sd in enumerate([0.7, 0.8, 1.0, 6.0, 0.9, 0.7, 1.5])]
    rhos = [stats.spearmanr(x, y).statistic for x, y in samples]
    assert C.t_interval(rhos).ci_high > 1  # a t-interval on these rhos passes 1
    pooled = C.pooled_correlation(raw, samples)
    z = np.arctanh(rhos)
    half = stats.t.ppf(0.975, len(z) - 1) * z.std(ddof=1) / math.sqrt(len(z))
    assert pooled.verdict == C.REPRODUCED and pooled.n == 7
    assert (pooled.effect, pooled.ci_low, pooled.ci_high) == pytest.approx(
        (math.tanh(z.mean()), math.tanh(z.mean() - half), math.tanh(z.mean() + half)))
    assert -1 < pooled.ci_low < pooled.effect < pooled.ci_high < 1
    assert pooled.method == "t-interval on Fisher z, back to rho"
    perfect = C.pooled_correlation(raw, [_blocks(0), _blocks(0), _blocks(3.0)])  # +-1 is one swap away
    assert math.isfinite(perfect.ci_high) and perfect.ci_high < 1
    mixed = C.pooled_correlation(raw, [_blocks(6.0, s, seed=i) for i, s in enumerate([1, -1, 1, -1])])
    assert mixed.verdict == C.INCONCLUSIVE and 0 < mixed.mde < 1
    assert C.pooled_correlation(raw, [_blocks(2.0, -1, seed=i) for i in range(3)]).verdict == C.CONTRADICTED
    assert C.pooled_correlation(raw, [_blocks(1.0)]).verdict == C.NOT_TESTABLE


def test_difference_of_two_proportions_matches_newcombes_worked_example():
    # Newcombe (Stat. Med. 1998), Table II, example (a): 56/70 - 48/80, method 10
    interval = C.proportion_difference_ci(56 / 70, 70, 48 / 80, 80)
    assert interval.effect == pytest.approx(0.2)
    assert (interval.ci_low, interval.ci_high) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    assert C.wilson_interval(0.0, 10)[0] == pytest.approx(0.0, abs=1e-12)  # stays inside [0, 1]
    with pytest.raises(ValueError, match="at least one trial"):
        C.proportion_difference_ci(0.5, 0, 0.5, 10)


def test_same_seed_same_interval():
    d = normal(0.5, 1.0, 25)
    assert C.paired_bootstrap(d, seed=3) == C.paired_bootstrap(d, seed=3)
    assert C.paired_bootstrap(d, seed=3) != C.paired_bootstrap(d, seed=4)
    x, y = normal(0, 1, 25, seed=1), normal(0, 1, 25, seed=2)
    assert C.spearman_ci(x, y, seed=7) == C.spearman_ci(x, y, seed=7)


def test_auto_method_counts_clusters_and_few_units_are_not_testable():
    d = normal(1.0, 1.0, 12)
    targets = np.repeat(["a", "b", "c", "d"], 3)
    assert C.mean_interval(d).method.startswith("paired bootstrap")
    by_target = C.mean_interval(d, cluster=targets)
    means = pd.Series(d).groupby(targets).mean()
    assert by_target.method == "t-interval on cluster means" and by_target.n == 4
    assert by_target.effect == pytest.approx(means.mean())
    single = C.directional(UP, [0.4])
    assert single.verdict == C.NOT_TESTABLE and single.n == 1 and "at least 2" in single.reason
    with pytest.raises(ValueError, match="NaN"):
        C.directional(UP, [0.4, np.nan, 1.0])


def test_claims_csv_has_the_required_columns_and_empty_margins(tmp_path):
    tenth = C.Claim("1.10", "Quantization leaves ECE alone.", "v3: no ECE rise", "tab-ece")
    results = [C.directional(UP, normal(2.0, 1.0, 12)),
               C.equivalence(SAME, normal(0.0, 0.2, 12), margin=0.5),
               C.not_testable(tenth, "no quantized models in the cpu profile")]
    path = C.write_claims(tmp_path, results)
    assert path == tmp_path / "claims.csv"
    header = path.read_text().splitlines()[0].split(",")
    assert header[:10] == ["claim", "statement", "paper", "effect", "ci_low", "ci_high", "margin",
                           "n", "verdict", "evidence"]
    frame = C.read_claims(tmp_path)
    assert list(frame.claim) == ["1.2", "2.4", "1.10"]
    assert frame.margin.isna().tolist() == [True, False, True] and frame.margin[1] == 0.5
    assert frame.n.tolist()[:2] == [12, 12] and pd.isna(frame.n[2])
    assert frame.verdict[2] == C.NOT_TESTABLE and pd.isna(frame.effect[2])
    assert frame.reason[2].startswith("no quantized")
    with pytest.raises(ValueError, match="repeated"):
        C.write_claims(tmp_path, results[:1] * 2)


def test_interval_text_signs_the_estimate_only():
    assert C.interval_text(1.234, 0.4, 2.049) == "1.23 [0.40, 2.05]"
    assert C.interval_text(-0.1, -0.94, 0.7, 1, "+") == "-0.1 [-0.9, 0.7]"
    assert C.interval_text(0.5, 0.25, 0.75, 3, "+") == "+0.500 [0.250, 0.750]"


def test_claims_table_and_glue_give_plain_values(tmp_path, monkeypatch):
    results = [C.judge(UP, C.Interval(1.2, 0.4, 2.0, 9, "t-interval", 8.0)),
               C.judge(DOWN, C.Interval(-0.1, -0.9, 0.7, 9, "t-interval", 8.0)),
               C.not_testable(SAME, "one seed")]
    frame = C.read_claims(C.write_claims(tmp_path, results))
    table = C.claims_table(frame)
    assert table.loc["1.2", "effect [95 % CI]"] == "+1.2 [0.4, 2.0]"
    assert table.loc["2.1", "note"] == f"MDE {C.mde(-0.9, 0.7, 8.0):.1f}"
    assert table.loc["2.4", "effect [95 % CI]"] == "—" and table.loc["2.4", "note"] == "one seed"

    import myst_nb

    glued = {}
    monkeypatch.setattr(myst_nb, "glue",
                        lambda name, value, display=True: glued.update({name: (value, display)}))
    assert C.glue_claims(frame, prefix="ch1_", units={"1.2": "points"}) is None  # a cell ending with it shows nothing
    fields = ("effect", "ci_low", "ci_high", "mde", "n", "verdict", "clause")
    assert set(glued) == {f"ch1_claim_{c}_{f}" for c in frame.claim for f in fields}
    assert glued["ch1_claim_1.2_clause"][0] == "+1.2 points (+0.4 to +2.0; reproduced)"
    assert glued["ch1_claim_2.1_clause"][0] == f"-0.1 (-0.9 to +0.7; inconclusive, MDE {C.mde(-0.9, 0.7, 8.0):.1f})"
    assert glued["ch1_claim_2.4_clause"][0] == "not testable (one seed)"
    assert not any(display for _, display in glued.values())
    assert glued["ch1_claim_1.2_effect"][0] == 1.2 and type(glued["ch1_claim_1.2_effect"][0]) is float
    assert type(glued["ch1_claim_2.1_n"][0]) is int
    assert glued["ch1_claim_2.4_verdict"][0] == "not testable"
    for key, (value, _) in glued.items():
        assert type(value) in (float, int, str), key


def test_claims_html_puts_the_paper_under_the_statement_and_the_note_under_the_effect(tmp_path):
    results = [C.judge(UP, C.Interval(1.2, 0.4, 2.0, 9, "t-interval", 8.0)),
               C.not_testable(SAME, "one <seed>")]
    frame = C.read_claims(C.write_claims(tmp_path, results))
    page = C.claims_html(frame).data
    assert re.findall(r"<th>(.*?)</th>", page) == ["claim", "verdict", "effect [95 % CI]", "test", "evidence"]
    assert (f'<div class="compstudy-claim">{C.statement_html(UP.id, UP.statement)}<br>'
            f"<small>Paper: {html.escape(UP.paper)}</small></div>") in page
    assert f"{C.effect_html('—')}<br><small>one &lt;seed&gt;</small>" in page
    assert f"{C.effect_html('+1.2 [0.4, 2.0]')}</td>" in page  # no note: nothing under it
    assert "<small>t-interval, n\u00a0=\u00a09</small>" in page
    assert f"<td>{html.escape(UP.evidence)}</td>" in page
    assert C.breakable_html("gap_vs_N.png <b>") == "gap_<wbr>vs_<wbr>N.png &lt;b&gt;"
    linked = C.claims_html(frame, evidence=['<a href="x.html">here</a>', "there"]).data
    assert '<td><a href="x.html">here</a></td>' in linked and "<td>there</td>" in linked
    with pytest.raises(ValueError, match="1 entries for 2 claims"):
        C.claims_html(frame, evidence=["only one"])


def test_glue_values_names_each_cell_of_a_stacked_table(monkeypatch):
    import myst_nb
    glued = {}
    monkeypatch.setattr(myst_nb, "glue",
                        lambda name, value, display=True: glued.update({name: (value, display)}))
    table = pd.DataFrame({"before": [np.float32(10.5), 20.0], "after": [np.int64(3), 4]},
                         index=["resnet56_a", "resnet56_b"])
    assert C.glue_values(table.stack(), prefix="converged_") is None
    assert list(glued) == ["converged_resnet56_a_before", "converged_resnet56_a_after",
                           "converged_resnet56_b_before", "converged_resnet56_b_after"]
    assert glued["converged_resnet56_a_before"] == (10.5, False)
    assert type(glued["converged_resnet56_a_after"][0]) is float  # a plain value, not numpy's
    C.glue_values({"lr": 0.1})
    assert glued["lr"] == (0.1, False)


def test_and_join_reads_as_prose():
    assert C.and_join([0.5, 0.8, 0.9]) == "0.5, 0.8 and 0.9"
    assert C.and_join([4, 12]) == "4 and 12"
    assert C.and_join([np.int64(0)]) == "0"
    assert C.and_join(x for x in ("a", "b", "c")) == "a, b and c"
    assert C.and_join([]) == ""
