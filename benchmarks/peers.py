"""Adaptive-SN2N against the denoisers a user would pick instead, on simulated frames.

Every trained method sees only the same pilot frames (9 frames of one simulated sample)
and gets the same wall-clock budget, data preparation included. All methods are scored on
9 frames of a *different* sample (seed + 1000) against its noise-free expected ADU:

- ``ours:<name>``: every entry of :data:`OURS` (``TrainingConfig`` keyword arguments),
  trained with ``sn2n_live.method.train`` and applied with ``Denoiser(package).denoise``;
- ``n2v``: Noise2Void from CAREamics with its default configuration (2D, patch 64, batch
  16), as many epochs as the budget allows, predicted with 128-px tiles overlapping 48 px
  from its last checkpoint (CAREamics' default for N2V, which has no "best" epoch);
- ``bm3d``: BM3D on the generalized Anscombe transform of each frame (the camera's offset,
  gain and read noise; the noise sigma estimated from the stabilized frame, see
  ``_metrics.estimate_noise_sigma``), back through the exact unbiased inverse;
- ``gaussian``: a Gaussian filter whose sigma (0.5-3 px) is chosen on the ground truth,
  an optimistic oracle baseline;
- ``raw``: the noisy frames.

Modalities: ``sim`` (3 angles x 3 phases of one time point) and ``widefield`` (uniform
illumination, 9 time points of a sample without drift: the same structure, independent
noise). Metrics (``benchmarks/_metrics.py``): PSNR, SSIM, Otsu background false-positive
fraction, background bias (ADU), thin-structure recall, and inference ms per 512² frame.

Writes ``benchmarks/results/peers.json``, ``peers-<modality>.png`` and, with
``--write-docs``, the results table in ``docs/benchmarks.md``.

Usage (after ``make bench-install``; nothing else may run meanwhile)::

    python benchmarks/peers.py [--minutes 4] [--photons 5 20 100] [--modalities sim widefield]
    # a smoke test:
    python benchmarks/peers.py --minutes 0.1 --photons 20 --modalities widefield --size 128
        --timing-size 256 --results-dir /tmp/peers-smoke
    python benchmarks/peers.py --docs-only --write-docs   # re-render the table from the JSON
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, uniform_filter

from sn2n_live import __version__
from sn2n_live.method import Denoiser, TrainingConfig, initial_package, train
from sn2n_live.simulation import (
    CameraModel,
    SIMIllumination,
    SimulatedFrames,
    simulate_sim_frames,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _metrics  # benchmarks/ is not a package

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs" / "benchmarks.md"
STUBS = HERE / "_stubs"
TABLE_START = "<!-- peers-table:start -->"
TABLE_END = "<!-- peers-table:end -->"

# Our configurations: name -> TrainingConfig keyword arguments, applied on top of
# OURS_DEFAULTS. The budget (max_minutes) and the seed are always the run's own.
# "twin" is the default recipe (what `sn2n-live train` does); the "paper-*" entries are the
# published Adaptive-SN2N recipe under each normalization policy, with the batch of 8 that
# our CLI used for it before the twin recipe (more updates per minute on a CPU).
OURS: dict[str, dict[str, Any]] = {
    "twin": {},
    "paper-dataset": {"recipe": "paper", "policy": "dataset", "batch_size": 8},
    "paper-per_patch": {"recipe": "paper", "policy": "per_patch", "batch_size": 8},
    "paper-local": {"recipe": "paper", "policy": "local", "batch_size": 8},
    # Ablations of the twin recipe (docs/method.md): one ingredient reverted each.
    "twin-frame-inference": {"inference": "frame"},
    "twin-l1": {"loss": "l1"},
    "twin-sigmoid-clipped": {"head": "sigmoid", "scale": "min_clip"},
    "twin-lambda1": {"consistency_weight": 1.0},
    "twin-paper-optimizer": {
        "lr": 2e-4,
        "betas": (0.5, 0.999),
        "batch_size": 32,
        "schedule": "plateau",
    },
    "twin-fp32": {"autocast": "off"},
    "twin-compensated": {"compensate": True},
    # Fine-tuned from the shipped pretrained lite model (scripts/pretrain.py; trained on
    # this simulator's image formation with other samples and seeds than these).
    "twin-pretrained": {"init": "pretrained"},
    # The pretrained model applied as shipped: no training on the pilot at all.
    "pretrained-as-is": {"init": "pretrained", "train": False},
}
OURS_DEFAULTS: dict[str, Any] = {"preset": "lite", "patch": 64, "device": "cpu"}

PEERS = ("n2v", "bm3d")
MODALITIES = ("sim", "widefield")
WIDEFIELD = SIMIllumination(n_angles=1, n_phases=1, modulation=0.0)
N_FRAMES = 9  # pilot and test frames per condition
GAUSSIAN_SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
N2V_TILE, N2V_OVERLAP = 128, 48
LOAD_WARNING = 0.5


@dataclass
class MethodRun:
    """One method's output on the test frames, what its training did, and its predictor."""

    estimate: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    predict: Callable[[np.ndarray], np.ndarray] | None = None
    warmup: bool = True  # one untimed call before timing (lazy init, allocator)
    cleanup: Callable[[], None] | None = None


