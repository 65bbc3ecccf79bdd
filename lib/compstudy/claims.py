"""Claims: an effect, its 95 % confidence interval, ``n`` and a verdict that decides.

Every chapter tests its papers' claims with this one engine, so that verdicts mean the same
thing on every page. The study's rule (design.md, "Verdicts that decide") is:

- ``reproduced``: the CI excludes zero on the paper's side;
- ``contradicted``: the CI excludes zero on the other side, or excludes the paper's effect size
  where the paper gives one;
- ``inconclusive``: the CI covers zero; the result states the minimum detectable effect (MDE);
- ``not testable``: the result states why.

"Within noise" is inconclusive, never "not reproduced". A claim of "no difference" is tested
for equivalence against a margin stated on the page: ``reproduced`` only when the whole CI lies
inside ``[-margin, +margin]``, ``contradicted`` when it lies wholly outside, else
``inconclusive``. A claim of "no worse" ("loses little", "does not increase ECE") is tested for
non-inferiority: ``reproduced`` when the whole CI lies on the paper's side of ``-margin`` (a
gain is no contradiction), ``contradicted`` when it lies wholly beyond it, else
``inconclusive``.

Intervals. The unit is what the design pairs (a target, a seed, a budget): ``differences``
holds one paired difference per unit. When units are nested (seeds within targets), pass the
outer labels as ``cluster``; each cluster then counts once, through its mean, and ``n`` is the
number of clusters. The interval is chosen from that ``n`` (``method="auto"``):

- ``n <= SMALL_N`` (10): the t-interval, exact for normal differences. A bootstrap of so few
  units has few distinct resamples and undercovers (even the expanded percentile interval below
  covers about 92 % at n = 5 for a nominal 95 %; the plain percentile one about 83 %).
- larger ``n``: the paired bootstrap, which needs no normality and follows skewed differences.

The method's name travels with every result (column ``method`` of ``claims.csv``) so that the
page says which one was used.

Only numpy, scipy and pandas are used here; ``myst_nb`` and IPython are imported when a page
glues or shows a table.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from compstudy.results import atomic_write_text

LEVEL = 0.95
"""Confidence level of every interval."""
POWER = 0.80
"""Power at which the minimum detectable effect is stated."""
SMALL_N = 10
"""Up to this many units, ``method="auto"`` uses the t-interval (or Fisher z for a correlation)."""

REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE = (
    "reproduced", "contradicted", "inconclusive", "not testable")
VERDICTS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE)

COLUMNS = ("claim", "statement", "paper", "effect", "ci_low", "ci_high", "margin", "n",
           "verdict", "evidence")
"""The columns of ``claims.csv``, in this order; the extras below follow them."""
EXTRA_COLUMNS = ("kind", "method", "mde", "paper_effect", "reason")

_TEXT_COLUMNS = ("claim", "statement", "paper", "verdict", "evidence", "kind", "method", "reason")
_ID = re.compile(r"[A-Za-z0-9_.\-]+")
_CHUNK = 4_000_000  # resampled values held in memory at once


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, as a chapter tests it.

    Args:
        id: short identifier, e.g. ``"1.2"``; used in glue keys, so letters, digits, ``._-``.
        statement: the claim in one sentence.
        paper: the paper's evidence, with its numbers (these are citations, so they are typed).
        evidence: the figure or table of the run that shows the effect.
        direction: ``+1`` when the paper expects the effect to be above zero, ``-1`` below.
            Equivalence claims ignore it. A non-inferiority claim reads it as the side on
            which any effect is acceptable; on the other side at most ``margin`` is.
        paper_effect: the paper's effect size in the same units as ours, where the paper gives
            one that is comparable at our scale; a CI that excludes it contradicts the claim.
    """

    id: str
    statement: str
    paper: str
    evidence: str
    direction: int = 1
    paper_effect: float | None = None

    def __post_init__(self):
        if not _ID.fullmatch(self.id):
            raise ValueError(f"claim id {self.id!r} must use only letters, digits and '._-'")
        if self.direction not in (1, -1):
            raise ValueError(f"claim {self.id}: direction must be +1 or -1, not {self.direction!r}")
        if self.paper_effect is not None and self.direction * self.paper_effect <= 0:
            raise ValueError(f"claim {self.id}: paper_effect {self.paper_effect} is not on the "
                             f"side of its direction {self.direction:+d}")


