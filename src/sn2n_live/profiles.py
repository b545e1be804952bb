"""Per-microscope acquisition and denoising profiles (``profiles/*.toml``).

A profile says how to drive the microscope (camera, SIM plan, time-lapse), which model
and engine denoise it, and how the run is saved. Profiles are validated with pydantic;
:func:`load_profile` turns validation failures into :class:`ProfileError` messages that
name the field, the value given and what is allowed.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sn2n_live.config import (
    TIFF_DENOISED_DTYPES,
    BacklogPolicy,
    DenoisedDtype,
    EngineName,
    FileFormat,
    Isolation,
    MicroscopeKind,
    Precision,
    PSFKind,
    ReconLive,
    ReconSource,
    SIMPlan,
    StructureKind,
    TrainingInit,
    ZarrBackend,
)

__all__ = [
    "AcquisitionPlan",
    "CameraSettings",
    "DenoiseSettings",
    "MicroscopeSettings",
    "OutputSettings",
    "PilotSettings",
    "Profile",
    "ProfileError",
    "SimulatedMicroscopeSettings",
    "TrainingSettings",
    "bundled_profiles",
    "find_profile",
    "load_profile",
]

_Name = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulatedMicroscopeSettings(_Model):
    """The simulated SIM microscope (Python camera + SLM on a real pymmcore-plus core)."""

    shape: tuple[Annotated[int, Field(ge=256, le=2048)], Annotated[int, Field(ge=256, le=2048)]] = (
        512,
        512,
    )
    sample: StructureKind = "mixed"
    photons_per_ms: Annotated[float, Field(gt=0)] | None = None
    drift_px_per_s: tuple[float, float] = (0.3, 0.2)
    seed: int = 0
    # Photobleaching per full-power ms of excitation; None: the sample kind's default
    # (sn2n_live.acquisition.DEFAULT_BLEACH_RATE_PER_MS), 0 disables bleaching.
    bleach_rate_per_ms: float | None = None

    @field_validator("bleach_rate_per_ms")
    @classmethod
    def _bleach_rate_not_negative(cls, rate: float | None) -> float | None:
        if rate is not None and not (math.isfinite(rate) and rate >= 0):
            raise ValueError(
                "bleach_rate_per_ms must be a finite number >= 0 (remaining fluorophores "
                "exp(-rate x full-power ms); 0 disables bleaching, omit it for the "
                "sample's default)"
            )
        return rate


class MicroscopeSettings(_Model):
    """Which core to drive: the simulated rig, the Micro-Manager demo config, or a file."""

    kind: MicroscopeKind = MicroscopeKind.SIMULATED
    config_file: Path | None = None
    simulated: SimulatedMicroscopeSettings = SimulatedMicroscopeSettings()

    @model_validator(mode="after")
    def _config_file_for_config_kind(self) -> MicroscopeSettings:
        if self.kind == MicroscopeKind.CONFIG and self.config_file is None:
            raise ValueError("kind = 'config' needs config_file = 'path/to/MMConfig.cfg'")
        return self


class CameraSettings(_Model):
    """Camera exposure, laser power and extra device properties set before a run."""

    exposure_ms: Annotated[float, Field(gt=0, le=10_000)] = 10.0
    laser_power_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    # (device, property) that laser_power_percent (here and in [pilot]) is written to.
    laser_property: tuple[_Name, _Name] = ("Laser", "Power")
    properties: list[tuple[str, str, str]] = []


class AcquisitionPlan(_Model):
    """The live time-lapse: one SIM set (or one frame) per time point."""

    timepoints: Annotated[int, Field(ge=1)] = 10
    interval_s: Annotated[float, Field(ge=0)] = 0.0


class PilotSettings(_Model):
    """Pilot low-light frames acquired to train the model."""

    timepoints: Annotated[int, Field(ge=1)] = 1
    exposure_ms: Annotated[float, Field(gt=0)] | None = None
    laser_power_percent: Annotated[float, Field(ge=0, le=100)] | None = None


class TrainingSettings(_Model):
    """How ``sn2n-live train --profile`` and ``sn2n-live demo`` train on this rig's pilot."""

    # "scratch", "pretrained" (the shipped lite model, fine-tuned) or a .sn2n to continue.
    init: TrainingInit | Path = TrainingInit.SCRATCH
    max_minutes: Annotated[float, Field(gt=0)] | None = None


