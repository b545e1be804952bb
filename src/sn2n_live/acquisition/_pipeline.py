"""The live pipeline: one path from a frame's arrival to the raw and denoised stores.

Both modes feed it through one entry, :meth:`LivePipeline.accept`: the thread-mode
handler from pymmcore-plus's relay thread, the denoise process from its main loop.

A frame's steps::

    accept (caller's thread): number it, place it in the layout, queue it for the raw
        writer, offer it to the denoise queue (memory budget, policy: _batching.admit)
    raw-writer thread: open the stores at the first frame; append it (raw or unplaced)
    denoise worker: take queued frames; cut a batch (_batching.complete_batch or
        preview_batch); wait while the raw writer is behind (_batching.hold_for_raw);
        re-read spilled frames; denoise; append denoised (and risk) frames; publish pair
    finalize (denoise worker): close the denoised store, final run.json, ``finished``
    monitor thread: ``stats`` every ``stats_interval_s``; run.json every 2 s; ticks

The denoise queue is bounded by ``memory_budget_mb``. Under the ``complete`` policy a
frame that does not fit is queued as its position only and re-read from the raw store
once it is readable; under ``preview`` only the newest SIM set is denoised and older
frames are recorded as missing. A failing denoiser stops denoising, never acquisition
or raw saving. Who writes which counter: see :mod:`sn2n_live.acquisition._record`.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import math
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import useq

from sn2n_live.acquisition._batching import (
    SIM_KEY,
    Admission,
    PendingFrame,
    SetWidefield,
    admit,
    complete_batch,
    hold_for_raw,
    preview_batch,
    preview_due,
    preview_keep,
)
from sn2n_live.acquisition._contracts import (
    FrameDenoiser,
    Isolation,
    LatestPair,
    LiveDenoiseEvents,
    Policy,
    RunState,
    RunStatus,
    RunSummary,
    is_denoiser,
    wait_until_done,
)
from sn2n_live.acquisition._recon import LatestRecon, LiveReconstruction, ReconOptions
from sn2n_live.acquisition._record import DoseMeter, RunRecord, summary_from_document
from sn2n_live.acquisition._stats import LiveStats
from sn2n_live.acquisition._writers import (
    DenoisedDtype,
    FileFormat,
    FrameLayout,
    RunWriter,
    ZarrBackend,
    check_run_folder,
    check_store_options,
    layout_from_events,
)

if TYPE_CHECKING:
    from sn2n_live.method._photometry import PhotometryWatch

__all__ = ["Inbox", "LivePipeline", "check_options", "frame_metadata"]

_HEARTBEAT_S = 2.0
_HOLD_POLL_S = 0.005
# Preview lane: at most this often (a display's period), and saving batches cut to about
# this long while someone watches, so that the newest frame waits at most one of them.
_PREVIEW_MIN_INTERVAL_S = 0.1
_PREVIEW_BATCH_S = 0.4
# How long one latest() call counts as someone watching.
PREVIEW_WATCH_S = 1.0
_END = object()


def _main_thread_gone() -> bool:
    """Tell whether the interpreter is shutting down (the main thread has finished)."""
    return not threading.main_thread().is_alive()


class Inbox:
    """FIFO whose ``put`` is a bare deque append that never wakes a consumer.

    Consumers poll every ``poll_s``. A blocking queue would wake the consumer on every
    ``put``; on a loaded machine the woken thread then takes the GIL in the middle of
    ``frameReady`` and multiplies its cost.
    """

    def __init__(self, poll_s: float = 0.002) -> None:
        self._items: deque[Any] = deque()
        self._poll_s = poll_s

    def put(self, item: Any) -> None:
        self._items.append(item)

    def get_nowait(self) -> Any:
        try:
            return self._items.popleft()
        except IndexError:
            raise queue.Empty from None

    def __len__(self) -> int:
        return len(self._items)

    def put_front(self, item: Any) -> None:
        self._items.appendleft(item)

    def pop_oldest(self) -> Any:
        """Remove and return the oldest item, or None if empty."""
        try:
            return self._items.popleft()
        except IndexError:
            return None

    def get(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._items.popleft()
            except IndexError:
                if time.monotonic() >= deadline:
                    raise queue.Empty from None
                time.sleep(self._poll_s)


def check_options(
    denoiser: FrameDenoiser,
    *,
    policy: str,
    memory_budget_mb: float,
    max_batch: int,
    stats_interval_s: float,
    denoise_threads: int | None,
    denoise_nice: int,
    writer_nice: int,
    risk: bool,
) -> None:
    """Raise ``ValueError`` (what, which option, how to fix) for an unusable option."""
    if not is_denoiser(denoiser):
        raise ValueError(
            f"denoiser must have denoise() and provenance; got {type(denoiser).__name__}. "
            "Use load_denoiser(path) for a .sn2n package."
        )
    if risk and "risk" not in inspect.signature(denoiser.denoise).parameters:
        raise ValueError(
            f"risk=True needs a denoiser with denoise(frames, risk=True); "
            f"{type(denoiser).__name__}.denoise has no `risk` argument. Use "
            "load_denoiser(path) for a .sn2n package or turn the risk map off."
        )
    if policy not in get_args(Policy):
        raise ValueError(f"policy must be one of {get_args(Policy)}; got {policy!r}.")
    if not (isinstance(memory_budget_mb, int | float) and math.isfinite(memory_budget_mb)):
        raise ValueError(f"memory_budget_mb must be a finite number; got {memory_budget_mb!r}.")
    if memory_budget_mb <= 0:
        raise ValueError(f"memory_budget_mb must be > 0; got {memory_budget_mb}.")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive int; got {max_batch!r}.")
    if not (isinstance(stats_interval_s, int | float) and stats_interval_s > 0):
        raise ValueError(f"stats_interval_s must be > 0; got {stats_interval_s!r}.")
    for name, nice in (("denoise_nice", denoise_nice), ("writer_nice", writer_nice)):
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            raise ValueError(f"{name} must be an int in 0..19; got {nice!r}.")
    if denoise_threads is not None and (
        isinstance(denoise_threads, bool)
        or not isinstance(denoise_threads, int)
        or denoise_threads < 1
    ):
        raise ValueError(
            f"denoise_threads must be None or a positive int; got {denoise_threads!r}."
        )


def _jsonable(value: Any, what: str) -> Any:
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what} must be JSON-serializable (plain dicts, lists, numbers, strings) or a "
            f"pydantic model; {exc}."
        ) from exc


def _photometry_watch(denoiser: FrameDenoiser) -> PhotometryWatch | None:
    """Return a watch over the denoiser's training photometry (None: not a package)."""
    package = getattr(denoiser, "package", None)
    training = getattr(package, "training", None)
    if not isinstance(training, Mapping):
        return None
    from sn2n_live.method._photometry import PhotometryWatch  # torch: only with a package

    return PhotometryWatch(training.get("photometry"))


