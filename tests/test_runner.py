"""The runner: cache keys, skipping, invalidation, resumption and one-line errors."""

import contextlib
import shutil
import subprocess
import textwrap

import nbformat
import pandas as pd
import pytest

from compstudy import cache, config, paths, runner, scale
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
    from compstudy import cache, config, data
    from compstudy.results import RunStore

    cfg = config.resolve("00_toy", globals())
    data.few_shot_indices(torch.tensor([0, 0, 1, 1]), cfg.shots, seed=0)
    cache.cached("toy", {"shots": cfg.shots}, [cache], lambda: [cfg.shots])
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
    monkeypatch.setenv("COMPSTUDY_ARTIFACTS", str(tmp_path / "artifacts"))  # what this toy study built
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
    results_dir = toy_study / "results" / "smoke" / "00_toy" / "main"
    assert '"built": true' in (results_dir / runner.LEDGER_FILE).read_text()  # its own kernel logs
    assert any("make run NB=00_toy RUN=main PROFILE=smoke" in c.source for c in executed.cells)
    assert runner.run("00_toy", "main", "smoke") is False  # unchanged: skipped
    shutil.rmtree(toy_study / "results")  # the page stays, but other notebooks read the rows
    assert runner.run("00_toy", "main", "smoke") is True and len(rows(toy_study)) == 5

    yaml_file = toy_study / "configs" / "smoke" / "00_toy" / "main.yaml"
    yaml_file.write_text("units: 4\n")  # new key: results start afresh
    monkeypatch.setenv("TOY_FAIL_AT", "2")
    with pytest.raises(Exception, match="simulated interruption"):
        runner.run("00_toy", "main", "smoke")
    assert not out.exists(), "a failed run must not leave a finished-looking notebook"
    assert not list(out.parent.glob("_tmp_*"))
    before = rows(toy_study)
    assert list(before.unit) == [0, 1]
    stopped = scale.read_scale(results_dir)
    assert stopped["executions"] == 1 and stopped["total_seconds"] > 0 and "seconds" not in stopped

    monkeypatch.delenv("TOY_FAIL_AT")
    assert runner.run("00_toy", "main", "smoke") is True
    after = rows(toy_study)
    assert list(after.unit) == [0, 1, 2, 3]  # nothing lost, nothing duplicated
    assert list(after.pid[:2]) == list(before.pid)  # finished rows were not recomputed
    assert after.pid[2] != before.pid[0]
    timed = scale.read_scale(results_dir)  # the interrupted execution's time still counts
    assert timed["executions"] == 2
    assert timed["total_seconds"] == pytest.approx(stopped["total_seconds"] + timed["seconds"], abs=0.11)


def test_the_cache_records_build_time_and_a_ledger_tells_reused_from_built(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path / "artifacts")
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(cache.LEDGER_VARIABLE, str(ledger))
    old = cache.cached("toy", {"n": 1}, [cache], lambda: [1])  # an earlier run's artifact
    assert cache.build_seconds(cache.artifact_path("toy", {"n": 1}, [cache])) >= 0
    ledger.unlink()  # this run starts here
    assert cache.reused_build_time(ledger) == (0, 0.0)
    cache.cached("toy", {"n": 2}, [cache], lambda: [2])  # built by this run, then loaded twice
    assert cache.cached("toy", {"n": 2}, [cache], lambda: [0]) == [2]
    cache.cached("toy", {"n": 2}, [cache], lambda: [0])
    assert cache.reused_build_time(ledger) == (0, 0.0)
    record = cache.artifact_path("toy", {"n": 1}, [cache]).with_name(
        cache.artifact_path("toy", {"n": 1}, [cache]).name + cache.BUILD_RECORD_SUFFIX)
    record.write_text('{"build_seconds": 42.5}')
    assert cache.cached("toy", {"n": 1}, [cache], lambda: [0]) == old  # reused
    with ledger.open("a") as file:
        file.write('{"artifact": "cut sh')  # a line an interrupted write left unfinished
    assert cache.reused_build_time(ledger) == (1, 42.5)
    monkeypatch.delenv(cache.LEDGER_VARIABLE)  # outside a run nothing is logged
    cache.cached("toy", {"n": 3}, [cache], lambda: [3])
    assert "'n': 3" not in ledger.read_text() and len(ledger.read_text().splitlines()) == 5


