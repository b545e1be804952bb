"""Seeded ground-truth fluorescent structures (microtubules, ER, mitochondria, puncta).

Everything is drawn on a torus: coordinates wrap at the image edges and the line-width
blurs use ``mode="wrap"``. A drifting sample (see ``_sample.py``) is then a pure periodic
translation with no seam at the border.

Sizes are in pixels and assume a raw-SIM pixel of roughly 60-70 nm, so a PSF sigma of
1.5 px is close to the widefield resolution limit. Object *counts* scale with the image
area while object *sizes* do not, so a 2048² field is a larger piece of the same biology,
not a magnified 128² one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from scipy import ndimage
from scipy.spatial import Delaunay

from ._checks import STRUCTURE_STREAM, check_seed, check_shape, seed_sequence

StructureKind = Literal["filaments", "mitochondria", "puncta", "mixed"]
STRUCTURE_KINDS: tuple[str, ...] = get_args(StructureKind)

# Arc-length step between samples of a curve; < 1 px so bilinear splats form a solid line.
_STEP_PX = 0.5
# Variance (px²) that bilinear splatting adds to a point, used to normalize peak height.
_SPLAT_VAR = 1.0 / 6.0
# Gaussian cross-section sigmas (px) of the unblurred objects.
_THIN_SIGMA = 0.6  # microtubules (~25 nm) and ER tubules: essentially sub-pixel lines
_MITO_SIGMAS = (1.4, 2.2)  # tubular mitochondria, two width classes
_PUNCTA_SIGMAS = (0.6, 1.0)
# Angular resolution of a blob's tabulated edge radius.
_ANGLE_TABLE_SIZE = 4096
# Canvas layers: thin lines (microtubules, ER tubules) apart from everything else, so the
# thin-structure ground truth can be told apart from puncta of the same width.
_THIN = "thin"
_BULK = "bulk"


def check_kind(kind: str) -> str:
    """Return ``kind`` after checking it names a known structure kind."""
    if kind not in STRUCTURE_KINDS:
        raise ValueError(f"kind must be one of {list(STRUCTURE_KINDS)}; got {kind!r}")
    return kind


class _Canvas:
    """Accumulate weighted points per layer and line-width sigma, then blur each group once.

    Grouping by sigma keeps the cost at one Gaussian filter per width class and layer no
    matter how many objects are drawn (blurring is linear, so splat-then-blur is exact).
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self._groups: dict[tuple[str, float], list[tuple[np.ndarray, np.ndarray]]] = {}

    def add(self, yx: np.ndarray, weights: np.ndarray, sigma: float, layer: str) -> None:
        """Bilinearly splat points ``yx`` (N, 2) with ``weights`` (N,) into ``layer``."""
        h, w = self.shape
        y, x = yx[:, 0], yx[:, 1]
        y0 = np.floor(y)
        x0 = np.floor(x)
        fy = y - y0
        fx = x - x0
        y0 = y0.astype(np.intp)
        x0 = x0.astype(np.intp)
        idx = []
        wts = []
        for dy, dx, frac in (
            (0, 0, (1 - fy) * (1 - fx)),
            (0, 1, (1 - fy) * fx),
            (1, 0, fy * (1 - fx)),
            (1, 1, fy * fx),
        ):
            idx.append(((y0 + dy) % h) * w + (x0 + dx) % w)
            wts.append(weights * frac)
        key = (layer, sigma)
        self._groups.setdefault(key, []).append((np.concatenate(idx), np.concatenate(wts)))

    def render(self, layer: str) -> np.ndarray:
        """Return ``layer``'s splatted points blurred by their sigma, summed (float64)."""
        h, w = self.shape
        total = np.zeros(self.shape, dtype=np.float64)
        for (group_layer, sigma), parts in self._groups.items():
            if group_layer != layer:
                continue
            idx = np.concatenate([p[0] for p in parts])
            wts = np.concatenate([p[1] for p in parts])
            grid = np.bincount(idx, weights=wts, minlength=h * w).reshape(h, w)
            total += ndimage.gaussian_filter(grid, sigma, mode="wrap")
        return total


def _line_weight(brightness: np.ndarray, sigma: float) -> np.ndarray:
    """Return the per-sample weight giving an isolated straight line a peak of ``brightness``."""
    return brightness * _STEP_PX * np.sqrt(2 * np.pi * (sigma**2 + _SPLAT_VAR))


def _dot_weight(brightness: np.ndarray, sigma: float) -> np.ndarray:
    """Return the per-point weight giving an isolated dot a peak of ``brightness``."""
    return brightness * 2 * np.pi * (sigma**2 + _SPLAT_VAR)