class Interval(NamedTuple):
    """An effect with its 95 % CI.

    ``n`` counts independent units (clusters when clustered). ``method`` names the interval for
    the page. ``df`` is the degrees of freedom of the interval's reference distribution: ``n - 1``
    for a t-interval, infinite (normal) otherwise; the MDE uses it.
    """

    effect: float
    ci_low: float
    ci_high: float
    n: int
    method: str
    df: float = math.inf


@dataclass(frozen=True)
class ClaimResult:
    """A tested claim: one row of ``claims.csv``.

    ``kind`` is ``directional``, ``equivalence``, ``non-inferiority``, ``correlation``, or empty
    when not testable. ``margin`` is set for equivalence claims (the ``+-margin``) and for
    non-inferiority ones (the signed bound the CI must stay on the paper's side of: ``-margin``
    for a claim of direction +1), ``mde`` for inconclusive ones only, ``reason`` for claims
    that are not testable.
    """

    claim: Claim
    verdict: str
    kind: str = ""
    effect: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    method: str = ""
    margin: float | None = None
    mde: float | None = None
    reason: str = ""

    def row(self) -> dict:
        """The ``claims.csv`` row, columns in file order."""
        c = self.claim
        return {"claim": c.id, "statement": c.statement, "paper": c.paper, "effect": self.effect,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "margin": self.margin,
                "n": self.n, "verdict": self.verdict, "evidence": c.evidence, "kind": self.kind,
                "method": self.method, "mde": self.mde, "paper_effect": c.paper_effect,
                "reason": self.reason}


# ----------------------------------------------------------------------------- intervals


def _units(differences: Sequence[float], cluster: Sequence | None) -> np.ndarray:
    """The independent units: the differences, or the mean difference of each cluster."""
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1:
        raise ValueError(f"differences must be one-dimensional, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("differences contain NaN or infinite values; drop unpaired units first")
    if cluster is None:
        return d
    labels = np.asarray(cluster)
    if labels.shape != d.shape:
        raise ValueError(f"cluster has {labels.size} labels for {d.size} differences")
    _, inverse = np.unique(labels, return_inverse=True)
    return np.bincount(inverse, weights=d) / np.bincount(inverse)


def _need(units: np.ndarray, minimum: int, what: str) -> None:
    if units.size < minimum:
        raise ValueError(f"{what} needs at least {minimum} units, got {units.size}")


def t_interval(differences: Sequence[float], cluster: Sequence | None = None) -> Interval:
    """t CI of the mean difference (``scipy.stats.t``, ``n - 1`` degrees of freedom).

    Exact when the unit differences are normal, and the right choice for few units
    (``n <= SMALL_N``), where a bootstrap undercovers. With ``cluster``, the units are the
    cluster means, each weighted once.
    """
    u = _units(differences, cluster)
    _need(u, 2, "a t-interval")
    n = u.size
    mean = float(u.mean())
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1) * u.std(ddof=1) / math.sqrt(n))
    method = "t-interval on cluster means" if cluster is not None else "t-interval"
    return Interval(mean, mean - half, mean + half, n, method, float(n - 1))


