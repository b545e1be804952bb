"""Image-quality metrics of the dose sweep: pure numpy, scipy and scikit-image.

Conventions: frames are 2-D float arrays in the same photometric units; frequencies are in
cycles per pixel of the frame given (0 .. 0.5); resolutions are in pixels (the period at
which the Fourier ring correlation falls below its threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity
from skimage.registration import phase_cross_correlation

__all__ = [
    "FRC_THRESHOLD",
    "BleachingFit",
    "FRCCurve",
    "best_gaussian",
    "bleaching_rate",
    "frc",
    "psnr",
    "register",
    "shift_image",
    "snr_db",
    "ssim",
    "twin_frc_resolution",
]

# The usual fixed FRC threshold (Nieuwenhuizen et al. 2013, Nat. Methods 10:557).
FRC_THRESHOLD = 1.0 / 7.0


@dataclass(frozen=True)
class FRCCurve:
    """A Fourier ring correlation curve.

    Attributes
    ----------
    frequency : numpy.ndarray
        Ring centres in cycles/px of the frames correlated (scaled by ``pixel_scale``).
    correlation : numpy.ndarray
        FRC per ring, in [-1, 1].
    """

    frequency: np.ndarray
    correlation: np.ndarray

    def resolution_px(self, threshold: float = FRC_THRESHOLD) -> float:
        """Period (px) at the first crossing of ``threshold`` (linear interpolation).

        Returns ``1 / max(frequency)`` when the curve never falls below the threshold
        (resolution limited by sampling) and ``inf`` when it starts below it.
        """
        c = _smooth(self.correlation)
        f = self.frequency
        below = np.flatnonzero(c < threshold)
        if below.size == 0:
            return float(1.0 / f[-1])
        i = int(below[0])
        if i == 0:
            return math.inf
        c0, c1 = c[i - 1], c[i]
        crossing = f[i - 1] + (c0 - threshold) / (c0 - c1) * (f[i] - f[i - 1])
        return float(1.0 / crossing)


def _smooth(values: np.ndarray) -> np.ndarray:
    """Three-ring running mean (the ends averaged with their one neighbour)."""
    padded = np.concatenate([values[:1], values, values[-1:]])
    return (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0


def _window(shape: tuple[int, int], alpha: float = 0.25) -> np.ndarray:
    """Separable Tukey window: no edge discontinuity leaks into the high frequencies."""
    from scipy.signal.windows import tukey

    return np.outer(tukey(shape[0], alpha), tukey(shape[1], alpha))


def frc(a: np.ndarray, b: np.ndarray, *, pixel_scale: float = 1.0) -> FRCCurve:
    """Fourier ring correlation of two independent measurements of one image.

    Parameters
    ----------
    a, b : numpy.ndarray
        ``(H, W)`` frames of the same field with independent noise.
    pixel_scale : float
        Size of their pixels in the output's pixels (2 for diagonal twins, whose pixels
        are twice a frame's): frequencies are divided by it.

    Returns
    -------
    FRCCurve
        Rings of width ``1 / min(H, W)`` from the first non-zero ring to Nyquist.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"frc needs two 2-D frames of one shape; got {a.shape} and {b.shape}")
    if min(a.shape) < 16:
        raise ValueError(f"frc needs frames of at least 16 x 16 px; got {a.shape}")
    window = _window(a.shape)
    fa = np.fft.fft2((a - a.mean()) * window)
    fb = np.fft.fft2((b - b.mean()) * window)
    fy = np.fft.fftfreq(a.shape[0])[:, None]
    fx = np.fft.fftfreq(a.shape[1])[None, :]
    n = min(a.shape)
    rings = np.rint(np.hypot(fy, fx) * n).astype(int).ravel()
    top = n // 2
    keep = (rings >= 1) & (rings <= top)
    idx = rings[keep]
    cross = np.bincount(idx, (fa * fb.conj()).real.ravel()[keep], minlength=top + 1)[1:]
    pa = np.bincount(idx, (np.abs(fa) ** 2).ravel()[keep], minlength=top + 1)[1:]
    pb = np.bincount(idx, (np.abs(fb) ** 2).ravel()[keep], minlength=top + 1)[1:]
    denom = np.sqrt(pa * pb)
    correlation = np.divide(cross, denom, out=np.zeros_like(cross), where=denom > 0)
    frequency = np.arange(1, top + 1) / n / pixel_scale
    return FRCCurve(frequency=frequency, correlation=correlation)


