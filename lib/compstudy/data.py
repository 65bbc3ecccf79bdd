"""Data suite: an offline, seeded stand-in for ImageNet -> downstream transfer, plus real sets.

Every image is 32x32 RGB ``uint8``. Four procedurally generated sets form a ladder of
distance from the upstream (source) task:

``source``
    100 classes = 10 filled shape families x 10 styles (palette + texture). A class needs
    both its shape and its style, so features must capture outline, texture and colour.
    Each image varies position, scale, rotation, aspect, colour, lighting, background
    (random colour with low-frequency clutter), distractor strokes/blobs and pixel noise.
``near``
    10 *new* shape families drawn by the same renderer with the source styles, backgrounds
    and clutter; the class is the shape, the style is a nuisance.
``middle``
    10 full-frame texture classes (stripe orientations, checks, dot grids, speckle,
    rings, waves, blobs, grid lines) in random colours: no objects at all.
``far``
    10 monochrome letter-like glyphs (A C E H K L M T X Z) drawn as jittered strokes.

``source10`` is ``source`` relabelled by style alone (10 classes; the shape becomes a
nuisance): the suite's 10-class version of the source data, beside the 100-class ``source``,
as CIFAR-10 beside CIFAR-100 (chapter 2 trains from scratch on both).

``digits`` is scikit-learn's bundled 8x8 digits, upsampled. The torchvision sets in
:data:`TORCHVISION_DATASETS` are read from ``$DATA_ROOT/<name>/`` and never downloaded.

Synthetic and torchvision sets are cached under ``ARTIFACTS_DIR / "datasets"`` (see
:func:`cache_path`; digits is rebuilt, it takes milliseconds); a cache hit returns exactly
the tensors a fresh generation would.
"""

from __future__ import annotations

import hashlib
import io
import math
import numbers
import os
import pickle
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from compstudy.errors import ConfigError, unknown_choice
from compstudy.paths import ARTIFACTS_DIR, data_root
from compstudy.results import atomic_write_bytes

GENERATOR_VERSION = 1  # bump whenever generated pixels (or real-set conversion) change
SIZE = 32
SPLITS = ("train", "test")
SYNTHETIC: tuple[str, ...] = ("source", "near", "middle", "far")
SOURCE10 = "source10"  # `source` labelled by style only, see the module docstring
GENERATED: tuple[str, ...] = SYNTHETIC + (SOURCE10,)  # sets that need per_class and seed
OFFLINE_DATASETS: tuple[str, ...] = GENERATED + ("digits",)

# Per-channel mean/std of the `source` train set (per_class=120, seed 0), rounded. Every
# dataset is normalised with these upstream statistics, as ImageNet stats are used downstream.
MEAN: tuple[float, float, float] = (0.505, 0.489, 0.488)
STD: tuple[float, float, float] = (0.285, 0.280, 0.285)


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A labelled image set: ``images`` uint8 N x 3 x H x W, ``labels`` int64 N."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"{self.name}: images must be uint8 N x 3 x H x W")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"{self.name}: labels must be int64 with one label per image")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"ImageSet({self.name!r}, {len(self)} images, {len(self.classes)} classes)"

    def subset(self, indices) -> ImageSet:
        """The images at integer ``indices`` (list, array or tensor), same name and classes."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(self.name, self.images[idx], self.labels[idx], self.classes)

    def class_counts(self) -> torch.Tensor:
        """Images per class, indexed by label (zeros for empty classes)."""
        return torch.bincount(self.labels, minlength=len(self.classes))


# ----------------------------------------------------------------------------- geometry
# Signed distance functions (negative inside) over broadcastable coordinate arrays. Shapes
# live in object units (radius about 1); anti-aliased coverage is clip(0.5 - d * px_per_unit).

_YY, _XX = (np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5)


def _box(u, v, bx, by, cx=0.0, cy=0.0):
    qx, qy = np.abs(u - cx) - bx, np.abs(v - cy) - by
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _circle(u, v, r, cx=0.0, cy=0.0):
    return np.hypot(u - cx, v - cy) - r


def _segment(u, v, ax, ay, bx, by):
    """Distance to the segment a-b; endpoints broadcast against the coordinates."""
    dx, dy, px, py = bx - ax, by - ay, u - ax, v - ay
    h = np.clip((px * dx + py * dy) / np.maximum(dx * dx + dy * dy, 1e-6), 0, 1)
    return np.hypot(px - h * dx, py - h * dy)


def _polyline(u, v, pts, half_width):
    return np.minimum.reduce(
        [_segment(u, v, *a, *b) for a, b in zip(pts[:-1], pts[1:])]
    ) - half_width


def _convex(u, v, verts):
    """Convex polygon with counter-clockwise vertices (exact inside, a bound outside)."""
    ds = []
    for (ax, ay), (bx, by) in zip(verts, verts[1:] + verts[:1]):
        nx, ny = by - ay, ax - bx  # outward normal of a CCW edge
        norm = np.hypot(nx, ny)
        ds.append(((u - ax) * nx + (v - ay) * ny) / norm)
    return np.maximum.reduce(ds)


def _star(u, v, r=1.0, n=5, m=3.2):
    """Inigo Quilez's n-pointed star; m in [2, n] sets how deep the notches are."""
    an, en = np.pi / n, np.pi / m
    acx, acy, ecx, ecy = np.cos(an), np.sin(an), np.cos(en), np.sin(en)
    bn = np.mod(np.arctan2(u, v), 2 * an) - an
    rad = np.hypot(u, v)
    px, py = rad * np.cos(bn) - r * acx, rad * np.abs(np.sin(bn)) - r * acy
    h = np.clip(-(px * ecx + py * ecy), 0, r * acy / ecy)
    px, py = px + ecx * h, py + ecy * h
    return np.hypot(px, py) * np.sign(px)