# -- data -------------------------------------------------------------------------------------


def simulate(modality: str, photons: float, size: int, seed: int) -> SimulatedFrames:
    """Nine frames of one sample: a SIM time point, or nine widefield time points."""
    if modality == "sim":
        return simulate_sim_frames((size, size), photons=photons, n_timepoints=1, seed=seed)
    if modality == "widefield":
        # No drift: nine exposures of the same structure with independent noise.
        return simulate_sim_frames(
            (size, size),
            photons=photons,
            n_timepoints=N_FRAMES,
            illumination=WIDEFIELD,
            drift_px_per_s=(0.0, 0.0),
            seed=seed,
        )
    raise ValueError(f"unknown modality {modality!r}; choose from {MODALITIES}")


def stack(frames: np.ndarray) -> np.ndarray:
    """``(T, A, P, H, W)`` -> ``(N, H, W)``."""
    return frames.reshape(-1, *frames.shape[-2:])


# -- methods ----------------------------------------------------------------------------------


def run_ours(
    name: str, pilot: np.ndarray, test: np.ndarray, *, minutes: float, seed: int
) -> MethodRun:
    """Train ``OURS[name]`` on the pilot frames within the budget and denoise the test frames."""
    kwargs = {**OURS_DEFAULTS, **OURS[name], "max_minutes": minutes, "seed": seed}
    init = initial_package(kwargs.pop("init", "scratch"))
    t0 = time.monotonic()
    trained = kwargs.pop("train", True)
    if trained:
        package = train(pilot, TrainingConfig(**kwargs), init=init)
    else:
        assert init is not None, f"OURS[{name!r}] applies a package without training: set init"
        package = init
    train_s = time.monotonic() - t0
    denoiser = Denoiser(package)
    # An untrained entry reports no pilot training (not the pretraining's statistics).
    t = package.training if trained else {}
    info = {
        "config": {**OURS_DEFAULTS, **OURS[name]},
        "resolved_mode": package.resolved_mode,
        "train_seconds": round(train_s, 2),
        "epochs_run": t.get("epochs_run"),
        "epochs_completed": t.get("epochs_completed"),
        "steps_per_epoch": t.get("steps_per_epoch"),
        "steps": t.get("steps"),
        "best_epoch": t.get("best_epoch"),
        "stopped_reason": t.get("stopped_reason"),
    }
    return MethodRun(denoiser.denoise(test), info, denoiser.denoise)


