r"""Denoising fidelity of fp16 and bf16 inference against fp32 on a CUDA GPU.

Simulates the benchmark's SIM frames (``simulate_sim_frames((256, 256), photons=20)``, pilot
seed 0, test seed 1000, as in ``benchmarks/peers.py``), trains a ``lite`` model briefly on the
GPU, then denoises the nine test frames through ``build_denoiser(package,
engine="torch-cuda", precision=...)`` at fp32 (TF32 off: the reference), tf32 (fp32 with
cuDNN's TF32 convolutions, torch's default), fp16 and bf16. For each it reports the mean PSNR
against the noise-free ``frames.clean``, the difference from fp32 (target: within 0.1 dB)
and the largest and mean absolute differences from the fp32 output in ADU.

Without a CUDA device it prints the reason and exits 0 (writing ``{"skipped": ...}`` when
``--out`` is given); ``--allow-cpu`` runs a smoke test instead: a ~3 s CPU training and
torch-cpu inference (fp32, bf16; fp16 is recorded as skipped).

Writes ``benchmarks/results/precision_parity-<device>.json``.

Usage::

    python benchmarks/precision_parity.py                  # on a GPU machine (~1.5 min)
    python benchmarks/precision_parity.py --allow-cpu --out /tmp/parity.json   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sn2n_live import __version__
from sn2n_live.engine import BackendUnavailable, build_denoiser
from sn2n_live.method import TrainingConfig, train
from sn2n_live.simulation import simulate_sim_frames

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _metrics  # benchmarks/ is not a package
from engine_throughput import RESULTS, device_name, slug

TARGET_DB = 0.1  # |PSNR(low precision) - PSNR(fp32)| allowed
PILOT_SEED, TEST_SEED = 0, 1000


def stack(frames: np.ndarray) -> np.ndarray:
    """``(T, A, P, H, W)`` -> ``(N, H, W)``."""
    return frames.reshape(-1, *frames.shape[-2:])


def no_cuda_reason() -> str | None:
    """Why this process cannot run on a CUDA device, or None if it can."""
    if torch.cuda.is_available():
        return None
    cuda = torch.version.cuda
    build = "a CPU-only build" if cuda is None else f"built for CUDA {cuda}"
    return (
        f"no CUDA device: torch {torch.__version__} ({build}) "
        "reports torch.cuda.is_available() False"
    )


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Allow or forbid TF32 convolutions and matmuls inside the block (CUDA only)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def mean_psnr(estimate: np.ndarray, clean: np.ndarray) -> tuple[float, list[float]]:
    """Mean and per-frame PSNR (dB) of ``(N, H, W)`` frames against the noise-free truth."""
    per_frame = [_metrics.psnr(e, c) for e, c in zip(estimate, clean, strict=True)]
    return float(np.mean(per_frame)), per_frame


def run_variants(
    package: Any, raw: np.ndarray, clean: np.ndarray, *, engine: str, variants: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Denoise ``raw`` once per precision variant and score each against ``clean`` and fp32.

    Parameters
    ----------
    package : ModelPackage
        The trained model.
    raw, clean : numpy.ndarray
        ``(N, H, W)`` noisy test frames (ADU) and their noise-free expected ADU.
    engine : str
        ``"torch-cuda"`` or ``"torch-cpu"``.
    variants : sequence of str
        Precisions to run, ``"fp32"`` first (the reference); ``"tf32"`` is fp32 with TF32
        allowed, every other name is passed to ``build_denoiser`` as the precision.

    Returns
    -------
    dict
        Variant -> ``psnr_db``, ``psnr_per_frame``, ``seconds`` and, for every variant but
        fp32, ``delta_db``, ``max_abs_diff_adu``, ``mean_abs_diff_adu`` (and, for fp16 and
        bf16, ``within_target``); or ``skipped`` with the reason.
    """
    results: dict[str, dict[str, Any]] = {}
    reference: np.ndarray | None = None
    for variant in variants:
        precision = "fp32" if variant == "tf32" else variant
        try:
            denoiser = build_denoiser(package, engine=engine, precision=precision)
        except (BackendUnavailable, ValueError) as exc:
            results[variant] = {"skipped": str(exc)}
            print(f"{variant:5s} skipped: {exc}", flush=True)
            continue
        # The fp32 reference runs true fp32; "tf32" is what torch-cuda fp32 runs by default.
        with tf32(variant == "tf32"):
            denoiser.denoise(raw[:1])  # warm-up (cuDNN algorithm choice, allocator)
            start = time.perf_counter()
            out = np.asarray(denoiser.denoise(raw), np.float32)
            seconds = time.perf_counter() - start
        psnr, per_frame = mean_psnr(out, clean)
        row: dict[str, Any] = {"psnr_db": psnr, "psnr_per_frame": per_frame, "seconds": seconds}
        if reference is None:
            reference = out
        else:
            diff = np.abs(out.astype(np.float64) - reference)
            row["delta_db"] = psnr - results["fp32"]["psnr_db"]
            row["max_abs_diff_adu"] = float(diff.max())
            row["mean_abs_diff_adu"] = float(diff.mean())
            if variant in ("fp16", "bf16"):
                row["within_target"] = abs(row["delta_db"]) <= TARGET_DB
        results[variant] = row
        extra = (
            f"  Δ {row['delta_db']:+.4f} dB  max |Δ| {row['max_abs_diff_adu']:.3f} ADU"
            if "delta_db" in row
            else ""
        )
        print(f"{variant:5s} PSNR {psnr:7.3f} dB{extra}", flush=True)
        del denoiser
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--allow-cpu", action="store_true", help="without CUDA, run a short CPU smoke test"
    )
    parser.add_argument(
        "--minutes", type=float, default=None, help="training budget (default 1.0; CPU 0.05)"
    )
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels")
    parser.add_argument("--photons", type=float, default=20.0, help="peak photon count")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    reason = no_cuda_reason()
    if reason and not args.allow_cpu:
        print(f"skipped: {reason}")
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"skipped": reason}, indent=2))
        return
    cuda = reason is None
    device = "cuda" if cuda else "cpu"
    engine = "torch-cuda" if cuda else "torch-cpu"
    minutes = args.minutes if args.minutes is not None else (1.0 if cuda else 0.05)
    name = device_name()
    print(f"device: {name}; torch {torch.__version__}; sn2n-live {__version__}", flush=True)
    started = time.perf_counter()

    shape = (args.size, args.size)
    pilot = simulate_sim_frames(shape, photons=args.photons, seed=PILOT_SEED)
    test = simulate_sim_frames(shape, photons=args.photons, seed=TEST_SEED)
    raw, clean = stack(test.raw), stack(test.clean)

    config = TrainingConfig(preset="lite", max_minutes=minutes, device=device, seed=0)
    t0 = time.perf_counter()
    package = train(stack(pilot.raw), config)
    train_seconds = time.perf_counter() - t0
    print(f"trained lite on {device} for {train_seconds:.1f} s", flush=True)

    variants = ["fp32", "tf32", "fp16", "bf16"] if cuda else ["fp32", "fp16", "bf16"]
    results = run_variants(package, raw, clean, engine=engine, variants=variants)
    checked = [r["within_target"] for r in results.values() if "within_target" in r]
    raw_psnr, _ = mean_psnr(raw.astype(np.float32), clean)
    report = {
        "device": name,
        "torch": torch.__version__,
        "sn2n_live": __version__,
        "command": " ".join(["python benchmarks/precision_parity.py", *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "smoke_test": not cuda,
        "data": {
            "shape": list(shape),
            "photons": args.photons,
            "pilot_seed": PILOT_SEED,
            "test_seed": TEST_SEED,
            "n_frames": len(raw),
        },
        "training": {
            "preset": "lite",
            "max_minutes": minutes,
            "device": device,
            "train_seconds": train_seconds,
            "epochs_run": package.training.get("epochs_run"),
            "stopped_reason": package.training.get("stopped_reason"),
        },
        "engine": engine,
        "target_db": TARGET_DB,
        "raw_psnr_db": raw_psnr,
        "results": results,
        # True when every low precision that ran is within the target; None when none ran.
        "pass": all(checked) if checked else None,
        "wall_seconds": time.perf_counter() - started,
    }
    out = args.out or RESULTS / f"precision_parity-{slug(name)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"pass: {report['pass']}; wrote {out} ({report['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
