"""The runner: cache keys, skipping, invalidation, resumption and one-line errors."""

import shutil
import subprocess
import textwrap

import nbformat
import pandas as pd
import pytest

from compstudy import config, paths, runner
from compstudy.errors import ConfigError

from conftest import PYTHON, copy_study, study_env

TOY = textwrap.dedent('''\
    # %% tags=["parameters"]
    profile = "cpu"
    run = "main"
    units = 5
    shots = 1

    # %%
    import os
    import torch
    from compstudy import config, data
    from compstudy.results import RunStore

    cfg = config.resolve("00_toy", globals())
    data.few_shot_indices(torch.tensor([0, 0, 1, 1]), cfg.shots, seed=0)
    store = RunStore(cfg.results_dir, key=["unit"])
    fail_at = int(os.environ.get("TOY_FAIL_AT", -1))
    for unit in store.pending({"unit": i} for i in range(cfg.units)):
        if unit["unit"] == fail_at:
            raise RuntimeError("simulated interruption")
        store.add(unit | {"pid": os.getpid()})
    ''')


@pytest.fixture
def toy_study(tmp_path, monkeypatch):
    """A study with one tiny notebook, wired in-process and for the kernel."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "00_toy.py").write_text(TOY)
    for profile in config.PROFILES:
        (tmp_path / "configs" / profile / "00_toy").mkdir(parents=True)
        (tmp_path / "configs" / profile / "00_toy" / "main.yaml").write_text("{}\n")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", tmp_path / "notebooks")
    monkeypatch.setattr(paths, "CONFIGS_DIR", tmp_path / "configs")
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "book" / "runs")
    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("COMPSTUDY_ROOT", str(tmp_path))  # what the notebook kernel sees
    monkeypatch.setenv("COMPSTUDY_RESULTS", str(tmp_path / "results"))
    return tmp_path


def rows(root):
    return pd.read_csv(root / "results" / "smoke" / "00_toy" / "main" / "runs.csv")


@pytest.mark.slow
def test_skip_rerun_on_config_change_and_resume_after_interruption(toy_study, monkeypatch):
    out = runner.output_path("00_toy", "main")
    assert runner.run("00_toy", "main", "smoke") is True
    assert out.exists() and len(rows(toy_study)) == 5
    executed = nbformat.read(out, 4)
    assert executed.metadata["compstudy"]["profile"] == "smoke"
    assert any("make run NB=00_toy RUN=main PROFILE=smoke" in c.source for c in executed.cells)
    assert runner.run("00_toy", "main", "smoke") is False  # unchanged: skipped

    yaml_file = toy_study / "configs" / "smoke" / "00_toy" / "main.yaml"
    yaml_file.write_text("units: 4\n")  # new key: results start afresh
    monkeypatch.setenv("TOY_FAIL_AT", "2")
    with pytest.raises(Exception, match="simulated interruption"):
        runner.run("00_toy", "main", "smoke")
    assert not out.exists(), "a failed run must not leave a finished-looking notebook"
    assert not list(out.parent.glob("_tmp_*"))
    before = rows(toy_study)
    assert list(before.unit) == [0, 1]

    monkeypatch.delenv("TOY_FAIL_AT")
    assert runner.run("00_toy", "main", "smoke") is True
    after = rows(toy_study)
    assert list(after.unit) == [0, 1, 2, 3]  # nothing lost, nothing duplicated
    assert list(after.pid[:2]) == list(before.pid)  # finished rows were not recomputed
    assert after.pid[2] != before.pid[0]


def test_key_changes_with_library_notebook_and_config(toy_study, tmp_path, monkeypatch):
    lib_copy = tmp_path / "libcopy"
    shutil.copytree(runner.LIB_DIR, lib_copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runner, "LIB_DIR", lib_copy)
    params = config.validate("00_toy", {"profile": "smoke", "run": "main"})
    key = runner.run_key("00_toy", params)
    assert runner.run_key("00_toy", params) == key
    assert runner.run_key("00_toy", {**params, "units": 6}) != key
    with open(lib_copy / "train.py", "a") as handle:
        handle.write("\n# an edit of the library\n")
    edited = runner.run_key("00_toy", params)
    assert edited != key
    notebook = toy_study / "notebooks" / "00_toy.py"
    notebook.write_text(notebook.read_text() + "\n# %%\nprint('one more cell')\n")
    assert runner.run_key("00_toy", params) != edited


@pytest.mark.slow
def test_config_error_raised_inside_the_notebook_becomes_one_line(toy_study):
    (toy_study / "configs" / "smoke" / "00_toy" / "main.yaml").write_text("shots: 3\n")
    with pytest.raises(ConfigError, match="n_shot=3 exceeds"):
        runner.run("00_toy", "main", "smoke")
    assert not runner.output_path("00_toy", "main").exists()


@pytest.mark.parametrize("args, expected", [
    (["run", "00_upstream", "--profile", "gpu"], "unknown profile 'gpu'; valid choices: smoke, cpu, paper"),
    (["run", "99_nothing", "--profile", "smoke"], "unknown notebook '99_nothing'; valid choices: 00_upstream"),
    (["run", "00_upstream", "nope", "--profile", "smoke"], "valid choices: main"),
    (["all", "--profile", "laptop"], "unknown profile 'laptop'"),
])
def test_cli_errors_are_one_line_with_choices(tmp_path, args, expected):
    root = copy_study(tmp_path)
    done = subprocess.run([PYTHON, "-m", "compstudy.runner", *args], capture_output=True,
                          text=True, env=study_env(root))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and expected in done.stderr
    assert not (root / "book" / "runs").exists() and not (root / "results").exists()


@pytest.mark.parametrize("yaml_text, expected", [
    ("seeed: 1\n", "unknown config key for notebook 00_upstream: 'seeed'; valid choices:"),
    ("target_datasets: [near, cifar11]\n", "unknown dataset 'cifar11'; valid choices:"),
    ("zoo_models: [resnet18, resnet7]\n", "unknown model 'resnet7'; valid choices:"),
    ("profile: cpu\n", "'profile' is set by the runner"),
])
def test_bad_yaml_stops_before_any_kernel_starts(tmp_path, yaml_text, expected):
    root = copy_study(tmp_path)
    (root / "configs" / "smoke" / "00_upstream" / "main.yaml").write_text(yaml_text)
    done = subprocess.run([PYTHON, "-m", "compstudy.runner", "run", "00_upstream", "--profile", "smoke"],
                          capture_output=True, text=True, env=study_env(root))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and expected in done.stderr
    assert not (root / "results").exists()


def test_check_validates_every_config(tmp_path):
    root = copy_study(tmp_path)
    done = subprocess.run([PYTHON, "-m", "compstudy.runner", "check"], capture_output=True,
                          text=True, env=study_env(root))
    assert done.returncode == 0 and "configs valid" in done.stdout
    (root / "configs" / "paper" / "00_upstream" / "main.yaml").write_text("epochz: {}\n")
    done = subprocess.run([PYTHON, "-m", "compstudy.runner", "check"], capture_output=True,
                          text=True, env=study_env(root))
    assert done.returncode == 2 and "epochz" in done.stderr
