"""The synthetic targets: procedurally generated 32x32 RGB sets at a controlled distance.

They complement the real targets with tasks whose content is known by construction:

``near``
    10 filled shape families (heart, arrow, ...) in 10 palette/texture styles, on random
    cluttered backgrounds with distractor strokes, affine jitter, lighting and pixel noise;
    the class is the shape, the style is a nuisance. Object-like, as ImageNet is.
``middle``
    10 full-frame texture classes (stripe orientations, checks, dot grids, speckle,
    rings, waves, blobs, grid lines) in random colours: no objects at all.
``far``
    10 monochrome letter-like glyphs (A C E H K L M T X Z) drawn as jittered strokes.

The intended order is only a design; notebook 00 measures each target's distance from
ImageNet features. Every set is a pure function of (name, split, images per class, seed);
train and test come from different random streams, so they are disjoint draws.
"""

from __future__ import annotations

import zlib
from functools import cache
from collections.abc import Callable

import numpy as np
import torch

from .imageset import SPLITS, ImageSet

SIZE = 32
NAMES: tuple[str, ...] = ("near", "middle", "far")
_STREAM = 1  # part of every generator seed; changing it redraws every image

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
STYLES: dict[str, tuple[str, str, str]] = {
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
    names = list(STYLES)
    for s in np.unique(styles):
        idx = np.flatnonzero(styles == s)
        kind, a, b = STYLES[names[s]]
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


def _gen_near(rng, per_class):
    images = [
        _render_objects(rng, sdf, rng.integers(0, len(STYLES), per_class))
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


_GENERATORS = {"near": _gen_near, "middle": _gen_middle, "far": _gen_far}


def generate(name: str, split: str, per_class: int, seed: int) -> ImageSet:
    """Render ``per_class`` images of each class from the stream of (name, split, seed)."""
    rng = np.random.default_rng([seed % 2**63, zlib.crc32(name.encode()), SPLITS.index(split), _STREAM])
    chunks, classes = _GENERATORS[name](rng, per_class)
    images = np.concatenate(chunks)
    labels = np.repeat(np.arange(len(chunks)), per_class)
    order = rng.permutation(len(labels))  # interleave classes: no class-sorted prefixes
    return ImageSet(name, torch.from_numpy(images[order]), torch.from_numpy(labels[order]), tuple(classes))
