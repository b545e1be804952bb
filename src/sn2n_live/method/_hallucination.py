"""Hallucination-risk map: where two independent noisy looks at a frame denoise differently.

The two diagonal twins of a frame carry the same signal and independent noise. A denoiser
that restores signal gives (nearly) the same output for both; one that invents structure
from noise invents *different* structure from each twin. The twins' own difference
``e = A - B`` is pure noise (the signal cancels), so it calibrates, pixel by pixel, how much
disagreement the noise alone could cause: a network whose output depends on its input only
through a (locally) contracting map — what a denoiser is — disagrees by less than that.

The statistic is the local energy ratio ``rho = G * (f(A) - f(B))^2 / G * (A - B)^2`` (``G``
a small Gaussian window). ``rho <= 1`` is explained by the noise; ``rho > 1`` means the
network amplified the twins' noise into content. The risk map is
``clip((rho - 1) / (RHO_SATURATED - 1), 0, 1)``: 0 where the noise explains the
disagreement, 1 where the outputs disagree with twice the noise's amplitude (``rho >= 4``)
or more; the per-frame risk fraction is the fraction of pixels with risk above 0.5.

Disagreement cannot see what both twins' outputs share: a normalization that lifts a whole
background tile lifts it for both twins alike (measured: the patch-wise ``local`` model at
5 photons lifts 20 % of the background by ~0.9 ADU, and the disagreement map flags 0.2 % of
it). :func:`fidelity_risk` therefore also tests the output against the data: the local mean
of ``output - raw`` over the same window, divided by its standard error under the twins'
noise. A faithful denoiser keeps local means (smoothing moves intensity within a window,
not into it), so only an output that stands above its data by more than the noise explains
scores; it is one-sided because invented intensity is what the map is for (signal lost to
smoothing is measured elsewhere). The denoiser's map is the larger of the two risks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FIDELITY_Z",
    "RHO_SATURATED",
    "Denoised",
    "fidelity_risk",
    "hallucination_risk",
    "risk_fraction",
]

# Disagreement energy (relative to the twins' noise energy) at which the risk saturates.
RHO_SATURATED = 4.0
# Local window of the energy estimates: wide enough to average ~50 pixels of noise
# (relative error ~0.2), narrow enough to localize a filament.
_WINDOW_SIGMA_PX = 2.0
# Excess of the output over the data, in standard errors, where the fidelity risk starts
# (0) and saturates (1): 0.5 at 3 standard errors (one-sided p ~ 0.001 per window).
FIDELITY_Z = (2.0, 4.0)
# Window of the fidelity test: what it looks for (a lifted background, structure kept where
# the data has none) is extended, and a wider window halves the standard error per doubling.
_FIDELITY_SIGMA_PX = 4.0
# Pixels above this risk count towards a frame's risk fraction.
_FLAG_LEVEL = 0.5


@dataclass(frozen=True)
class Denoised:
    """Denoised frames with their hallucination-risk maps.

    Attributes
    ----------
    image : numpy.ndarray
        float32 denoised frames, the input's shape, in its photometric units.
    risk : numpy.ndarray
        float32 per-pixel risk in [0, 1], same shape (see the module docstring).
    risk_fraction : numpy.ndarray
        float32 ``image.shape[:-2]``: per frame, the fraction of pixels with risk > 0.5.
    """

    image: np.ndarray
    risk: np.ndarray
    risk_fraction: np.ndarray


def _gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, H, W)`` with reflect borders."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if radius < 1:
        return x
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    y = F.pad(x[:, None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.reshape(1, 1, 1, -1))
    return F.conv2d(y, kernel.reshape(1, 1, -1, 1))[:, 0]


def hallucination_risk(
    output_a: torch.Tensor, output_b: torch.Tensor, twin_a: torch.Tensor, twin_b: torch.Tensor
) -> torch.Tensor:
    """Per-pixel hallucination risk from the denoised twins and the twins themselves.

    Parameters
    ----------
    output_a, output_b
        ``(N, H, W)`` denoised twins, in the same units as the twins.
    twin_a, twin_b
        ``(N, H, W)`` the (up-sampled) twins that were denoised.

    Returns
    -------
    torch.Tensor
        ``(N, H, W)`` float32 risk in [0, 1].
    """
    if not (output_a.shape == output_b.shape == twin_a.shape == twin_b.shape):
        raise ValueError(
            "hallucination_risk: outputs and twins must have one (N, H, W) shape, got "
            f"{tuple(output_a.shape)}, {tuple(output_b.shape)}, {tuple(twin_a.shape)}, "
            f"{tuple(twin_b.shape)}"
        )
    disagreement = _gaussian_smooth((output_a - output_b).float().square(), _WINDOW_SIGMA_PX)
    noise = _twin_noise_energy(twin_a, twin_b, _WINDOW_SIGMA_PX)
    # A noise-free region (a saturated or constant patch) explains nothing: any
    # disagreement there is the network's own.
    rho = disagreement / noise
    return ((rho - 1.0) / (RHO_SATURATED - 1.0)).clamp_(0.0, 1.0)


def fidelity_risk(
    output: torch.Tensor, raw: torch.Tensor, twin_a: torch.Tensor, twin_b: torch.Tensor
) -> torch.Tensor:
    """Per-pixel risk that the output stands above its data by more than noise explains.

    Parameters
    ----------
    output
        ``(N, H, W)`` denoised frames, in the raw frames' units.
    raw
        ``(N, H, W)`` the frames that were denoised.
    twin_a, twin_b
        ``(N, H, W)`` their up-sampled twins (their difference measures the noise).

    Returns
    -------
    torch.Tensor
        ``(N, H, W)`` float32 risk in [0, 1]: 0 up to 2 standard errors of excess, 1 from 4.
    """
    if not (output.shape == raw.shape == twin_a.shape == twin_b.shape):
        raise ValueError(
            "fidelity_risk: output, raw and twins must have one (N, H, W) shape, got "
            f"{tuple(output.shape)}, {tuple(raw.shape)}, {tuple(twin_a.shape)}, "
            f"{tuple(twin_b.shape)}"
        )
    excess = _gaussian_smooth((output - raw).float(), _FIDELITY_SIGMA_PX)
    noise = _twin_noise_energy(twin_a, twin_b, _FIDELITY_SIGMA_PX)
    # The window mean of white noise of variance s^2 has variance s^2 * sum(g^2).
    z = excess / (noise * _window_energy(_FIDELITY_SIGMA_PX)).sqrt()
    low, high = FIDELITY_Z
    return ((z - low) / (high - low)).clamp_(0.0, 1.0)


def _twin_noise_energy(twin_a: torch.Tensor, twin_b: torch.Tensor, sigma: float) -> torch.Tensor:
    """Local mean of ``(A - B)^2``: the per-pixel noise variance, floored above 0."""
    noise = _gaussian_smooth((twin_a - twin_b).float().square(), sigma)
    floor = 1e-6 * noise.flatten(1).mean(dim=1).clamp_min(1e-12)[:, None, None]
    return noise.clamp_min(floor)


def _window_energy(sigma: float) -> float:
    """``sum(g^2)`` of the normalized 2-D Gaussian window of :func:`_gaussian_smooth`."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    return float(np.sum(kernel**2) ** 2)


def risk_fraction(risk: torch.Tensor) -> torch.Tensor:
    """Fraction of each frame's pixels whose risk is above 0.5.

    Parameters
    ----------
    risk
        ``(N, H, W)`` risk maps from :func:`hallucination_risk`.

    Returns
    -------
    torch.Tensor
        ``(N,)`` float32.
    """
    return (risk > _FLAG_LEVEL).float().flatten(1).mean(dim=1)
