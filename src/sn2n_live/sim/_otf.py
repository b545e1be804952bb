"""The detection OTF a reconstruction assumes, and the apodization it ends with."""

from __future__ import annotations

from typing import Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sn2n_live.config import PSFKind
from sn2n_live.simulation import otf as simulated_otf
from sn2n_live.simulation import otf_cutoff, pupil_otf

_OPTICS = ("na", "wavelength_nm", "pixel_nm")


class OTFModel(BaseModel):
    """A rotationally symmetric detection OTF, normalized to 1 at zero frequency.

    Parameters
    ----------
    kind : {"gaussian", "ideal"}
        ``"gaussian"``: ``exp(-2π² σ² f²)`` for a Gaussian PSF of ``psf_sigma_px``; its
        cut-off is ``0.42 / σ`` (the ``2 NA/λ`` of the widefield PSF it fits).
        ``"ideal"``: the aberration-free OTF of a circular pupil, ``(2/π)(acos ρ - ρ
        √(1-ρ²))`` with ``ρ = f / (2 NA/λ)``, from ``na``, ``wavelength_nm`` (emission) and
        ``pixel_nm`` (in the sample plane), or from ``psf_sigma_px`` (the cut-off of that
        Gaussian: the simulated microscope's ``psf_kind="ideal"``).
    psf_sigma_px, na, wavelength_nm, pixel_nm : float, optional
        What the kind needs (and nothing else).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: PSFKind = "gaussian"
    psf_sigma_px: float | None = Field(default=None, gt=0)
    na: float | None = Field(default=None, gt=0, le=1.7)
    wavelength_nm: float | None = Field(default=None, gt=0)
    pixel_nm: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check_fields(self) -> Self:
        optics = [getattr(self, name) is not None for name in _OPTICS]
        sigma = self.psf_sigma_px is not None
        if self.kind == "gaussian":
            ok = sigma and not any(optics)
            wanted = "psf_sigma_px"
        else:
            ok = (sigma and not any(optics)) or (not sigma and all(optics))
            wanted = "na, wavelength_nm and pixel_nm (or psf_sigma_px)"
        if not ok:
            given = [n for n in ("psf_sigma_px", *_OPTICS) if getattr(self, n) is not None]
            raise ValueError(
                f"an OTF of kind {self.kind!r} takes {wanted}; got {', '.join(given) or 'none'}"
            )
        if self.cutoff > 1.0:
            raise ValueError(
                f"2 NA/λ = {self.cutoff:.3g} cycles/px is beyond what a 2x reconstruction "
                "can hold; check na, wavelength_nm and pixel_nm (the sample-plane pixel)"
            )
        return self

    @classmethod
    def gaussian(cls, psf_sigma_px: float) -> OTFModel:
        """Return the OTF of a Gaussian PSF of ``psf_sigma_px`` pixels."""
        return cls(kind="gaussian", psf_sigma_px=psf_sigma_px)

    @property
    def cutoff(self) -> float:
        """The optical cut-off ``2 NA/λ`` in cycles per camera pixel."""
        if self.psf_sigma_px is not None:
            return otf_cutoff(self.psf_sigma_px)
        assert self.na is not None and self.wavelength_nm is not None and self.pixel_nm
        return 2.0 * self.na * self.pixel_nm / self.wavelength_nm

    def values(self, frequency: np.ndarray) -> np.ndarray:
        """Return the OTF at spatial frequency magnitudes ``frequency`` (cycles/px)."""
        f = np.asarray(frequency, dtype=np.float64)
        if self.psf_sigma_px is not None:  # exactly the simulated microscope's
            return np.asarray(simulated_otf(f, self.psf_sigma_px, self.kind))
        return pupil_otf(f / self.cutoff)


def frequency_grid(shape: tuple[int, int], spacing: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``numpy.fft.fft2`` frequencies ``(fy, fx)`` of ``shape`` in cycles/px.

    ``spacing`` is the sample spacing in camera pixels (0.5 on a 2x reconstruction grid,
    whose frequencies then stay in cycles per camera pixel).
    """
    fy = np.fft.fftfreq(shape[0], d=spacing)[:, None]
    fx = np.fft.fftfreq(shape[1], d=spacing)[None, :]
    return fy, fx
