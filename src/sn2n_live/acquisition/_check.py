"""What ``sn2n-live profile check`` checks beyond the schema: hardware, model, engine, dose.

:func:`~sn2n_live.profiles.load_profile` validates the file itself and needs no
pymmcore-plus; :func:`check_profile` then loads the profile's microscope on a real core
and checks what the acquisition will use: the devices the profile names, the model
against the camera's frames, the engine and precision on this machine, and whether the
pilot's dose differs from the live one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sn2n_live.acquisition._session import create_core, laser_problem, slm_device
from sn2n_live.acquisition._simulated import release_core

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

    from sn2n_live.method import ModelPackage
    from sn2n_live.profiles import Profile

__all__ = ["Finding", "check_profile"]

Level = Literal["ok", "note", "error"]


@dataclass(frozen=True)
class Finding:
    """One line of ``sn2n-live profile check``.

    Attributes
    ----------
    level : {"ok", "note", "error"}
        ``error``: the acquisition would fail or be wrong; ``note``: it runs, but differently
        from what the profile may suggest (a fallback, a dose difference).
    topic : str
        What was checked (``"microscope"``, ``"camera"``, ``"sim"``, ``"model"``, ...).
    message : str
        One line: what was found and, for problems, how to fix it.
    """

    level: Level
    topic: str
    message: str


def check_profile(profile: Profile) -> list[Finding]:
    """Check a validated profile against this machine.

    Parameters
    ----------
    profile : Profile
        From :func:`~sn2n_live.profiles.load_profile`.

    Returns
    -------
    list of Finding
        In the order microscope, camera, laser, SIM patterns, model, engine, dose.
    """
    findings: list[Finding] = []
    frame: tuple[int, int] | None = None
    try:
        core = create_core(profile)
    except (OSError, RuntimeError, ValueError) as exc:
        findings.append(Finding("error", "microscope", str(exc)))
    else:
        try:
            findings.append(Finding("ok", "microscope", _describe_core(profile, core)))
            frame = _check_camera(profile, core, findings)
            _check_laser(profile, core, findings)
            _check_patterns(profile, core, findings)
        finally:
            release_core(core)
    _check_model(profile, frame, findings)
    _check_engine(profile, findings)
    _check_dose(profile, findings)
    return findings


def _describe_core(profile: Profile, core: CMMCorePlus) -> str:
    settings = profile.microscope
    source = (
        f"{settings.config_file} loads"
        if settings.kind == "config"
        else f"the {settings.kind} microscope starts"
    )
    devices = [d for d in core.getLoadedDevices() if d != "Core"]
    return f"{source} ({len(devices)} devices: {', '.join(devices)})"


def _check_camera(
    profile: Profile, core: CMMCorePlus, findings: list[Finding]
) -> tuple[int, int] | None:
    camera = core.getCameraDevice()
    if not camera:
        findings.append(
            Finding(
                "error",
                "camera",
                "the configuration sets no camera (Core > Camera is empty); name one in the "
                "configuration's startup group",
            )
        )
        return None
    try:
        core.setExposure(profile.camera.exposure_ms)
    except Exception as exc:
        findings.append(
            Finding("error", "camera", f"camera.exposure_ms = {profile.camera.exposure_ms}: {exc}")
        )
    # Applied as the acquisition applies them: they may change the frame size (an ROI).
    for device, prop, value in profile.camera.properties:
        problem = _property_problem(core, device, prop, [value])
        if problem is None:
            try:
                core.setProperty(device, prop, value)
            except Exception as exc:
                problem = f"{device}.{prop} = {value!r} is refused: {exc}"
        if problem:
            findings.append(Finding("error", "camera", f"camera.properties: {problem}"))
    height, width = core.getImageHeight(), core.getImageWidth()
    components = core.getNumberOfComponents()
    if components != 1:
        findings.append(
            Finding(
                "error",
                "camera",
                f"camera {camera!r} delivers {components}-component (colour) frames; "
                "sn2n-live denoises grey-scale frames: choose a grey-scale pixel type",
            )
        )
    findings.append(
        Finding(
            "ok",
            "camera",
            f"{camera!r}: {width}x{height} px, {8 * core.getBytesPerPixel()}-bit frames "
            f"({core.getImageBitDepth()}-bit data), exposure {profile.camera.exposure_ms} ms",
        )
    )
    return height, width


def _property_problem(core: CMMCorePlus, device: str, prop: str, values: list[str]) -> str | None:
    """Why ``device.prop`` cannot take every one of ``values``, or None."""
    if device not in core.getLoadedDevices():
        return f"no device {device!r} in this configuration"
    if not core.hasProperty(device, prop):
        names = ", ".join(core.getDevicePropertyNames(device))
        return f"device {device!r} has no property {prop!r} (it has: {names})"
    if core.isPropertyReadOnly(device, prop):
        return f"{device}.{prop} is read-only"
    allowed = list(core.getAllowedPropertyValues(device, prop))
    if allowed and (bad := [v for v in values if v not in allowed]):
        return f"{device}.{prop} cannot be {', '.join(bad)} (allowed: {', '.join(allowed)})"
    if core.hasPropertyLimits(device, prop):
        low = core.getPropertyLowerLimit(device, prop)
        high = core.getPropertyUpperLimit(device, prop)
        numbers = [float(v) for v in values]
        if min(numbers) < low or max(numbers) > high:
            return f"{device}.{prop} takes {low:g}..{high:g}, the profile needs {values}"
    return None


def _check_laser(profile: Profile, core: CMMCorePlus, findings: list[Finding]) -> None:
    device, prop = profile.camera.laser_property
    for section in ("camera", "pilot"):
        percent = getattr(profile, section).laser_power_percent
        if percent is None:
            continue
        problem = laser_problem(core, profile, section)
        if problem is None:
            findings.append(Finding("ok", "laser", f"{section}: {device}.{prop} = {percent} %"))
        else:
            findings.append(Finding("error", "laser", problem))


def _check_patterns(profile: Profile, core: CMMCorePlus, findings: list[Finding]) -> None:
    sim = profile.sim
    if sim is None:
        findings.append(Finding("ok", "sim", "no [sim]: frames are denoised one by one"))
        return
    plan = f"{sim.n_angles}x{sim.n_phases} SIM"
    if sim.pattern_source == "slm":
        try:
            label = slm_device(core, profile)
        except ValueError as exc:
            findings.append(Finding("error", "sim", str(exc)))
            return
        size = f"{core.getSLMWidth(label)}x{core.getSLMHeight(label)}"
        findings.append(Finding("ok", "sim", f"{plan}, patterns drawn on SLM {label!r} ({size})"))
    elif sim.pattern_source == "properties":
        assert sim.angle_property is not None and sim.phase_property is not None  # schema
        problems = [
            f"sim.{name} {problem}"
            for name, (device, prop), count in (
                ("angle_property", sim.angle_property, sim.n_angles),
                ("phase_property", sim.phase_property, sim.n_phases),
            )
            if (problem := _property_problem(core, device, prop, [str(i) for i in range(count)]))
        ]
        for problem in problems:
            findings.append(Finding("error", "sim", problem))
        if not problems:
            angle, phase = (".".join(p) for p in (sim.angle_property, sim.phase_property))
            findings.append(
                Finding("ok", "sim", f"{plan}, angle index -> {angle}, phase index -> {phase}")
            )
    else:
        findings.append(
            Finding(
                "note",
                "sim",
                f"{plan} with pattern_source = 'metadata': Micro-Manager does not switch the "
                "patterns; the frames are only labelled with angle and phase",
            )
        )


def _check_model(profile: Profile, frame: tuple[int, int] | None, findings: list[Finding]) -> None:
    from sn2n_live.method import load_package

    path = _model_path(profile, findings)
    if path is None:
        return
    try:
        package = load_package(path)
        _check_model_fits_camera(profile, package, frame, findings)
    except ValueError as exc:
        findings.append(Finding("error", "model", f"{path}: {exc}"))
        return
    _check_training_photometry(path, package, frame, findings)
    tile = profile.denoise.tile_size
    tiles = "whole frames" if tile is None else f"{tile}-px tiles"
    findings.append(
        Finding(
            "ok",
            "model",
            f"{path.name}: {package.resolved_mode} normalization, trained on "
            f"{package.patch_size}-px patches; denoising {tiles}",
        )
    )


def _model_path(profile: Profile, findings: list[Finding]) -> Path | None:
    """Return the profile's model file, or None with a finding saying what to do."""
    path = profile.denoise.model
    if path is None:
        findings.append(
            Finding("note", "model", "no denoise.model: pass --model to `sn2n-live acquire`")
        )
        return None
    if not path.is_file():
        findings.append(
            Finding(
                "error",
                "model",
                f"denoise.model {path} does not exist; train one with `sn2n-live train "
                f"PILOT.ome.tiff --out {path}` (pilot frames from `sn2n-live pilot`)",
            )
        )
        return None
    return path


