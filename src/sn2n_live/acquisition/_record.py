"""The record of one run: counts, missing frames, errors, notes, timings, run.json.

One :class:`RunRecord` per run, in the process that writes the stores. run.json is its
:meth:`RunRecord.document`; a :class:`~sn2n_live.acquisition._contracts.RunSummary` is
only ever built from such a document (:func:`summary_from_document`), so the summary a
caller gets and the run.json on disk cannot disagree. When the denoise process dies,
:func:`record_after_child_death` rebuilds the counts from the stores' journals.

Who writes what (each field has one writer thread, or the named lock):

============================  ==========================================================
``counts.received``,          relay thread (``accept``; the child's main loop in
``counts.unplaced`` (set),    process mode)
``counts.spilled``
``counts.raw_written``,       raw-writer thread
``counts.raw_done``
``counts.denoised_written``,  denoise worker
``counts.reread``
``missing`` (by reason)       relay thread and denoise worker: :class:`RangeList` has
                              its own lock
``errors``                    any thread, under ``ErrorLog``'s lock
``notes``                     any thread, under ``RunRecord``'s lock
``timing``                    ``t_start``: relay; ``t_acq_end``: relay; ``t_done``,
                              ``busy_s``, ``held_for_raw_s``: denoise worker; runner
                              times: raw-writer thread
run.json                      any thread, under ``RunRecord``'s file lock; final once
============================  ==========================================================
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import platform
import threading
import time
import traceback
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import EmitLoopError

from sn2n_live.acquisition._contracts import RunStatus, RunSummary
from sn2n_live.acquisition._stats import ByteRate, LatencyRecorder, RangeList, RateMeter
from sn2n_live.acquisition._writers import RUN_JSON, write_json_atomic

__all__ = [
    "MISSING_REASONS",
    "RUN_FORMAT",
    "ErrorLog",
    "RunCounts",
    "RunRecord",
    "Timing",
    "journal_frames",
    "merge_errors",
    "record_after_child_death",
    "summary_from_document",
]

_log = logging.getLogger("sn2n_live.acquisition")

RUN_FORMAT = "sn2n-live-run"
RUN_FORMAT_VERSION = 1
# Why a frame has no denoised twin (run.json: missing_denoised.by_reason).
MISSING_REASONS = (
    "preview",
    "denoiser_failed",
    "catch_up_canceled",
    "raw_unavailable",
    "denoise_process_died",
)
# Distinct errors listed in run.json; repeats of a listed one only raise its count.
_MAX_ERRORS = 100


class ErrorLog:
    """Errors of a run in one schema: each distinct error once, with a count.

    An entry: ``where``, ``type``, ``message``, ``frame`` (first occurrence), ``count``,
    ``time`` (ISO 8601, first occurrence), ``traceback`` (run.json only), and ``index``
    when the frame's MDA index is known.
    """

    def __init__(self) -> None:
        self._entries: list[dict[str, Any]] = []
        self._by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.not_listed = 0  # occurrences of distinct errors beyond the cap
        self._lock = threading.Lock()

    def add(
        self,
        where: str,
        exc: BaseException,
        frame: int | None = None,
        index: Mapping[str, int] | None = None,
    ) -> None:
        """Record ``exc``; a repeat of a recorded error only counts (and is logged once)."""
        # psygnal wraps a listener's exception in an EmitLoopError whose message quotes
        # the call's local variables: every repeat would read as a new error.
        while isinstance(exc, EmitLoopError) and exc.__cause__ is not None:
            exc = exc.__cause__
        key = (where, type(exc).__name__, str(exc)[:2000])
        with self._lock:  # one lock for look-up and append: two threads failing alike
            seen = self._by_key.get(key)
            if seen is not None:
                seen["count"] += 1
                return
            if len(self._entries) >= _MAX_ERRORS:
                self.not_listed += 1
                return
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            entry: dict[str, Any] = {
                "where": where,
                "type": key[1],
                "message": key[2],
                "frame": frame,
                "count": 1,
                "time": _dt.datetime.now(_dt.UTC).isoformat(),
                "traceback": "".join(tb[-6:])[-4000:],
            }
            if index is not None:
                entry["index"] = dict(index)
            self._entries.append(entry)
            self._by_key[key] = entry
        _log.error("%s: %s: %s", where, type(exc).__name__, exc)

    def extend(self, entries: list[dict[str, Any]]) -> None:
        """Merge entries recorded elsewhere (the other process), counting repeats."""
        with self._lock:
            for entry in entries:
                key = (entry["where"], entry["type"], entry["message"])
                seen = self._by_key.get(key)
                if seen is not None:
                    seen["count"] += entry.get("count", 1)
                elif len(self._entries) < _MAX_ERRORS:
                    copy = {**entry, "count": entry.get("count", 1)}
                    self._entries.append(copy)
                    self._by_key[key] = copy
                else:
                    self.not_listed += entry.get("count", 1)

    def entries(self) -> list[dict[str, Any]]:
        """Return a copy of the entries (with tracebacks)."""
        with self._lock:
            return [dict(e) for e in self._entries]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class RunCounts:
    """Frame counts of a run; see the module docstring for which thread writes which."""

    received: int = 0
    raw_written: int = 0  # placed raw frames in the raw store
    raw_done: int = 0  # frames the raw writer is finished with (written or failed)
    denoised_written: int = 0
    spilled: int = 0
    reread: int = 0
    previewed: int = 0  # frames denoised ahead of the saving order for a preview


@dataclass
class Timing:
    """Clocks of a run (``perf_counter`` seconds unless named otherwise)."""

    start_iso: str | None = None
    t_start: float | None = None
    t_acq_end: float | None = None
    t_done: float | None = None
    busy_s: float = 0.0
    preview_s: float = 0.0  # inside denoise for the preview lane (not in busy_s)
    held_for_raw_s: float = 0.0
    first_runner_ms: float | None = None
    last_runner_ms: float | None = None
    n_timed: int = 0
    # 4 bytes per frame, for the frameReady cost percentiles.
    frame_ready_us: array = field(default_factory=lambda: array("f"))

    def camera_fps(self) -> float:
        """Frame rate from the runner's timestamps (first to last timed frame)."""
        n = self.n_timed
        if self.first_runner_ms is not None and self.last_runner_ms is not None and n > 1:
            span = (self.last_runner_ms - self.first_runner_ms) / 1000.0
            return (n - 1) / span if span > 0 else 0.0
        return 0.0


