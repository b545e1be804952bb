"""Run a profile on a microscope: open the core, acquire pilot frames, acquire live.

These are the building blocks of ``sn2n-live pilot``, ``acquire`` and ``demo``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import useq
from pymmcore_plus import DeviceType

from sn2n_live._outputs import check_output, publish, temporary_sibling
from sn2n_live.acquisition._live import RunSummary, live_denoise
from sn2n_live.acquisition._simulated import (
    create_demo_core,
    create_simulated_microscope,
    release_core,
)
from sn2n_live.acquisition._stats import LiveStats
from sn2n_live.config import expand_sequence

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

    from sn2n_live.acquisition._live import FrameDenoiser
    from sn2n_live.method import Denoiser, ModelPackage
    from sn2n_live.profiles import Profile

__all__ = [
    "acquire_live",
    "acquire_pilot",
    "build_events",
    "build_profile_denoiser",
    "open_microscope",
]


def build_profile_denoiser(profile: Profile, package: ModelPackage) -> Denoiser:
    """Build the Denoiser the profile's ``[denoise]`` settings ask for.

    Parameters
    ----------
    profile : Profile
        Its engine, precision, tile and batch size are used.
    package : ModelPackage
        The trained model.

    Returns
    -------
    Denoiser
        On the selected engine (see :func:`sn2n_live.engine.select_engine`).
    """
    from sn2n_live.engine import build_denoiser

    settings = profile.denoise
    return build_denoiser(
        package,
        engine=settings.engine,
        tile=settings.tile_size,
        batch_size=settings.batch_size,
        precision=settings.precision,
    )


@contextmanager
def open_microscope(profile: Profile) -> Iterator[CMMCorePlus]:
    """Open the profile's microscope, apply its camera settings, release it afterwards.

    Parameters
    ----------
    profile : Profile
        ``microscope.kind`` picks the simulated SIM rig, Micro-Manager's demo
        configuration, or a configuration file.

    Yields
    ------
    CMMCorePlus
        A ready core; its devices are unloaded when the block exits.
    """
    core = create_core(profile)
    try:
        core.setExposure(profile.camera.exposure_ms)
        set_laser(core, profile, "camera")
        for device, prop, value in profile.camera.properties:
            core.setProperty(device, prop, value)
        yield core
    finally:
        release_core(core)


def create_core(profile: Profile) -> CMMCorePlus:
    """Create the profile's core with its configuration loaded, nothing else applied.

    Parameters
    ----------
    profile : Profile
        ``microscope.kind`` picks the simulated SIM rig, Micro-Manager's demo
        configuration, or a configuration file.

    Returns
    -------
    CMMCorePlus
        Release it with :func:`~sn2n_live.acquisition.release_core`.

    Raises
    ------
    FileNotFoundError
        If ``microscope.config_file`` does not exist.
    RuntimeError
        If the configuration does not load (the message names the file).
    """
    settings = profile.microscope
    core: CMMCorePlus
    if settings.kind == "simulated":
        sim = settings.simulated
        kwargs: dict[str, Any] = {
            "shape": sim.shape,
            "kind": sim.sample,
            "drift_px_per_s": sim.drift_px_per_s,
            "seed": sim.seed,
        }
        if sim.photons_per_ms is not None:
            kwargs["photons_per_ms"] = sim.photons_per_ms
        core = create_simulated_microscope(**kwargs)
    elif settings.kind == "demo":
        core = create_demo_core()
    else:
        from pymmcore_plus import CMMCorePlus

        assert settings.config_file is not None  # enforced by the profile schema
        if not settings.config_file.is_file():
            raise FileNotFoundError(
                f"Micro-Manager configuration {settings.config_file} not found; "
                "set microscope.config_file in the profile"
            )
        core = CMMCorePlus()
        try:
            core.loadSystemConfiguration(str(settings.config_file))
        except Exception as exc:
            release_core(core)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeError(
                f"Micro-Manager configuration {settings.config_file} does not load: {first}"
            ) from exc
    return core


def set_laser(core: CMMCorePlus, profile: Profile, section: Literal["camera", "pilot"]) -> None:
    """Set ``[section].laser_power_percent`` through ``camera.laser_property``, if given.

    Raises
    ------
    ValueError
        If the laser power is set but the core has no such device or property.
    """
    percent = getattr(profile, section).laser_power_percent
    if percent is None:
        return
    if problem := laser_problem(core, profile, section):
        raise ValueError(problem)
    core.setProperty(*profile.camera.laser_property, percent)


def laser_problem(
    core: CMMCorePlus, profile: Profile, section: Literal["camera", "pilot"]
) -> str | None:
    """Why ``[section].laser_power_percent`` cannot be set on ``core``, or None if it can."""
    device, prop = profile.camera.laser_property
    if device not in core.getLoadedDevices():
        problem = f"this microscope has no {device!r} device"
    elif not core.hasProperty(device, prop):
        problem = f"device {device!r} has no property {prop!r}"
    else:
        return None
    return (
        f"{section}.laser_power_percent is set but {problem} (camera.laser_property = "
        f"[{device!r}, {prop!r}]); set camera.laser_property to your laser's "
        f"[device, power property], or remove {section}.laser_power_percent"
    )


def slm_device(core: CMMCorePlus, profile: Profile) -> str:
    """Return the SLM that ``sim.pattern_source = "slm"`` will drive.

    Raises
    ------
    ValueError
        If the core has no SLM (or not the one ``sim.slm_device`` names); the message says
        which ``pattern_source`` to choose instead.
    """
    assert profile.sim is not None
    slms = list(core.getLoadedDevicesOfType(DeviceType.SLM))
    label = profile.sim.slm_device or core.getSLMDevice()
    if label and label in slms:
        return label
    where = _describe_microscope(profile)
    if profile.sim.slm_device:
        problem = f"sim.slm_device = {label!r} is not an SLM of {where} (SLMs: {slms or 'none'})"
    else:
        problem = f"sim.pattern_source = 'slm' but {where} has no SLM device"
    raise ValueError(
        f"{problem}; without an SLM set sim.pattern_source = 'metadata' (patterns switched "
        "outside Micro-Manager, or none) or 'properties' (angle_property and phase_property "
        "select them); see docs/profiles.md"
    )


def _describe_microscope(profile: Profile) -> str:
    settings = profile.microscope
    if settings.kind == "config":
        return f"the configuration {settings.config_file}"
    return f"the {settings.kind} microscope"


def build_events(
    profile: Profile, core: CMMCorePlus, *, timepoints: int | None = None
) -> list[useq.MDAEvent]:
    """Expand the profile's time-lapse into MDA events, one SIM set per time point.

    Parameters
    ----------
    profile : Profile
        Supplies the time plan and the SIM plan (none: one frame per time point).
    core : CMMCorePlus
        Used for the SLM size when patterns go to an SLM.
    timepoints : int, optional
        Overrides ``profile.acquisition.timepoints``.
    """
    loops = timepoints or profile.acquisition.timepoints
    sequence = useq.MDASequence(
        time_plan={"interval": profile.acquisition.interval_s, "loops": loops},
        axis_order="tpgcz",
    )
    slm_shape = None
    if profile.sim is not None and profile.sim.pattern_source == "slm":
        slm = slm_device(core, profile)
        slm_shape = (core.getSLMHeight(slm), core.getSLMWidth(slm))
    return expand_sequence(sequence, profile.sim, slm_shape=slm_shape)


def acquire_pilot(
    profile: Profile,
    out: str | Path,
    *,
    timepoints: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Acquire low-light pilot frames for training and save them as OME-TIFF.

    Uses the profile's ``[pilot]`` exposure and laser power when given. The frames
    are written by pymmcore-plus's own OME-TIFF sink, as a flat ``(frame, y, x)`` stack.

    Parameters
    ----------
    profile : Profile
        Microscope, pilot exposure/laser and SIM plan.
    out : str or Path
        OME-TIFF file to write.
    timepoints : int, optional
        Overrides ``profile.pilot.timepoints``.
    overwrite : bool
        Replace an existing file instead of failing.

    Returns
    -------
    Path
        The written file (absolute). It appears only when the acquisition completed.

    Raises
    ------
    FileExistsError
        If ``out`` exists and not ``overwrite`` (checked before the microscope is opened).
    sn2n_live._outputs.OutputPathError
        If ``out``'s folder cannot be written.
    """
    if Path(out).suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"Pilot output must be an OME-TIFF (.ome.tiff), got {out}")
    out = check_output(out, overwrite=overwrite, what="pilot stack")
    with open_microscope(profile) as core, temporary_sibling(out) as partial:
        if profile.pilot.exposure_ms is not None:
            core.setExposure(profile.pilot.exposure_ms)
        set_laser(core, profile, "pilot")
        events = build_events(profile, core, timepoints=timepoints or profile.pilot.timepoints)
        core.mda.run(events, output=str(partial))
        reason = core.mda.status.finish_reason
        if reason is not None and reason.value != "completed":
            raise RuntimeError(f"the pilot acquisition {reason.value}; {out} was not written")
        publish(partial, out, overwrite=overwrite)
    return out


