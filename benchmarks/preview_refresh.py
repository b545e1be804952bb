r"""How fast the live preview redraws, and how long it can freeze the GUI thread.

Two parts, each at 512^2 and 2048^2:

capability
    The widget follows a source that has a new raw/denoised pair at every poll (noisy
    Poisson frames and a float32 "denoised" twin, cycled): every timer tick renders both
    panes, on the widget's render worker as its timer does (``SN2N_SYNC=1``: on the GUI
    thread, as before). Reported: renders shown per second (the refresh rate the display
    can hold), the GUI thread's time per tick, and the longest gap between two ticks of a
    10 ms heartbeat QTimer on the GUI thread (the longest the GUI froze).
live
    The widget follows a real :class:`~sn2n_live.acquisition.LiveView` on DemoCamera in
    live mode (exposure 10 ms, ``startContinuousSequenceAcquisition``) with a real
    ``lite`` U-Net (random weights; the cost does not depend on them) on onnxruntime-cpu
    and on torch-cpu, whole frame: new pairs per second, the age of the frame on screen at
    every tick (p50/p95/max: the "fresh, not late" target), and the heartbeat's longest gap.

The renderer is whatever the widget picks (QImage offscreen; the GL path under a real X
server, e.g. ``QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1920x1080x24" python
benchmarks/preview_refresh.py``: without the variable the script picks offscreen).
Writes ``benchmarks/results/preview_refresh[_<renderer>].json``. Run it alone (2 cores).

    python benchmarks/preview_refresh.py            # ~2 min
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication

from sn2n_live.acquisition import LatestPair, LiveView, release_core
from sn2n_live.engine import build_denoiser
from sn2n_live.method import ModelPackage
from sn2n_live.method._unet import PRESETS
from sn2n_live.preview import DenoisePreviewWidget

RESULTS = Path(__file__).parent / "results"
WINDOW = (1600, 900)


class EndlessPairs:
    """A preview source with a new pair at every poll (what the display can keep up with)."""

    def __init__(self, side: int, n: int = 4) -> None:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:side, :side]
        clean = 100 + 400 * (np.sin(xx / 9.0) * np.cos(yy / 13.0) > 0.6)
        self.raw = [rng.poisson(clean).astype(np.uint16) for _ in range(n)]
        self.denoised = [clean.astype(np.float32) + i for i in range(n)]
        self.frame = 0

    def latest(self) -> LatestPair:
        """Return a new pair (a new frame number at every call)."""
        i = self.frame % len(self.raw)
        self.frame += 1
        return LatestPair(
            frame=self.frame,
            index={"t": self.frame},
            raw=self.raw[i],
            denoised=self.denoised[i],
            latency_ms=1.0,
            arrived=time.perf_counter(),
            fresh=True,
        )


def spin(seconds: float, on_tick: Any = None) -> list[float]:
    """Run the Qt event loop for ``seconds``; return the 10 ms heartbeat's tick times."""
    ticks: list[float] = []
    loop = QEventLoop()
    heartbeat = QTimer()
    heartbeat.setInterval(10)

    def beat() -> None:
        ticks.append(time.perf_counter())
        if on_tick is not None:
            on_tick()

    heartbeat.timeout.connect(beat)
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    heartbeat.start()
    loop.exec()
    heartbeat.stop()
    return ticks


def gaps_ms(ticks: list[float]) -> dict[str, float]:
    """Longest and p99 gap between heartbeat ticks, in ms."""
    gaps = np.diff(ticks) * 1e3 if len(ticks) > 1 else np.zeros(1)
    return {"max": round(float(gaps.max()), 1), "p99": round(float(np.percentile(gaps, 99)), 1)}