def _arc(r, a0, a1, k=9):
    t = np.linspace(a0, a1, k)
    return list(zip(r * np.cos(t), r * np.sin(t)))


def _bars(u, v):
    vq = v - 0.62 * np.clip(np.round(v / 0.62), -1, 1)
    return _box(u, vq, 0.85, 0.17)


SOURCE_SHAPES: dict[str, Callable] = {
    "disc": lambda u, v: _circle(u, v, 0.9),
    "square": lambda u, v: _box(u, v, 0.75, 0.75),
    "triangle": lambda u, v: _convex(u, v, [(0.0, 1.05), (-0.95, -0.6), (0.95, -0.6)]),
    "ring": lambda u, v: np.abs(np.hypot(u, v) - 0.68) - 0.24,
    "cross": lambda u, v: np.minimum(_box(u, v, 0.9, 0.26), _box(u, v, 0.26, 0.9)),
    "star": lambda u, v: _star(u, v, 1.05),
    "bars": _bars,
    "crescent": lambda u, v: np.maximum(_circle(u, v, 0.9), -_circle(u, v, 0.72, 0.45, 0.1)),
    "diamond": lambda u, v: (np.abs(u) * 0.5 + np.abs(v) * 0.95 - 0.95 * 0.5) / np.hypot(0.5, 0.95),
    "L-shape": lambda u, v: np.minimum(_box(u, v, 0.25, 0.85, -0.45), _box(u, v, 0.7, 0.25, 0.0, -0.6)),
}

NEAR_SHAPES: dict[str, Callable] = {
    "heart": lambda u, v: np.minimum.reduce([
        _circle(u, v, 0.45, -0.4, 0.3), _circle(u, v, 0.45, 0.4, 0.3),
        _convex(u, v, [(-0.82, 0.2), (0.0, -0.95), (0.82, 0.2)])]),
    "arrow": lambda u, v: np.minimum(
        _box(u, v, 0.45, 0.16, -0.4), _convex(u, v, [(0.0, 0.62), (0.0, -0.62), (0.95, 0.0)])),
    "semicircle": lambda u, v: np.maximum(_circle(u, v, 0.95, 0.0, -0.4), -(v + 0.4)),
    "T-shape": lambda u, v: np.minimum(_box(u, v, 0.85, 0.2, 0.0, 0.65), _box(u, v, 0.2, 0.65, 0.0, -0.2)),
    "hourglass": lambda u, v: np.maximum(np.abs(v) - 0.85, (np.abs(u) - 0.1 - 0.8 * np.abs(v)) / np.hypot(1, 0.8)),
    "chevron": lambda u, v: _polyline(u, v, [(-0.75, 0.45), (0.0, -0.35), (0.75, 0.45)], 0.22),
    "ellipse": lambda u, v: (np.hypot(u / 0.95, v / 0.42) - 1) * 0.42,
    "frame": lambda u, v: np.abs(_box(u, v, 0.66, 0.66)) - 0.16,
    "three-dots": lambda u, v: np.minimum.reduce(
        [_circle(u, v, 0.3, 0.6 * np.cos(a), 0.6 * np.sin(a)) for a in np.radians([90, 210, 330])]),
    "U-arc": lambda u, v: _polyline(u, v, _arc(0.65, np.pi, 2 * np.pi), 0.2),
}

# ------------------------------------------------------------------------------ styles
_COLOURS = {
    "red": (0.85, 0.12, 0.10), "blue": (0.12, 0.25, 0.85), "yellow": (0.95, 0.85, 0.15),
    "green": (0.15, 0.65, 0.20), "black": (0.06, 0.06, 0.06), "white": (0.95, 0.95, 0.95),
    "magenta": (0.85, 0.15, 0.75), "orange": (0.95, 0.55, 0.10), "purple": (0.45, 0.15, 0.60),
    "cyan": (0.15, 0.80, 0.85), "brown": (0.50, 0.30, 0.12),
}
# (texture, colour a, colour b). Pairs share a texture or a palette, so neither alone
# identifies a style.
SOURCE_STYLES: dict[str, tuple[str, str, str]] = {
    "red-solid": ("solid", "red", "red"),
    "blue-solid": ("solid", "blue", "blue"),
    "yellow-blue-stripes": ("stripes", "yellow", "blue"),
    "red-green-stripes": ("stripes", "red", "green"),
    "black-white-checks": ("checks", "black", "white"),
    "yellow-blue-checks": ("checks", "yellow", "blue"),
    "green-magenta-dots": ("dots", "green", "magenta"),
    "orange-purple-gradient": ("gradient", "orange", "purple"),
    "cyan-brown-noise": ("noise", "cyan", "brown"),
    "white-red-rings": ("rings", "white", "red"),
}


