"""Generalized Wiener reconstruction of 2-D SIM sets on torch (CPU or CUDA).

For each orientation ``a`` the frames (mean subtracted, edges tapered) are unmixed into
the orders ``0`` and ``+1`` with the calibration's phases (``-1`` is the complex
conjugate of ``+1`` for real frames). On a grid of twice the sampling the ``+1`` order is
moved to where its content belongs (a phase ramp, so sub-pixel wave vectors are exact),
and all orders are combined (Gustafsson, J. Microsc. 198:82, 2000)::

    S(f) = A(f) Σ_{a,m} conj(c_m H(f + m k_a)) X_{a,m}(f + m k_a)
                / (Σ_{a,m} |c_m H(f + m k_a)|² + w)

with ``c_0 = 1``, ``c_±1 = m_a / 2`` (the modulation), ``w`` the Wiener parameter and
``A`` an apodization that falls smoothly to 0 at the extended support ``f_c + |k|``
(the ideal OTF's shape there, to a power ``bend``), so the result has no ringing from
a hard edge.

Every quantity that depends only on the calibration (OTFs, the filter, the ramps, the
unmixing matrices) is made once, so that a set costs ``A + 1`` FFTs of the camera size
and ``A + 2`` of twice its size.
"""

from __future__ import annotations

import numpy as np
import torch

from sn2n_live.simulation import pupil_otf

from ._calibration import SIMCalibration
from ._estimate import field_coordinates
from ._otf import OTFModel, frequency_grid
from ._sets import as_set, edge_taper, unmixing

DEFAULT_WIENER = 0.05
DEFAULT_APODIZATION_BEND = 1.0


