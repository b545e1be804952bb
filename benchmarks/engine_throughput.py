r"""End-to-end denoising throughput per engine, precision, frame size and tiling.

Every measurement is one live-style call: a host ``uint16`` frame goes through
``Denoiser(package, tile=..., runner=engine).denoise`` and comes back as a host ``float32``
frame (normalization, tiling, inference, blending and any host<->device copies included).
For each configuration it reports frames/s, latency p50/p99, the network's conv FLOPs per
frame (counted from the layer shapes; tiling adds the overlap) and the achieved TFLOP/s;
on a GPU also the fraction of the device's dense peak for that precision.

It also runs the CPU comparison "lite at 512^2, our batched tile pipeline vs a plain
per-tile Python loop" (one 64-px tile at a time with stride 32 and Gaussian blending, as
the official Adaptive-SN2N inference does) and reports the speed-up.

Weights are random (timings do not depend on them); packages use ``global`` normalization
so whole-frame inference is allowed.

Writes ``benchmarks/results/engine_throughput-<device>.json`` and ``.png``.

Usage::

    python benchmarks/engine_throughput.py --quick            # small CPU subset (~5 min)
    python benchmarks/engine_throughput.py                    # full grid (GPU)
    python benchmarks/engine_throughput.py --presets lite --sizes 512 1024 \
        --tilings whole 64 --backends onnxruntime-cpu torch-cpu --precisions fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sn2n_live import __version__
from sn2n_live.engine import BACKENDS, BackendUnavailable, InputShapes, select_engine
from sn2n_live.method._denoiser import Denoiser
from sn2n_live.method._package import ModelPackage
from sn2n_live.method._tiling import gaussian_window, plan_tiles
from sn2n_live.method._unet import PRESETS, UNet, UNetConfig

RESULTS = Path(__file__).parent / "results"

# Dense (non-sparse) tensor-core peaks in TFLOP/s from NVIDIA's datasheets, by a substring
# of torch.cuda.get_device_name(); first match wins (so "A100" precedes "A10").
# fp32 is the CUDA-core (non-tensor) peak.
DEVICE_PEAKS_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"fp16": 989.4, "bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("H100 PCIe", {"fp16": 756.5, "bf16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    ("H100 NVL", {"fp16": 835.0, "bf16": 835.0, "tf32": 417.5, "fp32": 60.0}),
    ("H100", {"fp16": 989.4, "bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # SXM5
    ("A100", {"fp16": 312.0, "bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L40S", {"fp16": 362.1, "bf16": 362.1, "tf32": 183.0, "fp32": 91.6}),
    ("L4", {"fp16": 121.0, "bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    ("A10", {"fp16": 125.0, "bf16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    # GeForce: fp16 with fp32 accumulation (what cuDNN/TensorRT use) runs at half rate.
    ("RTX 4090", {"fp16": 165.2, "bf16": 165.2, "tf32": 82.6, "fp32": 82.6}),
]

QUICK = {
    "presets": ["lite", "paper"],
    "sizes": [512],
    "tilings": ["whole", "64", "128", "256"],
    "precisions": ["fp32", "bf16"],
    "repeats": 5,
    "max_seconds": 12.0,
}


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        if match:
            cpu = match.group(1).strip()
    return f"{cpu} ({torch.get_num_threads()} threads)"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def peak_tflops(gpu: str, precision: str, backend: str) -> float | None:
    """Dense peak for what the engine actually runs (torch fp32 convs use TF32 by default)."""
    kind = precision
    if precision == "fp32" and backend.startswith("torch") and torch.backends.cudnn.allow_tf32:
        kind = "tf32"
    for name, peaks in DEVICE_PEAKS_TFLOPS:
        if name in gpu:
            return peaks[kind]
    return None


def conv_macs(config: UNetConfig, height: int, width: int) -> int:
    """Multiply-accumulates of every convolution for one (1, 1, H, W) input (meta tensors)."""
    with torch.device("meta"):
        model = UNet(config).eval()
    total = 0

    def count(module: torch.nn.Conv2d, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * (module.in_channels // module.groups) * kernel

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(count)
    with torch.no_grad():
        model(torch.empty(1, 1, height, width, device="meta"))
    return total


def make_package(preset: str, seed: int = 0) -> ModelPackage:
    return ModelPackage.untrained(PRESETS[preset], seed=seed)


def make_frame(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    clean = 30 + 400 * (np.sin(40 * xx) * np.sin(31 * yy) > 0.6)
    return (rng.poisson(clean) + 100).astype(np.uint16)


def frame_macs(config: UNetConfig, size: int, tile: int | None) -> int:
    if tile is None:
        padded = size + (-size % config.multiple)
        return conv_macs(config, padded, padded)
    plan = plan_tiles((size, size), tile)
    return conv_macs(config, tile, tile) * plan.n_tiles


def time_calls(
    call: Callable[[], object], repeats: int, max_seconds: float
) -> tuple[list[float], float]:
    """Warm up once, then time up to ``repeats`` calls within ``max_seconds`` (at least 1)."""
    start = time.perf_counter()
    call()
    warmup = time.perf_counter() - start
    times: list[float] = []
    budget_end = time.perf_counter() + max_seconds
    while len(times) < repeats and (not times or time.perf_counter() < budget_end):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times, warmup


def summarize(times: list[float]) -> dict[str, float]:
    arr = np.asarray(times)
    return {
        "fps": float(len(arr) / arr.sum()),
        "latency_p50_ms": float(np.percentile(arr, 50) * 1e3),
        "latency_p99_ms": float(np.percentile(arr, 99) * 1e3),
        "n_timed": len(arr),
    }


def per_tile_loop(model: torch.nn.Module, frame: np.ndarray, tile: int) -> np.ndarray:
    """Official-style inference: min-max, bottom/right reflect pad, one tile per call."""
    x = frame.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / max(hi - lo, 1e-12)
    stride = tile // 2
    height, width = x.shape
    pad_h = (stride - (height - tile) % stride) % stride
    pad_w = (stride - (width - tile) % stride) % stride
    x = np.pad(x, ((0, pad_h), (0, pad_w)), mode="reflect")
    weight = gaussian_window(tile).numpy()
    acc = np.zeros_like(x)
    norm = np.zeros_like(x)
    with torch.no_grad():
        for top in range(0, x.shape[0] - tile + 1, stride):
            for left in range(0, x.shape[1] - tile + 1, stride):
                patch = torch.from_numpy(x[top : top + tile, left : left + tile].copy())
                out = model(patch[None, None])[0, 0].numpy()
                acc[top : top + tile, left : left + tile] += weight * out
                norm[top : top + tile, left : left + tile] += weight
    return (acc / norm)[:height, :width] * (hi - lo) + lo


def tile_shapes(size: int, tile: int | None, batch_size: int, multiple: int) -> InputShapes:
    if tile is None:
        return InputShapes.for_frames(size, size, multiple=multiple)
    return InputShapes.for_tiles(tile, batch_size)


def run_grid(args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for preset in args.presets:
        package = make_package(preset)
        config = package.unet
        for size in args.sizes:
            frame = make_frame(size)
            for tiling in args.tilings:
                tile = None if tiling == "whole" else int(tiling)
                if tile is not None and tile > size:
                    continue
                macs = frame_macs(config, size, tile)
                for backend in args.backends:
                    for precision in args.precisions:
                        row: dict[str, Any] = {
                            "preset": preset,
                            "size": size,
                            "tiling": tiling,
                            "backend": backend,
                            "precision": precision,
                            "gflop_per_frame": 2 * macs / 1e9,
                        }
                        shapes = tile_shapes(size, tile, args.batch_size, config.multiple)
                        try:
                            engine = select_engine(
                                package, backend, precision=precision, tile_shapes=shapes
                            )
                        except (BackendUnavailable, ValueError) as exc:
                            row["skipped"] = str(exc)
                            rows.append(row)
                            print(f"skip {preset} {size} {tiling} {backend} {precision}: {exc}")
                            continue
                        denoiser = Denoiser(
                            package, tile=tile, batch_size=args.batch_size, runner=engine
                        )
                        times, warmup = time_calls(
                            lambda d=denoiser, f=frame: d.denoise(f), args.repeats, args.max_seconds
                        )
                        row.update(summarize(times))
                        row["warmup_s"] = warmup
                        row["tflops_achieved"] = row["gflop_per_frame"] * row["fps"] / 1e3
                        if engine.device.type == "cuda":
                            peak = peak_tflops(device, precision, backend)
                            row["peak_tflops"] = peak
                            if peak:
                                row["fraction_of_peak"] = row["tflops_achieved"] / peak
                        rows.append(row)
                        print(
                            f"{preset:5s} {size:5d} {tiling:>5s} {backend:16s} {precision:4s} "
                            f"{row['fps']:9.2f} fps  p50 {row['latency_p50_ms']:9.1f} ms  "
                            f"p99 {row['latency_p99_ms']:9.1f} ms  "
                            f"{row['tflops_achieved']:.3f} TFLOP/s",
                            flush=True,
                        )
                        del engine, denoiser
    return rows


def run_loop_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """Time lite at 512^2, 64-px tiles: batched pipeline vs one tile per Python-loop call."""
    package = make_package("lite")
    frame = make_frame(512)
    model = package.build_model("cpu")
    loop_times, _ = time_calls(
        lambda: per_tile_loop(model, frame, 64), args.repeats, args.max_seconds
    )
    result: dict[str, Any] = {
        "preset": "lite",
        "size": 512,
        "tile": 64,
        "per_tile_loop": summarize(loop_times),
    }
    for backend in ("onnxruntime-cpu", "torch-cpu"):
        engine = select_engine(package, backend)
        denoiser = Denoiser(package, tile=64, batch_size=args.batch_size, runner=engine)
        times, _ = time_calls(
            lambda d=denoiser, f=frame: d.denoise(f), args.repeats, args.max_seconds
        )
        stats = summarize(times)
        stats["speedup_vs_loop"] = (
            result["per_tile_loop"]["latency_p50_ms"] / stats["latency_p50_ms"]
        )
        result[f"pipeline_{backend}"] = stats
        print(
            f"lite 512 tile 64: per-tile loop {result['per_tile_loop']['latency_p50_ms']:.0f} ms, "
            f"batched {backend} {stats['latency_p50_ms']:.0f} ms "
            f"-> {stats['speedup_vs_loop']:.2f}x",
            flush=True,
        )
    return result


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if "fps" in r]
    if not done:
        return
    labels = [
        f"{r['preset']} {r['size']}² {r['tiling']} {r['backend']} {r['precision']}" for r in done
    ]
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(done) + 1.5))
    colors = {"lite": "tab:blue", "paper": "tab:orange"}
    ax.barh(range(len(done)), [r["fps"] for r in done], color=[colors[r["preset"]] for r in done])
    ax.set_yticks(range(len(done)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("frames/s (end to end, uint16 host frame -> float32 host frame)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CPU subset (512^2 only)")
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=None)
    parser.add_argument("--sizes", nargs="+", type=int, default=None)
    parser.add_argument(
        "--tilings", nargs="+", default=None, help="'whole' and/or tile sizes (default: all)"
    )
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=None)
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "fp16", "bf16"], default=None)
    parser.add_argument("--batch-size", type=int, default=64, help="tiles per engine call")
    parser.add_argument("--repeats", type=int, default=None, help="timed frames per config")
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="time budget per config (>= 1 frame)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch/onnxruntime threads")
    parser.add_argument("--no-loop-comparison", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (PNG beside it)")
    args = parser.parse_args()

    defaults = {
        "presets": ["lite", "paper"],
        "sizes": [512, 1024, 2048],
        "tilings": ["whole", "64", "128", "256"],
        "precisions": ["fp32", "fp16", "bf16"],
        "repeats": 20,
        "max_seconds": 30.0,
    }
    if args.quick:
        defaults.update(QUICK)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.backends is None:
        # Every backend that can run here (unavailable ones are recorded as skipped anyway).
        args.backends = list(BACKENDS)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    device = device_name()
    print(f"device: {device}; torch {torch.__version__}; sn2n-live {__version__}", flush=True)
    started = time.perf_counter()
    # Other processes on a shared machine skew CPU timings: record the load around the run.
    load_start = os.getloadavg()[0]
    rows = run_grid(args, device)
    comparison = None
    if not args.no_loop_comparison:
        comparison = run_loop_comparison(args)
    report = {
        "device": device,
        "torch": torch.__version__,
        "sn2n_live": __version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "command": " ".join(["python benchmarks/engine_throughput.py", *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": time.perf_counter() - started,
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "cpu_count": os.cpu_count(),
        "results": rows,
        "loop_comparison": comparison,
    }
    out = args.out or RESULTS / f"engine_throughput-{slug(device)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    plot(rows, out.with_suffix(".png"), f"sn2n-live engines on {device}")
    print(f"wrote {out} ({report['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