def _positions(
    rng: np.random.Generator, n: int, shape: tuple[int, int], region: np.ndarray | None
) -> np.ndarray:
    """Return ``n`` random (y, x) points, uniform in the field or in the ``region`` mask."""
    if region is None:
        return rng.random((n, 2)) * np.asarray(shape, dtype=np.float64)
    pixels = np.flatnonzero(region)
    picked = rng.choice(pixels, size=n)
    yx = np.stack(np.unravel_index(picked, shape), axis=1).astype(np.float64)
    return yx + rng.random((n, 2)) - 0.5


def _smooth_curves(
    rng: np.random.Generator,
    starts: np.ndarray,
    lengths: np.ndarray,
    wavelength_range: tuple[float, float],
    amplitude_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Trace smooth random curves, all at once.

    The heading of each curve is a random direction plus two sinusoids of its arc
    length, which gives gently bending, non-self-intersecting paths whose curvature is
    set by ``wavelength_range`` / ``amplitude_range``.

    Returns
    -------
    yx : numpy.ndarray
        (M, 2) float64 sample points of all curves, concatenated.
    owner : numpy.ndarray
        (M,) index of the curve each point belongs to.
    """
    n = len(starts)
    counts = np.maximum(np.ceil(lengths / _STEP_PX).astype(np.intp), 2)
    owner = np.repeat(np.arange(n), counts)
    first = np.cumsum(counts) - counts
    arc = (np.arange(owner.size) - first[owner]) * _STEP_PX

    heading = rng.uniform(0, 2 * np.pi, n)[owner]
    for _ in range(2):
        wavelength = rng.uniform(*wavelength_range, n)[owner]
        amplitude = rng.uniform(*amplitude_range, n)[owner]
        phase = rng.uniform(0, 2 * np.pi, n)[owner]
        heading += amplitude * np.sin(2 * np.pi * arc / wavelength + phase)

    steps = np.stack([np.sin(heading), np.cos(heading)], axis=1) * _STEP_PX
    steps[first] = 0.0  # each curve begins exactly at its start point
    path = np.cumsum(steps, axis=0)
    path -= path[first][owner]
    return starts[owner] + path, owner


def _blob_mask(
    rng: np.random.Generator,
    shape: tuple[int, int],
    area_fraction: float,
    off_center: float,
    edge_px: float = 4.0,
) -> np.ndarray:
    """Return a soft star-shaped blob (a "cell") covering about ``area_fraction`` of the field.

    Its centre lies ``off_center`` (in units of the field half-size) from the field
    centre in a random direction. Exactly zero outside the blob, one inside, with a
    smoothstep edge ``edge_px`` wide.
    """
    h, w = shape
    # Normalized coordinates in [-1, 1]² so the blob adapts to non-square fields; float32
    # and a tabulated edge radius keep this cheap at 2048².
    direction = rng.uniform(0, 2 * np.pi)
    cy, cx = off_center * np.sin(direction), off_center * np.cos(direction)
    v = ((np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1 - cy).astype(np.float32)
    u = ((np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1 - cx).astype(np.float32)
    rho = np.hypot(v[:, None], u[None, :])
    # Unit-ellipse area is pi r², the field's is 4.
    base = np.sqrt(4 * area_fraction / np.pi)
    angles = np.linspace(-np.pi, np.pi, _ANGLE_TABLE_SIZE + 1)
    r_table = np.full(angles.shape, base)
    for order in range(2, 6):
        amp = rng.uniform(0, 0.12 / order) * base
        r_table += amp * np.cos(order * angles + rng.uniform(0, 2 * np.pi))
    theta = np.arctan2(v[:, None], u[None, :])
    slot = np.rint((theta + np.pi) * (_ANGLE_TABLE_SIZE / (2 * np.pi))).astype(np.intp)
    r_edge = r_table.astype(np.float32)[slot]
    edge = np.float32(edge_px * 2 / min(h, w))
    t = np.clip((r_edge - rho) / edge + np.float32(0.5), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _mask_at(mask: np.ndarray, yx: np.ndarray) -> np.ndarray:
    """Return the nearest-pixel value of ``mask`` at (wrapped) points ``yx``."""
    h, w = mask.shape
    iy = np.rint(yx[:, 0]).astype(np.intp) % h
    ix = np.rint(yx[:, 1]).astype(np.intp) % w
    return mask[iy, ix]


def _draw_microtubules(
    canvas: _Canvas,
    rng: np.random.Generator,
    density: float,
    region: np.ndarray | None,
    mask: np.ndarray | None,
) -> None:
    """Draw long, gently curved, thin filaments; ``density`` is filament length per px²."""
    shape = canvas.shape
    typical = min(min(shape), 500)
    n = max(2, round(density * shape[0] * shape[1] / typical))
    lengths = rng.uniform(0.5, 1.5, n) * typical
    yx, owner = _smooth_curves(
        rng, _positions(rng, n, shape, region), lengths, (150, 600), (0.1, 0.5)
    )
    weights = _line_weight(rng.uniform(0.6, 1.0, n)[owner], _THIN_SIGMA)
    if mask is not None:
        weights *= _mask_at(mask, yx)
    canvas.add(yx, weights, _THIN_SIGMA, _THIN)


def _draw_er_web(
    canvas: _Canvas,
    rng: np.random.Generator,
    mask: np.ndarray,
    brightness: tuple[float, float],
    spacing_px: float = 20.0,
    keep_fraction: float = 0.6,
) -> None:
    """Draw a dim polygonal web of thin tubules (ER-like), confined to ``mask``.

    Nodes sit on a jittered grid; a random subset of their Delaunay edges, each bent
    into a quadratic Bezier curve, forms the tubules.
    """
    h, w = canvas.shape
    gy, gx = np.meshgrid(np.arange(0, h, spacing_px), np.arange(0, w, spacing_px), indexing="ij")
    nodes = np.stack([gy.ravel(), gx.ravel()], axis=1)
    nodes = nodes + rng.uniform(-0.4, 0.4, nodes.shape) * spacing_px
    nodes = nodes[_mask_at(mask, nodes) > 0]  # tubules outside the mask would be invisible
    if len(nodes) < 4:
        return
    tri = Delaunay(nodes)
    edges = np.concatenate(
        [tri.simplices[:, [0, 1]], tri.simplices[:, [1, 2]], tri.simplices[:, [0, 2]]]
    )
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    a, b = nodes[edges[:, 0]], nodes[edges[:, 1]]
    length = np.linalg.norm(b - a, axis=1)
    keep = (rng.random(len(edges)) < keep_fraction) & (length < 2 * spacing_px)
    a, b, length = a[keep], b[keep], length[keep]
    if len(a) == 0:
        return
    normal = np.stack([-(b - a)[:, 1], (b - a)[:, 0]], axis=1) / length[:, None]
    ctrl = (a + b) / 2 + normal * rng.normal(0, 0.15, len(a))[:, None] * length[:, None]

    counts = np.ceil(length / _STEP_PX).astype(np.intp) + 1
    owner = np.repeat(np.arange(len(a)), counts)
    first = np.cumsum(counts) - counts
    t = ((np.arange(owner.size) - first[owner]) / (counts[owner] - 1))[:, None]
    yx = (1 - t) ** 2 * a[owner] + 2 * t * (1 - t) * ctrl[owner] + t**2 * b[owner]
    weights = _line_weight(rng.uniform(*brightness, len(a))[owner], _THIN_SIGMA)
    canvas.add(yx, weights * _mask_at(mask, yx), _THIN_SIGMA, _THIN)


def _draw_mitochondria(
    canvas: _Canvas,
    rng: np.random.Generator,
    area_per_object: float,
    region: np.ndarray | None,
    mask: np.ndarray | None,
) -> None:
    """Draw short, thick, worm-like tubes in two width classes."""
    shape = canvas.shape
    n = max(1, round(shape[0] * shape[1] / area_per_object))
    lengths = rng.uniform(12, 50, n)
    yx, owner = _smooth_curves(
        rng, _positions(rng, n, shape, region), lengths, (20, 60), (0.2, 0.6)
    )
    brightness = rng.uniform(0.4, 0.9, n)
    width_class = rng.integers(0, len(_MITO_SIGMAS), n)
    point_brightness = brightness[owner]
    if mask is not None:
        point_brightness *= _mask_at(mask, yx)
    for k, sigma in enumerate(_MITO_SIGMAS):
        sel = width_class[owner] == k
        canvas.add(yx[sel], _line_weight(point_brightness[sel], sigma), sigma, _BULK)


def _draw_puncta(
    canvas: _Canvas,
    rng: np.random.Generator,
    area_per_object: float,
    region: np.ndarray | None,
    mask: np.ndarray | None,
) -> None:
    """Draw small dots of widely varied (log-uniform) brightness, in two size classes."""
    shape = canvas.shape
    n = max(3, round(shape[0] * shape[1] / area_per_object))
    yx = _positions(rng, n, shape, region)
    brightness = np.exp(rng.uniform(np.log(0.15), 0.0, n))
    if mask is not None:
        brightness *= _mask_at(mask, yx)
    size_class = rng.integers(0, len(_PUNCTA_SIGMAS), n)
    for k, sigma in enumerate(_PUNCTA_SIGMAS):
        sel = size_class == k
        canvas.add(yx[sel], _dot_weight(brightness[sel], sigma), sigma, _BULK)


@dataclass(frozen=True)
class StructureLayers:
    """A ground-truth structure field and its thin-line part.

    Attributes
    ----------
    density : numpy.ndarray
        ``(H, W)`` float32 fluorophore density in [0, 1] with maximum 1 (what
        :func:`make_structures` returns).
    thin : numpy.ndarray
        ``(H, W)`` float32 part of ``density`` drawn as thin (sub-pixel) lines:
        microtubule-like filaments and ER-like tubules, on the same scale and never
        above ``density``. All zero for ``"mitochondria"`` and ``"puncta"``.
    """

    density: np.ndarray
    thin: np.ndarray


def make_structure_layers(
    shape: Sequence[int], *, kind: StructureKind = "mixed", seed: int = 0
) -> StructureLayers:
    """Draw a seeded ground-truth structure and its thin-line layer (before optical blur).

    Parameters
    ----------
    shape : sequence of int
        ``(height, width)`` in pixels, each >= 16.
    kind : {"filaments", "mitochondria", "puncta", "mixed"}
        ``"filaments"``: long, thin, crossing, gently curved microtubule-like filaments
        over the whole field plus a dim ER-like web of thin tubules in part of it.
        ``"mitochondria"``: short, thick, worm-like tubes. ``"puncta"``: small dots of
        widely varied brightness. ``"mixed"``: all of these inside one off-centre,
        blob-shaped "cell" covering roughly 30-40 % of the field; the rest (about 60 %
        from 128² up) is exactly zero, a large empty background as in real low-light
        SIM data.
    seed : int
        Non-negative seed; the same seed always gives the same arrays.

    Returns
    -------
    StructureLayers
        The density and its thin-line part. The field is periodic (objects leaving one
        edge re-enter at the opposite one).

    Raises
    ------
    ValueError
        For a bad ``shape``, ``seed`` or an unknown ``kind``.
    """
    shape = check_shape(shape)
    check_kind(kind)
    seed = check_seed(seed)
    rng_cell, rng_mt, rng_er, rng_mito, rng_puncta = (
        np.random.default_rng(s) for s in seed_sequence(seed, STRUCTURE_STREAM).spawn(5)
    )
    canvas = _Canvas(shape)
    if kind == "filaments":
        _draw_microtubules(canvas, rng_mt, density=0.03, region=None, mask=None)
        er_mask = _blob_mask(rng_er, shape, area_fraction=0.35, off_center=0.1, edge_px=12.0)
        _draw_er_web(canvas, rng_er, er_mask, brightness=(0.2, 0.4))
    elif kind == "mitochondria":
        _draw_mitochondria(canvas, rng_mito, 2500.0, region=None, mask=None)
    elif kind == "puncta":
        _draw_puncta(canvas, rng_puncta, 400.0, region=None, mask=None)
    else:
        # An off-centre cell leaves one wide empty side, so even small fields contain
        # whole structure-free patches (what SN2N's background-risk analysis looks for).
        cell = _blob_mask(
            rng_cell, shape, area_fraction=rng_cell.uniform(0.3, 0.4), off_center=0.22
        )
        inside = cell > 0.5
        _draw_microtubules(canvas, rng_mt, density=0.02, region=inside, mask=cell)
        _draw_er_web(canvas, rng_er, cell, brightness=(0.15, 0.3), keep_fraction=0.45)
        _draw_mitochondria(canvas, rng_mito, 3500.0, region=inside, mask=cell)
        _draw_puncta(canvas, rng_puncta, 800.0, region=inside, mask=cell)
    thin = canvas.render(_THIN)
    image = np.clip(thin + canvas.render(_BULK), 0.0, 1.0)
    # Crossings saturate at 1 (clip); a field whose brightest object is dimmer than 1 is
    # stretched so every kind shares the same [0, 1] scale with max exactly 1.
    scale = 1.0 / image.max()
    image *= scale
    # Where the clip saturated, the thin part is capped at the (clipped) total.
    thin = np.minimum(thin * scale, image)
    return StructureLayers(density=image.astype(np.float32), thin=thin.astype(np.float32))


def make_structures(
    shape: Sequence[int], *, kind: StructureKind = "mixed", seed: int = 0
) -> np.ndarray:
    """Draw a seeded ground-truth fluorescence density (before any optical blur).

    Parameters
    ----------
    shape : sequence of int
        ``(height, width)`` in pixels, each >= 16.
    kind : {"filaments", "mitochondria", "puncta", "mixed"}
        Structure kind, see :func:`make_structure_layers`.
    seed : int
        Non-negative seed; the same seed always gives the same array.

    Returns
    -------
    numpy.ndarray
        ``(height, width)`` float32 in [0, 1] with maximum 1, periodic; the ``density``
        of :func:`make_structure_layers` (use that function for the thin-line layer).

    Raises
    ------
    ValueError
        For a bad ``shape``, ``seed`` or an unknown ``kind``.
    """
    return make_structure_layers(shape, kind=kind, seed=seed).density
