"""From the sweep's measurements to a recommended dose and a break point (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sn2n_live.tune._plan import DosePoint, Targets

if TYPE_CHECKING:
    from sn2n_live.tune._sweep import SweepResult

__all__ = ["DoseCheck", "Recommendation", "break_point", "lowest_stable", "recommend"]


@dataclass(frozen=True)
class DoseCheck:
    """Which targets one dose meets, and whether denoising beats the best Gaussian."""

    point: DosePoint
    resolution_ok: bool
    risk_ok: bool
    psnr_ok: bool
    beats_gaussian: bool

    @property
    def meets(self) -> bool:
        return self.resolution_ok and self.risk_ok and self.psnr_ok


@dataclass(frozen=True)
class Recommendation:
    """The lowest dose that meets the targets, and the break point.

    Attributes
    ----------
    dose : DosePoint or None
        The lowest dose from which every higher dose of the sweep meets all targets
        (None: the sweep cannot reach them; ``message`` says why and what to change).
    break_point : DosePoint or None
        The lowest dose from which the denoised image beats the best Gaussian filter of
        the raw one at every higher dose; below it, denoising is no better than a blur.
        None when the denoiser loses even at the highest dose.
    break_point_below_sweep : bool
        True when the denoiser wins at every dose (the break point lies below the sweep).
    """

    dose: DosePoint | None
    break_point: DosePoint | None
    break_point_below_sweep: bool
    checks: tuple[DoseCheck, ...]
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "dose": None if self.dose is None else {**self.dose.__dict__, "label": self.dose.label},
            "break_point": None
            if self.break_point is None
            else {**self.break_point.__dict__, "label": self.break_point.label},
            "break_point_below_sweep": self.break_point_below_sweep,
            "message": self.message,
            "checks": [
                {
                    "label": c.point.label,
                    "dose": c.point.dose,
                    "resolution_ok": c.resolution_ok,
                    "risk_ok": c.risk_ok,
                    "psnr_ok": c.psnr_ok,
                    "meets": c.meets,
                    "beats_gaussian": c.beats_gaussian,
                }
                for c in self.checks
            ],
        }


def lowest_stable(points: Sequence[DosePoint], ok: Sequence[bool]) -> DosePoint | None:
    """Return the lowest dose from which ``ok`` holds at it and at every higher dose.

    ``points`` ascending; one noisy success below a failure does not count.
    """
    found = None
    for point, good in zip(reversed(points), reversed(ok), strict=True):
        if not good:
            break
        found = point
    return found


def break_point(
    points: Sequence[DosePoint], denoised: Sequence[float], gaussian: Sequence[float]
) -> DosePoint | None:
    """Return the lowest dose from which ``denoised`` beats ``gaussian`` at every higher one."""
    return lowest_stable(points, [d > g for d, g in zip(denoised, gaussian, strict=True)])


def recommend(result: SweepResult, targets: Targets, *, truth: bool = False) -> Recommendation:
    """Recommend a dose from a sweep.

    Parameters
    ----------
    result : SweepResult
        The sweep.
    targets : Targets
        Resolution tolerance, risk and PSNR thresholds.
    truth : bool
        Score PSNR against the noise-free truth instead of the reference (simulated
        microscope only): the answer the measured recommendation should agree with.
    """
    if truth and not result.simulated:
        raise ValueError("truth=True needs a sweep on the simulated microscope")
    points = [d.point for d in result.doses]
    limit = result.reference_resolution_px * (1.0 + targets.resolution_tolerance)

    def scores(d: Any) -> tuple[float, float]:
        if truth:
            return d.truth["psnr_denoised"], d.truth["psnr_gaussian"]
        return d.psnr_denoised, d.psnr_gaussian

    checks = tuple(
        DoseCheck(
            point=d.point,
            resolution_ok=d.denoised_resolution_px <= limit,
            risk_ok=d.risk_fraction <= targets.max_risk_fraction,
            psnr_ok=scores(d)[0] >= targets.min_psnr_db,
            beats_gaussian=scores(d)[0] > scores(d)[1] + targets.gaussian_margin_db,
        )
        for d in result.doses
    )
    dose = lowest_stable(points, [c.meets for c in checks])
    brk = lowest_stable(points, [c.beats_gaussian for c in checks])
    below = brk is not None and brk == points[0]
    if dose is not None:
        message = (
            f"recommended: {dose.label} (dose {dose.dose:g}, {dose.relative:.1%} of the reference)"
        )
    else:
        top, best = result.doses[-1], checks[-1]
        why = []
        if not best.psnr_ok:
            why.append(f"PSNR {scores(top)[0]:.1f} dB < {targets.min_psnr_db:g} dB (--min-psnr)")
        if not best.risk_ok:
            why.append(
                f"risk fraction {top.risk_fraction:.3f} > {targets.max_risk_fraction:g} "
                "(--max-risk)"
            )
        if not best.resolution_ok:
            why.append(
                f"resolution {top.denoised_resolution_px:.2f} px > {limit:.2f} px, the "
                f"reference's {result.reference_resolution_px:.2f} px + "
                f"{targets.resolution_tolerance:.0%} (--resolution-tolerance)"
            )
        message = (
            f"no dose of the sweep meets the targets: at its highest dose ({top.point.label})"
            f" {'; '.join(why)}. Sweep higher doses (--exposures, --powers), relax the "
            "target named, or train the model on this sample (sn2n-live train)"
        )
    if brk is None:
        message += (
            "; the denoised image is no better than a Gaussian filter at any dose of the "
            "sweep (no break point inside it)"
        )
    elif below:
        message += (
            f"; denoising beats a Gaussian filter at every dose (break point below {brk.label})"
        )
    else:
        message += f"; below {brk.label} denoising is no better than a Gaussian filter"
    return Recommendation(dose, brk, below, checks, message)
