"""A linear scientific-camera model: shot noise, read noise, gain, offset, quantization."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


def _check_photons(photons: np.ndarray) -> np.ndarray:
    arr = np.asarray(photons, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or (arr.size and arr.min() < 0):
        raise ValueError("photons must be finite and >= 0 everywhere (expected photon counts)")
    return arr


class CameraModel(BaseModel):
    """Camera that turns expected photon counts into ADU.

    Detected photons become electrons one to one (fold quantum efficiency into the
    photon count). Expected signal is ``offset_adu + gain_adu_per_e * photons``; a noisy
    exposure adds Poisson shot noise and Gaussian read noise (in electrons), then scales
    by the gain, adds the offset, rounds and clips to ``[0, 2**bit_depth - 1]``. The ADU
    variance of a flat region is therefore ``gain² * (photons + read_noise_e²) + 1/12``.

    Parameters
    ----------
    offset_adu : float
        Dark-level offset (bias) in ADU, in ``[0, 2**bit_depth - 1]``.
    gain_adu_per_e : float
        Conversion gain in ADU per electron, > 0.
    read_noise_e : float
        Standard deviation of the read noise in electrons, >= 0.
    bit_depth : int
        ADC bit depth, 1..16; frames are stored as uint16.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    offset_adu: float = Field(default=100.0, ge=0.0)
    gain_adu_per_e: float = Field(default=1.0, gt=0.0)
    read_noise_e: float = Field(default=1.5, ge=0.0)
    bit_depth: int = Field(default=16, ge=1, le=16)

    @model_validator(mode="after")
    def _offset_fits(self) -> CameraModel:
        if self.offset_adu > self.max_adu:
            raise ValueError(
                f"offset_adu={self.offset_adu} exceeds the {self.bit_depth}-bit range "
                f"(max {self.max_adu} ADU); lower offset_adu or raise bit_depth"
            )
        return self

    @property
    def max_adu(self) -> int:
        """Largest representable ADU value, ``2**bit_depth - 1``."""
        return 2**self.bit_depth - 1

    def expected_adu(self, photons: np.ndarray) -> np.ndarray:
        """Noise-free expected ADU of an exposure.

        Parameters
        ----------
        photons : numpy.ndarray
            Expected photon counts (any shape), finite and >= 0.

        Returns
        -------
        numpy.ndarray
            float32 ``offset_adu + gain_adu_per_e * photons`` (not clipped to the ADC
            range, so it stays the unbiased truth).
        """
        arr = _check_photons(photons)
        return (self.offset_adu + self.gain_adu_per_e * arr).astype(np.float32)

    def expose(self, photons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw one noisy exposure.

        Parameters
        ----------
        photons : numpy.ndarray
            Expected photon counts (any shape), finite and >= 0.
        rng : numpy.random.Generator
            Source of all randomness (shot noise first, then read noise).

        Returns
        -------
        numpy.ndarray
            uint16 ADU of the same shape as ``photons``.
        """
        arr = _check_photons(photons)
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
        electrons = rng.poisson(arr).astype(np.float64)
        if self.read_noise_e > 0:
            electrons += rng.normal(0.0, self.read_noise_e, arr.shape)
        adu = np.rint(electrons * self.gain_adu_per_e + self.offset_adu)
        return np.clip(adu, 0, self.max_adu).astype(np.uint16)
