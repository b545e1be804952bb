"""Checks and shared pieces for SIM sets: shape, edge taper, band mixing."""

from __future__ import annotations

import numpy as np


def as_set(
    frames: np.ndarray, n_angles: int, n_phases: int, dtype: type = np.float64
) -> np.ndarray:
    """Return ``frames`` as a ``(n_angles, n_phases, H, W)`` array of ``dtype``.

    Accepts ``(n_angles * n_phases, H, W)`` (angle slow, phase fast: the acquisition
    order of :class:`~sn2n_live.config.SIMPlan`) or ``(n_angles, n_phases, H, W)``.

    Raises
    ------
    ValueError
        If the frames do not form one set of that size, or are not finite.
    """
    array = np.asarray(frames)
    expected = n_angles * n_phases
    if array.ndim == 3 and array.shape[0] == expected:
        array = array.reshape(n_angles, n_phases, *array.shape[1:])
    if array.ndim != 4 or array.shape[:2] != (n_angles, n_phases):
        raise ValueError(
            f"a SIM set of {n_angles} angles x {n_phases} phases is {expected} frames, "
            f"(angles*phases, H, W) or (angles, phases, H, W); got shape {array.shape}"
        )
    if min(array.shape[-2:]) < 32:
        raise ValueError(f"SIM frames must be at least 32 x 32 pixels; got {array.shape[-2:]}")
    out = array.astype(dtype, copy=False)
    if not np.isfinite(out).all():
        raise ValueError("the SIM set holds NaN or infinite values")
    return out


def edge_taper(shape: tuple[int, int], width_px: int) -> np.ndarray:
    """Return a window: 1 inside, falling to 0 over ``width_px`` at each edge (cos²).

    Tapering the frames (after subtracting their mean) keeps the jump at the field's edges,
    which the FFT sees as periodic, from leaking a cross into every band.
    """
    out = np.ones(shape, dtype=np.float64)
    if width_px <= 0:
        return out
    for axis, n in enumerate(shape):
        w = min(width_px, n // 4)
        ramp = np.sin(0.5 * np.pi * (np.arange(w) + 0.5) / w) ** 2
        profile = np.ones(n)
        profile[:w] = ramp
        profile[n - w :] = ramp[::-1]
        out *= profile[:, None] if axis == 0 else profile[None, :]
    return out


def unmixing(phases: np.ndarray) -> np.ndarray:
    """Return the ``(3, P)`` matrix that separates orders ``0, +1, -1`` of ``P`` frames.

    Frame ``p`` holds ``X0 + e^{iφ_p} X+1 + e^{-iφ_p} X-1``; the least-squares inverse
    (the pseudo-inverse for ``P > 3`` phases) gives the three orders from the frames.
    """
    phases = np.asarray(phases, dtype=np.float64)
    mixing = np.stack([np.ones_like(phases), np.exp(1j * phases), np.exp(-1j * phases)], axis=1)
    return np.linalg.pinv(mixing)


def dtft(image: np.ndarray, k: np.ndarray) -> complex:
    """``Σ_r image(r) e^{-2πi k·r}`` at one (non-integer) frequency ``k = (ky, kx)``.

    Separable, so it costs two vector-matrix products rather than a 2-D exponential.
    """
    h, w = image.shape
    ey = np.exp(-2j * np.pi * k[0] * np.arange(h))
    ex = np.exp(-2j * np.pi * k[1] * np.arange(w))
    return complex(ey @ image @ ex)
