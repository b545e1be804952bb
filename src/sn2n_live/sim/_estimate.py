"""Pattern parameters from one raw set: wave vector, phases and modulation per angle.

Per orientation, on the frames (mean subtracted, edges tapered):

1. **Wave vector.** The ``+1`` order separated with the nominal phase steps ``2πp/P``
   holds the sample's spectrum shifted by ``k``; its strongest peak inside the OTF
   support (away from zero) is ``k`` to the nearest frequency bin, and the maximum of its
   continuous Fourier transform near there (Nelder-Mead) gives ``k`` to a small fraction
   of a bin.
2. **Phases and modulation.** See :class:`_OrderFit`.
   spectrum at ``k`` (Wicker et al., Opt. Express 21:2032, 2013): ``φ = -arg Σ_r d(r)²
   e^{2πi k·r}``. No equal-step assumption, no iteration.
3. **Modulation.** The orders separated with those phases; the ``+1`` order shifted back
   by ``k`` and the ``0`` order see the same sample frequencies through two OTFs, so on
   their overlap (away from the low frequencies where out-of-focus haze and background
   sit) ``X+1(f+k) H(f) = a X0(f) H(f+k)`` with ``a = (m/2) e^{iδ}``: the least-squares
   ``a`` gives the modulation ``m`` and a common phase correction ``δ``.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

from ._calibration import AngleParameters, SIMCalibration
from ._otf import OTFModel, frequency_grid
from ._sets import as_set, dtft, edge_taper, unmixing

# Where a SIM pattern is looked for, as fractions of the optical cut-off.
_SEARCH_FROM, _SEARCH_TO = 0.25, 1.05
# With a calibration to start from: how far (fraction of the cut-off) the peak may move.
_NEAR_RADIUS = 0.05
# The modulation fit skips frequencies below this fraction of the cut-off (haze,
# background, the order 0 leaking into +1) and where either OTF is weaker than this.
_LOW_CUT = 0.2
_MIN_OTF = 0.05
# How many times the median bin the pattern's peak must be to count as found.
_MIN_PEAK_STANDOUT = 5.0
# Beyond this fraction of the cut-off a spectrum holds only noise (its power is measured).
_NOISE_FROM = 1.15


def estimate_calibration(
    frames: np.ndarray,
    otf: OTFModel,
    *,
    n_angles: int = 3,
    n_phases: int = 3,
    near: SIMCalibration | None = None,
    taper_px: int = 16,
    source: str = "",
) -> SIMCalibration:
    """Estimate the pattern parameters of every angle from one SIM set.

    Parameters
    ----------
    frames : numpy.ndarray
        One set: ``(n_angles * n_phases, H, W)`` in acquisition order (angle slow, phase
        fast) or ``(n_angles, n_phases, H, W)``; raw or denoised, in any linear unit.
        Several sets of a still sample (``(n_sets * n_angles * n_phases, H, W)`` or
        ``(n_sets, n_angles, n_phases, H, W)``) are averaged first: a dim sample's
        pattern stands out of the noise of their mean.
    otf : OTFModel
        The detection OTF.
    n_angles, n_phases : int
        The set's layout (3 x 3 and 3 x 5 are the usual ones; ``n_phases`` >= 3).
    near : SIMCalibration, optional
        An earlier calibration of the same microscope: each wave vector is searched for
        only near its earlier value (more robust on dim or sparse sets).
    taper_px : int
        Width of the cos² edge taper applied before the FFTs.
    source : str
        Provenance stored in the calibration.

    Returns
    -------
    SIMCalibration

    Raises
    ------
    ValueError
        If the set has the wrong shape, ``n_phases`` < 3, or ``near`` does not match.
    """
    if n_phases < 3:
        raise ValueError(f"separating the SIM orders needs >= 3 phases per angle; got {n_phases}")
    stack = as_set(_mean_of_sets(np.asarray(frames), n_angles * n_phases), n_angles, n_phases)
    shape = (stack.shape[-2], stack.shape[-1])
    if near is not None and (near.n_angles, near.n_phases) != (n_angles, n_phases):
        raise ValueError(
            f"the calibration to start from has {near.n_angles} x {near.n_phases} patterns; "
            f"this set has {n_angles} x {n_phases}"
        )
    window = edge_taper(shape, taper_px)
    fy, fx = frequency_grid(shape)
    radius = np.hypot(fy, fx)
    otf_here = otf.values(radius)
    angles = []
    for a in range(n_angles):
        frames_a = (stack[a] - stack[a].mean()) * window
        k_near = None if near is None else near.wavevectors()[a]
        angles.append(_estimate_angle(a, frames_a, otf, otf_here, (fy, fx), k_near))
    return SIMCalibration(shape=shape, otf=otf, angles=tuple(angles), source=source)


def _mean_of_sets(frames: np.ndarray, set_size: int) -> np.ndarray:
    if frames.ndim == 5:
        return frames.mean(axis=0)
    if frames.ndim == 3 and frames.shape[0] > set_size and frames.shape[0] % set_size == 0:
        return frames.reshape(-1, set_size, *frames.shape[1:]).mean(axis=0)
    return frames


def _estimate_angle(
    angle: int,
    frames: np.ndarray,
    otf: OTFModel,
    otf_here: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray],
    k_near: np.ndarray | None,
) -> AngleParameters:
    n_phases = frames.shape[0]
    nominal = 2 * np.pi * np.arange(n_phases) / n_phases
    spectra = np.fft.fft2(frames)
    steps = np.exp(-1j * nominal)[:, None, None]
    plus = np.sum(spectra * steps, axis=0) / n_phases
    zero = np.mean(spectra, axis=0)
    k, standout = _coarse_peak(plus, otf.cutoff, grid, k_near)
    if standout >= _MIN_PEAK_STANDOUT:
        k = _refine_wavevector(plus, zero, k, otf, otf_here, grid)
    elif k_near is not None:
        k = np.asarray(k_near, dtype=np.float64)  # lost in the noise: keep the known one
    else:
        raise ValueError(
            f"angle {angle}: no pattern peak stands out of the noise (peak {standout:.1f}x "
            f"the median, needs {_MIN_PEAK_STANDOUT:g}x): the set is too dim or unmodulated to "
            "calibrate on. Calibrate on a brighter set, or on several sets of a still sample "
            "at once, and reuse that calibration"
        )
    fit = _OrderFit(frames, k, otf, otf_here, grid)
    ratios = fit.ratios(zero)
    # The 0 order again, now separated with the phases found (steps need not be equal).
    phases = np.angle(ratios)
    zero = np.fft.fft2(np.tensordot(unmixing(phases)[0], frames, axes=1).real)
    ratios = fit.ratios(zero)
    phases = np.angle(ratios)
    return AngleParameters(
        wavevector=(float(k[0]), float(k[1])),
        phases_rad=tuple(float(p) for p in phases),
        modulation=float(2.0 * np.mean(np.abs(ratios))),
    )


def _coarse_peak(
    plus: np.ndarray,
    cutoff: float,
    grid: tuple[np.ndarray, np.ndarray],
    k_near: np.ndarray | None,
) -> tuple[np.ndarray, float]:
    """Return the strongest bin where the pattern may be, and how far it stands out.

    Noise alone puts the maximum of a few thousand bins at ~4x their median.
    """
    fy, fx = grid
    radius = np.hypot(fy, fx)
    annulus = (radius >= _SEARCH_FROM * cutoff) & (radius <= min(_SEARCH_TO * cutoff, 0.5))
    if k_near is None:
        allowed = annulus
    else:
        # The nominal steps fix the sign: the peak is at +k of the earlier calibration.
        allowed = np.hypot(fy - k_near[0], fx - k_near[1]) <= _NEAR_RADIUS * cutoff
    if not allowed.any() or not annulus.any():
        raise ValueError(
            "no frequency of these frames lies where the pattern is searched for; "
            "check the OTF's cut-off (psf_sigma_px, or na/wavelength_nm/pixel_nm)"
        )
    magnitude = np.where(allowed, np.abs(plus), -1.0)
    iy, ix = np.unravel_index(int(np.argmax(magnitude)), magnitude.shape)
    typical = float(np.median(np.abs(plus[annulus])))
    standout = magnitude[iy, ix] / typical if typical > 0 else 0.0
    return np.array([fy[iy, 0], fx[0, ix]]), float(standout)


def _refine_wavevector(
    plus: np.ndarray,
    zero: np.ndarray,
    k0: np.ndarray,
    otf: OTFModel,
    otf_here: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Maximize the cross-correlation of the +1 order with the 0 order shifted by k.

    ``X+1(f) = c S(f-k) H(f)`` and ``X0(f-k) = S(f-k) H(f-k)`` hold the same sample
    frequencies, so ``|Σ_f X+1(f) H(f-k) conj(X0(f-k) H(f))|`` peaks at the true ``k``
    whatever the sample (the +1 order's own peak is pulled by the sample's spectrum). The
    0 order's low frequencies (haze, background) are left out.
    """
    fy, fx = grid
    otf_shifted = otf.values(np.hypot(fy - k0[0], fx - k0[1]))
    high_pass = np.hypot(fy, fx) > _LOW_CUT * otf.cutoff
    plus_weighted = np.fft.ifft2(plus * otf_shifted)
    zero_weighted = np.fft.ifft2(zero * otf_here * high_pass)
    product = plus_weighted * np.conj(zero_weighted)  # Parseval: the correlation's DTFT
    h, w = plus.shape
    step = 1.0 / max(h, w)
    result = optimize.minimize(
        lambda k: -abs(dtft(product, k)),
        k0,
        method="Nelder-Mead",
        options={
            "initial_simplex": [k0, k0 + np.array([0.5 * step, 0]), k0 + np.array([0, 0.5 * step])],
            "xatol": 1e-4 * step,
            "fatol": 1e-12 * abs(dtft(product, k0)),
        },
    )
    return np.asarray(result.x, dtype=np.float64)