def acquire_live(
    profile: Profile,
    *,
    denoiser: FrameDenoiser | Callable[[], FrameDenoiser],
    out_dir: str | Path,
    timepoints: int | None = None,
    progress: Callable[[LiveStats], None] | None = None,
) -> RunSummary:
    """Run the profile's live time-lapse, denoising every frame, raw and denoised saved.

    Parameters
    ----------
    profile : Profile
        Microscope, time-lapse, SIM plan and output settings.
    denoiser : FrameDenoiser or callable
        E.g. a :class:`sn2n_live.method.Denoiser` built for the profile's engine, or a
        picklable factory of one (``functools.partial(build_profile_denoiser, profile,
        package)``), which ``output.isolation = "process"`` needs: the denoiser is then
        built in the denoise process.
    out_dir : str or Path
        Run folder to create (``raw.ome.zarr``, ``denoised.ome.zarr``, ``run.json``).
    timepoints : int, optional
        Overrides ``profile.acquisition.timepoints``.
    progress : callable, optional
        Receives live statistics while the denoiser catches up after acquisition.

    Returns
    -------
    RunSummary
        Counts, timings and any denoiser error.
    """
    output = profile.output
    with open_microscope(profile) as core:
        events = build_events(profile, core, timepoints=timepoints)
        with live_denoise(
            core,
            model=denoiser,
            out=out_dir,
            progress=progress,
            events=events,
            policy=output.backlog_policy,
            memory_budget_mb=output.memory_budget_mb,
            denoised_dtype=output.denoised_dtype,
            file_format=output.format,
            zarr_backend=output.zarr_backend,
            isolation=output.isolation,
            risk=profile.denoise.risk,
            profile=profile.model_dump(mode="json"),
        ) as handler:
            core.mda.run(events)
        return handler.wait()
