"""Pure-numpy rendering of preview images: contrast limits, colormap LUTs, overlays.

Nothing here knows Qt or acquisition: every function maps arrays to arrays, so the
widget's pixels can be checked without a display. Rendered images are ``(H, W, 4)``
uint8 RGBA, C-contiguous (what a ``QImage`` of format RGBA8888 reads without a copy).
"""

from __future__ import annotations

from functools import cache

import numpy as np

__all__ = [
    "COLORMAPS",
    "DEFAULT_PERCENTILES",
    "DIVERGING",
    "auto_limits",
    "blend_risk",
    "colormap_lut",
    "colormaps_available",
    "residual",
    "residual_limits",
    "to_rgba",
    "widefield_image",
]

COLORMAPS = ("gray", "magma", "viridis", "inferno")
DIVERGING = "RdBu_r"  # the residual's map: blue below 0, white at 0, red above
DEFAULT_PERCENTILES = (0.5, 99.5)
# Percentiles of a 2048^2 frame at 10 Hz would cost the GUI thread ~50 ms each; a strided
# sample of at most this many pixels gives the same limits to within the noise.
_SAMPLE_PIXELS = 1 << 18


def _sample(image: np.ndarray) -> np.ndarray:
    """Finite values of a strided subsample of ``image`` (float64, 1-D)."""
    step = max(1, int(np.ceil(np.sqrt(image.size / _SAMPLE_PIXELS))))
    sub = image[..., ::step, ::step] if image.ndim >= 2 else image[::step]
    values = np.asarray(sub, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def auto_limits(
    *images: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> tuple[float, float]:
    """Contrast limits from percentiles of one image or of several together.

    Parameters
    ----------
    *images : numpy.ndarray
        One or more images; with several (linked contrast) the percentiles are of all
        their pixels together.
    percentiles : tuple of float
        Lower and upper percentile, 0..100.

    Returns
    -------
    tuple of float
        ``(lo, hi)`` with ``hi > lo`` (a flat image gets ``(v, v + 1)``); ``(0, 1)``
        when there is no finite pixel.
    """
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lo < hi <= 100; got {percentiles}.")
    if not images:
        raise ValueError("auto_limits needs at least one image.")
    values = np.concatenate([_sample(np.asarray(im)) for im in images])
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, [lo_p, hi_p]))
    return _ordered(lo, hi)


def _ordered(lo: float, hi: float) -> tuple[float, float]:
    """``(lo, hi)`` with ``hi > lo``, so that scaling never divides by zero."""
    if not hi > lo:
        return lo, lo + 1.0
    return lo, hi


def colormaps_available() -> tuple[str, ...]:
    """Name the :data:`COLORMAPS` that render in colour here (gray always does)."""
    return tuple(name for name in COLORMAPS if name == "gray" or _matplotlib_lut(name) is not None)


def colormap_lut(name: str) -> np.ndarray:
    """Return a 256-entry RGBA lookup table for a colormap.

    Parameters
    ----------
    name : str
        ``"gray"``, a matplotlib colormap name (``"magma"``, ``"viridis"``, ``"inferno"``,
        :data:`DIVERGING`, ...).

    Returns
    -------
    numpy.ndarray
        ``(256, 4)`` uint8, read-only. Gray when matplotlib is missing or does not know
        the name; :data:`DIVERGING` then falls back to a numpy blue-white-red map.
    """
    if name != "gray":
        lut = _matplotlib_lut(name)
        if lut is not None:
            return lut
        if name == DIVERGING:
            return _blue_white_red()
    return _gray()


@cache
def _gray() -> np.ndarray:
    ramp = np.arange(256, dtype=np.uint8)
    lut = np.stack([ramp, ramp, ramp, np.full(256, 255, np.uint8)], axis=1)
    lut.flags.writeable = False
    return lut


@cache
def _blue_white_red() -> np.ndarray:
    t = np.linspace(-1.0, 1.0, 256)
    r = np.where(t < 0, 1 + t, 1.0)
    b = np.where(t > 0, 1 - t, 1.0)
    g = 1 - np.abs(t)
    lut = np.round(np.stack([r, g, b, np.ones(256)], axis=1) * 255).astype(np.uint8)
    lut.flags.writeable = False
    return lut


@cache
def _matplotlib_lut(name: str) -> np.ndarray | None:
    try:
        from matplotlib import colormaps
    except ImportError:  # an optional nicety: gray renders without it
        return None
    if name not in colormaps:
        return None
    lut = np.ascontiguousarray(colormaps[name](np.linspace(0.0, 1.0, 256), bytes=True))
    lut.flags.writeable = False
    return lut