def _unif(rng, lo, hi, n):
    """n uniform draws shaped n x 1 x 1, to broadcast against n x H x W images."""
    return rng.uniform(lo, hi, n).astype(np.float32)[:, None, None]


@cache
def _upsample_matrix(cells: int) -> np.ndarray:
    """SIZE x cells matrix doing 1-D bilinear (align_corners=False) upsampling."""
    pos = np.clip((np.arange(SIZE) + 0.5) * cells / SIZE - 0.5, 0, cells - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, cells - 1)
    m = np.zeros((SIZE, cells), np.float32)
    np.add.at(m, (np.arange(SIZE), lo), 1 - (pos - lo))
    np.add.at(m, (np.arange(SIZE), hi), pos - lo)
    return m


def _smooth_field(rng, shape, cells):
    """Random smooth field in [0, 1]: a cells x cells uniform grid, bilinearly upsampled."""
    m = _upsample_matrix(cells)
    return m @ rng.random((*shape, cells, cells), dtype=np.float32) @ m.T


def _rotated(x, y, angle):
    c, s = np.cos(angle), np.sin(angle)
    return c * x + s * y, -s * x + c * y


def _sharp(s, gain):
    """Map a wave in [-1, 1] to a [0, 1] pattern with sharper edges."""
    return np.clip(0.5 + gain * s, 0, 1)


def _lattice_dist(x, y, period):
    """Distance to the nearest point of a square lattice with the given period."""
    fx, fy = x / period, y / period
    return np.hypot(fx - np.round(fx), fy - np.round(fy)) * period


def _texture(kind, rng, x, y, radius):
    """Object texture in [0, 1] from object-aligned pixel coordinates (n x H x W)."""
    n = len(x)
    x, y = _rotated(x, y, _unif(rng, 0, 2 * np.pi, n))
    phase = _unif(rng, 0, 2 * np.pi, n)
    if kind == "solid":
        return np.zeros_like(x)
    if kind == "stripes":
        return _sharp(np.sin(2 * np.pi * x / _unif(rng, 3.5, 6.0, n) + phase), 2.0)
    if kind == "checks":
        p = _unif(rng, 5.0, 8.0, n)
        return _sharp(np.sin(2 * np.pi * x / p + phase) * np.sin(2 * np.pi * y / p), 4.0)
    if kind == "dots":
        return np.clip(_unif(rng, 1.1, 1.7, n) + 0.5 - _lattice_dist(x, y, _unif(rng, 4.5, 6.5, n)), 0, 1)
    if kind == "gradient":
        return np.clip(0.5 + 0.6 * x / radius, 0, 1)
    if kind == "noise":
        return _sharp(_smooth_field(rng, (n,), 8) - 0.5, 3.0)
    if kind == "rings":
        return _sharp(np.sin(2 * np.pi * np.hypot(x, y) / _unif(rng, 3.5, 5.5, n) + phase), 2.0)
    raise AssertionError(kind)


def _jitter_colour(rng, name, n):
    col = np.asarray(_COLOURS[name], np.float32)
    col = (col + rng.normal(0, 0.05, (n, 3))) * rng.uniform(0.85, 1.1, (n, 1))
    return col.astype(np.float32)[:, :, None, None]


def _paint(rng, styles: np.ndarray, x, y, radius):
    """Colour (n x 3 x H x W) of objects whose per-image style index is ``styles``."""
    out = np.empty((len(styles), 3, SIZE, SIZE), np.float32)
    names = list(SOURCE_STYLES)
    for s in np.unique(styles):
        idx = np.flatnonzero(styles == s)
        kind, a, b = SOURCE_STYLES[names[s]]
        t = _texture(kind, rng, x[idx], y[idx], radius[idx])[:, None]
        out[idx] = _jitter_colour(rng, a, len(idx)) * (1 - t) + _jitter_colour(rng, b, len(idx)) * t
    return out


def _background(rng, n):
    """Random base colour plus low-frequency colour clutter."""
    base = rng.random((n, 3, 1, 1), dtype=np.float32)
    amp = rng.uniform(0.15, 0.5, (n, 1, 1, 1)).astype(np.float32)
    return base + amp * (_smooth_field(rng, (n, 3), 4) - 0.5)


def _blend(img, alpha, colour):
    alpha = alpha[:, None]
    return img * (1 - alpha) + colour * alpha


