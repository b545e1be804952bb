"""Live denoising inside a pymmcore-plus MDA, raw and denoised saved side by side.

Threads (see ``docs/acquisition.md``)::

    acquisition thread --(pymmcore-plus relay deque)--> relay thread: frameReady
        frameReady: O(1), never blocks, never raises; puts the frame (a reference) into
        the raw queue and, if admitted, into the denoise queue
    raw-writer thread:   appends every raw frame, in order, to raw.ome.zarr
    denoise worker:      owns the denoiser; batches SIM sets; writes denoised.ome.zarr
                         in order; re-reads frames the memory budget could not hold
    monitor thread:      publishes LiveStats; refreshes run.json every few seconds

The denoise queue is bounded by ``memory_budget_mb``. Under the ``complete`` policy a
frame that does not fit is queued as its position only and re-read from the raw store
once it is readable; under ``preview`` only the newest SIM set is denoised and older
frames are recorded as missing. A failing denoiser stops denoising, never acquisition
or raw saving.
"""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import json
import logging
import math
import os
import pickle
import platform
import queue
import sys
import threading
import time
import traceback
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata as _metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

import numpy as np
import useq
from psygnal import Signal, SignalGroup

from sn2n_live._outputs import check_writable_dir
from sn2n_live.acquisition._stats import LatencyRecorder, LiveStats, RangeList, RateMeter
from sn2n_live.acquisition._writers import (
    RUN_JSON,
    DenoisedDtype,
    FileFormat,
    FrameLayout,
    RunWriter,
    ZarrBackend,
    layout_from_events,
    write_json_atomic,
)

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

    from sn2n_live.acquisition._isolated import ProcessLiveDenoiseHandler
    from sn2n_live.method._photometry import PhotometryWatch

__all__ = [
    "FrameDenoiser",
    "LatestPair",
    "LiveDenoiseEvents",
    "LiveDenoiseHandler",
    "Policy",
    "RunSummary",
    "check_run_folder",
    "live_denoise",
    "load_denoiser",
]

Policy = Literal["complete", "preview"]
Isolation = Literal["thread", "process"]
RunStatus = Literal["running", "completed", "canceled", "denoiser_failed", "failed", "interrupted"]

_log = logging.getLogger(__name__)

RUN_FORMAT = "sn2n-live-run"
RUN_FORMAT_VERSION = 1
_HEARTBEAT_S = 2.0
# The denoise worker waits while more raw frames than this are not yet written (and
# checks again every _HOLD_POLL_S): one 3x5 SIM set plus slack.
_RAW_BACKLOG_HOLD = 16
_HOLD_POLL_S = 0.005
_SIM_KEY = "sim"
_PATTERN_KEYS = ("a", "h")
# Why a frame has no denoised twin (run.json: missing_denoised.by_reason).
_LOST_FINISH = (
    "pymmcore-plus's relay stopped without delivering sequenceFinished (a race in its "
    "MDARelayThread); the end of the sequence was taken from the relay stopping"
)
_MISSING_REASONS = ("preview", "denoiser_failed", "catch_up_canceled", "raw_unavailable")


def _main_thread_gone() -> bool:
    """Tell whether the interpreter is shutting down (the main thread has finished)."""
    return not threading.main_thread().is_alive()


@runtime_checkable
class FrameDenoiser(Protocol):
    """What the live handler needs from a denoiser.

    :class:`sn2n_live.method._denoiser.Denoiser` satisfies it. The handler calls
    :meth:`denoise` from one worker thread only, so implementations need not be
    thread-safe.

    Attributes
    ----------
    provenance : Mapping[str, Any]
        JSON-serializable description of what produces the output (model sha256,
        engine, precision, normalization, ...); stored in run.json and per frame.
    """

    @property
    def provenance(self) -> Mapping[str, Any]:
        """What produces the output."""
        ...

    def denoise(self, frames: np.ndarray) -> np.ndarray:
        """Denoise ``(N, H, W)`` camera frames into float32 ``(N, H, W)`` in ADU."""
        ...


@dataclass(frozen=True)
class LatestPair:
    """The newest raw frame with its denoised twin, for previews.

    Attributes
    ----------
    frame : int
        Frame number in arrival order (0-based).
    index : dict of str to int
        The frame's MDA event index.
    raw : numpy.ndarray
        The camera frame (do not modify).
    denoised : numpy.ndarray
        float32 denoised frame in ADU.
    latency_ms : float
        Frame arrival to denoised frame written.
    data_check : str or None
        How the frame falls outside the model's training photometry (e.g. ``"signal 21x
        the training's"``), or None when it does not (or nothing was checked).
    """

    frame: int
    index: dict[str, int]
    raw: np.ndarray
    denoised: np.ndarray
    latency_ms: float
    data_check: str | None = None


@dataclass(frozen=True)
class RunSummary:
    """How a live-denoise run ended (the essentials of its run.json).

    Attributes
    ----------
    status : str
        ``completed``, ``canceled``, ``denoiser_failed``, ``failed`` (raw saving
        failed) or ``interrupted`` (the MDA never reported its end).
    run_dir : pathlib.Path
        The run folder.
    frames_received, raw_written, denoised_written : int
        Frame counts.
    missing_denoised : list of [int, int]
        Inclusive ranges of frame numbers without a denoised twin.
    first_missing_denoised : int or None
        First such frame.
    unplaced_frames : list of [int, int]
        Frames the layout had no place for (kept in ``unplaced.ome.zarr``).
    errors : list of dict
        Every error caught (where, type, message, frame).
    acquisition_s, catch_up_s : float
        Sequence start to end; end to the denoised store closed.
    camera_fps, denoise_fps : float
        Camera rate from the runner's timestamps; denoised frames per second of
        time spent inside ``denoise``.
    latency_p50_ms, latency_p99_ms : float or None
        Frame arrival to denoised frame written.
    frame_ready_p50_us, frame_ready_p99_us : float or None
        Cost of the handler's ``frameReady`` on the relay thread.
    notes : list of str
        Warnings about the run that are not errors, e.g. frames unlike the model's
        training frames (run.json ``notes``).
    """

    status: str
    run_dir: Path
    frames_received: int
    raw_written: int
    denoised_written: int
    missing_denoised: list[list[int]]
    first_missing_denoised: int | None
    unplaced_frames: list[list[int]]
    errors: list[dict[str, Any]]
    acquisition_s: float
    catch_up_s: float
    camera_fps: float
    denoise_fps: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    frame_ready_p50_us: float | None
    frame_ready_p99_us: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        return out


