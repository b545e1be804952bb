"""Regenerate the shipped pretrained ``lite`` model (``make pretrained``).

Trains the default ``twin`` recipe with the ``lite`` U-Net on a broad set of simulated
low-light frames from :mod:`sn2n_live.simulation`: every structure kind (filaments,
mitochondria, puncta, mixed), peak photon counts log-uniform in 3-300, PSF sigma 1.0-2.5 px,
background 0.5-3x the default, SIM (3 angles x 3 phases, random pattern orientation and
period) and widefield frames. Seeds start at 100000, away from the seeds the benchmarks and
the demo use (0-2999): the samples differ, but the image formation is the same simulator's,
so benchmark gains from this model are gains on the distribution it was trained on. The
data, seeds and this command are recorded in the package's provenance (``pretraining``).

Usage::

    python scripts/pretrain.py [--minutes 25] [--out src/sn2n_live/method/pretrained/lite.sn2n]
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sn2n_live.cli import TrainingBar
from sn2n_live.method import TrainingConfig, save_package, train
from sn2n_live.simulation import (
    DEFAULT_BACKGROUND_FRACTION,
    DEFAULT_PERIOD_PX,
    STRUCTURE_KINDS,
    SIMIllumination,
    simulate_sim_frames,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "src" / "sn2n_live" / "method" / "pretrained" / "lite.sn2n"
FIRST_SEED = 100_000
WIDEFIELD_FRAMES = 3  # per widefield sample: independent exposures of one structure


def sample_settings(index: int, rng: np.random.Generator) -> dict[str, Any]:
    """Draw one sample's imaging conditions (recorded in the provenance)."""
    psf = float(rng.uniform(1.0, 2.5))
    return {
        "seed": FIRST_SEED + index,
        "kind": STRUCTURE_KINDS[index % len(STRUCTURE_KINDS)],
        "modality": "sim" if index % 2 == 0 else "widefield",
        "photons": float(np.exp(rng.uniform(np.log(3.0), np.log(300.0)))),
        "psf_sigma_px": psf,
        "background_fraction": float(DEFAULT_BACKGROUND_FRACTION * rng.uniform(0.5, 3.0)),
        "orientation_deg": float(rng.uniform(0.0, 60.0)),
        # Keep the stripes inside the pass band of this PSF (period >= the default's scale).
        "period_px": float(DEFAULT_PERIOD_PX * psf / 1.5 * rng.uniform(1.0, 1.3)),
    }


def simulate_sample(settings: dict[str, Any], size: int) -> np.ndarray:
    """``(N, size, size)`` raw uint16 frames of one sample."""
    if settings["modality"] == "sim":
        illumination = SIMIllumination(
            period_px=settings["period_px"], orientation_deg=settings["orientation_deg"]
        )
        timepoints = 1
    else:
        illumination = SIMIllumination(n_angles=1, n_phases=1, modulation=0.0)
        timepoints = WIDEFIELD_FRAMES
    frames = simulate_sim_frames(
        (size, size),
        photons=settings["photons"],
        kind=settings["kind"],
        n_timepoints=timepoints,
        illumination=illumination,
        psf_sigma_px=settings["psf_sigma_px"],
        background_fraction=settings["background_fraction"],
        seed=settings["seed"],
    )
    return frames.raw.reshape(-1, size, size)


def main(argv: Sequence[str] | None = None) -> None:
    """Simulate the pretraining frames, train, and write the package."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=25.0, help="training budget")
    parser.add_argument("--samples", type=int, default=48, help="simulated samples")
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(FIRST_SEED)
    samples = [sample_settings(i, rng) for i in range(args.samples)]
    t0 = time.monotonic()
    frames = np.concatenate([simulate_sample(s, args.size) for s in samples])
    print(f"simulated {len(frames)} frames of {args.size}^2 in {time.monotonic() - t0:.0f} s")

    config = TrainingConfig(
        recipe="twin", preset="lite", epochs=1000, max_minutes=args.minutes, seed=0
    )
    with TrainingBar() as bar:
        package = train(frames, config, progress=bar)
    package = dataclasses.replace(
        package,
        provenance={
            **package.provenance,
            "name": "lite",
            "pretraining": {
                "command": shlex.join(["python", "scripts/pretrain.py", *sys.argv[1:]]),
                "simulator": "sn2n_live.simulation.simulate_sim_frames",
                "frame_size": args.size,
                "n_frames": len(frames),
                "samples": samples,
            },
        },
    )
    path = save_package(package, args.out)
    t = package.training
    print(
        f"wrote {path}: {t['steps']} steps, {t['epochs_completed']} epochs, best val loss "
        f"{t['best_val_loss']:.4g} (epoch {t['best_epoch']}), stopped: {t['stopped_reason']}"
    )


if __name__ == "__main__":
    main()