class DoseMeter:
    """The light a run delivered, summed over its saved raw frames (run.json ``dose``).

    Fed by the raw writer (one call per saved frame, O(1)). The laser power is the
    ``(device, property)`` value read when the run was set up (percent of maximum),
    updated by any event whose ``properties`` set that property (which persists, as on
    the core); unknown when no laser was given.

    Parameters
    ----------
    laser : tuple of (str, str, float), optional
        ``(device, property, percent)``: the laser power property and its value at the
        start of the run.
    """

    def __init__(self, laser: Sequence[Any] | None = None) -> None:
        self.frames = 0
        self.exposure_ms = 0.0
        self.relative = 0.0
        self.frames_without_exposure = 0
        self._property: tuple[str, str] | None = None
        self._percent: float | None = None
        self.start_percent: float | None = None
        if laser is not None:
            device, prop, percent = laser
            self._property = (str(device), str(prop))
            self._percent = self.start_percent = float(percent)

    def add(self, exposure_ms: float | None, properties: Iterable[Any] | None) -> None:
        """Count one saved frame of ``exposure_ms`` acquired with the event's properties."""
        if self._property is not None and properties:
            for device, prop, value in properties:
                if (device, prop) == self._property:
                    self._percent = float(value)
        self.frames += 1
        if exposure_ms is None:
            self.frames_without_exposure += 1
            return
        self.exposure_ms += exposure_ms
        if self._percent is not None:
            self.relative += exposure_ms * self._percent / 100.0

    def summary(self) -> dict[str, Any]:
        """run.json ``dose``."""
        known = self._percent is not None
        return {
            "frames": self.frames,
            "exposure_ms_total": round(self.exposure_ms, 6),
            "frames_without_exposure": self.frames_without_exposure,
            "laser_property": list(self._property) if self._property else None,
            "laser_power_percent_start": self.start_percent,
            "relative_dose": round(self.relative, 6) if known else None,
            "units": "relative_dose: sum of exposure_ms x laser power fraction (0..1)",
        }


