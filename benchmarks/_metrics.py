"""Pure metric and variance-stabilization helpers of ``benchmarks/peers.py``.

numpy, scipy and scikit-image only (no torch, careamics or bm3d), so the unit tests in
``tests/test_peer_metrics.py`` run on the default dev install.

Detection metrics share one definition of "detected": a pixel whose estimate exceeds the
Otsu threshold of that estimate (one threshold per frame). The background false-positive
fraction is the detection rate over true-background pixels, the thin-structure recall the
detection rate over thin-structure pixels, so the two read like the two axes of a ROC.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.filters import threshold_otsu
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = [
    "background_bias",
    "background_false_positive",
    "detected",
    "estimate_noise_sigma",
    "gat_forward",
    "gat_inverse",
    "psnr",
    "score_frames",
    "ssim",
    "thin_recall",
]


def _data_range(clean: np.ndarray) -> float:
    return float(clean.max() - clean.min())


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """PSNR in dB of one frame against the noise-free truth.

    Parameters
    ----------
    estimate, clean : numpy.ndarray
        ``(H, W)`` frames in the same units.

    Returns
    -------
    float
        ``10 log10(range² / MSE)`` with the data range of ``clean``; ``inf`` when identical.
    """
    ref = np.asarray(clean, np.float64)
    est = np.asarray(estimate, np.float64)
    if np.array_equal(ref, est):  # skimage divides by a zero MSE (RuntimeWarning)
        return math.inf
    return float(peak_signal_noise_ratio(ref, est, data_range=_data_range(ref)))


def ssim(estimate: np.ndarray, clean: np.ndarray) -> float:
    """SSIM of one frame (skimage defaults: 7x7 window) with the data range of ``clean``."""
    ref = np.asarray(clean, np.float64)
    return float(
        structural_similarity(ref, np.asarray(estimate, np.float64), data_range=_data_range(ref))
    )


def detected(estimate: np.ndarray) -> np.ndarray:
    """Pixels above the Otsu threshold of ``estimate`` (bool, same shape)."""
    est = np.asarray(estimate, np.float64)
    if est.min() == est.max():  # Otsu is undefined on a flat frame: nothing stands out
        return np.zeros(est.shape, bool)
    return est > threshold_otsu(est)


def background_false_positive(estimate: np.ndarray, background: np.ndarray) -> float:
    """Fraction of true-background pixels detected (above the estimate's Otsu threshold).

    Parameters
    ----------
    estimate : numpy.ndarray
        ``(H, W)`` frame.
    background : numpy.ndarray
        bool ``(H, W)``: pixels with no structure within the PSF (the simulator's
        ``background_mask``).

    Returns
    -------
    float
        In [0, 1]; NaN when the mask is empty.
    """
    return _detected_fraction(estimate, background)


def _detected_fraction(estimate: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of ``mask`` pixels above the estimate's Otsu threshold; NaN if empty."""
    mask = np.asarray(mask, bool)
    return float(detected(estimate)[mask].mean()) if mask.any() else math.nan


def background_bias(estimate: np.ndarray, clean: np.ndarray, background: np.ndarray) -> float:
    """Mean of ``estimate - clean`` over true-background pixels, in the frames' units (ADU).

    A denoiser that lifts the dark background (a common failure of range normalization at
    low light) shows a positive bias; an unbiased one stays near 0. NaN for an empty mask.
    """
    mask = np.asarray(background, bool)
    if not mask.any():
        return math.nan
    diff = np.asarray(estimate, np.float64) - np.asarray(clean, np.float64)
    return float(diff[mask].mean())


def thin_recall(estimate: np.ndarray, thin: np.ndarray) -> float:
    """Fraction of thin-structure pixels detected (above the estimate's Otsu threshold).

    ``thin`` marks pixels of thin structures (filaments) in the truth. Otsu picks one
    threshold for the whole frame, set largely by the bright, extended objects. Blurring
    keeps the peak of a structure wider than the kernel but divides the peak of a line
    narrower than it, so an over-smoothing denoiser pushes thin lines below the threshold
    while wide objects stay above it: recall falls even though PSNR may rise. Read it
    together with :func:`background_false_positive` (noise can "detect" anything).

    Parameters
    ----------
    estimate : numpy.ndarray
        ``(H, W)`` frame.
    thin : numpy.ndarray
        bool ``(H, W)`` thin-structure mask (the simulator's ``thin_mask``).

    Returns
    -------
    float
        In [0, 1]; NaN when the mask is empty.
    """
    return _detected_fraction(estimate, thin)


def score_frames(
    estimate: np.ndarray, clean: np.ndarray, background: np.ndarray, thin: np.ndarray
) -> dict[str, float]:
    """All per-frame metrics averaged over a stack of frames.

    Parameters
    ----------
    estimate, clean : numpy.ndarray
        ``(N, H, W)`` estimates and their noise-free truth (ADU).
    background, thin : numpy.ndarray
        bool ``(H, W)`` masks shared by all frames, or ``(N, H, W)``.

    Returns
    -------
    dict of str to float
        ``psnr_db``, ``ssim``, ``background_false_positive``, ``background_bias_adu``,
        ``thin_recall``: means over the frames.
    """
    est = np.asarray(estimate)
    ref = np.asarray(clean)
    if est.shape != ref.shape or est.ndim != 3:
        raise ValueError(f"expected two (N, H, W) stacks; got {est.shape} and {ref.shape}")
    bg = np.broadcast_to(np.asarray(background, bool), ref.shape)
    th = np.broadcast_to(np.asarray(thin, bool), ref.shape)
    rows = [
        (
            psnr(e, c),
            ssim(e, c),
            background_false_positive(e, b),
            background_bias(e, c, b),
            thin_recall(e, t),
        )
        for e, c, b, t in zip(est, ref, bg, th, strict=True)
    ]
    names = ("psnr_db", "ssim", "background_false_positive", "background_bias_adu", "thin_recall")
    return {
        name: float(np.mean(col)) for name, col in zip(names, zip(*rows, strict=True), strict=True)
    }


# -- variance stabilization (BM3D's input and output) ---------------------------------------


def gat_forward(
    adu: np.ndarray, *, offset_adu: float, gain_adu_per_e: float, read_noise_adu: float
) -> np.ndarray:
    """Generalized Anscombe transform of Poisson-Gaussian camera frames.

    For ``z = offset + g * Poisson(λ) + N(0, σ²)`` (ADU), ``2/g * sqrt(g (z - offset) +
    3/8 g² + σ²)`` has a noise standard deviation close to 1 for any ``λ`` (Makitalo &
    Foi, IEEE TIP 2013).

    Parameters
    ----------
    adu : numpy.ndarray
        Raw frames in ADU.
    offset_adu, gain_adu_per_e : float
        Camera offset (ADU) and gain (ADU per electron).
    read_noise_adu : float
        Standard deviation of the Gaussian part in ADU (read noise times gain, plus
        quantization if wanted).

    Returns
    -------
    numpy.ndarray
        float64 stabilized frames.
    """
    g = float(gain_adu_per_e)
    z = np.asarray(adu, np.float64)
    arg = g * (z - offset_adu) + 0.375 * g * g + float(read_noise_adu) ** 2
    return (2.0 / g) * np.sqrt(np.maximum(arg, 0.0))


def gat_inverse(
    stabilized: np.ndarray, *, offset_adu: float, gain_adu_per_e: float, read_noise_adu: float
) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of :func:`gat_forward`.

    Maps a denoised stabilized value ``D ≈ E[f(z)]`` back to ``E[z]`` (not ``f⁻¹(D)``, which
    is biased low at low counts); Makitalo & Foi (IEEE TIP 2013), eq. for the
    Poisson-Gaussian case, clipped at the offset as they do.

    Parameters
    ----------
    stabilized : numpy.ndarray
        Denoised output of :func:`gat_forward`'s domain.
    offset_adu, gain_adu_per_e, read_noise_adu : float
        The parameters used in the forward transform.

    Returns
    -------
    numpy.ndarray
        float64 estimate of the expected ADU.
    """
    g = float(gain_adu_per_e)
    s = float(read_noise_adu) / g
    d = np.maximum(np.asarray(stabilized, np.float64), 1e-6)  # the series has D^-k terms
    r = math.sqrt(1.5)
    x = 0.25 * d**2 + 0.25 * r / d - 1.375 / d**2 + 0.625 * r / d**3 - 0.125 - s * s
    return np.maximum(x, 0.0) * g + offset_adu


def estimate_noise_sigma(frame: np.ndarray) -> float:
    """Noise standard deviation from the median absolute Haar diagonal detail (Donoho).

    The diagonal detail ``(a - b - c + d) / 2`` of each 2x2 block has the pixel noise's
    standard deviation for white noise and almost no signal for PSF-blurred images; the
    MAD / 0.6745 of those coefficients is robust to the edges that remain.

    Parameters
    ----------
    frame : numpy.ndarray
        ``(H, W)`` frame, at least 2x2.

    Returns
    -------
    float
        Estimated sigma in the frame's units.
    """
    f = np.asarray(frame, np.float64)
    h, w = (f.shape[0] // 2) * 2, (f.shape[1] // 2) * 2
    if h < 2 or w < 2:
        raise ValueError(f"frame must be at least 2x2; got {f.shape}")
    f = f[:h, :w]
    hh = (f[0::2, 0::2] - f[0::2, 1::2] - f[1::2, 0::2] + f[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(hh - np.median(hh))) / 0.6745)
