r"""What the live-denoise hook costs the camera.

Runs the same MDA with and without :func:`live_denoise` attached, interleaved and rotated
(A, B, C, B, C, A, C, A, B, ...), and reports the median camera frame rate of each
condition, its ratio to the bare camera's, and the range of the ratios within one repeat
(how far a single side-by-side comparison can be trusted here). The camera rate is
frames / (``sequenceFinished`` - ``sequenceStarted``) taken on the acquisition thread, so
the denoiser's catch-up after the acquisition is not counted (it is cancelled right after
each timed run to keep the benchmark short).

Conditions
----------
bare
    ``core.mda.run(seq)``: nothing saved, nothing denoised (the camera's own speed).
builtin_zarr
    pymmcore-plus's built-in OME-Zarr sink (raw only, written on the acquisition thread):
    what a user without sn2n-live would run to save raw frames.
live
    :func:`live_denoise` with the defaults (``complete`` policy, zarr-python backend, the
    worker at nice +19) and ``denoise_threads=1``; a real U-Net (``lite`` preset, random
    weights) denoises on the worker thread.
live_nice0
    As ``live`` with the worker at the acquisition's priority (``denoise_nice=0``).
live_torch2
    As ``live`` with torch's default thread count (2 here).
live_tensorstore
    As ``live`` with the tensorstore OME-Zarr backend.
live_identity
    As ``live`` with a denoiser that costs nothing: what saving raw + float32 denoised
    frames alone costs.
live_process
    As ``live`` with ``isolation="process"``: writers and U-Net in a child process (at
    nice +10), this process only copies frames into shared memory. The child starts
    before the timed acquisition. Nobody takes the live raw/denoised pairs.
live_process_watched
    As ``live_process`` with a listener on ``events.pair``, as a live preview has: every
    pair (up to 20/s) is copied into this process.
live_default
    What a Python user writes: ``live_denoise(core, model="model.sn2n", out=...,
    events=...)`` with every other option at its default (process isolation for a model
    path, torch's own thread count in the child); a ``lite`` package with random weights.
live_default_qt
    (``--preview`` only) As ``live_default``, the MDA on its own thread (``core.run_mda``)
    while the main thread runs a Qt event loop: a GUI without a preview.
live_recon, live_process_recon
    (``--recon`` only) As ``live`` and ``live_process`` with the live SIM reconstruction
    saving every raw set (``reconstruction.live = "save"``, a saved calibration): what
    reconstructing costs the camera beyond the live hook is the ratio to ``live`` /
    ``live_process``.
live_default_previewed
    (``--preview`` only) As ``live_default_qt`` with a ``DenoisePreviewWidget`` shown and
    polling the handler at 10 Hz: what attaching the preview costs the camera beyond the
    live hook is the ratio of these two.

Cameras: DemoCamera (mm-test-adapters) at exposure 0 with ``FastImage=1`` (a camera that
is itself CPU-bound) at 512^2 and 2048^2; DemoCamera at 512^2 with a 10 ms exposure (an
exposure-bound camera, as in low-light SIM); the simulated SIM microscope
(``acquisition/_simulated.py``, unicore Python camera + SLM, not real-time) at 512^2 with
3x3 SIM sets. Then hardware-sequenced bursts (``startSequenceAcquisition``, pymmcore-plus's
default for a time series without interval and how a fast SIM burst runs) of a DemoCamera
that costs the host no CPU per frame (``FastImage=1``), like a real camera: 512^2 at 2 ms
(~450 fps, a SIM ROI), 512^2 at 0 ms (as fast as the camera thread can copy) and, full run
only, 2048^2 at 10 ms (~90 fps, an sCMOS).

Also reported per live run: ``frameReady`` cost on the relay thread (median, p99 in µs),
the most frames waiting for the denoiser and for the raw writer, the denoise latency
(p50/p99), and one extra ``preview``-policy run for the live preview latency; plus the
cost of ``frameReady`` called directly 5000 times (64^2 frames, writer and worker threads
running), i.e. its intrinsic cost without the MDA's own threads competing.

Writes ``benchmarks/results/acquisition_overhead.json``. Usage::

    python benchmarks/acquisition_overhead.py            # ~3 min on 2 CPU cores
    python benchmarks/acquisition_overhead.py --quick    # fewer repeats, 512^2 only
    python benchmarks/acquisition_overhead.py --preview  # the preview's cost (~12 min);
        # writes acquisition_overhead_preview.json. A QApplication exists before the cores,
        # so their signals use Qt, as in a GUI.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import useq
from pymmcore_plus import CMMCorePlus

from sn2n_live.acquisition import FrameDenoiser, LiveDenoiseHandler, ReconOptions, live_denoise
from sn2n_live.config._sim_plan import SIMPlan
from sn2n_live.method._denoiser import Denoiser
from sn2n_live.method._package import ModelPackage, save_package
from sn2n_live.method._unet import PRESETS, UNetConfig
from sn2n_live.sim import OTFModel

RESULTS = Path(__file__).parent / "results"

RECON = ReconOptions(save=True, source="denoised", otf=OTFModel.gaussian(1.5), calibration_sets=2)
# What each live condition changes from the default (complete policy, zarr-python,
# torch.set_num_threads(1) in the worker, worker at nice +19).
LIVE_OPTIONS: dict[str, dict[str, Any]] = {
    "live": {},
    "live_nice0": {"denoise_nice": 0},
    "live_torch2": {"denoise_threads": None},
    "live_tensorstore": {"zarr_backend": "tensorstore"},
    "live_identity": {},
    "live_preview": {"policy": "preview"},
    "live_process": {"isolation": "process"},
    "live_process_watched": {"isolation": "process"},
    # live_recon, live_process_recon: set by recon_main (they need a calibration)
}


class IdentityDenoiser:
    """Costs nothing: isolates what saving raw + float32 denoised frames costs."""

    provenance: ClassVar[dict[str, str]] = {"model_sha256": "identity", "engine": "none"}

    def denoise(self, frames: Any) -> Any:
        """Return the frames as float32."""
        return frames.astype("float32")


def make_denoiser(preset: str = "lite") -> Denoiser:
    """Build a real Denoiser on random weights (``tiny``: depth 2, base 8, for 2048^2)."""
    config = PRESETS["lite"] if preset == "lite" else UNetConfig(depth=2, base_channels=8)
    return Denoiser(ModelPackage.untrained(config), tile=None)


class BenchDenoiser:
    """A preset name that builds its Denoiser once, here or (pickled) in a child process."""

    def __init__(self, preset: str = "lite") -> None:
        self.preset = preset
        self._built: Denoiser | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"preset": self.preset, "_built": None}

    def __call__(self) -> Denoiser:
        """Return the Denoiser, built on first use."""
        if self._built is None:
            self._built = make_denoiser(self.preset)
        return self._built

    def package_path(self, folder: Path) -> Path:
        """Save the Denoiser's package to ``folder`` once; return its path."""
        path = folder / f"{self.preset}.sn2n"
        if not path.exists():
            save_package(self().package, path)
        return path