def frame_metadata(item: PendingFrame) -> dict[str, Any]:
    """Per-frame metadata stored in both stores (ome-writers maps delta_t/exposure_time)."""
    event, meta = item.event, item.meta
    md: dict[str, Any] = {
        "frame": item.seq,
        "index": {str(getattr(k, "value", k)): int(v) for k, v in event.index.items()},
    }
    runner_ms = meta.get("runner_time_ms")
    if runner_ms is not None:
        md["runner_time_ms"] = float(runner_ms)
        md["delta_t"] = float(runner_ms) / 1000.0
    exposure = meta.get("exposure_ms", event.exposure)
    if exposure is not None:
        md["exposure_ms"] = float(exposure)
        md["exposure_time"] = float(exposure) / 1000.0
    sim = event.metadata.get(SIM_KEY) if event.metadata else None
    if isinstance(sim, Mapping):
        md["sim"] = {"angle": sim.get("angle"), "phase": sim.get("phase")}
    if meta.get("hardware_triggered"):
        md["hardware_triggered"] = True
    return md


def _describe_events(events: Any) -> Any:
    if events is None:
        return None
    if isinstance(events, useq.MDASequence):
        return _describe_sequence(events)
    if isinstance(events, Iterator):
        return {"kind": "iterator"}
    events = list(events)
    n_images = sum(1 for e in events if e.action is None or isinstance(e.action, useq.AcquireImage))
    return {"kind": "events", "n_events": len(events), "n_image_events": n_images}


def _describe_sequence(sequence: Any) -> Any:
    if type(sequence) is useq.MDASequence:
        return {"kind": "mda_sequence", "sequence": sequence.model_dump(mode="json")}
    return {"kind": "events"} if sequence is not None else None


