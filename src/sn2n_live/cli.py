"""The ``sn2n-live`` command line: train, denoise, acquire, demo, profiles, engines."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# The choices of the options, from the configuration layer (light: no torch or hardware).
from sn2n_live.config import (
    DenoisedDtype,
    EngineName,
    NormalizationPolicy,
    PSFKind,
    Recipe,
    ReconSource,
    TrainingInit,
    UNetPreset,
)

if TYPE_CHECKING:
    from rich.progress import Progress as ProgressDisplay

    from sn2n_live.io import ImageStack, StackWriter
    from sn2n_live.method import (
        Denoiser,
        ModelPackage,
        PhotometryWatch,
        TrainingConfig,
        TrainingProgress,
    )

app = typer.Typer(
    name="sn2n-live",
    help="Live Adaptive-SN2N denoising for low-light (SIM) microscopy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
profile_app = typer.Typer(help="Check and list acquisition profiles.", no_args_is_help=True)
engine_app = typer.Typer(
    help="Inference engines: list backends, build TensorRT plans.", no_args_is_help=True
)
app.add_typer(profile_app, name="profile")
app.add_typer(engine_app, name="engine")

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


_CURVES = ("train_loss", "val_loss", "lr")


class CliError(Exception):
    """An error to report as one clear line, without a traceback."""


def _friendly_errors(func: F) -> F:
    """Turn expected user errors into a red message and exit code 2 (no traceback)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise  # click's Exit is a RuntimeError, and an exit code, not an error
        except (CliError, ValueError, OSError, RuntimeError) as err:
            console.print(f"[bold red]error:[/] {escape(str(err) or type(err).__name__)}")
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


class _LiveProgress:
    """The live run's progress line, shown from its first statistics on.

    While acquiring: frames received of those expected, the camera rate, frames denoised
    and the denoiser's backlog. While catching up: frames left and an ETA from the
    denoiser's recent rate. Nothing is drawn before the sequence starts, so a run that
    fails to start shows only its error.
    """

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task: Any = None
        self._lock = threading.Lock()  # stats arrive on the handler's thread, then ours

    def __enter__(self) -> _LiveProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, stats: Any) -> None:
        if stats.state == "waiting":
            return
        with self._lock:
            if self._progress is None:
                self._progress = Progress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    TextColumn("{task.fields[line]}"),
                    console=console,
                )
                self._progress.start()
                self._task = self._progress.add_task("acquiring", total=None, line="")
            expected = stats.frames_expected
            to_denoise = (expected or stats.frames_received) - stats.denoised_missing
            if stats.state == "acquiring":
                of = f"/{expected}" if expected else ""
                line = (
                    f"received {stats.frames_received}{of} at {stats.camera_fps:.1f} fps, "
                    f"denoised {stats.denoised_written} (backlog {stats.frames_behind})"
                )
                description, done, total = "acquiring", stats.frames_received, expected
            else:
                left = max(0, to_denoise - stats.denoised_written)
                eta = _eta(left, stats.denoise_fps)
                line = (
                    f"denoised {stats.denoised_written}/{to_denoise}, {left} left at "
                    f"{stats.denoise_fps:.2f} fps, ETA {eta}"
                    if left
                    else f"denoised {stats.denoised_written}/{to_denoise}, done"
                )
                description, done, total = "catching up", stats.denoised_written, to_denoise
            self._progress.update(
                self._task, description=description, completed=done, total=total, line=line
            )


def _eta(frames_left: int, fps: float) -> str:
    """``H:MM:SS`` for ``frames_left`` at ``fps``; ``-`` with no rate yet."""
    return _clock(frames_left / fps if fps > 0 else None)


def _clock(seconds: float | None) -> str:
    """``H:MM:SS``; ``-`` for None (not known yet)."""
    if seconds is None:
        return "-"
    minutes, whole = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{whole:02d}"