class Timed:
    """Acquisition-thread timestamps of sequenceStarted/Finished for one core."""

    def __init__(self, core: CMMCorePlus) -> None:
        self.t0 = self.t1 = 0.0
        events = core.mda.events
        if type(events).__name__.startswith("Q"):
            # Qt signals: stamp on the acquisition thread, not when the GUI thread gets
            # to a queued call (an MDA run with core.run_mda emits off the main thread).
            from qtpy.QtCore import Qt

            direct = Qt.ConnectionType.DirectConnection
            events.sequenceStarted.connect(self._start, direct)
            events.sequenceFinished.connect(self._end, direct)
        else:
            events.sequenceStarted.connect(self._start)
            events.sequenceFinished.connect(self._end)

    def _start(self, *_: Any) -> None:
        self.t0 = time.perf_counter()

    def _end(self, *_: Any) -> None:
        self.t1 = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Acquisition time of the last run."""
        return self.t1 - self.t0


def run_condition(
    name: str,
    core: CMMCorePlus,
    events: Any,
    n_frames: int,
    timer: Timed,
    tmp: Path,
    denoiser: BenchDenoiser,
) -> dict[str, Any]:
    out = tmp / f"{name}-{time.perf_counter_ns()}"
    record: dict[str, Any] = {"condition": name}
    if name == "bare":
        core.mda.run(events)
    elif name == "builtin_zarr":
        core.mda.run(events, output=str(out) + ".ome.zarr")
    else:
        options = {"policy": "complete", "denoise_threads": 1, **LIVE_OPTIONS.get(name, {})}
        model: FrameDenoiser | BenchDenoiser | Path = denoiser
        if name.startswith("live_default"):
            options, model = {}, denoiser.package_path(tmp)
        elif name == "live_identity":
            model = IdentityDenoiser()
        elif options.get("isolation") != "process":
            model = denoiser()  # built once, reused by every thread-mode run
        peaks = {"queue": 0, "raw_backlog": 0, "queued_mb": 0.0}

        def on_stats(stats: Any) -> None:
            peaks["queue"] = max(peaks["queue"], stats.queue_depth)
            peaks["raw_backlog"] = max(peaks["raw_backlog"], stats.raw_backlog)
            peaks["queued_mb"] = max(peaks["queued_mb"], stats.queued_mb)

        with live_denoise(core, model=model, out=out, events=events, **options) as handler:
            handler.events.stats.connect(on_stats)
            if name.endswith("_watched"):
                handler.events.pair.connect(lambda pair: None)
            if name in ("live_default_qt", "live_default_previewed"):
                record.update(run_in_qt(core, events, handler, name.endswith("previewed")))
            else:
                core.mda.run(events)
            t_acq = time.perf_counter()
            if name != "live_preview":
                handler.cancel_catch_up()
        summary = handler.wait()
        record.update(
            frame_ready_p50_us=summary.frame_ready_p50_us,
            frame_ready_p99_us=summary.frame_ready_p99_us,
            latency_p50_ms=summary.latency_p50_ms,
            latency_p99_ms=summary.latency_p99_ms,
            denoise_fps=summary.denoise_fps,
            denoised_during_run=summary.denoised_written,
            raw_written=summary.raw_written,
            max_queue_depth=peaks["queue"],
            max_queued_mb=peaks["queued_mb"],
            max_raw_backlog=peaks["raw_backlog"],
            stores_closed_after_s=round(time.perf_counter() - t_acq, 3),
            status=summary.status,
        )
        assert summary.raw_written == n_frames, summary.to_dict()
        if "recon" in options:
            rec = json.loads((out / "run.json").read_text())["reconstruction"]
            record["recon"] = {k: rec[k] for k in ("sets_reconstructed", "compute_ms_p50")}
    record["seconds"] = round(timer.seconds, 4)
    record["fps"] = round(n_frames / timer.seconds, 2)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(str(out) + ".ome.zarr", ignore_errors=True)
    return record


def run_in_qt(core: CMMCorePlus, events: Any, handler: Any, preview: bool) -> dict[str, Any]:
    """Run the MDA on its thread while this thread spins a Qt event loop (with a preview).

    Returns the preview's counts: pairs shown and the longest gap between two ticks of a
    10 ms heartbeat timer on the GUI thread (how long the GUI froze at most).
    """
    from qtpy.QtCore import QEventLoop, QTimer

    widget = None
    if preview:
        from sn2n_live.preview import DenoisePreviewWidget

        widget = DenoisePreviewWidget(handler)
        widget.resize(1200, 700)
        widget.show()
    loop = QEventLoop()
    ticks: list[float] = []
    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    thread = core.run_mda(events)
    watch = QTimer()
    watch.setInterval(5)
    watch.timeout.connect(lambda: None if thread.is_alive() else loop.quit())
    heartbeat.start()
    watch.start()
    loop.exec()
    thread.join()
    heartbeat.stop()
    watch.stop()
    out: dict[str, Any] = {"gui_max_gap_ms": round(1e3 * max(np.diff(ticks), default=0.0), 1)}
    if widget is not None:
        out["pairs_shown"] = widget.state.pairs_shown
        widget.close()
        widget.deleteLater()
    return out


def interleaved(
    label: str,
    core: CMMCorePlus,
    events: Any,
    n_frames: int,
    conditions: list[str],
    repeats: int,
    denoiser: BenchDenoiser,
    tmp: Path,
) -> dict[str, Any]:
    timer = Timed(core)
    core.mda.run(events)  # warm-up: first-run costs (buffers, imports) hit nobody
    runs: list[dict[str, Any]] = []
    for rep in range(repeats):
        # Rotated each repeat, so that what a run leaves behind (page cache, a child
        # process exiting) slows a different condition every time.
        shift = rep % len(conditions)
        for name in conditions[shift:] + conditions[:shift]:
            try:
                record = run_condition(name, core, events, n_frames, timer, tmp, denoiser)
            except MemoryError as exc:  # pymmcore-plus: the camera's circular buffer overflowed
                record = {"condition": name, "failed": f"{type(exc).__name__}: {exc}"}
                core.stopSequenceAcquisition()
                core.clearCircularBuffer()
            record["repeat"] = rep
            runs.append(record)
            gc.collect()
            result = f"{record['fps']:8.1f} fps" if "fps" in record else record["failed"]
            print(f"  {label:<22} {name:<17} rep {rep}: {result}", flush=True)
    medians = {
        name: statistics.median(
            [r["fps"] for r in runs if r["condition"] == name and "fps" in r] or [0.0]
        )
        for name in conditions
    }
    failed = {
        name: sum(r["condition"] == name and "failed" in r for r in runs) for name in conditions
    }
    out: dict[str, Any] = {
        "frames": n_frames,
        "circular_buffer_mb": core.getCircularBufferMemoryFootprint(),
        "median_fps": medians,
        "failed_runs": {name: count for name, count in failed.items() if count},
        "runs": runs,
    }
    out["ratio_vs_bare"] = {
        name: round(medians[name] / medians["bare"], 4) for name in conditions if name != "bare"
    }
    out["ratio_range_per_repeat"] = _ratio_ranges(runs, conditions)
    live = [r for r in runs if r["condition"].startswith("live") and "fps" in r]
    if live:
        out["frame_ready_us"] = {
            "median_of_p50": statistics.median(r["frame_ready_p50_us"] for r in live),
            "max_p99": max(r["frame_ready_p99_us"] for r in live),
        }
    return out


def _ratio_ranges(runs: list[dict[str, Any]], conditions: list[str]) -> dict[str, list[float]]:
    """Lowest and highest ratio to the bare run of the same repeat, per condition."""
    fps = {(r["condition"], r["repeat"]): r["fps"] for r in runs if "fps" in r}
    ranges = {}
    for name in (c for c in conditions if c != "bare"):
        ratios = [
            value / fps["bare", rep]
            for (cond, rep), value in fps.items()
            if cond == name and ("bare", rep) in fps
        ]
        if ratios:
            ranges[name] = [round(min(ratios), 3), round(max(ratios), 3)]
    return ranges


def frame_ready_microbench(tmp: Path, n: int = 5000) -> dict[str, float]:
    """Call a started handler's frameReady directly, as the relay thread would."""
    events = list(useq.MDASequence(time_plan={"interval": 0, "loops": n}))
    handler = LiveDenoiseHandler(IdentityDenoiser(), tmp / "microbench", events=events)
    handler.sequenceStarted(None, {})
    frame = np.zeros((64, 64), np.uint16)
    costs = []
    for i, event in enumerate(events):
        meta = {"runner_time_ms": float(i)}
        t0 = time.perf_counter()
        handler.frameReady(frame, event, meta)
        costs.append((time.perf_counter() - t0) * 1e6)
    handler.sequenceFinished(None)
    handler.wait()
    return {
        "p50_us": round(float(np.percentile(costs, 50)), 2),
        "p99_us": round(float(np.percentile(costs, 99)), 2),
    }


