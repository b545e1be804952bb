"""The end-to-end demo: simulated SIM microscope -> pilot -> training -> live run.

Everything runs on a real pymmcore-plus core with simulated Python devices, so it needs
no hardware and no downloads.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from rich.console import Console
from rich.table import Table

from sn2n_live.acquisition import RunSummary, acquire_live, acquire_pilot, build_profile_denoiser
from sn2n_live.io import read_frames
from sn2n_live.method import (
    ModelPackage,
    TrainingConfig,
    TrainingProgress,
    initial_package,
    save_package,
    train,
)
from sn2n_live.profiles import Profile, load_profile

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs, and how the live run went."""

    pilot: Path
    model: Path
    run_dir: Path
    figure: Path
    summary: RunSummary
    seconds: dict[str, float]


def run_demo(
    out: str | Path,
    *,
    profile: str | Path = "demo-sim",
    timepoints: int = 4,
    train_minutes: float = 1.0,
    console: Console | None = None,
    training_bar: Callable[
        [], AbstractContextManager[Callable[[TrainingProgress], None] | None]
    ] = contextlib.nullcontext,
) -> DemoResult:
    """Run the whole demo and write pilot, model, run folder and a side-by-side PNG.

    Parameters
    ----------
    out : str or Path
        Output folder (created; an existing run folder inside it is replaced).
    profile : str or Path
        Profile name or file; the default is the bundled simulated SIM microscope.
    timepoints : int
        SIM time points to acquire live.
    train_minutes : float
        Training budget for the `lite` model.
    console : rich.console.Console, optional
        Where progress and the summary are printed.
    training_bar : callable
        Makes the context that shows the training's progress: entered around training,
        it gives ``train``'s ``progress`` callback (e.g. :class:`sn2n_live.cli.TrainingBar`);
        the default shows none.
    """
    console = console or Console(stderr=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prof = load_profile(profile)
    seconds: dict[str, float] = {}

    with _timed(seconds, "pilot"):
        pilot = acquire_pilot(prof, out / "pilot.ome.tiff", overwrite=True)
    frames = read_frames(pilot)
    console.print(f"[bold]1/3[/] pilot: {len(frames)} low-light frames -> {pilot}")

    with _timed(seconds, "train"):
        package = _train_lite(prof, frames, train_minutes, training_bar)
        model = save_package(package, out / "model.sn2n")
    console.print(
        f"[bold]2/3[/] trained lite model from {prof.training.init} "
        f"({package.resolved_mode} normalization, "
        f"{package.training['epochs_run']} epochs) -> {model}"
    )

    run_dir = out / "run"
    with _timed(seconds, "live"):
        summary = _live_run(prof, package, run_dir, timepoints)
    console.print(f"[bold]3/3[/] live SIM time-lapse -> {run_dir}")

    set_size = prof.sim.set_size if prof.sim else 1
    figure = save_side_by_side(run_dir, out / "side_by_side.png", set_size=set_size)
    _print_summary(console, summary, seconds, figure)
    return DemoResult(pilot, model, run_dir, figure, summary, seconds)


@contextlib.contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    """Record in ``seconds[step]`` how long the block took."""
    t0 = time.perf_counter()
    yield
    seconds[step] = time.perf_counter() - t0


def _train_lite(
    prof: Profile,
    frames: np.ndarray,
    train_minutes: float,
    training_bar: Callable[[], AbstractContextManager[Callable[[TrainingProgress], None] | None]],
) -> ModelPackage:
    """Train the `lite` model on the pilot frames, from the profile's initial weights."""
    config = TrainingConfig(
        preset="lite",
        policy="dataset",
        patch=64,
        epochs=20,
        max_minutes=train_minutes,
        patience=5,
        seed=0,
    )
    with training_bar() as progress:
        return train(
            frames,
            config,
            progress=progress,
            camera_offset_adu=_camera_offset(prof),
            init=initial_package(prof.training.init),
        )


def _live_run(prof: Profile, package: ModelPackage, run_dir: Path, timepoints: int) -> RunSummary:
    """Acquire and denoise the live time-lapse into ``run_dir`` (replacing an earlier run)."""
    # A factory, so that the denoiser can be built in the denoise process.
    denoiser = functools.partial(build_profile_denoiser, prof, package)
    if run_dir.exists():
        _remove_run(run_dir)
    return acquire_live(prof, denoiser=denoiser, out_dir=run_dir, timepoints=timepoints)


def _camera_offset(profile: Any) -> float | None:
    if profile.microscope.kind != "simulated":
        return None
    from sn2n_live.simulation import CameraModel

    return CameraModel().offset_adu


def _remove_run(run_dir: Path) -> None:
    import shutil

    if not (run_dir / "run.json").exists():
        raise FileExistsError(f"{run_dir} exists and is not an sn2n-live run folder")
    shutil.rmtree(run_dir)


def _last_set(store: Path, set_size: int) -> np.ndarray:
    group = zarr.open_group(str(store), mode="r")
    array = np.asarray(group["0"][...])
    frames = array.reshape(-1, *array.shape[-2:])
    return frames[-set_size:].astype(np.float32)


def save_side_by_side(run_dir: Path, path: Path, *, set_size: int) -> Path:
    """Save raw vs denoised (one pattern and the SIM-set average) of the last time point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw = _last_set(run_dir / "raw.ome.zarr", set_size)
    den = _last_set(run_dir / "denoised.ome.zarr", set_size)
    panels = [
        ("raw, one SIM pattern", raw[0]),
        ("denoised, one SIM pattern", den[0]),
        (f"raw, mean of {set_size} patterns", raw.mean(axis=0)),
        (f"denoised, mean of {set_size} patterns", den.mean(axis=0)),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(9, 9))
    for ax, (title, image) in zip(axes.ravel(), panels, strict=True):
        lo, hi = np.percentile(image, (0.5, 99.8))
        ax.imshow(image, cmap="magma", vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _print_summary(
    console: Console, summary: RunSummary, seconds: dict[str, float], figure: Path
) -> None:
    table = Table(title="sn2n-live demo", show_header=False)
    rows = {
        "status": summary.status,
        "raw frames written": summary.raw_written,
        "denoised frames written": summary.denoised_written,
        "missing denoised": json.dumps(summary.missing_denoised) or "none",
        "camera fps": f"{summary.camera_fps:.1f}",
        "denoise fps": f"{summary.denoise_fps:.2f}",
        "latency p50 / p99 (ms)": f"{summary.latency_p50_ms} / {summary.latency_p99_ms}",
        "frameReady p50 (us)": f"{summary.frame_ready_p50_us}",
        "seconds (pilot / train / live)": " / ".join(f"{s:.0f}" for s in seconds.values()),
        "run folder": str(summary.run_dir),
        "side-by-side": str(figure),
    }
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)
