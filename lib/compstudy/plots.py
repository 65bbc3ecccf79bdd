"""Figures for the book: one style, atomic PNG output, and the few plot types used repeatedly.

Functions return matplotlib Figures and never call ``plt.show``, so they work under any
backend (inline in notebooks, Agg in tests and papermill runs).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from .results import atomic_write_bytes

DISPLAY_DPI = 110


def set_style() -> None:
    """Apply the book-wide style: seaborn's notebook context, whitegrid and colour-blind
    palette, and tables whose cells are shown in full (pandas cuts them at 50 characters by
    default, which hid parameters and claim statements on the run pages)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind",
                  rc={"figure.dpi": DISPLAY_DPI})
    pd.set_option("display.max_colwidth", None)


def save_figure(fig: Figure, path: Path, dpi: int = 150) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and return the path.

    The figure is rendered in memory first, so a failed render leaves any existing file
    untouched, and a crash never leaves a half-written figure behind.
    """
    path = Path(path)
    atomic_write_bytes(path, _png(fig, dpi))
    return path


def _png(fig: Figure, dpi: int) -> bytes:
    """``fig`` rendered as PNG bytes (tight bounding box)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def publish(fig: Figure, path: Path, name: str | None = None, dpi: int = 150) -> None:
    """Save ``fig`` as PNG to ``path`` atomically, close it, and show those same PNG bytes on
    the page, glued as ``name`` for the chapter page when given.

    One render instead of three: saving, ``glue`` and the inline backend's display at the
    end of the cell would each draw the figure again (over a second for a 12-panel figure).
    The image is shown at the page's display resolution (``DISPLAY_DPI``). Returns nothing,
    so a cell that ends with it shows no path.
    """
    from IPython.display import Image, display
    from PIL import Image as PILImage

    png = _png(fig, dpi)
    atomic_write_bytes(Path(path), png)
    plt.close(fig)
    width = PILImage.open(io.BytesIO(png)).width
    image = Image(data=png, width=round(width * DISPLAY_DPI / dpi))
    if name is None:
        display(image)
    else:
        from myst_nb import glue

        glue(name, image)


def image_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    n_per_class: int = 6,
    classes: Sequence[int] | None = None,
    title: str | None = None,
    ax: plt.Axes | None = None,
) -> Figure:
    """Gallery of the first ``n_per_class`` images of each class, one row per class.

    ``images`` is an N×C×H×W uint8 tensor (C = 1 or 3), ``labels`` N class indices.
    ``classes`` picks the rows (default: the first 10 classes present). The grid is tiled
    into a single image on one Axes (new figure unless ``ax`` is given), rows named on the
    y axis; missing images in a short row are left white.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be an N×C×H×W uint8 tensor with C in (1, 3), got "
                         f"{images.dtype} {tuple(images.shape)}")
    labels = torch.as_tensor(labels).cpu()
    images = images.cpu().expand(-1, 3, -1, -1)
    if classes is None:
        classes = labels.unique().tolist()[:10]
    blank = torch.full_like(images[0], 255)
    tiles = []
    for c in classes:
        row = list(images[labels == c][:n_per_class])
        tiles += row + [blank] * (n_per_class - len(row))
    pad = 2
    grid = make_grid(torch.stack(tiles), nrow=n_per_class, padding=pad, pad_value=255)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 * n_per_class + 1.5, 1.0 * len(classes) + 0.5))
    h = images.shape[2] + pad
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_yticks([pad + h * i + (h - pad) / 2 for i in range(len(classes))],
                  [class_names[c] for c in classes])
    ax.set_xticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    return ax.figure


def training_curves(
    history: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    height: float = 3.0,
) -> Figure:
    """Learning curves: one panel per metric, colour = model, line style = split.

    ``history`` is long-form with columns model, epoch, split ("train"/"val"), metric
    ("loss"/"accuracy"), value. Repeated rows (e.g. seeds) are drawn as mean ± 1 sd.
    Panels have independent y axes since loss and accuracy share no scale.
    """
    missing = {"model", "epoch", "split", "metric", "value"} - set(history.columns)
    if missing:
        raise ValueError(f"history lacks columns {sorted(missing)}")
    if metrics is None:
        present = list(history["metric"].unique())
        metrics = [m for m in ("loss", "accuracy") if m in present] + \
                  [m for m in present if m not in ("loss", "accuracy")]
    grid = sns.relplot(data=history[history["metric"].isin(metrics)], x="epoch", y="value",
                       hue="model", style="split", col="metric", col_order=list(metrics),
                       kind="line", errorbar="sd", height=height, aspect=1.3,
                       facet_kws={"sharey": False})
    grid.set_titles("{col_name}")
    grid.set_ylabels("")
    if title:
        grid.figure.suptitle(title, y=1.03)
    return grid.figure
