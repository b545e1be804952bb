"""PSNR against training minutes: how each trained method's fidelity grows with its budget.

One modality and light level of ``benchmarks/peers.py`` (same simulator, pilot seed, test
seed and metrics), each trained method run at every budget in ``--minutes``; BM3D and the
oracle Gaussian (no training) are drawn as horizontal lines. Shows where a target such as
"N2V + 1 dB" stands against the budget, and what a pretrained start buys.

Writes ``benchmarks/results/frontier-<modality>-<photons>.json`` and ``.png``.

Usage (after ``make bench-install``; nothing else may run meanwhile)::

    python benchmarks/frontier.py [--modality sim] [--photons 20] [--minutes 0.5 1 2 4]
        [--methods twin twin-pretrained n2v]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _metrics
import peers

METRICS = ("psnr_db", "ssim", "background_false_positive", "background_bias_adu", "thin_recall")


def run_budget(method: str, minutes: float, data: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train ``method`` for ``minutes`` on the pilot frames and score it on the test frames."""
    if method == "n2v":
        run = peers.run_n2v(data["pilot"], data["raw"], minutes=minutes, seed=seed, batch_size=16)
    else:
        run = peers.run_ours(method, data["pilot"], data["raw"], minutes=minutes, seed=seed)
    try:
        scores = _metrics.score_frames(run.estimate, data["clean"], *data["masks"])
    finally:
        if run.cleanup is not None:
            run.cleanup()
    info = {k: run.info.get(k) for k in ("steps", "epochs_run", "train_seconds")}
    return {**{k: round(scores[k], 5) for k in METRICS}, **info}


def plot(report: dict[str, Any], path: Path) -> None:
    """PSNR and SSIM against minutes, one line per trained method, references flat."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in zip(axes, ("psnr_db", "ssim"), ("PSNR (dB)", "SSIM"), strict=True):
        for method, by_minutes in report["trained"].items():
            minutes = sorted(by_minutes, key=float)
            ax.plot(
                [float(m) for m in minutes],
                [by_minutes[m][metric] for m in minutes],
                marker="o",
                label=method,
            )
        for name, scores in report["untrained"].items():
            ax.axhline(scores[metric], linestyle="--", linewidth=1, label=name, color="grey")
            ax.annotate(name, (0.0, scores[metric]), xycoords=("axes fraction", "data"))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training budget (minutes, 2-core CPU)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    settings = report["settings"]
    fig.suptitle(f"{settings['modality']}, {settings['photons']:g} peak photons, 256² frames")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    """Run every method at every budget, then save the JSON and the plot."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--modality", choices=peers.MODALITIES, default="sim")
    parser.add_argument("--photons", type=float, default=20.0)
    parser.add_argument("--minutes", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["twin", "twin-pretrained", "n2v"],
        help="OURS entries of peers.py, or n2v",
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-bm3d", action="store_true")
    parser.add_argument("--results-dir", type=Path, default=peers.RESULTS)
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m != "n2v" and m not in peers.OURS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose n2v or from {sorted(peers.OURS)}")
    peers.check_peers([] if "n2v" in args.methods else ["n2v"])

    pilot = peers.simulate(args.modality, args.photons, args.size, args.seed)
    test = peers.simulate(args.modality, args.photons, args.size, args.seed + 1000)
    data = {
        "pilot": peers.stack(pilot.raw),
        "raw": peers.stack(test.raw),
        "clean": peers.stack(test.clean),
        "masks": peers.masks(test),
    }
    stem = f"frontier-{args.modality}-{args.photons:g}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "frontier",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "load_average": {"start": list(os.getloadavg()), "end": None},
        "versions": peers.versions(),
        "untrained": {},
        "trained": {},
    }
    print(f"load average {report['load_average']['start'][0]:.2f}")
    references = {"gaussian (oracle)": lambda: peers.run_gaussian(data["raw"], data["clean"])}
    if not args.skip_bm3d:
        references["bm3d"] = lambda: peers.run_bm3d(data["raw"], test.camera)
    for name, runner in references.items():
        scores = _metrics.score_frames(runner().estimate, data["clean"], *data["masks"])
        report["untrained"][name] = {k: round(scores[k], 5) for k in METRICS}
        print(f"{name:24s} PSNR {scores['psnr_db']:.2f}")
    json_path = args.results_dir / f"{stem}.json"
    started = time.monotonic()
    for method in args.methods:
        report["trained"][method] = {}
        for minutes in args.minutes:
            entry = run_budget(method, minutes, data, args.seed)
            report["trained"][method][f"{minutes:g}"] = entry
            print(
                f"{method:24s} {minutes:4g} min  PSNR {entry['psnr_db']:.2f}  SSIM "
                f"{entry['ssim']:.3f}  steps {entry['steps']}"
            )
            json_path.write_text(json.dumps(report, indent=2))  # kept if interrupted
    report["load_average"]["end"] = list(os.getloadavg())
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    json_path.write_text(json.dumps(report, indent=2))
    plot(report, args.results_dir / f"{stem}.png")
    print(f"wrote {json_path} and {stem}.png")


if __name__ == "__main__":
    main()