def import_careamics() -> ModuleType:
    """Import careamics, giving it the torchvision stub when no torchvision is installed.

    torchmetrics and lightning probe for torchvision when they are imported and cache the
    answer, so they are imported first (they must see none: with the stub they would try
    to use it); only then does careamics get ``benchmarks/_stubs`` on ``sys.path``.
    """
    if importlib.util.find_spec("torchvision") is None:
        import lightning.pytorch  # noqa: F401
        import torchmetrics  # noqa: F401

        for module in ("torchmetrics.utilities.imports", "lightning.pytorch.utilities.imports"):
            probe = getattr(sys.modules.get(module), "_TORCHVISION_AVAILABLE", None)
            if probe is not None:
                bool(probe)  # evaluate (and cache) the probe before the stub is visible
        if str(STUBS) not in sys.path:
            sys.path.append(str(STUBS))
    import careamics

    return careamics


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "careamics"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"lightning(\..*)?$")
    warnings.filterwarnings("ignore", module=r"careamics(\..*)?$")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def run_n2v(
    pilot: np.ndarray, test: np.ndarray, *, minutes: float, seed: int, batch_size: int
) -> MethodRun:
    """Train CAREamics N2V (its defaults) on the pilot frames within the budget; predict."""
    started = time.monotonic()  # the budget includes configuration and data preparation
    deadline = started + 60.0 * minutes
    _quiet_lightning()
    from careamics import CAREamist
    from careamics.config import create_advanced_n2v_config
    from lightning.pytorch import Callback

    class Deadline(Callback):
        """Stop after the step that passes the wall-clock deadline (as ours does)."""

        def on_train_batch_end(self, trainer: Any, *args: object, **kwargs: object) -> None:
            if time.monotonic() > deadline:
                trainer.should_stop = True

    # create_n2v_config's defaults, plus a seed; the epoch count is only an upper bound.
    config = create_advanced_n2v_config(
        experiment_name="peers_n2v",
        data_type="array",
        axes="SYX",
        patch_size=[64, 64],
        batch_size=batch_size,
        num_epochs=100_000,
        seed=seed + 1,  # careamics wants a positive seed
    )
    work_dir = Path(tempfile.mkdtemp(prefix="peers-n2v-"))
    careamist = CAREamist(
        config, work_dir=work_dir, callbacks=[Deadline()], enable_progress_bar=False
    )
    careamist.train(train_data=pilot.astype(np.float32))
    train_s = time.monotonic() - started
    trainer = careamist.trainer

    def predict(frames: np.ndarray) -> np.ndarray:
        arr = np.asarray(frames, np.float32)
        axes = "YX" if arr.ndim == 2 else "SYX"
        out, _ = careamist.predict(
            arr,
            axes=axes,
            tile_size=(N2V_TILE, N2V_TILE),
            tile_overlap=(N2V_OVERLAP, N2V_OVERLAP),
        )
        return np.asarray(out, np.float32).reshape(arr.shape)

    info = {
        "config": "careamics create_n2v_config defaults (2D, patch 64) + seed",
        "batch_size": batch_size,
        "train_seconds": round(train_s, 2),
        "steps": int(trainer.global_step),
        "epochs_run": int(trainer.current_epoch),
        "best_epoch": None,  # N2V has no validation-selected epoch; it predicts from the last
        "tile": N2V_TILE,
        "tile_overlap": N2V_OVERLAP,
    }
    return MethodRun(
        predict(test), info, predict, cleanup=lambda: shutil.rmtree(work_dir, ignore_errors=True)
    )