class _OrderFit:
    """Each frame's ``+1`` order against the 0 order: ``a_p = (m/2) e^{iφ_p}``.

    A frame minus the 0 order, moved by ``-k``, holds ``e^{iφ_p} X+1(f+k) = e^{iφ_p} (m/2)
    S(f) H(f+k)`` near zero frequency, where the 0 order holds ``S(f) H(f)``. On their
    overlap (both OTFs above ``_MIN_OTF``, away from the low frequencies of haze and
    background) the least-squares ratio is ``(m/2) e^{iφ_p}``, with the pattern's phase at
    the field's centre: every frequency of the sample takes part, not one peak. The noise
    power in the 0 order (measured beyond the OTF's support) is taken out of the
    denominator, or the modulation would shrink with the light.
    """

    def __init__(
        self,
        frames: np.ndarray,
        k: np.ndarray,
        otf: OTFModel,
        otf_here: np.ndarray,
        grid: tuple[np.ndarray, np.ndarray],
    ) -> None:
        fy, fx = grid
        h, w = frames.shape[-2:]
        ramp = np.exp(
            -2j * np.pi * np.add.outer(k[0] * field_coordinates(h), k[1] * field_coordinates(w))
        )
        self._frames = frames
        self._ramp = ramp
        radius = np.hypot(fy, fx)
        radius_k = np.hypot(fy + k[0], fx + k[1])
        self._otf_here = otf_here
        self._otf_k = otf.values(radius_k)
        cut = _LOW_CUT * otf.cutoff
        self._overlap = (
            (otf_here > _MIN_OTF) & (self._otf_k > _MIN_OTF) & (radius > cut) & (radius_k > cut)
        )
        if self._overlap.sum() < 16:
            raise ValueError(
                "the pattern's orders barely overlap under this OTF (its frequency is too "
                "close to the cut-off): the modulation cannot be measured; check the OTF"
            )
        beyond = (radius > _NOISE_FROM * otf.cutoff) & (radius < 0.5)
        self._beyond = beyond if beyond.sum() >= 64 else None

    def ratios(self, zero: np.ndarray) -> np.ndarray:
        """``a_p`` for every frame, given the 0 order's spectrum ``zero``."""
        overlap = self._overlap
        reference = (zero * self._otf_k)[overlap]
        weights = self._otf_k[overlap] ** 2
        den = float(np.sum(np.abs(zero[overlap]) ** 2 * weights))
        if self._beyond is not None:  # the noise's share, in expectation (not per bin)
            den -= float(np.mean(np.abs(zero[self._beyond]) ** 2)) * float(np.sum(weights))
        if den <= 0:
            raise ValueError(
                "the set is too dim to measure the pattern's phases and modulation on (its "
                "structure does not stand out of the noise); calibrate on a brighter set, or "
                "on several sets of a still sample at once, and reuse that calibration"
            )
        zero_image = np.fft.ifft2(zero)
        out = np.empty(self._frames.shape[0], dtype=np.complex128)
        for p, frame in enumerate(self._frames):
            moved = np.fft.fft2((frame - zero_image) * self._ramp)
            out[p] = np.sum((moved * self._otf_here)[overlap] * np.conj(reference)) / den
        return out


def field_coordinates(n: int) -> np.ndarray:
    """Pixel coordinates from the field's centre pixel ``n // 2``: the phases' origin."""
    return np.arange(n, dtype=np.float64) - n // 2
