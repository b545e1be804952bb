"""What the preview shows, and what it says about the run: no Qt, no rendering.

:class:`PreviewState` is the model the controller (the widget) updates from the handler
and the views read; :class:`RunHealth` turns successive :class:`LiveStats` into notices
(warnings, errors); :func:`status_line` writes the status bar's text. All pure, so they
are tested without a display.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sn2n_live.acquisition import LatestPair, LiveStats, RunState, RunStatus

__all__ = [
    "OVERLAYS",
    "CameraCalibration",
    "ContrastMode",
    "Notice",
    "Overlay",
    "PreviewState",
    "Readout",
    "RunHealth",
    "model_label",
    "status_line",
]

ContrastMode = Literal["auto", "manual"]
Overlay = Literal["residual", "risk", "widefield", "reconstruction"]
OVERLAYS: tuple[Overlay, ...] = ("residual", "risk", "widefield", "reconstruction")


@dataclass(frozen=True)
class CameraCalibration:
    """The two numbers that turn ADU into photons: ``(adu - offset_adu) / gain_adu_per_e``."""

    offset_adu: float
    gain_adu_per_e: float

    def __post_init__(self) -> None:
        if not self.gain_adu_per_e > 0:
            raise ValueError(f"gain_adu_per_e must be > 0; got {self.gain_adu_per_e}.")

    @classmethod
    def from_any(cls, camera: Any) -> CameraCalibration | None:
        """Read a mapping or object with ``offset_adu`` and ``gain_adu_per_e``.

        E.g. ``sn2n_live.simulation.CameraModel``; None stays None.
        """
        if camera is None or isinstance(camera, CameraCalibration):
            return camera
        get = camera.get if isinstance(camera, Mapping) else lambda k: getattr(camera, k, None)
        offset, gain = get("offset_adu"), get("gain_adu_per_e")
        if offset is None or gain is None:
            raise ValueError("camera needs offset_adu and gain_adu_per_e (a mapping or object).")
        return cls(float(offset), float(gain))

    def photons(self, adu: float) -> float:
        """Photons (photo-electrons) of a value in ADU."""
        return (adu - self.offset_adu) / self.gain_adu_per_e


@dataclass(frozen=True)
class Readout:
    """The values under the cursor: ``row, col`` and both panes' pixel in ADU (and photons)."""

    row: int
    col: int
    raw_adu: float
    denoised_adu: float
    raw_photons: float | None = None
    denoised_photons: float | None = None
    recon_value: float | None = None

    def text(self) -> str:
        """One line for the readout label."""

        def one(name: str, adu: float, photons: float | None) -> str:
            extra = "" if photons is None else f" ({photons:.1f} photons)"
            return f"{name} {adu:.1f} ADU{extra}"

        line = (
            f"x {self.col}  y {self.row}   {one('raw', self.raw_adu, self.raw_photons)}   "
            f"{one('denoised', self.denoised_adu, self.denoised_photons)}"
        )
        return line if self.recon_value is None else f"{line}   SIM {self.recon_value:.1f}"


