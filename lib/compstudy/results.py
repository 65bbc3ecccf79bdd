"""Tidy results written atomically, one row per finished unit of work.

A sweep asks the store which units are still missing, computes them one by one and adds a
row after each; a run interrupted at any point loses at most the unit in progress, and the
rerun skips every unit already in ``runs.csv`` (design.md, "Caching and resumption").
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def read_rows(path: Path, required: Iterable[str] = ()) -> pd.DataFrame:
    """Read a ``runs.csv`` that may have been cut short or damaged, without failing.

    A last line without its newline was cut mid-write: its last field may be partial, so it
    is blanked. Rows with fewer fields than the header get empty trailing fields; rows with
    more (no way to tell which value belongs where) and rows with an empty ``required``
    column are dropped. Types are inferred after the repair, so one damaged row cannot turn
    an integer column into floats.
    """
    text = Path(path).read_text()
    records = [r for r in csv.reader(io.StringIO(text)) if r]
    if not records or (len(records) == 1 and not text.endswith(("\n", "\r"))):
        return pd.DataFrame()  # empty, or only a partial header
    header, rows = records[0], records[1:]
    if rows and not text.endswith(("\n", "\r")):
        rows[-1][-1] = ""
    needed = [header.index(c) if c in header else None for c in required]
    kept = []
    for row in rows:
        if len(row) > len(header):
            continue
        row = row + [""] * (len(header) - len(row))
        if all(i is not None and row[i] != "" for i in needed):
            kept.append(row)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *kept])
    return pd.read_csv(io.StringIO(buffer.getvalue()))


def _is_missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


class RunStore:
    """``runs.csv`` of one run: rows keyed by the columns in ``key``.

    Args:
        results_dir: ``results/<profile>/<notebook>/<run>/``.
        key: the columns that identify a unit of work (e.g. ``("target", "method", "seed")``).
        required: further columns without which a row does not count as finished (e.g.
            ``("accuracy",)``). A row read back without a key or required value is dropped,
            so its unit is computed again; other missing values stay empty.
    """

    def __init__(self, results_dir: Path, key: Iterable[str], required: Iterable[str] = ()):
        self.path = Path(results_dir) / "runs.csv"
        self.key = tuple(key)
        self.required = tuple(c for c in required if c not in self.key)
        needed = self.key + self.required
        self._frame = read_rows(self.path, needed) if self.path.exists() else pd.DataFrame()

    @property
    def frame(self) -> pd.DataFrame:
        return self._frame.copy()

    def unit_key(self, values: Mapping[str, Any]) -> tuple:
        """The identity of a unit or row: its key columns, as strings."""
        return tuple(str(values[k]) for k in self.key)

    def done(self) -> set[tuple]:
        if self._frame.empty:
            return set()
        return {self.unit_key(row) for row in self._frame[list(self.key)].to_dict("records")}

    def pending(self, units: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        """Yield the units (mappings holding the key columns) that have no row yet."""
        finished = self.done()
        for unit in units:
            if self.unit_key(unit) not in finished:
                yield unit

    def add(self, row: Mapping[str, Any]) -> None:
        """Append the row of one finished unit and rewrite ``runs.csv`` atomically."""
        self.add_many([row])

    def add_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append all rows of one finished unit (e.g. one per shot budget) in one write."""
        rows = [dict(r) for r in rows]
        finished = self.done()
        for row in rows:
            missing = [k for k in self.key if k not in row]
            if missing:
                raise ValueError(f"row lacks key columns {missing}")
            empty = [k for k in self.required if k not in row or _is_missing(row[k])]
            if empty:
                raise ValueError(f"row {self.unit_key(row)} lacks required values {empty}")
            if self.unit_key(row) in finished:
                raise ValueError(f"unit {self.unit_key(row)} already recorded in {self.path}")
        frame = pd.concat([self._frame, pd.DataFrame(rows)], ignore_index=True)
        atomic_write_text(self.path, frame.to_csv(index=False))
        self._frame = frame
