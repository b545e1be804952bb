"""Acquire the dose sweep on a profile's microscope, denoise it, measure every dose.

Quality is measured on each SIM set's *widefield* image (the mean of its angles and
phases, raw and denoised frame by frame): the SLM's stripes stand still while the sample
drifts, so only the widefield image can be registered onto the reference taken at
another time. Images are compared per unit dose (offset subtracted, divided by the dose),
so a low dose and the reference share one scale; the reference is then scaled to each
measurement's mean brightness, because the sample bleaches over the sweep (the
reference, taken last, is dimmer per unit dose than the first doses) and a laser's
power is rarely exactly proportional to its setting.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sn2n_live.tune._metrics import (
    BleachingFit,
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
from sn2n_live.tune._plan import DosePoint, SweepPlan, TuneError

if TYPE_CHECKING:
    from sn2n_live.profiles import Profile

__all__ = ["DoseResult", "SweepResult", "TuneProgress", "run_sweep"]

_CROP_PX = 96  # side of the example crops in the report


@dataclass(frozen=True)
class TuneProgress:
    """One step of the sweep, for a progress bar (``run_sweep(progress=...)``)."""

    step: int
    steps: int
    description: str


@dataclass
class DoseResult:
    """The measurements of one dose (the reference has one too, without denoising).

    Resolutions in px (FRC at 1/7), SNR in dB, PSNR in dB and SSIM against the
    registered reference; ``truth`` (simulated microscope only) holds the same scores
    against the noise-free image of each frame.
    """

    point: DosePoint
    raw_twin_resolution_px: float
    raw_resolution_px: float
    denoised_resolution_px: float
    raw_snr_db: float
    denoised_snr_db: float
    risk_fraction: float
    psnr_raw: float
    psnr_denoised: float
    psnr_gaussian: float
    ssim_raw: float
    ssim_denoised: float
    ssim_gaussian: float
    gaussian_sigma_px: float
    shift_px: tuple[float, float]
    mean_intensity: list[float]
    brightness_vs_reference: float = 1.0  # per unit dose; < 1 after bleaching
    truth: dict[str, float] | None = None
    examples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("examples", "point")}
        out.update(self.point.__dict__)
        out["label"] = self.point.label
        return out


@dataclass
class SweepResult:
    """Everything :func:`run_sweep` measured, plus the parameters of the run."""

    plan: SweepPlan
    doses: list[DoseResult]
    reference_resolution_px: float
    reference_snr_db: float
    bleaching: BleachingFit
    parameters: dict[str, Any]
    offset_adu: float
    elapsed_s: float
    simulated: bool
    reference_example: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "plan": self.plan.as_dict(),
            "offset_adu": self.offset_adu,
            "simulated": self.simulated,
            "elapsed_s": self.elapsed_s,
            "reference": {
                "resolution_px": self.reference_resolution_px,
                "snr_db": self.reference_snr_db,
                **self.plan.reference.__dict__,
            },
            "bleaching": {
                "rate_per_dose": self.bleaching.rate_per_dose,
                "remaining": self.bleaching.remaining,
                "brightness": self.bleaching.brightness.tolist(),
                "cumulative_dose": self.bleaching.cumulative_dose.tolist(),
            },
            "doses": [d.as_dict() for d in self.doses],
        }


@dataclass
class _Acquired:
    raw: np.ndarray  # (K, S, H, W) float32 ADU
    truth: np.ndarray | None  # same, expected ADU (simulated microscope)


def _acquire(core: Any, profile: Profile, point: DosePoint, repeats: int) -> _Acquired:
    import useq

    from sn2n_live.acquisition import SimulatedMicroscope, profile_events

    device, prop = profile.camera.laser_property
    if device not in core.getLoadedDevices() or not core.hasProperty(device, prop):
        raise TuneError(
            f"the sweep sets the laser power through camera.laser_property = [{device!r}, "
            f"{prop!r}], which this microscope does not have; set camera.laser_property in "
            "the profile, or sweep exposures only with --powers 100"
        )
    core.setExposure(point.exposure_ms)
    core.setProperty(device, prop, point.power_percent)
    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": repeats}, axis_order="tpgcz")
    events = profile_events(profile, core, sequence)
    simulated = isinstance(core, SimulatedMicroscope)
    frames: list[np.ndarray] = []
    truths: list[np.ndarray] = []

    def on_frame(img: np.ndarray, event: Any, meta: Any) -> None:
        frames.append(np.asarray(img, np.float32).copy())
        if simulated:  # the SLM still shows this frame's pattern
            started = core.elapsed_s() - point.exposure_ms / 1000.0
            truths.append(core.expected_adu(max(0.0, started)))

    core.mda.events.frameReady.connect(on_frame)
    try:
        core.mda.run(events)
    finally:
        core.mda.events.frameReady.disconnect(on_frame)
    if len(frames) != len(events):
        raise RuntimeError(
            f"the sweep at {point.label} received {len(frames)} of {len(events)} frames; "
            "check the camera (sn2n-live profile check)"
        )
    shape = (repeats, len(events) // repeats, *frames[0].shape)
    truth = np.stack(truths).reshape(shape) if simulated else None
    return _Acquired(np.stack(frames).reshape(shape), truth)


def _margin(shift: tuple[float, float]) -> int:
    return math.ceil(max(abs(shift[0]), abs(shift[1]))) + 8


def _crop(image: np.ndarray, margin: int) -> np.ndarray:
    return image[..., margin:-margin, margin:-margin] if margin else image


def _repeat_frc(images: np.ndarray) -> tuple[float, float]:
    """Median FRC resolution and SNR over consecutive pairs of repeats (registered)."""
    resolutions, snrs = [], []
    for a, b in itertools.pairwise(images):
        shift = register(b, a)
        b = shift_image(b, shift)
        m = _margin(shift)
        resolutions.append(frc(_crop(a, m), _crop(b, m)).resolution_px())
        snrs.append(snr_db(_crop(a, m), _crop(b, m)))
    return float(np.median(resolutions)), float(np.median(snrs))


def _example(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[-2:]
    y, x = (h - _CROP_PX) // 2, (w - _CROP_PX) // 2
    return np.asarray(image[..., y : y + _CROP_PX, x : x + _CROP_PX], np.float32)


def run_sweep(
    profile: Profile,
    denoiser: Any,
    plan: SweepPlan,
    *,
    offset_adu: float | None = None,
    progress: Callable[[TuneProgress], None] | None = None,
) -> SweepResult:
    """Acquire ``plan`` on the profile's microscope, denoise every frame, measure each dose.

    Parameters
    ----------
    profile : Profile
        Its microscope (simulated by default), laser property and SIM plan.
    denoiser : Denoiser
        Anything with ``denoise(frames, risk=True)`` returning ``.image``, ``.risk`` and
        ``.risk_fraction`` (:class:`sn2n_live.method.Denoiser`).
    plan : SweepPlan
        Exposures x powers, repeats and the reference.
    offset_adu : float, optional
        Camera offset subtracted before comparing doses; default: the simulated camera's,
        else the model package's, else the reference's 0.1 percentile.
    progress : callable, optional
        Called with a :class:`TuneProgress` before and after every step.

    Returns
    -------
    SweepResult
    """
    from sn2n_live.acquisition import SimulatedMicroscope, open_microscope

    started = time.perf_counter()
    doses = plan.doses
    steps = 2 * len(doses) + 2
    step = 0

    def report(description: str) -> None:
        nonlocal step
        if progress is not None:
            progress(TuneProgress(step, steps, description))
        step += 1

    acquired: list[_Acquired] = []
    with open_microscope(profile) as core:
        simulated = isinstance(core, SimulatedMicroscope)
        for point in doses:
            report(f"acquiring {point.label}")
            acquired.append(_acquire(core, profile, point, plan.repeats))
        report("acquiring the reference")
        reference = _acquire(core, profile, plan.reference, plan.reference_repeats)
        if offset_adu is None and simulated:
            offset_adu = float(core.camera_model.offset_adu)
    if offset_adu is None:
        package_offset = getattr(getattr(denoiser, "package", None), "camera_offset_adu", None)
        offset_adu = (
            float(package_offset)
            if package_offset is not None
            else float(np.percentile(reference.raw, 0.1))
        )

    def per_dose(frames: np.ndarray, point: DosePoint) -> np.ndarray:
        return (np.asarray(frames, np.float64) - offset_adu) / point.dose

    report("measuring the reference")
    ref_sets = per_dose(reference.raw.mean(axis=1), plan.reference)  # (K, H, W)
    # The sample drifts while the long reference exposures go on: register its sets onto
    # the first before averaging them.
    ref_image = np.mean(
        [ref_sets[0]] + [shift_image(one, register(one, ref_sets[0])) for one in ref_sets[1:]],
        axis=0,
    )
    ref_resolution, ref_snr = _repeat_frc(ref_sets)
    measurements_dose, measurements_mean = [], []

    results: list[DoseResult] = []
    for point, data in zip(doses, acquired, strict=True):
        report(f"denoising {point.label}")
        k, s = data.raw.shape[:2]
        denoised = np.empty_like(data.raw)
        risk = np.empty_like(data.raw)
        fractions = []
        for r in range(k):
            out = denoiser.denoise(data.raw[r], risk=True)
            denoised[r], risk[r] = out.image, out.risk
            fractions.append(np.asarray(out.risk_fraction, np.float64).ravel())
        raw_wf = per_dose(data.raw.mean(axis=1), point)
        den_wf = per_dose(denoised.mean(axis=1), point)
        means = [float(m) for m in data.raw.mean(axis=(1, 2, 3)) - offset_adu]
        measurements_dose += [point.dose * s] * k
        measurements_mean += means
        shift = register(raw_wf.mean(axis=0), ref_image)
        ref_here = shift_image(ref_image, (-shift[0], -shift[1]))
        m = _margin(shift)
        # Structure, not brightness: the reference scaled to this dose's mean (bleaching).
        brightness = float(_crop(raw_wf, m).mean() / _crop(ref_here, m).mean())
        ref_here = ref_here * brightness
        ref_c = _crop(ref_here, m)
        raw_c = _crop(raw_wf, m)
        den_c = _crop(den_wf, m)
        gauss = []
        sigmas = []
        for raw_one in raw_wf:
            sigma, filtered = best_gaussian(raw_one, ref_here)
            sigmas.append(sigma)
            gauss.append(_crop(filtered, m))
        raw_res, raw_snr = _repeat_frc(raw_wf)
        den_res, den_snr = _repeat_frc(den_wf)
        twin = [twin_frc_resolution(f) for f in data.raw[0]]
        truth_scores = None
        if data.truth is not None:
            truth_wf = per_dose(data.truth.mean(axis=1), point)
            t_gauss = [best_gaussian(r, t)[1] for r, t in zip(raw_wf, truth_wf, strict=True)]
            truth_scores = {
                "psnr_raw": float(
                    np.mean([psnr(a, t) for a, t in zip(raw_wf, truth_wf, strict=True)])
                ),
                "psnr_denoised": float(
                    np.mean([psnr(a, t) for a, t in zip(den_wf, truth_wf, strict=True)])
                ),
                "psnr_gaussian": float(
                    np.mean([psnr(a, t) for a, t in zip(t_gauss, truth_wf, strict=True)])
                ),
                "ssim_denoised": float(
                    np.mean([ssim(a, t) for a, t in zip(den_wf, truth_wf, strict=True)])
                ),
            }
        results.append(
            DoseResult(
                point=point,
                raw_twin_resolution_px=float(np.median(twin)),
                raw_resolution_px=raw_res,
                denoised_resolution_px=den_res,
                raw_snr_db=raw_snr,
                denoised_snr_db=den_snr,
                risk_fraction=float(np.mean(np.concatenate(fractions))),
                psnr_raw=float(np.mean([psnr(a, ref_c) for a in raw_c])),
                psnr_denoised=float(np.mean([psnr(a, ref_c) for a in den_c])),
                psnr_gaussian=float(np.mean([psnr(a, ref_c) for a in gauss])),
                ssim_raw=float(np.mean([ssim(a, ref_c) for a in raw_c])),
                ssim_denoised=float(np.mean([ssim(a, ref_c) for a in den_c])),
                ssim_gaussian=float(np.mean([ssim(a, ref_c) for a in gauss])),
                gaussian_sigma_px=float(np.median(sigmas)),
                shift_px=shift,
                mean_intensity=means,
                brightness_vs_reference=round(brightness, 4),
                truth=truth_scores,
                examples={
                    "raw": _example(data.raw[0, 0]),
                    "denoised": _example(denoised[0, 0]),
                    "risk": _example(risk[0, 0]),
                },
            )
        )
    ref_means = reference.raw.mean(axis=(1, 2, 3)) - offset_adu
    measurements_dose += [plan.reference.dose * reference.raw.shape[1]] * len(ref_means)
    measurements_mean += [float(v) for v in ref_means]
    bleaching = bleaching_rate(np.array(measurements_dose), np.array(measurements_mean))
    report("done")
    return SweepResult(
        plan=plan,
        doses=results,
        reference_resolution_px=ref_resolution,
        reference_snr_db=ref_snr,
        bleaching=bleaching,
        parameters={
            "profile": profile.name,
            "microscope": profile.microscope.kind,
            "denoiser": dict(getattr(denoiser, "provenance", {}) or {}),
            "frame_shape": list(reference.raw.shape[-2:]),
            "set_size": int(reference.raw.shape[1]),
        },
        offset_adu=float(offset_adu),
        elapsed_s=time.perf_counter() - started,
        simulated=reference.truth is not None,
        reference_example=_example(reference.raw[0, 0]),
    )
