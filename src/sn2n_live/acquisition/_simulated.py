"""A simulated low-light SIM microscope made of Python devices, plus the demo core.

:func:`create_simulated_microscope` returns a pymmcore-plus ``UniMMCore`` whose camera,
SLM and laser are Python devices: the camera renders the drifting simulated sample
excited by the pattern shown on the SLM (``PSF ⊛ (density x pattern)`` plus out-of-focus
haze and background, see :class:`~sn2n_live.simulation.SimulatedSample`) and exposes it
through a noisy camera model, so the whole acquisition path (MDA runner, SLM events,
handlers, writers) runs without hardware, GPU or network. :func:`create_demo_core` loads
Micro-Manager's demo configuration (mm-test-adapters) for rigs without an SLM.
:func:`release_core` must be called before dropping a core (see its docstring).
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pymmcore
from pymmcore_plus import CMMCorePlus, find_micromanager
from pymmcore_plus.experimental.unicore import (
    GenericDevice,
    SimpleCameraDevice,
    SLMDevice,
    UniMMCore,
    pymm_property,
)

from sn2n_live.simulation import (
    DEFAULT_BACKGROUND_FRACTION,
    DEFAULT_HAZE_FRACTION,
    DEFAULT_HAZE_SIGMA_PX,
    DEFAULT_PSF_SIGMA_PX,
    CameraModel,
    SimulatedSample,
    StructureKind,
)

CAMERA_LABEL = "Camera"
SLM_LABEL = "SLM"
LASER_LABEL = "Laser"
LASER_POWER_PROPERTY = "Power"

MIN_SIDE_PX = 256
MAX_SIDE_PX = 2048
# 2 photons/ms at the brightest blurred-sample point in focus: 20 photons at 10 ms and
# 100 % power under full illumination (18 under a SIM pattern maximum), i.e. genuinely
# low light.
DEFAULT_PHOTONS_PER_MS = 2.0
DEFAULT_EXPOSURE_MS = 10.0
_CANCEL_WAIT_S = 5.0
# Photobleaching rate per millisecond of full-power, full-illumination excitation
# (remaining fluorophores: exp(-rate * dose)). Chosen so that a tuning sweep on one
# field (6 doses x 3 repeats x 9 SIM frames of 10 ms at 100 %: 1620 full-power ms, a
# mean local dose of 810 ms under patterns of mean 0.5) loses 11-25 % of its signal:
# phalloidin-type filament dyes are the most stable, MitoTracker-type mitochondria the
# least, puncta and mixed samples in between.
DEFAULT_BLEACH_RATE_PER_MS: dict[str, float] = {
    "filaments": 1.5e-4,
    "mitochondria": 3.5e-4,
    "puncta": 2.5e-4,
    "mixed": 2.5e-4,
}


class SimulatedSLM(SLMDevice):
    """An 8-bit SLM that remembers the image it displays.

    Illumination (the excitation in the focal plane) is the displayed image / 255.
    Before anything is displayed the SLM passes all light (the camera then sees
    widefield illumination).

    It reports no image-sequence support, so every SIM pattern is a separate snap:
    pymmcore-plus 0.18.1's engine loads an SLM sequence for a hardware-triggered burst
    but never starts it, which would show the first pattern for the whole burst.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)`` in pixels, the camera's shape.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__()
        self._shape = shape
        self._loaded = np.zeros(shape, dtype=np.uint8)
        self._displayed: np.ndarray | None = None
        self._illumination: np.ndarray | None = None
        self._exposure_ms = DEFAULT_EXPOSURE_MS

    @property
    def displayed(self) -> np.ndarray | None:
        """The displayed ``(H, W)`` uint8 image, or None before the first display."""
        return self._displayed

    @property
    def illumination(self) -> np.ndarray | None:
        """Displayed image / 255 as float32, or None (all light) before the first display."""
        return self._illumination

    def shape(self) -> tuple[int, int]:
        return self._shape

    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def set_image(self, pixels: np.ndarray) -> None:
        # The core has already checked shape and dtype. Events share read-only pattern
        # arrays, and the SLM never writes into them, so no copy is needed.
        self._loaded = pixels

    def get_image(self) -> np.ndarray:
        return self._loaded

    def display_image(self) -> None:
        # Converted once per display, not once per frame of a burst.
        self._illumination = self._loaded.astype(np.float32) * np.float32(1.0 / 255.0)
        self._displayed = self._loaded

    def set_exposure(self, interval_ms: float) -> None:
        self._exposure_ms = float(interval_ms)

    def get_exposure(self) -> float:
        return self._exposure_ms


