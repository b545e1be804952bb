"""The demo's picture before and after the twin recipe, for docs/method.md.

On the simulated SIM microscope of ``make demo`` (profile ``demo-sim``): acquires the demo's
pilot (2 SIM sets) and one more SIM set of the same sample, trains the former default (the
published recipe, ``dataset`` policy, batches of 8), today's default (the ``twin`` recipe
from scratch) and the twin recipe fine-tuned from the shipped pretrained model, each with
the demo's settings and budget, and plots the mean of the 9 patterns of the extra set for
raw and each model, with a zoom.

Usage (nothing else may run meanwhile)::

    python scripts/demo_before_after.py [--minutes 1] [--out docs/images/demo-before-after.png]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sn2n_live.acquisition import acquire_pilot
from sn2n_live.io import read_frames
from sn2n_live.method import Denoiser, TrainingConfig, initial_package, train
from sn2n_live.profiles import load_profile

ROOT = Path(__file__).resolve().parent.parent
# The demo's own training settings (sn2n_live._demo.run_demo).
DEMO = {"preset": "lite", "policy": "dataset", "patch": 64, "epochs": 20, "patience": 5}
BEFORE = {"recipe": "paper", "batch_size": 8}
ZOOM = (slice(160, 288), slice(160, 288))


def main(argv: Sequence[str] | None = None) -> None:
    """Acquire, train both recipes, denoise the extra SIM set and save the figure."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="training budget of each")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/demo-before-after.png")
    args = parser.parse_args(argv)

    profile = load_profile("demo-sim")
    with tempfile.TemporaryDirectory() as tmp:
        pilot = read_frames(acquire_pilot(profile, Path(tmp) / "pilot.ome.tiff"))
        test = read_frames(acquire_pilot(profile, Path(tmp) / "test.ome.tiff", timepoints=1))
    before = train(pilot, TrainingConfig(**DEMO, **BEFORE, max_minutes=args.minutes))
    after = train(pilot, TrainingConfig(**DEMO, max_minutes=args.minutes))
    tuned = train(
        pilot,
        TrainingConfig(**DEMO, max_minutes=args.minutes),
        init=initial_package("pretrained"),
    )
    panels = {"raw (mean of 9 patterns)": test.mean(axis=0)}
    for title, package in (
        ("before: paper recipe, dataset policy", before),
        ("now: twin recipe (default)", after),
        ("twin, --init pretrained", tuned),
    ):
        panels[title] = Denoiser(package).denoise(test).mean(axis=0)
    lo, hi = np.percentile(panels["raw (mean of 9 patterns)"], (0.5, 99.8))
    fig, axes = plt.subplots(2, 4, figsize=(18, 9))
    for col, (title, image) in enumerate(panels.items()):
        for row, view in enumerate((image, image[ZOOM])):
            ax = axes[row, col]
            ax.imshow(view, cmap="magma", vmin=lo, vmax=hi)
            ax.set_axis_off()
            ax.set_title(title if row == 0 else "zoom", fontsize=10)
    fig.suptitle(
        f"make demo's sample, {args.minutes:g} min of training each on its 18 pilot frames "
        "(2-core CPU); same display range in every panel",
        fontsize=11,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