class TrainingBar:
    """Draw :func:`sn2n_live.method.train`'s progress as a rich bar on stderr.

    One line: the epoch, a bar over the run's steps, the step in the epoch, the epoch's
    running training loss, the latest validation loss and the time left. Pass the entered
    bar as ``train(..., progress=bar)``; nothing is drawn before the first report, so a
    run that fails while preparing its data shows only its error.
    """

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> TrainingBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, report: TrainingProgress) -> None:
        """Show one report (the ``progress`` callback of ``train``)."""
        fields = {
            "epoch": f"{report.epoch}/{report.epochs}",
            "step": f"{report.step}/{report.steps}" if report.step else "-",
            "train": _loss(report.train_loss),
            "val": _loss(report.val_loss),
            "left": _clock(report.remaining_s),
        }
        if self._progress is None:
            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                TextColumn("step {task.fields[step]}"),
                TextColumn("train {task.fields[train]}"),
                TextColumn("val {task.fields[val]}"),
                TextColumn("left {task.fields[left]}"),
                console=console,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", **fields)
        self._progress.update(
            self._task, total=report.run_steps, completed=report.run_step, **fields
        )


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class _OurInfoLibraryWarnings(logging.Filter):
    """Pass sn2n-live's INFO lines but only warnings from libraries.

    Filtering on the handler, not the root level: importing pymmcore-plus sets the root
    logger to DEBUG, which would otherwise flood the terminal (matplotlib font look-ups).
    """

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose or record.levelno >= logging.WARNING:
            return True
        return record.name.startswith("sn2n_live") and record.levelno >= logging.INFO


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    handler = RichHandler(console=console, show_path=False, show_time=False)
    handler.addFilter(_OurInfoLibraryWarnings(verbose))
    logging.basicConfig(level=logging.DEBUG, format="%(message)s", handlers=[handler], force=True)
    # pymmcore-plus also logs every MDA event at INFO through its own stderr handler.
    logging.getLogger("pymmcore-plus").setLevel(logging.DEBUG if verbose else logging.WARNING)