def to_rgba(
    image: np.ndarray, limits: tuple[float, float], colormap: str | np.ndarray = "gray"
) -> np.ndarray:
    """Apply contrast limits and a colormap to a 2-D image.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` image of any real dtype.
    limits : tuple of float
        ``(lo, hi)``: values <= lo take the map's first colour, >= hi its last.
    colormap : str or numpy.ndarray
        A name for :func:`colormap_lut`, or a ``(256, 4)`` uint8 LUT.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 4)`` uint8 RGBA, C-contiguous; NaN pixels take the first colour.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"to_rgba takes a 2-D image; got shape {image.shape}.")
    lut = colormap_lut(colormap) if isinstance(colormap, str) else np.asarray(colormap)
    if lut.shape != (256, 4) or lut.dtype != np.uint8:
        raise ValueError(f"a colormap LUT is (256, 4) uint8; got {lut.shape} {lut.dtype}.")
    lo, hi = _ordered(float(limits[0]), float(limits[1]))
    # One uint32 per RGBA pixel: a 1-D gather is ~4x faster than indexing the (256, 4)
    # table (a 2048^2 frame: ~9 ms for uint16, ~16 ms for float32, was ~60 ms).
    lut32 = np.ascontiguousarray(lut).view(np.uint32).ravel()
    scale = np.float32(255.0 / (hi - lo))
    if image.dtype in (np.uint8, np.uint16):
        # Every possible camera value mapped once, then one gather per pixel.
        levels = np.arange(np.iinfo(image.dtype).max + 1, dtype=np.float32)
        table = lut32[_to_index(levels, lo, scale)]
        packed = table[image]
    else:
        packed = lut32[_to_index(image, lo, scale)]
    return packed.view(np.uint8).reshape(*image.shape, 4)


def _to_index(values: np.ndarray, lo: float, scale: np.float32) -> np.ndarray:
    """LUT indices 0..255 of ``(values - lo) * scale``; NaN goes to 0 (fmax drops NaN)."""
    scaled = np.subtract(values, np.float32(lo), dtype=np.float32)
    scaled *= scale
    np.fmax(scaled, 0, out=scaled)
    np.fmin(scaled, 255, out=scaled)
    return scaled.astype(np.uint8)


def residual(raw: np.ndarray, denoised: np.ndarray) -> np.ndarray:
    """``raw - denoised`` as signed float32 (what the denoiser removed), in ADU."""
    raw, denoised = np.asarray(raw), np.asarray(denoised)
    if raw.shape != denoised.shape:
        raise ValueError(f"raw {raw.shape} and denoised {denoised.shape} differ in shape.")
    return raw.astype(np.float32) - denoised.astype(np.float32)


def residual_limits(res: np.ndarray, percentile: float = 99.5) -> tuple[float, float]:
    """Return limits symmetric about 0: ``(-m, m)``, m the percentile of ``|res|``.

    Symmetric, so that 0 maps to the diverging map's centre.
    """
    values = np.abs(_sample(np.asarray(res)))
    m = float(np.percentile(values, percentile)) if values.size else 0.0
    m = m if m > 0 else 1.0
    return -m, m


def blend_risk(
    rgba: np.ndarray,
    risk: np.ndarray,
    *,
    color: tuple[int, int, int] = (255, 0, 0),
    max_alpha: float = 0.6,
) -> np.ndarray:
    """Lay a hallucination-risk map over a rendered image as a coloured veil.

    Parameters
    ----------
    rgba : numpy.ndarray
        ``(H, W, 4)`` uint8 rendered image.
    risk : numpy.ndarray
        ``(H, W)`` risk in 0..1 (clipped; NaN counts as 0).
    color : tuple of int
        The veil's RGB colour.
    max_alpha : float
        Opacity at risk 1 (0..1); risk 0 leaves the pixel unchanged.

    Returns
    -------
    numpy.ndarray
        A new ``(H, W, 4)`` uint8 image (alpha 255).
    """
    if risk.shape != rgba.shape[:2]:
        raise ValueError(f"risk {risk.shape} does not match the image {rgba.shape[:2]}.")
    if not 0 <= max_alpha <= 1:
        raise ValueError(f"max_alpha must be in 0..1; got {max_alpha}.")
    alpha = np.clip(np.nan_to_num(np.asarray(risk, np.float32), nan=0.0), 0, 1) * max_alpha
    alpha = alpha[..., None]
    rgb = rgba[..., :3].astype(np.float32) * (1 - alpha) + np.float32(color) * alpha
    out = np.empty_like(rgba)
    out[..., :3] = np.round(rgb).astype(np.uint8)
    out[..., 3] = 255
    return out


def widefield_image(frames: np.ndarray) -> np.ndarray:
    """Return the widefield image of one complete SIM set: the sum of its pattern frames.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(..., H, W)``: the set's frames (e.g. ``(angles, phases, H, W)``).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32, the sum over the leading axes divided by their count: the
        sum in the ADU scale of one frame, so that contrast limits carry over from raw.
    """
    frames = np.asarray(frames)
    if frames.ndim < 2:
        raise ValueError(f"frames must be (..., H, W); got shape {frames.shape}.")
    stack = frames.reshape(-1, *frames.shape[-2:]).astype(np.float32)
    return stack.sum(axis=0) / np.float32(stack.shape[0])