def _strokes(rng, img, count, p_present, line_only=False):
    """Overlay up to ``count`` random capsules per image: thin lines or small blobs."""
    n = len(img)
    for _ in range(count):
        is_line = rng.random(n) < (1.0 if line_only else 0.6)
        x0, y0 = _unif(rng, 0, SIZE, n), _unif(rng, 0, SIZE, n)
        ang = _unif(rng, 0, 2 * np.pi, n)
        length = np.where(is_line, rng.uniform(6, 15, n), 0).astype(np.float32)[:, None, None]
        half = np.where(is_line, rng.uniform(0.5, 1.0, n), rng.uniform(1.5, 3.2, n))
        half = half.astype(np.float32)[:, None, None]
        d = _segment(_XX, _YY, x0, y0, x0 + length * np.cos(ang), y0 + length * np.sin(ang)) - half
        alpha = np.clip(0.5 - d, 0, 1) * (rng.random(n) < p_present)[:, None, None]
        img = _blend(img, alpha, rng.random((n, 3, 1, 1), dtype=np.float32))
    return img


def _finish(rng, img):
    """Global contrast/brightness jitter and pixel noise, then quantise to uint8."""
    n = len(img)
    c = rng.uniform(0.8, 1.1, (n, 1, 1, 1)).astype(np.float32)
    b = rng.uniform(-0.08, 0.08, (n, 1, 1, 1)).astype(np.float32)
    sigma = rng.uniform(0.0, 0.05, (n, 1, 1, 1)).astype(np.float32)
    img = (img - 0.5) * c + 0.5 + b + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _render_objects(rng, sdf, styles: np.ndarray) -> np.ndarray:
    """Scenes of one shape family: background, distractors, the styled object, an occluder."""
    n = len(styles)
    img = _strokes(rng, _background(rng, n), count=3, p_present=0.6)
    radius = _unif(rng, 7.5, 12.0, n)
    reach = SIZE / 2 - 0.8 * radius
    cx = SIZE / 2 + reach * _unif(rng, -1, 1, n)
    cy = SIZE / 2 + reach * _unif(rng, -1, 1, n)
    aspect = _unif(rng, 0.85, 1.15, n)
    x, y = _rotated(_XX - cx, _YY - cy, _unif(rng, 0, 2 * np.pi, n))
    u, v = x / (radius * aspect), y * aspect / radius
    alpha = np.clip(0.5 - sdf(u, v) * radius, 0, 1)
    lx, _ = _rotated(u, v, _unif(rng, 0, 2 * np.pi, n))
    light = 1 + _unif(rng, 0, 0.25, n) * lx
    img = _blend(img, alpha, _paint(rng, styles, x, y, radius) * light[:, None])
    return _finish(rng, _strokes(rng, img, count=1, p_present=0.25, line_only=True))


def _gen_source(rng, per_class):
    shapes, styles = list(SOURCE_SHAPES), list(SOURCE_STYLES)
    classes = [f"{sh}/{st}" for sh in shapes for st in styles]
    images = [
        _render_objects(rng, SOURCE_SHAPES[sh], np.full(per_class, j))
        for sh in shapes for j, _ in enumerate(styles)
    ]
    return images, classes


def _gen_near(rng, per_class):
    images = [
        _render_objects(rng, sdf, rng.integers(0, len(SOURCE_STYLES), per_class))
        for sdf in NEAR_SHAPES.values()
    ]
    return images, list(NEAR_SHAPES)


# ----------------------------------------------------------------------- middle: textures
def _tex_stripes(angle_deg, either_sign=False):
    def f(rng, x, y, n):
        sign = np.where(rng.random(n) < 0.5, 1, -1)[:, None, None] if either_sign else 1
        ang = sign * np.radians(angle_deg) + _unif(rng, -0.17, 0.17, n)
        _, yr = _rotated(x, y, ang)
        return _sharp(np.sin(2 * np.pi * yr / _unif(rng, 4.0, 8.0, n) + _unif(rng, 0, 6.3, n)), 2.0)
    return f


def _tex_checks(rng, x, y, n):
    x, y = _rotated(x, y, _unif(rng, -0.17, 0.17, n))
    p = _unif(rng, 6.0, 10.0, n)
    wx = np.sin(2 * np.pi * x / p + _unif(rng, 0, 6.3, n))
    return _sharp(wx * np.sin(2 * np.pi * y / p + _unif(rng, 0, 6.3, n)), 4.0)


def _tex_dot_grid(rng, x, y, n):
    x, y = _rotated(x + _unif(rng, 0, 9, n), y + _unif(rng, 0, 9, n), _unif(rng, -0.17, 0.17, n))
    return np.clip(_unif(rng, 1.2, 2.0, n) + 0.5 - _lattice_dist(x, y, _unif(rng, 5.0, 8.0, n)), 0, 1)


def _tex_speckle(rng, x, y, n):
    m = _upsample_matrix(16)
    dots = (rng.random((n, 16, 16)) < _unif(rng, 0.06, 0.14, n)).astype(np.float32)
    return np.clip(2 * (m @ dots @ m.T), 0, 1)


