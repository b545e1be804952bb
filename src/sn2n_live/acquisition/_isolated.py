"""The process-mode live handler: writers and denoiser in a child process.

Why: pymmcore-plus pops every frame on a Python thread. In one process, any thread that
runs Python (zarr-python's chunk writes, the denoiser's glue code) competes with it for
the GIL, and a low-priority thread that holds the GIL while the OS has descheduled it
stalls the acquisition thread no matter its ``nice`` level. Measured on 2 cores
(DemoCamera 2048^2 hardware-sequenced at ~90 fps): two nice-19 Python threads made
``popNextImageAndMD`` take 6 ms instead of 0.9 ms and overflowed the camera buffer,
while two nice-19 *processes* spinning on both cores did not slow it.

:class:`ProcessLiveDenoiseHandler` keeps in the acquisition process only:

- ``frameReady`` (relay thread): appends the frame to an inbox;
- a feeder thread that copies each frame into the shared-memory ring (``numpy.copyto``
  releases the GIL) and sends a small typed message to the child
  (:mod:`sn2n_live.acquisition._transport`);
- a reader thread that receives live statistics, the latest raw/denoised pair and the
  run summary and re-emits them on :attr:`events`.

The child (:mod:`sn2n_live.acquisition._denoise_process`) runs the same
:class:`~sn2n_live.acquisition._pipeline.LivePipeline` as thread mode (same stores,
run.json, policies, failure handling). Raw frames stay referenced here until the child
reports them written; if the child dies, this process writes every frame the child had
not written, and every later one, to ``raw-rescue-<h>x<w>-<dtype>.ome.zarr`` and records
the failure in run.json, with counts taken from the stores' journals.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import weakref
from array import array
from collections import deque
from collections.abc import Callable
from multiprocessing.shared_memory import SharedMemory
from typing import Any, NamedTuple

import numpy as np
import useq

from sn2n_live.acquisition import _transport as tp
from sn2n_live.acquisition._batching import SetWidefield, set_tag
from sn2n_live.acquisition._contracts import (
    FrameDenoiser,
    LatestPair,
    LiveDenoiseEvents,
    RunState,
    RunSummary,
    wait_until_done,
)
from sn2n_live.acquisition._pipeline import PREVIEW_WATCH_S, Inbox
from sn2n_live.acquisition._recon import LatestRecon
from sn2n_live.acquisition._record import (
    ErrorLog,
    journal_frames,
    merge_errors,
    record_after_child_death,
    summary_from_document,
)
from sn2n_live.acquisition._relay import RelayWatch
from sn2n_live.acquisition._stats import LiveStats
from sn2n_live.acquisition._writers import RUN_JSON, check_run_folder, write_json_atomic

__all__ = ["ProcessLiveDenoiseHandler"]

_log = logging.getLogger("sn2n_live.acquisition")
_POLL_S = 0.002
# What the child needs from pymmcore-plus's frame metadata (the rest stays here).
_META_KEYS = ("runner_time_ms", "exposure_ms", "hardware_triggered", "pixel_size_um")
_DEFAULT_RING_BYTES = 512 * 2**20
_MIN_RING_BYTES = 64 * 2**20
_MAX_AUTO_RING_BYTES = 4096 * 2**20


class _Arrived(NamedTuple):
    """A frame as ``frameReady`` got it, waiting for the feeder."""

    seq: int
    image: np.ndarray
    event: useq.MDAEvent
    meta: Any
    t_arrival: float


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
    """A live-denoise handler whose pipeline runs in a child process.

    Same MDA callbacks and public API as
    :class:`~sn2n_live.acquisition.LiveDenoiseHandler` (both are
    :class:`~sn2n_live.acquisition._contracts.LiveHandler` implementations); the run
    folder is identical. The child starts (and loads the model) in the constructor, so the first
    frame does not wait for it.

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
        Passed to the pipeline in the child: ``LiveDenoiseHandler``'s options
        (``events``, ``policy``, ``memory_budget_mb``, ``denoise_nice``, ...).

    Raises
    ------
    ValueError
        For an option the pipeline rejects (raised in the child, re-raised here), or a
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
        _check_picklable(model)
        # Here, not only in the child: no process is started for a run that cannot be saved.
        self.run_dir = check_run_folder(out)
        self.events = LiveDenoiseEvents()
        self._counters = tp.SharedCounters.create()
        self._ring = tp.FrameRing.create(ring_bytes)
        self._pair_slot: tp.PairSlot | None = None  # sized by the first frame
        self._wants_recon = options.get("recon") is not None
        self._recon_slot: tp.ReconSlot | None = None  # sized by the first frame too
        self._recon_waiting: tp.ReconReady | None = None
        self._latest_recon: LatestRecon | None = None
        self._slots_used = 0
        self._inbox = Inbox(_POLL_S)
        self._in_flight: deque[_InFlight] = deque()  # sent, not yet written by the child
        self._frame_ready_us = array("f")
        self._n_received = 0  # relay thread
        self._accepting = False
        self._started = threading.Event()
        self._done = threading.Event()
        self._child_gone = threading.Event()
        self._closing = False
        self._relay = RelayWatch()
        self._send_lock = threading.Lock()
        self._latest: LatestPair | None = None
        self._pair_waiting: tp.PairReady | None = None  # the newest pair until taken
        self._pair_lock = threading.Lock()
        self._latest_raw: np.ndarray | None = None
        self._widefield = SetWidefield()  # feeder thread; only while a preview watches
        self._preview_until = 0.0
        self._stats: LiveStats | None = None
        self._summary: RunSummary | None = None
        self._errors = ErrorLog()
        self._rescue = tp.RawRescue(self.run_dir)
        self._written_by_child: set[int] | None = None  # read after the child died
        self._process, self._conn = tp.start_child(start_timeout_s)
        config = tp.ChildConfig(
            model,
            str(self.run_dir),
            options,
            self._counters.shm.name,
            self._ring.shm.name,
            process_nice,
        )
        self._conn.send(tp.Setup(list(sys.path), pickle.dumps(config)))
        self._await_ready(start_timeout_s)
        # Non-daemon, like the in-process writers: a script that ends without wait()
        # still gets its frames to the child. Started with the sequence.
        self._feeder = threading.Thread(target=self._feed_loop, name="sn2n-feeder")
        self._reader = threading.Thread(target=self._read_loop, name="sn2n-reader", daemon=True)
        self._reader.start()
        atexit.register(_close_unstarted, weakref.ref(self))

    # -- reading -----------------------------------------------------------------------------

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
        A call also asks the child for fresh pairs for the next second (the newest frame
        denoised ahead of the saving order while the saved stream is behind).
        """
        until = time.perf_counter() + PREVIEW_WATCH_S
        self._preview_until = until
        self._counters[tp.SharedCounters.PREVIEW_UNTIL_US] = int(until * 1e6)
        if self._pair_waiting is not None:
            self._take_pair()
        return self._latest

    def latest_raw(self) -> np.ndarray | None:
        """Newest raw frame received, denoised or not."""
        return self._latest_raw

    def latest_widefield(self) -> np.ndarray | None:
        """Widefield (mean of the raw frames) of the newest complete SIM set.

        Summed in this process by the feeder, only while a preview polls :meth:`latest`
        (None before, and outside SIM).
        """
        return self._widefield.latest

    def latest_recon(self) -> LatestRecon | None:
        """Return the newest live SIM reconstruction, copied from the denoise process.

        Copied only when asked for (and only once per new one); None before the first.
        """
        ready, slot = self._recon_waiting, self._recon_slot
        latest = self._latest_recon
        if ready is None or slot is None or (latest is not None and latest.gen >= ready.gen):
            return latest
        with self._pair_lock:
            image = slot.take(ready)
            if image is not None:
                self._latest_recon = LatestRecon(
                    ready.set_number, image, ready.source, ready.compute_ms, gen=ready.gen
                )
        return self._latest_recon

    def stats(self) -> LiveStats:
        """Newest live statistics from the denoise process (every ``stats_interval_s``)."""
        if self._stats is not None:
            return self._stats
        return LiveStats(
            state=RunState.WAITING.value, elapsed_s=0.0, frames_received=self._n_received,
            raw_written=0, denoised_written=0, denoised_missing=0, queue_depth=0,
            queued_mb=0.0, spilled=0, raw_backlog=self._n_received, frames_behind=0,
            camera_fps=0.0, denoise_fps=0.0, latency_p50_ms=None, latency_p99_ms=None,
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

    # -- control ---------------------------------------------------------------------------

    def cancel_catch_up(self) -> None:
        """Stop denoising frames still queued (they are recorded as missing)."""
        self._send_now(tp.CancelCatchUp())

    def finish(
        self,
        *,
        interrupted: bool = True,
        reason: str = "the MDA did not report the end of the sequence",
    ) -> None:
        """End a run whose ``sequenceFinished`` never arrived; see the thread handler."""
        if self._started.is_set():
            self._accepting = False
            self._inbox.put(tp.Finish(interrupted, reason))

    def close(self) -> None:
        """End the denoise process of a handler whose sequence never started."""
        if not self._started.is_set():
            self._closing = True
            self._send_now(tp.Close())
            _join(self._process, 10)

    # -- MDA callbacks (relay thread) --------------------------------------------------------

    def sequenceStarted(self, sequence: useq.MDASequence | None = None, meta: Any = None) -> None:
        """Start the run in the denoise process."""
        try:
            if self._started.is_set():
                return
            self._relay.bind()
            self._inbox.put(tp.Start(sequence if type(sequence) is useq.MDASequence else None))
            self._accepting = True
            self._started.set()
            self._feeder.start()
        except Exception as exc:  # a raising handler kills pymmcore's relay
            self._errors.add("sequenceStarted", exc)

    def frameReady(self, img: np.ndarray, event: useq.MDAEvent, meta: Any = None) -> None:
        """Queue the frame for the feeder; O(1), never raises."""
        t0 = time.perf_counter()
        try:
            if not self._accepting:
                return
            if img.base is not None or not img.flags.owndata:
                img = img.copy()  # a view into a buffer the camera may reuse
            self._inbox.put(_Arrived(self._n_received, img, event, meta, t0))
            self._n_received += 1
            self._latest_raw = img
        except Exception as exc:  # a raising handler kills pymmcore's relay
            self._errors.add("frameReady", exc, self._n_received)
        finally:
            self._frame_ready_us.append((time.perf_counter() - t0) * 1e6)

    def sequenceCanceled(self, sequence: useq.MDASequence | None = None) -> None:
        """Forward the cancel (``sequenceFinished`` follows)."""
        self._inbox.put(tp.Canceled())

    def sequenceFinished(self, sequence: useq.MDASequence | None = None) -> None:
        """End of acquisition: the child drains, catches up and closes the stores."""
        if self._accepting:
            self._accepting = False
            self._inbox.put(tp.End(b""))

    # -- feeder thread -----------------------------------------------------------------------

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
                ended = ended or isinstance(message, tp.End | tp.Finish)
                # A dead child raises here; the reader thread notices, rescue below.
                with contextlib.suppress(OSError, EOFError, ValueError):
                    self._dispatch(message)
            if self._child_gone.is_set():
                self._rescue_in_flight()
                if ended:
                    self._finish_after_child_death()
                    return

    def _check_relay(self) -> None:
        """End the run if the thread that delivered ``sequenceStarted`` is gone."""
        if self._accepting and (end := self._relay.ended()) is not None:
            self.finish(interrupted=end.interrupted, reason=end.reason)

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, _Arrived):
            self._feed_frame(message)
        elif self._child_gone.is_set():
            return
        elif isinstance(message, tp.End):
            self._send(tp.End(self._frame_ready_us.tobytes()))
        else:
            self._send(message)

    def _feed_frame(self, arrived: _Arrived) -> None:
        seq, img, event = arrived.seq, arrived.image, arrived.event
        if time.perf_counter() < self._preview_until:
            self._widefield.add(set_tag(event), img)
        else:
            self._widefield.reset()
        meta = arrived.meta or {}
        small = {k: meta[k] for k in _META_KEYS if k in meta}
        index = {str(getattr(k, "value", k)): int(v) for k, v in event.index.items()}
        info = tp.FrameInfo(
            seq,
            index,
            dict(event.metadata or {}),
            event.exposure,
            small,
            arrived.t_arrival,
            [tuple(p) for p in event.properties] if event.properties else None,
        )
        if self._child_gone.is_set():
            self._in_flight.append(_InFlight(seq, None, img, index, small))
            return
        ring = self._ring
        if not ring.slot_bytes:
            ring.size_for(img.nbytes)
            shm = SharedMemory(create=True, size=tp.PairSlot.bytes_for(img))
            self._pair_slot = tp.PairSlot(shm, self._counters)
            self._send(tp.UsePairSlot(shm.name))
            if self._wants_recon:
                recon_shm = SharedMemory(create=True, size=tp.ReconSlot.bytes_for(img))
                self._recon_slot = tp.ReconSlot(recon_shm)
                self._send(tp.UseReconSlot(recon_shm.name))
        if not ring.fits(img):
            self._in_flight.append(_InFlight(seq, None, img, index, small))
            self._send(tp.FrameInline(info, img))
            return
        # The slot is free once the child's raw writer is done with its last frame.
        while self._ring_slots_used() >= ring.n_slots:
            if self._child_gone.is_set():
                self._in_flight.append(_InFlight(seq, None, img, index, small))
                return
            time.sleep(0.0005)
        slot = ring.next_slot()
        np.copyto(ring.view(slot, img.shape, img.dtype), img)  # releases the GIL
        self._in_flight.append(_InFlight(seq, slot, None, index, small, img.shape, img.dtype))
        self._slots_used += 1
        self._send(tp.FrameInRing(info, slot * ring.slot_bytes, img.shape, img.dtype.str))

    def _ring_slots_used(self) -> int:
        # Counted, not summed over the deque: it can hold a whole run's frames and this
        # runs per frame in the acquisition process.
        done = self._counters[tp.SharedCounters.RAW_DONE]
        while self._in_flight and self._in_flight[0].seq < done:
            if self._in_flight.popleft().slot is not None:
                self._slots_used -= 1
        return self._slots_used

    def _send(self, message: Any) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _send_now(self, message: Any) -> None:
        with contextlib.suppress(OSError, EOFError, ValueError):
            self._send(message)

    # -- reader thread -----------------------------------------------------------------------

    def _await_ready(self, timeout: float) -> None:
        if not self._conn.poll(timeout):
            self._process.kill()
            self._cleanup_shared()
            raise RuntimeError(
                f"the denoise process did not start within {timeout} s "
                f"(exit code {self._process.poll()}); see its output above."
            )
        try:
            message = self._conn.recv()
        except EOFError:
            _join(self._process, 5)
            self._cleanup_shared()
            raise RuntimeError(
                f"the denoise process exited during start-up (exit code "
                f"{self._process.poll()}); see its output above."
            ) from None
        if isinstance(message, tp.Ready):
            return
        _join(self._process, 5)
        self._cleanup_shared()
        if message.exc_type == "ValueError":
            raise ValueError(message.message)
        # The message is the user's answer; the child's traceback is for `--verbose`.
        _log.debug("denoise process traceback:\n%s", message.traceback)
        raise RuntimeError(
            f"the denoise process failed to start: {message.exc_type}: {message.message}"
        )

    def _read_loop(self) -> None:
        try:
            while True:
                message = self._conn.recv()
                if isinstance(message, tp.StatsUpdate):
                    self._stats = message.stats
                    self._emit(self.events.stats, message.stats)
                elif isinstance(message, tp.PairReady):
                    self._pair_waiting = message
                    if len(self.events.pair):
                        pair = self._take_pair()
                        if pair is not None:
                            self._emit(self.events.pair, pair)
                elif isinstance(message, tp.ReconReady):
                    self._recon_waiting = message
                elif isinstance(message, tp.RawFailed):
                    self._emit(self.events.raw_failed, message.message)
                elif isinstance(message, tp.Finished):
                    self._summary = self._settle(message)
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
        self._errors.add(
            "denoise_process",
            RuntimeError(
                f"the denoise process exited (code {self._process.poll()}) before the run "
                f"ended; raw frames it had not written are in {tp.RESCUE_PREFIX}-*.ome.zarr"
            ),
        )
        self._child_gone.set()
        if not self._started.is_set():
            self._finish_after_child_death()

    def _settle(self, message: tp.Finished) -> RunSummary:
        """Return the run's summary with this process's errors (listeners) in run.json.

        The child's final run.json is rewritten only when there is something to add, or
        written here when the child could not write it (it may be over a disk quota).
        """
        document = message.unwritten_document
        if document is None and not len(self._errors):
            return message.summary
        try:
            if document is None:
                document = json.loads((self.run_dir / RUN_JSON).read_text(encoding="utf-8"))
            merge_errors(document, self._errors.entries())
            write_json_atomic(self.run_dir / RUN_JSON, document)
        except Exception as exc:
            self._errors.add("run.json", exc)
            _log.error("run.json could not be completed: %s", exc)
            return message.summary
        return summary_from_document(document, self.run_dir)

    def _take_pair(self) -> LatestPair | None:
        """Copy the waiting pair out of shared memory; None if the child overwrote it.

        A newer pair's header then follows on the pipe.
        """
        with self._pair_lock:
            waiting = self._pair_waiting
            if waiting is None or self._pair_slot is None:
                return None
            pair = self._pair_slot.take(waiting)
            if pair is None:
                return None
            self._latest = pair
            if self._pair_waiting is waiting:  # the reader may have stored a newer one
                self._pair_waiting = None
            return pair

    def _emit(self, signal: Any, value: Any) -> None:
        try:
            signal.emit(value)
        except Exception as exc:  # a raising listener must not stop the reader
            self._errors.add("listener", exc)

    # -- the child died: keep the raw frames -------------------------------------------------

    def _rescue_in_flight(self) -> None:
        """Write every frame the dead child had not written (ring slots are intact)."""
        self._ring_slots_used()  # drop what the child reported written
        if self._written_by_child is None:
            # Read once: a dead child's journals no longer grow. It may have died between
            # journaling a frame and reporting it.
            run = self.run_dir
            self._written_by_child = journal_frames(run, "raw") | journal_frames(run, "unplaced")
        while self._in_flight:
            f = self._in_flight.popleft()
            if f.seq in self._written_by_child:
                continue
            image = f.image
            if image is None:
                assert f.slot is not None and f.shape is not None
                image = self._ring.view(f.slot, f.shape, f.dtype).copy()
            try:
                self._rescue.write(f.seq, image, f.index, f.meta)
            except Exception as exc:
                self._errors.add("raw_rescue", exc, f.seq)

    def _finish_after_child_death(self) -> None:
        """Write run.json from the stores and the rescue, and end :meth:`wait`."""
        for exc in self._rescue.close():
            self._errors.add("raw_rescue", exc)
        document = record_after_child_death(
            self.run_dir,
            received=self._n_received,
            rescued=self._rescue.frames,
            rescue_stores=self._rescue.stores,
            errors=self._errors.entries(),
            frame_ready_us=self._frame_ready_us,
        )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.run_dir / RUN_JSON, document)
        self._summary = summary_from_document(document, self.run_dir)
        self._done.set()
        self._cleanup_shared()
        self._emit(self.events.finished, self._summary)

    def _cleanup_shared(self) -> None:
        tp.unlink_all(
            self._ring.shm,
            self._counters.shm,
            None if self._pair_slot is None else self._pair_slot.shm,
            None if self._recon_slot is None else self._recon_slot.shm,
        )


def _check_picklable(model: ModelSpec) -> None:
    if isinstance(model, str | os.PathLike):
        return
    try:
        pickle.dumps(model)
    except Exception as exc:
        raise ValueError(
            f"model {type(model).__name__} cannot be sent to the denoise process "
            f"({type(exc).__name__}: {exc}); pass a .sn2n path or a picklable "
            "factory such as functools.partial(build_denoiser, ...)."
        ) from exc


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
        wanted = n_frames * tp.aligned(frame_bytes)
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


def _join(process: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)


def _close_unstarted(ref: weakref.ref[ProcessLiveDenoiseHandler]) -> None:
    handler = ref()
    if handler is not None:
        handler.close()
