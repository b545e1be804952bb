"""Noisy low-light SIM raw stacks with their noise-free truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._camera import CameraModel
from ._checks import NOISE_STREAM, check_float, check_seed, check_shape, seed_sequence
from ._optics import SIMIllumination
from ._sample import SimulatedSample
from ._structures import StructureKind


@dataclass(frozen=True)
class SimulatedFrames:
    """A simulated SIM acquisition and its ground truth.

    Attributes
    ----------
    raw : numpy.ndarray
        uint16 ``(T, A, P, H, W)`` noisy camera frames in ADU (time, angle, phase).
    clean : numpy.ndarray
        float32 ``(T, A, P, H, W)`` noise-free expected ADU of the same frames.
    sample : numpy.ndarray
        float32 ``(H, W)`` PSF-blurred structure at time 0, in [0, 1] with max 1.
    photons : float
        Expected photon count at the brightest sample point under a pattern maximum.
    illumination : SIMIllumination
        The illumination patterns used.
    camera : CameraModel
        The camera used.
    """

    raw: np.ndarray
    clean: np.ndarray
    sample: np.ndarray
    photons: float
    illumination: SIMIllumination
    camera: CameraModel


def simulate_sim_frames(
    shape: Sequence[int] = (256, 256),
    *,
    photons: float = 20.0,
    kind: StructureKind = "mixed",
    n_timepoints: int = 1,
    illumination: SIMIllumination = SIMIllumination(),  # noqa: B008 - frozen, so shared safely
    camera: CameraModel = CameraModel(),  # noqa: B008 - frozen, so shared safely
    psf_sigma_px: float = 1.5,
    drift_px_per_s: Sequence[float] = (0.0, 0.0),
    frame_interval_s: float = 1.0,
    seed: int = 0,
) -> SimulatedFrames:
    """Simulate a low-light SIM time series with ground truth.

    Frame ``(t, a, p)`` images the sample at time ``t * frame_interval_s`` (drift is
    applied per time point; the ``A * P`` frames of one time point share it) under
    pattern ``(a, p)``. Its expected photon map is ``photons * sample * pattern /
    illumination.peak``, so a sample point of value 1 under a pattern maximum receives
    ``photons`` on average.

    Parameters
    ----------
    shape : sequence of int
        ``(height, width)`` in pixels, each >= 16.
    photons : float
        Peak expected photon count (see above), > 0. Low-light SIM is ~5-50.
    kind : {"filaments", "mitochondria", "puncta", "mixed"}
        Structure kind, see :func:`make_structures`.
    n_timepoints : int
        Number of time points ``T``, >= 1.
    illumination : SIMIllumination
        Angles, phases, period and modulation of the patterns.
    camera : CameraModel
        Offset, gain, read noise and bit depth.
    psf_sigma_px : float
        Gaussian PSF standard deviation in pixels, >= 0.
    drift_px_per_s : tuple of float
        Sample drift ``(vy, vx)`` in pixels per second.
    frame_interval_s : float
        Time between time points in seconds, >= 0.
    seed : int
        Non-negative seed; the same seed gives identical arrays, different seeds give
        different structures and different noise.

    Returns
    -------
    SimulatedFrames
        Raw uint16 and clean float32 ``(T, A, P, H, W)`` stacks plus the truth.

    Raises
    ------
    ValueError
        For any invalid argument, naming it.
    """
    shape = check_shape(shape)
    photons = check_float(photons, name="photons", minimum=0.0, strict=True)
    if isinstance(n_timepoints, bool) or not isinstance(n_timepoints, int | np.integer):
        raise ValueError(f"n_timepoints must be an integer >= 1; got {n_timepoints!r}")
    if n_timepoints < 1:
        raise ValueError(f"n_timepoints must be an integer >= 1; got {n_timepoints!r}")
    if not isinstance(illumination, SIMIllumination):
        raise ValueError(
            f"illumination must be a SIMIllumination; got {type(illumination).__name__}"
        )
    if not isinstance(camera, CameraModel):
        raise ValueError(f"camera must be a CameraModel; got {type(camera).__name__}")
    frame_interval_s = check_float(frame_interval_s, name="frame_interval_s", minimum=0.0)
    seed = check_seed(seed)

    sample = SimulatedSample(
        shape, kind=kind, psf_sigma_px=psf_sigma_px, drift_px_per_s=drift_px_per_s, seed=seed
    )
    # Scaling by 1/peak makes `photons` the count at a pattern maximum, whatever the
    # modulation depth.
    patterns = illumination.patterns(shape) * np.float32(photons / illumination.peak)
    rng = np.random.default_rng(seed_sequence(seed, NOISE_STREAM))

    n_angles, n_phases = patterns.shape[:2]
    out_shape = (int(n_timepoints), n_angles, n_phases, *shape)
    raw = np.empty(out_shape, dtype=np.uint16)
    clean = np.empty(out_shape, dtype=np.float32)
    for t in range(int(n_timepoints)):
        field = sample.at(t * frame_interval_s)
        # One frame at a time keeps the float64 noise temporaries small on large fields.
        for a in range(n_angles):
            for p in range(n_phases):
                expected = field * patterns[a, p]
                clean[t, a, p] = camera.expected_adu(expected)
                raw[t, a, p] = camera.expose(expected, rng)
    return SimulatedFrames(
        raw=raw,
        clean=clean,
        sample=sample.blurred.copy(),
        photons=photons,
        illumination=illumination,
        camera=camera,
    )