def bm3d_denoise(frames: np.ndarray, camera: CameraModel) -> tuple[np.ndarray, list[float]]:
    """BM3D of each frame in the GAT domain; returns the ADU estimates and the sigmas used."""
    import bm3d

    gain = camera.gain_adu_per_e
    # Read noise in ADU plus the ADC's quantization noise (1/12 ADU²).
    read_adu = math.hypot(camera.read_noise_e * gain, math.sqrt(1.0 / 12.0))
    vst = {"offset_adu": camera.offset_adu, "gain_adu_per_e": gain, "read_noise_adu": read_adu}
    arr = np.asarray(frames)
    flat = arr.reshape(-1, *arr.shape[-2:])
    out = np.empty(flat.shape, np.float32)
    sigmas = []
    for i, frame in enumerate(flat):
        stab = _metrics.gat_forward(frame, **vst)
        # ~1 if the camera model holds; estimated so a wrong model is not hidden.
        sigma = _metrics.estimate_noise_sigma(stab)
        sigmas.append(sigma)
        out[i] = _metrics.gat_inverse(bm3d.bm3d(stab, sigma_psd=sigma), **vst)
    return out.reshape(arr.shape), sigmas


def run_bm3d(test: np.ndarray, camera: CameraModel) -> MethodRun:
    """BM3D with the GAT on the test frames (nothing to train)."""
    t0 = time.monotonic()
    estimate, sigmas = bm3d_denoise(test, camera)
    info = {
        "vst": "generalized Anscombe (camera offset, gain, read noise + quantization)",
        "inverse": "closed-form exact unbiased (Makitalo & Foi 2013)",
        "sigma_estimate": "MAD of Haar diagonal details of the stabilized frame",
        "sigma_mean": round(float(np.mean(sigmas)), 4),
        "seconds_per_test_frame": round((time.monotonic() - t0) / len(test), 3),
    }
    return MethodRun(estimate, info, lambda f: bm3d_denoise(f, camera)[0], warmup=False)


def run_gaussian(test: np.ndarray, clean: np.ndarray) -> MethodRun:
    """Gaussian filter with the sigma that maximizes PSNR on the ground truth (an oracle)."""

    def blur(frames: np.ndarray, sigma: float) -> np.ndarray:
        arr = np.asarray(frames, np.float32)
        return gaussian_filter(arr, (0,) * (arr.ndim - 2) + (sigma, sigma))

    def mean_psnr(sigma: float) -> float:
        return float(
            np.mean([_metrics.psnr(e, c) for e, c in zip(blur(test, sigma), clean, strict=True)])
        )

    best = max(GAUSSIAN_SIGMAS, key=mean_psnr)  # oracle: chosen on the ground truth
    return MethodRun(blur(test, best), {"sigma_px": best, "oracle": True}, lambda f: blur(f, best))


def time_predict(run: MethodRun, frame: np.ndarray, repeats: int) -> float | None:
    """Median milliseconds of ``run.predict`` on one frame (after a warm-up call)."""
    if run.predict is None:
        return None
    if run.warmup:
        run.predict(frame)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        run.predict(frame)
        times.append(1e3 * (time.perf_counter() - t0))
    return round(statistics.median(times), 1)


# -- one condition ----------------------------------------------------------------------------


def masks(frames: SimulatedFrames) -> tuple[np.ndarray, np.ndarray]:
    """Return the simulator's ground-truth background and thin-structure masks (bool H, W)."""
    return np.asarray(frames.background_mask, bool), np.asarray(frames.thin_mask, bool)