class DenoiseSettings(_Model):
    """Model, engine and tiling used for live denoising."""

    model: Path | None = None
    engine: EngineName = "auto"
    precision: Precision | None = None
    tile: Annotated[int, Field(ge=16, le=4096)] | Literal["whole"] = 64
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 64
    # Also write the hallucination-risk map of every frame (risk.ome.zarr).
    risk: bool = False

    @model_validator(mode="after")
    def _tile_power_of_two(self) -> DenoiseSettings:
        if self.tile != "whole" and self.tile & (self.tile - 1):
            raise ValueError(
                f"tile = {self.tile} must be a power of two (e.g. 64, 128, 256), "
                "or 'whole' for whole-frame inference (global normalization only)"
            )
        return self

    @property
    def tile_size(self) -> int | None:
        """Tile side for the Denoiser; None for whole-frame inference."""
        return None if self.tile == "whole" else self.tile


class OutputSettings(_Model):
    """How the run folder is written."""

    format: FileFormat = "ome-zarr"
    denoised_dtype: DenoisedDtype = "float32"
    memory_budget_mb: Annotated[float, Field(gt=0)] = 1024.0
    backlog_policy: BacklogPolicy = "complete"
    zarr_backend: ZarrBackend = "zarr-python"
    # Writers and denoiser in a child process: the acquisition keeps its GIL (fast bursts).
    isolation: Isolation = "process"


class ReconstructionSettings(_Model):
    """SIM reconstruction: live during a run, and the defaults of ``sn2n-live reconstruct``.

    The detection OTF is ``psf_sigma_px`` (a PSF of that Gaussian sigma, or with ``psf =
    "ideal"`` the ideal pupil of that cut-off) or the optics (``na``, ``wavelength_nm``,
    ``pixel_nm``: ideal pupil); the simulated microscope's is the default there.
    """

    live: ReconLive = "off"
    source: ReconSource = ReconSource.DENOISED
    psf: PSFKind = "gaussian"
    psf_sigma_px: Annotated[float, Field(gt=0)] | None = None
    na: Annotated[float, Field(gt=0, le=1.7)] | None = None
    wavelength_nm: Annotated[float, Field(gt=0)] | None = None
    pixel_nm: Annotated[float, Field(gt=0)] | None = None
    wiener: Annotated[float, Field(gt=0)] = 0.05
    # A saved calibration (sn2n-live reconstruct --save-calibration); unset: estimated
    # from the run's first `calibration_sets` complete raw sets, pooled.
    calibration: Path | None = None
    calibration_sets: Annotated[int, Field(ge=1, le=64)] = 4

    @model_validator(mode="after")
    def _one_otf(self) -> ReconstructionSettings:
        optics = [self.na, self.wavelength_nm, self.pixel_nm]
        if any(v is not None for v in optics):
            if not all(v is not None for v in optics) or self.psf_sigma_px is not None:
                raise ValueError(
                    "reconstruction: give the OTF as psf_sigma_px, or as all of na, "
                    "wavelength_nm and pixel_nm (an ideal pupil), not both or a part"
                )
            if self.psf != "ideal":
                raise ValueError("reconstruction: na/wavelength_nm/pixel_nm need psf = 'ideal'")
        return self

    @property
    def has_otf(self) -> bool:
        """Whether the profile states the OTF (else only a simulated microscope has one)."""
        return self.psf_sigma_px is not None or self.na is not None


class Profile(_Model):
    """One microscope's acquisition + denoising profile."""

    name: str
    description: str = ""
    microscope: MicroscopeSettings = MicroscopeSettings()
    camera: CameraSettings = CameraSettings()
    sim: SIMPlan | None = None
    acquisition: AcquisitionPlan = AcquisitionPlan()
    pilot: PilotSettings = PilotSettings()
    training: TrainingSettings = TrainingSettings()
    denoise: DenoiseSettings = DenoiseSettings()
    output: OutputSettings = OutputSettings()
    reconstruction: ReconstructionSettings = ReconstructionSettings()

    @model_validator(mode="after")
    def _reconstruction_has_what_it_needs(self) -> Profile:
        rec = self.reconstruction
        if rec.live == "off":
            return self
        if self.sim is None or self.sim.n_phases < 3:
            raise ValueError(
                f"reconstruction.live = {rec.live!r} needs a [sim] table with n_phases >= 3; "
                "set reconstruction.live = 'off' or add [sim]"
            )
        if not rec.has_otf and self.microscope.kind != MicroscopeKind.SIMULATED:
            raise ValueError(
                "reconstruction.live needs the detection OTF: set reconstruction.psf_sigma_px, "
                "or reconstruction.na, wavelength_nm and pixel_nm with psf = 'ideal'"
            )
        if rec.live == "save" and self.output.format != "ome-zarr":
            raise ValueError("reconstruction.live = 'save' writes recon.ome.zarr: needs ome-zarr")
        return self

    @model_validator(mode="after")
    def _writer_can_store_layout(self) -> Profile:
        if self.output.format == "ome-tiff":
            if self.sim is not None:
                raise ValueError(
                    "output.format = 'ome-tiff' cannot store the SIM angle/phase axes; "
                    "use 'ome-zarr' or remove [sim]"
                )
            if self.output.denoised_dtype not in TIFF_DENOISED_DTYPES:
                allowed = " or ".join(f"'{d}'" for d in TIFF_DENOISED_DTYPES)
                raise ValueError(
                    f"output.format = 'ome-tiff' stores denoised frames as "
                    f"{' or '.join(TIFF_DENOISED_DTYPES)} only; set output.denoised_dtype = "
                    f"{allowed} or use 'ome-zarr'"
                )
        if self.denoise.risk and self.output.format != "ome-zarr":
            raise ValueError(
                "denoise.risk = true writes risk.ome.zarr and needs output.format = 'ome-zarr'"
            )
        demo = self.microscope.kind == MicroscopeKind.DEMO
        if demo and self.sim and self.sim.pattern_source == "slm":
            raise ValueError(
                "microscope.kind = 'demo' has no SLM; set sim.pattern_source = 'metadata'"
            )
        return self