class SimulatedLaser(GenericDevice):
    """Excitation laser whose ``Power`` property (percent) scales the detected photons."""

    def __init__(self) -> None:
        super().__init__()
        self._power_percent = 100.0

    @pymm_property(limits=(0.0, 100.0), name=LASER_POWER_PROPERTY)
    def power(self) -> float:
        """Laser power in percent of maximum, 0..100."""
        return self._power_percent

    @power.setter
    def power(self, value: float) -> None:
        self._power_percent = float(value)

    @property
    def fraction(self) -> float:
        """Laser power as a fraction of maximum, 0..1."""
        return self._power_percent / 100.0


class SimulatedCamera(SimpleCameraDevice):
    """uint16 camera that images the simulated sample under the SLM's current pattern.

    Expected photons of a frame are ``sample.image(t, illumination * R, scale=
    photons_per_ms * exposure_ms * laser fraction)``: the PSF-blurred product of the
    drifted density and the SLM illumination, plus haze and background (see
    :class:`~sn2n_live.simulation.SimulatedSample`), with ``t`` the microscope clock at
    the start of the exposure; :meth:`CameraModel.expose` turns them into noisy ADU.

    ``R(r) = exp(-bleach_rate_per_ms * dose(r))`` is the fraction of fluorophores not
    yet photobleached, ``dose(r)`` the excitation each camera pixel has received so far
    (the sum over snaps of ``laser fraction * exposure_ms * illumination(r)``, in
    full-power milliseconds), so SIM stripes bleach where they illuminate. Multiplying
    the excitation by ``R`` is multiplying the density by it (in focus exactly; the
    haze and autofluorescence, excited by the mean illumination, fade with the mean of
    ``I * R``). The dose map lives in camera coordinates: the slow drift (a fraction of
    a pixel per second) carries bleached fluorophores along, which is neglected. A
    frame is imaged with the bleaching reached at its start, then adds its own dose.
    The sample itself is never modified; the bleaching state is guarded by a lock.

    Parameters
    ----------
    sample : SimulatedSample
        The drifting ground-truth sample; its shape is the sensor shape.
    slm : SimulatedSLM
        The SLM whose displayed image illuminates the sample.
    laser : SimulatedLaser
        The laser whose power scales the signal.
    camera_model : CameraModel
        Offset, gain, read noise and bit depth.
    photons_per_ms : float
        In-focus expected photons per millisecond where the blurred sample
        (``sample.blurred``) is 1, under full illumination and 100 % laser power.
    clock : callable
        Returns the microscope time in seconds (time 0 is when the camera was made).
    rng : numpy.random.Generator
        Source of the camera noise.
    realtime : bool
        If True, a frame takes at least its exposure time, like a real camera.
    bleach_rate_per_ms : float
        Photobleaching rate per full-power millisecond, >= 0 (0 disables bleaching).
    """

    def __init__(
        self,
        *,
        sample: SimulatedSample,
        slm: SimulatedSLM,
        laser: SimulatedLaser,
        camera_model: CameraModel,
        photons_per_ms: float,
        clock: Callable[[], float],
        rng: np.random.Generator,
        realtime: bool,
        bleach_rate_per_ms: float = 0.0,
    ) -> None:
        super().__init__()
        self.sample = sample
        self.camera_model = camera_model
        self._slm = slm
        self._laser = laser
        self._photons_per_ms = photons_per_ms
        self._clock = clock
        self._t0 = clock()
        self._rng = rng
        self._realtime = realtime
        self._exposure_ms = DEFAULT_EXPOSURE_MS
        self.bleach_rate_per_ms = _check_bleach_rate(bleach_rate_per_ms)
        self._bleach_lock = threading.RLock()
        self._reset_bleaching_locked()

    def _reset_bleaching_locked(self) -> None:
        self._delivered_ms = 0.0  # sum of laser fraction x exposure_ms over snaps
        self._uniform_dose = 0.0  # dose from widefield snaps (the same everywhere)
        self._dose_map: np.ndarray | None = None  # dose from patterned snaps, (H, W)
        self._remaining: np.ndarray | float = 1.0  # exp(-rate * dose), cached

    def elapsed_s(self) -> float:
        """Microscope time in seconds since the camera was made."""
        return self._clock() - self._t0

    @property
    def delivered_dose(self) -> float:
        """Sum over snaps of laser fraction x exposure in ms (full-power milliseconds)."""
        with self._bleach_lock:
            return self._delivered_ms

    def dose_map(self) -> np.ndarray:
        """Excitation each pixel received so far, ``(H, W)`` float32 full-power ms (a copy)."""
        with self._bleach_lock:
            dose = np.full(self.sample.shape, self._uniform_dose, dtype=np.float32)
            if self._dose_map is not None:
                dose += self._dose_map
            return dose

    def remaining_map(self) -> np.ndarray:
        """Fraction of fluorophores not bleached, ``(H, W)`` float32 in (0, 1] (a copy)."""
        with self._bleach_lock:
            return np.broadcast_to(
                np.asarray(self._remaining, dtype=np.float32), self.sample.shape
            ).copy()

    def bleached_fraction(self) -> float:
        """Mean remaining fluorophore fraction, weighted by the density (1 = unbleached)."""
        with self._bleach_lock:
            remaining = self._remaining
            if isinstance(remaining, float):
                return remaining
            density = self.sample.structure
            total = float(density.sum(dtype=np.float64))
            return float(np.vdot(density, remaining)) / total

    def reset_bleaching(self) -> None:
        """Forget all delivered dose: the sample is unbleached again."""
        with self._bleach_lock:
            self._reset_bleaching_locked()

    def replace_sample(self, sample: SimulatedSample) -> None:
        """Image ``sample`` from now on, unbleached (a fresh field of view)."""
        if sample.shape != self.sample.shape:
            raise ValueError(f"the new sample must have shape {self.sample.shape}")
        with self._bleach_lock:
            self.sample = sample
            self._reset_bleaching_locked()

    def expected_photons(self, time_s: float) -> np.ndarray:
        """Noise-free expected photons of a frame started at ``time_s``.

        Uses the current SLM image, exposure, laser power and bleaching.
        """
        scale = self._photons_per_ms * self._exposure_ms * self._laser.fraction
        illumination = self._slm.illumination
        with self._bleach_lock:
            sample, remaining = self.sample, self._remaining
        if isinstance(remaining, float):
            # Uniform bleaching scales the whole frame (haze and background too).
            return sample.image(time_s, illumination, scale=scale * remaining)
        if illumination is not None:
            remaining = remaining * illumination
        return sample.image(time_s, remaining, scale=scale)

    def _deliver(self, illumination: np.ndarray | None) -> None:
        """Add one snap's excitation (laser fraction x exposure x illumination)."""
        dose = self._laser.fraction * self._exposure_ms
        self._delivered_ms += dose
        rate = self.bleach_rate_per_ms
        if rate == 0.0 or dose == 0.0:
            return
        if illumination is None:
            self._uniform_dose += dose
        elif self._dose_map is None:
            self._dose_map = illumination * np.float32(dose)
        else:
            self._dose_map += illumination * np.float32(dose)
        if self._dose_map is None:
            self._remaining = math.exp(-rate * self._uniform_dose)
        else:
            remaining = self._dose_map * np.float32(-rate)
            np.exp(remaining, out=remaining)
            remaining *= np.float32(math.exp(-rate * self._uniform_dose))
            self._remaining = remaining

    def sensor_shape(self) -> tuple[int, int]:
        return self.sample.shape

    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16)

    def get_exposure(self) -> float:
        return self._exposure_ms

    def set_exposure(self, exposure: float) -> None:
        exposure = float(exposure)
        if not (math.isfinite(exposure) and exposure >= 0):
            raise ValueError(f"exposure must be a finite number of ms >= 0; got {exposure!r}")
        self._exposure_ms = exposure

    def snap(self, buffer: np.ndarray) -> dict[str, str]:
        started = time.perf_counter()
        time_s = self.elapsed_s()
        with self._bleach_lock:  # the frame and its dose, atomic against a reset
            photons = self.expected_photons(time_s)
            self._deliver(self._slm.illumination)
        buffer[:] = self.camera_model.expose(photons, self._rng)
        if self._realtime:
            # Render first, then wait out the rest of the exposure.
            remaining = self._exposure_ms / 1000.0 - (time.perf_counter() - started)
            if remaining > 0:
                time.sleep(remaining)
        return {"SimulatedTime-s": f"{time_s:.6f}"}