def paired_bootstrap(differences: Sequence[float], n_boot: int = 10_000, seed: int = 0,
                     cluster: Sequence | None = None) -> Interval:
    """Bootstrap CI of the mean paired difference, deterministic for a given ``seed``.

    Resamples units with replacement and takes the expanded percentile interval (Hesterberg,
    "What teachers should know about the bootstrap", Am. Stat. 2015): the percentiles are
    widened so that, for normal data, the interval matches the t-interval's width. The plain
    percentile interval is as narrow as a z-interval with the biased SD, and covers only about
    90-93 % at n = 10-30 for normal data.

    With ``cluster`` (e.g. the target of each seed's difference), whole clusters are resampled
    and each counts through its mean: the cluster bootstrap. Resampling seeds again inside each
    drawn cluster is not done, since the cluster means already carry the seed-to-seed spread
    and a second stage would count it twice (Davison & Hinkley, "Bootstrap Methods and their
    Application", 1997, section 3.8).
    """
    u = _units(differences, cluster)
    _need(u, 2, "a bootstrap")
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100, got {n_boot}")
    n = u.size
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // n)
    means = np.concatenate([u[rng.integers(0, n, size=(min(rows, n_boot - start), n))].mean(axis=1)
                            for start in range(0, n_boot, rows)])
    t_crit = stats.t.ppf(0.5 + LEVEL / 2, n - 1)
    tail = float(stats.norm.sf(math.sqrt(n / (n - 1)) * t_crit))  # one-sided, below (1-LEVEL)/2
    low, high = np.quantile(means, [tail, 1 - tail])
    kind = "cluster bootstrap" if cluster is not None else "paired bootstrap"
    return Interval(float(u.mean()), float(low), float(high), n,
                    f"{kind} (expanded percentile, {n_boot} resamples)")


def mean_interval(differences: Sequence[float], method: str = "auto",
                  cluster: Sequence | None = None, n_boot: int = 10_000,
                  seed: int = 0) -> Interval:
    """CI of the mean difference: ``"t"``, ``"bootstrap"``, or ``"auto"``.

    ``"auto"`` takes the t-interval for up to ``SMALL_N`` units (clusters when clustered) and
    the paired bootstrap above.
    """
    if method == "auto":
        method = "t" if _units(differences, cluster).size <= SMALL_N else "bootstrap"
    if method == "t":
        return t_interval(differences, cluster)
    if method == "bootstrap":
        return paired_bootstrap(differences, n_boot, seed, cluster)
    raise ValueError(f"unknown interval method {method!r}; valid choices: auto, t, bootstrap")


def _fisher_z(rho: float, n: int) -> float:
    """Fisher's z of a rank correlation; +-1 counts as the nearest value n pairs can give.

    A perfect ranking has an infinite z, hence an interval of zero width. Taking it as one
    adjacent swap away, ``1 - 12 / (n (n^2 - 1))``, keeps the interval honest for few pairs.
    """
    edge = 1 - 12 / (n * (n * n - 1))
    return math.atanh(float(np.clip(rho, -edge, edge)))


def _ranks(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Ranks of ``values[idx]`` within each row; tied values share their average rank.

    Counts how often each distinct value is drawn in a row, so every resample is ranked at
    once (``scipy.stats.rankdata`` with ``axis=1`` gives the same, several times slower).
    """
    _, level = np.unique(values, return_inverse=True)
    m = int(level.max()) + 1
    drawn = level[idx]
    rows = np.arange(idx.shape[0])[:, None]
    counts = np.bincount((drawn + m * rows).ravel(), minlength=idx.shape[0] * m).reshape(-1, m)
    below = np.cumsum(counts, axis=1) - counts
    return np.take_along_axis(below + (counts + 1) / 2, drawn, axis=1)


def _spearman_rows(a: np.ndarray, b: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Spearman's rho of the pairs ``(a[idx], b[idx])``, row by row; NaN where a row is tied."""
    ra = _ranks(a, idx)
    rb = _ranks(b, idx)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(axis=1) / np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))