@dataclass
class PreviewState:
    """What the preview shows; the widget's controller writes it, its views read it.

    Attributes
    ----------
    raw, denoised : numpy.ndarray or None
        The pair shown (the handler's arrays, never modified).
    risk : numpy.ndarray or None
        Hallucination-risk map of the pair (0..1), if it carries one (``pair.risk``).
    widefield : numpy.ndarray or None
        Widefield image of the latest complete SIM set, when one was given.
    recon : numpy.ndarray or None
        The newest live SIM reconstruction (``(2H, 2W)``), when the run makes them.
    recon_set : int or None
        Which set of the run it reconstructs.
    frame : int or None
        Frame number of the pair shown.
    index : dict of str to int
        Its MDA event index.
    latency_ms : float or None
        Its arrival-to-written latency.
    data_check : str or None
        How it falls outside the model's training photometry, if it does.
    contrast : {"auto", "manual"}
        Percentile limits or the manual ones.
    linked : bool
        One set of limits for both panes (True) or one each.
    percentiles : tuple of float
        Auto mode's lower and upper percentile.
    manual_raw, manual_denoised : tuple of float
        Manual limits (linked: ``manual_raw`` serves both).
    colormap : str
        Colormap of both panes (the residual overlay keeps its diverging map).
    overlays : set of str
        Enabled overlays: ``"residual"`` (raw - denoised in the denoised pane), ``"risk"``
        (red veil over the denoised pane), ``"widefield"`` (the SIM widefield image in the
        raw pane), ``"reconstruction"`` (the SIM reconstruction in the denoised pane, in
        place of the denoised frame; residual and risk then stay off that pane).
    limits_raw, limits_denoised : tuple of float or None
        The limits last used to render each pane.
    stats : LiveStats or None
        The handler's last statistics.
    provenance : mapping
        What produces the denoised frames (model sha256, engine, precision, ...).
    camera : CameraCalibration or None
        ADU to photons, for the readout.
    pairs_shown : int
        Distinct pairs taken since the state was made (over every run followed).
    """

    raw: np.ndarray | None = None
    denoised: np.ndarray | None = None
    risk: np.ndarray | None = None
    widefield: np.ndarray | None = None
    recon: np.ndarray | None = None
    recon_set: int | None = None
    frame: int | None = None
    index: dict[str, int] = field(default_factory=dict)
    latency_ms: float | None = None
    data_check: str | None = None
    contrast: ContrastMode = "auto"
    linked: bool = True
    percentiles: tuple[float, float] = (0.5, 99.5)
    manual_raw: tuple[float, float] = (0.0, 1000.0)
    manual_denoised: tuple[float, float] = (0.0, 1000.0)
    colormap: str = "gray"
    overlays: set[str] = field(default_factory=set)
    limits_raw: tuple[float, float] | None = None
    limits_denoised: tuple[float, float] | None = None
    stats: LiveStats | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    camera: CameraCalibration | None = None
    pairs_shown: int = 0
    # When the pair shown was first seen here (perf_counter s) and where its age came from.
    _seen_at: float | None = None
    _arrival: float | None = None

    def take(self, pair: LatestPair | None, now: float | None = None) -> bool:
        """Show ``pair`` if it is new; return whether the shown pair changed.

        A pair is new when its frame number differs, or it is another object (a new run
        restarts at frame 0). Nothing is copied: the pair's arrays are immutable by
        contract.
        """
        if pair is None:
            return False
        same = self.frame == pair.frame and self.raw is pair.raw
        if same:
            return False
        now = time.perf_counter() if now is None else now
        self.raw, self.denoised = pair.raw, pair.denoised
        self.risk = pair.risk  # None unless the run computes risk maps
        self.frame, self.index = pair.frame, dict(pair.index)
        self.latency_ms, self.data_check = pair.latency_ms, pair.data_check
        self._seen_at = now
        self._arrival = getattr(pair, "arrived", None)
        self.pairs_shown += 1
        return True

    def clear(self) -> None:
        """Forget the pair and the statistics (a new run starts)."""
        self.raw = self.denoised = self.risk = self.widefield = self.recon = None
        self.recon_set = None
        self.frame, self.index, self.latency_ms, self.data_check = None, {}, None, None
        self.limits_raw = self.limits_denoised = None
        self.stats, self._seen_at, self._arrival = None, None, None

    def age_s(self, now: float | None = None) -> float | None:
        """Tell how old the frame shown is, in seconds.

        Since its arrival if the pair says when (``LatestPair.arrived``, perf_counter), else its
        latency plus the time since it was taken.
        """
        if self.frame is None:
            return None
        now = time.perf_counter() if now is None else now
        if self._arrival is not None:
            return max(0.0, now - self._arrival)
        seen = now - self._seen_at if self._seen_at is not None else 0.0
        return (self.latency_ms or 0.0) / 1e3 + seen

    def showing_widefield(self) -> bool:
        """Whether the raw pane shows the SIM widefield image (overlay on, one there)."""
        return "widefield" in self.overlays and self.widefield is not None

    def showing_recon(self) -> bool:
        """Whether the denoised pane shows the SIM reconstruction (overlay on, one there)."""
        return "reconstruction" in self.overlays and self.recon is not None

    def readout(
        self, row: int, col: int, recon_pixel: tuple[int, int] | None = None
    ) -> Readout | None:
        """Both panes' values at ``(row, col)`` of the pair, or None outside it.

        ``recon_pixel``: the reconstruction's pixel under the cursor, read too while the
        reconstruction is shown (it samples the field twice as finely).
        """
        if self.raw is None or self.denoised is None:
            return None
        h, w = self.raw.shape[-2:]
        if not (0 <= row < h and 0 <= col < w):
            return None
        raw, den = float(self.raw[row, col]), float(self.denoised[row, col])
        recon_value, recon = None, self.recon if self.showing_recon() else None
        if recon_pixel is not None and recon is not None:
            r, c = recon_pixel
            if 0 <= r < recon.shape[-2] and 0 <= c < recon.shape[-1]:
                recon_value = float(recon[r, c])
        cam = self.camera
        return Readout(
            row,
            col,
            raw,
            den,
            None if cam is None else cam.photons(raw),
            None if cam is None else cam.photons(den),
            recon_value,
        )