def _check_model_fits_camera(
    profile: Profile, package: ModelPackage, frame: tuple[int, int] | None, findings: list[Finding]
) -> None:
    """Raise ``ValueError`` if the network cannot run the profile's tiles on these frames."""
    from sn2n_live.method import Denoiser, fit_tile

    tile = profile.denoise.tile_size
    # Checks the tile against the network (multiple of 2**depth, whole-frame mode).
    Denoiser(package, tile=tile, batch_size=profile.denoise.batch_size)
    if frame is None:
        return
    if min(frame) < package.unet.multiple:
        raise ValueError(
            f"the camera's {frame[1]}x{frame[0]} frames are smaller than the model's "
            f"minimum side of {package.unet.multiple}"
        )
    fitted = tile if tile is None else fit_tile(frame, tile, package.unet.multiple)
    if fitted != tile:
        findings.append(
            Finding(
                "note",
                "model",
                f"denoise.tile = {tile} is larger than the camera's {frame[1]}x{frame[0]} "
                f"frames; tiles of {fitted} will be used",
            )
        )


def _check_training_photometry(
    path: Path, package: ModelPackage, frame: tuple[int, int] | None, findings: list[Finding]
) -> None:
    """Note a package without training photometry, or trained on another frame size."""
    photometry = package.training.get("photometry")
    if photometry is None:
        findings.append(
            Finding(
                "note",
                "model",
                f"{path.name} records no photometry of its training frames (an older "
                "package): live frames cannot be checked against it; retrain to get the check",
            )
        )
    elif frame is not None and tuple(photometry["frame_shape"]) != (frame[0], frame[1]):
        h, w = photometry["frame_shape"]
        findings.append(
            Finding(
                "note",
                "model",
                f"{path.name} was trained on {w}x{h} frames, the camera gives "
                f"{frame[1]}x{frame[0]}: the network runs on any size, but a different ROI or "
                "binning often means a different sample region or signal level; live frames "
                "outside the training's photometric range are flagged in run.json",
            )
        )