def spearman_ci(x: Sequence[float], y: Sequence[float], method: str = "auto",
                n_boot: int = 10_000, seed: int = 0) -> Interval:
    """Spearman's rho between paired ``x`` and ``y`` with its 95 % CI.

    ``"fisher"``: Fisher's z with the Bonett & Wright (Psychometrika 2000) variance
    ``(1 + rho^2 / 2) / (n - 3)``; it covers at least nominally for bivariate-normal data down
    to a handful of pairs. ``"bootstrap"``: percentile interval over resampled pairs, with no
    distributional assumption (resamples whose ranks are all tied are dropped). ``"auto"`` takes
    Fisher's z for up to ``SMALL_N`` pairs, where resamples repeat too few pairs, and the
    bootstrap above.
    """
    a = np.asarray(x, dtype=float)
    b = np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x and y must be paired one-dimensional arrays, got {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("x or y contain NaN or infinite values")
    n = a.size
    if n < 4:
        raise ValueError(f"a rank-correlation interval needs at least 4 pairs, got {n}")
    rho = float(_spearman_rows(a, b, np.arange(n)[None])[0])
    if not math.isfinite(rho):
        raise ValueError("x or y is constant: Spearman's rho is undefined")
    if method == "auto":
        method = "fisher" if n <= SMALL_N else "bootstrap"
    if method == "fisher":
        z = _fisher_z(rho, n)
        half = stats.norm.ppf(0.5 + LEVEL / 2) * math.sqrt((1 + rho ** 2 / 2) / (n - 3))
        low, high = math.tanh(z - half), math.tanh(z + half)
        return Interval(rho, min(low, rho), max(high, rho), n,
                        "Spearman, Fisher z (Bonett-Wright SE)")
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_boot, n))
        rhos = _spearman_rows(a, b, idx)
        low, high = np.nanquantile(rhos, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        return Interval(rho, float(low), float(high), n,
                        f"Spearman, pairs bootstrap (percentile, {n_boot} resamples)")
    raise ValueError(f"unknown correlation method {method!r}; valid choices: auto, fisher, "
                     "bootstrap")


def wilson_interval(p: float, n: int) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``p`` observed on ``n`` trials."""
    z = stats.norm.ppf(0.5 + LEVEL / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def proportion_difference_ci(p1: float, n1: int, p2: float, n2: int) -> Interval:
    """``p1 - p2`` with Newcombe's hybrid score interval (Stat. Med. 1998, method 10), built
    from each proportion's Wilson interval. It assumes independent samples; for two models
    scored on the same test images it is conservative when their errors agree."""
    if min(n1, n2) < 1 or not (0 <= p1 <= 1 and 0 <= p2 <= 1):
        raise ValueError(f"need proportions in [0, 1] on at least one trial, got {p1}/{n1}, {p2}/{n2}")
    (l1, u1), (l2, u2) = wilson_interval(p1, n1), wilson_interval(p2, n2)
    d = p1 - p2
    return Interval(d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2), min(n1, n2),
                    "Newcombe hybrid score")


# ----------------------------------------------------------------------------- verdicts


def mde(ci_low: float, ci_high: float, df: float = math.inf) -> float:
    """Minimum detectable effect of a 95 % CI: the true effect found with 80 % power.

    ``MDE = (q_0.975 + q_0.80) * SE`` with ``SE = (ci_high - ci_low) / 2 / q_0.975`` (the
    standard error the CI implies) and ``q`` the quantiles of the interval's reference
    distribution: Student's t with ``df`` degrees of freedom for a t-interval, the standard
    normal otherwise (Bloom, "Minimum detectable effects", Evaluation Review 1995). With normal
    quantiles the MDE is 2.80 SE; with t quantiles at n = 5 it is 3.72 SE: few units need a
    larger effect.
    """
    q_level = stats.t.ppf(0.5 + LEVEL / 2, df)
    q_power = stats.t.ppf(POWER, df)
    return float((q_level + q_power) * (ci_high - ci_low) / 2 / q_level)


def _directional_verdict(claim: Claim, low: float, high: float) -> str:
    """The design's rule, clause by clause; a contradiction is checked first.

    Read literally, a CI that excludes the paper's effect size contradicts the claim even when
    it lies on the paper's side of zero (a smaller effect than the paper's) or covers zero.
    """
    toward_low, toward_high = sorted((claim.direction * low, claim.direction * high))
    misses_paper = claim.paper_effect is not None and not low <= claim.paper_effect <= high
    if toward_high < 0 or misses_paper:
        return CONTRADICTED
    if toward_low > 0:
        return REPRODUCED
    return INCONCLUSIVE


def _equivalence_verdict(low: float, high: float, margin: float) -> str:
    if -margin <= low and high <= margin:
        return REPRODUCED
    if low > margin or high < -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def _non_inferiority_verdict(claim: Claim, low: float, high: float, margin: float) -> str:
    """Whole CI on the paper's side of ``-margin`` (in the claim's direction): reproduced."""
    toward_low, toward_high = sorted((claim.direction * low, claim.direction * high))
    if toward_low > -margin:
        return REPRODUCED
    if toward_high < -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def _result(claim: Claim, kind: str, interval: Interval, margin: float | None = None,
            z_bounds: tuple[float, float] | None = None) -> ClaimResult:
    """The verdict of ``interval``; a correlation passes its CI on Fisher's z scale as
    ``z_bounds``, where its MDE is found (rho's SE is even there) and stated as a rho."""
    if kind in ("equivalence", "non-inferiority"):
        if margin is None or not margin > 0:
            raise ValueError(f"claim {claim.id}: the {kind} margin must be > 0, got {margin}")
    low, high = interval.ci_low, interval.ci_high
    if kind == "equivalence":
        verdict = _equivalence_verdict(low, high, margin)
    elif kind == "non-inferiority":
        verdict = _non_inferiority_verdict(claim, low, high, margin)
        margin = -claim.direction * margin
    else:
        verdict = _directional_verdict(claim, low, high)
    detectable = None
    if verdict == INCONCLUSIVE:
        detectable = (math.tanh(mde(*z_bounds, interval.df)) if z_bounds is not None
                      else mde(interval.ci_low, interval.ci_high, interval.df))
    return ClaimResult(claim, verdict, kind, float(interval.effect), float(interval.ci_low),
                       float(interval.ci_high), int(interval.n), interval.method,
                       None if margin is None else float(margin), detectable)


def _too_few(claim: Claim, units: int, minimum: int) -> ClaimResult | None:
    if units >= minimum:
        return None
    return not_testable(claim, f"{units} unit(s); an interval needs at least {minimum}", n=units)


def directional(claim: Claim, differences: Sequence[float], method: str = "auto",
                cluster: Sequence | None = None, n_boot: int = 10_000,
                seed: int = 0) -> ClaimResult:
    """Test "the effect is above (``direction`` +1) or below (-1) zero" on paired differences.

    The interval comes from :func:`mean_interval`; fewer than two units give ``not testable``.
    """
    tiny = _too_few(claim, _units(differences, cluster).size, 2)
    if tiny is not None:
        return tiny
    return _result(claim, "directional",
                   mean_interval(differences, method, cluster, n_boot, seed))


def equivalence(claim: Claim, differences: Sequence[float], margin: float, method: str = "auto",
                cluster: Sequence | None = None, n_boot: int = 10_000,
                seed: int = 0) -> ClaimResult:
    """Test "no difference" within ``+-margin`` (same units as the differences).

    ``reproduced`` needs the whole 95 % CI inside the margin, which is stricter than the usual
    two one-sided tests at 5 % (a 90 % CI). ``contradicted`` needs it wholly outside.
    """
    tiny = _too_few(claim, _units(differences, cluster).size, 2)
    if tiny is not None:
        return tiny
    return _result(claim, "equivalence",
                   mean_interval(differences, method, cluster, n_boot, seed), margin)


def non_inferiority(claim: Claim, differences: Sequence[float], margin: float,
                    method: str = "auto", cluster: Sequence | None = None, n_boot: int = 10_000,
                    seed: int = 0) -> ClaimResult:
    """Test "no worse than ``margin``": the effect stays on the paper's side (``direction``)
    of ``-margin``, e.g. "truncation loses less than 2 points" (direction +1, the effect a
    change in accuracy) or "quantization adds less than 2 points of ECE" (direction -1).

    ``reproduced`` needs the whole 95 % CI beyond the bound, a one-sided test at 2.5 %;
    ``contradicted`` needs it wholly on the other side. An inconclusive result's MDE is the
    distance from the bound that the design would detect with 80 % power.
    """
    tiny = _too_few(claim, _units(differences, cluster).size, 2)
    if tiny is not None:
        return tiny
    return _result(claim, "non-inferiority",
                   mean_interval(differences, method, cluster, n_boot, seed), margin)


def correlation(claim: Claim, x: Sequence[float], y: Sequence[float], method: str = "auto",
                n_boot: int = 10_000, seed: int = 0) -> ClaimResult:
    """Test the sign of Spearman's rho (``direction``); the interval is :func:`spearman_ci`.

    An inconclusive correlation's MDE is found on Fisher's z scale and stated as a rho.
    """
    tiny = _too_few(claim, len(x), 4)
    if tiny is not None:
        return tiny
    interval = spearman_ci(x, y, method, n_boot, seed)
    return _result(claim, "correlation", interval,
                   z_bounds=(_fisher_z(interval.ci_low, interval.n), _fisher_z(interval.ci_high, interval.n)))


def pooled_correlation(claim: Claim, samples: Sequence[tuple[Sequence[float], Sequence[float]]]) -> ClaimResult:
    """Test the sign of Spearman's rho measured on several units (e.g. one target's blocks
    each), given as paired ``(x, y)`` samples, pooled on Fisher's z scale.

    The t-interval of the units' z values is taken back to rho, so that the effect and its CI
    stay inside (-1, 1), as a t-interval on the rhos themselves does not near |rho| = 1. The
    effect is the rho of the mean z.
    """
    tiny = _too_few(claim, len(samples), 2)
    if tiny is not None:
        return tiny
    z = t_interval([_fisher_z(spearman_ci(x, y, "fisher").effect, len(x)) for x, y in samples])
    interval = Interval(math.tanh(z.effect), math.tanh(z.ci_low), math.tanh(z.ci_high), z.n,
                        "t-interval on Fisher z, back to rho", z.df)
    return _result(claim, "directional", interval, z_bounds=(z.ci_low, z.ci_high))


def judge(claim: Claim, interval: Interval, margin: float | None = None) -> ClaimResult:
    """Verdict for an interval computed elsewhere (e.g. between two interpolated curves).

    Without ``margin`` the claim is directional; with it, an equivalence claim. The MDE of an
    inconclusive result uses ``interval.df`` (infinite, i.e. normal, unless given).
    """
    return _result(claim, "directional" if margin is None else "equivalence", interval, margin)


def not_testable(claim: Claim, reason: str, n: int | None = None) -> ClaimResult:
    """A claim this run cannot test, with the reason the page shows."""
    if not reason.strip():
        raise ValueError(f"claim {claim.id}: a claim that is not testable needs a reason")
    return ClaimResult(claim, NOT_TESTABLE, n=n, reason=reason)


# ----------------------------------------------------------------------------- claims.csv


def write_claims(results_dir: Path, results: Iterable[ClaimResult]) -> Path:
    """Write ``<results_dir>/claims.csv`` atomically; returns its path.

    Columns: :data:`COLUMNS` then :data:`EXTRA_COLUMNS`. Empty cells are values that do not
    apply (``margin`` outside equivalence and non-inferiority claims, ``mde`` outside
    inconclusive ones).
    """
    rows = [r.row() for r in results]
    ids = [r["claim"] for r in rows]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"claim ids repeated: {', '.join(repeated)}")
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *EXTRA_COLUMNS])
    frame["n"] = frame["n"].astype("Int64")
    path = Path(results_dir) / "claims.csv"
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def read_claims(path: Path) -> pd.DataFrame:
    """Read a ``claims.csv`` (or the run folder holding one); ids stay strings ("1.10")."""
    path = Path(path)
    if path.is_dir():
        path = path / "claims.csv"
    frame = pd.read_csv(path, dtype={c: str for c in _TEXT_COLUMNS} | {"n": "Int64"})
    for column in _TEXT_COLUMNS:
        frame[column] = frame[column].fillna("")
    return frame


