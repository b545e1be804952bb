"""Noisy low-light SIM raw stacks with their noise-free truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._camera import CameraModel
from ._checks import NOISE_STREAM, check_float, check_seed, check_shape, seed_sequence
from ._optics import DEFAULT_PSF_SIGMA_PX, PSFKind, SIMIllumination
from ._sample import (
    DEFAULT_BACKGROUND_FRACTION,
    DEFAULT_HAZE_FRACTION,
    DEFAULT_HAZE_SIGMA_PX,
    SimulatedSample,
)
from ._structures import StructureKind


@dataclass(frozen=True)
class SimulatedFrames:
    """A simulated SIM acquisition and its ground truth.

    The ``(H, W)`` truths describe time 0 (they move with ``drift_px_per_s`` after it).

    Attributes
    ----------
    raw : numpy.ndarray
        uint16 ``(T, A, P, H, W)`` noisy camera frames in ADU (time, angle, phase).
    clean : numpy.ndarray
        float32 ``(T, A, P, H, W)`` noise-free expected ADU of the same frames.
    density : numpy.ndarray
        float32 ``(H, W)`` unblurred fluorophore density in [0, 1] with max 1.
    sample : numpy.ndarray
        float32 ``(H, W)`` in-focus PSF-blurred density, in [0, 1] with max 1.
    background_mask : numpy.ndarray
        bool ``(H, W)``: true background, no structure within the PSF's reach
        (``sample < 0.02``).
    thin_mask : numpy.ndarray
        bool ``(H, W)``: thin structures (filament and ER-tubule pixels), disjoint from
        ``background_mask``; see :attr:`SimulatedSample.thin_mask`.
    pattern_wavevectors : numpy.ndarray
        float64 ``(A, 2)`` pattern wave vectors ``(ky, kx)`` in cycles/px.
    pattern_phases : numpy.ndarray
        float64 ``(A, P)`` pattern phases at ``r = 0`` in radians: pattern ``(a, p)`` is
        ``0.5 * (1 + modulation * cos(2π k_a·r + pattern_phases[a, p]))``.
    modulation : float
        Excitation modulation depth of the patterns.
    image_modulation : float
        Stripe modulation of the in-focus image, ``modulation * OTF(|k|)`` (haze and
        background dilute it further in ``clean``).
    psf_sigma_px : float
        Gaussian PSF standard deviation in pixels.
    psf_kind : {"gaussian", "ideal"}
        The PSF model (the "ideal" one has the cut-off ``otf_cutoff(psf_sigma_px)``).
    background_photons : float
        Flat autofluorescence in photons per pixel of every frame (patterns of mean 0.5;
        a field that does not hold whole stripe periods shifts it by < 1 %).
    photons : float
        In-focus expected photons at the brightest point of ``sample`` under the
        patterns' peak intensity (see :func:`simulate_sim_frames`).
    illumination : SIMIllumination
        The illumination patterns used.
    camera : CameraModel
        The camera used.
    """

    raw: np.ndarray
    clean: np.ndarray
    density: np.ndarray
    sample: np.ndarray
    background_mask: np.ndarray
    thin_mask: np.ndarray
    pattern_wavevectors: np.ndarray
    pattern_phases: np.ndarray
    modulation: float
    image_modulation: float
    psf_sigma_px: float
    psf_kind: PSFKind
    background_photons: float
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
    psf_sigma_px: float = DEFAULT_PSF_SIGMA_PX,
    haze_fraction: float = DEFAULT_HAZE_FRACTION,
    haze_sigma_px: float = DEFAULT_HAZE_SIGMA_PX,
    background_fraction: float = DEFAULT_BACKGROUND_FRACTION,
    drift_px_per_s: Sequence[float] = (0.0, 0.0),
    frame_interval_s: float = 1.0,
    seed: int = 0,
    psf_kind: PSFKind = "gaussian",
) -> SimulatedFrames:
    """Simulate a low-light SIM time series with ground truth.

    Frame ``(t, a, p)`` images the sample at time ``t * frame_interval_s`` (drift is
    applied per time point; the ``A * P`` frames of one time point share it) under
    pattern ``(a, p)`` with the physical formation of :class:`SimulatedSample`: the
    PSF-blurred product of density and pattern, plus out-of-focus haze and a flat
    background, both excited by the pattern mean. Its photon scale is ``photons /
    illumination.peak``, so ``photons`` is the in-focus count at the brightest point of
    the blurred sample (``sample == 1``) under uniform light at the pattern peak: what a
    bright sub-resolution object at a stripe maximum receives. Extended objects see the
    stripes blurred to ``image_modulation``. With the defaults the background is
    ``0.02 * 0.5 / 0.9 ≈ 1.1 %`` of ``photons`` per pixel.

    Parameters
    ----------
    shape : sequence of int
        ``(height, width)`` in pixels, each >= 16.
    photons : float
        Peak expected photon count (see above), > 0. Low-light SIM is ~5-50.
    kind : {"filaments", "mitochondria", "puncta", "mixed"}
        Structure kind, see :func:`make_structure_layers`.
    n_timepoints : int
        Number of time points ``T``, >= 1.
    illumination : SIMIllumination
        Angles, phases, period and modulation of the patterns; widefield frames are
        ``SIMIllumination.widefield()``.
    camera : CameraModel
        Offset, gain, read noise and bit depth.
    psf_sigma_px : float
        Gaussian PSF standard deviation in pixels, >= 0.
    haze_fraction : float
        Out-of-focus haze as a fraction of the in-focus photon flux, >= 0.
    haze_sigma_px : float
        Standard deviation of the haze blur in pixels, >= 0.
    background_fraction : float
        Flat autofluorescence per pixel as a fraction of the full-illumination scale
        ``photons / illumination.peak``, times the pattern mean, >= 0.
    drift_px_per_s : tuple of float
        Sample drift ``(vy, vx)`` in pixels per second.
    frame_interval_s : float
        Time between time points in seconds, >= 0.
    seed : int
        Non-negative seed; the same seed gives identical arrays, different seeds give
        different structures and different noise.
    psf_kind : {"gaussian", "ideal"}
        The detection PSF's model (:func:`~sn2n_live.simulation.otf`): the Gaussian, or
        the ideal widefield PSF of the same cut-off, which passes nothing beyond it.

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
    _check_timepoints(n_timepoints)
    _check_models(illumination, camera)
    frame_interval_s = check_float(frame_interval_s, name="frame_interval_s", minimum=0.0)
    seed = check_seed(seed)

    sample = SimulatedSample(
        shape,
        kind=kind,
        psf_sigma_px=psf_sigma_px,
        haze_fraction=haze_fraction,
        haze_sigma_px=haze_sigma_px,
        background_fraction=background_fraction,
        drift_px_per_s=drift_px_per_s,
        seed=seed,
        psf_kind=psf_kind,
    )
    patterns = illumination.patterns(shape)
    # Scaling by 1/peak makes `photons` the in-focus count at a pattern maximum, whatever
    # the modulation depth.
    scale = photons / illumination.peak
    rng = np.random.default_rng(seed_sequence(seed, NOISE_STREAM))
    raw, clean = _expose_series(
        sample,
        patterns,
        camera,
        rng,
        scale=scale,
        n_timepoints=int(n_timepoints),
        frame_interval_s=frame_interval_s,
    )
    return _with_truth(raw, clean, sample, illumination, camera, scale=scale, photons=photons)


