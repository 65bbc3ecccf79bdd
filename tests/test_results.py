"""runs.csv: one row per finished unit, atomic rewrites, resumable sweeps."""

import pandas as pd
import pytest

from compstudy.results import RunStore, atomic_write_text


def test_rows_persist_and_pending_skips_finished_units(tmp_path):
    store = RunStore(tmp_path, key=["target", "seed"])
    units = [{"target": t, "seed": s} for t in ("near", "far") for s in (0, 1)]
    for unit in list(store.pending(units))[:3]:
        store.add(unit | {"accuracy": 0.5})
    reopened = RunStore(tmp_path, key=["target", "seed"])  # as after an interruption
    assert list(reopened.pending(units)) == [{"target": "far", "seed": 1}]
    reopened.add({"target": "far", "seed": 1, "accuracy": 0.7})
    frame = pd.read_csv(tmp_path / "runs.csv")
    assert len(frame) == 4 and not frame.duplicated(["target", "seed"]).any()


def test_duplicate_units_and_missing_keys_are_refused(tmp_path):
    store = RunStore(tmp_path, key=["target"])
    store.add({"target": "near", "accuracy": 0.1})
    with pytest.raises(ValueError, match="already recorded"):
        store.add({"target": "near", "accuracy": 0.2})
    with pytest.raises(ValueError, match="lacks key columns"):
        store.add({"accuracy": 0.2})
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 1


def test_add_many_writes_all_rows_of_one_unit_at_once(tmp_path):
    store = RunStore(tmp_path, key=["model"])
    store.add_many([{"model": "a", "shots": s} for s in (1, 5, -1)])
    assert len(store.frame) == 3 and list(store.pending([{"model": "a"}])) == []


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "x" / "file.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]