# ----------------------------------------------------------------------------- pages


def _fmt(value: float, digits: int, sign: str = "") -> str:
    return f"{value:{sign}.{digits}f}"


def interval_text(value: float, low: float, high: float, digits: int = 2, sign: str = "") -> str:
    """An estimate with its interval as pages and benchmarks print it: ``+1.23 [0.40, 2.05]``
    (``sign="+"`` signs the estimate only)."""
    return f"{_fmt(value, digits, sign)} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


def _digits(r, digits: int) -> int:
    """Decimals of a claim's numbers: ``digits``, but always 2 for a rank correlation."""
    return 2 if r.kind == "correlation" else digits


def _notes(r, d: int) -> list[str]:
    """What a claim's effect is read against: the margin of an equivalence claim, the bound of a
    non-inferiority one, the MDE of an inconclusive one, the reason of one not testable."""
    notes = []
    if pd.notna(r.margin):
        notes.append(f"non-inferiority bound {_fmt(r.margin, d, '+')}" if r.kind == "non-inferiority"
                     else f"margin ±{_fmt(r.margin, d)}")
    if pd.notna(r.mde):
        notes.append(f"MDE {_fmt(r.mde, d)}")
    if r.reason:
        notes.append(r.reason)
    return notes


def claim_clause(r, unit: str = "", digits: int = 1) -> str:
    """A claim as a chapter's sentence cites it (``r``: a row of a claims frame):
    ``+2.9 points (-0.4 to +6.2; inconclusive, MDE 3.1)``, or ``not testable (its reason)``."""
    if r.verdict == NOT_TESTABLE:
        return f"not testable ({r.reason})"
    d = _digits(r, digits)
    effect = " ".join(part for part in (_fmt(r.effect, d, "+"), unit) if part)
    notes = ", ".join([r.verdict, *(n for n in _notes(r, d) if n != r.reason)])
    return f"{effect} ({_fmt(r.ci_low, d, '+')} to {_fmt(r.ci_high, d, '+')}; {notes})"


