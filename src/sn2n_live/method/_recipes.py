"""Named training recipes: the published Adaptive-SN2N and sn2n-live's measured default.

A recipe is a set of defaults for :class:`~sn2n_live.method.TrainingConfig`; any field given
explicitly overrides it, so every ingredient can be ablated one at a time.

``paper`` reproduces the published method (method.md §2-3): twins Fourier up-sampled per
window on the official (2N-1)/N grid, a sigmoid head, the L1 self-constrained loss, frames
scaled from their minimum to p99.99 and clipped to [0, 1], Adam 2e-4 with betas (0.5, 0.999)
and batches of 32, and inference on the full-resolution raw frame.

``twin`` (the default) changes what the measurements in docs/method.md showed to be wrong:

- **inference on the twins**: the network is trained on half-variance, band-limited twins
  but the paper applies it to the full-resolution raw frame, whose noise it has never seen;
  ``twin`` denoises both up-sampled twins of the frame and averages them, so inference
  sees exactly the training distribution (and the two outputs feed the risk map);
- **L2 loss and a linear head on an unclipped, background-anchored scale**: L1 estimates
  the median, which lies below the mean for Poisson counts, and the sigmoid with a clipped
  [0, 1] scale cannot represent the background noise below the minimum or signal above
  p99.99 without bias; with L2 the Noise2Noise target is the mean;
- **whole-frame twins with the exact 2x grid**, without clamping negative ringing
  (compensating the diagonal means' low-pass, ``compensate=True``, measured no better);
- **no consistency term** (lambda = 0): ``|f(A) - f(B)|`` pulls the two outputs together,
  which smooths the image (0.7 dB lost at 20 photons) and trains away exactly the
  disagreement the hallucination-risk map measures;
- **Adam 3e-3, batches of 16, a short warm-up and cosine decay over the run** (the run's
  epochs or its time budget), so a few minutes of CPU training converge;
- **bf16 autocast where the hardware has it** (about 1.8x the steps per second on this
  project's AVX-512-bf16 CPU).
"""

from __future__ import annotations

from typing import Any

from sn2n_live.config import Recipe

__all__ = ["RECIPES", "Recipe"]

RECIPES: dict[Recipe, dict[str, Any]] = {
    Recipe.PAPER: {
        "upsample": "official",
        "head": "sigmoid",
        "loss": "l1",
        "scale": "min_clip",
        "inference": "frame",
        "compensate": False,
        "lr": 2e-4,
        "betas": (0.5, 0.999),
        "batch_size": 32,
        "schedule": "plateau",
        "autocast": "off",
        "consistency_weight": 1.0,
    },
    Recipe.TWIN: {
        "upsample": "exact",
        "head": "linear",
        "loss": "l2",
        "scale": "background",
        "inference": "twins",
        "compensate": False,
        "lr": 3e-3,
        "betas": (0.9, 0.999),
        "batch_size": 16,
        "schedule": "cosine",
        "autocast": "auto",
        "consistency_weight": 0.0,
    },
}
