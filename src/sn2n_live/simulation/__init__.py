"""Seeded low-light SIM data with ground truth (numpy/scipy only).

Used by the tests, the demo, the benchmarks and the simulated microscope:

- :func:`make_structures` draws unblurred ground-truth structures;
- :class:`SimulatedSample` blurs them with a Gaussian PSF and lets them drift;
- :class:`SIMIllumination` and :class:`CameraModel` model the patterns and the camera;
- :func:`simulate_sim_frames` puts it together into raw uint16 ``(T, A, P, H, W)``
  stacks with their noise-free expected ADU.
"""

from ._camera import CameraModel
from ._frames import SimulatedFrames, simulate_sim_frames
from ._optics import SIMIllumination, psf_blur
from ._sample import SimulatedSample
from ._structures import STRUCTURE_KINDS, StructureKind, make_structures

__all__ = [
    "STRUCTURE_KINDS",
    "CameraModel",
    "SIMIllumination",
    "SimulatedFrames",
    "SimulatedSample",
    "StructureKind",
    "make_structures",
    "psf_blur",
    "simulate_sim_frames",
]
