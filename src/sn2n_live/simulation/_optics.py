"""Optics of the simulated microscope: a Gaussian PSF and structured illumination.

The detection PSF is a periodic Gaussian of standard deviation ``sigma`` (pixels), so its
optical transfer function (OTF) is ``exp(-2π² σ² |f|²)`` with ``f`` in cycles/px. A
Gaussian has no hard band limit, so the cut-off is defined by the physics it stands for:
the best Gaussian fit to the paraxial widefield PSF has ``σ ≈ 0.21 λ/NA`` (Zhang, Zerubia
& Olivo-Marin, Appl. Opt. 46:1819, 2007), whose incoherent cut-off ``2 NA/λ`` is then
``f_c = 0.42 / σ``. There the Gaussian OTF is ``exp(-2π² 0.42²) ≈ 3 %`` and it keeps
falling fast (0.7 % at 1.2 ``f_c``, 0.04 % at 1.5 ``f_c``). For the default ``σ = 1.5 px``
(~100 nm at 65 nm pixels: λ/NA ≈ 460 nm) ``f_c = 0.28`` cycles/px, and the default SIM
pattern sits at 0.85 ``f_c``: a period of ``1 / (0.85 f_c) ≈ 4.20 px``, where the OTF is
about 8 %, close to a real widefield OTF's ~7 % at that fraction of its cut-off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import fft

from ._checks import check_float, check_shape

DEFAULT_PSF_SIGMA_PX = 1.5
# The detection PSF's model: "gaussian" (the default), or "ideal", the aberration-free
# widefield OTF of a circular pupil with the same cut-off 2 NA/λ = 0.42/σ, which (unlike
# the Gaussian) passes nothing beyond it.
PSFKind = Literal["gaussian", "ideal"]
PSF_KINDS: tuple[str, ...] = get_args(PSFKind)
# 2 NA/λ in units of 1/σ for the Gaussian fit σ = 0.21 λ/NA (see the module docstring).
_CUTOFF_TIMES_SIGMA = 0.42
# Where a SIM pattern frequency usually sits: inside the OTF support, close to its edge.
DEFAULT_PATTERN_FRACTION_OF_CUTOFF = 0.85


def otf_cutoff(psf_sigma_px: float) -> float:
    """Return the optical cut-off frequency of a Gaussian PSF, in cycles/px.

    Parameters
    ----------
    psf_sigma_px : float
        PSF standard deviation in pixels, > 0.

    Returns
    -------
    float
        ``0.42 / psf_sigma_px``, the ``2 NA/λ`` of the widefield PSF this Gaussian fits
        (see the module docstring).
    """
    sigma = check_float(psf_sigma_px, name="psf_sigma_px", minimum=0.0, strict=True)
    return _CUTOFF_TIMES_SIGMA / sigma


def otf(
    frequency: float | np.ndarray, psf_sigma_px: float, kind: PSFKind = "gaussian"
) -> float | np.ndarray:
    """Return the OTF at ``frequency`` (cycles/px).

    Parameters
    ----------
    frequency : float or numpy.ndarray
        Spatial frequency magnitude(s) in cycles/px.
    psf_sigma_px : float
        PSF standard deviation in pixels, >= 0 (0 is a perfect system, OTF 1).
    kind : {"gaussian", "ideal"}
        ``"gaussian"``: ``exp(-2π² σ² f²)``. ``"ideal"``: ``(2/π)(acos ρ - ρ √(1-ρ²))``
        with ``ρ = f / otf_cutoff(σ)``, 0 beyond the cut-off.

    Returns
    -------
    float or numpy.ndarray
        The OTF, in [0, 1].
    """
    sigma = check_float(psf_sigma_px, name="psf_sigma_px", minimum=0.0)
    if kind not in PSF_KINDS:
        raise ValueError(f"psf kind must be one of {PSF_KINDS}; got {kind!r}")
    if kind == "gaussian" or sigma == 0:
        return np.exp(-2.0 * np.pi**2 * sigma**2 * np.square(frequency))
    values = pupil_otf(
        np.abs(np.asarray(frequency, dtype=np.float64)) * sigma / _CUTOFF_TIMES_SIGMA
    )
    return float(values) if np.ndim(values) == 0 else values


def pupil_otf(rho: float | np.ndarray) -> np.ndarray:
    """Return the aberration-free OTF of a circular pupil, ``(2/π)(acos ρ - ρ √(1-ρ²))``.

    ``rho`` is the frequency over the cut-off ``2 NA/λ``; the OTF is 0 from ``ρ = 1`` on.
    """
    r = np.clip(np.asarray(rho, dtype=np.float64), 0.0, 1.0)
    return (2.0 / np.pi) * (np.arccos(r) - r * np.sqrt(1.0 - r * r))


def otf_grid(shape: Sequence[int], psf_sigma_px: float, kind: PSFKind = "gaussian") -> np.ndarray:
    """Return the OTF on the ``scipy.fft.rfft2`` frequency grid of ``shape``.

    Multiplying a field's ``rfft2`` by it and transforming back is a periodic
    convolution with the (unit-sum) PSF.

    Parameters
    ----------
    shape : sequence of int
        ``(height, width)`` in pixels, each >= 16.
    psf_sigma_px : float
        PSF standard deviation in pixels, >= 0.
    kind : {"gaussian", "ideal"}
        The PSF model (see :func:`otf`).

    Returns
    -------
    numpy.ndarray
        ``(height, width // 2 + 1)`` float32.
    """
    h, w = check_shape(shape)
    fy = fft.fftfreq(h)[:, None]
    fx = fft.rfftfreq(w)[None, :]
    if kind == "gaussian":
        # Separable: exp(-c (fy² + fx²)) is an outer product of two 1-D OTFs.
        return (otf(fy, psf_sigma_px) * otf(fx, psf_sigma_px)).astype(np.float32)
    return np.asarray(otf(np.hypot(fy, fx), psf_sigma_px, kind), dtype=np.float32)


DEFAULT_PERIOD_PX = 1.0 / (DEFAULT_PATTERN_FRACTION_OF_CUTOFF * otf_cutoff(DEFAULT_PSF_SIGMA_PX))


class SIMIllumination(BaseModel):
    """Sinusoidal 2-D SIM excitation: ``n_angles`` orientations x ``n_phases`` phases.

    Pattern ``(a, p)`` is ``0.5 * (1 + modulation * cos(2π k_a·r + φ_p))`` with ``r = (y,
    x)`` in pixels from the centre of the top-left pixel, wave vector ``k_a = (sin θ_a,
    cos θ_a) / period_px`` in cycles/px (see :meth:`wavevectors`), ``θ_a = orientation_deg
    + a * 180° / n_angles`` and phase ``φ_p = 2π p / n_phases`` (see :meth:`phases_rad`).
    ``θ = 0`` gives stripes that vary along the columns (x). Every pattern lies in [0, 1],
    has mean 0.5 and peak ``0.5 * (1 + modulation)``.

    This is the *excitation* in the focal plane. The detection PSF blurs the stripes
    together with the sample, so their contrast in the camera image is ``modulation *
    OTF(1 / period_px)`` (:meth:`image_modulation`), before out-of-focus haze and
    background dilute it further.

    Parameters
    ----------
    n_angles : int
        Number of pattern orientations, >= 1.
    n_phases : int
        Number of equally spaced phase steps per orientation, >= 1.
    period_px : float
        Stripe period in pixels, >= 2 (the sampling limit). The default, ``1 / (0.85
        f_c) ≈ 4.20 px`` for the default 1.5 px PSF, puts the pattern frequency at 0.85 of
        the optical cut-off ``f_c`` (see :func:`otf_cutoff`); for another PSF use
        ``period_px=1 / (0.85 * otf_cutoff(sigma))``.
    modulation : float
        Excitation modulation depth in [0, 1]; 0 is uniform widefield illumination.
    orientation_deg : float
        Orientation of the first angle, in degrees.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    n_angles: int = Field(default=3, ge=1)
    n_phases: int = Field(default=3, ge=1)
    period_px: float = Field(default=DEFAULT_PERIOD_PX, ge=2.0)
    modulation: float = Field(default=0.8, ge=0.0, le=1.0)
    orientation_deg: float = 0.0

    @classmethod
    def widefield(cls) -> SIMIllumination:
        """Return uniform widefield illumination: one unmodulated "pattern" of level 0.5."""
        return cls(n_angles=1, n_phases=1, modulation=0.0)

    @property
    def peak(self) -> float:
        """Maximum intensity of any pattern, ``0.5 * (1 + modulation)``."""
        return 0.5 * (1.0 + self.modulation)

    def angles_rad(self) -> np.ndarray:
        """Return the ``n_angles`` pattern orientations in radians."""
        return np.deg2rad(self.orientation_deg) + np.arange(self.n_angles) * np.pi / self.n_angles

    def wavevectors(self) -> np.ndarray:
        """Return the ``(n_angles, 2)`` pattern wave vectors ``(ky, kx)`` in cycles/px."""
        theta = self.angles_rad()
        return np.stack([np.sin(theta), np.cos(theta)], axis=1) / self.period_px

    def phases_rad(self) -> np.ndarray:
        """Return the ``(n_angles, n_phases)`` pattern phases at ``r = 0``, in radians."""
        steps = 2 * np.pi * np.arange(self.n_phases) / self.n_phases
        return np.broadcast_to(steps, (self.n_angles, self.n_phases)).copy()

    def image_modulation(self, psf_sigma_px: float, kind: PSFKind = "gaussian") -> float:
        """Return the stripe modulation in the in-focus camera image.

        Parameters
        ----------
        psf_sigma_px : float
            PSF standard deviation in pixels, >= 0.
        kind : {"gaussian", "ideal"}
            The PSF model (see :func:`otf`).

        Returns
        -------
        float
            ``modulation * OTF(1 / period_px)``: the relative stripe amplitude that a
            uniform in-focus density shows, without haze or background.
        """
        return float(self.modulation * otf(1.0 / self.period_px, psf_sigma_px, kind))

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
    """Blur ``structure`` with the periodic Gaussian PSF and rescale its maximum to 1.

    Parameters
    ----------
    structure : numpy.ndarray
        ``(H, W)`` non-negative image with a positive maximum, each side >= 16.
    sigma_px : float
        PSF standard deviation in pixels, >= 0 (0 leaves the image unblurred).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 in [0, 1] with maximum 1.
    """
    return blur_and_normalize(structure, sigma_px)[0]


def blur_and_normalize(
    structure: np.ndarray, sigma_px: float, kind: PSFKind = "gaussian"
) -> tuple[np.ndarray, float]:
    """Return :func:`psf_blur` of ``structure`` and the blurred maximum it divided by."""
    sigma_px = check_float(sigma_px, name="psf_sigma_px", minimum=0.0)
    image = np.asarray(structure, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"structure must be a 2-D (H, W) array; got shape {image.shape}")
    # Periodic boundaries match the periodic structures and the wrap-around drift; the
    # same OTF grid as the image formation, so this is exactly its in-focus blur.
    if sigma_px > 0:
        image = fft.irfft2(fft.rfft2(image) * otf_grid(image.shape, sigma_px, kind), s=image.shape)
    peak = float(image.max())
    if not peak > 0:
        raise ValueError("structure must have a positive maximum to be normalized")
    return np.clip(image / peak, 0.0, 1.0).astype(np.float32), peak