class SimulatedMicroscope(UniMMCore):
    """A ``UniMMCore`` with a simulated camera, SLM and laser loaded.

    Device labels: ``"Camera"`` (current camera), ``"SLM"`` (current SLM) and
    ``"Laser"`` (property ``"Power"`` in percent). Autoshutter is off: there is no
    shutter, the laser illuminates only while the camera exposes (so the sample bleaches
    only during snaps, see :class:`SimulatedCamera`), and a shutter device would not
    change any frame. Create it with :func:`create_simulated_microscope`.

    Parameters
    ----------
    camera : SimulatedCamera
        The camera; it references the SLM and laser below.
    slm : SimulatedSLM
        The SLM.
    laser : SimulatedLaser
        The laser.
    """

    def __init__(
        self, *, camera: SimulatedCamera, slm: SimulatedSLM, laser: SimulatedLaser
    ) -> None:
        super().__init__()
        self._sim_camera = camera
        for label, device in ((CAMERA_LABEL, camera), (SLM_LABEL, slm), (LASER_LABEL, laser)):
            self.loadPyDevice(label, device)
            self.initializeDevice(label)
        self.setCameraDevice(CAMERA_LABEL)
        self.setSLMDevice(SLM_LABEL)
        self.setAutoShutter(False)
        # OME writers need a physical pixel size: a 100x/1.4 objective on a 6.5 um sCMOS.
        self.definePixelSizeConfig(PIXEL_SIZE_CONFIG)
        self.setPixelSizeUm(PIXEL_SIZE_CONFIG, PIXEL_SIZE_UM)
        self.setPixelSizeConfig(PIXEL_SIZE_CONFIG)

    @property
    def sample(self) -> SimulatedSample:
        """The ground-truth sample the camera images."""
        return self._sim_camera.sample

    @property
    def camera_model(self) -> CameraModel:
        """The camera's noise model."""
        return self._sim_camera.camera_model

    @property
    def bleach_rate_per_ms(self) -> float:
        """Photobleaching rate per full-power millisecond (0: no bleaching)."""
        return self._sim_camera.bleach_rate_per_ms

    @property
    def delivered_dose(self) -> float:
        """Light delivered to the current field since it was fresh, in full-power ms.

        The sum over snaps of ``laser fraction (0..1) x exposure_ms``, whatever the SLM
        showed: 10 frames of 10 ms at 50 % are 50. A pixel's own dose also weighs the
        SLM illumination there (:meth:`dose_map`); under SIM patterns of mean 0.5 the
        mean pixel dose is half this.
        """
        return self._sim_camera.delivered_dose

    @property
    def bleached_fraction(self) -> float:
        """Mean fraction of fluorophores *remaining*, density-weighted; 1 = unbleached."""
        return self._sim_camera.bleached_fraction()

    def dose_map(self) -> np.ndarray:
        """Excitation each camera pixel received, ``(H, W)`` float32 full-power ms."""
        return self._sim_camera.dose_map()

    def remaining_map(self) -> np.ndarray:
        """Fraction of fluorophores not yet bleached per pixel, ``(H, W)`` float32."""
        return self._sim_camera.remaining_map()

    def reset_bleaching(self) -> None:
        """Make the current field unbleached again and :attr:`delivered_dose` 0."""
        self._sim_camera.reset_bleaching()

    def new_field(self, seed: int) -> None:
        """Move to a fresh, unbleached field of view: new structures drawn from ``seed``.

        The sample keeps its kind and optics; the camera noise stream and the clock go
        on. Raises ValueError for a sample made from a given density (no kind to draw).
        """
        old = self.sample
        if old.kind is None:
            raise ValueError("new_field needs a sample drawn by kind, not from a density")
        sample = SimulatedSample(
            old.shape,
            kind=old.kind,
            psf_sigma_px=old.psf_sigma_px,
            haze_fraction=old.haze_fraction,
            haze_sigma_px=old.haze_sigma_px,
            background_fraction=old.background_fraction,
            drift_px_per_s=old.drift_px_per_s,
            seed=seed,
        )
        self._sim_camera.replace_sample(sample)

    def elapsed_s(self) -> float:
        """Microscope time in seconds (the time the next snap would image)."""
        return self._sim_camera.elapsed_s()

    def expected_adu(self, time_s: float | None = None) -> np.ndarray:
        """Noise-free expected ADU of a frame under the current settings.

        Parameters
        ----------
        time_s : float, optional
            Microscope time of the frame; defaults to now (:meth:`elapsed_s`).

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` float32 expected ADU under the current SLM image, exposure,
            laser power and bleaching (the mean a snap would record now).
        """
        when = self.elapsed_s() if time_s is None else time_s
        return self.camera_model.expected_adu(self._sim_camera.expected_photons(when))


