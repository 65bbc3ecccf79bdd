"""Notebook 99, every claim of the study in one place.

It reads the ``claims.csv``, ``scale.json`` and ``wall_time.json`` of every run of the profile
and glues, for the pages that paste them:

- ``summary_table``: each paper, each claim, its verdict, the effect with its 95 % CI and a
  link to its evidence (the introduction opens with it);
- ``claims_<nb>``: one chapter's claims table (its chapter page pastes it);
- ``what_ran_<nb>``: the scale and wall time of each run of one notebook (``what_ran_html``).

``Config.INPUTS`` puts the contents of those files into the run key, so the runner redoes
the summary whenever any of them changes. Links in the glued tables are relative to the page
that pastes them, hence one table per kind of page (``root``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd

from .. import claims, config, paths, scale
from ..config import NotebookConfig
from ..errors import ConfigError

CLAIMS_FILE = "claims.csv"
INTRO_ROOT, CHAPTER_ROOT, OWN_ROOT = "", "../", "../../"
"""Path from the introduction, a chapter page and the summary's own page to the book root."""
_FIELD_NAMES = {"test_images_per_target": "test images per target"}


@dataclass(frozen=True)
class Config(NotebookConfig):
    NOTEBOOK = "99_summary"
    INPUTS = tuple(f"*/*/{name}" for name in (CLAIMS_FILE, scale.SCALE_FILE, scale.WALL_TIME_FILE))

    digits: int
    papers: dict[str, str]

    def validate(self) -> None:
        self.check_range("digits", low=0, high=6)
        for notebook in self.papers:
            if notebook not in config.notebook_names():
                raise ConfigError(f"papers names {notebook!r}, which is not a notebook of the "
                                  f"study; valid choices: {', '.join(config.notebook_names())}")


@dataclass(frozen=True)
class Collected:
    """What the runs of one profile wrote."""

    profile: str
    claims: pd.DataFrame  # notebook, run, then the columns of claims.csv
    scales: dict[str, dict[str, dict]]  # notebook -> run -> scale.json and wall time


def collect(cfg: Config) -> Collected:
    """Read every run's claims and scale, in notebook and run order."""
    frames, scales = [], {}
    for notebook in config.notebook_names():
        if notebook == cfg.NOTEBOOK:
            continue
        for run in config.run_names(cfg.profile, notebook):
            folder = paths.RESULTS_DIR / cfg.profile / notebook / run
            if (folder / CLAIMS_FILE).exists():
                frames.append(claims.read_claims(folder).assign(notebook=notebook, run=run))
            recorded = scale.read_scale(folder)
            if recorded:
                scales.setdefault(notebook, {})[run] = recorded
    columns = ["notebook", "run", *claims.COLUMNS, *claims.EXTRA_COLUMNS]
    frame = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    return Collected(cfg.profile, frame, scales)


def _link(text: str, href: str) -> str:
    """A link whose text may break after an underscore (``claims.breakable_html``)."""
    return f'<a href="{html.escape(href)}">{claims.breakable_html(text)}</a>'


def _evidence(row, root: str) -> str:
    where = "" if row.run == "main" else f" (run {row.run})"
    return _link(f"{row.evidence or 'run page'}{where}", f"{root}runs/{row.notebook}/{row.run}.html")


def _rows(frame: pd.DataFrame, digits: int) -> pd.DataFrame:
    """``claims.claims_table`` of each run, with its notebook and run beside each claim."""
    parts = [claims.claims_table(group, digits).reset_index().assign(notebook=nb, run=run)
             for (nb, run), group in frame.groupby(["notebook", "run"], sort=False)]
    return pd.concat(parts, ignore_index=True)


