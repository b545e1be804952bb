"""A PSF-blurred structure field that drifts over time (sub-pixel, periodic)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import fft

from ._checks import check_float, check_seed, check_shape, check_vector2
from ._optics import psf_blur
from ._structures import StructureKind, check_kind, make_structures


class SimulatedSample:
    """Ground-truth sample as the camera sees it: structures blurred by the PSF, drifting.

    The blurred field and its spectrum are computed once; ``at`` only applies a Fourier
    phase ramp (an exact sub-pixel translation of the periodic, band-limited field) and
    one inverse FFT. Instances are never mutated after construction, so ``at`` is safe
    to call from several threads at once.

    Parameters
    ----------
    shape : sequence of int
        ``(height, width)`` in pixels, each >= 16.
    kind : {"filaments", "mitochondria", "puncta", "mixed"}
        Structure kind, see :func:`make_structures`.
    psf_sigma_px : float
        Gaussian PSF standard deviation in pixels, >= 0.
    drift_px_per_s : tuple of float
        Drift velocity ``(vy, vx)`` in pixels per second; content at ``r`` at time 0 is
        at ``r + v * t`` at time ``t`` (wrapping around the edges).
    seed : int
        Non-negative seed of the structures.
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        kind: StructureKind = "mixed",
        psf_sigma_px: float = 1.5,
        drift_px_per_s: Sequence[float] = (0.0, 0.0),
        seed: int = 0,
    ) -> None:
        self.shape = check_shape(shape)
        self.kind = check_kind(kind)
        self.psf_sigma_px = check_float(psf_sigma_px, name="psf_sigma_px", minimum=0.0)
        self.drift_px_per_s = check_vector2(drift_px_per_s, name="drift_px_per_s")
        self.seed = check_seed(seed)

        structure = make_structures(self.shape, kind=kind, seed=self.seed)
        blurred = psf_blur(structure, self.psf_sigma_px)
        spectrum = fft.rfft2(blurred)  # complex64 for float32 input
        h, w = self.shape
        self._freq_y = fft.fftfreq(h)
        self._freq_x = fft.rfftfreq(w)
        for arr in (structure, blurred, spectrum, self._freq_y, self._freq_x):
            arr.setflags(write=False)
        self._structure = structure
        self._blurred = blurred
        self._spectrum = spectrum

    @property
    def structure(self) -> np.ndarray:
        """Unblurred ground truth ``(H, W)`` float32 in [0, 1] (read-only view)."""
        return self._structure

    @property
    def blurred(self) -> np.ndarray:
        """PSF-blurred sample at time 0, ``(H, W)`` float32 with max 1 (read-only view)."""
        return self._blurred

    def offset_px(self, time_s: float) -> tuple[float, float]:
        """Return the ``(dy, dx)`` translation in pixels at ``time_s``."""
        time_s = check_float(time_s, name="time_s")
        vy, vx = self.drift_px_per_s
        return vy * time_s, vx * time_s

    def at(self, time_s: float) -> np.ndarray:
        """Return the blurred sample at ``time_s`` seconds.

        Parameters
        ----------
        time_s : float
            Time in seconds (any finite value; negative drifts backwards).

        Returns
        -------
        numpy.ndarray
            New ``(H, W)`` float32 array in [0, 1]; equal to :attr:`blurred` (max 1)
            when the offset is zero.
        """
        dy, dx = self.offset_px(time_s)
        if dy == 0.0 and dx == 0.0:
            return self._blurred.copy()
        # Phases are reduced mod 1 cycle in float64 before going to complex64, so large
        # offsets (long acquisitions) stay accurate.
        ramp_y = np.exp(-2j * np.pi * np.mod(self._freq_y * dy, 1.0)).astype(np.complex64)
        ramp_x = np.exp(-2j * np.pi * np.mod(self._freq_x * dx, 1.0)).astype(np.complex64)
        shifted = self._spectrum * ramp_x[None, :]
        shifted *= ramp_y[:, None]
        out = fft.irfft2(shifted, s=self.shape, overwrite_x=True)
        return np.clip(out, 0.0, 1.0, out=out)

    def __repr__(self) -> str:
        return (
            f"SimulatedSample(shape={self.shape}, kind={self.kind!r}, "
            f"psf_sigma_px={self.psf_sigma_px}, drift_px_per_s={self.drift_px_per_s}, "
            f"seed={self.seed})"
        )