def _tex_rings(rng, x, y, n):
    r = np.hypot(x - _unif(rng, -12, 12, n), y - _unif(rng, -12, 12, n))
    return _sharp(np.sin(2 * np.pi * r / _unif(rng, 4.0, 7.0, n) + _unif(rng, 0, 6.3, n)), 2.0)


def _tex_waves(rng, x, y, n):
    x, y = _rotated(x, y, _unif(rng, -0.17, 0.17, n))
    y = y + _unif(rng, 1.5, 3.0, n) * np.sin(2 * np.pi * x / _unif(rng, 9, 15, n) + _unif(rng, 0, 6.3, n))
    return _sharp(np.sin(2 * np.pi * y / _unif(rng, 5.0, 8.0, n) + _unif(rng, 0, 6.3, n)), 2.0)


def _tex_blobs(rng, x, y, n):
    return _sharp(_smooth_field(rng, (n,), 6) - 0.5, 4.0)


def _tex_grid_lines(rng, x, y, n):
    x, y = _rotated(x + _unif(rng, 0, 9, n), y + _unif(rng, 0, 9, n), _unif(rng, -0.17, 0.17, n))
    p, w = _unif(rng, 6.0, 9.0, n), _unif(rng, 0.8, 1.4, n)
    dx, dy = np.abs(x / p - np.round(x / p)) * p, np.abs(y / p - np.round(y / p)) * p
    return np.clip(w + 0.5 - np.minimum(dx, dy), 0, 1)


MIDDLE_TEXTURES: dict[str, Callable] = {
    "horizontal-stripes": _tex_stripes(0),
    "vertical-stripes": _tex_stripes(90),
    "diagonal-stripes": _tex_stripes(45, either_sign=True),  # either diagonal: a mirror flip maps one to the other
    "checks": _tex_checks,
    "dot-grid": _tex_dot_grid,
    "speckle": _tex_speckle,
    "rings": _tex_rings,
    "waves": _tex_waves,
    "blobs": _tex_blobs,
    "grid-lines": _tex_grid_lines,
}


def _gen_middle(rng, per_class):
    n, x, y = per_class, _XX - SIZE / 2, _YY - SIZE / 2
    images = []
    for tex in MIDDLE_TEXTURES.values():
        t = tex(rng, x, y, n)[:, None]
        a = rng.random((n, 3, 1, 1), dtype=np.float32)
        b = rng.random((n, 3, 1, 1), dtype=np.float32)
        close = np.abs(a - b).sum(1, keepdims=True) < 0.6
        b = np.where(close, 1 - a, b)  # keep the two colours apart
        light = 1 + rng.uniform(0.1, 0.4, (n, 1, 1, 1)).astype(np.float32) * (_smooth_field(rng, (n, 1), 3) - 0.5)
        images.append(_finish(rng, (a * (1 - t) + b * t) * light))
    return images, list(MIDDLE_TEXTURES)


# --------------------------------------------------------------------------- far: glyphs
_L, _R, _T, _B = -0.6, 0.6, 0.9, -0.9
GLYPHS: dict[str, list[list[tuple[float, float]]]] = {
    "A": [[(-0.7, _B), (0.0, _T), (0.7, _B)], [(-0.38, -0.1), (0.38, -0.1)]],
    "C": [_arc(0.85, np.radians(50), np.radians(310))],
    "E": [[(_R, _T), (_L, _T), (_L, _B), (_R, _B)], [(_L, 0.0), (0.4, 0.0)]],
    "H": [[(_L, _T), (_L, _B)], [(_R, _T), (_R, _B)], [(_L, 0.0), (_R, 0.0)]],
    "K": [[(_L, _T), (_L, _B)], [(_R, _T), (_L, -0.05), (_R, _B)]],
    "L": [[(_L, _T), (_L, _B), (_R, _B)]],
    "M": [[(-0.7, _B), (-0.7, _T), (0.0, -0.1), (0.7, _T), (0.7, _B)]],
    "T": [[(-0.75, _T), (0.75, _T)], [(0.0, _T), (0.0, _B)]],
    "X": [[(-0.7, _T), (0.7, _B)], [(0.7, _T), (-0.7, _B)]],
    "Z": [[(_L, _T), (_R, _T), (_L, _B), (_R, _B)]],
}  # no glyph is another's mirror image, so horizontal-flip augmentation keeps classes apart