@dataclass(frozen=True)
class Notice:
    """A line about the run.

    ``level`` is ``"warning"`` (status colour) or ``"error"`` (banner).
    """

    level: Literal["warning", "error"]
    text: str


class RunHealth:
    """Turns successive statistics into warnings and errors.

    Warnings: frames-behind growing (its floor over the last ``window_s`` above the floor
    of the window before: batching makes it oscillate, a rising floor is a denoiser that
    cannot keep up), no denoised frame for ``stall_s`` while frames arrive, frames that
    will have no denoised twin, frames unlike the training data. Errors: a raw frame
    that could not be saved, a run that ended ``denoiser_failed`` or ``failed``, a live
    view whose denoiser gave up (``live``: following live mode, where nothing is saved,
    so the saving-lane warnings do not apply).
    """

    def __init__(self, window_s: float = 1.0, stall_s: float = 3.0) -> None:
        self.window_s, self.stall_s = window_s, stall_s
        self._behind: deque[tuple[float, int]] = deque()
        self._last_denoised: tuple[float, int, int] | None = None  # t, written, received
        self.raw_failure: str | None = None
        self.final_status: str | None = None
        self.live = False
        self.live_failure: str | None = None

    def reset(self, *, live: bool = False) -> None:
        """Forget the run (a new one starts; ``live``: a live view, nothing saved)."""
        self._behind.clear()
        self._last_denoised, self.raw_failure, self.final_status = None, None, None
        self.live, self.live_failure = live, None

    def update(self, stats: LiveStats, now: float | None = None) -> None:
        """Take one statistics snapshot."""
        now = time.perf_counter() if now is None else now
        self._behind.append((now, stats.frames_behind))
        while self._behind and self._behind[0][0] < now - 2 * self.window_s:
            self._behind.popleft()
        last = self._last_denoised
        if last is None or stats.denoised_written != last[1]:
            self._last_denoised = (now, stats.denoised_written, stats.frames_received)

    def behind_growing(self, now: float | None = None) -> bool:
        """Whether frames-behind's floor rose from one window to the next."""
        if not self._behind:
            return False
        now = time.perf_counter() if now is None else now
        start = now - self.window_s
        recent = [b for t, b in self._behind if t >= start]
        before = [b for t, b in self._behind if t < start]
        # Only a full previous window counts (the deque keeps two).
        if not recent or not before or self._behind[0][0] > now - 1.5 * self.window_s:
            return False
        return min(recent) > 0 and min(recent) > min(before)

    def notices(self, stats: LiveStats | None, now: float | None = None) -> list[Notice]:
        """List what to say now, errors first."""
        now = time.perf_counter() if now is None else now
        out: list[Notice] = []
        if self.raw_failure is not None:
            out.append(Notice("error", f"RAW FRAMES ARE NOT BEING SAVED: {self.raw_failure}"))
        if self.final_status == RunStatus.DENOISER_FAILED:
            out.append(Notice("error", "The denoiser failed: the run ended denoiser_failed."))
        elif self.final_status == RunStatus.FAILED and self.raw_failure is None:
            out.append(Notice("error", "The run failed (raw saving or the denoise process)."))
        if self.live:
            gave_up = stats is not None and stats.state == RunStatus.DENOISER_FAILED
            if self.live_failure is not None or gave_up:
                reason = self.live_failure or "see the log"
                out.append(Notice("error", f"Live frames are not denoised: {reason}"))
            return out
        if stats is None:
            return out
        active = stats.state in (RunState.ACQUIRING, RunState.CATCHING_UP)
        if active and self.behind_growing(now):
            out.append(Notice("warning", f"denoiser falling behind ({stats.frames_behind})"))
        last = self._last_denoised
        if (
            active
            and last is not None
            and stats.frames_received > last[2]
            and now - last[0] >= self.stall_s
        ):
            out.append(
                Notice("warning", f"denoiser stopped? no denoised frame for {now - last[0]:.0f} s")
            )
        if stats.denoised_missing:
            out.append(Notice("warning", f"{stats.denoised_missing} frames without denoised twin"))
        return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def model_label(provenance: Mapping[str, Any]) -> str:
    """``name-or-sha8 engine precision`` from a denoiser's provenance ("" if empty)."""
    name = provenance.get("model_name") or provenance.get("name")
    sha = provenance.get("model_sha256")
    parts = [
        str(name) if name else (str(sha)[:8] if sha else ""),
        str(provenance.get("engine") or ""),
        str(provenance.get("precision") or ""),
    ]
    return " ".join(p for p in parts if p)