def summary_table(found: Collected, cfg: Config, root: str):
    """The cross-paper table: paper, claim, verdict, effect [95 % CI], n, evidence.

    The paper is named on the first of its rows only, so each paper reads as a group.
    """
    if found.claims.empty:
        from IPython.display import HTML

        return HTML("<p>No run of this profile has written a claims.csv yet.</p>")
    rows = _rows(found.claims, cfg.digits)
    first_of_paper = rows.notebook.ne(rows.notebook.shift())
    table = pd.DataFrame({
        "paper": [_link(cfg.papers.get(nb, nb), f"{root}chapters/{nb}.html") if first else ""
                  for nb, first in zip(rows.notebook, first_of_paper)],
        "claim": [claims.statement_html(r.claim, r.statement) for r in rows.itertuples()],
        "verdict": [html.escape(v) for v in rows.verdict],
        "effect [95 % CI]": [claims.effect_html(effect) for effect in rows["effect [95 % CI]"]],
        "n": [html.escape(n) for n in rows.n],
        "evidence": [_evidence(r, root) for r in rows.itertuples()]})
    return claims.html_table(table)


def chapter_claims_table(found: Collected, cfg: Config, notebook: str, root: str):
    """``claims.claims_html`` of one notebook's runs, its evidence linked to each run's page
    (which names the run when it is not ``main``)."""
    frame = found.claims[found.claims.notebook == notebook]
    return claims.claims_html(frame, cfg.digits, [_evidence(r, root) for r in frame.itertuples()])


def _plain(value) -> str:
    """A recorded scale value as a page reads it; an empty list or mapping reads "none"."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value) or "none"
    return str(value)


def wall_time(seconds: float) -> str:
    """``2 min 05 s``; ``1 h 02 min`` from an hour; ``8.3 s`` under a minute."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


WALL_TIME_ROW = "wall time of the last execution (cached work skipped)"
TOTAL_TIME_ROW = "wall time of all executions since the config or code changed"
REUSED_ROW = "cached artifacts reused from earlier runs, and their build time"


def _reused(recorded: dict) -> str:
    count, seconds = recorded.get("reused_artifacts"), recorded.get("reused_build_seconds")
    if count is None:
        return "not recorded"
    if count == 0:
        return "none"
    return f"{count} ({wall_time(seconds)}, one process each)"


def _total_time(recorded: dict) -> str:
    total, executions = recorded.get("total_seconds"), recorded.get("executions")
    if total is None:
        return "not recorded"
    return f"{wall_time(total)} ({executions} execution{'s' if executions != 1 else ''})"


def what_ran_table(found: Collected, notebook: str) -> pd.DataFrame:
    """One column per run of ``notebook``: profile, the recorded scale, the wall time of its last
    execution (which skips work found in the cache), the wall time of every execution since its
    results were last reset (what the results cost; ``scale.record_wall_time``), the artifacts
    it took from the cache without building them, with the time their building took (what
    earlier runs paid towards the results), and the host's reference time
    (``scale.host_reference_seconds``), which makes wall times from different hosts comparable."""
    rows = ["profile", *(_FIELD_NAMES.get(f, f) for f in scale.FIELDS), WALL_TIME_ROW, TOTAL_TIME_ROW,
            REUSED_ROW, "host reference"]
    columns = {}
    for run, recorded in found.scales.get(notebook, {}).items():
        values = [_plain(recorded[f]) if f in recorded else "not recorded" for f in scale.FIELDS]
        seconds, reference = recorded.get("seconds"), recorded.get("host_reference_s")
        columns[run] = [found.profile, *values,
                        "unfinished" if seconds is None else wall_time(seconds), _total_time(recorded),
                        _reused(recorded),
                        "not recorded" if reference is None else f"{reference:.2f} s"]
    return pd.DataFrame(columns, index=pd.Index(rows, name="what ran"))


def what_ran_html(found: Collected, notebook: str):
    """:func:`what_ran_table` as the pages show it, every value in full: a DataFrame's notebook
    view cuts cells at 50 characters, which hid most of a chapter's resolutions and test sizes."""
    return claims.html_table(what_ran_table(found, notebook).reset_index().map(lambda v: html.escape(str(v))))


def notebooks_with_claims(found: Collected) -> list[str]:
    return list(dict.fromkeys(found.claims.notebook))