class RunRecord:
    """What run.json says about one run, and the file itself.

    Parameters
    ----------
    run_dir : pathlib.Path
        The run folder.
    header : mapping
        The parts of run.json fixed at the start: ``run_info``, ``profile``, ``model``,
        ``options``.
    """

    def __init__(
        self, run_dir: Path, header: Mapping[str, Any], laser: Sequence[Any] | None = None
    ) -> None:
        self.run_dir = run_dir
        self.header = dict(header)
        self.dose = DoseMeter(laser)
        self.counts = RunCounts()
        self.timing = Timing()
        self.errors = ErrorLog()
        self.missing = {reason: RangeList() for reason in MISSING_REASONS}
        self.unplaced = RangeList()
        self.raw_unsaved = RangeList()  # raw writes that failed: frames in no store
        self.latency = LatencyRecorder()
        self.camera_rate = RateMeter()
        self.denoise_rate = RateMeter()
        self.disk_rate = ByteRate()  # bytes the writers append (raw, denoised, risk)
        self.risk_fractions: list[float] | None = None  # denoise worker, in frame order
        self.canceled = False
        self._notes: list[str] = []
        self._lock = threading.Lock()
        self._file_lock = threading.Lock()
        self._final = False

    # -- recording ----------------------------------------------------------------------

    def note(self, text: str) -> None:
        """Add a warning that is not an error (run.json ``notes``)."""
        with self._lock:
            self._notes.append(text)

    def notes(self) -> list[str]:
        """Return the notes so far."""
        with self._lock:
            return list(self._notes)

    def add_missing(self, reason: str, seq: int) -> None:
        """Record that frame ``seq`` gets no denoised twin, and why."""
        self.missing[reason].add(seq)

    def missing_total(self) -> int:
        """Frames without a denoised twin so far."""
        return sum(len(r) for r in self.missing.values())

    def missing_union(self) -> RangeList:
        """Every frame without a denoised twin, whatever the reason."""
        out = RangeList()
        for ranges in self.missing.values():
            for lo, hi in ranges.ranges():
                out.add(lo, hi)
        return out

    def add_runner_time(self, runner_ms: float | None, t_arrival: float) -> None:
        """Feed the camera rate: the runner's clock if known, else the arrival time."""
        if runner_ms is None:
            self.camera_rate.add(t_arrival)
            return
        t = self.timing
        self.camera_rate.add(runner_ms / 1000.0)
        if t.first_runner_ms is None:
            t.first_runner_ms = runner_ms
        t.last_runner_ms = runner_ms
        t.n_timed += 1

    # -- run.json -------------------------------------------------------------------------

    def document(
        self, status: str, state: str, extra: Mapping[str, Any], extra_notes: list[str]
    ) -> dict[str, Any]:
        """Return run.json for the run as it stands.

        ``extra`` holds what the pipeline knows and the record does not: ``sequence``,
        ``layout``, ``stores``.
        """
        t = self.timing
        c = self.counts
        missing = self.missing_union()
        p50, p99 = self.latency.percentiles(recent=False)
        fr = np.asarray(t.frame_ready_us, dtype=np.float64)
        acq_end = t.t_acq_end or t.t_done or time.perf_counter()
        return {
            "format": RUN_FORMAT,
            "format_version": RUN_FORMAT_VERSION,
            "status": status,
            "state": state,
            "updated": _dt.datetime.now(_dt.UTC).isoformat(),
            "run_info": self.header.get("run_info"),
            "profile": self.header.get("profile"),
            "sequence": extra.get("sequence"),
            "layout": extra.get("layout"),
            "stores": extra.get("stores"),
            "model": self.header.get("model"),
            "options": self.header.get("options"),
            "counts": {
                "received": c.received,
                "raw_written": c.raw_written,
                "denoised_written": c.denoised_written,
                "denoised_missing": len(missing),
                "unplaced": len(self.unplaced),
                "spilled": c.spilled,
                "reread": c.reread,
                "previewed": c.previewed,
            },
            "missing_denoised": {
                "ranges": missing.ranges(),
                "first": missing.first(),
                "by_reason": {k: v.ranges() for k, v in self.missing.items() if len(v)},
            },
            "unplaced_frames": self.unplaced.ranges(),
            "raw_unsaved_frames": self.raw_unsaved.ranges(),
            "canceled": self.canceled,
            "timings": {
                "start": t.start_iso,
                "acquisition_s": round(acq_end - (t.t_start or acq_end), 4),
                "catch_up_s": round((t.t_done or acq_end) - acq_end, 4),
                "camera_fps": round(t.camera_fps(), 3),
                "denoise_fps": round(c.denoised_written / t.busy_s, 3) if t.busy_s > 0 else 0.0,
                "denoise_held_for_raw_writer_s": round(t.held_for_raw_s, 3),
                "preview_s": round(t.preview_s, 3),
                "latency_ms": {"p50": p50, "p99": p99},
                "frame_ready_us": {"p50": _percentile(fr, 50), "p99": _percentile(fr, 99)},
            },
            "dose": self.dose.summary(),
            "reconstruction": extra.get("reconstruction"),
            "versions": _versions(),
            "risk": self._risk_summary(),
            "raw_rescue": None,
            "errors": self.errors.entries(),
            "errors_not_listed": self.errors.not_listed,
            "notes": [*self.notes(), *extra_notes],
        }

    def write(self, document: Mapping[str, Any], *, final: bool = False) -> None:
        """Write run.json atomically; after the final write, later ones are ignored."""
        with self._file_lock:
            if self._final:
                return
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.run_dir / RUN_JSON, document)
            self._final = final

    def _risk_summary(self) -> dict[str, Any] | None:
        """Per-run summary of the risk fractions (fraction of pixels with risk > 0.5)."""
        if self.risk_fractions is None:
            return None
        fractions = np.asarray(self.risk_fractions[:])  # copy: the worker may append
        if not fractions.size:
            return {"frames": 0, "mean_fraction": None, "max_fraction": None}
        return {
            "frames": int(fractions.size),
            "mean_fraction": round(float(fractions.mean()), 6),
            "max_fraction": round(float(fractions.max()), 6),
        }