def _render_glyphs(rng, strokes, n):
    verts = np.asarray([p for line in strokes for p in line], np.float32)
    starts = np.cumsum([0] + [len(line) for line in strokes])
    seg = np.asarray([(s + i, s + i + 1) for s, line in zip(starts, strokes) for i in range(len(line) - 1)])
    pts = verts[None] + rng.normal(0, 0.06, (n, len(verts), 2)).astype(np.float32)
    pts[..., 0] = pts[..., 0] * rng.uniform(0.85, 1.15, (n, 1)) + pts[..., 1] * rng.uniform(-0.25, 0.25, (n, 1))
    ang = rng.uniform(-0.2, 0.2, (n, 1))
    scale = rng.uniform(9.0, 12.5, (n, 1))
    px = scale * (np.cos(ang) * pts[..., 0] - np.sin(ang) * pts[..., 1]) + 16 + rng.uniform(-3, 3, (n, 1))
    py = 16 + rng.uniform(-3, 3, (n, 1)) - scale * (np.sin(ang) * pts[..., 0] + np.cos(ang) * pts[..., 1])
    ends = [a[:, seg[:, i], None, None].astype(np.float32) for i in (0, 1) for a in (px, py)]  # n x S x 1 x 1
    d = _segment(_XX, _YY, *ends).min(1)
    ink = np.clip(_unif(rng, 0.7, 1.4, n) + 0.5 - d, 0, 1)
    paper = _unif(rng, 0.7, 1.0, n) + 0.12 * (_smooth_field(rng, (n,), 4) - 0.5)
    grey = paper + (_unif(rng, 0.0, 0.3, n) - paper) * ink
    grey = np.where(rng.random((n, 1, 1)) < 0.3, 1 - grey, grey)  # some light-on-dark
    return _finish(rng, np.repeat(grey[:, None], 3, axis=1))


def _gen_far(rng, per_class):
    return [_render_glyphs(rng, s, per_class) for s in GLYPHS.values()], list(GLYPHS)


_GENERATORS = {"source": _gen_source, "near": _gen_near, "middle": _gen_middle, "far": _gen_far}


def _generate(name: str, split: str, per_class: int, seed: int) -> ImageSet:
    """Render ``per_class`` images of each class from the stream of (name, split, seed)."""
    rng = np.random.default_rng([seed % 2**63, zlib.crc32(name.encode()), SPLITS.index(split), GENERATOR_VERSION])
    chunks, classes = _GENERATORS[name](rng, per_class)
    images = np.concatenate(chunks)
    labels = np.repeat(np.arange(len(chunks)), per_class)
    order = rng.permutation(len(labels))  # interleave classes: no class-sorted prefixes
    return ImageSet(name, torch.from_numpy(images[order]), torch.from_numpy(labels[order]), tuple(classes))


# ------------------------------------------------------------------------------ real sets
def _stratified_split(labels: np.ndarray, split: str, test_fraction: float = 0.3) -> np.ndarray:
    """Indices of ``split`` in a fixed (seed 0) stratified split, for sets shipped unsplit."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=0
    )
    return np.sort(train if split == "train" else test)


def _load_digits(split: str) -> ImageSet:
    """scikit-learn's 8x8 digits, bilinearly upsampled to 32x32 grey replicated to RGB."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float()[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    idx = torch.from_numpy(_stratified_split(d.target, split))
    return ImageSet("digits", images[idx], torch.from_numpy(d.target).long()[idx], tuple(map(str, range(10))))


def _read_cifar(tv_class: str):
    """Reader for the CIFAR python-pickle layout (file names taken from torchvision).

    Read directly rather than through torchvision, which insists on the md5 of every batch
    file; the arrays are already 32x32, so no per-image conversion is needed either.
    """
    def read(root: Path, split: str):
        import torchvision.datasets as tvd

        cls = getattr(tvd, tv_class)
        folder = root / cls.base_folder

        def unpickle(path):
            with open(folder / path, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}

        parts = [unpickle(f) for f, _ in (cls.train_list if split == "train" else cls.test_list)]
        images = np.concatenate([np.asarray(p["data"], np.uint8).reshape(-1, 3, SIZE, SIZE) for p in parts])
        labels = np.concatenate([p.get("labels", p.get("fine_labels")) for p in parts])
        names = unpickle(cls.meta["filename"])[cls.meta["key"]]
        return images, labels, [n.decode() if isinstance(n, bytes) else n for n in names]
    return read


def _read_torchvision(tv_class: str, split_kwargs: dict[str, dict] | None):
    """Reader through a torchvision dataset class: each image to RGB, resized to 32x32.

    ``split_kwargs`` maps our split to constructor arguments; None means the set ships
    unsplit, and a fixed stratified 70/30 split is drawn.
    """
    def read(root: Path, split: str):
        import torchvision.datasets as tvd
        from PIL import Image

        def to_array(img):
            return np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))

        kwargs = split_kwargs[split] if split_kwargs else {}
        ds = getattr(tvd, tv_class)(str(root), download=False, transform=to_array, **kwargs)
        data = getattr(ds, "data", None)
        if isinstance(data, np.ndarray) and data.shape[1:] == (3, SIZE, SIZE):  # SVHN: arrays already
            images, labels = data.astype(np.uint8), np.asarray(ds.labels)
        else:
            pairs = [ds[i] for i in range(len(ds))]
            images = np.stack([p[0] for p in pairs]).transpose(0, 3, 1, 2)
            labels = np.asarray([p[1] for p in pairs])
        names = getattr(ds, "classes", None) or getattr(ds, "categories", None)
        names = list(names) if names else [str(i) for i in range(int(labels.max()) + 1)]
        if split_kwargs is None:
            keep = _stratified_split(labels, split)
            images, labels = images[keep], labels[keep]
        return images, labels, names
    return read