@pytest.mark.slow
def test_all_runs_share_one_kernel_but_each_starts_from_an_empty_namespace(toy_study):
    notebook = toy_study / "notebooks" / "00_toy.py"
    notebook.write_text(TOY.replace("# %%\nimport os", "# %%\nassert 'store' not in dir(), "
                                    "'the previous run left its namespace'\n\n# %%\nimport os", 1))
    (toy_study / "configs" / "smoke" / "00_toy" / "again.yaml").write_text("units: 3\n")
    runner.run_all("smoke")
    again = pd.read_csv(toy_study / "results" / "smoke" / "00_toy" / "again" / "runs.csv")
    assert len(rows(toy_study)) == 5 and len(again) == 3
    assert set(rows(toy_study).pid) == set(again.pid)  # one kernel process for both runs
    results = toy_study / "results" / "smoke" / "00_toy"
    main_time, again_time = scale.read_scale(results / "main"), scale.read_scale(results / "again")
    assert (main_time["reused_artifacts"], again_time["reused_artifacts"]) == (0, 1)  # main built it
    page = nbformat.read(runner.output_path("00_toy", "again"), 4)
    counts = [c.execution_count for c in page.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))  # numbered as a fresh kernel would


def test_key_changes_with_the_imported_library_notebook_code_and_config(toy_study, tmp_path):
    lib_copy = tmp_path / "libcopy"
    shutil.copytree(cache.LIB_ROOT / "compstudy", lib_copy / "compstudy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    params = config.validate("00_toy", {"profile": "smoke", "run": "main"})
    key = runner.run_key("00_toy", params, root=lib_copy)
    assert runner.run_key("00_toy", params, root=lib_copy) == key
    assert runner.run_key("00_toy", {**params, "units": 6}, root=lib_copy) != key
    with open(lib_copy / "compstudy" / "train.py", "a") as handle:  # the toy does not import it
        handle.write("\n\ndef an_edit():\n    return 1\n")
    assert runner.run_key("00_toy", params, root=lib_copy) == key
    with open(lib_copy / "compstudy" / "data" / "real.py", "a") as handle:  # ... but it imports data
        handle.write("\n\ndef an_edit():\n    return 1\n")
    edited = runner.run_key("00_toy", params, root=lib_copy)
    assert edited != key
    notebook = toy_study / "notebooks" / "00_toy.py"
    notebook.write_text(notebook.read_text() + "\n# %% [markdown]\n# One more paragraph.\n")
    assert runner.run_key("00_toy", params, root=lib_copy) == edited
    notebook.write_text(notebook.read_text() + "\n# %%\nprint('one more cell')\n")
    assert runner.run_key("00_toy", params, root=lib_copy) != edited


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


@pytest.fixture
def study_paths(tmp_path, monkeypatch):
    """A copy of the study's notebooks and configs that the runner, called in-process, reads."""
    root = copy_study(tmp_path)
    for name, path in (("REPO_ROOT", root), ("NOTEBOOKS_DIR", root / "notebooks"),
                       ("CONFIGS_DIR", root / "configs"), ("RUNS_DIR", root / "book" / "runs"),
                       ("RESULTS_DIR", root / "results")):
        monkeypatch.setattr(paths, name, path)
    return root


@pytest.mark.parametrize("yaml_text, expected", [
    ("seeed: 1\n", "unknown config key for notebook 00_upstream: 'seeed'; valid choices:"),
    ("targets: [near, cifar11]\n", "unknown targets value 'cifar11'; valid choices:"),
    ("upstream_models: [deit_tiny, resnet7]\n", "unknown model 'resnet7'; valid choices:"),
    ("profile: cpu\n", "'profile' is set by the runner"),
])
def test_bad_yaml_stops_before_any_kernel_starts(study_paths, capsys, yaml_text, expected):
    (study_paths / "configs" / "smoke" / "00_upstream" / "main.yaml").write_text(yaml_text)
    assert runner.main(["run", "00_upstream", "--profile", "smoke"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.strip().count("\n") == 0 and expected in stderr
    assert not (study_paths / "results").exists() and not (study_paths / "book" / "runs").exists()


def test_check_validates_every_config(tmp_path):
    root = copy_study(tmp_path)
    done = subprocess.run([PYTHON, "-m", "compstudy.runner", "check"], capture_output=True,
                          text=True, env=study_env(root))
    assert done.returncode == 0 and "configs valid" in done.stdout


def test_check_names_a_bad_config_in_one_line(study_paths, capsys):
    (study_paths / "configs" / "paper" / "00_upstream" / "main.yaml").write_text("epochz: {}\n")
    assert runner.main(["check"]) == 2
    stderr = capsys.readouterr().err
    assert "epochz" in stderr and stderr.strip().count("\n") == 0


def test_a_yaml_syntax_error_is_one_line_with_exit_status_2(study_paths, capsys):
    root = study_paths
    (root / "configs" / "smoke" / "00_upstream" / "main.yaml").write_text("seed: 1\nepochs: {resnet18: 2\n")
    for args in (["run", "00_upstream", "--profile", "smoke"], ["check"]):
        assert runner.main(args) == 2
        stderr = capsys.readouterr().err
        assert stderr.strip().count("\n") == 0 and "Traceback" not in stderr
        assert stderr.startswith("error: configs/smoke/00_upstream/main.yaml, line 3, column 1: "
                                 "YAML syntax error: expected ',' or '}'")
        assert "flow mapping from line 2" in stderr
    assert not (root / "results").exists() and not (root / "book" / "runs").exists()


# ----------------------------------------------------------------------------- run keys of the study

CHAPTERS = ("01_hidden_cost", "02_pruning_value", "03_sls", "04_dcvit")
UPSTREAM_AND_DEPENDANTS = {"00_upstream", "01_hidden_cost", "03_sls", "04_dcvit"}
SUMMARY = "99_summary"  # imports config, whose name checks import data and models


@pytest.fixture
def study_copy(study_paths):
    """:func:`study_paths` with a copy of the library too, whose run keys the tests compute."""
    shutil.copytree(cache.LIB_ROOT / "compstudy", study_paths / "lib" / "compstudy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return study_paths


def keys(root, profile="cpu"):
    """The key of every run of every notebook of the copy at ``root``."""
    return {(nb, run): runner.key_of(profile, nb, run, root=root / "lib")
            for nb in config.notebook_names() for run in config.run_names(profile, nb)}


def changed(before, after):
    """The notebooks with a run whose key changed."""
    return {notebook for (notebook, run), key in after.items() if before[notebook, run] != key}


def append(path, text):
    path.write_text(path.read_text() + text)


def test_keys_are_deterministic_and_distinct(study_copy):
    before = keys(study_copy)
    assert keys(study_copy) == before
    assert len(set(before.values())) == len(before)
    assert before[("04_dcvit", "main")] == runner.key_of("cpu", "04_dcvit", "main", root=study_copy / "lib")


@pytest.mark.parametrize("module, expected", [
    ("methods/dcvit.py", {"04_dcvit"}),
    ("methods/inversion.py", {"04_dcvit"}),
    ("methods/practise.py", {"04_dcvit"}),
    ("studies/dcvit.py", {"04_dcvit"}),
    ("methods/sls.py", {"03_sls"}),
    ("methods/petl.py", {"03_sls"}),
    ("methods/depgraph.py", {"03_sls"}),
    ("studies/sls.py", {"03_sls"}),
    ("methods/structured.py", {"02_pruning_value"}),
    ("studies/pruning_value.py", {"02_pruning_value"}),
    ("models/cifar.py", {"02_pruning_value"}),
    ("methods/prompting.py", {"01_hidden_cost"}),
    ("methods/sparse_training.py", {"01_hidden_cost"}),
    ("methods/quantization.py", {"01_hidden_cost"}),
    ("studies/hidden_cost.py", {"01_hidden_cost"}),
    ("studies/upstream.py", UPSTREAM_AND_DEPENDANTS),  # notebook 00's code: its dependants' upstream
    ("models/upstream.py", UPSTREAM_AND_DEPENDANTS | {"02_pruning_value", SUMMARY}),  # the models package
    ("data/real.py", UPSTREAM_AND_DEPENDANTS | {"02_pruning_value", SUMMARY}),
])
def test_editing_one_chapters_module_reruns_that_chapter_only(study_copy, module, expected):
    before = keys(study_copy)
    append(study_copy / "lib" / "compstudy" / module, "\n\ndef an_added_function():\n    return 1\n")
    assert changed(before, keys(study_copy)) == expected


def test_editing_notebook_00s_config_reruns_its_dependants(study_copy):
    before, before_smoke = keys(study_copy), keys(study_copy, "smoke")
    (study_copy / "configs" / "cpu" / "00_upstream" / "main.yaml").write_text("seed: 1\n")
    after = keys(study_copy)
    assert changed(before, after) == UPSTREAM_AND_DEPENDANTS
    assert all(after[k] != before[k] for k in after if k[0] in UPSTREAM_AND_DEPENDANTS)  # every run
    assert keys(study_copy, "smoke") == before_smoke  # another profile reads its own YAML
    ablation = study_copy / "configs" / "cpu" / "04_dcvit" / "update_all.yaml"
    append(ablation, "seeds: [1]\n")
    assert {k for k in after if keys(study_copy)[k] != after[k]} == {("04_dcvit", "update_all")}


def _edit_docstrings_and_comments(path):
    """Change every docstring of a module and add comments; return whether the text changed."""
    import ast

    source = path.read_text()
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    starts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and ast.get_docstring(node, clean=False) is not None:
            starts.append((node.body[0].value.lineno, node.body[0].value.col_offset))
    for lineno, col in sorted(starts, reverse=True):
        line = lines[lineno - 1]
        quote = len(line[col:]) - len(line[col:].lstrip("rRuU"))
        quote += 3 if line[col + quote:col + quote + 3] in ('"""', "'''") else 1
        lines[lineno - 1] = line[:col + quote] + "Edited, " + line[col + quote:]
    edited = "# A new first comment.\n" + "".join(lines) + "\n# A trailing comment.\n"
    path.write_text(edited)
    return edited != source and bool(starts)


def test_editing_docstrings_and_comments_of_any_module_reruns_nothing(study_copy):
    before = keys(study_copy)
    modules = sorted((study_copy / "lib" / "compstudy").rglob("*.py"))
    assert len(modules) > 20
    assert all(_edit_docstrings_and_comments(path) for path in modules)
    assert keys(study_copy) == before


@pytest.mark.parametrize("notebook, expected", [
    ("04_dcvit", {"04_dcvit"}),
    ("02_pruning_value", {"02_pruning_value"}),
    ("00_upstream", UPSTREAM_AND_DEPENDANTS),
])
def test_a_notebooks_markdown_changes_nothing_and_its_code_its_key(study_copy, notebook, expected):
    before = keys(study_copy)
    path = study_copy / "notebooks" / f"{notebook}.py"
    text = path.read_text()
    path.write_text(text.replace("# %% [markdown]\n# ", "# %% [markdown]\n# Edited prose. ", 1)
                    + "\n# %% [markdown]\n# A closing paragraph.\n\n# %%\n# a comment in code\n")
    assert path.read_text() != text and keys(study_copy) == before
    append(path, "\n# %%\nprint('one more line of code')\n")
    assert changed(before, keys(study_copy)) == expected


def test_upstream_runs_come_from_the_typed_configs():
    assert runner.upstream_runs("04_dcvit") == (("00_upstream", "main"),)
    assert runner.upstream_runs("02_pruning_value") == ()


def test_a_run_page_is_titled_short_with_its_run_and_subtitled_below():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 03 · SLS: layer-wise truncation of a ViT\nIntro."),
        nbformat.v4.new_code_cell("x = 1")])
    runner._label(nb, "03_sls", "alpha", "cpu")
    assert nb.cells[0].source == "# 03 · SLS · alpha (cpu)\nIntro."
    assert nb.cells[1].source.startswith("**Layer-wise truncation of a ViT.** *Run `alpha` of profile `cpu`.")
    plain = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# All claims")])
    runner._label(plain, "99_summary", "main", "smoke")
    assert plain.cells[0].source == "# All claims · main (smoke)\n"
    assert plain.cells[1].source.startswith("*Run `main`")


def test_each_run_waits_for_its_notebooks_earlier_runs_its_upstream_and_what_it_reads():
    waits = runner.schedule("smoke")
    assert list(waits)[0] == ("00_upstream", "main") and waits[("00_upstream", "main")] == ()
    assert waits[("03_sls", "alpha")] == (("03_sls", "main"), ("00_upstream", "main"))
    assert ("02_pruning_value", "main") not in waits[("03_sls", "main")]
    summary = [item for item in waits if item[0] == "99_summary"]
    assert set(waits[summary[0]]) == set(waits) - set(summary)  # it reads every claims.csv


def test_parallel_runs_start_only_after_what_they_wait_for_and_skip_what_a_failure_blocks(
        monkeypatch):
    import threading
    import time as clock

    waits = runner.schedule("smoke")
    started, finished, active, most_active = [], set(), set(), [0]
    lock = threading.Lock()

    def fake_run(notebook, run_name, profile, kernel):
        item = (notebook, run_name)
        with lock:
            assert set(waits[item]) <= finished, f"{item} started before {waits[item]}"
            assert kernel not in {k for _, k in active}, "two runs in one kernel at once"
            started.append(item)
            active.add((item, kernel))
            most_active[0] = max(most_active[0], len(active))
        clock.sleep(0.05)
        with lock:
            active.discard((item, kernel))
            finished.add(item)
        if item == ("03_sls", "main"):
            raise RuntimeError("simulated failure")
        return True

    kernels, environments = iter(range(100)), []
    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(runner, "shared_kernel", contextlib.contextmanager(
        lambda **env: environments.append(env) or (yield next(kernels))))
    with pytest.raises(RuntimeError) as failed:
        runner.run_all("smoke", jobs=2)
    report = str(failed.value)
    assert "03_sls/main: RuntimeError: simulated failure" in report
    assert "03_sls/alpha: not run: 03_sls/main failed" in report
    assert "99_summary/main: not run" in report
    assert ("03_sls", "alpha") not in started and ("04_dcvit", "update_all") in started
    assert most_active[0] == 2  # two at once, never more
    assert environments == [{"OMP_WAIT_POLICY": "PASSIVE"}] * 2  # idle OpenMP threads sleep
