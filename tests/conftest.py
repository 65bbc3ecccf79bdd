"""Test isolation: generated files go to a temporary folder, CPU threads and bars fixed."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="compstudy-tests-"))
# Set before compstudy is imported, so in-process code and notebook kernels agree.
os.environ["COMPSTUDY_ARTIFACTS"] = str(_SESSION_TMP / "artifacts")
os.environ["COMPSTUDY_RESULTS"] = str(_SESSION_TMP / "results")
os.environ["TQDM_DISABLE"] = "1"
os.environ["COMPSTUDY_OFFLINE"] = "1"  # nothing may download in the tests
os.environ.setdefault("COMPSTUDY_THREADS", "2")


def copy_study(target: Path) -> Path:
    """A copy of the study's notebooks, configs and book, as a separate COMPSTUDY_ROOT."""
    for name in ("notebooks", "configs", "book"):
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("runs", "_build"))
    shutil.copy(REPO / "_config.yml", target / "_config.yml")
    return target


def study_env(root: Path, **extra: str) -> dict[str, str]:
    """Environment for a subprocess that sees ``root`` as the repository.

    The copy has no ``../shared/mirror`` beside it, so it is handed this checkout's mirror.
    """
    from compstudy import assets

    mirror = assets.mirror_dir()
    return {**os.environ, "COMPSTUDY_ROOT": str(root), "COMPSTUDY_RESULTS": str(root / "results"),
            **({"COMPSTUDY_MIRROR": str(mirror)} if mirror else {}), **extra}


PYTHON = sys.executable
JUPYTER_BOOK = str(Path(PYTHON).with_name("jupyter-book"))


def build_book(root: Path) -> None:
    """``jupyter-book build`` of the copy at ``root``, offline, with ``-n -W --keep-going``."""
    build = subprocess.run([JUPYTER_BOOK, "build", str(root / "book"), "-n", "-W", "--keep-going"],
                           capture_output=True, text=True, env=study_env(root), timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]


def run_all(root: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Every run of the copy at ``root`` under ``smoke``, two at a time as ``make book`` does."""
    return subprocess.run([PYTHON, "-m", "compstudy.runner", "all", "--profile", "smoke",
                           "--jobs", "2"],
                          capture_output=True, text=True, env=study_env(root), timeout=timeout)


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """Run every notebook of the study under `smoke` in a copy of the repo, then build the book."""
    root = copy_study(tmp_path_factory.mktemp("study"))
    start = time.perf_counter()
    runs = run_all(root)
    run_seconds = time.perf_counter() - start
    assert runs.returncode == 0, runs.stdout + runs.stderr
    build_book(root)
    print(f"smoke runs {run_seconds:.0f} s")
    return root


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return _SESSION_TMP


@pytest.fixture
def clocked(monkeypatch):
    """A factory of modules that advance a fake ``perf_counter`` (the one
    ``compstudy.metrics`` reads) by the next of their ``durations`` at every forward, so that
    timing code can be tested to the exact ratio."""
    import torch

    from compstudy import metrics

    clock = [0.0]
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: clock[0])

    class Clocked(torch.nn.Module):
        def __init__(self, durations):
            super().__init__()
            self.durations = iter(durations)

        def forward(self, x):
            clock[0] += next(self.durations)
            return x

    return Clocked