class ProfileError(ValueError):
    """A profile file that cannot be read or does not validate."""


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile TOML file.

    Relative paths inside the profile (model, config file) are resolved against the
    profile's folder.

    Parameters
    ----------
    path : str or Path
        The ``.toml`` file, or the name of a bundled profile (e.g. ``"demo-sim"``).

    Raises
    ------
    ProfileError
        With one line per problem: ``field: what is wrong (got VALUE)``.
    """
    path = find_profile(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f"{path}: not valid TOML: {err}") from err
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as err:
        raise ProfileError(_describe(path, err)) from err
    return _resolve_paths(profile, path.parent)


def _describe(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: {err.error_count()} problem(s)"]
    for problem in err.errors():
        field = ".".join(str(p) for p in problem["loc"]) or "(profile)"
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {field}: {_unknown_key(problem['loc'])}")
            continue
        message = problem["msg"].removeprefix("Value error, ")
        given = problem.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  {field}: {message}{shown}")
    return "\n".join(lines)


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    """Describe an unknown key: a did-you-mean and the keys its section allows."""
    *parents, key = (str(part) for part in loc)
    model = _section_model(parents)
    if model is None:
        return "unknown key"
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    section = f"[{'.'.join(parents)}]" if parents else "the top level"
    return f"unknown key; {hint}{section} allows: {', '.join(allowed)} (docs/profiles.md)"


def _section_model(parents: list[str]) -> type[BaseModel] | None:
    """Return the pydantic model of the section at ``parents`` (e.g. ``["camera"]``)."""
    model: type[BaseModel] = Profile
    for name in parents:
        field = model.model_fields.get(name)
        if field is None:
            return None
        # Optional sections (``sim: SIMPlan | None``) are unions: take the model in them.
        candidates = [field.annotation, *get_args(field.annotation)]
        found = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not found:
            return None
        model = found[0]
    return model


def _resolve_paths(profile: Profile, base: Path) -> Profile:
    updates: dict[str, Any] = {}
    model = profile.denoise.model
    if model is not None and not model.is_absolute():
        updates["denoise"] = profile.denoise.model_copy(update={"model": base / model})
    init = profile.training.init
    if isinstance(init, Path) and not init.is_absolute():
        updates["training"] = profile.training.model_copy(update={"init": base / init})
    config = profile.microscope.config_file
    if config is not None and not config.is_absolute():
        updates["microscope"] = profile.microscope.model_copy(update={"config_file": base / config})
    calibration = profile.reconstruction.calibration
    if calibration is not None and not calibration.is_absolute():
        updates["reconstruction"] = profile.reconstruction.model_copy(
            update={"calibration": base / calibration}
        )
    return profile.model_copy(update=updates) if updates else profile


def _profile_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    # Source checkout (repo/profiles) first, then the copy shipped inside the wheel.
    return [here.parents[1] / "profiles", here / "profiles"]


def bundled_profiles() -> dict[str, Path]:
    """Return the profiles shipped with sn2n-live, by name."""
    found: dict[str, Path] = {}
    for folder in _profile_dirs():
        for file in sorted(folder.glob("*.toml")):
            found.setdefault(file.stem, file)
    return found


def find_profile(name_or_path: str | Path) -> Path:
    """Resolve a profile file path or a bundled profile name to a file.

    Raises
    ------
    ProfileError
        If neither a file nor a bundled profile of that name exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_profiles()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    names = ", ".join(bundled) or "none found"
    raise ProfileError(f"No profile file {path}; bundled profiles: {names}")
