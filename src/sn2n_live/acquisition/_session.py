"""Run a profile on a microscope: open the core, acquire pilot frames, acquire live.

These are the building blocks of ``sn2n-live pilot``, ``acquire`` and ``demo``.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import useq
from pymmcore_plus import DeviceType

from sn2n_live._outputs import check_output, publish, temporary_sibling
from sn2n_live.acquisition._connect import mda_events_relayed
from sn2n_live.acquisition._contracts import (
    FrameDenoiser,
    Isolation,
    RunSummary,
    is_denoiser,
    load_denoiser,
)
from sn2n_live.acquisition._handler import LiveDenoiseHandler
from sn2n_live.acquisition._isolated import ProcessLiveDenoiseHandler
from sn2n_live.acquisition._recon import recon_options
from sn2n_live.acquisition._relay import LOST_FINISH
from sn2n_live.acquisition._simulated import (
    create_demo_core,
    create_simulated_microscope,
    release_core,
)
from sn2n_live.acquisition._stats import LiveStats
from sn2n_live.config import expand_sequence

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

    from sn2n_live.method import Denoiser, ModelPackage
    from sn2n_live.profiles import Profile

__all__ = [
    "acquire_live",
    "acquire_pilot",
    "build_events",
    "build_profile_denoiser",
    "live_denoise",
    "open_microscope",
    "profile_events",
    "profile_run_options",
]

_log = logging.getLogger("sn2n_live.acquisition")


def _default_isolation(model: Any) -> Isolation:
    """Process isolation where the model can cross to a child process, else threads."""
    if isinstance(model, str | os.PathLike):
        return "process"
    if is_denoiser(model):
        why = f"the model is a {type(model).__name__} object of this process"
    else:
        try:
            pickle.dumps(model)
            return "process"
        except Exception as exc:
            why = f"the model factory cannot be sent to a child process ({exc})"
    _log.info(
        "live_denoise: isolation='thread' because %s; pass a .sn2n path or a picklable "
        "factory to denoise in a child process (the camera keeps its rate)",
        why,
    )
    return "thread"


@contextmanager
def live_denoise(
    core: CMMCorePlus,
    *,
    model: FrameDenoiser | str | os.PathLike[str] | Callable[[], FrameDenoiser],
    out: str | os.PathLike[str],
    progress: Callable[[LiveStats], None] | None = None,
    catch_up_timeout: float | None = None,
    isolation: Isolation | None = None,
    stop_on_raw_failure: bool = True,
    laser_property: tuple[str, str] | None = ("Laser", "Power"),
    **options: Any,
) -> Iterator[LiveDenoiseHandler | ProcessLiveDenoiseHandler]:
    """Denoise every MDA run inside the block live, saving raw and denoised side by side.

    Usage::

        with live_denoise(core, model="model.sn2n", out="runs/001", events=events) as h:
            core.mda.run(events)
        print(h.wait().status)

    The handler is connected to ``core.mda.events`` through a relay thread
    (:func:`~sn2n_live.acquisition._connect.mda_events_relayed`), so its callbacks run
    off the acquisition (and GUI) thread, with either signal backend, and never wait on
    the GUI thread. Run the MDA *blocking* inside the block (``core.mda.run``, or join
    the thread ``core.run_mda`` returns, also on the GUI thread); one run per block. On
    a normal exit the block waits for the denoiser to catch up and closes the stores; if
    the block raises, queued frames are recorded as missing instead of waited for.

    Parameters
    ----------
    core : pymmcore_plus.CMMCorePlus
        Any core (``UniMMCore`` included).
    model : FrameDenoiser, str, os.PathLike or callable
        A denoiser, a ``.sn2n`` package path or a factory (see :func:`load_denoiser`).
    out : str or os.PathLike
        Run folder (must not exist or be empty).
    progress : callable, optional
        Called with :class:`LiveStats` during the acquisition (every ``stats_interval_s``,
        from the handler's monitor thread) and while waiting for the catch-up (on the
        calling thread); it must be thread-safe (a rich ``Progress`` is).
    catch_up_timeout : float, optional
        Seconds to wait for the catch-up at most (then :class:`TimeoutError`; the run
        goes on in the background and ``handler.wait()`` can be called again).
    isolation : {"thread", "process"} or None
        ``"process"``: writers and denoiser run in a child process
        (:class:`~sn2n_live.acquisition._isolated.ProcessLiveDenoiseHandler`) and this
        process only copies frames into shared memory, so their Python code never holds
        the GIL the acquisition thread needs (the camera keeps its rate; fast
        hardware-sequenced bursts). ``model`` must then be a path or picklable.
        ``"thread"``: they run on threads of this process (any denoiser object).
        None (default): ``"process"`` for a ``.sn2n`` path or a picklable factory,
        ``"thread"`` for a denoiser object or an unpicklable factory, with one log line
        saying why.
    stop_on_raw_failure : bool
        Cancel the MDA at the first raw frame that cannot be saved (disk full, store
        removed; ``events.raw_failed``): acquiring on would expose the sample for frames
        that are lost. The run ends ``failed``, with the error in run.json.
    laser_property : tuple of (str, str), optional
        ``(device, property)`` of the laser power in percent (a profile's
        ``camera.laser_property``). Where the core has it, its value when the block opens
        (and any event that sets it) weighs run.json's ``dose.relative_dose``; otherwise
        only the exposure total is recorded.
    **options
        Passed to :class:`LiveDenoiseHandler` (``events``, ``policy``,
        ``memory_budget_mb``, ``max_batch``, ``denoised_dtype``, ``file_format``,
        ``zarr_backend``, ``run_info``, ``profile``, ...).

    Yields
    ------
    LiveDenoiseHandler
        The handler (``latest()``, ``stats()``, ``events``, ``wait()``).
    """
    handler: LiveDenoiseHandler | ProcessLiveDenoiseHandler
    if isolation is None:
        isolation = _default_isolation(model)
    if laser_property is not None and "laser" not in options:
        options["laser"] = _laser_power(core, laser_property)
    if isolation == "process":
        try:  # sizes the shared-memory ring; a core without a camera gives no hint
            frame_bytes = core.getImageWidth() * core.getImageHeight() * core.getBytesPerPixel()
        except Exception:
            frame_bytes = 0
        options.setdefault("frame_bytes_hint", frame_bytes or None)
        handler = ProcessLiveDenoiseHandler(model, out, **options)
    elif isolation == "thread":
        handler = LiveDenoiseHandler(load_denoiser(model), out, **options)
    else:
        raise ValueError(f"isolation must be one of {get_args(Isolation)}; got {isolation!r}.")
    if stop_on_raw_failure:
        handler.events.raw_failed.connect(lambda _: core.mda.cancel())
    if progress is not None:  # during the acquisition too, not only while catching up
        handler.events.stats.connect(progress)
    try:
        with mda_events_relayed(handler, core.mda.events):
            yield handler
    except BaseException:
        if isinstance(handler, ProcessLiveDenoiseHandler) and not handler.started:
            handler.close()
        if handler.started:
            # Close the stores promptly and keep the error visible: no catch-up wait.
            handler.cancel_catch_up()
            handler.finish(reason="the live_denoise block raised before the sequence finished")
            handler.wait(timeout=catch_up_timeout)
        raise
    if not handler.started and isinstance(handler, ProcessLiveDenoiseHandler):
        handler.close()
    if handler.started:
        # The relay was joined after a normal MDA end, so the sequence is over even if
        # its sequenceFinished was lost (see LiveDenoiseHandler.finish).
        handler.finish(interrupted=False, reason=LOST_FINISH)
        if progress is not None:
            handler.events.stats.disconnect(progress)  # wait() calls it from here on
        handler.wait(timeout=catch_up_timeout, progress=progress)


def profile_run_options(profile: Profile) -> dict[str, Any]:
    """Return the ``live_denoise`` options a profile asks for (policy, stores, isolation).

    Parameters
    ----------
    profile : Profile
        Its ``[output]`` settings and ``denoise.risk``; the profile itself is stored in
        run.json.
    """
    output = profile.output
    return {
        "policy": output.backlog_policy,
        "memory_budget_mb": output.memory_budget_mb,
        "denoised_dtype": output.denoised_dtype,
        "file_format": output.format,
        "zarr_backend": output.zarr_backend,
        "isolation": output.isolation,
        "risk": profile.denoise.risk,
        "recon": recon_options(profile),
        "laser_property": profile.camera.laser_property,
        "profile": profile.model_dump(mode="json"),
    }


def _laser_power(
    core: CMMCorePlus, laser_property: tuple[str, str]
) -> tuple[str, str, float] | None:
    """``(device, property, percent)`` of the laser now, or None if the core has none."""
    device, prop = laser_property
    try:
        if device not in core.getLoadedDevices() or not core.hasProperty(device, prop):
            return None
        return (device, prop, float(core.getProperty(device, prop)))
    except Exception:  # a non-numeric or unreadable property: no power recorded
        return None


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
        if sim.bleach_rate_per_ms is not None:
            kwargs["bleach_rate_per_ms"] = sim.bleach_rate_per_ms
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
    return profile_events(profile, core, sequence)


def profile_events(
    profile: Profile, core: CMMCorePlus, sequence: useq.MDASequence
) -> list[useq.MDAEvent]:
    """Expand any sequence (e.g. one built in pymmcore-widgets' MDAWidget) with the SIM plan.

    Every event of ``sequence`` becomes one complete SIM set (the profile's angles and
    phases, patterns on its SLM); without ``[sim]`` the events are listed unchanged.

    Parameters
    ----------
    profile : Profile
        Supplies the SIM plan.
    core : CMMCorePlus
        Used for the SLM size when patterns go to an SLM.
    sequence : useq.MDASequence
        The user's acquisition.
    """
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
        Receives live statistics during the acquisition and the catch-up.

    Returns
    -------
    RunSummary
        Counts, timings and any denoiser error.

    Notes
    -----
    Called from the main thread, Ctrl-C (SIGINT) ends the run in order: the first press
    cancels the acquisition and the denoising of frames still queued, the raw writer
    drains and both stores are closed (status ``canceled``, or ``interrupted`` when the
    acquisition had already ended); a second press raises ``KeyboardInterrupt`` at once,
    the stores are closed as they stand.
    """
    with open_microscope(profile) as core, _CtrlCEndsTheRun(core) as ctrl_c:
        events = build_events(profile, core, timepoints=timepoints)
        with live_denoise(
            core,
            model=denoiser,
            out=out_dir,
            progress=progress,
            events=events,
            **profile_run_options(profile),
        ) as handler:
            ctrl_c.handler = handler
            core.mda.run(events)
        return handler.wait()


class _CtrlCEndsTheRun:
    """SIGINT handler for a run on the main thread: first press ends it, second at once.

    Without it, Ctrl-C raised ``KeyboardInterrupt`` wherever the main thread was (inside
    the MDA runner or the catch-up wait) and the denoise process got its own SIGINT.
    Elsewhere than on the main thread Python delivers no signals: it does nothing.
    """

    def __init__(self, core: CMMCorePlus) -> None:
        self.core = core
        self.handler: LiveDenoiseHandler | ProcessLiveDenoiseHandler | None = None
        self._presses = 0
        self._previous: Any = None

    def __enter__(self) -> _CtrlCEndsTheRun:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._presses += 1
        handler = self.handler
        if self._presses > 1 or handler is None or not handler.started or handler.finished:
            raise KeyboardInterrupt
        acquiring = self.core.mda.is_running()
        _log.warning(
            "Ctrl-C: %s; raw frames received so far are being saved and both stores "
            "closed. Press Ctrl-C again to stop at once.",
            "canceling the acquisition" if acquiring else "stopping the denoising catch-up",
        )
        if acquiring:
            self.core.mda.cancel()
        handler.cancel_catch_up()
