"""Optics of the simulated microscope: structured illumination and a Gaussian PSF."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from ._checks import check_float, check_shape


class SIMIllumination(BaseModel):
    """Sinusoidal 2-D SIM illumination: ``n_angles`` orientations x ``n_phases`` phases.

    Pattern ``(a, p)`` is ``0.5 * (1 + modulation * cos(2π k_a·r / period_px + 2π p /
    n_phases))`` with ``k_a = (sin θ_a, cos θ_a)`` in (row, column) order and ``θ_a =
    orientation_deg + a * 180° / n_angles``. ``θ = 0`` gives stripes that vary along
    the columns (x). Every pattern lies in [0, 1], has mean 0.5 and peak
    ``0.5 * (1 + modulation)``.

    Parameters
    ----------
    n_angles : int
        Number of pattern orientations, >= 1.
    n_phases : int
        Number of equally spaced phase steps per orientation, >= 1.
    period_px : float
        Stripe period in pixels, >= 2 (the sampling limit).
    modulation : float
        Modulation depth in [0, 1]; 0 is uniform widefield illumination.
    orientation_deg : float
        Orientation of the first angle, in degrees.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    n_angles: int = Field(default=3, ge=1)
    n_phases: int = Field(default=3, ge=1)
    period_px: float = Field(default=8.0, ge=2.0)
    modulation: float = Field(default=0.8, ge=0.0, le=1.0)
    orientation_deg: float = 0.0

    @property
    def peak(self) -> float:
        """Maximum intensity of any pattern, ``0.5 * (1 + modulation)``."""
        return 0.5 * (1.0 + self.modulation)

    def angles_rad(self) -> np.ndarray:
        """Return the ``n_angles`` pattern orientations in radians."""
        return np.deg2rad(self.orientation_deg) + np.arange(self.n_angles) * np.pi / self.n_angles

    def patterns(self, shape: Sequence[int]) -> np.ndarray:
        """Return all illumination patterns for a field of ``shape``.

        Parameters
        ----------
        shape : sequence of int
            ``(height, width)`` in pixels, each >= 16.

        Returns
        -------
        numpy.ndarray
            ``(n_angles, n_phases, height, width)`` float32 in [0, 1].
        """
        h, w = check_shape(shape)
        y = np.arange(h, dtype=np.float64)
        x = np.arange(w, dtype=np.float64)
        half_mod = np.float32(0.5 * self.modulation)
        out = np.empty((self.n_angles, self.n_phases, h, w), dtype=np.float32)
        for a, theta in enumerate(self.angles_rad()):
            # cos(α(y) + β(x)) = cos α cos β - sin α sin β: two outer products of 1-D
            # tables instead of a 2-D cosine, so 2048² fields stay cheap. Phases are
            # reduced mod one cycle first to keep precision on large fields.
            alpha = 2 * np.pi * np.mod(y * np.sin(theta) / self.period_px, 1.0)
            cos_a = np.cos(alpha).astype(np.float32)[:, None]
            sin_a = np.sin(alpha).astype(np.float32)[:, None]
            for p in range(self.n_phases):
                cycles = x * np.cos(theta) / self.period_px + p / self.n_phases
                beta = 2 * np.pi * np.mod(cycles, 1.0)
                cos_b = np.cos(beta).astype(np.float32)[None, :]
                sin_b = np.sin(beta).astype(np.float32)[None, :]
                frame = out[a, p]
                np.multiply(cos_a, cos_b, out=frame)
                frame -= sin_a * sin_b
                frame *= half_mod
                frame += np.float32(0.5)
        # Rounding of the product form can overshoot [0, 1] by an ulp at full modulation.
        return np.clip(out, 0.0, 1.0, out=out)


def psf_blur(structure: np.ndarray, sigma_px: float) -> np.ndarray:
    """Blur ``structure`` with a periodic Gaussian PSF and rescale its maximum to 1.

    Parameters
    ----------
    structure : numpy.ndarray
        ``(H, W)`` non-negative image with a positive maximum.
    sigma_px : float
        PSF standard deviation in pixels, >= 0 (0 leaves the image unblurred).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 in [0, 1] with maximum 1.
    """
    sigma_px = check_float(sigma_px, name="psf_sigma_px", minimum=0.0)
    image = np.asarray(structure, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"structure must be a 2-D (H, W) array; got shape {image.shape}")
    # Periodic boundaries match the periodic structures and the wrap-around drift.
    blurred = ndimage.gaussian_filter(image, sigma_px, mode="wrap") if sigma_px > 0 else image
    peak = blurred.max()
    if not peak > 0:
        raise ValueError("structure must have a positive maximum to be normalized")
    return np.clip(blurred / peak, 0.0, 1.0).astype(np.float32)
