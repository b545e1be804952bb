"""CPU throughput of the Adaptive-SN2N denoiser: frames/s per preset, frame size and tiling.

End to end through ``Denoiser.denoise`` (host uint16 frame in, float32 ADU frame out) on
the torch CPU runner with random-initialised weights (speed does not depend on training).
Tiles overlap by 50 % (each pixel is computed 4 times); ``whole`` runs the frame in one
pass (the ``global`` policy). Writes ``benchmarks/results/throughput.json``.

Usage: ``python benchmarks/throughput.py [--presets lite paper] [--sizes 256 512 1024]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sn2n_live import __version__
from sn2n_live.method import PRESETS, Denoiser, ModelPackage

RESULTS = Path(__file__).parent / "results"


def time_frames(denoiser: Denoiser, frame: np.ndarray, repeats: int) -> list[float]:
    denoiser.denoise(frame)  # warm-up: allocator, thread pool
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        denoiser.denoise(frame)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["lite", "paper"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--tiles", nargs="+", default=["64", "128", "256", "whole"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=20.0,
        help="fewer repeats when one frame takes longer than this / repeats",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    rows = []
    for preset in args.presets:
        for size in args.sizes:
            frame = rng.poisson(20, (size, size)).astype(np.uint16) + 100
            for tile in args.tiles:
                whole = tile == "whole"
                if not whole and int(tile) > size:
                    continue
                package = ModelPackage.untrained(
                    PRESETS[preset], mode="global" if whole else "per_patch"
                )
                denoiser = Denoiser(package, tile=None if whole else int(tile), batch_size=64)
                first = time_frames(denoiser, frame, 1)[0]
                repeats = max(1, min(args.repeats, int(args.budget_s / max(first, 1e-3))))
                seconds = time_frames(denoiser, frame, repeats) if repeats > 1 else [first]
                median = statistics.median(seconds)
                row = {
                    "preset": preset,
                    "size": size,
                    "tile": tile,
                    "repeats": len(seconds),
                    "median_s": median,
                    "fps": 1.0 / median,
                }
                rows.append(row)
                print(
                    f"{preset:5s} {size:5d}^2 tile {tile:>5s}: {1 / median:8.2f} frames/s "
                    f"({median * 1e3:.0f} ms, n={len(seconds)})",
                    flush=True,
                )
    result = {
        "benchmark": "throughput-cpu",
        "sn2n_live": __version__,
        "torch": torch.__version__,
        "device": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
