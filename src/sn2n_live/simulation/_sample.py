"""A drifting fluorophore density and its image formation (PSF, haze, background).

A frame under an excitation pattern ``I(r)`` in [0, 1] has the expected photon map ::

    photons(r) = scale * [ (PSF ⊛ (D_t · I))(r) / n                  in focus
                         + haze_fraction * <I> * (G_haze ⊛ D_t)(r) / n  out-of-focus haze
                         + background_fraction * <I> ]                 autofluorescence

- ``D_t`` is the unblurred density (:func:`make_structure_layers`) translated by the drift
  to time ``t``; the stripes multiply it *before* any blur, as the excitation does, so
  the detection PSF attenuates their contrast by the OTF at the pattern frequency.
- ``PSF`` and ``G_haze`` are unit-sum periodic Gaussians of ``psf_sigma_px`` and
  ``haze_sigma_px`` (convolutions are FFT products on the torus the structures live on);
  with ``psf_kind="ideal"`` the PSF is instead the aberration-free widefield PSF of the
  same cut-off (``otf_cutoff(psf_sigma_px)``), whose OTF ends there.
- Out of focus the stripes wash out, so haze and background see only the pattern mean
  ``<I>``. Haze stands for the out-of-focus part of the cell: it carries
  ``haze_fraction`` of the in-focus photon flux. The background is a flat
  autofluorescence excited by the same light (so it scales with laser and exposure).
- ``n = max(PSF ⊛ D_0)`` normalizes the in-focus image: under uniform full illumination
  (``I = 1``) it peaks at exactly ``scale`` photons, where :attr:`SimulatedSample.blurred`
  is 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import fft

from ._checks import check_float, check_seed, check_shape, check_vector2
from ._optics import DEFAULT_PSF_SIGMA_PX, PSF_KINDS, PSFKind, blur_and_normalize, otf_grid
from ._structures import StructureKind, check_kind, make_structure_layers

DEFAULT_HAZE_FRACTION = 0.15
DEFAULT_HAZE_SIGMA_PX = 10.0
DEFAULT_BACKGROUND_FRACTION = 0.02
# True background: the blurred density (max 1) is below this, so no structure lies
# within the PSF's reach (a density-1 object's blur falls to 2 % about 2.8 sigma away).
BACKGROUND_MASK_LEVEL = 0.02
# Thin-structure pixels: the thin-line layer is clearly present (ER tubules are as dim as
# 0.15) and is most of the density there.
THIN_MASK_LEVEL = 0.05
THIN_MASK_SHARE = 0.5


def _check_density(density: np.ndarray, *, name: str) -> np.ndarray:
    # A copy: the sample freezes its arrays, which must not freeze the caller's.
    arr = np.array(density, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array; got shape {arr.shape}")
    check_shape(arr.shape, name=f"{name}.shape")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"{name} must be finite and in [0, 1] everywhere")
    return arr


class SimulatedSample:
    """Ground-truth sample: a drifting fluorophore density and how the camera images it.

    See the module docstring for the image formation. The density spectrum and the
    transfer functions are computed once; a frame costs one pattern product and two
    FFTs (three while drifting: the density itself must be translated first), a
    translation being an exact Fourier phase ramp on the periodic field. Instances are
    never mutated after construction, so every method is safe to call from several
    threads at once.

    Parameters
    ----------
    shape : sequence of int
        ``(height, width)`` in pixels, each >= 16.
    kind : {"filaments", "mitochondria", "puncta", "mixed"}
        Structure kind, see :func:`make_structure_layers`.
    psf_sigma_px : float
        Gaussian detection PSF standard deviation in pixels, >= 0.
    haze_fraction : float
        Out-of-focus haze as a fraction of the in-focus photon flux, >= 0.
    haze_sigma_px : float
        Standard deviation of the haze blur in pixels, >= 0 (much wider than the PSF).
    background_fraction : float
        Flat autofluorescence in photons per pixel, as a fraction of ``scale`` (the
        in-focus peak under full illumination) times the mean illumination, >= 0.
    drift_px_per_s : tuple of float
        Drift velocity ``(vy, vx)`` in pixels per second; content at ``r`` at time 0 is
        at ``r + v * t`` at time ``t`` (wrapping around the edges).
    seed : int
        Non-negative seed of the structures.
    psf_kind : {"gaussian", "ideal"}
        The detection PSF's model (:func:`~sn2n_live.simulation.otf`).
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        kind: StructureKind = "mixed",
        psf_sigma_px: float = DEFAULT_PSF_SIGMA_PX,
        haze_fraction: float = DEFAULT_HAZE_FRACTION,
        haze_sigma_px: float = DEFAULT_HAZE_SIGMA_PX,
        background_fraction: float = DEFAULT_BACKGROUND_FRACTION,
        drift_px_per_s: Sequence[float] = (0.0, 0.0),
        seed: int = 0,
        psf_kind: PSFKind = "gaussian",
    ) -> None:
        shape = check_shape(shape)
        self.kind: StructureKind | None = check_kind(kind)  # type: ignore[assignment]
        self.seed: int | None = check_seed(seed)
        layers = make_structure_layers(shape, kind=kind, seed=self.seed)
        self._setup(
            layers.density,
            layers.thin,
            psf_sigma_px=psf_sigma_px,
            haze_fraction=haze_fraction,
            haze_sigma_px=haze_sigma_px,
            background_fraction=background_fraction,
            drift_px_per_s=drift_px_per_s,
            psf_kind=psf_kind,
        )

    @classmethod
    def from_density(
        cls,
        density: np.ndarray,
        *,
        thin: np.ndarray | None = None,
        psf_sigma_px: float = DEFAULT_PSF_SIGMA_PX,
        haze_fraction: float = DEFAULT_HAZE_FRACTION,
        haze_sigma_px: float = DEFAULT_HAZE_SIGMA_PX,
        background_fraction: float = DEFAULT_BACKGROUND_FRACTION,
        drift_px_per_s: Sequence[float] = (0.0, 0.0),
        psf_kind: PSFKind = "gaussian",
    ) -> SimulatedSample:
        """Image a given density instead of drawn structures.

        Parameters
        ----------
        density : numpy.ndarray
            ``(H, W)`` fluorophore density in [0, 1] with a positive maximum, each
            side >= 16, treated as periodic.
        thin : numpy.ndarray, optional
            ``(H, W)`` thin-line part of ``density`` (for :attr:`thin_mask`), in [0, 1]
            and <= ``density``; default none.
        psf_sigma_px, haze_fraction, haze_sigma_px, background_fraction, drift_px_per_s, psf_kind
            As for the class.

        Returns
        -------
        SimulatedSample
            A sample with ``kind`` and ``seed`` None.
        """
        density = _check_density(density, name="density")
        if thin is None:
            thin = np.zeros_like(density)
        thin = _check_density(thin, name="thin")
        if thin.shape != density.shape or np.any(thin > density):
            raise ValueError(
                f"thin must have the density's shape {density.shape} and never exceed it; "
                f"got shape {thin.shape}"
            )
        sample = cls.__new__(cls)
        sample.kind = None
        sample.seed = None
        sample._setup(
            density,
            thin,
            psf_sigma_px=psf_sigma_px,
            haze_fraction=haze_fraction,
            haze_sigma_px=haze_sigma_px,
            background_fraction=background_fraction,
            drift_px_per_s=drift_px_per_s,
            psf_kind=psf_kind,
        )
        return sample

    def _setup(
        self,
        density: np.ndarray,
        thin: np.ndarray,
        *,
        psf_sigma_px: float,
        haze_fraction: float,
        haze_sigma_px: float,
        background_fraction: float,
        drift_px_per_s: Sequence[float],
        psf_kind: PSFKind,
    ) -> None:
        if psf_kind not in PSF_KINDS:
            raise ValueError(f"psf_kind must be one of {PSF_KINDS}; got {psf_kind!r}")
        self.psf_kind: PSFKind = psf_kind
        self.shape = (int(density.shape[0]), int(density.shape[1]))
        self.psf_sigma_px = check_float(psf_sigma_px, name="psf_sigma_px", minimum=0.0)
        self.haze_fraction = check_float(haze_fraction, name="haze_fraction", minimum=0.0)
        self.haze_sigma_px = check_float(haze_sigma_px, name="haze_sigma_px", minimum=0.0)
        self.background_fraction = check_float(
            background_fraction, name="background_fraction", minimum=0.0
        )
        self.drift_px_per_s = check_vector2(drift_px_per_s, name="drift_px_per_s")

        # `blurred` is PSF ⊛ D / n; the same n scales the formation. Raises for D = 0.
        blurred, norm = blur_and_normalize(density, self.psf_sigma_px, psf_kind)
        spectrum = fft.rfft2(density)  # complex64 for float32 input
        otf = otf_grid(self.shape, self.psf_sigma_px, psf_kind) / np.float32(norm)
        haze_otf = otf_grid(self.shape, self.haze_sigma_px) * np.float32(self.haze_fraction / norm)
        h, w = self.shape
        self._freq_y = fft.fftfreq(h)
        self._freq_x = fft.rfftfreq(w)
        # The whole uniform-illumination transfer, so widefield frames need no pattern FFT.
        uniform_otf = otf + haze_otf
        for arr in (density, thin, blurred, spectrum, otf, haze_otf, uniform_otf):
            arr.setflags(write=False)
        self._density = density
        self._thin = thin
        self._blurred = blurred
        self._spectrum = spectrum
        self._otf = otf
        self._haze_otf = haze_otf
        self._uniform_otf = uniform_otf

    @property
    def structure(self) -> np.ndarray:
        """Unblurred density ``D`` at time 0, ``(H, W)`` float32 in [0, 1] (read-only)."""
        return self._density

    @property
    def thin(self) -> np.ndarray:
        """Thin-line part of :attr:`structure`, ``(H, W)`` float32 (read-only)."""
        return self._thin

    @property
    def blurred(self) -> np.ndarray:
        """In-focus blurred density ``PSF ⊛ D / n`` at time 0, max 1 (read-only)."""
        return self._blurred

    @property
    def background_mask(self) -> np.ndarray:
        """True background at time 0: no structure within the PSF's reach.

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` bool, True where :attr:`blurred` is below 0.02.
        """
        return self._blurred < BACKGROUND_MASK_LEVEL

    @property
    def thin_mask(self) -> np.ndarray:
        """Thin-structure pixels at time 0 (filaments, ER tubules).

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` bool, True where the thin-line layer is >= 0.05 and at least half
            the density, outside :attr:`background_mask` (so the two are disjoint).
        """
        thin = self._thin
        return (
            (thin >= THIN_MASK_LEVEL)
            & (thin >= THIN_MASK_SHARE * self._density)
            & ~self.background_mask
        )

    def offset_px(self, time_s: float) -> tuple[float, float]:
        """Return the ``(dy, dx)`` translation in pixels at ``time_s``."""
        time_s = check_float(time_s, name="time_s")
        vy, vx = self.drift_px_per_s
        return vy * time_s, vx * time_s

    def _spectrum_at(self, time_s: float) -> np.ndarray | None:
        """Return ``rfft2(D_t)``, or None when the offset is zero (then it is ``rfft2(D)``)."""
        dy, dx = self.offset_px(time_s)
        if dy == 0.0 and dx == 0.0:
            return None
        # Phases are reduced mod 1 cycle in float64 before going to complex64, so large
        # offsets (long acquisitions) stay accurate.
        ramp_y = np.exp(-2j * np.pi * np.mod(self._freq_y * dy, 1.0)).astype(np.complex64)
        ramp_x = np.exp(-2j * np.pi * np.mod(self._freq_x * dx, 1.0)).astype(np.complex64)
        # A sub-pixel shift of the Nyquist component of an even side is ambiguous; the
        # symmetric choice (what a full complex FFT's real part gives) is cos(π d). The
        # sharp density has energy there that the pattern mixes into the passband.
        h, w = self.shape
        if h % 2 == 0:
            ramp_y[h // 2] = ramp_y[h // 2].real
        if w % 2 == 0:
            ramp_x[-1] = ramp_x[-1].real
        shifted = self._spectrum * ramp_x[None, :]
        shifted *= ramp_y[:, None]
        return shifted

    def density_at(self, time_s: float) -> np.ndarray:
        """Return the unblurred density ``D_t`` at ``time_s`` seconds.

        Parameters
        ----------
        time_s : float
            Time in seconds (any finite value; negative drifts backwards).

        Returns
        -------
        numpy.ndarray
            New ``(H, W)`` float32 array in [0, 1]; equal to :attr:`structure` when the
            offset is zero (a sub-pixel shift of the sharp density rings slightly).
        """
        spectrum = self._spectrum_at(time_s)
        if spectrum is None:
            return self._density.copy()
        out = fft.irfft2(spectrum, s=self.shape, overwrite_x=True)
        return np.clip(out, 0.0, 1.0, out=out)

    def at(self, time_s: float) -> np.ndarray:
        """Return the in-focus blurred density ``PSF ⊛ D_t / n`` at ``time_s`` seconds.

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
        spectrum = self._spectrum_at(time_s)
        if spectrum is None:
            return self._blurred.copy()
        spectrum *= self._otf
        out = fft.irfft2(spectrum, s=self.shape, overwrite_x=True)
        return np.clip(out, 0.0, 1.0, out=out)

    def image(
        self, time_s: float, illumination: np.ndarray | None = None, *, scale: float = 1.0
    ) -> np.ndarray:
        """Return the expected photons of a frame (see the module docstring).

        Parameters
        ----------
        time_s : float
            Time of the frame in seconds.
        illumination : numpy.ndarray, optional
            ``(H, W)`` excitation intensity ``I`` in [0, 1] in the focal plane; None is
            uniform full illumination (``I = 1``, one FFT instead of two).
        scale : float
            Photons at a point where :attr:`blurred` is 1 under ``I = 1`` in focus, >= 0.

        Returns
        -------
        numpy.ndarray
            New ``(H, W)`` float32 expected photon counts, >= 0.

        Raises
        ------
        ValueError
            If ``illumination`` has the wrong shape or leaves [0, 1], or ``scale`` < 0.
        """
        scale = check_float(scale, name="scale", minimum=0.0)
        spectrum = self._spectrum_at(time_s)
        if illumination is None:
            level = 1.0
            combined = (self._spectrum if spectrum is None else spectrum) * self._uniform_otf
        else:
            excitation = np.asarray(illumination, dtype=np.float32)
            if excitation.shape != self.shape:
                raise ValueError(
                    f"illumination must have the sample's shape {self.shape}; "
                    f"got {excitation.shape}"
                )
            level = float(excitation.mean(dtype=np.float64))
            if not 0.0 <= excitation.min() <= excitation.max() <= 1.0:
                raise ValueError("illumination must lie in [0, 1] (fraction of full power)")
            haze = None
            if self.haze_fraction > 0:
                haze = (self._spectrum if spectrum is None else spectrum) * self._haze_otf
                haze *= np.float32(level)
            # The excitation multiplies the sharp density; the PSF then blurs both.
            if spectrum is None:
                excited = self._density * excitation
            else:
                # The haze term is taken, so the shifted spectrum may be overwritten.
                excited = fft.irfft2(spectrum, s=self.shape, overwrite_x=True)
                excited *= excitation
            combined = fft.rfft2(excited, overwrite_x=True)
            combined *= self._otf
            if haze is not None:
                combined += haze
        out = fft.irfft2(combined, s=self.shape, overwrite_x=True)
        out *= np.float32(scale)
        out += np.float32(scale * self.background_fraction * level)
        # FFT round-off leaves ~1e-7 negatives in empty regions; photons are >= 0.
        return np.maximum(out, 0.0, out=out)

    def __repr__(self) -> str:
        return (
            f"SimulatedSample(shape={self.shape}, kind={self.kind!r}, "
            f"psf_sigma_px={self.psf_sigma_px}, psf_kind={self.psf_kind!r}, "
            f"haze_fraction={self.haze_fraction}, "
            f"haze_sigma_px={self.haze_sigma_px}, "
            f"background_fraction={self.background_fraction}, "
            f"drift_px_per_s={self.drift_px_per_s}, seed={self.seed})"
        )