def _check_engine(profile: Profile, findings: list[Finding]) -> None:
    from sn2n_live.engine import BackendUnavailable, choose_backend

    settings = profile.denoise
    try:
        choice = choose_backend(settings.engine, precision=settings.precision)
    except (BackendUnavailable, ValueError) as exc:
        fix = (
            "in the profile, set denoise.precision = 'fp32' (or remove it) on this machine"
            if settings.precision not in (None, "fp32")
            else "in the profile, set denoise.engine = 'auto' to use what runs here"
        )
        findings.append(Finding("error", "engine", f"{str(exc).rstrip('.')}; {fix}"))
        return
    requested = settings.precision or "the backend's default"
    text = f"{choice.name} ({choice.precision}) for engine = {settings.engine!r}, {requested}"
    if choice.skipped:
        text += f"; passed over: {'; '.join(choice.skipped)}"
    findings.append(Finding("ok", "engine", text))


def _check_dose(profile: Profile, findings: list[Finding]) -> None:
    live, pilot = profile.camera, profile.pilot
    exposure = (live.exposure_ms, pilot.exposure_ms or live.exposure_ms)
    laser = (live.laser_power_percent, pilot.laser_power_percent)
    if pilot.laser_power_percent is None:
        laser = (laser[0], laser[0])
    if exposure[0] == exposure[1] and laser[0] == laser[1]:
        return

    def dose(exposure_ms: float, percent: float | None) -> str:
        power = "laser unchanged" if percent is None else f"laser {percent:g} %"
        return f"{exposure_ms:g} ms, {power}"

    ratio = ""
    if None not in laser and laser[1]:
        factor = (exposure[0] * laser[0]) / (exposure[1] * laser[1])  # type: ignore[operator]
        ratio = f" ({factor:.3g}x the pilot's light per frame)"
    findings.append(
        Finding(
            "note",
            "dose",
            f"the pilot is acquired at {dose(exposure[1], laser[1])} and the live run at "
            f"{dose(exposure[0], laser[0])}{ratio}: the model learns the pilot's signal and "
            "noise levels and may denoise other levels poorly; set [pilot] exposure_ms and "
            "laser_power_percent to the live values unless that is intended",
        )
    )