class LiveDenoiseEvents(SignalGroup):
    """Signals of a :class:`LiveDenoiseHandler`, emitted from its worker threads.

    Connect GUI slots with ``thread="main"`` (psygnal) or poll
    :meth:`LiveDenoiseHandler.latest` from a timer instead; callbacks that raise are
    recorded in run.json and do not stop the run.

    Signals
    -------
    stats(LiveStats)
        Every ``stats_interval_s`` while the run is active.
    pair(LatestPair)
        After every denoised batch.
    raw_failed(str)
        Once, at the first raw frame that could not be saved (disk full, store
        removed): which frame, where and why. :func:`live_denoise` cancels the MDA on it.
    finished(RunSummary)
        Once, after both stores are closed and run.json is final.
    """

    stats = Signal(LiveStats)
    pair = Signal(LatestPair)
    raw_failed = Signal(str)
    finished = Signal(RunSummary)


class _Frame:
    """One frame in flight: its numbers, pixels (or None once spilled) and event."""

    __slots__ = ("event", "image", "meta", "nbytes", "pos", "seq", "t")

    def __init__(
        self,
        seq: int,
        pos: int | None,
        image: np.ndarray | None,
        event: useq.MDAEvent,
        meta: Mapping[str, Any],
        t: float,
        nbytes: int,
    ) -> None:
        self.seq = seq
        self.pos = pos
        self.image = image
        self.event = event
        self.meta = meta
        self.t = t
        self.nbytes = nbytes


_END = object()


class _Inbox:
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


@dataclass
class _Timing:
    start_iso: str | None = None
    t_start: float | None = None
    t_acq_end: float | None = None
    t_done: float | None = None
    busy_s: float = 0.0
    held_for_raw_s: float = 0.0
    first_runner_ms: float | None = None
    last_runner_ms: float | None = None
    n_timed: int = 0
    # 4 bytes per frame, for the frameReady cost percentiles.
    frame_ready_us: array = field(default_factory=lambda: array("f"))


def load_denoiser(
    model: FrameDenoiser | str | os.PathLike[str] | Callable[[], FrameDenoiser],
) -> FrameDenoiser:
    """Return ``model`` if it is a denoiser, else load or build one.

    Parameters
    ----------
    model : FrameDenoiser, str, os.PathLike or callable
        A denoiser (anything with ``denoise`` and ``provenance``), the path of a
        ``.sn2n`` model package (loaded as ``Denoiser(load_package(path))``), or a
        zero-argument factory that returns a denoiser (what a denoise process needs:
        e.g. ``functools.partial(build_profile_denoiser, profile, package)``).

    Returns
    -------
    FrameDenoiser
        The denoiser.

    Raises
    ------
    ValueError
        If ``model`` is neither, or the path does not exist; ``ModelPackageError`` (a
        ``ValueError``) if the package is unusable.
    """
    if isinstance(model, str | os.PathLike):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ValueError(
                f"model {str(path)!r} is not a file; pass the path of a trained .sn2n model "
                "package (see `sn2n-live train`) or a denoiser object."
            )
        # Imported here so that importing the acquisition package does not load torch.
        from sn2n_live.method._denoiser import Denoiser
        from sn2n_live.method._package import load_package

        return Denoiser(load_package(path))
    if callable(getattr(model, "denoise", None)) and hasattr(model, "provenance"):
        return model
    if callable(model):
        built = model()
        if callable(getattr(built, "denoise", None)) and hasattr(built, "provenance"):
            return built
        raise ValueError(
            f"the model factory returned {type(built).__name__}, not a denoiser (with "
            "denoise() and provenance)."
        )
    raise ValueError(
        f"model must be a denoiser (with denoise() and provenance), a .sn2n path or a "
        f"factory; got {type(model).__name__}."
    )


def _default_isolation(model: Any) -> Isolation:
    """Process isolation where the model can cross to a child process, else threads."""
    if isinstance(model, str | os.PathLike):
        return "process"
    if callable(getattr(model, "denoise", None)) and hasattr(model, "provenance"):
        why = f"the model is a {type(model).__name__} object of this process"
    else:
        try:
            pickle.dumps(model)
            return "process"
        except Exception as exc:
            why = f"the model factory cannot be sent to a child process ({exc})"
    _log.info(
        "live_denoise: isolation='thread' because %s; pass a .sn2n path or a picklable "
        "factory to denoise in a child process (the camera keeps its rate)",
        why,
    )
    return "thread"


def _photometry_watch(denoiser: FrameDenoiser) -> PhotometryWatch | None:
    """Return a watch over the denoiser's training photometry (None: not a package)."""
    package = getattr(denoiser, "package", None)
    training = getattr(package, "training", None)
    if not isinstance(training, Mapping):
        return None
    from sn2n_live.method._photometry import PhotometryWatch  # torch: only with a package

    return PhotometryWatch(training.get("photometry"))


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