@app.command()
@_friendly_errors
def train(
    pilot: Annotated[list[Path], typer.Argument(help="Pilot low-light stacks (TIFF/OME-Zarr).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model package to write (.sn2n).")],
    recipe: Annotated[
        Recipe,
        typer.Option(
            help="twin (denoise the twins as trained, L2, linear head) or paper "
            "(the published Adaptive-SN2N); see docs/method.md."
        ),
    ] = Recipe.TWIN,
    preset: Annotated[
        UNetPreset,
        typer.Option(help="U-Net: lite (small, for CPUs) or paper (the published 17 M)."),
    ] = UNetPreset.LITE,
    normalization: Annotated[
        NormalizationPolicy, typer.Option(help="Normalization policy (docs/method.md).")
    ] = "dataset",
    patch: Annotated[int, typer.Option(help="Training patch size (power of two).")] = 64,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 100,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop cleanly after this many minutes.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Mini-batch size (default: the recipe's).")
    ] = None,
    consistency_weight: Annotated[
        float | None,
        typer.Option("--lambda", help="Weight of |f(A)-f(B)| in the loss (default: recipe's)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed (training is deterministic).")] = 0,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Write a resumable checkpoint here every epoch.")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="Resume from this checkpoint.")] = None,
    camera_offset: Annotated[
        float | None, typer.Option(help="Camera offset in ADU, recorded in the package.")
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help=f"Start from: {TrainingInit.SCRATCH}, {TrainingInit.PRETRAINED} (the "
            "shipped lite model, fine-tuned: better in a short budget) or a .sn2n package "
            f"(default: the profile's, else {TrainingInit.SCRATCH})."
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(help="Take --init and --max-minutes from this profile's \\[training]."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package.")] = False,
) -> None:
    """Train an Adaptive-SN2N model on pilot low-light frames."""
    # Before the training budget is spent, not after it.
    _check_training_outputs(out, checkpoint, overwrite=overwrite)

    from sn2n_live.io import read_frames
    from sn2n_live.method import initial_package, save_package
    from sn2n_live.method import train as train_model

    if profile is not None:
        init, max_minutes = _profile_training(profile, init, max_minutes)
    start_from = initial_package(init or TrainingInit.SCRATCH)
    frames = read_frames(pilot)
    config = _training_config(
        recipe=recipe,
        preset=preset,
        policy=normalization,
        patch=patch,
        epochs=epochs,
        max_minutes=max_minutes,
        device=device,
        seed=seed,
        batch_size=batch_size,
        consistency_weight=consistency_weight,
    )
    console.print(f"Training on {len(frames)} frames of {frames.shape[1]}x{frames.shape[2]}")
    with TrainingBar() as bar:
        package = train_model(
            frames,
            config,
            resume_from=resume,
            checkpoint_path=checkpoint,
            camera_offset_adu=camera_offset,
            progress=bar,
            init=start_from,
        )
    _report_trained(save_package(package, out), package, config)


def _check_training_outputs(out: Path, checkpoint: Path | None, *, overwrite: bool) -> None:
    """Refuse an existing package (without ``--overwrite``) or an unwritable checkpoint."""
    from sn2n_live._outputs import check_output, check_writable_dir

    check_output(out, overwrite=overwrite, overwrite_hint="--overwrite", what="model package")
    if checkpoint is not None:
        check_writable_dir(checkpoint.expanduser().absolute().parent, what="checkpoint")


def _profile_training(
    profile: str, init: str | None, max_minutes: float | None
) -> tuple[str, float | None]:
    """Return ``init`` and ``max_minutes``, the profile's ``[training]`` where not given."""
    from sn2n_live.profiles import load_profile

    settings = load_profile(profile).training
    init = init if init is not None else str(settings.init)
    max_minutes = max_minutes if max_minutes is not None else settings.max_minutes
    return init, max_minutes


def _training_config(
    *, batch_size: int | None, consistency_weight: float | None, **settings: Any
) -> TrainingConfig:
    """Build the run's settings; only the optional ones the user gave override the recipe."""
    from sn2n_live.method import TrainingConfig

    given = {"batch_size": batch_size, "consistency_weight": consistency_weight}
    overrides = {k: v for k, v in given.items() if v is not None}
    return TrainingConfig(**settings, **overrides)


def _report_trained(path: Path, package: ModelPackage, config: TrainingConfig) -> None:
    """Print where the package went, how the run ended, and its notes as warnings."""
    stats = package.training
    console.print(
        f"[green]Saved[/] {path}  (mode {package.resolved_mode}, epochs completed "
        f"{stats['epochs_completed']}/{config.epochs}, steps {stats['steps']} "
        f"({stats['steps_per_epoch']} per epoch), best val loss {stats['best_val_loss']:.4g}, "
        f"stopped: {stats['stopped_reason']})"
    )
    for note in stats["notes"]:
        console.print(f"[yellow]warning:[/] {note}")


def _parse_tile(tile: str) -> int | None:
    if tile == "whole":
        return None
    if not tile.isdigit():
        raise CliError(f"--tile must be a power of two or 'whole', got {tile!r}")
    return int(tile)


@app.command()
@_friendly_errors
def denoise(
    input: Annotated[Path, typer.Argument(help="Stack to denoise (TIFF/OME-TIFF/OME-Zarr).")],
    model: Annotated[Path, typer.Option("--model", "-m", help="Model package (.sn2n).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output (.ome.tif or .ome.zarr).")],
    dtype: Annotated[
        DenoisedDtype, typer.Option(help="Stored dtype (uint16: rounded and clipped).")
    ] = "float32",
    tile: Annotated[
        str | None, typer.Option(help="Tile size, or 'whole' (global mode only).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Tiles per inference batch.")] = 64,
    engine: Annotated[
        EngineName, typer.Option(help="Inference backend; auto: the best that runs here.")
    ] = "auto",
    risk: Annotated[
        bool,
        typer.Option(
            help="Also write the hallucination-risk map (0..1, float32) next to the output, "
            "as <out>.risk.ome.zarr (or .risk.ome.tif)."
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Denoise a stack frame by frame, writing float32 (or uint16) plus provenance."""
    from sn2n_live.engine import build_denoiser
    from sn2n_live.io import open_stack
    from sn2n_live.method import PhotometryWatch, load_package

    risk_out = _risk_path(out) if risk else None
    # Every output is checked before the first frame is denoised.
    _check_denoise_outputs(out, risk_out, overwrite=overwrite)
    package = load_package(model)
    stack = open_stack(input)
    denoiser = build_denoiser(
        package,
        engine=engine,
        tile="package" if tile is None else _parse_tile(tile),
        batch_size=batch_size,
    )
    provenance = {**denoiser.provenance, "source": str(input), "model": str(model)}
    watch = PhotometryWatch(package.training.get("photometry"))
    with contextlib.ExitStack() as outputs:
        writer = outputs.enter_context(_stack_writer(out, stack, dtype, provenance, overwrite))
        risk_writer = None
        if risk_out is not None:
            risk_provenance = {**provenance, "content": "hallucination risk, 0..1"}
            risk_writer = outputs.enter_context(
                _stack_writer(risk_out, stack, "float32", risk_provenance, overwrite)
            )
        progress = outputs.enter_context(_progress())
        fractions = _denoise_stack(stack, denoiser, writer, risk_writer, watch, progress)
    console.print(f"[green]Wrote[/] {out}  ({stack.n_frames} frames, {dtype})")
    for note in watch.notes():
        console.print(f"[yellow]warning:[/] {escape(note)}")
    if risk_out is not None:
        _report_risk(risk_out, fractions)


def _check_denoise_outputs(out: Path, risk_out: Path | None, *, overwrite: bool) -> None:
    """Refuse existing outputs (without ``--overwrite``) or ones that cannot be written."""
    from sn2n_live._outputs import check_output

    for path, what in ((out, "output"), (risk_out, "risk map")):
        if path is not None:
            check_output(path, overwrite=overwrite, overwrite_hint="--overwrite", what=what)


def _stack_writer(
    path: Path,
    stack: ImageStack,
    dtype: DenoisedDtype,
    provenance: dict[str, Any],
    overwrite: bool,
) -> StackWriter:
    """Open a writer of a stack shaped and labelled like ``stack``."""
    from sn2n_live.io import StackWriter

    return StackWriter(
        path,
        shape=stack.shape,
        axes=stack.axes,
        dtype=dtype,
        provenance=provenance,
        overwrite=overwrite,
    )


def _denoise_stack(
    stack: ImageStack,
    denoiser: Denoiser,
    writer: StackWriter,
    risk_writer: StackWriter | None,
    watch: PhotometryWatch,
    progress: ProgressDisplay,
) -> list[float]:
    """Denoise ``stack`` chunk by chunk into the writers; return the frames' risk fractions."""
    frames_per_chunk = 9
    fractions: list[float] = []
    done = 0
    task = progress.add_task("denoising", total=stack.n_frames)
    for chunk in stack.iter_chunks(frames_per_chunk):
        if risk_writer is None:
            writer.write(denoiser.denoise(chunk))
        else:
            result = denoiser.denoise(chunk, risk=True)
            writer.write(result.image)
            risk_writer.write(result.risk)
            fractions.extend(result.risk_fraction.reshape(-1).tolist())
        # After denoising, which rejects unusable frames with its own clear error.
        flat = chunk.reshape(-1, *chunk.shape[-2:])
        watch.check(flat, list(range(done, done + len(flat))))
        done += len(flat)
        progress.advance(task, len(chunk))
    return fractions


def _report_risk(risk_out: Path, fractions: list[float]) -> None:
    """Print where the risk map went, with the mean and the worst frame's risk fraction."""
    worst = int(np.argmax(fractions))
    console.print(
        f"[green]Wrote[/] {risk_out}  (risk fraction: mean {np.mean(fractions):.2%}, "
        f"highest {fractions[worst]:.2%} in frame {worst})"
    )


def _risk_path(out: Path) -> Path:
    """``x.ome.zarr`` -> ``x.risk.ome.zarr`` (same for .ome.tif, .tif, .zarr)."""
    name = out.name
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif", ".zarr", ".tiff", ".tif"):
        if name.endswith(suffix):
            return out.with_name(name[: -len(suffix)] + ".risk" + suffix)
    return out.with_name(name + ".risk")


@app.command()
@_friendly_errors
def info(model: Annotated[Path, typer.Argument(help="Model package (.sn2n).")]) -> None:
    """Show a model package's architecture, normalization and provenance."""
    from sn2n_live.method import load_package

    package = load_package(model)
    summary = {
        "sha256": package.sha256,
        "unet": package.unet.model_dump(),
        "policy": package.policy,
        "resolved_mode": package.resolved_mode,
        "patch_size": package.patch_size,
        "upsample": package.upsample,
        "scale": package.scale,
        "inference": package.inference,
        "inference_tile": package.inference_tile,
        "camera_offset_adu": package.camera_offset_adu,
        # The per-epoch curves are in the package; the summary keeps one line per value.
        "training": {k: v for k, v in package.training.items() if k not in _CURVES},
        "provenance": package.provenance,
    }
    typer.echo(json.dumps(summary, indent=2, default=str))


@profile_app.command("check")
@_friendly_errors
def profile_check(
    file: Annotated[str, typer.Argument(help="Profile TOML file or bundled profile name.")],
    schema_only: Annotated[
        bool,
        typer.Option(
            help="Only validate the file: do not load the microscope, the model or engines."
        ),
    ] = False,
) -> None:
    """Check a profile: its keys, then the microscope, model and engine it names, here.

    One line per check on stdout (ok / note / error); exit code 2 if any check failed.
    """
    from sn2n_live.profiles import load_profile

    profile = load_profile(file)
    sim = profile.sim
    plan = f"{sim.n_angles}x{sim.n_phases} SIM" if sim else "no pattern axis"
    typer.echo(
        f"ok    profile: {file}: '{profile.name}', {profile.microscope.kind} microscope, "
        f"{plan}, {profile.acquisition.timepoints} time points, {profile.output.format}"
    )
    if schema_only:
        return
    # Imported only now: the schema check above needs no pymmcore-plus, torch or engines.
    from sn2n_live.acquisition import check_profile

    findings = check_profile(profile)
    for finding in findings:
        typer.echo(f"{finding.level:5s} {finding.topic}: {finding.message}")
    errors = sum(f.level == "error" for f in findings)
    if errors:
        typer.echo(f"{errors} problem(s): fix them before `sn2n-live pilot` or `acquire`")
        raise typer.Exit(code=2)


@profile_app.command("list")
def profile_list() -> None:
    """List the profiles bundled with sn2n-live."""
    from sn2n_live.profiles import bundled_profiles

    for name, path in bundled_profiles().items():
        typer.echo(f"{name}\t{path}")


@app.command()
@_friendly_errors
def pilot(
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile file or name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Pilot stack (.ome.tiff).")],
    timepoints: Annotated[
        int | None, typer.Option(help="Time points (default: the profile's [pilot]).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Acquire pilot low-light frames to train a model on."""
    from sn2n_live._outputs import check_output
    from sn2n_live.acquisition import acquire_pilot
    from sn2n_live.profiles import load_profile

    prof = load_profile(profile)
    check_output(out, overwrite=overwrite, overwrite_hint="--overwrite", what="pilot stack")
    path = acquire_pilot(prof, out, timepoints=timepoints, overwrite=overwrite)
    console.print(f"[green]Wrote[/] {path}; train with: sn2n-live train {path} --out model.sn2n")


@app.command()
@_friendly_errors
def acquire(
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile file or name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to create.")],
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="Model package (default: profile's).")
    ] = None,
    timepoints: Annotated[int | None, typer.Option(help="Override the time points.")] = None,
) -> None:
    """Run a live acquisition: raw and denoised saved side by side, with run.json."""
    from sn2n_live.acquisition import acquire_live, build_profile_denoiser, check_run_folder
    from sn2n_live.engine import choose_backend
    from sn2n_live.method import load_package
    from sn2n_live.profiles import load_profile

    prof = load_profile(profile)
    model_path = model or prof.denoise.model
    if model_path is None:
        raise CliError("No model: pass --model MODEL.sn2n or set denoise.model in the profile")
    package = load_package(model_path)
    # Before the microscope is opened: no sample is exposed for a run that cannot be saved
    # or denoised (the engine is built later, in the denoise process).
    choose_backend(prof.denoise.engine, precision=prof.denoise.precision)
    check_run_folder(out)
    # A factory, so that the denoiser can be built in the denoise process.
    denoiser = functools.partial(build_profile_denoiser, prof, package)
    with _LiveProgress() as report:
        summary = acquire_live(
            prof, denoiser=denoiser, out_dir=out, timepoints=timepoints, progress=report
        )
    _print_run(summary)
    if summary.status != "completed":
        raise typer.Exit(code=1)


def _print_run(summary: Any) -> None:
    colour = "green" if summary.status == "completed" else "red"
    console.print(
        f"[{colour}]{summary.status}[/]: {summary.raw_written} raw, "
        f"{summary.denoised_written} denoised frames in {summary.run_dir}; camera "
        f"{summary.camera_fps:.1f} fps, denoise {summary.denoise_fps:.2f} fps, "
        f"latency p50 {summary.latency_p50_ms} ms"
    )
    if summary.missing_denoised:
        console.print(f"frames without a denoised twin: {summary.missing_denoised}")
    for error in summary.errors:
        console.print(f"[red]error[/] {error}")
    for note in summary.notes:
        console.print(f"[yellow]warning:[/] {escape(note)}")


def _numbers(text: str, flag: str) -> tuple[float, ...]:
    """``"2,5,10"`` -> ``(2.0, 5.0, 10.0)``, or a CliError naming the flag."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values:
        raise CliError(f"{flag} takes comma-separated numbers such as 2,5,10; got {text!r}")
    return values


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (nested) replaced by None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class _TuneBar:
    """Draw :func:`sn2n_live.tune.run_sweep`'s progress (acquiring, denoising) on stderr."""

    def __init__(self) -> None:
        self._progress = _progress()
        self._task: Any = None

    def __enter__(self) -> _TuneBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def __call__(self, report: Any) -> None:
        if self._task is None:
            self._task = self._progress.add_task(report.description, total=report.steps)
        self._progress.update(self._task, completed=report.step, description=report.description)


def _print_tune(result: Any, rec: Any) -> None:
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        title=f"dose sweep ({result.elapsed_s:.0f} s); PSNR (dB) vs the reference, FRC in px",
        caption="FRCd: denoised; ok: meets every target; >G: beats the best Gaussian filter",
    )
    for column in ("ms", "%", "rel.", "raw", "Gauss", "den", "SSIM", "FRC", "FRCd", "risk%"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("ok", no_wrap=True)
    table.add_column(">G", no_wrap=True)
    for d, check in zip(result.doses, rec.checks, strict=True):
        table.add_row(
            f"{d.point.exposure_ms:g}",
            f"{d.point.power_percent:g}",
            f"{d.point.relative:.3f}",
            f"{d.psnr_raw:.1f}",
            f"{d.psnr_gaussian:.1f}",
            f"{d.psnr_denoised:.1f}",
            f"{d.ssim_denoised:.2f}",
            f"{d.raw_resolution_px:.1f}",
            f"{d.denoised_resolution_px:.1f}",
            f"{100 * d.risk_fraction:.2f}",
            "[green]yes[/]" if check.meets else "[red]no[/]",
            "yes" if check.beats_gaussian else "no",
        )
    console.print(table)
    console.print(
        f"reference {result.plan.reference.label}: FRC {result.reference_resolution_px:.2f} px;"
        f" bleaching {result.bleaching.rate_per_dose:.2e} per unit dose"
    )
    colour = "green" if rec.dose is not None else "red"
    console.print(f"[{colour}]{escape(rec.message)}[/]")


@app.command()
@_friendly_errors
def tune(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for tune.json, report.html.")],
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Profile file or name.")
    ] = "demo-sim",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model package (.sn2n), or 'pretrained' (default: the profile's, else "
            "the shipped lite model).",
        ),
    ] = None,
    exposures: Annotated[str, typer.Option(help="Exposures in ms, comma-separated.")] = "2,5,10",
    powers: Annotated[str, typer.Option(help="Laser powers in %, comma-separated.")] = "30,100",
    repeats: Annotated[int, typer.Option(help="SIM sets per dose (>= 2).")] = 3,
    reference_exposure: Annotated[float, typer.Option(help="Reference exposure (ms).")] = 200.0,
    reference_power: Annotated[float, typer.Option(help="Reference laser power (%).")] = 100.0,
    reference_repeats: Annotated[int, typer.Option(help="SIM sets of the reference.")] = 3,
    min_psnr: Annotated[
        float, typer.Option(help="Lowest PSNR (dB) of the denoised image vs the reference.")
    ] = 30.0,
    max_risk: Annotated[float, typer.Option(help="Highest hallucination-risk fraction.")] = 0.01,
    resolution_tolerance: Annotated[
        float, typer.Option(help="Allowed FRC resolution loss vs the reference (0.1 = 10 %).")
    ] = 0.10,
    gaussian_margin: Annotated[
        float, typer.Option(help="dB by which denoising must beat the best Gaussian filter.")
    ] = 0.5,
    tile: Annotated[
        str,
        typer.Option(
            help="'auto' (whole frame where the model allows: fastest), 'profile', "
            "'whole' or a tile size."
        ),
    ] = "auto",
    write_profile: Annotated[
        bool, typer.Option(help="Also write a copy of the profile with the recommended dose.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Reuse a non-empty --out folder.")] = False,
) -> None:
    """Find the lowest dose (exposure x laser power) that the denoiser still serves well."""
    from sn2n_live.acquisition import build_profile_denoiser
    from sn2n_live.engine import build_denoiser
    from sn2n_live.method import load_package, pretrained_package
    from sn2n_live.profiles import find_profile, load_profile
    from sn2n_live.tune import (
        SweepPlan,
        Targets,
        profile_with_dose,
        recommend,
        run_sweep,
        write_report,
    )

    plan = SweepPlan(
        exposures_ms=_numbers(exposures, "--exposures"),
        powers_percent=_numbers(powers, "--powers"),
        repeats=repeats,
        reference_exposure_ms=reference_exposure,
        reference_power_percent=reference_power,
        reference_repeats=reference_repeats,
    )
    targets = Targets(
        resolution_tolerance=resolution_tolerance,
        max_risk_fraction=max_risk,
        min_psnr_db=min_psnr,
        gaussian_margin_db=gaussian_margin,
    )
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise CliError(
            f"--out {out} exists and is not an empty folder; pass --overwrite or a new one"
        )
    prof = load_profile(profile)
    model_path = model or (str(prof.denoise.model) if prof.denoise.model else None)
    if model_path in (None, "pretrained"):
        if model_path is None:
            console.print("[yellow]no model given:[/] using the shipped pretrained lite model")
        package = pretrained_package()
    else:
        package = load_package(model_path)
    settings = prof.denoise
    if tile == "profile":
        denoiser = build_profile_denoiser(prof, package)
    else:
        choices = {"auto": None, "whole": None}
        try:
            size = choices[tile] if tile in choices else int(tile)
        except ValueError:
            raise CliError(f"--tile takes auto, profile, whole or a size; got {tile!r}") from None
        try:
            denoiser = build_denoiser(
                package,
                engine=settings.engine,
                tile=size,
                batch_size=settings.batch_size,
                precision=settings.precision,
            )
        except ValueError:
            if tile != "auto":
                raise
            denoiser = build_profile_denoiser(prof, package)  # per-tile normalization
    out.mkdir(parents=True, exist_ok=True)
    with _TuneBar() as bar:
        result = run_sweep(prof, denoiser, plan, progress=bar)
    rec = recommend(result, targets)
    document = {"recommendation": rec.as_dict(), "targets": targets.as_dict(), **result.as_dict()}
    document["parameters"]["model"] = model_path or "pretrained"
    document["parameters"]["tile"] = tile
    # Strict JSON: an FRC that never crosses its threshold is null, not Infinity.
    (out / "tune.json").write_text(
        json.dumps(_finite(document), indent=2, default=str, allow_nan=False)
    )
    report = write_report(result, rec, targets, out)
    _print_tune(result, rec)
    console.print(f"[green]Wrote[/] {out / 'tune.json'} and {report}")
    if write_profile and rec.dose is not None:
        source = find_profile(profile)
        tuned = out / f"{source.stem}-tuned.toml"
        tuned.write_text(profile_with_dose(source.read_text(), rec.dose))
        console.print(f"[green]Wrote[/] {tuned} (camera: {rec.dose.label})")
    elif write_profile:
        console.print("[yellow]no profile written:[/] no dose meets the targets")
    if rec.dose is None:
        raise typer.Exit(code=1)


@app.command()
@_friendly_errors
def reconstruct(
    run: Annotated[Path, typer.Argument(help="Run folder (from acquire, gui or tune).")],
    source: Annotated[
        ReconSource,
        typer.Option("--from", "--source", help="Reconstruct the denoised or the raw frames."),
    ] = ReconSource.DENOISED,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Store to write (default: recon[-raw].ome.zarr in the run)."
        ),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(help="A saved calibration (default: the run's, or estimated from it)."),
    ] = None,
    save_calibration: Annotated[
        Path | None, typer.Option(help="Write the calibration used (JSON), to reuse.")
    ] = None,
    psf: Annotated[PSFKind, typer.Option(help="PSF model of the OTF options below.")] = "gaussian",
    psf_sigma: Annotated[
        float | None, typer.Option(help="PSF sigma in camera pixels (the detection OTF).")
    ] = None,
    na: Annotated[float | None, typer.Option(help="Objective NA (ideal pupil OTF).")] = None,
    wavelength_nm: Annotated[float | None, typer.Option(help="Emission wavelength.")] = None,
    pixel_nm: Annotated[float | None, typer.Option(help="Sample-plane pixel size.")] = None,
    wiener: Annotated[float, typer.Option(help="Wiener parameter (larger: smoother).")] = 0.05,
) -> None:
    """Reconstruct every complete SIM set of a run (2x sampling, OME-Zarr)."""
    from sn2n_live.acquisition import reconstruct_run
    from sn2n_live.sim import OTFModel, SIMCalibration

    otf = None
    if na is not None or wavelength_nm is not None or pixel_nm is not None:
        otf = OTFModel(kind="ideal", na=na, wavelength_nm=wavelength_nm, pixel_nm=pixel_nm)
    elif psf_sigma is not None:
        otf = OTFModel(kind=psf, psf_sigma_px=psf_sigma)
    with _progress() as progress:
        task = progress.add_task("reconstructing", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        summary = reconstruct_run(
            run,
            source=source,
            otf=otf,
            calibration=None if calibration is None else SIMCalibration.load(calibration),
            wiener=wiener,
            out=out,
            save_calibration=save_calibration,
            progress=advance,
        )
    console.print(
        f"[green]Wrote[/] {summary.path}  ({summary.sets_written} sets from {source} frames, "
        f"{summary.seconds:.1f} s)"
    )
    if summary.sets_incomplete:
        console.print(f"[yellow]note:[/] {summary.sets_incomplete} incomplete sets left out")
    for angle in summary.calibration.angles:
        console.print(
            f"  pattern {angle.orientation_deg:7.2f}°: period {angle.period_px:.3f} px, "
            f"modulation {angle.modulation:.2f}"
        )


@app.command()
@_friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("demo-output"),
    timepoints: Annotated[int, typer.Option(help="Live SIM time points.")] = 4,
    train_minutes: Annotated[float, typer.Option(help="Training budget.")] = 1.0,
) -> None:
    """Run the demo: simulated SIM microscope, pilot, training, live run, side-by-side PNG."""
    from sn2n_live._demo import run_demo

    result = run_demo(
        out,
        timepoints=timepoints,
        train_minutes=train_minutes,
        console=console,
        training_bar=TrainingBar,
    )
    if result.summary.status != "completed":
        raise typer.Exit(code=1)


@app.command()
@_friendly_errors
def gui(
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Profile file or name.")
    ] = "demo-sim",
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", "-m", help="Model package (default: the profile's, else the shipped lite)."
        ),
    ] = None,
    runs: Annotated[
        Path, typer.Option("--runs", help="Folder for the runs Record and MDA save.")
    ] = Path("runs"),
    screenshot: Annotated[
        Path | None,
        typer.Option(help="Save a PNG of the whole window after --seconds, then exit."),
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Run this long in live mode, then close.")
    ] = None,
    mda: Annotated[bool, typer.Option(help="Show pymmcore-widgets' MDA panel.")] = True,
) -> None:
    """Open the live raw | denoised viewer on a microscope (the simulated one by default)."""
    if screenshot is not None and seconds is None:
        raise CliError("--screenshot needs --seconds N (how long to run live before the grab)")
    if screenshot is not None and screenshot.suffix.lower() != ".png":
        raise CliError(f"--screenshot must be a .png file; got {screenshot}")
    try:
        from sn2n_live.app import launch, resolve_model
    except ImportError as exc:
        raise CliError(
            f"the GUI needs the gui extra ({exc}); install it with: pip install 'sn2n-live[gui]'"
        ) from exc
    from sn2n_live.profiles import load_profile

    prof = load_profile(profile)
    package = resolve_model(prof, model)
    result = launch(
        prof, package, runs_dir=runs, seconds=seconds, screenshot=screenshot, mda_panel=mda
    )
    console.print(f"preview: {result.pairs_shown} pairs shown, renderer {result.renderer}")
    if result.screenshot is not None:
        console.print(f"[green]Wrote[/] {result.screenshot}")
    if result.last_run is not None:
        console.print(f"last run: {result.last_run}")