def democam(
    size: int, exposure_ms: float = 0.0, *, burst: bool = False, fast_image: bool | None = None
) -> CMMCorePlus:
    """DemoCamera at ``size``^2.

    ``burst``: hardware-sequenced (``startSequenceAcquisition``), the way pymmcore-plus
    runs a time series with no interval by default and how a fast SIM burst runs: the
    camera's own C++ thread paces the frames and the MDA thread only pops them.
    ``fast_image`` (default: only at exposure 0) skips DemoCamera's per-frame rendering,
    which costs ~2 ms (512^2) to ~50 ms (2048^2) of CPU; a real camera costs the host none.
    """
    core = CMMCorePlus()
    core.loadSystemConfiguration()
    core.setProperty("Camera", "OnCameraCCDXSize", size)
    core.setProperty("Camera", "OnCameraCCDYSize", size)
    fast = exposure_ms == 0 if fast_image is None else fast_image
    core.setProperty("Camera", "FastImage", 1 if fast else 0)
    core.setExposure(exposure_ms)
    core.mda.engine.use_hardware_sequencing = burst
    return core


def with_core(make: Callable[[], CMMCorePlus], body: Callable[[CMMCorePlus], Any]) -> Any:
    from sn2n_live.acquisition._simulated import release_core

    t0 = time.perf_counter()
    core = make()
    try:
        out = body(core)
    finally:
        release_core(core)
        del core
        gc.collect()
    if isinstance(out, dict):
        out["section_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="512^2 only, 2 repeats")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--recon", action="store_true", help="only what the live SIM reconstruction costs"
    )
    parser.add_argument(
        "--preview", action="store_true", help="only what attaching the live preview costs"
    )
    args = parser.parse_args()
    if args.recon:
        recon_main(args.repeats)
        return
    if args.preview:
        preview_main(args.repeats)
        return
    repeats = 2 if args.quick else args.repeats
    torch.set_num_threads(1)
    denoiser = BenchDenoiser("lite")
    results: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_avg_at_start": os.getloadavg(),
        },
        "denoiser": {
            "preset": "lite (2048^2: depth 2, base 8, so a cancelled catch-up ends quickly)",
            "weights": "random",
            "tile": None,
            "device": "cpu",
        },
        "repeats": repeats,
        "cameras": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="sn2n-acq-bench-"))
    try:
        results["frame_ready_direct"] = frame_ready_microbench(tmp)
        n512 = 300
        seq512 = useq.MDASequence(time_plan={"interval": 0, "loops": n512})
        conds512 = [
            "bare",
            "builtin_zarr",
            "live",
            "live_nice0",
            "live_torch2",
            "live_tensorstore",
            "live_identity",
            "live_process",
            "live_default",
        ]
        results["cameras"]["democam_512"] = with_core(
            lambda: democam(512),
            lambda core: interleaved(
                "DemoCamera 512^2", core, seq512, n512, conds512, repeats, denoiser, tmp
            ),
        )
        results["cameras"]["democam_512_preview"] = with_core(
            lambda: democam(512),
            lambda core: run_condition(
                "live_preview", core, seq512, n512, Timed(core), tmp, denoiser
            ),
        )
        if not args.quick:
            n_exp = 100
            seq_exp = useq.MDASequence(time_plan={"interval": 0, "loops": n_exp})
            results["cameras"]["democam_512_exposure10ms"] = with_core(
                lambda: democam(512, exposure_ms=10.0),
                lambda core: interleaved(
                    "DemoCamera 512^2 10 ms",
                    core,
                    seq_exp,
                    n_exp,
                    ["bare", "builtin_zarr", "live", "live_nice0", "live_process", "live_default"],
                    repeats,
                    denoiser,
                    tmp,
                ),
            )
            n2048 = 40
            seq2048 = useq.MDASequence(time_plan={"interval": 0, "loops": n2048})
            results["cameras"]["democam_2048"] = with_core(
                lambda: democam(2048),
                lambda core: interleaved(
                    "DemoCamera 2048^2",
                    core,
                    seq2048,
                    n2048,
                    ["bare", "builtin_zarr", "live", "live_process"],
                    repeats,
                    BenchDenoiser("tiny"),
                    tmp,
                ),
            )
            results["cameras"]["simulated_sim_512"] = simulated(repeats, denoiser, tmp)
        # Hardware-sequenced bursts of a camera that costs the host no CPU (FastImage):
        # a SIM ROI at 500 fps, an sCMOS 2048^2 at ~90 fps, and DemoCamera flat out.
        burst_conditions = [
            "bare",
            "builtin_zarr",
            "live",
            "live_process",
            "live_process_watched",
            "live_identity",
        ]
        bursts = [
            ("democam_512_burst_2ms", "DemoCamera 512^2 burst 2 ms", 512, 2.0, 500, denoiser),
            ("democam_512_burst_full", "DemoCamera 512^2 burst 0 ms", 512, 0.0, 500, denoiser),
        ]
        if not args.quick:
            tiny = BenchDenoiser("tiny")
            bursts.append(
                ("democam_2048_burst_10ms", "DemoCamera 2048^2 burst 10 ms", 2048, 10.0, 100, tiny)
            )
        for key, label, size, exposure, n_burst, model in bursts:
            seq_burst = useq.MDASequence(time_plan={"interval": 0, "loops": n_burst})
            results["cameras"][key] = with_core(
                lambda size=size, exposure=exposure: democam(
                    size, exposure, burst=True, fast_image=True
                ),
                lambda core, label=label, seq=seq_burst, n=n_burst, model=model: interleaved(
                    label, core, seq, n, burst_conditions, repeats, model, tmp
                ),
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save_results(results, "acquisition_overhead.json")


def preview_main(repeats: int) -> None:
    """Measure what attaching the preview costs the camera, 512^2 and 2048^2."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # or run under xvfb-run
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    torch.set_num_threads(1)
    results: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "qt_platform": app.platformName(),
            "load_avg_at_start": os.getloadavg(),
        },
        "repeats": repeats,
        "cameras": {},
    }
    conditions = ["bare", "live_default", "live_default_qt", "live_default_previewed"]
    tmp = Path(tempfile.mkdtemp(prefix="sn2n-preview-bench-"))
    try:
        # Exposure 0 (a camera that is itself CPU-bound: the harshest case) and 10 ms with
        # FastImage (exposure-bound, costing the host nothing per frame, like a real one).
        for key, label, size, exposure, n, model in (
            ("democam_512", "DemoCamera 512^2", 512, 0.0, 300, BenchDenoiser("lite")),
            ("democam_2048", "DemoCamera 2048^2", 2048, 0.0, 40, BenchDenoiser("tiny")),
            ("democam_512_10ms", "DemoCamera 512^2 10 ms", 512, 10.0, 150, BenchDenoiser("lite")),
            ("democam_2048_10ms", "DemoCamera 2048^2 10 ms", 2048, 10.0, 60, BenchDenoiser("tiny")),
        ):
            seq = useq.MDASequence(time_plan={"interval": 0, "loops": n})
            data = with_core(
                lambda size=size, exposure=exposure: democam(size, exposure, fast_image=True),
                lambda core, label=label, seq=seq, n=n, model=model: interleaved(
                    label, core, seq, n, conditions, repeats, model, tmp
                ),
            )
            med = data["median_fps"]
            data["preview_cost_ratio"] = round(
                med["live_default_previewed"] / med["live_default_qt"], 4
            )
            results["cameras"][key] = data
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save_results(
        results,
        "acquisition_overhead_preview.json",
        {k: f"previewed / qt-without-preview = {d['preview_cost_ratio']:.3f}"
         for k, d in results["cameras"].items()},
    )  # fmt: skip


def _saved_calibration(size: int) -> Any:
    """Return a calibration of the simulator's 3x3 pattern at ``size``^2 (as if loaded)."""
    from sn2n_live.sim import estimate_calibration
    from sn2n_live.simulation import simulate_sim_frames

    frames = simulate_sim_frames((size, size), photons=200, seed=0)
    return estimate_calibration(frames.raw[0], OTFModel.gaussian(frames.psf_sigma_px))


def recon_main(repeats: int) -> None:
    """Measure what the live SIM reconstruction costs the camera.

    DemoCamera at 512^2, 10 ms exposure, ``FastImage`` (exposure-bound, costing the host
    no CPU per frame, like a real camera), 30 SIM sets of 3x3 (patterns outside
    Micro-Manager: ``pattern_source = "metadata"``); the reconstruction reconstructs the
    raw sets as they complete, with a saved calibration (what it costs does not depend on
    the pixels), and saves each to recon.ome.zarr.
    """
    torch.set_num_threads(1)
    results: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_at_start": os.getloadavg(),
        },
        "repeats": repeats,
        "cameras": {},
    }
    recon = ReconOptions(
        save=True, source="raw", otf=OTFModel.gaussian(1.5), calibration=_saved_calibration(512)
    )
    LIVE_OPTIONS["live_recon"] = {"recon": recon}
    LIVE_OPTIONS["live_process_recon"] = {"isolation": "process", "recon": recon}
    tmp = Path(tempfile.mkdtemp(prefix="sn2n-recon-bench-"))
    events = SIMPlan(pattern_source="metadata").expand(
        useq.MDASequence(time_plan={"interval": 0, "loops": 30})
    )
    conditions = ["bare", "live", "live_recon", "live_process", "live_process_recon"]
    try:
        data = with_core(
            lambda: democam(512, 10.0, fast_image=True),
            lambda core: interleaved(
                "DemoCamera 512^2 10 ms, 3x3 SIM",
                core,
                events,
                len(events),
                conditions,
                repeats,
                BenchDenoiser("lite"),
                tmp,
            ),
        )
        med = data["median_fps"]
        data["recon_cost_ratio"] = {
            "thread": round(med["live_recon"] / med["live"], 4),
            "process": round(med["live_process_recon"] / med["live_process"], 4),
        }
        results["cameras"]["democam_512_10ms_sim"] = data
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save_results(
        results,
        "acquisition_overhead_recon.json",
        {k: f"with / without reconstruction = {d['recon_cost_ratio']}"
         for k, d in results["cameras"].items()},
    )  # fmt: skip