def wait_until_done(
    done: threading.Event,
    stats: Callable[[], LiveStats],
    timeout: float | None,
    progress: Callable[[LiveStats], None] | None,
    interval_s: float,
) -> None:
    """Wait for ``done`` and report progress: the body of both handlers' ``wait``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = interval_s
        if deadline is not None:
            step = min(step, max(0.0, deadline - time.monotonic()))
        if done.wait(step):
            break
        if progress is not None:
            progress(stats())
        if deadline is not None and time.monotonic() >= deadline:
            s = stats()
            raise TimeoutError(
                f"live denoising not finished after {timeout} s: {s.denoised_written} of "
                f"{s.frames_received} frames denoised, {s.queue_depth} queued. Call wait() "
                "again, cancel_catch_up() to close the stores now, or finish() if the MDA "
                "ended without reporting it."
            )
    if progress is not None:
        progress(stats())


def _frame_metadata(item: _Frame) -> dict[str, Any]:
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
    sim = event.metadata.get(_SIM_KEY) if event.metadata else None
    if isinstance(sim, Mapping):
        md["sim"] = {"angle": sim.get("angle"), "phase": sim.get("phase")}
    if meta.get("hardware_triggered"):
        md["hardware_triggered"] = True
    return md


def _set_size(item: _Frame) -> int:
    """Frames in the SIM set of ``item`` (1 outside SIM), from ``metadata["sim"]``."""
    sim = item.event.metadata.get(_SIM_KEY) if item.event.metadata else None
    if isinstance(sim, Mapping):
        try:
            return max(1, int(sim.get("set_size", 1)))
        except (TypeError, ValueError):
            return 1
    return 1


def _set_info(item: _Frame) -> tuple[int, tuple[tuple[str, int], ...]]:
    """SIM set size of a frame and the key shared by the frames of its set."""
    size = _set_size(item)
    key = tuple(
        sorted((str(k), int(v)) for k, v in item.event.index.items() if k not in _PATTERN_KEYS)
    )
    return size, key


def check_run_folder(out: str | os.PathLike[str]) -> Path:
    """Check that ``out`` can be a new run folder; create it.

    Called before the acquisition starts, so that no sample is exposed for a run that
    cannot be saved.

    Parameters
    ----------
    out : str or os.PathLike
        The run folder: must not exist, or be an empty folder, and be writable.

    Returns
    -------
    pathlib.Path
        The run folder, absolute (it exists afterwards).

    Raises
    ------
    ValueError
        If ``out`` exists and is not an empty folder.
    sn2n_live._outputs.OutputPathError
        If the folder cannot be created or written to.
    """
    run_dir = Path(out).expanduser().absolute()
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise ValueError(
            f"the run folder {run_dir} already exists and is not an empty folder; choose a "
            "new run folder (each run writes its own raw/denoised stores and run.json)"
        )
    check_writable_dir(run_dir, what="run folder")
    return run_dir


class LiveDenoiseHandler:
    """Non-blocking live denoising for one pymmcore-plus MDA run.

    Pass it as an MDA output (``core.mda.run(events, output=handler)``) or use
    :func:`live_denoise`. Its MDA methods run on pymmcore-plus's relay thread, never
    raise, and never wait on the denoiser.

    Parameters
    ----------
    denoiser : FrameDenoiser
        Used from one worker thread only.
    out : str or os.PathLike
        Run folder; must not exist yet or be empty.
    events : useq.MDASequence or iterable of useq.MDAEvent, optional
        The events that will be run, to derive the store layout (see
        :func:`~sn2n_live.acquisition._writers.layout_from_events`). Without it the
        layout comes from the ``MDASequence`` the run reports, or is one unbounded axis
        for plain event lists.
    policy : {"complete", "preview"}
        ``complete``: every frame gets a denoised twin (catching up after the
        acquisition if needed). ``preview``: only the newest SIM set is denoised;
        skipped frames are recorded as missing.
    memory_budget_mb : float
        Most memory the frames waiting for the denoiser may hold (the batch being
        denoised comes on top). Beyond it, ``complete`` queues a frame as its position
        and re-reads it from the raw store later; ``preview`` evicts the oldest waiting
        frames (recorded as missing).
    max_batch : int
        Most frames per ``denoise`` call (a SIM set larger than this is still one call).
    denoised_dtype : {"float32", "uint16"}
        Denoised store dtype; uint16 rounds and clips.
    file_format : {"ome-zarr", "ome-tiff"}
        Store format (OME-TIFF: only t/c/z layouts and uint16 denoised).
    zarr_backend : {"zarr-python", "tensorstore", "acquire-zarr"}
        OME-Zarr writer backend: zarr-python writes synchronously (crash-safe per frame,
        re-reads possible during the run); tensorstore and acquire-zarr write in the
        background (spilled frames are re-read only after the acquisition; acquire-zarr
        holds the GIL least but needs the most CPU, see ``docs/acquisition.md``).
    run_info, profile : mapping or pydantic model, optional
        Stored verbatim in run.json.
    stats_interval_s : float
        Period of the ``stats`` signal.
    denoise_threads : int, optional
        If set, the worker calls ``torch.set_num_threads`` (process-wide) with it, to
        leave CPU cores to the camera.
    denoise_nice : int
        How much lower than the acquisition the denoise worker runs in the OS scheduler
        (Linux nice increment, 0..19; 0 leaves it alone). On a machine with few cores
        this keeps a CPU-bound denoiser from taking CPU time from the camera and the raw
        writer; the worker then uses what they leave.
    writer_nice : int
        The same for the raw-writer thread (0..19). When the CPU cannot keep up, frames then
        wait in the raw backlog (memory, reported in the stats) rather than in the camera's
        circular buffer, whose overflow would end the acquisition.
    copy_frames : bool, optional
        Copy each frame in ``frameReady``. Default: only when the array does not own
        its memory (pymmcore and unicore hand out a fresh array per frame; a view into
        a reused buffer would be overwritten).
    risk : bool
        Also write each frame's hallucination-risk map (float32, 0..1) to a third store,
        ``risk.ome.zarr``, with the frame's risk fraction in its journal; run.json sums it
        up. Needs a denoiser whose ``denoise(frames, risk=True)`` returns a
        :class:`~sn2n_live.method.Denoised` (sn2n-live's and the engines' do) and
        OME-Zarr output.

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
    ) -> None:
        if not (callable(getattr(denoiser, "denoise", None)) and hasattr(denoiser, "provenance")):
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
        run_dir = check_run_folder(out)
        self._denoiser = denoiser
        self._provenance = _jsonable(dict(denoiser.provenance), "denoiser.provenance")
        self._run_info = _jsonable(run_info, "run_info")
        self._profile = _jsonable(profile, "profile")
        self.run_dir = run_dir
        self.policy: Policy = policy
        self.memory_budget_mb = float(memory_budget_mb)
        self.max_batch = max_batch
        self._options = {
            "denoised_dtype": denoised_dtype,
            "file_format": file_format,
            "zarr_backend": zarr_backend,
            "risk": risk,
        }
        self._risk = risk
        self._watch = _photometry_watch(denoiser)
        self._risk_fractions: list[float] = []  # denoise worker only, in frame order
        self._stats_interval = float(stats_interval_s)
        self._denoise_threads = denoise_threads
        self._denoise_nice = denoise_nice
        self._writer_nice = writer_nice
        self._copy_frames = copy_frames
        self._isolation: Isolation = "thread"  # "process" when run by ProcessLiveDenoiseHandler
        self._events_given = events is not None
        self._events_doc = self._describe_events(events)
        self._layout: FrameLayout | None = None
        self._writer: RunWriter | None = None
        if events is not None:
            self._layout = layout_from_events(events)
            # Fail before the acquisition, not on its first frame.
            self._writer = RunWriter(self.run_dir, self._layout, **self._options)
        else:
            RunWriter(self.run_dir, layout_from_events(None), **self._options)

        self.events = LiveDenoiseEvents()
        self._budget = int(self.memory_budget_mb * 2**20)
        self._bytes_in = 0
        self._bytes_out = 0
        self._bytes_evicted = 0
        self._raw_q = _Inbox()
        self._den_q = _Inbox()
        self._state = "waiting"
        self._started = threading.Event()
        self._done = threading.Event()
        self._accepting = False
        self._den_active = True
        self._canceled = False
        self._interrupted = False
        self._finish_received = False
        self._catch_up_canceled = threading.Event()
        self._timing = _Timing()
        self._n_received = 0
        self._n_raw_done = 0
        self._raw_written = 0
        self._den_enqueued = 0
        self._den_done = 0
        self._den_evicted = 0
        self._den_written = 0
        self._spilled = 0
        self._n_reread = 0
        self._last_pos = -1
        self._frame_shape: tuple[int, ...] | None = None
        self._missing = {reason: RangeList() for reason in _MISSING_REASONS}
        self._unplaced = RangeList()
        self._errors: list[dict[str, Any]] = []
        self._errors_lock = threading.Lock()
        self._raw_failed = False
        self._den_failed = False
        self._latest: LatestPair | None = None
        self._latest_raw: np.ndarray | None = None
        self._camera_rate = RateMeter()
        self._denoise_rate = RateMeter()
        self._latency = LatencyRecorder()
        self._run_json_lock = threading.Lock()
        self._finish_lock = threading.Lock()
        self._relay: threading.Thread | None = None
        self._notes: list[str] = []
        self._final_written = False
        self._summary: RunSummary | None = None
        self._sequence_doc: Any = None
        self._threads: list[threading.Thread] = []

    # -- public API ---------------------------------------------------------------------------

    @property
    def layout(self) -> FrameLayout | None:
        """Store layout (known once the sequence started or ``events`` were given)."""
        return self._layout

    @property
    def writer(self) -> RunWriter | None:
        """The run folder writer (created at the latest when the sequence starts)."""
        return self._writer

    @property
    def started(self) -> bool:
        """Whether a sequence started."""
        return self._started.is_set()

    @property
    def finished(self) -> bool:
        """Whether the run is over: stores closed, run.json final."""
        return self._done.is_set()

    def latest(self) -> LatestPair | None:
        """Newest raw/denoised pair (thread-safe; previews poll this)."""
        return self._latest

    def latest_raw(self) -> np.ndarray | None:
        """Newest raw frame received, denoised or not (thread-safe)."""
        return self._latest_raw

    def stats(self) -> LiveStats:
        """Return a snapshot of the run's live statistics (thread-safe)."""
        t = self._timing
        now = time.perf_counter()
        elapsed = 0.0 if t.t_start is None else (t.t_done or now) - t.t_start
        p50, p99 = self._latency.percentiles(recent=True)
        missing = self._missing_total()
        received = self._n_received
        placed = received - len(self._unplaced)
        return LiveStats(
            state=self._state,
            elapsed_s=round(elapsed, 3),
            frames_received=received,
            raw_written=self._raw_written,
            denoised_written=self._den_written,
            denoised_missing=missing,
            queue_depth=max(0, self._den_enqueued - self._den_done - self._den_evicted),
            queued_mb=round(self._queued_bytes() / 2**20, 3),
            spilled=self._spilled,
            raw_backlog=max(0, received - self._n_raw_done),
            frames_behind=max(0, placed - self._den_written - missing),
            camera_fps=round(self._camera_rate.rate(), 2),
            denoise_fps=round(self._denoise_rate.rate(now if t.t_done is None else None), 2),
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            frames_expected=None if self._layout is None else self._layout.n_frames,
        )

    def wait(
        self,
        timeout: float | None = None,
        progress: Callable[[LiveStats], None] | None = None,
        interval_s: float = 0.5,
    ) -> RunSummary:
        """Block until the run is over (denoiser caught up, stores closed).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most; None waits as long as it takes.
        progress : callable, optional
            Called with a :class:`LiveStats` every ``interval_s`` while waiting and once
            at the end, on the calling thread.
        interval_s : float
            Progress period.

        Returns
        -------
        RunSummary
            How the run ended.

        Raises
        ------
        TimeoutError
            If the run is not over within ``timeout`` (it keeps running).
        """
        wait_until_done(self._done, self.stats, timeout, progress, interval_s)
        assert self._summary is not None
        return self._summary

    def cancel_catch_up(self) -> None:
        """Stop denoising frames still queued; they are recorded as missing.

        Raw saving is unaffected. Useful when the acquisition is over and waiting for
        the denoiser is not worth it.
        """
        self._catch_up_canceled.set()
        self._den_active = False

    def finish(
        self,
        *,
        interrupted: bool = True,
        reason: str = "the MDA did not report the end of the sequence",
    ) -> None:
        """End a run whose ``sequenceFinished`` never arrived.

        pymmcore-plus 0.18.1's relay thread can stop just before delivering
        ``sequenceFinished`` (it sets its stop flag before queueing the event), so the
        handler also ends the run when the relay thread is gone, and
        :func:`live_denoise` calls this after the MDA. Harmless after a normal end.

        Parameters
        ----------
        interrupted : bool
            True if the acquisition may not have ended normally (status
            ``interrupted``, an error is recorded); False if it is known to have ended
            (a note is recorded).
        reason : str
            What happened, for run.json.
        """
        if not self._started.is_set() or self._finish_received:
            return
        if interrupted:
            self._interrupted = True
            self._record_error("handler", RuntimeError(reason), None)
        else:
            self._notes.append(reason)
        self.sequenceFinished(None)

    # -- MDA callbacks (relay thread) ----------------------------------------------------------

    def sequenceStarted(self, sequence: useq.MDASequence | None = None, meta: Any = None) -> None:
        """Open the run: derive the layout, start the writer and worker threads."""
        try:
            if self._started.is_set():
                self._record_error(
                    "sequenceStarted",
                    RuntimeError("a handler serves one run; the second sequence is not saved"),
                    None,
                )
                return
            # The relay thread (or, if called synchronously, the acquisition thread).
            current = threading.current_thread()
            self._relay = None if current is threading.main_thread() else current
            t = self._timing
            t.t_start = time.perf_counter()
            t.start_iso = _dt.datetime.now(_dt.UTC).isoformat()
            if self._layout is None:
                self._layout = layout_from_events(sequence)
            self._sequence_doc = self._describe_sequence(sequence)
            if self._writer is None:
                try:
                    self._writer = RunWriter(self.run_dir, self._layout, **self._options)
                except ValueError as exc:
                    # Raw frames must be kept: fall back to OME-Zarr rather than lose them.
                    self._record_error("sequenceStarted", exc, None)
                    self._options["file_format"] = "ome-zarr"
                    self._writer = RunWriter(self.run_dir, self._layout, **self._options)
            self._state = "acquiring"
            self._accepting = True
            self._threads = [
                threading.Thread(target=self._raw_loop, name="sn2n-raw-writer"),
                threading.Thread(target=self._worker_loop, name="sn2n-denoiser"),
                threading.Thread(target=self._monitor_loop, name="sn2n-monitor", daemon=True),
            ]
            self._started.set()
            for thread in self._threads:
                thread.start()
        except Exception as exc:  # a raising handler kills pymmcore's relay
            self._record_error("sequenceStarted", exc, None)

    def frameReady(self, img: np.ndarray, event: useq.MDAEvent, meta: Any = None) -> None:
        """Queue the frame for the raw writer and (if admitted) the denoiser; O(1)."""
        t0 = time.perf_counter()
        try:
            self._accept(img, event, meta, t0)
        finally:
            self._timing.frame_ready_us.append((time.perf_counter() - t0) * 1e6)

    def _accept(self, img: np.ndarray, event: useq.MDAEvent, meta: Any, t_arrival: float) -> None:
        """Queue a frame that arrived at ``t_arrival`` (``perf_counter``, any process)."""
        t0 = t_arrival
        try:
            if not self._accepting:
                return
            seq = self._n_received
            if self._copy_frames or (
                self._copy_frames is None and (img.base is not None or not img.flags.owndata)
            ):
                img = img.copy()
            meta = meta if meta is not None else {}
            layout = self._layout
            try:
                pos = seq if layout is None or layout.flat else layout.position(event.index)
            except Exception:  # an odd index must not cost the raw frame
                pos = None
            shape = img.shape
            if self._frame_shape is None:
                self._frame_shape = shape
            if pos is None or pos <= self._last_pos or shape != self._frame_shape:
                pos = None
                self._unplaced.add(seq)
            else:
                self._last_pos = pos
            nbytes = img.nbytes
            item = _Frame(seq, pos, img, event, meta, t0, nbytes)
            self._n_received = seq + 1
            self._raw_q.put(item)
            self._latest_raw = img
            if pos is not None:
                self._admit(item)
        except Exception as exc:  # a raising handler kills pymmcore's relay
            self._record_error("frameReady", exc, self._n_received)

    def _adopt_frame_ready_costs(self, costs_us: Iterable[float]) -> None:
        """Report ``frameReady`` costs measured elsewhere (the acquisition process)."""
        self._timing.frame_ready_us = array("f", costs_us)

    def _admit(self, item: _Frame) -> None:
        """Queue ``item`` for the denoiser within the memory budget (relay thread)."""
        if not self._den_active:
            self._missing_add("denoiser_failed" if self._den_failed else "catch_up_canceled", item)
            return
        self._den_enqueued += 1
        if self.policy == "preview":
            # A preview needs only the newest set: keep at most one more set waiting.
            self._evict_oldest(item.nbytes, keep=2 * _set_size(item) - 1)
        if self._queued_bytes() + item.nbytes <= self._budget:
            self._bytes_in += item.nbytes
            self._den_q.put(item)
        elif self.policy == "preview":
            self._den_evicted += 1
            self._missing_add("preview", item)
        else:
            self._spilled += 1
            self._den_q.put(_Frame(item.seq, item.pos, None, item.event, item.meta, item.t, 0))

    def _queued_bytes(self) -> int:
        # No lock: each counter has a single writer (in and evicted: relay; out: worker).
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
            self._missing_add("preview", old)

    def sequenceCanceled(self, sequence: useq.MDASequence | None = None) -> None:
        """Remember that the run was canceled (``sequenceFinished`` follows)."""
        self._canceled = True

    def sequenceFinished(self, sequence: useq.MDASequence | None = None) -> None:
        """End of acquisition: let the writers drain, close and finalize."""
        try:
            with self._finish_lock:
                if self._finish_received or not self._started.is_set():
                    return
                self._finish_received = True
            self._accepting = False
            self._timing.t_acq_end = time.perf_counter()
            self._state = "catching_up"
            self._raw_q.put(_END)
            self._den_q.put(_END)
        except Exception as exc:  # a raising handler kills pymmcore's relay
            self._record_error("sequenceFinished", exc, None)

    # -- raw-writer thread -------------------------------------------------------------------

    def _raw_loop(self) -> None:
        writer = self._writer
        assert writer is not None
        if self._writer_nice:
            self._lower_priority(self._writer_nice, "raw_writer")
        try:
            self._write_run_json("running")
        except Exception as exc:  # keep saving raw frames regardless
            self._record_error("run.json", exc, None)
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
                    first = not self._raw_failed
                    self._raw_failed = True
                    self._record_error("raw_writer", exc, item.seq)
                    if first:
                        message = (
                            f"raw frame {item.seq} could not be saved to {writer.raw_path}: "
                            f"{type(exc).__name__}: {exc}"
                        )
                        self._emit(self.events.raw_failed, message)
                finally:
                    self._n_raw_done += 1
        finally:
            try:
                writer.close_raw()
            except Exception as exc:
                self._raw_failed = True
                self._record_error("raw_writer", exc, None)

    def _write_raw(self, writer: RunWriter, item: _Frame) -> None:
        image = item.image
        assert image is not None
        md = _frame_metadata(item)
        # Camera rate from the runner's clock (acquisition thread), not from arrival here.
        runner_ms = md.get("runner_time_ms")
        timing = self._timing
        if runner_ms is not None:
            self._camera_rate.add(runner_ms / 1000.0)
            if timing.first_runner_ms is None:
                timing.first_runner_ms = runner_ms
            timing.last_runner_ms = runner_ms
            timing.n_timed += 1
        else:
            self._camera_rate.add(item.t)
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
            self._raw_written += 1

    # -- denoise worker -----------------------------------------------------------------------

    def _worker_loop(self) -> None:
        pending: deque[_Frame] = deque()
        ending = False
        try:
            if self._denoise_threads is not None:
                import torch

                torch.set_num_threads(self._denoise_threads)
            if self._denoise_nice:
                self._lower_priority(self._denoise_nice, "denoise_worker")
            while True:
                ending = self._take(pending, block=not pending and not ending) or ending
                if self._catch_up_canceled.is_set() or not self._den_active:
                    break
                if not pending:
                    if ending:
                        break
                    continue
                if self.policy == "preview":
                    batch = self._preview_batch(pending, ending)
                else:
                    batch = self._complete_batch(pending, ending)
                if batch is None:
                    ending = self._take(pending, block=True) or ending
                    continue
                self._yield_to_raw_writer()
                self._process(batch)
        except Exception as exc:  # the run must still be finalized
            self._den_failed = True
            self._den_active = False
            self._record_error("denoise_worker", exc, pending[0].seq if pending else None)
        try:
            # Whatever is still queued gets no denoised twin (failure or canceled catch-up).
            self._drain_missing(pending, ending)
        except Exception as exc:
            self._record_error("denoise_worker", exc, None)
        finally:
            self._finalize()

    def _yield_to_raw_writer(self) -> None:
        """While acquiring, hold denoising as long as the raw writer is behind.

        Raw frames come first: on a saturated CPU, denoising and writing denoised frames
        compete with the raw writer and with the acquisition thread popping the camera's
        buffer. Held frames stay queued (within the memory budget) and are denoised when
        the raw writer has caught up or after the acquisition.
        """
        raw_thread = self._threads[0]
        t0 = time.perf_counter()
        while (
            self._accepting
            and self._n_received - self._n_raw_done > _RAW_BACKLOG_HOLD
            and raw_thread.is_alive()
            and not self._catch_up_canceled.is_set()
        ):
            time.sleep(_HOLD_POLL_S)
        self._timing.held_for_raw_s += time.perf_counter() - t0

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
            self._record_error(where, exc, None)

    def _take(self, pending: deque[_Frame], *, block: bool) -> bool:
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

    def _drain_missing(self, pending: deque[_Frame], ending: bool) -> bool:
        reason = "denoiser_failed" if self._den_failed else "catch_up_canceled"
        while pending:
            self._skip(pending.popleft(), reason)
        while not ending:
            ending = self._take(pending, block=True) or ending
            while pending:
                self._skip(pending.popleft(), reason)
        return ending

    def _skip(self, item: _Frame, reason: str) -> None:
        self._release(item)
        self._missing_add(reason, item)
        self._den_done += 1

    def _release(self, item: _Frame) -> None:
        if item.image is not None and item.nbytes:
            self._bytes_out += item.nbytes
            item.nbytes = 0

    @staticmethod
    def _group_at(pending: deque[_Frame], i: int) -> tuple[list[_Frame], bool]:
        """Return the SIM set (or frame) starting at ``pending[i]`` and whether it is whole.

        A set cut short by a frame of another set (a canceled or skipped event) counts
        as whole: nothing more of it will come.
        """
        first = pending[i]
        size, key = _set_info(first)
        group = [first]
        j = i + 1
        while j < len(pending) and len(group) < size:
            if _set_info(pending[j])[1] != key:
                break
            group.append(pending[j])
            j += 1
        return group, len(group) >= size or j < len(pending)

    def _complete_batch(self, pending: deque[_Frame], ending: bool) -> list[_Frame] | None:
        """Whole SIM sets (or single frames) from the front, up to ``max_batch`` frames."""
        batch: list[_Frame] = []
        i = 0
        while i < len(pending) and len(batch) < self.max_batch:
            group, whole = self._group_at(pending, i)
            if not (whole or ending) or (batch and len(batch) + len(group) > self.max_batch):
                break
            batch.extend(group)
            i += len(group)
        if not batch:
            return None
        for _ in batch:
            pending.popleft()
        return batch

    def _preview_batch(self, pending: deque[_Frame], ending: bool) -> list[_Frame] | None:
        """Return the newest complete SIM set in memory; everything older is skipped.

        Sets that lost frames to eviction are never complete, so previews only ever show
        whole sets.
        """
        groups: list[tuple[list[_Frame], bool]] = []
        i = 0
        while i < len(pending):
            group, _ = self._group_at(pending, i)
            full = len(group) >= _set_info(group[0])[0]
            groups.append((group, full and all(f.image is not None for f in group)))
            i += len(group)
        chosen = next((gi for gi in range(len(groups) - 1, -1, -1) if groups[gi][1]), None)
        # Without a choice keep only the newest (still growing) set, unless nothing more comes.
        keep_from = chosen if chosen is not None else (len(groups) if ending else len(groups) - 1)
        for group, _ in groups[:keep_from]:
            for item in group:
                pending.popleft()
                self._skip(item, "preview")
        if chosen is None:
            return None
        batch = groups[chosen][0]
        for _ in batch:
            pending.popleft()
        return batch

    def _reread(self, item: _Frame) -> np.ndarray | None:
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
        self._n_reread += 1
        return writer.read_raw(pos)

    def _process(self, batch: list[_Frame]) -> None:
        """Denoise one batch and write it; the batch no longer counts as queued."""
        writer = self._writer
        assert writer is not None
        # The budget bounds frames *waiting*; the batch in hand is at most one SIM set or
        # max_batch frames more. Releasing it here lets a preview queue hold a whole set.
        for item in batch:
            self._release(item)
        frames: list[_Frame] = []
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
        if not frames:
            return
        stack = np.stack(images)
        t0 = time.perf_counter()
        try:
            risk_maps = fractions = None
            if self._risk:
                result = self._denoiser.denoise(stack, risk=True)  # type: ignore[call-arg]
                out, risk_maps = np.asarray(result.image), np.asarray(result.risk)
                fractions = np.asarray(result.risk_fraction).reshape(-1)
            else:
                out = np.asarray(self._denoiser.denoise(stack))
            if out.shape != stack.shape:
                raise ValueError(
                    f"denoise() returned shape {out.shape} for input {stack.shape}; a "
                    "FrameDenoiser must keep the shape"
                )
        except Exception as exc:  # MemoryError and torch OOM included
            self._fail_denoiser(exc, frames)
            return
        self._timing.busy_s += time.perf_counter() - t0
        if not writer.wait_open(timeout=None if writer.is_open else 60.0):
            raise RuntimeError("the raw writer never opened the stores")
        seqs = [item.seq for item in frames]
        checks = self._watch.check(stack, seqs) if self._watch else [None] * len(frames)
        for i, (item, den) in enumerate(zip(frames, out, strict=True)):
            latency_ms = (time.perf_counter() - item.t) * 1e3
            md = _frame_metadata(item)
            md["denoise"] = {
                **self._provenance,
                "latency_ms": round(latency_ms, 3),
                "batch": len(frames),
                "reread": item.seq in rereads,
                # Out of the training frames' photometric range (None: in range).
                "data_check": None if checks[i] is None else checks[i][1],
            }
            assert item.pos is not None
            writer.append_denoised(item.pos, den, md)
            if risk_maps is not None and fractions is not None:
                fraction = float(fractions[i])
                md_risk = {**_frame_metadata(item), "risk_fraction": round(fraction, 6)}
                writer.append_risk(item.pos, risk_maps[i], md_risk)
                self._risk_fractions.append(fraction)
            now = time.perf_counter()
            self._latency.add((now - item.t) * 1e3)
            self._denoise_rate.add(now)
            self._den_written += 1
            self._den_done += 1
            self._release(item)
        last = frames[-1]
        pair = LatestPair(
            frame=last.seq,
            index=_frame_metadata(last)["index"],
            raw=images[-1],
            denoised=out[-1],
            latency_ms=round((time.perf_counter() - last.t) * 1e3, 3),
            data_check=None if checks[-1] is None else checks[-1][1],
        )
        self._latest = pair
        self._emit(self.events.pair, pair)

    def _fail_denoiser(self, exc: BaseException, frames: list[_Frame]) -> None:
        self._den_failed = True
        self._den_active = False
        self._record_error("denoiser", exc, frames[0].seq, frames[0])
        for item in frames:
            self._skip(item, "denoiser_failed")

    # -- monitor and finalization ---------------------------------------------------------------

    def _orphaned(self) -> bool:
        """Tell whether the interpreter is exiting and no thread could deliver more frames.

        The writer threads are not daemons, so a script that ends without ``wait()``
        still gets closed stores (and, under ``complete``, the catch-up); this check
        keeps them from waiting forever for a ``sequenceFinished`` that cannot come.
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
            self._check_relay()
            if time.monotonic() - last_heartbeat >= _HEARTBEAT_S:
                last_heartbeat = time.monotonic()
                try:
                    self._write_run_json("running")
                except Exception as exc:
                    self._record_error("run.json", exc, None)

    def _check_relay(self) -> None:
        """End the run if the thread that delivered ``sequenceStarted`` is gone."""
        relay = self._relay
        if self._finish_received or relay is None or relay.is_alive():
            return
        # pymmcore-plus's MDARelayThread sets _stop_event on sequenceFinished: if it is
        # set, the MDA ended and only the event was lost; otherwise the relay died
        # (another listener raised) and frames may have been lost with it.
        stop_event = getattr(relay, "_stop_event", None)
        if stop_event is not None and stop_event.is_set():
            self.finish(interrupted=False, reason=_LOST_FINISH)
        else:
            self.finish(reason="the MDA relay thread ended without sequenceFinished")

    def _finalize(self) -> None:
        writer = self._writer
        try:
            self._threads[0].join()
            if writer is not None:
                writer.close_denoised(pad_to=writer.raw_cursor if writer.is_open else None)
        except Exception as exc:
            self._record_error("denoised_writer", exc, None)
        self._timing.t_done = time.perf_counter()
        self._state = "finished"
        status = self._status()
        try:
            self._summary = self._make_summary(status)
            self._write_run_json(status, final=True)
        except Exception as exc:
            self._record_error("run.json", exc, None)
            if self._summary is None:
                self._summary = self._make_summary(status)
        finally:
            self._done.set()
        self._emit(self.events.stats, self.stats())
        self._emit(self.events.finished, self._summary)

    def _status(self) -> RunStatus:
        if self._raw_failed:
            return "failed"
        if self._den_failed:
            return "denoiser_failed"
        if self._interrupted:
            return "interrupted"
        if self._canceled:
            return "canceled"
        return "completed"

    # -- bookkeeping -------------------------------------------------------------------------------

    def _emit(self, signal: Any, value: Any) -> None:
        try:
            signal.emit(value)
        except Exception as exc:  # a listener must not stop the run
            self._record_error("signal listener", exc, None)

    def _record_error(
        self, where: str, exc: BaseException, frame: int | None, item: _Frame | None = None
    ) -> None:
        key = (where, type(exc).__name__, str(exc)[:2000])
        # One lock for the look-up and the append: two threads failing alike make one entry.
        with self._errors_lock:
            # A failure that repeats (run.json every heartbeat, every frame) is one entry
            # with a count, logged once, not a line per occurrence.
            for seen in self._errors:
                if (seen["where"], seen["type"], seen["message"]) == key:
                    seen["count"] = seen.get("count", 1) + 1
                    return
            # Bounded: a per-frame failure must not grow memory without limit.
            if len(self._errors) < 100:
                entry: dict[str, Any] = {
                    "where": where,
                    "type": key[1],
                    "message": key[2],
                    "frame": frame,
                    "time": _dt.datetime.now(_dt.UTC).isoformat(),
                }
                if item is not None:
                    entry["index"] = _frame_metadata(item)["index"]
                tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
                entry["traceback"] = "".join(tb[-6:])[-4000:]
                self._errors.append(entry)
        _log.error("%s: %s: %s", where, type(exc).__name__, exc)

    def _missing_add(self, reason: str, item: _Frame) -> None:
        self._missing[reason].add(item.seq)

    def _missing_total(self) -> int:
        return sum(len(r) for r in self._missing.values())

    def _missing_union(self) -> RangeList:
        out = RangeList()
        for ranges in self._missing.values():
            for lo, hi in ranges.ranges():
                out.add(lo, hi)
        return out

    def _describe_events(self, events: Any) -> Any:
        if events is None:
            return None
        if isinstance(events, useq.MDASequence):
            return self._describe_sequence(events)
        if isinstance(events, Iterator):
            return {"kind": "iterator"}
        events = list(events)
        n_images = sum(
            1 for e in events if e.action is None or isinstance(e.action, useq.AcquireImage)
        )
        return {"kind": "events", "n_events": len(events), "n_image_events": n_images}

    @staticmethod
    def _describe_sequence(sequence: Any) -> Any:
        if type(sequence) is useq.MDASequence:
            return {"kind": "mda_sequence", "sequence": sequence.model_dump(mode="json")}
        return {"kind": "events"} if sequence is not None else None

    def _make_summary(self, status: str) -> RunSummary:
        t = self._timing
        missing = self._missing_union()
        p50, p99 = self._latency.percentiles(recent=False)
        fr = np.asarray(t.frame_ready_us, dtype=np.float64)
        acq_end = t.t_acq_end or t.t_done or time.perf_counter()
        return RunSummary(
            status=status,
            run_dir=self.run_dir,
            frames_received=self._n_received,
            raw_written=self._raw_written,
            denoised_written=self._den_written,
            missing_denoised=missing.ranges(),
            first_missing_denoised=missing.first(),
            unplaced_frames=self._unplaced.ranges(),
            errors=[{k: v for k, v in e.items() if k != "traceback"} for e in self._errors],
            acquisition_s=round(acq_end - (t.t_start or acq_end), 4),
            catch_up_s=round((t.t_done or acq_end) - acq_end, 4),
            camera_fps=round(self._camera_fps(), 3),
            denoise_fps=round(self._den_written / t.busy_s, 3) if t.busy_s > 0 else 0.0,
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            frame_ready_p50_us=round(float(np.percentile(fr, 50)), 2) if fr.size else None,
            frame_ready_p99_us=round(float(np.percentile(fr, 99)), 2) if fr.size else None,
            notes=self._all_notes(),
        )

    def _all_notes(self) -> list[str]:
        """Return the run's notes, then what the photometry watch found (any thread)."""
        watched = self._watch.notes() if self._watch is not None else []
        return [*self._notes, *watched]

    def _camera_fps(self) -> float:
        t = self._timing
        n = t.n_timed
        if t.first_runner_ms is not None and t.last_runner_ms is not None and n > 1:
            span = (t.last_runner_ms - t.first_runner_ms) / 1000.0
            return (n - 1) / span if span > 0 else 0.0
        return 0.0

    def _write_run_json(self, status: str, *, final: bool = False) -> None:
        with self._run_json_lock:
            if self._final_written:
                return
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.run_dir / RUN_JSON, self._run_document(status))
            self._final_written = final

    def _run_document(self, status: str) -> dict[str, Any]:
        summary = self._summary if self._summary is not None else self._make_summary(status)
        writer = self._writer
        missing = self._missing_union()
        t = self._timing
        return {
            "format": RUN_FORMAT,
            "format_version": RUN_FORMAT_VERSION,
            "status": status,
            "state": self._state,
            "updated": _dt.datetime.now(_dt.UTC).isoformat(),
            "run_info": self._run_info,
            "profile": self._profile,
            "sequence": self._events_doc if self._events_given else self._sequence_doc,
            "layout": None if self._layout is None else self._layout.to_dict(),
            "stores": None if writer is None else writer.describe(),
            "model": self._provenance,
            "options": {
                "policy": self.policy,
                "memory_budget_mb": self.memory_budget_mb,
                "max_batch": self.max_batch,
                "denoise_threads": self._denoise_threads,
                "denoise_nice": self._denoise_nice,
                "writer_nice": self._writer_nice,
                "isolation": self._isolation,
                **self._options,
            },
            "counts": {
                "received": self._n_received,
                "raw_written": self._raw_written,
                "denoised_written": self._den_written,
                "denoised_missing": len(missing),
                "unplaced": len(self._unplaced),
                "spilled": self._spilled,
                "reread": self._n_reread,
            },
            "missing_denoised": {
                "ranges": missing.ranges(),
                "first": missing.first(),
                "by_reason": {k: v.ranges() for k, v in self._missing.items() if len(v)},
            },
            "unplaced_frames": self._unplaced.ranges(),
            "canceled": self._canceled,
            "timings": {
                "start": t.start_iso,
                "acquisition_s": summary.acquisition_s,
                "catch_up_s": summary.catch_up_s,
                "camera_fps": summary.camera_fps,
                "denoise_fps": summary.denoise_fps,
                "denoise_held_for_raw_writer_s": round(t.held_for_raw_s, 3),
                "latency_ms": {"p50": summary.latency_p50_ms, "p99": summary.latency_p99_ms},
                "frame_ready_us": {
                    "p50": summary.frame_ready_p50_us,
                    "p99": summary.frame_ready_p99_us,
                },
            },
            "versions": _versions(),
            "risk": self._risk_summary(),
            "errors": list(self._errors),
            "notes": self._all_notes(),
        }

    def _risk_summary(self) -> dict[str, Any] | None:
        """Per-run summary of the risk fractions (fraction of pixels with risk > 0.5)."""
        if not self._risk:
            return None
        fractions = np.asarray(self._risk_fractions[:])  # copy: the worker may append
        if not fractions.size:
            return {"frames": 0, "mean_fraction": None, "max_fraction": None}
        return {
            "frames": int(fractions.size),
            "mean_fraction": round(float(fractions.mean()), 6),
            "max_fraction": round(float(fractions.max()), 6),
        }


