"""Seeded low-light SIM data with ground truth (numpy/scipy only).

Used by the tests, the demo, the benchmarks and the simulated microscope:

- :func:`make_structure_layers` / :func:`make_structures` draw unblurred ground-truth
  fluorophore densities (with their thin-line layer);
- :class:`SIMIllumination` models the excitation patterns, :func:`otf_cutoff` and
  :func:`otf` the Gaussian detection PSF, :class:`CameraModel` the camera;
- :class:`SimulatedSample` forms the image, ``PSF ⊛ (density x pattern)`` plus
  out-of-focus haze and background, and lets the density drift;
- :func:`simulate_sim_frames` puts it together into raw uint16 ``(T, A, P, H, W)``
  stacks with their noise-free expected ADU and ground truths.
"""

from ._camera import CameraModel
from ._frames import SimulatedFrames, simulate_sim_frames
from ._optics import (
    DEFAULT_PERIOD_PX,
    DEFAULT_PSF_SIGMA_PX,
    PSF_KINDS,
    PSFKind,
    SIMIllumination,
    otf,
    otf_cutoff,
    otf_grid,
    psf_blur,
    pupil_otf,
)
from ._sample import (
    DEFAULT_BACKGROUND_FRACTION,
    DEFAULT_HAZE_FRACTION,
    DEFAULT_HAZE_SIGMA_PX,
    SimulatedSample,
)
from ._structures import (
    STRUCTURE_KINDS,
    StructureKind,
    StructureLayers,
    make_structure_layers,
    make_structures,
)

__all__ = [
    "DEFAULT_BACKGROUND_FRACTION",
    "DEFAULT_HAZE_FRACTION",
    "DEFAULT_HAZE_SIGMA_PX",
    "DEFAULT_PERIOD_PX",
    "DEFAULT_PSF_SIGMA_PX",
    "PSF_KINDS",
    "STRUCTURE_KINDS",
    "CameraModel",
    "PSFKind",
    "SIMIllumination",
    "SimulatedFrames",
    "SimulatedSample",
    "StructureKind",
    "StructureLayers",
    "make_structure_layers",
    "make_structures",
    "otf",
    "otf_cutoff",
    "otf_grid",
    "psf_blur",
    "pupil_otf",
    "simulate_sim_frames",
]
