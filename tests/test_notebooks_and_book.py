"""Every notebook under the smoke profile, then an offline book build from its outputs."""

import ast
import re
import subprocess

import nbformat
import pytest

from compstudy import config
from compstudy.studies import summary

from conftest import PYTHON, REPO, study_env

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_stay_thin(path):
    """No algorithm lives only in a notebook: no def/class, no machine paths, no .cuda()."""
    source = path.read_text()
    tree = ast.parse(source)
    defined = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defined == [], f"move {defined} into compstudy"
    assert ".cuda()" not in source
    assert not re.search(r"['\"]/(home|data|root|scratch)/", source)
    assert re.search(r'# %% tags=\["parameters"\]', source)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", config.notebook_names())
def test_notebook_ran_under_smoke_without_errors(smoke_book, notebook):
    for run in config.run_names("smoke", notebook):
        executed = nbformat.read(smoke_book / "book" / "runs" / notebook / f"{run}.ipynb", 4)
        assert executed.metadata["compstudy"]["profile"] == "smoke"
        outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.output_type == "error"]
        stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
        assert not stderr, f"fix these warnings at their source: {stderr}"
        if notebook == summary.Config.NOTEBOOK:  # it reads results and draws nothing
            continue
        assert any("image/png" in o.get("data", {}) for o in outputs), "no figure in the run"
        results = smoke_book / "results" / "smoke" / notebook / run
        assert (results / "runs.csv").exists() and list((results / "figures").glob("*.png"))


@pytest.mark.slow
def test_book_contains_the_figures_and_loads_nothing_from_the_network(smoke_book):
    html = smoke_book / "_build" / "html"
    page = html / "runs" / "00_upstream" / "main.html"
    assert page.exists()
    text = page.read_text()
    assert len(re.findall(r"<img[^>]+src=\"[^\"]+\.png\"", text)) >= 4  # targets, throughput, probes, distances
    for document in html.rglob("*.html"):
        content = document.read_text()
        external = re.findall(r"<(?:script|link|img|iframe)[^>]+(?:src|href)=\"(?:https?:)?//", content)
        assert not external, f"{document} loads {external[:3]}"
    assert (html / "_static" / "mathjax").exists(), "MathJax must be served locally"


@pytest.mark.slow
def test_second_run_with_nothing_changed_skips_everything(smoke_book):
    done = subprocess.run([PYTHON, "-m", "compstudy.runner", "all", "--profile", "smoke"],
                          capture_output=True, text=True, env=study_env(smoke_book), timeout=300)
    assert done.returncode == 0 and "[run ]" not in done.stdout and "[skip]" in done.stdout
