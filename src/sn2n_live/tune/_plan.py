"""The dose sweep and the quality targets: what to acquire, what counts as good enough."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DosePoint", "SweepPlan", "Targets", "TuneError"]


class TuneError(ValueError):
    """A sweep or target that cannot work; the message says what, where and how to fix it."""


@dataclass(frozen=True)
class DosePoint:
    """One setting of the sweep: exposure and laser power, and its dose.

    ``dose`` is exposure_ms x laser fraction (ms at full power); ``relative`` divides it
    by the reference's dose.
    """

    exposure_ms: float
    power_percent: float
    dose: float
    relative: float

    @property
    def label(self) -> str:
        return f"{self.exposure_ms:g} ms @ {self.power_percent:g} %"


def _numbers(name: str, flag: str, values: tuple[float, ...], low: float, high: float) -> None:
    if not values:
        raise TuneError(f"{name} is empty; give at least one value with {flag}")
    for value in values:
        if not (isinstance(value, int | float) and math.isfinite(value) and low < value <= high):
            raise TuneError(
                f"{name} has {value!r}; every value must be a number in ({low:g}, {high:g}] "
                f"(fix {flag})"
            )


@dataclass(frozen=True)
class SweepPlan:
    """Exposures x laser powers, repeats per dose, and the high-dose reference.

    Parameters
    ----------
    exposures_ms, powers_percent : tuple of float
        Every combination is one dose of the sweep (duplicated doses are kept once).
    repeats : int
        SIM sets per dose (>= 2: the repeat FRC needs two).
    reference_exposure_ms, reference_power_percent : float
        The reference dose; it must exceed every dose of the sweep.
    reference_repeats : int
        SIM sets of the reference (averaged).
    """

    exposures_ms: tuple[float, ...] = (2.0, 5.0, 10.0)
    powers_percent: tuple[float, ...] = (30.0, 100.0)
    repeats: int = 3
    reference_exposure_ms: float = 200.0
    reference_power_percent: float = 100.0
    reference_repeats: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "exposures_ms", tuple(self.exposures_ms))
        object.__setattr__(self, "powers_percent", tuple(self.powers_percent))
        _numbers("exposures_ms", "--exposures", self.exposures_ms, 0.0, 60_000.0)
        _numbers("powers_percent", "--powers", self.powers_percent, 0.0, 100.0)
        _numbers(
            "reference_exposure_ms",
            "--reference-exposure",
            (self.reference_exposure_ms,),
            0.0,
            60_000.0,
        )
        _numbers(
            "reference_power_percent",
            "--reference-power",
            (self.reference_power_percent,),
            0.0,
            100.0,
        )
        for name, flag, value in (
            ("repeats", "--repeats", self.repeats),
            ("reference_repeats", "--reference-repeats", self.reference_repeats),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= 100:
                raise TuneError(
                    f"{name} is {value!r}; it must be an integer 2..100 (two repeats at least: "
                    f"the repeat FRC correlates two of them; fix {flag})"
                )
        top = max(self.doses, key=lambda p: p.dose)
        if self.reference_dose <= top.dose:
            raise TuneError(
                f"the reference dose ({self.reference_exposure_ms:g} ms @ "
                f"{self.reference_power_percent:g} % = {self.reference_dose:g}) is not above the "
                f"sweep's highest ({top.label} = {top.dose:g}); raise --reference-exposure or "
                "lower --exposures/--powers"
            )

    @property
    def reference_dose(self) -> float:
        return self.reference_exposure_ms * self.reference_power_percent / 100.0

    @property
    def reference(self) -> DosePoint:
        dose = self.reference_dose
        return DosePoint(self.reference_exposure_ms, self.reference_power_percent, dose, 1.0)

    @property
    def doses(self) -> list[DosePoint]:
        """The sweep's doses, ascending (the acquisition order); one per distinct dose."""
        seen: dict[float, DosePoint] = {}
        ref = self.reference_exposure_ms * self.reference_power_percent / 100.0
        for exposure in self.exposures_ms:
            for power in self.powers_percent:
                dose = exposure * power / 100.0
                key = round(dose, 9)
                if key not in seen:
                    seen[key] = DosePoint(float(exposure), float(power), dose, dose / ref)
        return sorted(seen.values(), key=lambda p: p.dose)

    def as_dict(self) -> dict:
        return {
            "exposures_ms": list(self.exposures_ms),
            "powers_percent": list(self.powers_percent),
            "repeats": self.repeats,
            "reference_exposure_ms": self.reference_exposure_ms,
            "reference_power_percent": self.reference_power_percent,
            "reference_repeats": self.reference_repeats,
            "doses": [p.__dict__ for p in self.doses],
        }


@dataclass(frozen=True)
class Targets:
    """What the recommended dose must meet (each a ``tune`` flag).

    Parameters
    ----------
    resolution_tolerance : float
        The denoised FRC resolution may be at most this fraction worse than the
        reference's (0.10: within 10 %; ``--resolution-tolerance``).
    max_risk_fraction : float
        Highest hallucination-risk fraction allowed (``--max-risk``).
    min_psnr_db : float
        Lowest PSNR of the denoised image against the reference (``--min-psnr``).
    gaussian_margin_db : float
        How much higher the denoised PSNR must be than the best Gaussian filter's for
        the denoiser to count as better (``--gaussian-margin``); below the break point
        it is not.
    """

    resolution_tolerance: float = 0.10
    max_risk_fraction: float = 0.01
    min_psnr_db: float = 30.0
    gaussian_margin_db: float = 0.5

    def __post_init__(self) -> None:
        checks = (
            ("resolution_tolerance", "--resolution-tolerance", self.resolution_tolerance, 0, 10),
            ("max_risk_fraction", "--max-risk", self.max_risk_fraction, 0, 1),
            ("min_psnr_db", "--min-psnr", self.min_psnr_db, 0, 100),
            ("gaussian_margin_db", "--gaussian-margin", self.gaussian_margin_db, 0, 20),
        )
        for name, flag, value, low, high in checks:
            ok = isinstance(value, int | float) and math.isfinite(value) and low <= value <= high
            if not ok:
                raise TuneError(
                    f"{name} is {value!r}; it must be a number in [{low}, {high}] (fix {flag})"
                )

    def as_dict(self) -> dict:
        return {
            "resolution_tolerance": self.resolution_tolerance,
            "max_risk_fraction": self.max_risk_fraction,
            "min_psnr_db": self.min_psnr_db,
            "gaussian_margin_db": self.gaussian_margin_db,
        }