def simulated(repeats: int, denoiser: BenchDenoiser, tmp: Path) -> dict[str, Any]:
    from sn2n_live.acquisition._simulated import create_simulated_microscope

    plan = SIMPlan()
    sets = 20
    events = plan.expand(
        useq.MDASequence(time_plan={"interval": 0, "loops": sets}), slm_shape=(512, 512)
    )
    return with_core(
        lambda: create_simulated_microscope(shape=(512, 512), realtime=False),
        lambda core: interleaved(
            "simulated SIM 512^2",
            core,
            events,
            len(events),
            ["bare", "live", "live_process"],
            repeats,
            denoiser,
            tmp,
        ),
    )


def save_results(results: dict[str, Any], name: str, ratios: dict[str, str] | None = None) -> None:
    """Record the load at the end, write ``RESULTS/name``, print the summary and ratios."""
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(results, indent=2))
    print_summary(results)
    for key, line in (ratios or {}).items():
        print(f"{key}: {line}")
    print(f"wrote {path}")


def print_summary(results: dict[str, Any]) -> None:
    print(
        "\ncamera                 condition            median fps   ratio  (range)"
        "        frameReady us p50/p99"
    )
    for camera, data in results["cameras"].items():
        if "median_fps" not in data:
            continue
        for name, fps in data["median_fps"].items():
            ratio = data["ratio_vs_bare"].get(name, 1.0)
            runs = [r for r in data["runs"] if r["condition"] == name and "frame_ready_p50_us" in r]
            fr = ""
            if runs:
                p50 = statistics.median(r["frame_ready_p50_us"] for r in runs)
                p99 = max(r["frame_ready_p99_us"] for r in runs)
                fr = f"{p50:.1f} / {p99:.1f}"
            low, high = data.get("ratio_range_per_repeat", {}).get(name, (ratio, ratio))
            print(
                f"{camera:<22} {name:<20} {fps:10.1f}   {ratio:5.3f}  ({low:.3f}-{high:.3f})  {fr}"
            )
        for name, count in data.get("failed_runs", {}).items():
            print(f"{camera:<22} {name:<17} {count} run(s) failed: circular buffer overflowed")
    direct = results.get("frame_ready_direct")
    if direct:
        print(f"\nframeReady called directly: p50 {direct['p50_us']} us, p99 {direct['p99_us']} us")
    preview = results["cameras"].get("democam_512_preview")
    if preview:
        print(
            f"\npreview policy 512^2: {preview['fps']} fps, denoised "
            f"{preview['denoised_during_run']} frames live, latency p50/p99 "
            f"{preview['latency_p50_ms']}/{preview['latency_p99_ms']} ms"
        )


if __name__ == "__main__":
    # Run from the importable module, so that a child process can unpickle BenchDenoiser.
    from acquisition_overhead import main as run_from_module

    run_from_module()