def summary_from_document(document: Mapping[str, Any], run_dir: Path) -> RunSummary:
    """Build the :class:`RunSummary` of a run from its run.json (the only builder)."""
    counts = document.get("counts", {})
    missing = document.get("missing_denoised", {})
    timings = document.get("timings", {})
    latency = timings.get("latency_ms", {})
    frame_ready = timings.get("frame_ready_us", {})
    rescue = document.get("raw_rescue") or {}
    return RunSummary(
        status=document["status"],
        run_dir=run_dir,
        frames_received=counts.get("received", 0),
        raw_written=counts.get("raw_written", 0) + counts.get("raw_rescued", 0),
        denoised_written=counts.get("denoised_written", 0),
        missing_denoised=missing.get("ranges", []),
        first_missing_denoised=missing.get("first"),
        unplaced_frames=document.get("unplaced_frames", []),
        errors=[{k: v for k, v in e.items() if k != "traceback"} for e in document["errors"]],
        acquisition_s=timings.get("acquisition_s", 0.0),
        catch_up_s=timings.get("catch_up_s", 0.0),
        camera_fps=timings.get("camera_fps", 0.0),
        denoise_fps=timings.get("denoise_fps", 0.0),
        latency_p50_ms=latency.get("p50"),
        latency_p99_ms=latency.get("p99"),
        frame_ready_p50_us=frame_ready.get("p50"),
        frame_ready_p99_us=frame_ready.get("p99"),
        notes=list(document.get("notes", [])),
        rescue_stores=list(rescue.get("stores", [])),
    )


