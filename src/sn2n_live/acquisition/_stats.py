"""Live statistics of a live-denoise run: rates, latencies, missing-frame ranges.

Everything here is small, lock-light and safe to update from one thread while another
reads: the handler's threads own the writers, previews only read snapshots.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["ByteRate", "LatencyRecorder", "LiveStats", "RangeList", "RateMeter"]


@dataclass(frozen=True)
class LiveStats:
    """A snapshot of a live-denoise run, published while it runs.

    Attributes
    ----------
    state : str
        ``"waiting"`` (no sequence yet), ``"acquiring"``, ``"catching_up"`` (acquisition
        over, denoiser still working) or ``"finished"``.
    elapsed_s : float
        Seconds since the sequence started (0 before).
    frames_received : int
        Frames the handler has received from the MDA.
    raw_written : int
        Raw frames appended to the raw store.
    denoised_written : int
        Denoised frames appended to the denoised store.
    denoised_missing : int
        Frames that will have no denoised twin (preview policy, denoiser failure, ...).
    queue_depth : int
        Frames waiting for the denoiser, in memory or as positions to re-read.
    queued_mb : float
        Memory held by frames waiting for the denoiser, in MiB (bounded by the budget).
    spilled : int
        Frames queued as a position only (memory budget full) so far.
    raw_backlog : int
        Frames waiting for the raw writer.
    frames_behind : int
        ``frames_received - denoised_written - denoised_missing``.
    camera_fps : float
        Camera frame rate over the last ~2 s, from the runner's timestamps.
    denoise_fps : float
        Denoised frames written per second over the last ~2 s.
    latency_p50_ms, latency_p99_ms : float or None
        Frame arrival to denoised frame written, over the last 512 frames.
    frames_expected : int or None
        Frames the sequence will acquire, when its events were given up front.
    disk_mb_s : float
        MiB per second appended to the stores (raw, denoised, risk) over the last ~2 s.
    """

    state: str
    elapsed_s: float
    frames_received: int
    raw_written: int
    denoised_written: int
    denoised_missing: int
    queue_depth: int
    queued_mb: float
    spilled: int
    raw_backlog: int
    frames_behind: int
    camera_fps: float
    denoise_fps: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    frames_expected: int | None = None
    disk_mb_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the snapshot as a JSON-serializable dict."""
        return asdict(self)


class RateMeter:
    """Events per second over a sliding time window.

    Parameters
    ----------
    window_s : float
        Length of the window in seconds.
    maxlen : int
        At most this many timestamps are kept (bounds memory at any rate).
    """

    def __init__(self, window_s: float = 2.0, maxlen: int = 4096) -> None:
        self._window_s = window_s
        # deque.append is atomic in CPython, so producers need no lock.
        self._times: deque[float] = deque(maxlen=maxlen)

    def add(self, t: float) -> None:
        """Record one event at time ``t`` (seconds, any monotonic clock)."""
        self._times.append(t)

    def rate(self, now: float | None = None) -> float:
        """Events per second in the window ending at ``now`` (default: the last event)."""
        times = list(self._times)
        if len(times) < 2:
            return 0.0
        end = times[-1] if now is None else now
        recent = [t for t in times if t >= end - self._window_s]
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0


class ByteRate:
    """Bytes per second over a sliding window (e.g. what the writers put on disk).

    One thread adds (the writers' threads share it: ``deque.append`` is atomic), any
    thread reads.
    """

    def __init__(self, window_s: float = 2.0, maxlen: int = 8192) -> None:
        self._window_s = window_s
        self._events: deque[tuple[float, int]] = deque(maxlen=maxlen)

    def add(self, nbytes: int, t: float | None = None) -> None:
        """Record ``nbytes`` written at time ``t`` (default: now, perf_counter)."""
        self._events.append((time.perf_counter() if t is None else t, int(nbytes)))

    def mib_per_s(self, now: float | None = None) -> float:
        """MiB/s in the window ending at ``now`` (default: the last write; 0 if < 2)."""
        events = list(self._events)
        if not events:
            return 0.0
        end = events[-1][0] if now is None else now
        recent = [(t, n) for t, n in events if t >= end - self._window_s]
        if len(recent) < 2:
            return 0.0
        span = max(end - recent[0][0], 1e-6)
        return sum(n for _, n in recent[1:]) / span / 2**20


class LatencyRecorder:
    """Keeps every latency of a run (4 bytes each) and a recent window for live stats."""

    def __init__(self, recent: int = 512) -> None:
        self._all = array("f")
        self._recent: deque[float] = deque(maxlen=recent)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        """Record one latency in milliseconds."""
        with self._lock:
            self._all.append(ms)
            self._recent.append(ms)

    def percentiles(self, *, recent: bool) -> tuple[float | None, float | None]:
        """Return ``(p50, p99)`` in ms of the recent window or of the whole run."""
        with self._lock:
            values = np.array(self._recent if recent else self._all, dtype=np.float64)
        if values.size == 0:
            return None, None
        p50, p99 = np.percentile(values, [50, 99])
        return round(float(p50), 3), round(float(p99), 3)


class RangeList:
    """A set of non-negative integers stored as sorted, merged inclusive ranges.

    Frame numbers mostly arrive in increasing order, so adding is amortized O(1).
    """

    def __init__(self) -> None:
        self._ranges: list[list[int]] = []
        self._lock = threading.Lock()

    def add(self, start: int, stop: int | None = None) -> None:
        """Add ``start..stop`` (inclusive; ``stop`` defaults to ``start``)."""
        stop = start if stop is None else stop
        if stop < start:
            return
        with self._lock:
            ranges = self._ranges
            if not ranges or start > ranges[-1][1] + 1:
                ranges.append([start, stop])
            elif start >= ranges[-1][0]:
                ranges[-1][1] = max(ranges[-1][1], stop)
            else:
                self._insert(start, stop)

    def _insert(self, start: int, stop: int) -> None:
        merged: list[list[int]] = []
        for lo, hi in sorted([*self._ranges, [start, stop]]):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._ranges = merged

    def __len__(self) -> int:
        with self._lock:
            return sum(hi - lo + 1 for lo, hi in self._ranges)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        with self._lock:
            return any(lo <= value <= hi for lo, hi in self._ranges)

    def first(self) -> int | None:
        """Smallest member, or None if empty."""
        with self._lock:
            return self._ranges[0][0] if self._ranges else None

    def ranges(self) -> list[list[int]]:
        """Inclusive ``[start, stop]`` ranges, sorted."""
        with self._lock:
            return [list(r) for r in self._ranges]