def _check_timepoints(n_timepoints: int) -> None:
    if isinstance(n_timepoints, bool) or not isinstance(n_timepoints, int | np.integer):
        raise ValueError(f"n_timepoints must be an integer >= 1; got {n_timepoints!r}")
    if n_timepoints < 1:
        raise ValueError(f"n_timepoints must be an integer >= 1; got {n_timepoints!r}")


def _check_models(illumination: object, camera: object) -> None:
    if not isinstance(illumination, SIMIllumination):
        raise ValueError(
            f"illumination must be a SIMIllumination; got {type(illumination).__name__}"
        )
    if not isinstance(camera, CameraModel):
        raise ValueError(f"camera must be a CameraModel; got {type(camera).__name__}")


def _expose_series(
    sample: SimulatedSample,
    patterns: np.ndarray,
    camera: CameraModel,
    rng: np.random.Generator,
    *,
    scale: float,
    n_timepoints: int,
    frame_interval_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Image the sample under every ``(A, P, H, W)`` pattern at every time point.

    Returns the ``(T, A, P, H, W)`` uint16 raw frames and float32 clean (expected) ADU.
    """
    n_angles, n_phases = patterns.shape[:2]
    raw = np.empty((n_timepoints, *patterns.shape), dtype=np.uint16)
    clean = np.empty((n_timepoints, *patterns.shape), dtype=np.float32)
    for t in range(n_timepoints):
        # One frame at a time keeps the float64 noise temporaries small on large fields.
        for a in range(n_angles):
            for p in range(n_phases):
                expected = sample.image(t * frame_interval_s, patterns[a, p], scale=scale)
                clean[t, a, p] = camera.expected_adu(expected)
                raw[t, a, p] = camera.expose(expected, rng)
    return raw, clean


def _with_truth(
    raw: np.ndarray,
    clean: np.ndarray,
    sample: SimulatedSample,
    illumination: SIMIllumination,
    camera: CameraModel,
    *,
    scale: float,
    photons: float,
) -> SimulatedFrames:
    """Bundle the frames with the sample's truth and the patterns' parameters."""
    return SimulatedFrames(
        raw=raw,
        clean=clean,
        density=sample.structure.copy(),
        sample=sample.blurred.copy(),
        background_mask=sample.background_mask,
        thin_mask=sample.thin_mask,
        pattern_wavevectors=illumination.wavevectors(),
        pattern_phases=illumination.phases_rad(),
        modulation=illumination.modulation,
        image_modulation=illumination.image_modulation(sample.psf_sigma_px, sample.psf_kind),
        psf_sigma_px=sample.psf_sigma_px,
        psf_kind=sample.psf_kind,
        background_photons=scale * sample.background_fraction * 0.5,
        photons=photons,
        illumination=illumination,
        camera=camera,
    )