@contextmanager
def live_denoise(
    core: CMMCorePlus,
    *,
    model: FrameDenoiser | str | os.PathLike[str] | Callable[[], FrameDenoiser],
    out: str | os.PathLike[str],
    progress: Callable[[LiveStats], None] | None = None,
    catch_up_timeout: float | None = None,
    isolation: Isolation | None = None,
    stop_on_raw_failure: bool = True,
    **options: Any,
) -> Iterator[LiveDenoiseHandler | ProcessLiveDenoiseHandler]:
    """Denoise every MDA run inside the block live, saving raw and denoised side by side.

    Usage::

        with live_denoise(core, model="model.sn2n", out="runs/001", events=events) as h:
            core.mda.run(events)
        print(h.wait().status)

    The handler is connected to ``core.mda.events`` through pymmcore-plus's
    ``mda_listeners_connected``, so its callbacks run on a relay thread, off the
    acquisition (and GUI) thread, with either signal backend. Run the MDA *blocking*
    inside the block (``core.mda.run``, or join the thread ``core.run_mda`` returns);
    one run per block. On a normal exit the block waits for the denoiser to catch up
    and closes the stores; if the block raises, queued frames are recorded as missing
    instead of waited for.

    Parameters
    ----------
    core : pymmcore_plus.CMMCorePlus
        Any core (``UniMMCore`` included).
    model : FrameDenoiser, str, os.PathLike or callable
        A denoiser, a ``.sn2n`` package path or a factory (see :func:`load_denoiser`).
    out : str or os.PathLike
        Run folder (must not exist or be empty).
    progress : callable, optional
        Called with :class:`LiveStats` during the acquisition (every ``stats_interval_s``,
        from the handler's monitor thread) and while waiting for the catch-up (on the
        calling thread); it must be thread-safe (a rich ``Progress`` is).
    catch_up_timeout : float, optional
        Seconds to wait for the catch-up at most (then :class:`TimeoutError`; the run
        goes on in the background and ``handler.wait()`` can be called again).
    isolation : {"thread", "process"} or None
        ``"process"``: writers and denoiser run in a child process
        (:class:`~sn2n_live.acquisition._isolated.ProcessLiveDenoiseHandler`) and this
        process only copies frames into shared memory, so their Python code never holds
        the GIL the acquisition thread needs (the camera keeps its rate; fast
        hardware-sequenced bursts). ``model`` must then be a path or picklable.
        ``"thread"``: they run on threads of this process (any denoiser object).
        None (default): ``"process"`` for a ``.sn2n`` path or a picklable factory,
        ``"thread"`` for a denoiser object or an unpicklable factory, with one log line
        saying why.
    stop_on_raw_failure : bool
        Cancel the MDA at the first raw frame that cannot be saved (disk full, store
        removed; ``events.raw_failed``): acquiring on would expose the sample for frames
        that are lost. The run ends ``failed``, with the error in run.json.
    **options
        Passed to :class:`LiveDenoiseHandler` (``events``, ``policy``,
        ``memory_budget_mb``, ``max_batch``, ``denoised_dtype``, ``file_format``,
        ``zarr_backend``, ``run_info``, ``profile``, ...).

    Yields
    ------
    LiveDenoiseHandler
        The handler (``latest()``, ``stats()``, ``events``, ``wait()``).
    """
    from pymmcore_plus.mda import mda_listeners_connected

    from sn2n_live.acquisition._isolated import ProcessLiveDenoiseHandler

    handler: LiveDenoiseHandler | ProcessLiveDenoiseHandler
    if isolation is None:
        isolation = _default_isolation(model)
    if isolation == "process":
        try:  # sizes the shared-memory ring; a core without a camera gives no hint
            frame_bytes = core.getImageWidth() * core.getImageHeight() * core.getBytesPerPixel()
        except Exception:
            frame_bytes = 0
        options.setdefault("frame_bytes_hint", frame_bytes or None)
        handler = ProcessLiveDenoiseHandler(model, out, **options)
    elif isolation == "thread":
        handler = LiveDenoiseHandler(load_denoiser(model), out, **options)
    else:
        raise ValueError(f"isolation must be one of {get_args(Isolation)}; got {isolation!r}.")
    if stop_on_raw_failure:
        handler.events.raw_failed.connect(lambda _: core.mda.cancel())
    if progress is not None:  # during the acquisition too, not only while catching up
        handler.events.stats.connect(progress)
    try:
        with mda_listeners_connected(handler, mda_events=core.mda.events):
            yield handler
    except BaseException:
        if isinstance(handler, ProcessLiveDenoiseHandler) and not handler.started:
            handler.close()
        if handler.started:
            # Close the stores promptly and keep the error visible: no catch-up wait.
            handler.cancel_catch_up()
            handler.finish(reason="the live_denoise block raised before the sequence finished")
            handler.wait(timeout=catch_up_timeout)
        raise
    if not handler.started and isinstance(handler, ProcessLiveDenoiseHandler):
        handler.close()
    if handler.started:
        # The relay was joined after a normal MDA end, so the sequence is over even if
        # its sequenceFinished was lost (see LiveDenoiseHandler.finish).
        handler.finish(interrupted=False, reason=_LOST_FINISH)
        if progress is not None:
            handler.events.stats.disconnect(progress)  # wait() calls it from here on
        handler.wait(timeout=catch_up_timeout, progress=progress)
