"""Test isolation: generated files go to a temporary folder, CPU threads and bars fixed."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="compstudy-tests-"))
# Set before compstudy is imported, so in-process code and notebook kernels agree.
os.environ["COMPSTUDY_ARTIFACTS"] = str(_SESSION_TMP / "artifacts")
os.environ["COMPSTUDY_RESULTS"] = str(_SESSION_TMP / "results")
os.environ["TQDM_DISABLE"] = "1"
os.environ.setdefault("COMPSTUDY_THREADS", "2")


def copy_study(target: Path) -> Path:
    """A copy of the study's notebooks, configs and book, as a separate COMPSTUDY_ROOT."""
    for name in ("notebooks", "configs", "book"):
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("runs", "_build"))
    shutil.copy(REPO / "_config.yml", target / "_config.yml")
    return target


def study_env(root: Path, **extra: str) -> dict[str, str]:
    """Environment for a subprocess that sees ``root`` as the repository."""
    return {**os.environ, "COMPSTUDY_ROOT": str(root),
            "COMPSTUDY_RESULTS": str(root / "results"), **extra}


PYTHON = sys.executable


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return _SESSION_TMP