def claims_table(frame: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """A claims table for a page, one row per claim (index: claim id).

    The effect reads ``+1.2 [0.4, 2.0]`` (``digits`` decimals; rank correlations always 2).
    ``note`` states the margin of an equivalence claim, the bound of a non-inferiority one, the
    MDE of an inconclusive one, and the reason of one that is not testable.
    """
    rows = []
    for r in frame.itertuples(index=False):
        d = _digits(r, digits)
        rows.append({
            "claim": r.claim, "statement": r.statement, "paper": r.paper, "verdict": r.verdict,
            "effect [95 % CI]": interval_text(r.effect, r.ci_low, r.ci_high, d, "+")
            if r.verdict != NOT_TESTABLE else "—",
            "n": "" if pd.isna(r.n) else str(int(r.n)),
            "method": r.method, "note": "; ".join(_notes(r, d)), "evidence": r.evidence})
    columns = ["claim", "statement", "paper", "verdict", "effect [95 % CI]", "n", "method",
               "note", "evidence"]
    return pd.DataFrame(rows, columns=columns).set_index("claim")


def claims_html(frame: pd.DataFrame, digits: int = 1, evidence: Sequence[str] | None = None):
    """The claims as a page shows them: five columns that fit a book's text column.

    The claim's statement with the paper's evidence under it; the verdict; the effect [95 % CI]
    on one line, with the note under it (the margin, bound or MDE it is read against, or why it
    is not testable); the test (method and n); the evidence, as text or, when ``evidence`` is
    given, as that HTML, one per claim (the summary's links to run pages).
    """
    table = claims_table(frame, digits).reset_index().rename(columns={"effect [95 % CI]": "effect"})
    if evidence is None:
        evidence = [breakable_html(e) for e in table.evidence]
    elif len(evidence) != len(table):
        raise ValueError(f"evidence has {len(evidence)} entries for {len(table)} claims")
    rows = list(table.itertuples())
    shown = pd.DataFrame({
        "claim": [_stacked(statement_html(r.claim, r.statement), f"Paper: {r.paper}" if r.paper else "",
                           "compstudy-claim") for r in rows],
        "verdict": [html.escape(r.verdict) for r in rows],
        "effect [95 % CI]": [_stacked(effect_html(r.effect), r.note) for r in rows],
        "test": [_small(", ".join(part for part in (r.method, r.n and f"n\u00a0=\u00a0{r.n}") if part))
                 for r in rows],
        "evidence": list(evidence)})
    return html_table(shown)


def breakable_html(text: str) -> str:
    """``text`` as escaped HTML that may break after an underscore: a figure's file name
    (``accuracy_vs_budget.png``) is otherwise one word wider than a narrow column."""
    return html.escape(text).replace("_", "_<wbr>")


def statement_html(claim: str, statement: str) -> str:
    """A claim's id in bold, then its statement (escaped HTML)."""
    return f"<b>{html.escape(claim)}</b> {html.escape(statement)}"


def effect_html(effect: str) -> str:
    """An effect with its interval, kept on one line by the book's CSS (escaped HTML)."""
    return f'<span class="compstudy-nowrap">{html.escape(effect)}</span>'


def _small(text: str) -> str:
    """``text`` as escaped HTML in small type; nothing for an empty text."""
    return f"<small>{html.escape(text)}</small>" if text else ""


def _stacked(first: str, second: str, css_class: str = "") -> str:
    """``first`` (HTML) with ``second`` (text) under it in small type, in one ``div`` of
    ``css_class`` (the book's CSS gives the claim column a minimum width)."""
    body = f"{first}<br>{_small(second)}" if second else first
    return f'<div class="{css_class}">{body}</div>' if css_class else body


def html_table(frame: pd.DataFrame):
    """A frame of HTML cells (escape text with ``html.escape`` first) as a table of text:
    left-aligned and top-aligned by the book's CSS, no cell cut short, no index."""
    from IPython.display import HTML

    return HTML(frame.to_html(index=False, escape=False, border=0, na_rep="", classes="compstudy-text"))


def _plain(value) -> float | int | str:
    """A plain Python value for glue (numpy scalars render badly: MyST-NB issue 610)."""
    if isinstance(value, str):
        return value
    if pd.isna(value):
        return float("nan")
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(value)


def and_join(values: Iterable) -> str:
    """The values as a page reads them in prose: ``"0.5, 0.8 and 0.9"``, ``"4 and 12"``, ``"0"``.

    Each value is written with ``str`` (numpy scalars as plain Python values), so a notebook
    can glue a list of its config as one string; an empty list gives ``""``.
    """
    words = [str(_plain(v)) for v in values]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def glue_values(values: Mapping | pd.Series, prefix: str = "") -> None:
    """Glue each value of a mapping or Series under ``{prefix}{key}``, nothing displayed.

    A tuple key (a stacked frame's row) is joined with ``_``, so a page can cite one cell of a
    table, e.g. ``converged_resnet56_a_before``. Returns nothing, so a cell that ends with it
    shows nothing either.
    """
    from myst_nb import glue

    for key, value in values.items():
        glue(prefix + ("_".join(map(str, key)) if isinstance(key, tuple) else str(key)), _plain(value),
             display=False)


def glue_claims(frame: pd.DataFrame, prefix: str = "", units: Mapping[str, str] | None = None) -> None:
    """Glue each claim's numbers into the executing notebook, for the chapter's prose.

    Keys: ``{prefix}claim_{id}_{field}`` for ``effect``, ``ci_low``, ``ci_high``, ``mde``
    (floats, NaN where they do not apply), ``n`` (int), ``verdict`` (str) and ``clause`` (str,
    :func:`claim_clause`, with the claim's unit from ``units``): prose that cites a claim which
    may be untestable pastes the clause, never a number that may be NaN. The tables are the
    summary's (``claims_<notebook>``). Nothing is displayed or returned.
    """
    from myst_nb import glue

    units = units or {}
    for r in frame.itertuples(index=False):
        for field in ("effect", "ci_low", "ci_high", "mde", "n", "verdict"):
            glue(f"{prefix}claim_{r.claim}_{field}", _plain(getattr(r, field)), display=False)
        glue(f"{prefix}claim_{r.claim}_clause", claim_clause(r, units.get(r.claim, "")), display=False)