@engine_app.command("info")
def engine_info() -> None:
    """List inference backends, their devices, and cached TensorRT plans."""
    from sn2n_live.engine import available_backends, list_cached_plans, plan_cache_dir

    # Plain text, one backend per line: easy to read and to grep.
    for status in available_backends():
        mark = "yes" if status.available else "no "
        devices = ", ".join(status.devices) or "-"
        typer.echo(f"{mark} {status.name:17s} {devices:12s} {status.reason}")
    plans = list_cached_plans()
    typer.echo(f"plan cache: {plan_cache_dir()} ({len(plans)} plan(s))")
    for plan in plans:
        state = plan.problem or "ok"
        typer.echo(f"  {plan.path.name}  {plan.size_bytes / 1e6:.1f} MB  {state}")


@engine_app.command("build")
@_friendly_errors
def engine_build(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model package (.sn2n).")],
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile file or name.")],
    rebuild: Annotated[bool, typer.Option(help="Rebuild even if a plan is cached.")] = False,
) -> None:
    """Build and cache the TensorRT plan for a model ahead of an acquisition."""
    import time

    from sn2n_live.engine import build_engine_plan
    from sn2n_live.method import load_package
    from sn2n_live.profiles import load_profile

    prof = load_profile(profile)
    package = load_package(model)
    start = time.perf_counter()
    with console.status("building TensorRT plan (this takes minutes the first time)"):
        path = build_engine_plan(
            package,
            precision=prof.denoise.precision or "fp16",
            tile=prof.denoise.tile,
            batch_size=prof.denoise.batch_size,
            rebuild=rebuild,
        )
    console.print(f"[green]Plan[/] {path} ready in {time.perf_counter() - start:.1f} s")


def main() -> None:
    """Entry point of the ``sn2n-live`` console script."""
    app()