@dataclass(frozen=True)
class RealSpec:
    """How to read one torchvision dataset from ``$DATA_ROOT/<name>/``."""

    tv_class: str  # torchvision.datasets class that writes (and documents) the layout
    layout: str  # path under $DATA_ROOT/<name>/ that must exist; "{split}" is filled in
    read: Callable[[Path, str], tuple[np.ndarray, np.ndarray, list[str]]]


def _spec(tv_class, layout, splits=("train", "test"), reader=None):
    kwargs = None if splits is None else {"train": {"split": splits[0]}, "test": {"split": splits[1]}}
    return RealSpec(tv_class, layout, reader or _read_torchvision(tv_class, kwargs))


TORCHVISION_DATASETS: dict[str, RealSpec] = {
    "cifar10": _spec("CIFAR10", "cifar-10-batches-py/", reader=_read_cifar("CIFAR10")),
    "cifar100": _spec("CIFAR100", "cifar-100-python/", reader=_read_cifar("CIFAR100")),
    "svhn": _spec("SVHN", "{split}_32x32.mat"),
    "gtsrb": _spec("GTSRB", "gtsrb/GTSRB/"),
    "dtd": _spec("DTD", "dtd/dtd/images/"),
    "flowers102": _spec("Flowers102", "flowers-102/jpg/"),
    "oxford_pets": _spec("OxfordIIITPet", "oxford-iiit-pet/images/", splits=("trainval", "test")),
    "eurosat": _spec("EuroSAT", "eurosat/2750/", splits=None),
    "caltech101": _spec("Caltech101", "caltech101/101_ObjectCategories/", splits=None),
}