PIXEL_SIZE_CONFIG = "sim-100x"
PIXEL_SIZE_UM = 0.065


def create_simulated_microscope(
    *,
    shape: Sequence[int] = (512, 512),
    kind: StructureKind = "mixed",
    photons_per_ms: float = DEFAULT_PHOTONS_PER_MS,
    psf_sigma_px: float = DEFAULT_PSF_SIGMA_PX,
    haze_fraction: float = DEFAULT_HAZE_FRACTION,
    haze_sigma_px: float = DEFAULT_HAZE_SIGMA_PX,
    background_fraction: float = DEFAULT_BACKGROUND_FRACTION,
    drift_px_per_s: Sequence[float] = (0.3, 0.2),
    camera: CameraModel = CameraModel(),  # noqa: B008 - frozen, so shared safely
    seed: int = 0,
    clock: Callable[[], float] = time.monotonic,
    realtime: bool = True,
    bleach_rate_per_ms: float | None = None,
) -> SimulatedMicroscope:
    """Create a simulated low-light SIM microscope.

    Parameters
    ----------
    shape : sequence of int
        Camera and SLM ``(height, width)``, each 256..2048 px.
    kind : {"filaments", "mitochondria", "puncta", "mixed"}
        Sample structures, see :func:`sn2n_live.simulation.make_structures`.
    photons_per_ms : float
        In-focus expected photons per millisecond at the brightest point of the blurred
        sample under full illumination at 100 % laser power, > 0. The default gives a
        peak of 20 photons at 10 ms (before haze and background).
    psf_sigma_px : float
        Gaussian PSF standard deviation in pixels, >= 0; the optical cut-off is
        ``0.42 / psf_sigma_px`` cycles/px (:func:`~sn2n_live.simulation.otf_cutoff`).
    haze_fraction : float
        Out-of-focus haze as a fraction of the in-focus photon flux, >= 0.
    haze_sigma_px : float
        Standard deviation of the haze blur in pixels, >= 0.
    background_fraction : float
        Flat autofluorescence per pixel as a fraction of the full-illumination photon
        scale (``photons_per_ms * exposure * laser``) times the mean SLM illumination.
    drift_px_per_s : sequence of float
        Sample drift ``(vy, vx)`` in pixels per second of microscope time.
    camera : CameraModel
        Offset, gain, read noise and bit depth of the camera.
    seed : int
        Seed of the sample structures and of the camera noise.
    clock : callable
        Returns the current time in seconds; the microscope's time 0 is its value
        now. Inject a fake clock for deterministic tests.
    realtime : bool
        If True, each frame takes at least its exposure time, like a real camera;
        False renders as fast as the CPU allows.
    bleach_rate_per_ms : float, optional
        Photobleaching rate per millisecond of full-power, full-illumination
        excitation, >= 0: fluorophores remaining ``exp(-rate * dose)`` (see
        :class:`SimulatedCamera`); 0 disables bleaching. Default: the kind's rate in
        ``DEFAULT_BLEACH_RATE_PER_MS`` (1.5e-4 filaments, 3.5e-4 mitochondria, 2.5e-4
        puncta and mixed).

    Returns
    -------
    SimulatedMicroscope
        The core, with devices ``"Camera"``, ``"SLM"`` and ``"Laser"``. Call
        :func:`release_core` when done with it.

    Raises
    ------
    ValueError
        If ``shape`` is outside 256..2048 px, ``photons_per_ms`` is not > 0 or
        ``bleach_rate_per_ms`` is not >= 0 (other
        arguments are checked by :class:`~sn2n_live.simulation.SimulatedSample`).
    """
    try:
        height, width = (int(side) for side in shape)
    except (TypeError, ValueError):
        height = width = -1
    if not (MIN_SIDE_PX <= height <= MAX_SIDE_PX and MIN_SIDE_PX <= width <= MAX_SIDE_PX):
        raise ValueError(
            f"shape must be (height, width) with each side {MIN_SIDE_PX}..{MAX_SIDE_PX} px "
            f"(a camera-sized field); got {shape!r}"
        )
    if not (isinstance(photons_per_ms, int | float) and math.isfinite(photons_per_ms)) or (
        photons_per_ms <= 0
    ):
        raise ValueError(f"photons_per_ms must be a finite number > 0; got {photons_per_ms!r}")
    if bleach_rate_per_ms is None:
        bleach_rate_per_ms = DEFAULT_BLEACH_RATE_PER_MS.get(str(kind), 0.0)
    bleach_rate_per_ms = _check_bleach_rate(bleach_rate_per_ms)
    sample = SimulatedSample(
        (height, width),
        kind=kind,
        psf_sigma_px=psf_sigma_px,
        haze_fraction=haze_fraction,
        haze_sigma_px=haze_sigma_px,
        background_fraction=background_fraction,
        drift_px_per_s=drift_px_per_s,
        seed=seed,
    )
    slm = SimulatedSLM((height, width))
    laser = SimulatedLaser()
    sim_camera = SimulatedCamera(
        sample=sample,
        slm=slm,
        laser=laser,
        camera_model=camera,
        photons_per_ms=float(photons_per_ms),
        clock=clock,
        # A separate stream from the structures, which SimulatedSample draws from `seed`.
        rng=np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,))),
        realtime=realtime,
        bleach_rate_per_ms=bleach_rate_per_ms,
    )
    return SimulatedMicroscope(camera=sim_camera, slm=slm, laser=laser)