def status_line(
    stats: LiveStats | None,
    provenance: Mapping[str, Any],
    *,
    renderer: str,
    frame: int | None = None,
    age_s: float | None = None,
) -> str:
    """Write the status bar's text.

    Parameters
    ----------
    stats : LiveStats or None
        The handler's statistics (None: no run yet).
    provenance : mapping
        The denoiser's provenance (model, engine, precision).
    renderer : str
        The rendering path (``"QImage"``).
    frame, age_s : int or float, optional
        The pair shown and its age.

    Returns
    -------
    str
        e.g. ``"acquiring · camera 98.0 fps · denoise 97.1 fps · latency p50/p99
        12.0/30.5 ms · behind 2 · queue 2 · disk 25.1 MiB/s · 1ad8149b torch fp32 ·
        frame 41 (0.05 s) · QImage"``.
    """
    parts = []
    if stats is None:
        parts.append("no run")
    else:
        parts += [
            stats.state,
            f"camera {stats.camera_fps:.1f} fps",
            f"denoise {stats.denoise_fps:.1f} fps",
            f"latency p50/p99 {_ms(stats.latency_p50_ms)}/{_ms(stats.latency_p99_ms)} ms",
            f"behind {stats.frames_behind}",
            f"queue {stats.queue_depth}",
            f"disk {stats.disk_mb_s:.1f} MiB/s",
        ]
    label = model_label(provenance)
    if label:
        parts.append(label)
    if frame is not None:
        parts.append(f"frame {frame}" + ("" if age_s is None else f" ({age_s:.2f} s)"))
    parts.append(renderer)
    return " · ".join(parts)
