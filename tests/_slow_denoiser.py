"""A profile's denoiser made slow, importable by a denoise process (tests only)."""

from __future__ import annotations

import time

import numpy as np

from sn2n_live.acquisition import build_profile_denoiser
from sn2n_live.method import load_package
from sn2n_live.profiles import load_profile


class SlowProfileDenoiser:
    """``build_profile_denoiser(profile, package)``, sleeping ``delay_s`` per frame."""

    def __init__(self, profile: str, model: str, delay_s: float) -> None:
        self.inner = build_profile_denoiser(load_profile(profile), load_package(model))
        self.delay_s = delay_s

    @property
    def provenance(self):
        return self.inner.provenance

    def denoise(self, frames: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s * len(frames))
        return self.inner.denoise(frames)


def slow_profile_denoiser(profile: str, model: str, delay_s: float) -> SlowProfileDenoiser:
    """Picklable factory (functools.partial of it) for the denoise process."""
    return SlowProfileDenoiser(profile, model, delay_s)
