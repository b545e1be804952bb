"""What the training frames looked like, and whether new frames look alike.

A denoiser learns the signal and noise levels of its pilot frames. Frames at 20x the
pilot's light, with another camera offset, or blank, are outside what it learned, and its
output there can be wrong without looking wrong. :func:`measure_photometry` summarizes
frames cheaply (background floor, noise, signal peak); the training run stores the
summary of its frames in the package (``training["photometry"]``) and
:func:`check_photometry` compares new frames with it, frame by frame.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sn2n_live.method._risk import twin_noise_variance

__all__ = [
    "SIGNAL_RATIO_LIMIT",
    "FramePhotometry",
    "PhotometryWatch",
    "check_photometry",
    "measure_photometry",
    "photometry_record",
]

# Signal (peak above background) this many times the training's, or this many times less,
# is out of range: SIM patterns and fields of one sample vary by less than 2-3x.
SIGNAL_RATIO_LIMIT = 8.0
# A background shift larger than this many noise sigmas (and 10 ADU) is another offset.
BACKGROUND_SIGMAS = 5.0
BACKGROUND_MIN_ADU = 10.0
_PATCH = 64
_PEAK_PERCENTILE = 99.99
_NOISE_AT_PEAK = 3.72  # the p99.99 of a standard normal


@dataclass(frozen=True)
class FramePhotometry:
    """Per-frame photometric summary, in the frames' units (ADU).

    Attributes
    ----------
    background : numpy.ndarray
        ``(N,)`` background floor: the darkest 64-px patch mean.
    noise : numpy.ndarray
        ``(N,)`` noise standard deviation in that patch (from its diagonal twins).
    peak : numpy.ndarray
        ``(N,)`` signal peak above the background: p99.99 minus the floor, minus the
        3.7 noise sigmas by which noise alone lifts a p99.99 (so that a frame without
        signal has a peak near 0 at any noise level).
    constant : numpy.ndarray
        ``(N,)`` bool: every pixel has the same value (a blank or saturated frame).
    """

    background: np.ndarray
    noise: np.ndarray
    peak: np.ndarray
    constant: np.ndarray


def measure_photometry(frames: np.ndarray) -> FramePhotometry:
    """Summarize ``(N, H, W)`` frames (any real dtype; a 512^2 frame takes a few ms).

    Parameters
    ----------
    frames : numpy.ndarray
        ``(N, H, W)`` camera frames.

    Returns
    -------
    FramePhotometry
    """
    x = torch.as_tensor(np.asarray(frames, dtype=np.float32))
    if x.ndim != 3 or min(x.shape[-2:]) < 2:
        raise ValueError(
            f"measure_photometry: frames must be (N, H, W) with H, W >= 2, got {tuple(x.shape)}"
        )
    p = min(_PATCH, x.shape[-2], x.shape[-1])
    ny, nx = x.shape[-2] // p, x.shape[-1] // p
    blocks = x[:, : ny * p, : nx * p].reshape(x.shape[0], ny, p, nx, p).transpose(2, 3)
    blocks = blocks.reshape(x.shape[0], ny * nx, p, p)
    # The background floor (as risk.background_floor) and the patch it comes from.
    floor, darkest = blocks.mean(dim=(2, 3)).min(dim=1)
    noise = twin_noise_variance(blocks[torch.arange(x.shape[0]), darkest]).sqrt()
    flat = x.flatten(1)
    top = torch.quantile(flat, _PEAK_PERCENTILE / 100.0, dim=1)
    constant = flat.amin(dim=1) == flat.amax(dim=1)
    return FramePhotometry(
        background=floor.numpy().astype(np.float64),
        noise=noise.numpy().astype(np.float64),
        peak=(top - floor - _NOISE_AT_PEAK * noise).clamp_min(0.0).numpy().astype(np.float64),
        constant=constant.numpy(),
    )


def photometry_record(frames: np.ndarray) -> dict[str, Any]:
    """Summarize training frames for their package (JSON-ready).

    Parameters
    ----------
    frames : numpy.ndarray
        ``(N, H, W)`` training frames, in their original dtype.

    Returns
    -------
    dict
        ``frame_shape``, ``dtype``, ``n_frames`` and the median, minimum and maximum over
        frames of ``background_adu``, ``noise_adu`` and ``peak_adu`` (see
        :class:`FramePhotometry`).
    """
    stats = measure_photometry(frames)

    def spread(values: np.ndarray) -> dict[str, float]:
        return {
            "median": round(float(np.median(values)), 4),
            "min": round(float(values.min()), 4),
            "max": round(float(values.max()), 4),
        }

    return {
        "frame_shape": list(frames.shape[-2:]),
        "dtype": str(frames.dtype),
        "n_frames": int(frames.shape[0]),
        "background_adu": spread(stats.background),
        "noise_adu": spread(stats.noise),
        "peak_adu": spread(stats.peak),
    }


def check_photometry(
    record: dict[str, Any], stats: FramePhotometry
) -> list[tuple[str, str] | None]:
    """Compare frames with a training record; one finding per frame (None: in range).

    Parameters
    ----------
    record : dict
        :func:`photometry_record` of the training frames.
    stats : FramePhotometry
        The frames to check.

    Returns
    -------
    list of (kind, message) or None
        Per frame, what is out of range: kind ``"blank"``, ``"background"``,
        ``"bright"`` or ``"dim"`` and a message such as ``"signal 21x the training's"``;
        None when the frame is in range.
    """
    background = record["background_adu"]
    ref_bg, ref_noise = background["median"], record["noise_adu"]["median"]
    ref_peak = record["peak_adu"]["median"]
    low, high = record["peak_adu"]["min"], record["peak_adu"]["max"]
    # The training's own spread of backgrounds is in range, plus a few noise sigmas.
    allowed_shift = max(BACKGROUND_MIN_ADU, BACKGROUND_SIGMAS * ref_noise)
    allowed_shift += background["max"] - background["min"]
    findings: list[tuple[str, str] | None] = []
    for bg, peak, constant in zip(stats.background, stats.peak, stats.constant, strict=True):
        if constant:
            findings.append(("blank", f"blank frame (every pixel {bg:.0f} ADU)"))
        # Light first: more light also lifts the background (haze, autofluorescence).
        elif ref_peak > 0 and peak > SIGNAL_RATIO_LIMIT * high:
            findings.append(("bright", f"signal {peak / ref_peak:.0f}x the training's"))
        elif ref_peak > 0 and peak < low / SIGNAL_RATIO_LIMIT:
            ratio = ref_peak / max(peak, 1e-9)
            findings.append(("dim", f"signal 1/{ratio:.0f} of the training's"))
        elif abs(bg - ref_bg) > allowed_shift:
            findings.append(
                ("background", f"background {bg:.0f} ADU vs {ref_bg:.0f} ADU in training")
            )
        else:
            findings.append(None)
    return findings


_ADVICE = {
    "blank": "the camera delivered no image there",
    "background": "another camera offset or much more background than the pilot had",
    "bright": "more light than the pilot had (exposure, laser power or a brighter sample)",
    "dim": "less light than the pilot had",
}


class PhotometryWatch:
    """Checks frames against a package's training record as they come, and sums it up.

    :meth:`check` may be called from one thread while another reads :meth:`notes` or
    :meth:`counts`.

    Parameters
    ----------
    record : dict or None
        ``training["photometry"]`` of the package; None (packages from before it was
        recorded) checks nothing and says so once in :meth:`notes`.
    """

    def __init__(self, record: dict[str, Any] | None) -> None:
        self.record = record
        self._frames: dict[str, list[int]] = {}
        self._example: dict[str, str] = {}
        self._lock = threading.Lock()

    def check(self, frames: np.ndarray, indices: list[int]) -> list[tuple[str, str] | None]:
        """Check ``(N, H, W)`` frames numbered ``indices``; return each one's finding."""
        if self.record is None:
            return [None] * len(indices)
        findings = check_photometry(self.record, measure_photometry(frames))
        with self._lock:
            for index, finding in zip(indices, findings, strict=True):
                if finding is not None:
                    kind, message = finding
                    self._frames.setdefault(kind, []).append(int(index))
                    self._example.setdefault(kind, message)
        return findings

    def counts(self) -> dict[str, int]:
        """Frames flagged so far, by kind."""
        with self._lock:
            return {kind: len(frames) for kind, frames in self._frames.items()}

    def notes(self) -> list[str]:
        """One line per kind: which frames, what differs, why it matters, what to do."""
        if self.record is None:
            return [
                "the model records no photometry of its training frames (trained before "
                "sn2n-live 0.1 recorded it), so the frames were not checked against it"
            ]
        with self._lock:
            kinds = {kind: sorted(frames) for kind, frames in self._frames.items()}
            examples = dict(self._example)
        peak = self.record["peak_adu"]
        background = self.record["background_adu"]["median"]
        trained = (
            f"the model was trained on frames with background {background:.0f} ADU and "
            f"signal peaks {peak['min']:.3g}-{peak['max']:.3g} ADU above it"
        )
        return [
            f"frames {_ranges(frames)}: {examples[kind]}, likely {_ADVICE[kind]}; {trained}, so "
            "the denoised values there may be wrong: check them against the raw, or train on "
            "pilot frames acquired like these (same exposure and laser power)"
            for kind, frames in kinds.items()
        ]


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"`` (sorted input)."""
    parts: list[str] = []
    start = prev = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return ", ".join(parts)
