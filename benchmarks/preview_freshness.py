r"""How old the denoised frame a preview shows is, while the saved stream catches up.

A DemoCamera at 512^2 with a 10 ms exposure (~80 fps) runs a time-lapse under
:func:`live_denoise` with a ``lite`` package (random weights, CPU): the denoiser manages
a few frames a second, so the saved stream falls far behind. A preview polls
``handler.latest()`` at 10 Hz during the acquisition, as the viewer does; each poll
records the age of the pair it got (now minus the frame's arrival) and whether it came
from the preview lane or from the saving order. Both isolations on torch-cpu (a ``.sn2n``
path), then process isolation on onnxruntime-cpu (a factory, as ``sn2n-live acquire``
builds from a profile).

Writes ``benchmarks/results/preview_freshness.json``. Usage::

    python benchmarks/preview_freshness.py          # ~2 min on 2 CPU cores
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import useq

from acquisition_overhead import democam
from sn2n_live.acquisition import live_denoise, release_core
from sn2n_live.engine import build_denoiser
from sn2n_live.method import ModelPackage, save_package
from sn2n_live.method._unet import PRESETS

RESULTS = Path(__file__).parent / "results"


def watched_run(
    model: Any, out: Path, isolation: str | None, frames: int, engine: str
) -> dict[str, Any]:
    core = democam(512, exposure_ms=10.0)
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": frames})
    polls: list[tuple[float, bool, int]] = []
    stop = threading.Event()
    options = {} if isolation is None else {"isolation": isolation}
    try:
        with live_denoise(core, model=model, out=out, events=seq, **options) as handler:

            def poll() -> None:
                while not stop.wait(0.1):
                    pair = handler.latest()
                    stats = handler.stats()
                    if pair is not None and stats.state == "acquiring":
                        behind = stats.frames_received - stats.denoised_written
                        polls.append((pair.age_s() or 0.0, pair.fresh, behind))

            poller = threading.Thread(target=poll)
            poller.start()
            t0 = time.perf_counter()
            core.mda.run(seq)
            acquisition_s = time.perf_counter() - t0
            stop.set()
            poller.join()
            handler.cancel_catch_up()
        summary = handler.wait()
    finally:
        release_core(core)
    ages = np.array([a for a, _, _ in polls])
    return {
        "isolation": isolation or "default",
        "engine": engine,
        "frames": frames,
        "camera_fps": round(frames / acquisition_s, 1),
        "polls": len(polls),
        "fresh_fraction": round(sum(f for _, f, _ in polls) / max(1, len(polls)), 3),
        "age_s": {
            "p50": round(float(np.percentile(ages, 50)), 3),
            "p95": round(float(np.percentile(ages, 95)), 3),
            "max": round(float(ages.max()), 3),
        },
        "max_frames_behind": max(b for _, _, b in polls),
        "denoised_during_acquisition": statistics.median(b for _, _, b in polls),
        "status": summary.status,
    }


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sn2n-preview-bench-"))
    results: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_at_start": os.getloadavg(),
        },
        "model": "lite, random weights, CPU, whole frames",
        "runs": [],
    }
    try:
        package = ModelPackage.untrained(PRESETS["lite"])
        model = save_package(package, tmp / "lite.sn2n")
        # A .sn2n path runs on torch-cpu; a picklable factory picks the engine (what
        # `sn2n-live acquire` builds from a profile with engine = "auto": onnxruntime here).
        ort = functools.partial(build_denoiser, package, engine="onnxruntime-cpu", tile=None)
        for isolation, engine, what in (
            (None, "torch-cpu", model),
            ("thread", "torch-cpu", model),
            (None, "onnxruntime-cpu", ort),
        ):
            out = tmp / f"run-{isolation}-{engine}"
            run = watched_run(what, out, isolation, frames=600, engine=engine)
            results["runs"].append(run)
            print(run, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "preview_freshness.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