def _load_real(name: str, split: str) -> ImageSet:
    spec = TORCHVISION_DATASETS[name]
    root = data_root() / name
    if not (root / spec.layout.format(split=split)).exists():
        env = os.environ.get("DATA_ROOT")
        where = f"DATA_ROOT={env}" if env else f"DATA_ROOT is unset (default {data_root()})"
        raise ConfigError(
            f"dataset {name!r} not found: {where}; expected $DATA_ROOT/{name}/"
            f"{spec.layout.format(split=split)} as torchvision.datasets.{spec.tv_class} writes it; "
            f"download it on a machine with internet with "
            f"torchvision.datasets.{spec.tv_class}('$DATA_ROOT/{name}', download=True)"
        )
    try:
        images, labels, names = spec.read(root, split)
    except (OSError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as e:
        raise ConfigError(f"dataset {name!r} under {root} is incomplete or corrupt: {e}") from e
    return ImageSet(name, torch.from_numpy(np.ascontiguousarray(images)),
                    torch.from_numpy(np.asarray(labels, np.int64)), tuple(names))


# --------------------------------------------------------------------------- public API
def dataset_names() -> tuple[str, ...]:
    """Every valid dataset name: offline ones first, then the torchvision ones."""
    return OFFLINE_DATASETS + tuple(TORCHVISION_DATASETS)


def check_dataset_name(name: str) -> str:
    """Return ``name`` if it names a dataset, else raise the standard unknown-choice ConfigError."""
    if name not in dataset_names():
        raise unknown_choice("dataset", name, dataset_names())
    return name


def cache_path(name: str, split: str, per_class: int | None = None, seed: int = 0) -> Path:
    """Cache file of a loaded set.

    Synthetic: ``<name>-<split>-<per_class>-s<seed>-v<GENERATOR_VERSION>.pt``; real sets:
    ``<name>-<split>-all-<hash of their folder>-v<GENERATOR_VERSION>.pt``. The folder is
    this module's ``ARTIFACTS_DIR`` read at call time (tests patch it to a temporary folder).
    """
    if name in GENERATED:
        key = f"{name}-{split}-{per_class}-s{seed}"
    else:
        key = f"{name}-{split}-all-{hashlib.sha1(str((data_root() / name).resolve()).encode()).hexdigest()[:8]}"
    return ARTIFACTS_DIR / "datasets" / f"{key}-v{GENERATOR_VERSION}.pt"


def _cached(path: Path, build: Callable[[], ImageSet]) -> ImageSet:
    """Load ``path`` or build and save it (temp file + os.replace, so never half-written)."""
    if path.exists():
        d = torch.load(path, weights_only=True)
        return ImageSet(d["name"], d["images"], d["labels"], tuple(d["classes"]))
    ds = build()
    buffer = io.BytesIO()
    torch.save({"name": ds.name, "images": ds.images, "labels": ds.labels,
                "classes": list(ds.classes)}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return ds


def load_dataset(name: str, split: str, per_class: int | None = None, seed: int = 0) -> ImageSet:
    """Load one split of a dataset as an :class:`ImageSet` of 32x32 uint8 RGB images.

    Generated sets (synthetic and ``source10``) need ``per_class`` and depend on ``seed``;
    train and test come from different random streams, so they are disjoint draws. For
    ``digits`` and the torchvision sets ``per_class`` and ``seed`` are ignored: they return
    every image of the official split, or of a fixed stratified 70/30 split (seed 0) for
    sets shipped unsplit (digits, eurosat, caltech101).
    """
    check_dataset_name(name)
    if split not in SPLITS:
        raise unknown_choice("split", split, SPLITS)
    if name == "digits":
        return _load_digits(split)
    if name in TORCHVISION_DATASETS:
        return _cached(cache_path(name, split), lambda: _load_real(name, split))
    if not isinstance(per_class, numbers.Integral) or isinstance(per_class, bool) or per_class < 1:
        raise ConfigError(f"synthetic dataset {name!r} needs per_class >= 1 images per class, got {per_class!r}")
    per_class, seed = int(per_class), int(seed)
    if name == SOURCE10:
        return _cached(cache_path(name, split, per_class, seed), lambda: _source10(split, per_class, seed))
    return _cached(cache_path(name, split, per_class, seed), lambda: _generate(name, split, per_class, seed))


def _source10(split: str, per_class: int, seed: int) -> ImageSet:
    """``per_class`` images of each source style: ⌈per_class/10⌉ source images of each of the
    style's 10 classes (every shape), relabelled by style and trimmed to ``per_class``."""
    source = load_dataset("source", split, math.ceil(per_class / len(SOURCE_SHAPES)), seed)
    styled = ImageSet(SOURCE10, source.images, source.labels % len(SOURCE_STYLES), tuple(SOURCE_STYLES))
    return few_shot(styled, per_class, seed)


def few_shot_indices(
    labels: torch.Tensor, n_shot: int, seed: int,
    classes: Sequence[str] | None = None, dataset: str = "the dataset",
) -> torch.Tensor:
    """Sorted indices of exactly ``n_shot`` images per class (``-1``: every index).

    A pure function of the labels, so an impossible request fails before any training. The
    pick is a seeded random permutation filtered per class, so with one seed the k-shot set
    is contained in every larger-shot set. ``classes`` (names; its length also counts empty
    classes) and ``dataset`` only improve the error message.
    """
    if isinstance(n_shot, bool) or not isinstance(n_shot, numbers.Integral) or n_shot == 0 or n_shot < -1:
        raise ConfigError(f"n_shot must be a positive number of images per class or -1 (all), got {n_shot!r}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if n_shot == -1:
        return torch.arange(len(labels))
    counts = torch.bincount(labels, minlength=len(classes) if classes is not None else 0)
    if len(counts) and int(counts.min()) < n_shot:
        c = int(counts.argmin())
        cname = classes[c] if classes is not None else str(c)
        raise ConfigError(f"n_shot={n_shot} exceeds the {int(counts[c])} images of class {cname!r} in {dataset}")
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    picks = [perm[labels[perm] == c][:n_shot] for c in range(len(counts))]
    return torch.cat(picks).sort().values if picks else torch.empty(0, dtype=torch.long)


def few_shot(ds: ImageSet, n_shot: int, seed: int) -> ImageSet:
    """The ``n_shot``-per-class subset of ``ds`` (see :func:`few_shot_indices`)."""
    return ds.subset(few_shot_indices(ds.labels, n_shot, seed, ds.classes, ds.name))


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1]."""
    return images_uint8.float().div_(255.0)


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 normalised with :data:`MEAN` and :data:`STD`."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (to_float(images_uint8) - mean) / std


def _augment(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding (zero = the mean colour) and horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


class _Batches(torch.utils.data.Dataset):
    """Indexed by a list of indices: returns a whole normalised (and augmented) batch."""

    def __init__(self, ds: ImageSet, augment: bool, seed: int):
        self.ds, self.augment = ds, augment
        self.g = torch.Generator().manual_seed(seed + 0x5EED)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, idx):
        idx = torch.as_tensor(idx)
        x = normalize(self.ds.images[idx])
        return (_augment(x, self.g) if self.augment else x), self.ds.labels[idx]


def make_loader(
    ds: ImageSet, batch_size: int, shuffle: bool, seed: int = 0, augment: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """Loader of ``(float32 normalised N x 3 x 32 x 32, int64 labels)`` batches.

    Batches are sliced and augmented as whole tensors (no per-image Python), in the main
    process. Shuffling and augmentation draw from their own generators seeded from
    ``seed``: the same seed replays the same sequence of epochs.
    """
    order = (RandomSampler(ds.labels, generator=torch.Generator().manual_seed(seed))
             if shuffle else SequentialSampler(ds.labels))
    return DataLoader(
        _Batches(ds, augment, seed), sampler=BatchSampler(order, batch_size, drop_last),
        batch_size=None, num_workers=0, collate_fn=lambda b: b,
    )