def _check_bleach_rate(rate: object) -> float:
    if (
        isinstance(rate, bool)
        or not isinstance(rate, int | float)
        or not math.isfinite(rate)
        or rate < 0
    ):
        raise ValueError(
            f"bleach_rate_per_ms must be a finite number >= 0 (0 disables bleaching); got {rate!r}"
        )
    return float(rate)


def create_demo_core() -> CMMCorePlus:
    """Load Micro-Manager's demo configuration (DemoCamera etc., no SLM).

    Returns
    -------
    CMMCorePlus
        The core with ``MMConfig_demo.cfg`` loaded (512x512 uint16 camera, channel group
        ``"Channel"``). Call :func:`release_core` when done with it.

    Raises
    ------
    RuntimeError
        If no Micro-Manager device adapters are installed.
    """
    if find_micromanager() is None:
        raise RuntimeError(
            "no Micro-Manager device adapters found: install mm-test-adapters "
            "(`pip install mm-test-adapters`, matching pymmcore's device interface) or "
            "point MICROMANAGER_PATH at a Micro-Manager installation"
        )
    core = CMMCorePlus()
    core.loadSystemConfiguration()
    return core


def release_core(core: CMMCorePlus) -> None:
    """Shut a core down so that the process can exit cleanly; do not use it afterwards.

    Cancels a running MDA (waiting up to 5 s for it to stop), stops sequence
    acquisition, unloads all devices and detaches the core's C++ notification callback.
    Without this, a process that loaded a configuration aborts at exit about half of
    the time ("FATAL: exception not rethrown"), when the C++ notification thread calls
    into the finalizing interpreter. Drop your references to ``core`` afterwards.

    Parameters
    ----------
    core : CMMCorePlus
        The core to release (any ``CMMCorePlus``, including ``UniMMCore``).
    """
    if core.mda.is_running():
        core.mda.cancel()
        deadline = time.monotonic() + _CANCEL_WAIT_S
        while core.mda.is_running() and time.monotonic() < deadline:
            time.sleep(0.01)
    if core.isSequenceRunning():
        core.stopSequenceAcquisition()
    core.unloadAllDevices()
    # CMMCorePlus forbids registerCallback; the base class method is what detaches the
    # relay (CMMCorePlus.__del__ does the same, but too late at interpreter exit).
    pymmcore.CMMCore.registerCallback(core, None)
    gc.collect()