def _twins(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the diagonal twins (same definition as ``sn2n_live.method.diagonal_twins``)."""
    x = np.asarray(frame, np.float64)
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :w]
    a = 0.5 * (x[0::2, 0::2] + x[1::2, 1::2])
    b = 0.5 * (x[0::2, 1::2] + x[1::2, 0::2])
    return a, b


def twin_frc_resolution(frame: np.ndarray, threshold: float = FRC_THRESHOLD) -> float:
    """Reference-free resolution of one raw frame (px), from its two diagonal twins.

    The twins share the signal and carry independent shot and read noise; their pixels
    are 2 frame pixels wide, so the curve's frequencies are halved and the resolution is
    in frame pixels (at best 4 px, the twins' Nyquist period). Only for raw frames: a
    denoised frame's twins no longer have independent noise.
    """
    a, b = _twins(frame)
    return frc(a, b, pixel_scale=2.0).resolution_px(threshold)


def snr_db(a: np.ndarray, b: np.ndarray | None = None) -> float:
    """Signal-to-noise ratio (dB) from two independent measurements.

    With ``b``: signal power ``cov(a, b)``, noise power ``var(a - b) / 2`` (the noise of
    one measurement). Without: the diagonal twins of the raw frame ``a`` are the two
    measurements, and the SNR is that of the frame (the twins' noise halved).
    """
    scale = 1.0
    if b is None:
        a, b = _twins(a)
        scale = 2.0  # a frame pixel's noise variance is half its twin's
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    noise = np.var(a - b) / 2.0 / scale
    signal = float(np.mean((a - a.mean()) * (b - b.mean())))
    if noise <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return float(10.0 * math.log10(signal / noise))


def register(moving: np.ndarray, fixed: np.ndarray, *, upsample: int = 50) -> tuple[float, float]:
    """Shift ``(dy, dx)`` that brings ``moving`` onto ``fixed`` (phase correlation).

    Subpixel to ``1 / upsample`` px (the DFT up-sampling of Guizar-Sicairos et al. 2008);
    apply it with :func:`shift_image`.
    """
    shift, _, _ = phase_cross_correlation(
        np.asarray(fixed, np.float64),
        np.asarray(moving, np.float64),
        upsample_factor=upsample,
        normalization=None,
    )
    return float(shift[0]), float(shift[1])


def shift_image(image: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Shift by ``(dy, dx)`` px with cubic splines (edges: nearest value)."""
    return ndimage.shift(np.asarray(image, np.float64), shift, order=3, mode="nearest")


def psnr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """PSNR (dB) against ``reference``, with the reference's data range."""
    ref = np.asarray(reference, np.float64)
    mse = float(np.mean((np.asarray(estimate, np.float64) - ref) ** 2))
    span = float(ref.max() - ref.min())
    if mse == 0:
        return math.inf
    return float(10.0 * math.log10(span**2 / mse)) if span > 0 else -math.inf


def ssim(estimate: np.ndarray, reference: np.ndarray) -> float:
    """SSIM (scikit-image defaults, 7 x 7 window) with the reference's data range."""
    ref = np.asarray(reference, np.float64)
    span = float(ref.max() - ref.min()) or 1.0
    return float(structural_similarity(ref, np.asarray(estimate, np.float64), data_range=span))


def best_gaussian(
    raw: np.ndarray,
    reference: np.ndarray,
    sigmas: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0),
) -> tuple[float, np.ndarray]:
    """Find the Gaussian filter of ``raw`` with the highest PSNR against ``reference``.

    Returns
    -------
    (sigma, filtered)
        The fitted sigma (px) and the filtered frame.
    """
    raw = np.asarray(raw, np.float64)
    best: tuple[float, float, np.ndarray] | None = None
    for sigma in sigmas:
        filtered = ndimage.gaussian_filter(raw, sigma, mode="reflect")
        score = psnr(filtered, reference)
        if best is None or score > best[0]:
            best = (score, sigma, filtered)
    assert best is not None
    return best[1], best[2]


@dataclass(frozen=True)
class BleachingFit:
    """Exponential photobleaching fitted over the sweep.

    Attributes
    ----------
    rate_per_dose : float
        Fraction of the fluorescence lost per unit of dose (``k`` of ``exp(-k D)``);
        0 when nothing bleaches (a negative fit is reported as is).
    remaining : float
        Fluorescence left after the whole sweep, ``exp(-k D_total)``.
    brightness : numpy.ndarray
        Intensity per unit dose of each measurement, relative to the first.
    cumulative_dose : numpy.ndarray
        Dose delivered before each measurement (the same units as ``doses``).
    """

    rate_per_dose: float
    remaining: float
    brightness: np.ndarray
    cumulative_dose: np.ndarray


def bleaching_rate(doses: np.ndarray, mean_intensities: np.ndarray) -> BleachingFit:
    """Fit ``I_i / D_i = I_0 exp(-k * sum_{j<i} D_j)`` over measurements in acquisition order.

    Parameters
    ----------
    doses : numpy.ndarray
        Dose of each measurement (e.g. exposure_ms x laser fraction), in acquisition order.
    mean_intensities : numpy.ndarray
        Mean offset-subtracted intensity of each measurement.
    """
    d = np.asarray(doses, np.float64)
    i = np.asarray(mean_intensities, np.float64)
    if d.shape != i.shape or d.ndim != 1 or d.size < 2:
        raise ValueError("bleaching_rate needs two 1-D arrays of one length >= 2")
    if np.any(d <= 0):
        raise ValueError("bleaching_rate needs doses > 0")
    brightness = np.maximum(i / d, 1e-12)
    before = np.concatenate([[0.0], np.cumsum(d)[:-1]])
    slope = np.polyfit(before, np.log(brightness), 1)[0] if np.ptp(before) > 0 else 0.0
    rate = float(-slope)
    return BleachingFit(
        rate_per_dose=rate,
        remaining=float(math.exp(-rate * d.sum())),
        brightness=brightness / brightness[0],
        cumulative_dose=before,
    )
