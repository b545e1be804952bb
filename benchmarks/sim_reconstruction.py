r"""How fast a SIM set reconstructs, and how long a calibration takes (CPU, and CUDA if any).

On the simulated microscope's data (``simulate_sim_frames``, low light), per size and
pattern layout: the median time of :class:`~sn2n_live.sim.WienerReconstructor` per set
with a saved calibration (the live case: the calibration is made once), its set-up time,
and the time of :func:`~sn2n_live.sim.estimate_calibration` on one set. Torch runs with
its default thread count (2 here). Writes ``benchmarks/results/sim_reconstruction.json``.
Run it alone (2 cores).

    python benchmarks/sim_reconstruction.py      # ~1 min
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from sn2n_live.sim import OTFModel, WienerReconstructor, estimate_calibration
from sn2n_live.simulation import SIMIllumination, simulate_sim_frames

RESULTS = Path(__file__).parent / "results"
TARGET_MS = 100.0  # a 512^2 3 x 3 set, this CPU, with a saved calibration


def _median_ms(call: Any, repeats: int) -> float:
    call()  # warm-up (allocations, FFT plans)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1e3)
    return round(statistics.median(times), 2)


def measure(size: int, n_phases: int, device: str, repeats: int) -> dict[str, Any]:
    frames = simulate_sim_frames(
        (size, size), photons=50, illumination=SIMIllumination(n_phases=n_phases), seed=0
    )
    raw = frames.raw[0].reshape(-1, size, size)
    otf = OTFModel.gaussian(frames.psf_sigma_px)
    started = time.perf_counter()
    calibration = estimate_calibration(raw, otf, n_phases=n_phases)
    calibrate_ms = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    reconstruct = WienerReconstructor(calibration, device=device)
    setup_ms = (time.perf_counter() - started) * 1e3
    tensor = torch.as_tensor(raw.astype("float32"))
    return {
        "size": size,
        "set": f"3x{n_phases}",
        "device": device,
        "reconstruct_ms_p50": _median_ms(lambda: reconstruct(raw), repeats),
        "reconstruct_from_tensor_ms_p50": _median_ms(lambda: reconstruct(tensor), repeats),
        "setup_ms": round(setup_ms, 1),
        "calibrate_ms": round(calibrate_ms, 1),
    }


def main() -> None:
    results: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_avg_at_start": os.getloadavg(),
        },
        "target_ms_512_3x3_cpu": TARGET_MS,
        "rows": [],
    }
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    for device in devices:
        for size, n_phases, repeats in ((256, 3, 15), (512, 3, 15), (512, 5, 11), (1024, 3, 7)):
            row = measure(size, n_phases, device, repeats)
            results["rows"].append(row)
            print(row)
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "sim_reconstruction.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
