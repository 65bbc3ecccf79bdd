"""Tests for compstudy.plots: atomic PNG output and the figure helpers' layout."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from compstudy import plots  # noqa: E402


@pytest.fixture
def fig():
    figure, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    yield figure
    plt.close(figure)


def test_save_figure_writes_png_atomically(tmp_path, fig):
    target = tmp_path / "sub" / "dir" / "line.png"
    assert plots.save_figure(fig, target, dpi=50) == target
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert mpimg.imread(target).ndim == 3
    assert [p.name for p in target.parent.iterdir()] == ["line.png"]  # no temp file left


def test_publish_renders_once_and_shows_and_glues_the_saved_png(tmp_path, fig, monkeypatch):
    import IPython.display
    import myst_nb

    shown, glued, renders = [], {}, []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    monkeypatch.setattr(myst_nb, "glue", lambda name, obj, display=True: glued.update({name: obj}))
    savefig = type(fig).savefig
    monkeypatch.setattr(type(fig), "savefig", lambda self, *a, **k: renders.append(1) or savefig(self, *a, **k))
    target = tmp_path / "line.png"
    assert plots.publish(fig, target, dpi=150) is None  # a cell ending with it shows no path
    assert len(renders) == 1 and not plt.fignum_exists(fig.number)
    assert shown[0].data == target.read_bytes() and not glued
    pixels = mpimg.imread(target).shape[1]  # shown at the page's resolution, not the file's
    assert shown[0].width == round(pixels * plots.DISPLAY_DPI / 150)
    other, ax = plt.subplots(figsize=(2, 2))
    plots.publish(other, tmp_path / "other.png", "other_figure")
    assert glued["other_figure"].data == (tmp_path / "other.png").read_bytes() and len(shown) == 1


def test_save_figure_failure_keeps_old_file(tmp_path, fig, monkeypatch):
    target = tmp_path / "line.png"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(fig, "savefig", boom)
    with pytest.raises(RuntimeError):
        plots.save_figure(fig, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["line.png"]


def test_image_grid_one_row_per_class():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(30) % 3
    figure = plots.image_grid(images, labels, ["a", "b", "c"], n_per_class=4, title="gallery")
    try:
        assert len(figure.axes) == 1
        ax = figure.axes[0]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
        # 3 rows x 4 columns of 8 px tiles with 2 px padding around each
        assert ax.images[0].get_array().shape[:2] == (3 * 10 + 2, 4 * 10 + 2)
    finally:
        plt.close(figure)
    with pytest.raises(ValueError):
        plots.image_grid(images.float(), labels, ["a", "b", "c"])


def test_training_curves_panel_per_metric():
    rows = [
        {"model": m, "epoch": e, "split": s, "metric": k, "value": v}
        for m in ("resnet18", "vit")
        for e in range(3)
        for s in ("train", "val")
        for k, v in (("loss", 1.0 / (e + 1)), ("accuracy", 0.3 * e))
    ]
    figure = plots.training_curves(pd.DataFrame(rows), title="curves")
    try:
        assert [ax.get_title() for ax in figure.axes] == ["loss", "accuracy"]
    finally:
        plt.close(figure)
    with pytest.raises(ValueError, match="split"):
        plots.training_curves(pd.DataFrame(rows).drop(columns="split"))


def test_set_style_sets_display_dpi_and_shows_table_cells_in_full():
    statement = "A claim whose statement runs well past pandas' default of fifty characters."
    with matplotlib.rc_context(), pd.option_context("display.max_colwidth", 50):
        assert statement not in pd.DataFrame({"statement": [statement]})._repr_html_()
        plots.set_style()
        assert matplotlib.rcParams["figure.dpi"] == 110
        assert statement in pd.DataFrame({"statement": [statement]})._repr_html_()
