"""Choose the lowest dose that still gives a trustworthy denoised image.

``run_sweep`` acquires exposure x laser power on a profile's microscope, denoises every
frame and measures each dose (FRC resolution, SNR, hallucination risk, PSNR/SSIM against
a registered high-dose reference, photobleaching); ``recommend`` turns the measurements
and :class:`Targets` into a recommended dose and a break point; ``write_report`` writes a
self-contained ``report.html``. Modules:

- ``_metrics``: pure numpy/scipy/scikit-image metrics (FRC, SNR, registration, PSNR/SSIM,
  Gaussian baseline, bleaching fit)
- ``_plan``: :class:`SweepPlan` and :class:`Targets`, validated with clear errors
- ``_sweep``: the acquisition and the measurements
- ``_recommend``: the decision (pure)
- ``_report``: ``report.html`` and the profile copy

This package never imports Qt or the command line: progress goes through a callback.
"""

from sn2n_live.tune._metrics import (
    FRC_THRESHOLD,
    BleachingFit,
    FRCCurve,
    best_gaussian,
    bleaching_rate,
    frc,
    psnr,
    register,
    shift_image,
    snr_db,
    ssim,
    twin_frc_resolution,
)
from sn2n_live.tune._plan import DosePoint, SweepPlan, Targets, TuneError
from sn2n_live.tune._recommend import (
    DoseCheck,
    Recommendation,
    break_point,
    lowest_stable,
    recommend,
)
from sn2n_live.tune._report import profile_with_dose, write_report
from sn2n_live.tune._sweep import DoseResult, SweepResult, TuneProgress, run_sweep

__all__ = [
    "FRC_THRESHOLD",
    "BleachingFit",
    "DoseCheck",
    "DosePoint",
    "DoseResult",
    "FRCCurve",
    "Recommendation",
    "SweepPlan",
    "SweepResult",
    "Targets",
    "TuneError",
    "TuneProgress",
    "best_gaussian",
    "bleaching_rate",
    "break_point",
    "frc",
    "lowest_stable",
    "profile_with_dose",
    "psnr",
    "recommend",
    "register",
    "run_sweep",
    "shift_image",
    "snr_db",
    "ssim",
    "twin_frc_resolution",
    "write_report",
]