def record_after_child_death(
    run_dir: Path,
    *,
    received: int,
    rescued: RangeList,
    rescue_stores: list[str],
    errors: list[dict[str, Any]],
    frame_ready_us: array,
) -> dict[str, Any]:
    """Return the final run.json of a run whose denoise process died, from the stores.

    The child's last run.json gives what does not change (header, layout, stores); the
    counts and missing frames come from the journals (a line per frame handed to a
    store) and from the frames this process rescued, so they equal what the stores hold.
    """
    try:
        document = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        document = {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION}
    raw_frames = journal_frames(run_dir, "raw")
    denoised_frames = journal_frames(run_dir, "denoised")
    unplaced, unsaved = _raw_homes(run_dir, received, raw_frames, rescued)
    by_reason = _missing_by_reason(document, received, denoised_frames, unplaced)
    missing = RangeList()
    for ranges in by_reason.values():
        for lo, hi in ranges.ranges():
            missing.add(lo, hi)
    merge_errors(document, errors)
    fr = np.asarray(frame_ready_us, dtype=np.float64)
    timings = dict(document.get("timings") or {})
    timings["frame_ready_us"] = {"p50": _percentile(fr, 50), "p99": _percentile(fr, 99)}
    counts = dict(document.get("counts") or {})
    counts.update(
        received=received,
        raw_written=len(raw_frames),
        raw_rescued=len(rescued),
        denoised_written=len(denoised_frames),
        denoised_missing=len(missing),
        unplaced=len(unplaced),
    )
    document.update(
        status=RunStatus.FAILED.value,
        state="finished",
        updated=_dt.datetime.now(_dt.UTC).isoformat(),
        counts=counts,
        missing_denoised={
            "ranges": missing.ranges(),
            "first": missing.first(),
            "by_reason": {k: v.ranges() for k, v in by_reason.items() if len(v)},
        },
        timings=timings,
        unplaced_frames=unplaced.ranges(),
        raw_unsaved_frames=unsaved.ranges(),
        raw_rescue={"stores": sorted(rescue_stores), "frames": rescued.ranges()},
    )
    document.setdefault("notes", [])
    return document


def merge_errors(document: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    """Add errors recorded in another process to run.json's, counting repeats once."""
    log = ErrorLog()
    log.extend(list(document.get("errors") or []))
    log.extend(entries)
    document["errors"] = log.entries()
    document["errors_not_listed"] = log.not_listed + int(document.get("errors_not_listed") or 0)


def _raw_homes(
    run_dir: Path, received: int, raw_frames: set[int], rescued: RangeList
) -> tuple[RangeList, RangeList]:
    """Return the unplaced frames and those in no store (their raw write failed)."""
    # The journal, not the last heartbeat's list: frames may have come since.
    unplaced_frames = journal_frames(run_dir, "unplaced")
    unplaced, unsaved = RangeList(), RangeList()
    rescued_frames = {i for lo, hi in rescued.ranges() for i in range(lo, hi + 1)}
    for seq in range(received):
        if seq in unplaced_frames:
            unplaced.add(seq)
        elif seq not in raw_frames and seq not in rescued_frames:
            unsaved.add(seq)
    return unplaced, unsaved


def _missing_by_reason(
    document: Mapping[str, Any], received: int, denoised: set[int], unplaced: RangeList
) -> dict[str, RangeList]:
    """Return why each placed frame has no denoised twin.

    A reason the child had recorded stands; any other frame lost its twin with the child.
    """
    previous = {
        reason: ranges
        for reason, ranges in (document.get("missing_denoised") or {}).get("by_reason", {}).items()
        if reason in MISSING_REASONS
    }
    by_reason = {reason: RangeList() for reason in MISSING_REASONS}
    for seq in range(received):
        if seq in denoised or seq in unplaced:
            continue
        reason = next(
            (r for r, ranges in previous.items() if any(lo <= seq <= hi for lo, hi in ranges)),
            "denoise_process_died",
        )
        by_reason[reason].add(seq)
    return by_reason


def journal_frames(run_dir: Path, role: str) -> set[int]:
    """Return the frame numbers listed in the journal ``<role>.frames.jsonl``.

    A torn last line (a kill while writing it) is ignored; no journal lists none.
    """
    name = f"{role}.frames.jsonl"
    frames: set[int] = set()
    try:
        lines = (run_dir / name).read_text(encoding="utf-8").splitlines()
    except OSError:
        return frames
    for line in lines:
        try:
            frames.add(int(json.loads(line)["frame"]))
        except (ValueError, KeyError, TypeError):
            continue
    return frames


def _percentile(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values.size else None


@functools.cache
def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in (
        "sn2n-live",
        "numpy",
        "pymmcore-plus",
        "pymmcore",
        "useq-schema",
        "ome-writers",
        "zarr",
        "tensorstore",
        "acquire-zarr",
        "psygnal",
        "torch",
    ):
        try:
            out[dist] = _metadata.version(dist)
        except _metadata.PackageNotFoundError:
            out[dist] = None
    return out