class LivePipeline:
    """Queues, threads and stores of one live-denoise run (see the module docstring).

    The parameters are :class:`~sn2n_live.acquisition.LiveDenoiseHandler`'s (which
    documents them), plus ``isolation``: the mode recorded in run.json.

    Raises
    ------
    ValueError
        For invalid options, a non-empty ``out`` or a layout the format cannot store.
    """

    def __init__(
        self,
        denoiser: FrameDenoiser,
        out: str | os.PathLike[str],
        *,
        events: useq.MDASequence | Iterable[useq.MDAEvent] | None = None,
        policy: Policy = "complete",
        memory_budget_mb: float = 1024.0,
        max_batch: int = 16,
        denoised_dtype: DenoisedDtype = "float32",
        file_format: FileFormat = "ome-zarr",
        zarr_backend: ZarrBackend = "zarr-python",
        run_info: Mapping[str, Any] | Any = None,
        profile: Mapping[str, Any] | Any = None,
        stats_interval_s: float = 0.25,
        denoise_threads: int | None = None,
        denoise_nice: int = 19,
        writer_nice: int = 10,
        copy_frames: bool | None = None,
        risk: bool = False,
        laser: tuple[str, str, float] | None = None,
        isolation: Isolation = "thread",
        recon: ReconOptions | None = None,
    ) -> None:
        check_options(
            denoiser,
            policy=policy,
            memory_budget_mb=memory_budget_mb,
            max_batch=max_batch,
            stats_interval_s=stats_interval_s,
            denoise_threads=denoise_threads,
            denoise_nice=denoise_nice,
            writer_nice=writer_nice,
            risk=risk,
        )
        self._store_options: dict[str, Any] = {
            "denoised_dtype": denoised_dtype,
            "file_format": file_format,
            "zarr_backend": zarr_backend,
            "risk": risk,
        }
        # Fail before the acquisition, not at its first frame.
        self._layout: FrameLayout | None = None if events is None else layout_from_events(events)
        check_store_options(self._layout or layout_from_events(None), **self._store_options)
        # After the options: a bad option must not leave an empty run folder behind.
        self.run_dir = check_run_folder(out)
        self.policy: Policy = policy
        self.max_batch = max_batch
        self.events = LiveDenoiseEvents()
        self._denoiser = denoiser
        self._provenance = _jsonable(dict(denoiser.provenance), "denoiser.provenance")
        self._watch = _photometry_watch(denoiser)
        self._risk = risk
        self._recon_options = recon
        self._recon: LiveReconstruction | None = None
        # Set before the run by process mode: each new reconstruction is published.
        self.recon_listener: Callable[[LatestRecon], None] | None = None
        self._stats_interval = float(stats_interval_s)
        self._denoise_threads = denoise_threads
        self._denoise_nice = denoise_nice
        self._writer_nice = writer_nice
        self._copy_frames = copy_frames
        self._budget = int(float(memory_budget_mb) * 2**20)
        self._events_doc = _describe_events(events) if events is not None else None
        self.record = self._new_record(run_info, profile, isolation, float(memory_budget_mb))
        self.record.dose = DoseMeter(laser)
        self._init_run_state()

    def _new_record(
        self, run_info: Any, profile: Any, isolation: Isolation, memory_budget_mb: float
    ) -> RunRecord:
        """Create the run's record with run.json's fixed header (model, options, ...)."""
        record = RunRecord(
            self.run_dir,
            {
                "run_info": _jsonable(run_info, "run_info"),
                "profile": _jsonable(profile, "profile"),
                "model": self._provenance,
                "options": {
                    "policy": self.policy,
                    "memory_budget_mb": memory_budget_mb,
                    "max_batch": self.max_batch,
                    "denoise_threads": self._denoise_threads,
                    "denoise_nice": self._denoise_nice,
                    "writer_nice": self._writer_nice,
                    "isolation": isolation,
                    **self._store_options,
                },
            },
        )
        if self._risk:
            record.risk_fractions = []
        return record

    def _init_run_state(self) -> None:
        """Queues, the memory budget's counters and the run's flags, before any frame."""
        self._writer: RunWriter | None = None
        self._raw_q = Inbox()
        self._den_q = Inbox()
        # Memory budget: bytes_in and bytes_evicted are written by accept's thread,
        # bytes_out by the denoise worker; the queued total is their difference.
        self._bytes_in = 0
        self._bytes_out = 0
        self._bytes_evicted = 0
        self._den_enqueued = 0  # accept's thread
        self._den_evicted = 0  # accept's thread
        self._den_done = 0  # denoise worker
        self._last_pos = -1  # accept's thread
        self._frame_shape: tuple[int, ...] | None = None
        self._state = RunState.WAITING
        self._started = threading.Event()
        self._done = threading.Event()
        self._catch_up_canceled = threading.Event()
        self._accepting = False
        self._den_active = True
        self._interrupted = False
        self._end_received = False
        self._raw_failed = False
        self._den_failed = False
        self._end_lock = threading.Lock()
        self._latest: LatestPair | None = None
        self._latest_raw: np.ndarray | None = None
        self._widefield = SetWidefield()  # raw writer thread; only while someone watches
        self._summary: RunSummary | None = None
        self._sequence_doc: Any = None
        self._threads: list[threading.Thread] = []
        # The final run.json if it could not be written (another process may).
        self.unwritten_document: dict[str, Any] | None = None
        self._ticks: list[Callable[[], None]] = []
        # Preview lane (denoise worker, except preview_deadline: any thread may extend it).
        self.preview_deadline = 0.0  # perf_counter until which someone watches
        self._latest_item: PendingFrame | None = None  # accept's thread
        self._shown = -1  # newest frame published as a pair
        self._saved_upto = -1  # newest frame the saving lane wrote
        self._preview_end = 0.0
        self._preview_cost = 0.0
        self._frame_cost_s: float | None = None  # saving lane, per frame, smoothed

    # -- reading ---------------------------------------------------------------------------

    @property
    def layout(self) -> FrameLayout | None:
        """Store layout (known once the sequence started or ``events`` were given)."""
        return self._layout

    @property
    def writer(self) -> RunWriter | None:
        """The run folder writer (created when the sequence starts)."""
        return self._writer

    @property
    def started(self) -> bool:
        """Whether a sequence started."""
        return self._started.is_set()

    @property
    def finished(self) -> bool:
        """Whether the run is over: stores closed, run.json final."""
        return self._done.is_set()

    @property
    def acquiring(self) -> bool:
        """Whether frames are still accepted."""
        return self._accepting

    def latest(self) -> LatestPair | None:
        """Newest raw/denoised pair (thread-safe)."""
        return self._latest

    def want_preview(self, seconds: float = PREVIEW_WATCH_S) -> None:
        """Someone watches: denoise the newest frame ahead of the saving order for a while."""
        self.preview_deadline = max(self.preview_deadline, time.perf_counter() + seconds)

    def latest_raw(self) -> np.ndarray | None:
        """Newest raw frame received, denoised or not (thread-safe)."""
        return self._latest_raw

    def latest_widefield(self) -> np.ndarray | None:
        """Widefield (mean) of the newest complete SIM set seen while a preview watched."""
        return self._widefield.latest

    def stats(self) -> LiveStats:
        """Return a snapshot of the run's live statistics (thread-safe)."""
        record = self.record
        t, c = record.timing, record.counts
        now = time.perf_counter()
        elapsed = 0.0 if t.t_start is None else (t.t_done or now) - t.t_start
        p50, p99 = record.latency.percentiles(recent=True)
        missing = record.missing_total()
        received = c.received
        placed = received - len(record.unplaced)
        return LiveStats(
            state=self._state.value,
            elapsed_s=round(elapsed, 3),
            frames_received=received,
            raw_written=c.raw_written,
            denoised_written=c.denoised_written,
            denoised_missing=missing,
            queue_depth=max(0, self._den_enqueued - self._den_done - self._den_evicted),
            queued_mb=round(self._queued_bytes() / 2**20, 3),
            spilled=c.spilled,
            raw_backlog=max(0, received - c.raw_done),
            frames_behind=max(0, placed - c.denoised_written - missing),
            camera_fps=round(record.camera_rate.rate(), 2),
            denoise_fps=round(record.denoise_rate.rate(now if t.t_done is None else None), 2),
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            frames_expected=None if self._layout is None else self._layout.n_frames,
            disk_mb_s=round(record.disk_rate.mib_per_s(now if t.t_done is None else None), 2),
        )

    def wait(
        self,
        timeout: float | None = None,
        progress: Callable[[LiveStats], None] | None = None,
        interval_s: float = 0.5,
    ) -> RunSummary:
        """Block until the run is over; see :meth:`LiveDenoiseHandler.wait`."""
        wait_until_done(self._done, self.stats, timeout, progress, interval_s)
        assert self._summary is not None
        return self._summary

    def add_tick(self, tick: Callable[[], None]) -> None:
        """Call ``tick`` from the monitor thread every ``stats_interval_s`` (e.g. a watchdog)."""
        self._ticks.append(tick)

    # -- control ---------------------------------------------------------------------------

    def start(self, sequence: useq.MDASequence | None) -> None:
        """Open the run: derive the layout, create the writer, start the threads."""
        if self._started.is_set():
            self.record.errors.add(
                "sequenceStarted",
                RuntimeError("a handler serves one run; the second sequence is not saved"),
            )
            return
        t = self.record.timing
        t.t_start = time.perf_counter()
        t.start_iso = _dt.datetime.now(_dt.UTC).isoformat()
        if self._layout is None:
            self._layout = layout_from_events(sequence)
        self._sequence_doc = _describe_sequence(sequence)
        self._writer = self._create_writer(self._layout)
        self._start_reconstruction()
        self._state = RunState.ACQUIRING
        self._accepting = True
        self._threads = [
            threading.Thread(target=self._raw_loop, name="sn2n-raw-writer"),
            threading.Thread(target=self._worker_loop, name="sn2n-denoiser"),
            threading.Thread(target=self._monitor_loop, name="sn2n-monitor", daemon=True),
        ]
        self._started.set()
        for thread in self._threads:
            thread.start()

    def _start_reconstruction(self) -> None:
        options = self._recon_options
        if options is None or self._layout is None:
            return
        try:
            self._recon = LiveReconstruction(
                options, self.run_dir, self._layout.to_dict(), on_ready=self.recon_listener
            )
        except ValueError as exc:  # e.g. no SIM axis: the run goes on without it
            self.record.note(f"no live SIM reconstruction: {exc}")

    def latest_recon(self) -> LatestRecon | None:
        """Return the newest live SIM reconstruction (None without one)."""
        return None if self._recon is None else self._recon.latest

    def _create_writer(self, layout: FrameLayout) -> RunWriter:
        try:
            return RunWriter(self.run_dir, layout, **self._store_options)
        except ValueError as exc:
            # Raw frames must be kept: fall back to OME-Zarr rather than lose them.
            self.record.errors.add("sequenceStarted", exc)
            self._store_options["file_format"] = "ome-zarr"
            self.record.header["options"]["file_format"] = "ome-zarr"
            return RunWriter(self.run_dir, layout, **self._store_options)

    def canceled(self) -> None:
        """Remember that the MDA was canceled (the end follows)."""
        self.record.canceled = True

    def end(self, frame_ready_us: Iterable[float] | None = None) -> None:
        """End of acquisition: let the writers drain, close and finalize.

        ``frame_ready_us``: ``frameReady`` costs measured in another process.
        """
        with self._end_lock:
            if self._end_received or not self._started.is_set():
                return
            self._end_received = True
        if frame_ready_us is not None:
            self.record.timing.frame_ready_us.extend(frame_ready_us)
        self._accepting = False
        self.record.timing.t_acq_end = time.perf_counter()
        self._note_frames_never_acquired()
        self._state = RunState.CATCHING_UP
        self._raw_q.put(_END)
        self._den_q.put(_END)

    def _note_frames_never_acquired(self) -> None:
        # pymmcore-plus ends a hardware-sequenced event that returned fewer images than
        # asked for with a warning only ("Unexpected number of images returned from
        # sequence"); run.json says so, or a short store would pass for a complete run.
        planned = None if self._layout is None else self._layout.n_frames
        received = self.record.counts.received
        if self.record.canceled or planned is None or received >= planned:
            return
        self.record.note(
            f"the microscope delivered {received} of the {planned} frames the sequence "
            f"planned; the other {planned - received} were never acquired, so neither store "
            "holds them (see the pymmcore-plus log for the engine's warning)"
        )

    def finish(self, *, interrupted: bool, reason: str) -> None:
        """End a run whose end never arrived (see ``LiveDenoiseHandler.finish``)."""
        if not self._started.is_set() or self._end_received:
            return
        if interrupted:
            self._interrupted = True
            self.record.errors.add("handler", RuntimeError(reason))
        else:
            self.record.note(reason)
        self.end()

    def cancel_catch_up(self) -> None:
        """Stop denoising frames still queued; they are recorded as missing."""
        self._catch_up_canceled.set()
        self._den_active = False

    # -- step 1: accept (the caller's thread) ------------------------------------------------

    def accept(self, img: np.ndarray, event: useq.MDAEvent, meta: Any, t_arrival: float) -> None:
        """Queue one frame for the raw writer and, if admitted, the denoiser; O(1).

        ``t_arrival``: ``perf_counter`` at arrival (in any process). Never raises.
        """
        counts = self.record.counts
        try:
            if not self._accepting:
                return
            seq = counts.received
            if self._copy_frames or (
                self._copy_frames is None and (img.base is not None or not img.flags.owndata)
            ):
                img = img.copy()  # a view into a buffer the camera may reuse
            item = PendingFrame(
                seq, self._place(seq, img, event), img, event, meta or {}, t_arrival, img.nbytes
            )
            counts.received = seq + 1
            self._raw_q.put(item)
            self._latest_raw = img
            if item.pos is not None:
                self._latest_item = item
                self._admit(item)
        except Exception as exc:  # a raising handler kills pymmcore's relay
            self.record.errors.add("frameReady", exc, counts.received)

    def _place(self, seq: int, img: np.ndarray, event: useq.MDAEvent) -> int | None:
        """Return the frame's place in the stores, or None (it goes to the unplaced store)."""
        layout = self._layout
        try:
            pos = seq if layout is None or layout.flat else layout.position(event.index)
        except Exception:  # an odd index must not cost the raw frame
            pos = None
        if self._frame_shape is None:
            self._frame_shape = img.shape
        if pos is None or pos <= self._last_pos or img.shape != self._frame_shape:
            self.record.unplaced.add(seq)
            return None
        self._last_pos = pos
        return pos

    def _admit(self, item: PendingFrame) -> None:
        """Queue ``item`` for the denoiser within the memory budget."""
        if not self._den_active:
            self.record.add_missing(
                "denoiser_failed" if self._den_failed else "catch_up_canceled", item.seq
            )
            return
        self._den_enqueued += 1
        if self.policy == "preview":
            self._evict_oldest(item.nbytes, keep=preview_keep(item.tag.size))
        decision = admit(self.policy, self._queued_bytes(), item.nbytes, self._budget)
        if decision is Admission.QUEUE:
            self._bytes_in += item.nbytes
            self._den_q.put(item)
        elif decision is Admission.DROP:
            self._den_evicted += 1
            self.record.add_missing("preview", item.seq)
        else:
            self.record.counts.spilled += 1
            self._den_q.put(item.spilled())

    def _queued_bytes(self) -> int:
        return self._bytes_in - self._bytes_out - self._bytes_evicted

    def _evict_oldest(self, nbytes: int, keep: int) -> None:
        """Preview: drop the oldest waiting frames to make room for the newest.

        Evicts until ``nbytes`` more fit the budget and at most ``keep`` frames wait.
        """
        while self._queued_bytes() + nbytes > self._budget or len(self._den_q) > keep:
            old = self._den_q.pop_oldest()
            if old is None or old is _END:
                if old is _END:  # only if finish() raced a late frame: keep the marker
                    self._den_q.put_front(old)
                return
            self._bytes_evicted += old.nbytes
            self._den_evicted += 1
            self.record.add_missing("preview", old.seq)

    # -- step 2: raw-writer thread ---------------------------------------------------------

    def _raw_loop(self) -> None:
        writer = self._writer
        assert writer is not None
        if self._writer_nice:
            self._lower_priority(self._writer_nice, "raw_writer")
        self._write_run_json_safely()
        try:
            while True:
                try:
                    item = self._raw_q.get(timeout=0.5)
                except queue.Empty:
                    if self._orphaned():
                        self._interrupted = True
                        break
                    continue
                if item is _END:
                    break
                try:
                    self._write_raw(writer, item)
                except Exception as exc:  # one bad frame must not stop the rest
                    self._raw_failure(writer, item, exc)
                finally:
                    self.record.counts.raw_done += 1
        finally:
            try:
                writer.close_raw()
            except Exception as exc:
                self._raw_failed = True
                self.record.errors.add("raw_writer", exc)

    def _write_raw(self, writer: RunWriter, item: PendingFrame) -> None:
        image = item.image
        assert image is not None
        md = frame_metadata(item)
        # Camera rate from the runner's clock (acquisition thread), not from arrival here.
        self.record.add_runner_time(md.get("runner_time_ms"), item.t)
        if not writer.is_open:
            writer.open(
                image.shape,
                image.dtype,
                pixel_size_um=item.meta.get("pixel_size_um") or None,
                metadata={"model": self._provenance, "policy": self.policy},
            )
        if item.pos is None:
            writer.append_unplaced(image, md)
        else:
            writer.append_raw(item.pos, image, md)
            self.record.counts.raw_written += 1
            self.record.disk_rate.add(image.nbytes)
        self.record.dose.add(md.get("exposure_ms"), item.event.properties)
        # Summed only while a preview asks (one add per frame), so nobody else pays.
        if time.perf_counter() < self.preview_deadline:
            self._widefield.add(item.tag, image)
        else:
            self._widefield.reset()
        if self._recon is not None and item.pos is not None:
            self._recon.offer_raw(item, image)

    def _raw_failure(self, writer: RunWriter, item: PendingFrame, exc: Exception) -> None:
        first = not self._raw_failed
        self._raw_failed = True
        self.record.raw_unsaved.add(item.seq)
        self.record.errors.add("raw_writer", exc, item.seq)
        if first:
            message = (
                f"raw frame {item.seq} could not be saved to {writer.raw_path}: "
                f"{type(exc).__name__}: {exc}"
            )
            self._emit(self.events.raw_failed, message)

    # -- step 3: denoise worker ------------------------------------------------------------

    def _worker_loop(self) -> None:
        pending: deque[PendingFrame] = deque()
        ending = False
        try:
            self._prepare_worker()
            while True:
                ending = self._take(pending, block=not pending and not ending) or ending
                if self._catch_up_canceled.is_set() or not self._den_active:
                    break
                self._preview_newest()
                if not pending:
                    if ending:
                        break
                    continue
                batch = self._next_batch(pending, ending)
                if batch is None:
                    ending = self._take(pending, block=True) or ending
                    continue
                self._wait_for_raw_writer()
                self._process(batch)
        except Exception as exc:  # the run must still be finalized
            self._den_failed = True
            self._den_active = False
            self.record.errors.add("denoise_worker", exc, pending[0].seq if pending else None)
        try:
            # Whatever is still queued gets no denoised twin (failure or canceled catch-up).
            self._drain_missing(pending, ending)
        except Exception as exc:
            self.record.errors.add("denoise_worker", exc)
        finally:
            self._finalize()

    def _prepare_worker(self) -> None:
        if self._denoise_threads is not None:
            import torch

            torch.set_num_threads(self._denoise_threads)
        if self._denoise_nice:
            self._lower_priority(self._denoise_nice, "denoise_worker")

    def _next_batch(self, pending: deque[PendingFrame], ending: bool) -> list[PendingFrame] | None:
        """Cut the next batch off ``pending`` by the policy; None: wait for more frames."""
        tags = [item.tag for item in pending]
        if self.policy == "preview":
            skip, take = preview_batch(tags, [item.image is not None for item in pending], ending)
            for _ in range(skip):
                self._skip(pending.popleft(), "preview")
        elif self._watched():
            take = complete_batch(tags, ending, self._watched_batch(), split_sets=True)
        else:
            take = complete_batch(tags, ending, self.max_batch)
        if not take:
            return None
        return [pending.popleft() for _ in range(take)]

    def _watched(self) -> bool:
        return time.perf_counter() < self.preview_deadline

    def _watched_batch(self) -> int:
        """Return the saving batch size while someone watches (``_PREVIEW_BATCH_S`` of work)."""
        if self._frame_cost_s is None:
            return 1
        return max(1, min(self.max_batch, int(_PREVIEW_BATCH_S / self._frame_cost_s)))

    def _preview_newest(self) -> None:
        """Preview lane: denoise the newest frame now if someone watches and it is due.

        The pair is published, never saved (its saved twin comes in order). A failure
        here is recorded and stops nothing: the saving lane meets the same frame later.
        """
        item = self._latest_item
        now = time.perf_counter()
        due = preview_due(
            now < self.preview_deadline,
            None if item is None else item.seq,
            self._shown,
            self._saved_upto,
            now - self._preview_end,
            self._preview_cost,
            _PREVIEW_MIN_INTERVAL_S,
        )
        if not due or item is None or item.image is None:
            return
        image = item.image
        risk_map = None
        try:
            if self._risk:  # computed alike to the saved twin, risk map included
                result = self._denoiser.denoise(image[None], risk=True)  # type: ignore[call-arg]
                denoised, risk_map = np.asarray(result.image)[0], np.asarray(result.risk)[0]
            else:
                denoised = np.asarray(self._denoiser.denoise(image[None]))[0]
        except Exception as exc:
            self.record.errors.add("preview", exc, item.seq)
            return
        self._preview_end = time.perf_counter()
        self._preview_cost = self._preview_end - now
        self.record.timing.preview_s += self._preview_cost
        self.record.counts.previewed += 1
        self._publish(
            LatestPair(
                frame=item.seq,
                index=frame_metadata(item)["index"],
                raw=image,
                denoised=denoised,
                latency_ms=round(self._preview_cost * 1e3, 3),
                arrived=item.t,
                fresh=True,
                risk=risk_map,
            )
        )

    def _publish(self, pair: LatestPair) -> None:
        """Show ``pair`` unless a newer one is shown already (previews never go back)."""
        if pair.frame <= self._shown:
            return
        self._shown = pair.frame
        self._latest = pair
        self._emit(self.events.pair, pair)

    def _wait_for_raw_writer(self) -> None:
        """While acquiring, hold denoising as long as the raw writer is behind.

        Held frames stay queued (within the memory budget) and are denoised when the raw
        writer has caught up or after the acquisition.
        """
        raw_thread = self._threads[0]
        counts = self.record.counts
        t0 = time.perf_counter()
        while not self._catch_up_canceled.is_set() and hold_for_raw(
            self._accepting, counts.received - counts.raw_done, raw_thread.is_alive()
        ):
            time.sleep(_HOLD_POLL_S)
        self.record.timing.held_for_raw_s += time.perf_counter() - t0

    def _lower_priority(self, nice: int, where: str) -> None:
        """Raise this thread's nice value so the OS schedules acquisition work first.

        On Linux a thread id is a valid PRIO_PROCESS target and torch's intra-op threads,
        created later from this thread, inherit the value. Elsewhere this is a no-op.
        """
        setpriority = getattr(os, "setpriority", None)
        if setpriority is None or sys.platform != "linux":
            return
        try:
            tid = threading.get_native_id()
            setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
        except OSError as exc:
            self.record.errors.add(where, exc)

    def _take(self, pending: deque[PendingFrame], *, block: bool) -> bool:
        """Move queued items into ``pending``; return True if the end marker was seen."""
        ended = False
        try:
            if block:
                item = self._den_q.get(timeout=self._stats_interval)
            else:
                item = self._den_q.get_nowait()
        except queue.Empty:
            if block and self._orphaned():
                # The interpreter is exiting and no end marker can come any more.
                self._interrupted = True
                return True
            return False
        while True:
            if item is _END:
                ended = True
            else:
                pending.append(item)
            try:
                item = self._den_q.get_nowait()
            except queue.Empty:
                return ended

    def _drain_missing(self, pending: deque[PendingFrame], ending: bool) -> None:
        reason = "denoiser_failed" if self._den_failed else "catch_up_canceled"
        while pending:
            self._skip(pending.popleft(), reason)
        while not ending:
            ending = self._take(pending, block=True) or ending
            while pending:
                self._skip(pending.popleft(), reason)

    def _skip(self, item: PendingFrame, reason: str) -> None:
        self._release(item)
        self.record.add_missing(reason, item.seq)
        self._den_done += 1

    def _release(self, item: PendingFrame) -> None:
        if item.image is not None and item.nbytes:
            self._bytes_out += item.nbytes
            item.nbytes = 0

    def _reread(self, item: PendingFrame) -> np.ndarray | None:
        """Read a spilled frame back from the raw store once it is readable there."""
        writer = self._writer
        pos = item.pos
        assert writer is not None and pos is not None
        raw_thread = self._threads[0]
        while not writer.wait_raw_readable(pos, self._stats_interval):
            if self._catch_up_canceled.is_set() or _main_thread_gone():
                return None
            if not raw_thread.is_alive() and not writer.raw_readable(pos):
                return None
        self.record.counts.reread += 1
        return writer.read_raw(pos)

    def _process(self, batch: list[PendingFrame]) -> None:
        """Denoise one batch and write it; every frame of it ends written or missing."""
        # The budget bounds frames *waiting*; the batch in hand is at most one SIM set or
        # max_batch frames more. Releasing it here lets a preview queue hold a whole set.
        for item in batch:
            self._release(item)
        frames, images, rereads = self._batch_pixels(batch)
        if not frames:
            return
        stack = np.stack(images)
        t0 = time.perf_counter()
        try:
            out, risk_maps, fractions = self._denoise(stack)
        except Exception as exc:  # MemoryError and torch OOM included
            self._fail_denoiser(exc, frames)
            return
        spent = time.perf_counter() - t0
        self.record.timing.busy_s += spent
        per_frame = spent / len(frames)
        cost = self._frame_cost_s
        self._frame_cost_s = per_frame if cost is None else 0.7 * cost + 0.3 * per_frame
        counts = self.record.counts
        before = counts.denoised_written
        try:
            self._write_denoised(frames, stack, out, risk_maps, fractions, rereads)
        finally:
            # A write that raised: the rest of the batch has no twin (and is listed so).
            for item in frames[counts.denoised_written - before :]:
                self._skip(item, "denoiser_failed")

    def _batch_pixels(
        self, batch: list[PendingFrame]
    ) -> tuple[list[PendingFrame], list[np.ndarray], set[int]]:
        """Gather the batch's pixels, re-reading spilled frames; skip unreadable ones."""
        frames: list[PendingFrame] = []
        images: list[np.ndarray] = []
        rereads: set[int] = set()
        for item in batch:
            image = item.image
            if image is None:
                image = self._reread(item)
                if image is None:
                    canceled = self._catch_up_canceled.is_set()
                    self._skip(item, "catch_up_canceled" if canceled else "raw_unavailable")
                    continue
                rereads.add(item.seq)
            frames.append(item)
            images.append(image)
        return frames, images, rereads

    def _denoise(self, stack: np.ndarray) -> tuple[np.ndarray, Any, Any]:
        """Run the denoiser: ``(output, risk maps or None, risk fractions or None)``."""
        if self._risk:
            result = self._denoiser.denoise(stack, risk=True)  # type: ignore[call-arg]
            out, risk_maps = np.asarray(result.image), np.asarray(result.risk)
            fractions = np.asarray(result.risk_fraction).reshape(-1)
        else:
            out, risk_maps, fractions = np.asarray(self._denoiser.denoise(stack)), None, None
        if out.shape != stack.shape:
            raise ValueError(
                f"denoise() returned shape {out.shape} for input {stack.shape}; a "
                "FrameDenoiser must keep the shape"
            )
        return out, risk_maps, fractions

    def _write_denoised(
        self,
        frames: list[PendingFrame],
        stack: np.ndarray,
        out: np.ndarray,
        risk_maps: Any,
        fractions: Any,
        rereads: set[int],
    ) -> None:
        """Append the batch's denoised (and risk) frames in order; publish the last pair."""
        writer = self._writer
        assert writer is not None
        if not writer.wait_open(timeout=None if writer.is_open else 60.0):
            raise RuntimeError("the raw writer never opened the stores")
        record = self.record
        checks = self._watch.check(stack, [f.seq for f in frames]) if self._watch else None
        for i, (item, den) in enumerate(zip(frames, out, strict=True)):
            check = None if checks is None or checks[i] is None else checks[i][1]
            md = frame_metadata(item)
            md["denoise"] = {
                **self._provenance,
                "latency_ms": round((time.perf_counter() - item.t) * 1e3, 3),
                "batch": len(frames),
                "reread": item.seq in rereads,
                "data_check": check,  # out of the training frames' photometric range
            }
            assert item.pos is not None
            writer.append_denoised(item.pos, den, md)
            record.disk_rate.add(den.nbytes)
            if self._recon is not None:
                self._recon.offer_denoised(item, den)
            if risk_maps is not None and record.risk_fractions is not None:
                fraction = float(fractions[i])
                md_risk = {**frame_metadata(item), "risk_fraction": round(fraction, 6)}
                writer.append_risk(item.pos, risk_maps[i], md_risk)
                record.risk_fractions.append(fraction)
                record.disk_rate.add(risk_maps[i].nbytes)
            now = time.perf_counter()
            record.latency.add((now - item.t) * 1e3)
            record.denoise_rate.add(now)
            record.counts.denoised_written += 1
            self._den_done += 1
            self._saved_upto = item.seq
        last = frames[-1]
        pair = LatestPair(
            frame=last.seq,
            index=frame_metadata(last)["index"],
            raw=stack[-1],
            denoised=out[-1],
            latency_ms=round((time.perf_counter() - last.t) * 1e3, 3),
            data_check=None if checks is None or checks[-1] is None else checks[-1][1],
            arrived=last.t,
            risk=None if risk_maps is None else risk_maps[-1],
        )
        self._publish(pair)

    def _fail_denoiser(self, exc: BaseException, frames: list[PendingFrame]) -> None:
        self._den_failed = True
        self._den_active = False
        index = frame_metadata(frames[0])["index"]
        self.record.errors.add("denoiser", exc, frames[0].seq, index)
        for item in frames:
            self._skip(item, "denoiser_failed")

    # -- step 4: finalize (denoise worker) ---------------------------------------------------

    def _finalize(self) -> None:
        writer = self._writer
        try:
            self._threads[0].join()
            if writer is not None:
                writer.close_denoised(pad_to=writer.raw_cursor if writer.is_open else None)
        except Exception as exc:
            self.record.errors.add("denoised_writer", exc)
        if self._recon is not None:
            try:
                self._recon.close()
            except Exception as exc:
                self.record.errors.add("reconstruction", exc)
        self.record.timing.t_done = time.perf_counter()
        self._state = RunState.FINISHED
        status = self._status()
        try:
            document = self._document(status)
            self._summary = summary_from_document(document, self.run_dir)
            self.record.write(document, final=True)
        except Exception as exc:  # e.g. a full disk: the summary still tells the story
            self.record.errors.add("run.json", exc)
            self.unwritten_document = self._document(status)
            self._summary = summary_from_document(self.unwritten_document, self.run_dir)
        finally:
            self._done.set()
        self._emit(self.events.stats, self.stats())
        self._emit(self.events.finished, self._summary)

    def _status(self) -> RunStatus:
        if self._raw_failed:
            return RunStatus.FAILED
        if self._den_failed:
            return RunStatus.DENOISER_FAILED
        if self._interrupted:
            return RunStatus.INTERRUPTED
        if self.record.canceled:
            return RunStatus.CANCELED
        if self._catch_up_canceled.is_set() and len(self.record.missing["catch_up_canceled"]):
            return RunStatus.INTERRUPTED  # the acquisition ended, its denoising did not
        return RunStatus.COMPLETED

    # -- monitor thread --------------------------------------------------------------------

    def _orphaned(self) -> bool:
        """Tell whether the interpreter is exiting and no thread could deliver more frames.

        The writer threads are not daemons, so a script that ends without ``wait()``
        still gets closed stores (and, under ``complete``, the catch-up); this check
        keeps them from waiting forever for an end that cannot come.
        """
        if threading.main_thread().is_alive():
            return False
        ours = {*self._threads, threading.current_thread()}
        return not any(
            t.is_alive() and not t.daemon and t not in ours for t in threading.enumerate()
        )

    def _monitor_loop(self) -> None:
        last_heartbeat = time.monotonic()
        while not self._done.wait(self._stats_interval):
            self._emit(self.events.stats, self.stats())
            for tick in self._ticks:
                try:
                    tick()
                except Exception as exc:
                    self.record.errors.add("monitor", exc)
            if time.monotonic() - last_heartbeat >= _HEARTBEAT_S:
                last_heartbeat = time.monotonic()
                self._write_run_json_safely()

    # -- bookkeeping -----------------------------------------------------------------------

    def _emit(self, signal: Any, value: Any) -> None:
        try:
            signal.emit(value)
        except Exception as exc:  # a listener must not stop the run
            self.record.errors.add("signal listener", exc)

    def _document(self, status: str) -> dict[str, Any]:
        writer = self._writer
        extra = {
            "sequence": self._events_doc if self._events_doc is not None else self._sequence_doc,
            "layout": None if self._layout is None else self._layout.to_dict(),
            "stores": None if writer is None else writer.describe(),
            "reconstruction": None if self._recon is None else self._recon.summary(),
        }
        watched = self._watch.notes() if self._watch is not None else []
        return self.record.document(status, self._state.value, extra, watched)

    def _write_run_json_safely(self) -> None:
        try:
            self.record.write(self._document(RunStatus.RUNNING))
        except Exception as exc:  # keep saving raw frames regardless
            self.record.errors.add("run.json", exc)
