"""The live-denoise hook with its writers and denoiser in a separate process.

Why: pymmcore-plus pops every frame on a Python thread. In one process, any thread that
runs Python (zarr-python's chunk writes, the denoiser's glue code) competes with it for
the GIL, and a low-priority thread that holds the GIL while the OS has descheduled it
stalls the acquisition thread no matter its ``nice`` level. Measured on 2 cores
(DemoCamera 2048^2 hardware-sequenced at ~90 fps): two nice-19 Python threads made
``popNextImageAndMD`` take 6 ms instead of 0.9 ms and overflowed the camera buffer,
while two nice-19 *processes* spinning on both cores did not slow it.

:class:`ProcessLiveDenoiseHandler` keeps in the acquisition process only:

- ``frameReady`` (relay thread): appends the frame to an inbox, as the in-process handler;
- a feeder thread that copies each frame into a shared-memory ring (``numpy.copyto``
  releases the GIL) and sends a small message (frame number, index, SIM metadata,
  timing) to the child;
- a reader thread that receives live statistics, the latest raw/denoised pair and the
  run summary and re-emits them on :attr:`events`.

The child process runs an ordinary :class:`LiveDenoiseHandler` (same stores, run.json,
policies, failure handling). Raw frames stay referenced in this process until the child
reports them written; if the child dies, this process writes every frame the child had
not written, and every later one, to ``raw-rescue-<h>x<w>.ome.zarr`` in the run folder and
records the failure in run.json.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import mmap
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import traceback
import weakref
from array import array
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, Listener
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import useq

from sn2n_live.acquisition._live import (
    _LOST_FINISH,
    FrameDenoiser,
    LatestPair,
    LiveDenoiseEvents,
    LiveDenoiseHandler,
    RunSummary,
    _Inbox,
    check_run_folder,
    load_denoiser,
    wait_until_done,
)
from sn2n_live.acquisition._stats import LiveStats, RangeList
from sn2n_live.acquisition._writers import RUN_JSON, flat_store_settings, write_json_atomic

__all__ = ["ProcessLiveDenoiseHandler"]

# Shared with the child (int64): frames its raw writer is done with (in arrival order);
# the pair slot's generation (odd while the child writes it, a seqlock) and the last
# generation this process copied out.
_RAW_DONE, _PAIR_GEN, _PAIR_TAKEN = 0, 1, 2
_N_COUNTERS = 3
_log = logging.getLogger("sn2n_live.acquisition")
_POLL_S = 0.002
# What the child needs from pymmcore-plus's frame metadata (the rest stays here).
_META_KEYS = ("runner_time_ms", "exposure_ms", "hardware_triggered", "pixel_size_um")
# The latest raw/denoised pair is published at most this often once the previous one
# was taken (a preview's rate), and refreshed this often while nobody takes them.
_PAIR_MIN_INTERVAL_S = 0.05
_PAIR_REFRESH_S = 1.0
_RESCUE_PREFIX = "raw-rescue"
_DEFAULT_RING_BYTES = 512 * 2**20
_MIN_RING_BYTES = 64 * 2**20
_MAX_AUTO_RING_BYTES = 4096 * 2**20


class _InFlight(NamedTuple):
    """A frame sent to the child and not yet written by it (rescued if the child dies)."""

    seq: int
    slot: int | None  # ring slot, or None: ``image`` holds the frame
    image: np.ndarray | None
    index: dict[str, int]
    meta: dict[str, Any]
    shape: tuple[int, ...] | None = None
    dtype: np.dtype | None = None


ModelSpec = FrameDenoiser | str | os.PathLike[str] | Callable[[], FrameDenoiser]


class ProcessLiveDenoiseHandler:
    """A :class:`LiveDenoiseHandler` running in a child process.

    Same MDA callbacks and public API (``events``, ``latest``, ``latest_raw``, ``stats``,
    ``wait``, ``cancel_catch_up``, ``finish``); the run folder is identical. The child
    starts (and loads the model) in the constructor, so the first frame does not wait
    for it.

    Parameters
    ----------
    model : FrameDenoiser, str, os.PathLike or callable
        A ``.sn2n`` package path (loaded in the child), a picklable denoiser, or a
        picklable zero-argument callable that builds one in the child (e.g.
        ``functools.partial(build_denoiser, ...)``: engines such as ONNX Runtime or
        TensorRT sessions cannot be pickled).
    out : str or os.PathLike
        Run folder (must not exist or be empty).
    ring_mb : float, optional
        Shared memory holding every frame from its arrival until the child has written
        it to the raw store (touched once here, before the acquisition). When the raw
        writer falls further behind, frames wait in this process's memory, which slows
        the acquisition thread (fresh pages for every new frame). Default: the whole run
        if ``events`` and ``frame_bytes_hint`` tell its size, else 512 MB; at most 4 GB,
        80 % of free ``/dev/shm`` and a quarter of free RAM.
    frame_bytes_hint : int, optional
        Bytes per camera frame, for sizing the ring (:func:`live_denoise` passes the
        core's image size).
    process_nice : int
        Nice value of the denoise process (Unix), so the camera and the acquisition
        thread are scheduled first; the handler's ``writer_nice`` and ``denoise_nice``
        add to it (capped at 19).
    start_timeout_s : float
        Seconds to wait for the child to import, load the model and open the run.
    **options
        Passed to :class:`LiveDenoiseHandler` in the child (``events``, ``policy``,
        ``memory_budget_mb``, ``denoise_nice``, ...).

    Raises
    ------
    ValueError
        For an option the handler rejects (raised in the child, re-raised here), or a
        model that cannot be sent to the child.
    RuntimeError
        If the child does not start.
    """

    def __init__(
        self,
        model: ModelSpec,
        out: str | os.PathLike[str],
        *,
        ring_mb: float | None = None,
        frame_bytes_hint: int | None = None,
        process_nice: int = 10,
        start_timeout_s: float = 120.0,
        **options: Any,
    ) -> None:
        ring_bytes = _ring_bytes(ring_mb, frame_bytes_hint, options.get("events"))
        if isinstance(process_nice, bool) or process_nice not in range(20):
            raise ValueError(f"process_nice must be an int in 0..19; got {process_nice!r}.")
        if not isinstance(model, str | os.PathLike):
            try:
                pickle.dumps(model)
            except Exception as exc:
                raise ValueError(
                    f"model {type(model).__name__} cannot be sent to the denoise process "
                    f"({type(exc).__name__}: {exc}); pass a .sn2n path or a picklable "
                    "factory such as functools.partial(build_denoiser, ...)."
                ) from exc
        # Here, not only in the child: no process is started for a run that cannot be saved.
        self.run_dir = check_run_folder(out)
        self.events = LiveDenoiseEvents()
        self._header = SharedMemory(create=True, size=8 * _N_COUNTERS)
        self._counters = np.ndarray((_N_COUNTERS,), np.int64, buffer=self._header.buf)
        self._counters[:] = 0
        self._ring = SharedMemory(create=True, size=ring_bytes)
        self._pair_slot: SharedMemory | None = None  # sized by the first frame
        # Fault every page in now: a page fault during the burst takes the process's
        # memory lock that the acquisition thread's own allocations need.
        np.ndarray((self._ring.size,), np.uint8, buffer=self._ring.buf)[:: mmap.PAGESIZE] = 0
        self._slot_bytes = 0
        self._n_slots = 0
        self._next_slot = 0
        self._slots_used = 0
        self._inbox = _Inbox(_POLL_S)
        # Frames sent and not yet written by the child: (seq, slot or inline image, ...).
        self._in_flight: deque[_InFlight] = deque()
        self._frame_ready_us = array("f")
        self._n_received = 0
        self._accepting = False
        self._started = threading.Event()
        self._done = threading.Event()
        self._child_gone = threading.Event()
        self._closing = False
        self._relay: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._latest: LatestPair | None = None
        # The header of the newest pair the child put in shared memory, until taken.
        self._pair_waiting: tuple[Any, ...] | None = None
        self._pair_lock = threading.Lock()
        self._latest_raw: np.ndarray | None = None
        self._stats: LiveStats | None = None
        self._summary: RunSummary | None = None
        self._errors: list[dict[str, Any]] = []
        self._rescued: dict[str, Any] = {}
        self._rescued_frames = RangeList()

        # A fresh interpreter (not multiprocessing's spawn, which re-runs the user's
        # __main__ script) that connects back over an authenticated local socket/pipe.
        self._process, self._conn = _start_child(start_timeout_s)
        payload = pickle.dumps(
            (model, str(self.run_dir), options, self._header.name, self._ring.name, process_nice)
        )
        self._conn.send((list(sys.path), payload))
        self._await_ready(start_timeout_s)
        # Non-daemon, like the in-process writers: a script that ends without wait()
        # still gets its frames to the child. Started with the sequence.
        self._feeder = threading.Thread(target=self._feed_loop, name="sn2n-feeder")
        self._reader = threading.Thread(target=self._read_loop, name="sn2n-reader", daemon=True)
        self._reader.start()
        atexit.register(_close_unstarted, weakref.ref(self))

    # -- public API (same as LiveDenoiseHandler) -----------------------------------------

    @property
    def started(self) -> bool:
        """Whether a sequence started."""
        return self._started.is_set()

    @property
    def finished(self) -> bool:
        """Whether the run is over: stores closed, run.json final."""
        return self._done.is_set()

    @property
    def pid(self) -> int | None:
        """Process id of the denoise process."""
        return self._process.pid

    def latest(self) -> LatestPair | None:
        """Newest raw/denoised pair taken from the denoise process.

        Pairs are copied into this process only when taken: by a listener of
        ``events.pair`` (as they arrive) or by this call, so a run nobody watches
        spends no time here on copying them. The child publishes the next pair 50 ms
        after one was taken, else once a second, and the last one at the end of the
        run: a preview polling at its own rate gets pairs at most one poll interval old.
        """
        if self._pair_waiting is not None:
            self._take_pair()
        return self._latest

    def latest_raw(self) -> np.ndarray | None:
        """Newest raw frame received, denoised or not."""
        return self._latest_raw

    def stats(self) -> LiveStats:
        """Newest live statistics from the denoise process (every ``stats_interval_s``)."""
        if self._stats is not None:
            return self._stats
        return LiveStats(
            state="waiting", elapsed_s=0.0, frames_received=self._n_received, raw_written=0,
            denoised_written=0, denoised_missing=0, queue_depth=0, queued_mb=0.0, spilled=0,
            raw_backlog=self._n_received, frames_behind=0, camera_fps=0.0, denoise_fps=0.0,
            latency_p50_ms=None, latency_p99_ms=None,
        )  # fmt: skip

    def wait(
        self,
        timeout: float | None = None,
        progress: Callable[[LiveStats], None] | None = None,
        interval_s: float = 0.5,
    ) -> RunSummary:
        """Block until the run is over; see :meth:`LiveDenoiseHandler.wait`.

        Raises
        ------
        TimeoutError
            If the run is not over within ``timeout`` (it keeps running).
        """
        wait_until_done(self._done, self.stats, timeout, progress, interval_s)
        if self._feeder.is_alive():
            self._feeder.join()
        _join(self._process, 30)
        assert self._summary is not None
        return self._summary

    def cancel_catch_up(self) -> None:
        """Stop denoising frames still queued (they are recorded as missing)."""
        self._send_now(("cancel_catch_up",))

    def finish(
        self,
        *,
        interrupted: bool = True,
        reason: str = "the MDA did not report the end of the sequence",
    ) -> None:
        """End a run whose ``sequenceFinished`` never arrived; see the in-process handler."""
        if self._started.is_set():
            self._accepting = False
            self._inbox.put(("finish", interrupted, reason))

    def close(self) -> None:
        """End the denoise process of a handler whose sequence never started."""
        if not self._started.is_set():
            self._closing = True
            self._send_now(("close",))
            _join(self._process, 10)

    # -- MDA callbacks (relay thread) -------------------------------------------------------

    def sequenceStarted(self, sequence: useq.MDASequence | None = None, meta: Any = None) -> None:
        """Start the run in the denoise process."""
        try:
            if self._started.is_set():
                return
            current = threading.current_thread()
            self._relay = None if current is threading.main_thread() else current
            self._inbox.put(("start", sequence if type(sequence) is useq.MDASequence else None))
            self._accepting = True
            self._started.set()
            self._feeder.start()
        except Exception as exc:  # a raising handler kills pymmcore's relay
            self._record_error("sequenceStarted", exc)

    def frameReady(self, img: np.ndarray, event: useq.MDAEvent, meta: Any = None) -> None:
        """Queue the frame for the feeder; O(1), never raises."""
        t0 = time.perf_counter()
        try:
            if not self._accepting:
                return
            if img.base is not None or not img.flags.owndata:
                img = img.copy()  # a view into a buffer the camera may reuse
            self._inbox.put(("frame", self._n_received, img, event, meta, t0))
            self._n_received += 1
            self._latest_raw = img
        except Exception as exc:  # a raising handler kills pymmcore's relay
            self._record_error("frameReady", exc)
        finally:
            self._frame_ready_us.append((time.perf_counter() - t0) * 1e6)

    def sequenceCanceled(self, sequence: useq.MDASequence | None = None) -> None:
        """Forward the cancel (``sequenceFinished`` follows)."""
        self._inbox.put(("canceled",))

    def sequenceFinished(self, sequence: useq.MDASequence | None = None) -> None:
        """End of acquisition: the child drains, catches up and closes the stores."""
        if self._accepting:
            self._accepting = False
            self._inbox.put(("end",))

    # -- feeder thread ------------------------------------------------------------------------

    def _feed_loop(self) -> None:
        ended = False
        while not (ended and self._done.is_set()):
            try:
                message = self._inbox.get(timeout=0.2)
            except queue.Empty:
                message = None
            if message is None and not ended:
                self._check_relay()
            if message is not None:
                ended = ended or message[0] in ("end", "finish")
                # A dead child raises here; the reader thread notices, rescue below.
                with contextlib.suppress(OSError, EOFError, ValueError):
                    self._dispatch(message)
            if self._child_gone.is_set():
                self._rescue_in_flight()
                if ended:
                    self._close_rescue()
                    self._finish_after_child_death()
                    return

    def _check_relay(self) -> None:
        """End the run if the thread that delivered ``sequenceStarted`` is gone.

        As :meth:`LiveDenoiseHandler._check_relay`: pymmcore-plus 0.18.1's relay can exit
        without delivering ``sequenceFinished``; its stop flag says whether the MDA ended.
        """
        relay = self._relay
        if relay is None or relay.is_alive() or not self._accepting:
            return
        stop_event = getattr(relay, "_stop_event", None)
        if stop_event is not None and stop_event.is_set():
            self.finish(interrupted=False, reason=_LOST_FINISH)
        else:
            self.finish(reason="the MDA relay thread ended without sequenceFinished")

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "frame":
            self._feed_frame(*message[1:])
        elif self._child_gone.is_set():
            return
        elif kind == "end":
            self._send(("end", self._frame_ready_us.tobytes()))
        else:
            self._send(message)

    def _feed_frame(
        self, seq: int, img: np.ndarray, event: useq.MDAEvent, meta: Any, t0: float
    ) -> None:
        meta = meta or {}
        small = {k: meta[k] for k in _META_KEYS if k in meta}
        index = {str(getattr(k, "value", k)): int(v) for k, v in event.index.items()}
        info = (seq, index, dict(event.metadata or {}), event.exposure, small, t0)
        if self._child_gone.is_set():
            self._in_flight.append(_InFlight(seq, None, img, index, small))
            return
        if not self._slot_bytes:
            self._slot_bytes = _aligned(img.nbytes)
            self._n_slots = self._ring.size // self._slot_bytes
            # Room for one raw frame and its (at most 4 bytes/pixel) denoised twin.
            self._pair_slot = SharedMemory(create=True, size=self._slot_bytes + 4 * img.size)
            self._send(("pair_slot", self._pair_slot.name))
        if img.nbytes > self._slot_bytes or self._n_slots < 2 or not img.flags.c_contiguous:
            self._in_flight.append(_InFlight(seq, None, img, index, small))
            self._send(("frame_inline", *info, img))
            return
        # The slot is free once the child's raw writer is done with its last frame.
        while self._ring_slots_used() >= self._n_slots:
            if self._child_gone.is_set():
                self._in_flight.append(_InFlight(seq, None, img, index, small))
                return
            time.sleep(0.0005)
        slot = self._next_slot
        self._next_slot = (slot + 1) % self._n_slots
        target = self._slot_view(slot, img.shape, img.dtype)
        np.copyto(target, img)  # releases the GIL
        self._in_flight.append(_InFlight(seq, slot, None, index, small, img.shape, img.dtype))
        self._slots_used += 1
        self._send(("frame", *info, slot * self._slot_bytes, img.shape, img.dtype.str))

    def _slot_view(self, slot: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.ndarray(shape, dtype, buffer=self._ring.buf, offset=slot * self._slot_bytes)

    def _ring_slots_used(self) -> int:
        # Counted, not summed over the deque: it can hold a whole run's frames and this
        # runs per frame in the acquisition process.
        done = int(self._counters[_RAW_DONE])
        while self._in_flight and self._in_flight[0].seq < done:
            if self._in_flight.popleft().slot is not None:
                self._slots_used -= 1
        return self._slots_used

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _send_now(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError, EOFError, ValueError):
            self._send(message)

    # -- reader thread ------------------------------------------------------------------------

    def _await_ready(self, timeout: float) -> None:
        if not self._conn.poll(timeout):
            self._process.kill()
            self._cleanup_shared()
            raise RuntimeError(
                f"the denoise process did not start within {timeout} s "
                f"(exit code {self._process.poll()}); see its output above."
            )
        try:
            kind, *payload = self._conn.recv()
        except EOFError:
            _join(self._process, 5)
            self._cleanup_shared()
            raise RuntimeError(
                f"the denoise process exited during start-up (exit code "
                f"{self._process.poll()}); see its output above."
            ) from None
        if kind == "ready":
            return
        _join(self._process, 5)
        self._cleanup_shared()
        exc_type, message, tb = payload
        if exc_type == "ValueError":
            raise ValueError(message)
        # The message is the user's answer; the child's traceback is for `--verbose`.
        _log.debug("denoise process traceback:\n%s", tb)
        raise RuntimeError(f"the denoise process failed to start: {exc_type}: {message}")

    def _read_loop(self) -> None:
        try:
            while True:
                kind, *payload = self._conn.recv()
                if kind == "stats":
                    self._stats = payload[0]
                    self._emit(self.events.stats, payload[0])
                elif kind == "pair":
                    self._pair_waiting = tuple(payload)
                    if len(self.events.pair):
                        pair = self._take_pair()
                        if pair is not None:
                            self._emit(self.events.pair, pair)
                elif kind == "raw_failed":
                    self._emit(self.events.raw_failed, payload[0])
                elif kind == "finished":
                    self._summary = payload[0]
                    self._done.set()
                    self._cleanup_shared()
                    self._emit(self.events.finished, self._summary)
                    return
        except (EOFError, OSError):
            pass
        _join(self._process, 10)
        if self._closing:
            self._cleanup_shared()
            return
        self._record_error(
            "denoise_process",
            RuntimeError(
                f"the denoise process exited (code {self._process.poll()}) before the run "
                "ended; raw frames it had not written are in "
                f"{_RESCUE_PREFIX}-*.ome.zarr"
            ),
        )
        self._child_gone.set()
        if not self._started.is_set() and not self._closing:
            self._finish_after_child_death()

    def _take_pair(self) -> LatestPair | None:
        """Copy the waiting pair out of shared memory; None if the child overwrote it.

        A newer pair's header then follows on the pipe. Only previews read this slot;
        saved frames never go through it.
        """
        with self._pair_lock:
            waiting = self._pair_waiting
            if waiting is None or self._pair_slot is None:
                return None
            gen, frame, index, latency_ms, raw_spec, den_spec, data_check = waiting
            if self._counters[_PAIR_GEN] != gen:
                return None
            buf = self._pair_slot.buf
            raw = np.ndarray(raw_spec[0], np.dtype(raw_spec[1]), buffer=buf).copy()
            offset = _aligned(raw.nbytes)
            den = np.ndarray(den_spec[0], np.dtype(den_spec[1]), buffer=buf, offset=offset)
            den = den.copy()
            if self._counters[_PAIR_GEN] != gen:  # overwritten while copying
                return None
            self._latest = LatestPair(frame, index, raw, den, latency_ms, data_check)
            if self._pair_waiting is waiting:  # the reader may have stored a newer one
                self._pair_waiting = None
            self._counters[_PAIR_TAKEN] = gen
            return self._latest

    def _emit(self, signal: Any, value: Any) -> None:
        try:
            signal.emit(value)
        except Exception as exc:  # a raising listener must not stop the reader
            self._record_error("listener", exc)

    def _record_error(self, where: str, exc: BaseException) -> None:
        self._errors.append(
            {
                "where": where,
                "type": type(exc).__name__,
                "message": str(exc),
                "time": time.time(),
                "traceback": "".join(traceback.format_exception(exc)[-3:]),
            }
        )

    # -- the child died: keep the raw frames -----------------------------------------------

    def _rescue_in_flight(self) -> None:
        """Write every frame the dead child had not written (ring slots are intact)."""
        self._ring_slots_used()  # drop what the child did write
        while self._in_flight:
            f = self._in_flight.popleft()
            image = f.image
            if image is None:
                assert f.slot is not None and f.shape is not None
                image = self._slot_view(f.slot, f.shape, f.dtype).copy()
            self._rescue(f.seq, image, f.index, f.meta)

    def _rescue(self, seq: int, img: np.ndarray, index: dict[str, int], meta: Any) -> None:
        from ome_writers import create_stream

        h, w = img.shape[-2:]
        name = f"{_RESCUE_PREFIX}-{h}x{w}-{img.dtype.name}.ome.zarr"
        stream = self._rescued.get(name)
        if stream is None:
            stream = create_stream(flat_store_settings(self.run_dir / name, img.shape, img.dtype))
            self._rescued[name] = stream
        stream.append(img, frame_metadata={"frame": seq, "index": index, **meta})
        self._rescued_frames.add(seq)

    def _close_rescue(self) -> None:
        for stream in self._rescued.values():
            try:
                stream.close()
            except Exception as exc:
                self._record_error("raw_rescue", exc)

    def _finish_after_child_death(self) -> None:
        """Mark run.json failed, name the rescued frames, and end :meth:`wait`."""
        run_json = self.run_dir / RUN_JSON
        try:
            document = _read_json(run_json)
        except Exception:
            document = {"format": "sn2n-live-run", "format_version": 1}
        raw_done = int(self._counters[_RAW_DONE])
        document.update(
            status="failed",
            state="finished",
            raw_rescue={
                "stores": sorted(self._rescued),
                "frames": self._rescued_frames.ranges(),
                "raw_written_by_denoise_process": raw_done,
            },
        )
        document["errors"] = [*document.get("errors", []), *self._errors]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_json, document)
        last = self._stats
        self._summary = RunSummary(
            status="failed",
            run_dir=self.run_dir,
            frames_received=self._n_received,
            raw_written=raw_done + len(self._rescued_frames),
            denoised_written=0 if last is None else last.denoised_written,
            missing_denoised=[],
            first_missing_denoised=None,
            unplaced_frames=[],
            errors=[{k: v for k, v in e.items() if k != "traceback"} for e in self._errors],
            acquisition_s=0.0,
            catch_up_s=0.0,
            camera_fps=0.0 if last is None else last.camera_fps,
            denoise_fps=0.0 if last is None else last.denoise_fps,
            latency_p50_ms=None,
            latency_p99_ms=None,
            frame_ready_p50_us=_percentile(self._frame_ready_us, 50),
            frame_ready_p99_us=_percentile(self._frame_ready_us, 99),
        )
        self._done.set()
        self._cleanup_shared()
        self._emit(self.events.finished, self._summary)

    def _cleanup_shared(self) -> None:
        for shm in (self._ring, self._header, self._pair_slot):
            if shm is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()


def _ring_bytes(ring_mb: float | None, frame_bytes: int | None, events: Any) -> int:
    """Size of the frame ring: what was asked, else the whole run (64 MB to 4 GB), else 512 MB.

    Raises ``ValueError`` if ``ring_mb`` is not positive or exceeds what shared memory
    and free RAM allow (a tmpfs that runs out while pages are touched kills the process).
    """
    limit = _shared_memory_limit()
    if ring_mb is not None:
        if not (isinstance(ring_mb, int | float) and ring_mb > 0):
            raise ValueError(f"ring_mb must be > 0; got {ring_mb!r}.")
        wanted = int(ring_mb * 2**20)
        if wanted > limit:
            raise ValueError(
                f"ring_mb={ring_mb} exceeds the {limit / 2**20:.0f} MB that shared memory "
                "and free RAM allow here; pass a smaller ring_mb (or enlarge /dev/shm)."
            )
        return wanted
    wanted = _DEFAULT_RING_BYTES
    n_frames = _count_image_events(events)
    if frame_bytes and n_frames:
        # Room for the whole run: a raw writer that falls behind never pushes frames
        # back into this process's heap (fresh pages the acquisition thread faults in).
        wanted = n_frames * _aligned(frame_bytes)
    return max(_MIN_RING_BYTES, min(wanted, _MAX_AUTO_RING_BYTES, limit))


def _shared_memory_limit() -> int:
    """Bytes a ring may take: 80 % of free /dev/shm (Linux) and a quarter of free RAM."""
    limit = _MAX_AUTO_RING_BYTES * 4
    with contextlib.suppress(OSError, ValueError, AttributeError):
        shm = os.statvfs("/dev/shm")
        limit = min(limit, int(shm.f_bavail * shm.f_frsize * 0.8))
    with contextlib.suppress(OSError, ValueError, AttributeError):
        limit = min(limit, os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4)
    return limit


def _count_image_events(events: Any) -> int | None:
    if isinstance(events, useq.MDASequence):
        return sum(1 for _ in events)
    if isinstance(events, list | tuple):
        return sum(1 for e in events if e.action is None or isinstance(e.action, useq.AcquireImage))
    return None


def _start_child(timeout: float) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start ``python -m sn2n_live.acquisition._denoise_process``; accept its connection."""
    authkey = os.urandom(32)
    listener = Listener(authkey=authkey)  # AF_UNIX socket, or a named pipe on Windows
    process = subprocess.Popen(
        [sys.executable, "-m", "sn2n_live.acquisition._denoise_process"], stdin=subprocess.PIPE
    )
    assert process.stdin is not None
    process.stdin.write(pickle.dumps((listener.address, authkey)))
    process.stdin.close()
    accepted: dict[str, Any] = {}

    def accept() -> None:
        try:
            accepted["conn"] = listener.accept()
        except Exception as exc:
            accepted["error"] = exc

    thread = threading.Thread(target=accept, name="sn2n-accept", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while thread.is_alive() and process.poll() is None and time.monotonic() < deadline:
        thread.join(0.05)
    listener.close()
    if "conn" not in accepted:
        process.kill()
        raise RuntimeError(
            "the denoise process did not connect "
            f"(exit code {process.poll()}, {accepted.get('error', 'timed out')}); "
            "see its output above."
        )
    return process, accepted["conn"]


def _aligned(nbytes: int) -> int:
    return -(-nbytes // 64) * 64


def _join(process: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)


def _close_unstarted(ref: weakref.ref[ProcessLiveDenoiseHandler]) -> None:
    handler = ref()
    if handler is not None:
        handler.close()


def _percentile(values: array, q: float) -> float | None:
    data = np.asarray(values, dtype=np.float64)
    return round(float(np.percentile(data, q)), 2) if data.size else None


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


# -- the denoise process ---------------------------------------------------------------------


def _child_main(conn: Connection) -> None:
    """Run a LiveDenoiseHandler fed by the acquisition process."""
    sys_path, payload = conn.recv()
    sys.path[:] = sys_path  # the model's class may live beside the user's script
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    try:
        model, out, options, header_name, ring_name, nice = pickle.loads(payload)
        if nice and hasattr(os, "nice"):
            os.nice(nice)  # before any thread starts: they all inherit it
        denoiser = load_denoiser(model)
        handler = LiveDenoiseHandler(denoiser, out, **options)
        handler._isolation = "process"
    except Exception as exc:
        send(("failed", type(exc).__name__, str(exc), traceback.format_exc()))
        return
    header = _attach(header_name)
    counters = np.ndarray((_N_COUNTERS,), np.int64, buffer=header.buf)
    ring = _attach(ring_name)
    pair_slot: list[SharedMemory] = []
    published = {"gen": 0, "time": 0.0, "frame": -1}
    publish_lock = threading.Lock()

    def on_pair(pair: LatestPair, *, last: bool = False) -> None:
        # Through shared memory, not the pipe: unpickling megabytes would hold the
        # acquisition process's GIL. Rarely while the last one was not taken.
        with publish_lock:
            now = time.monotonic()
            taken = counters[_PAIR_TAKEN] == published["gen"]
            interval = _PAIR_MIN_INTERVAL_S if taken else _PAIR_REFRESH_S
            if not pair_slot or (not last and now - published["time"] < interval):
                return
            gen = published["gen"] + 2
            counters[_PAIR_GEN] = gen - 1  # odd: being written
            raw, den = pair.raw, np.ascontiguousarray(pair.denoised)
            buf = pair_slot[0].buf
            np.copyto(np.ndarray(raw.shape, raw.dtype, buffer=buf), raw)
            offset = _aligned(raw.nbytes)
            np.copyto(np.ndarray(den.shape, den.dtype, buffer=buf, offset=offset), den)
            counters[_PAIR_GEN] = gen
            published.update(gen=gen, time=now, frame=pair.frame)
            raw_spec, den_spec = (raw.shape, raw.dtype.str), (den.shape, den.dtype.str)
            header = (pair.frame, pair.index, pair.latency_ms, raw_spec, den_spec, pair.data_check)
            send(("pair", gen, *header))

    finished = threading.Event()

    def on_finished(summary: RunSummary) -> None:
        try:
            final = handler.latest()
            if final is not None and final.frame != published["frame"]:
                on_pair(final, last=True)
            send(("finished", summary))
        finally:
            finished.set()

    handler.events.stats.connect(lambda stats: send(("stats", stats)))
    handler.events.pair.connect(on_pair)
    handler.events.raw_failed.connect(lambda message: send(("raw_failed", message)))
    handler.events.finished.connect(on_finished)
    send(("ready",))

    stop = threading.Event()

    def report_raw_progress() -> None:
        while not stop.wait(0.005):
            counters[_RAW_DONE] = handler._n_raw_done

    progress = threading.Thread(target=report_raw_progress, daemon=True)
    progress.start()
    try:
        while not finished.is_set():
            if not conn.poll(0.05):
                continue
            try:
                kind, *payload = conn.recv()
            except (EOFError, OSError):
                # The acquisition process is gone: close what we have.
                if handler.started:
                    handler.finish(reason="the acquisition process ended during the run")
                    handler.wait()
                break
            if kind == "frame":
                _, index, metadata, exposure, meta, t0, offset, shape, dtype = payload
                # A copy: the slot is reused once the raw writer is done with the frame.
                img = np.ndarray(shape, np.dtype(dtype), buffer=ring.buf, offset=offset).copy()
                event = useq.MDAEvent(index=index, metadata=metadata, exposure=exposure)
                handler._accept(img, event, meta, t0)
            elif kind == "frame_inline":
                _, index, metadata, exposure, meta, t0, img = payload
                event = useq.MDAEvent(index=index, metadata=metadata, exposure=exposure)
                handler._accept(img, event, meta, t0)
            elif kind == "pair_slot":
                pair_slot.append(_attach(payload[0]))
            elif kind == "start":
                handler.sequenceStarted(payload[0], {})
            elif kind == "canceled":
                handler.sequenceCanceled(None)
            elif kind == "end":
                handler._adopt_frame_ready_costs(np.frombuffer(payload[0], np.float32).tolist())
                handler.sequenceFinished(None)
            elif kind == "finish":
                handler.finish(interrupted=payload[0], reason=payload[1])
            elif kind == "cancel_catch_up":
                handler.cancel_catch_up()
            elif kind == "close" and not handler.started:
                return
        handler.wait()
        counters[_RAW_DONE] = handler._n_raw_done
    finally:
        # The mappings go with the process; the parent unlinks the segments.
        stop.set()
        progress.join()
        conn.close()


def _attach(name: str) -> SharedMemory:
    """Attach to the parent's shared memory; the parent alone unlinks it."""
    from multiprocessing import resource_tracker

    shm = SharedMemory(name=name)
    # Python < 3.13 registers attached segments too, then warns or unlinks at exit.
    resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    return shm
