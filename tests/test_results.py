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


def _sweep(store, units, accuracy=0.5):
    for unit in store.pending(units):
        store.add(unit | {"accuracy": accuracy, "loss": 1.25})


UNITS = [{"target": t, "seed": s} for t in ("near", "far") for s in (0, 1)]


@pytest.mark.parametrize("cut", [1, 3, 5])
def test_a_last_row_cut_mid_line_is_resumed_as_finished_with_its_metrics_empty(tmp_path, cut):
    store = RunStore(tmp_path, key=["target", "seed"])
    _sweep(store, UNITS[:3])
    path = tmp_path / "runs.csv"
    path.write_bytes(path.read_bytes()[:-cut])  # the disk write of the last row was cut short
    reopened = RunStore(tmp_path, key=["target", "seed"])
    assert list(reopened.pending(UNITS)) == [{"target": "far", "seed": 1}]
    last = reopened.frame.iloc[-1]
    assert (last.target, last.seed) == ("far", 0) and pd.isna(last.loss)  # no partial value kept
    _sweep(reopened, UNITS)
    frame = pd.read_csv(path)
    assert len(frame) == 4 and not frame.duplicated(["target", "seed"]).any()
    assert frame.seed.dtype == "int64" and frame.loss.isna().sum() == 1


def test_rows_missing_trailing_fields_keep_them_empty(tmp_path):
    (tmp_path / "runs.csv").write_text("target,seed,accuracy,loss\nnear,0,0.5,1.0\nnear,1,0.6\nfar,0\n")
    store = RunStore(tmp_path, key=["target", "seed"])
    assert list(store.pending(UNITS)) == [{"target": "far", "seed": 1}]
    assert store.frame.accuracy.isna().tolist() == [False, False, True]


@pytest.mark.parametrize("text", [
    "target,seed,accuracy,loss\nnear,0,0.5,1.0\nnear,1,0.6,1.0\nfar,0,,1.0\nfar,1",  # cut in the key
    "target,seed,accuracy,loss\nnear,0,0.5,1.0\nnear,1,0.6,1.0\nfar,0,\nfar,",
    "target,seed,accuracy,loss\nnear,0,0.5,1.0\nnear,1,0.6,1.0\nfar,0,0.7,1.0,extra\nfar,1,0.8",
])
def test_rows_missing_a_required_value_are_recomputed_without_duplicates(tmp_path, text):
    (tmp_path / "runs.csv").write_text(text)
    store = RunStore(tmp_path, key=["target", "seed"], required=("accuracy",))
    assert list(store.pending(UNITS)) == [{"target": "far", "seed": 0}, {"target": "far", "seed": 1}]
    _sweep(store, UNITS, accuracy=0.9)
    frame = pd.read_csv(tmp_path / "runs.csv")
    assert len(frame) == 4 and not frame.duplicated(["target", "seed"]).any()
    assert frame.accuracy.notna().all() and frame.seed.dtype == "int64"
    assert list(RunStore(tmp_path, key=["target", "seed"], required=("accuracy",)).pending(UNITS)) == []


def test_damage_inside_a_quoted_field_or_the_header_does_not_crash(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text('target,seed,note\nnear,0,"a, b"\nnear,1,"cut in the mid')
    store = RunStore(tmp_path, key=["target", "seed"])
    assert store.frame.note.tolist()[0] == "a, b" and pd.isna(store.frame.note.tolist()[1])
    for text in ("", "targ", "target,seed\n"):
        path.write_text(text)
        store = RunStore(tmp_path, key=["target", "seed"])
        assert len(list(store.pending(UNITS))) == 4
        _sweep(store, UNITS[:1])
        assert len(pd.read_csv(path)) == 1


def test_rows_must_carry_their_required_values(tmp_path):
    store = RunStore(tmp_path, key=["target"], required=("accuracy",))
    with pytest.raises(ValueError, match="lacks required values"):
        store.add({"target": "near", "accuracy": float("nan")})
    with pytest.raises(ValueError, match="lacks required values"):
        store.add({"target": "near"})
    store.add({"target": "near", "accuracy": 0.5})
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 1