def capability(side: int, seconds: float) -> dict[str, Any]:
    """Measure renders per second and GUI gaps with a new pair at every poll."""
    widget = DenoisePreviewWidget(refresh_ms=int(os.environ.get("SN2N_REFRESH_MS", "100")))
    widget.resize(*WINDOW)
    widget.show()
    source = EndlessPairs(side)
    tick_s: list[float] = []

    def poll() -> None:
        t0 = time.perf_counter()
        # What the widget's timer does with a handler: render on the worker thread.
        widget.show_pair(source.latest(), None, background=os.environ.get("SN2N_SYNC") != "1")
        tick_s.append(time.perf_counter() - t0)

    # The widget's own timer, driving our source instead of a handler.
    widget.timer.timeout.disconnect()
    widget.timer.timeout.connect(poll)
    widget.timer.start()
    spin(1.0)  # warm-up: first paints, GL context
    shown: list[int] = []

    def count_renders() -> None:  # a new image in the raw pane: one render shown
        key = id(widget.raw_pane.rgba())
        if not shown or shown[-1] != key:
            shown.append(key)

    t0 = time.perf_counter()
    ticks = spin(seconds, count_renders)
    renders = len(shown) - 1
    out = {
        "renderer": widget.renderer,
        "refresh_ms": widget.timer.interval(),
        "render_thread": "GUI" if os.environ.get("SN2N_SYNC") == "1" else "worker",
        "renders_per_s": round(renders / (time.perf_counter() - t0), 2),
        "tick_ms_p50": round(1e3 * statistics.median(tick_s[-renders:]), 1),
        "tick_ms_max": round(1e3 * max(tick_s[-renders:]), 1),
        "gui_gap_ms": gaps_ms(ticks),
    }
    widget.timer.stop()
    widget.close()
    widget.deleteLater()
    QApplication.processEvents()
    return out


def live(side: int, engine: str, seconds: float) -> dict[str, Any]:
    """Measure a real LiveView on DemoCamera live mode, shown by the widget."""
    from sn2n_live.acquisition import create_demo_core

    core = create_demo_core()
    core.setProperty("Camera", "OnCameraCCDXSize", side)
    core.setProperty("Camera", "OnCameraCCDYSize", side)
    core.setExposure(10.0)
    denoiser = build_denoiser(ModelPackage.untrained(PRESETS["lite"]), engine=engine, tile=None)
    denoiser.denoise(np.zeros((1, side, side), np.uint16))  # build the session / warm up
    view = LiveView(core, denoiser).start()
    widget = DenoisePreviewWidget(view, provenance=denoiser.provenance)
    widget.resize(*WINDOW)
    widget.show()
    ages: list[float] = []

    def sample_age() -> None:
        age = widget.state.age_s()
        if age is not None:
            ages.append(age)

    age_timer = QTimer()
    age_timer.setInterval(widget.timer.interval())
    age_timer.timeout.connect(sample_age)
    core.startContinuousSequenceAcquisition(0)
    deadline = time.perf_counter() + 60.0
    while widget.state.pairs_shown < 2 and time.perf_counter() < deadline:
        spin(0.2)  # the first pairs (a 2048^2 frame takes seconds on this CPU)
    shown0 = widget.state.pairs_shown
    age_timer.start()
    t0 = time.perf_counter()
    # At least a few pairs long, so that the ages sample whole denoise cycles.
    per_pair = max(view.stats().latency_p50_ms or 0.0, 1.0) / 1e3
    ticks = spin(max(seconds, 4 * per_pair))
    elapsed = time.perf_counter() - t0
    age_timer.stop()
    stats = view.stats()
    core.stopSequenceAcquisition()
    out = {
        "renderer": widget.renderer,
        "engine": denoiser.provenance.get("engine"),
        "camera_fps": round(stats.camera_fps, 1),
        "pairs_per_s": round((widget.state.pairs_shown - shown0) / elapsed, 2),
        "latency_p50_ms": stats.latency_p50_ms,
        "shown_age_s": {
            "p50": round(float(np.percentile(ages, 50)), 3),
            "p95": round(float(np.percentile(ages, 95)), 3),
            "max": round(float(max(ages)), 3),
        },
        "frames_skipped": view.frames_skipped,
        "gui_gap_ms": gaps_ms(ticks),
    }
    widget.close()
    view.stop()
    widget.deleteLater()
    QApplication.processEvents()
    release_core(core)
    del core
    gc.collect()
    return out


def main() -> None:
    """Measure and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    import torch

    torch.set_num_threads(2)
    results: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "qt_platform": app.platformName(),
            "load_avg_at_start": os.getloadavg(),
        },
        "capability": {},
        "live": {},
    }
    for side in (512, 2048):
        results["capability"][str(side)] = r = capability(side, args.seconds)
        print(f"capability {side}^2: {r}", flush=True)
    for side in (512, 2048):
        for engine in ("onnxruntime-cpu", "torch-cpu"):
            results["live"][f"{side}_{engine}"] = r = live(side, engine, args.seconds)
            print(f"live {side}^2 {engine}: {r}", flush=True)
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    renderer = results["capability"]["512"]["renderer"]
    suffix = "" if renderer == "QImage" else "_gl"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"preview_refresh{suffix}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
