"""Does the hallucination-risk map find what a denoiser invents? Measured on trained models.

Two cases on the simulated SIM frames of ``benchmarks/peers.py`` (same simulator, pilot
seed 0, test seed 1000), each model trained on the pilot for ``--minutes``:

1. **Invented background structure.** The patch-wise ``paper-local`` model min-max
   stretches background windows and "completes" their noise into structure. Hallucinated
   pixels: true-background pixels the model's output shows as structure (above the output's
   Otsu threshold, the peers benchmark's false-positive rule).
2. **Structure removed, noise kept.** In the central quarter of every test frame the
   in-focus signal is subtracted from the raw frame (``raw - (clean - background)``), so the
   truth there is background while the noise of the removed signal stays. Hallucinated
   pixels: pixels of that region the output still shows as structure.

For each model: the hallucinated fraction, the fraction of hallucinated pixels the map
flags (risk > 0.5; target >= 0.8) and the false-alarm rate on true background that is not
hallucinated (target <= 0.05). The default ``twin`` model is scored the same way.

Writes ``benchmarks/results/risk_map.json``. Usage (nothing else may run meanwhile)::

    python benchmarks/risk_map.py [--minutes 1] [--photons 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _metrics
import peers
from sn2n_live.method import Denoiser, TrainingConfig, train

FLAG = 0.5


def remove_structure(raw: np.ndarray, clean: np.ndarray, background: np.ndarray):
    """Subtract the signal inside the central quarter; return raw, truth and region mask."""
    h, w = raw.shape[-2:]
    region = np.zeros((h, w), bool)
    region[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
    level = np.median(clean[:, background], axis=1)[:, None, None]  # per-frame background
    signal = np.where(region, np.clip(clean - level, 0.0, None), 0.0)
    edited = np.clip(np.rint(raw - signal), 0, 65535).astype(raw.dtype)
    return edited, clean - signal, region & ~background  # only where structure was


def score(risk: np.ndarray, hallucinated: np.ndarray, background: np.ndarray) -> dict[str, Any]:
    """Return the flagged share of hallucinated pixels and false alarms on clean background."""
    flagged = risk > FLAG
    quiet = background & ~hallucinated
    return {
        "hallucinated_pixels": int(hallucinated.sum()),
        "hallucinated_fraction_of_area": round(
            float(hallucinated.sum() / max(1, (hallucinated | background).sum())), 5
        ),
        "flagged_of_hallucinated": round(float(flagged[hallucinated].mean()), 4)
        if hallucinated.any()
        else None,
        "false_alarm_on_background": round(float(flagged[quiet].mean()), 4),
    }


def run_model(name: str, data: dict[str, Any], minutes: float) -> dict[str, Any]:
    """Train OURS[name] on the pilot, then score the map on both cases."""
    kwargs = {**peers.OURS_DEFAULTS, **peers.OURS[name], "max_minutes": minutes, "seed": 0}
    package = train(data["pilot"], TrainingConfig(**kwargs))
    denoiser = Denoiser(package)
    background = np.broadcast_to(data["background"], data["raw"].shape)
    out: dict[str, Any] = {"steps": package.training["steps"]}

    result = denoiser.denoise(data["raw"], risk=True)
    invented = np.stack([_metrics.detected(f) for f in result.image]) & background
    out["invented_background"] = score(result.risk, invented, background)

    edited, truth, region = remove_structure(data["raw"], data["clean"], data["background"])
    result = denoiser.denoise(edited, risk=True)
    region = np.broadcast_to(region, edited.shape)
    kept = np.stack([_metrics.detected(f) for f in result.image]) & region
    out["removed_structure"] = {
        **score(result.risk, kept, background),
        # What is left of the removed signal in the output (0 for a faithful denoiser).
        "residual_adu_in_region": round(float((result.image - truth)[region].mean()), 3),
    }
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Train both models and print and save the scores."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--photons", type=float, default=5.0)
    parser.add_argument("--modality", choices=peers.MODALITIES, default="sim")
    parser.add_argument("--models", nargs="+", default=["paper-local", "twin"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--results-dir", type=Path, default=peers.RESULTS)
    args = parser.parse_args(argv)

    pilot = peers.simulate(args.modality, args.photons, args.size, 0)
    test = peers.simulate(args.modality, args.photons, args.size, 1000)
    data = {
        "pilot": peers.stack(pilot.raw),
        "raw": peers.stack(test.raw),
        "clean": peers.stack(test.clean),
        "background": np.asarray(test.background_mask, bool),
    }
    report: dict[str, Any] = {
        "benchmark": "risk_map",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "flag_threshold": FLAG,
        "load_average": {"start": list(os.getloadavg()), "end": None},
        "models": {},
    }
    for name in args.models:
        report["models"][name] = entry = run_model(name, data, args.minutes)
        print(name, json.dumps(entry, indent=1))
    report["load_average"]["end"] = list(os.getloadavg())
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / "risk_map.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