class WienerReconstructor:
    """Reconstruct SIM sets of one calibration on a 2x grid.

    Parameters
    ----------
    calibration : SIMCalibration
        The pattern parameters and OTF; its ``shape`` is the frames' shape.
    wiener : float
        The Wiener parameter ``w`` (> 0): larger is smoother and safer at low light,
        smaller is sharper with more noise amplified.
    apodization_bend : float
        Power of the apodization (> 0; 1 is the triangle-like ideal OTF shape, smaller
        keeps more of the high frequencies).
    apodization_cutoff : float
        The apodization's support as a fraction of ``f_c + max |k|`` (> 0, at most the
        2x grid's Nyquist frequency, 1 cycle per camera pixel).
    taper_px : int
        Width of the cos² edge taper applied to the frames (0 for none: periodic data).
    device : str or torch.device
        ``"cpu"`` or ``"cuda"``.

    Raises
    ------
    ValueError
        If a parameter is out of range or ``device`` is not available.
    """

    def __init__(
        self,
        calibration: SIMCalibration,
        *,
        wiener: float = DEFAULT_WIENER,
        apodization_bend: float = DEFAULT_APODIZATION_BEND,
        apodization_cutoff: float = 1.0,
        taper_px: int = 16,
        device: str | torch.device = "cpu",
    ) -> None:
        if not wiener > 0:
            raise ValueError(f"wiener must be > 0; got {wiener}")
        if not apodization_bend > 0 or not apodization_cutoff > 0:
            raise ValueError("apodization_bend and apodization_cutoff must be > 0")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU here")
        self.calibration = calibration
        self.wiener = float(wiener)
        self.shape = calibration.shape
        h, w = self.shape
        ks = calibration.wavevectors()
        otf = calibration.otf
        support = min(apodization_cutoff * (otf.cutoff + float(np.hypot(*ks.T).max())), 1.0)

        fy, fx = frequency_grid((h, w))
        coarse_otf = otf.values(np.hypot(fy, fx))
        fy2 = np.fft.fftfreq(2 * h, d=0.5)[:, None]  # the 2x grid's rfft2 frequencies
        fx2 = np.fft.rfftfreq(2 * w, d=0.5)[None, :]
        denominator = len(ks) * coarse_otf_on(otf, fy2, fx2, (0.0, 0.0)) ** 2 + self.wiener
        y2 = field_coordinates(2 * h)[:, None] / 2.0  # camera pixels from the centre
        x2 = field_coordinates(2 * w)[None, :] / 2.0
        ramps = []
        for k, modulation in zip(ks, calibration.modulations(), strict=True):
            c1 = 0.5 * modulation
            denominator = denominator + c1**2 * (
                coarse_otf_on(otf, fy2, fx2, k) ** 2 + coarse_otf_on(otf, fy2, fx2, -k) ** 2
            )
            ramps.append(np.exp(-2j * np.pi * (k[0] * y2 + k[1] * x2)))
        apodization = pupil_otf(np.hypot(fy2, fx2) / support) ** apodization_bend
        unmix = np.stack([unmixing(p)[:2] for p in calibration.phases()])  # (A, 2, P)

        as_tensor = self._tensor
        self._filter = as_tensor(apodization / denominator, torch.float32)
        self._otf = as_tensor(coarse_otf, torch.float32)
        self._plus_weights = as_tensor(0.5 * calibration.modulations(), torch.float32)
        self._ramps = as_tensor(np.stack(ramps), torch.complex64)
        self._unmix_zero = as_tensor(unmix[:, 0].real, torch.float32)  # real for real frames
        self._unmix_plus = as_tensor(unmix[:, 1], torch.complex64)
        self._taper = as_tensor(edge_taper(self.shape, taper_px), torch.float32)
        # Zero-padded spectra, reused: only the four corners are written per set (one
        # reconstructor serves one thread at a time).
        self._padded_plus = torch.zeros(
            (len(ks), 2 * h, 2 * w), dtype=torch.complex64, device=self.device
        )
        self._padded_zero = torch.zeros((2 * h, w + 1), dtype=torch.complex64, device=self.device)

    def _tensor(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array)).to(self.device, dtype)

    @property
    def output_shape(self) -> tuple[int, int]:
        """``(2 H, 2 W)``: the reconstruction's pixels are half the camera's."""
        return 2 * self.shape[0], 2 * self.shape[1]

    def __call__(self, frames: np.ndarray | torch.Tensor, *, clip: bool = True) -> np.ndarray:
        """Reconstruct one set; see :meth:`reconstruct`."""
        return self.reconstruct(frames, clip=clip)

    def reconstruct(self, frames: np.ndarray | torch.Tensor, *, clip: bool = True) -> np.ndarray:
        """Return the super-resolved image of one set.

        Parameters
        ----------
        frames : numpy.ndarray or torch.Tensor
            ``(n_angles * n_phases, H, W)`` (angle slow, phase fast) or ``(n_angles,
            n_phases, H, W)``, raw or denoised, of the calibration's shape.
        clip : bool
            Clip negatives (noise and ringing) to 0, as a display and a store want.
            Measurements that compare two reconstructions (FRC) need ``False``: clipping
            both at 0 adds high frequencies they share.

        Returns
        -------
        numpy.ndarray
            ``(2 H, 2 W)`` float32, in the frames' units (a uniformly lit frame's level).
        """
        cal = self.calibration
        if isinstance(frames, torch.Tensor):
            stack = frames.to(self.device, torch.float32)
            stack = stack.reshape(cal.n_angles, cal.n_phases, *stack.shape[-2:])
        else:
            array = as_set(frames, cal.n_angles, cal.n_phases, np.float32)
            stack = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        if tuple(stack.shape[-2:]) != self.shape:
            raise ValueError(
                f"the calibration is for {self.shape[0]} x {self.shape[1]} frames; these are "
                f"{stack.shape[-2]} x {stack.shape[-1]} (estimate one for this ROI)"
            )
        with torch.no_grad():
            image = self._reconstruct(stack)
            return (torch.clamp(image, min=0.0) if clip else image).cpu().numpy()

    def _reconstruct(self, stack: torch.Tensor) -> torch.Tensor:
        h, w = self.shape
        mean = stack.mean()
        tapered = (stack - mean) * self._taper
        zero = torch.einsum("ap,aphw->hw", self._unmix_zero, tapered)
        plus = torch.einsum("ap,aphw->ahw", self._unmix_plus, tapered.to(torch.complex64))
        zero_spectrum = torch.fft.rfft2(zero) * self._otf[:, : w // 2 + 1]
        plus_spectra = torch.fft.fft2(plus) * (self._otf * self._plus_weights[:, None, None])
        # The +1 orders, moved by -k on the 2x grid; the -1 orders are their conjugates.
        moved = torch.fft.ifft2(_pad_full(plus_spectra, self._padded_plus))
        moved = (moved * self._ramps).sum(dim=0)
        spectrum = _pad_half(zero_spectrum, self._padded_zero) + torch.fft.rfft2(2.0 * moved.real)
        image = torch.fft.irfft2(spectrum * self._filter, s=(2 * h, 2 * w))
        # The 2x grid's inverse FFT divides by 4x the pixels: back to the frames' units.
        return 4.0 * image + mean


def coarse_otf_on(
    otf: OTFModel, fy: np.ndarray, fx: np.ndarray, k: tuple[float, float] | np.ndarray
) -> np.ndarray:
    """Return the OTF at ``f + k`` on a frequency grid (the order moved by ``-k`` sees it)."""
    return otf.values(np.hypot(fy + k[0], fx + k[1]))


def _pad_full(spectra: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Zero-pad ``fft2`` spectra of ``(h, w)`` into ``out`` of ``(2h, 2w)`` (interpolation).

    ``out`` is zero outside the corners written here.
    """
    h, w = spectra.shape[-2:]
    hy, hx = h // 2, w // 2
    out[..., :hy, :hx] = spectra[..., :hy, :hx]
    out[..., :hy, -hx:] = spectra[..., :hy, -hx:]
    out[..., -hy:, :hx] = spectra[..., -hy:, :hx]
    out[..., -hy:, -hx:] = spectra[..., -hy:, -hx:]
    return out


def _pad_half(spectrum: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Zero-pad an ``rfft2`` spectrum of ``(h, w)`` into ``out``, the grid of ``(2h, 2w)``."""
    h = spectrum.shape[-2]
    hy, hx = h // 2, (out.shape[-1] - 1) // 2
    out[:hy, :hx] = spectrum[:hy, :hx]
    out[-hy:, :hx] = spectrum[-hy:, :hx]
    return out


def widefield(frames: np.ndarray, n_angles: int, n_phases: int) -> np.ndarray:
    """Return the widefield image of a set: the mean of its frames, ``(H, W)`` float32."""
    return as_set(frames, n_angles, n_phases).mean(axis=(0, 1)).astype(np.float32)
