"""One root for every path: notebooks never build paths from the working directory."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(os.environ.get("COMPSTUDY_ROOT", Path(__file__).resolve().parents[2]))
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
CONFIGS_DIR = REPO_ROOT / "configs"
BOOK_DIR = REPO_ROOT / "book"
RUNS_DIR = BOOK_DIR / "runs"  # executed notebooks, where the book reads them
RESULTS_DIR = Path(os.environ.get("COMPSTUDY_RESULTS", REPO_ROOT / "results"))
ARTIFACTS_DIR = Path(os.environ.get("COMPSTUDY_ARTIFACTS", REPO_ROOT / "artifacts"))


def data_root() -> Path:
    """Folder of the real (torchvision) datasets: ``$DATA_ROOT``, else ``<repo>/data``."""
    return Path(os.environ.get("DATA_ROOT", REPO_ROOT / "data"))


def display_path(path: Path) -> str:
    """``path`` relative to the repository when inside it: how messages name files."""
    try:
        return str(Path(path).relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