def run_condition(
    modality: str, photons: float, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Run every method on one modality and light level.

    Returns
    -------
    tuple
        The JSON-ready result, the first test frame of each method (for the panels), and
        the ``(background, thin)`` masks.
    """
    size = args.size
    pilot = simulate(modality, photons, size, args.seed)
    test = simulate(modality, photons, size, args.seed + 1000)
    timing = simulate(modality, photons, args.timing_size, args.seed + 2000)
    train_frames = stack(pilot.raw)
    raw = stack(test.raw)
    clean = stack(test.clean)
    timing_frame = stack(timing.raw)[0]
    background, thin = masks(test)
    minutes = args.minutes

    runners: dict[str, Callable[[], MethodRun]] = {
        "raw": lambda: MethodRun(raw.astype(np.float32), {}, lambda f: f, warmup=False),
        "gaussian": lambda: run_gaussian(raw, clean),
    }
    if "bm3d" not in args.skip_peers:
        runners["bm3d"] = lambda: run_bm3d(raw, test.camera)
    if "n2v" not in args.skip_peers:
        runners["n2v"] = lambda: run_n2v(
            train_frames, raw, minutes=minutes, seed=args.seed, batch_size=args.n2v_batch_size
        )
    for name in args.ours:
        runners[f"ours:{name}"] = lambda name=name: run_ours(
            name, train_frames, raw, minutes=minutes, seed=args.seed
        )

    result: dict[str, Any] = {
        "photons": photons,
        "n_train_frames": len(train_frames),
        "n_test_frames": len(raw),
        "background_fraction": round(float(background.mean()), 4),
        "thin_fraction": round(float(thin.mean()), 4),
        "methods": {},
    }
    examples = {"clean": clean[0]}
    for name, runner in runners.items():
        t0 = time.monotonic()
        run = runner()
        try:
            scores = _metrics.score_frames(run.estimate, clean, background, thin)
            infer_ms = time_predict(run, timing_frame, args.timing_repeats)
        finally:
            if run.cleanup is not None:
                run.cleanup()
        entry = {
            **{k: round(v, 5) for k, v in scores.items()},
            f"infer_ms_{args.timing_size}": infer_ms,
            **run.info,
            "method_seconds": round(time.monotonic() - t0, 1),
        }
        result["methods"][name] = entry
        examples[name] = np.asarray(run.estimate[0], np.float32)
        print(f"  {modality} photons={photons:g} {name:14s} {_summary(entry, args.timing_size)}")
    return result, examples, (background, thin)


def _summary(entry: dict[str, Any], timing_size: int) -> str:
    parts = [
        f"PSNR {entry['psnr_db']:.2f}",
        f"SSIM {entry['ssim']:.3f}",
        f"FP {entry['background_false_positive']:.3f}",
        f"bias {entry['background_bias_adu']:+.2f}",
        f"thin {entry['thin_recall']:.3f}",
        f"{entry[f'infer_ms_{timing_size}']} ms/{timing_size}²",
    ]
    if "steps" in entry:
        parts.append(f"{entry['steps']} steps in {entry['train_seconds']} s")
    return ", ".join(parts)


# -- outputs ----------------------------------------------------------------------------------


def _crop_origin(thin: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left corner of the ``side``-px window holding the most thin-structure pixels."""
    density = uniform_filter(thin.astype(np.float32), side, mode="constant")
    h = side // 2
    inner = density[h : thin.shape[0] - side + h + 1, h : thin.shape[1] - side + h + 1]
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(y), int(x)


def plot_modality(
    modality: str,
    levels: list[tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]],
    path: Path,
) -> None:
    """Rows: light levels (full frame, then a zoomed crop); columns: clean and each method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = list(levels[0][1])
    n_rows = 2 * len(levels)
    fig, axes = plt.subplots(
        n_rows, len(columns), figsize=(2.1 * len(columns), 2.2 * n_rows), squeeze=False
    )
    for i, (result, examples, thin) in enumerate(levels):
        ref = examples["clean"]
        lo, hi = np.percentile(ref, (0.5, 99.8))  # one contrast per light level
        side = max(16, ref.shape[0] // 4)
        y, x = _crop_origin(thin, side)
        for j, name in enumerate(columns):
            image = examples[name]
            for k, view in enumerate((image, image[y : y + side, x : x + side])):
                ax = axes[2 * i + k, j]
                ax.imshow(view, cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
            title = name
            if name in result["methods"]:
                m = result["methods"][name]
                title += f"\n{m['psnr_db']:.1f} dB  thin {m['thin_recall']:.2f}"
            axes[2 * i, j].set_title(title, fontsize=7)
            if j == 0:
                axes[2 * i, 0].add_patch(
                    plt.Rectangle((x, y), side, side, fill=False, edgecolor="cyan", lw=0.8)
                )
        axes[2 * i, 0].set_ylabel(f"{result['photons']:g} photons", fontsize=8)
        axes[2 * i + 1, 0].set_ylabel("crop", fontsize=8)
    fig.suptitle(f"peers, {modality}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_table(report: dict[str, Any]) -> str:
    """Markdown tables (one per modality) of a ``peers.json`` report."""
    settings = report["settings"]
    ts = settings["timing_size"]
    load = report["load_average"]
    end = f"{load['end'][0]:.2f}" if load.get("end") else "n/a (interrupted)"
    lines = [
        f"Run {report['created']} on {report['machine']['description']}; budget "
        f"{settings['minutes']:g} min per trained method, {settings['size']}² frames, seed "
        f"{settings['seed']}; load average {load['start'][0]:.2f} at the start, "
        f"{end} at the end. Versions: "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
        + ".",
        "",
    ]
    header = (
        f"| photons | method | PSNR dB | SSIM | bg FP | bg bias ADU | thin recall | "
        f"ms/{ts}² | train s | steps |"
    )
    for modality, levels in report["results"].items():
        lines += [f"**{modality}**", "", header, "|" + "---|" * 10]
        for level in levels.values():
            for name, m in level["methods"].items():
                lines.append(
                    "| {p:g} | {n} | {psnr:.2f} | {ssim:.3f} | {fp:.3f} | {bias:+.2f} | "
                    "{thin:.3f} | {ms} | {tr} | {st} |".format(
                        p=level["photons"],
                        n=name,
                        psnr=m["psnr_db"],
                        ssim=m["ssim"],
                        fp=m["background_false_positive"],
                        bias=m["background_bias_adu"],
                        thin=m["thin_recall"],
                        ms=_fmt(m.get(f"infer_ms_{ts}")),
                        tr=_fmt(m.get("train_seconds")),
                        st=_fmt(m.get("steps")),
                    )
                )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return str(value)


def write_docs(path: Path, table: str) -> None:
    """Replace the text between the table markers of ``path`` with ``table``."""
    text = path.read_text()
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise SystemExit(f"{path} lacks the markers {TABLE_START} ... {TABLE_END}")
    head = text[: start + len(TABLE_START)]
    path.write_text(f"{head}\n{table}{text[end:]}")


# -- main -------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers."""
    out = {
        "sn2n_live": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("careamics", "lightning", "bm3d", "scikit-image"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def check_peers(skip_peers: Sequence[str]) -> None:
    """Refuse to start when a peer that is not skipped cannot be imported."""
    missing = []
    if "bm3d" not in skip_peers:
        try:
            import bm3d  # noqa: F401
        except ImportError as exc:
            missing.append(f"bm3d ({exc})")
    if "n2v" not in skip_peers:
        try:
            import_careamics()
        except ImportError as exc:
            missing.append(f"careamics ({exc})")
    if missing:
        raise SystemExit(
            "peers.py: cannot import " + ", ".join(missing) + ".\n"
            "Install the peers with `make bench-install`, or leave them out with "
            "`--skip-peers n2v bm3d`."
        )


def self_test() -> None:
    """Check the installed peers: N2V trains and predicts on a tiny array, BM3D runs.

    ``make bench-install`` ends with this; it takes about half a minute on two cores.
    """
    check_peers([])
    camera = CameraModel()
    rng = np.random.default_rng(0)
    electrons = rng.poisson(20.0, (4, 128, 128)) + rng.normal(
        0.0, camera.read_noise_e, (4, 128, 128)
    )
    frames = np.round(camera.offset_adu + camera.gain_adu_per_e * electrons).astype(np.uint16)
    expected = camera.offset_adu + 20.0 * camera.gain_adu_per_e

    t0 = time.monotonic()
    n2v = run_n2v(frames, frames[:1], minutes=0.1, seed=0, batch_size=4)
    try:
        shape_ok = n2v.estimate.shape == (1, 128, 128) and np.isfinite(n2v.estimate).all()
        level = float(n2v.estimate.mean())
    finally:
        if n2v.cleanup is not None:
            n2v.cleanup()
    print(
        f"n2v: {n2v.info['steps']} steps, {time.monotonic() - t0:.1f} s, output mean "
        f"{level:.1f} ADU (flat field {expected:.1f})"
    )
    if not shape_ok or abs(level - expected) > 5.0:
        raise SystemExit("peers self-test: N2V output has the wrong shape, NaNs or units")

    t0 = time.monotonic()
    out, sigmas = bm3d_denoise(frames[:1], camera)
    level = float(out.mean())
    print(
        f"bm3d: {time.monotonic() - t0:.1f} s per 128² frame, sigma {sigmas[0]:.3f} after "
        f"the GAT, output mean {level:.2f} ADU (flat field {expected:.1f})"
    )
    if abs(level - expected) > 0.5 or not 0.8 < sigmas[0] < 1.2:
        raise SystemExit("peers self-test: BM3D with the GAT is biased or mis-stabilized")
    print("peers self-test passed")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--photons", type=float, nargs="+", default=[5.0, 20.0, 100.0])
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES))
    parser.add_argument("--size", type=int, default=256, help="frame side (pixels)")
    parser.add_argument(
        "--minutes", type=float, default=4.0, help="wall-clock budget per trained method"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ours", nargs="+", choices=sorted(OURS), default=list(OURS), help="OURS entries to run"
    )
    parser.add_argument("--skip-peers", nargs="*", choices=PEERS, default=[])
    parser.add_argument("--n2v-batch-size", type=int, default=16)
    parser.add_argument("--timing-size", type=int, default=512, help="frame side for timing")
    parser.add_argument("--timing-repeats", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--docs-path", type=Path, default=DOCS)
    parser.add_argument(
        "--write-docs", action="store_true", help="render the results table into --docs-path"
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="check the installed peers on a tiny array and exit (make bench-install)",
    )
    parser.add_argument(
        "--docs-only",
        action="store_true",
        help="run nothing: render the table from <results-dir>/peers.json",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the comparison, or the self-test, or re-render the docs table."""
    args = parse_args(argv)
    json_path = args.results_dir / "peers.json"
    if args.self_test:
        self_test()
        return
    if args.docs_only:
        table = render_table(json.loads(json_path.read_text()))
        print(table)
        if args.write_docs:
            write_docs(args.docs_path, table)
        return

    check_peers(args.skip_peers)
    load_start = os.getloadavg()
    print(f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    if load_start[0] > LOAD_WARNING:
        print(
            f"WARNING: load average {load_start[0]:.2f} > {LOAD_WARNING}: something else is "
            "running; timings and budgets will not be comparable to a quiet machine.",
            file=sys.stderr,
        )
    args.results_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "peers",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "ours_configs": {n: {**OURS_DEFAULTS, **OURS[n]} for n in args.ours},
            "n_frames": N_FRAMES,
            "gaussian_sigmas": GAUSSIAN_SIGMAS,
        },
        "machine": {
            "description": f"{platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch threads {torch.get_num_threads()}",
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
        },
        "versions": versions(),
        "load_average": {"start": list(load_start), "end": None},
        "results": {},
    }
    for modality in args.modalities:
        levels = []
        report["results"][modality] = {}
        for photons in args.photons:
            print(f"{modality}, peak photons {photons:g}")
            result, examples, (_, thin) = run_condition(modality, photons, args)
            report["results"][modality][f"{photons:g}"] = result
            levels.append((result, examples, thin))
            # Saved after every condition so an interrupted run keeps what it measured.
            json_path.write_text(json.dumps(report, indent=2))
        plot_modality(modality, levels, args.results_dir / f"peers-{modality}.png")
    report["load_average"]["end"] = list(os.getloadavg())
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    json_path.write_text(json.dumps(report, indent=2))
    table = render_table(report)
    print(table)
    if args.write_docs:
        write_docs(args.docs_path, table)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
