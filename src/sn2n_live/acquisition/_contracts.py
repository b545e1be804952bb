"""What the live path promises: the denoiser and handler contracts, and what a run reports.

Both handlers (:class:`~sn2n_live.acquisition._handler.LiveDenoiseHandler`, threads of
this process, and :class:`~sn2n_live.acquisition._isolated.ProcessLiveDenoiseHandler`,
a child process) implement :class:`LiveHandler`; previews and sessions depend on this
module only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from psygnal import Signal, SignalGroup

from sn2n_live.acquisition._stats import LiveStats
from sn2n_live.config import BacklogPolicy, Isolation

if TYPE_CHECKING:
    import numpy as np
    import useq

__all__ = [
    "FrameDenoiser",
    "Isolation",
    "LatestPair",
    "LiveDenoiseEvents",
    "LiveHandler",
    "Policy",
    "RunState",
    "RunStatus",
    "RunSummary",
    "load_denoiser",
    "wait_until_done",
]

# The backlog policy's one definition lives with the other choices.
Policy = BacklogPolicy


class RunState(StrEnum):
    """Where a run is (``LiveStats.state``, run.json ``state``)."""

    WAITING = "waiting"  # no sequence yet
    ACQUIRING = "acquiring"
    CATCHING_UP = "catching_up"  # acquisition over, the denoiser still working
    FINISHED = "finished"  # stores closed, run.json final


class RunStatus(StrEnum):
    """How a run ended (run.json ``status``; ``running`` until then)."""

    RUNNING = "running"
    COMPLETED = "completed"
    CANCELED = "canceled"  # the MDA was canceled
    INTERRUPTED = "interrupted"  # the catch-up was stopped, or the MDA never reported its end
    DENOISER_FAILED = "denoiser_failed"
    FAILED = "failed"  # raw saving failed (or the denoise process died)


@runtime_checkable
class FrameDenoiser(Protocol):
    """What the live handler needs from a denoiser.

    :class:`sn2n_live.method.Denoiser` satisfies it. The handler calls :meth:`denoise`
    from one worker thread only, so implementations need not be thread-safe.

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
    arrived : float or None
        ``time.perf_counter()`` when the frame reached the handler (a system-wide clock on
        Linux, so valid in either process); :meth:`age_s` is how old it is now.
    fresh : bool
        True for a preview pair: the newest frame, denoised ahead of the saving order
        while the saved stream catches up (its saved twin comes later, computed alike).
    risk : numpy.ndarray or None
        float32 hallucination-risk map of the denoised frame (0..1, see
        :func:`sn2n_live.method.hallucination_risk`) when the run computes one
        (``risk=True``, a profile's ``denoise.risk``); None otherwise.
    """

    frame: int
    index: dict[str, int]
    raw: np.ndarray
    denoised: np.ndarray
    latency_ms: float
    data_check: str | None = None
    arrived: float | None = None
    fresh: bool = False
    risk: np.ndarray | None = None

    def age_s(self, now: float | None = None) -> float | None:
        """Seconds since the frame arrived (None if its arrival is unknown)."""
        if self.arrived is None:
            return None
        return (time.perf_counter() if now is None else now) - self.arrived


@dataclass(frozen=True)
class RunSummary:
    """How a live-denoise run ended (the essentials of its run.json).

    Attributes
    ----------
    status : str
        A :class:`RunStatus` value: ``completed``, ``canceled``, ``interrupted``,
        ``denoiser_failed`` or ``failed``.
    run_dir : pathlib.Path
        The run folder.
    frames_received, raw_written, denoised_written : int
        Frame counts (raw_written counts frames in ``raw.ome.zarr`` and in rescue stores).
    missing_denoised : list of [int, int]
        Inclusive ranges of frame numbers without a denoised twin.
    first_missing_denoised : int or None
        First such frame.
    unplaced_frames : list of [int, int]
        Frames the layout had no place for (kept in ``unplaced.ome.zarr``).
    errors : list of dict
        Every distinct error caught (where, type, message, frame, count).
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
    rescue_stores : list of str
        Stores beside the run's own that hold raw frames (written by this process when
        the denoise process died).
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
    rescue_stores: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        return out


class LiveDenoiseEvents(SignalGroup):
    """Signals of a live handler, emitted from its worker threads.

    Connect GUI slots with ``thread="main"`` (psygnal) or poll
    :meth:`LiveHandler.latest` from a timer instead; callbacks that raise are recorded
    in run.json and do not stop the run.

    Signals
    -------
    stats(LiveStats)
        Every ``stats_interval_s`` while the run is active.
    pair(LatestPair)
        After every denoised batch, and every preview frame while someone watches
        (:meth:`LiveHandler.latest` was called in the last second): frame numbers only
        ever grow, so a preview never goes back in time.
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


@runtime_checkable
class LiveHandler(Protocol):
    """The live-denoise handler's face, the same in thread and process mode.

    pymmcore-plus calls the four MDA callbacks (on its relay thread); they never raise
    and never wait on the denoiser. Everything else is for sessions and previews.
    """

    run_dir: Path
    events: LiveDenoiseEvents

    @property
    def started(self) -> bool:
        """Whether a sequence started."""
        ...

    @property
    def finished(self) -> bool:
        """Whether the run is over: stores closed, run.json final."""
        ...

    def sequenceStarted(self, sequence: useq.MDASequence | None = None, meta: Any = None) -> None:
        """Open the run."""
        ...

    def frameReady(self, img: np.ndarray, event: useq.MDAEvent, meta: Any = None) -> None:
        """Take one camera frame; O(1)."""
        ...

    def sequenceCanceled(self, sequence: useq.MDASequence | None = None) -> None:
        """Remember that the MDA was canceled."""
        ...

    def sequenceFinished(self, sequence: useq.MDASequence | None = None) -> None:
        """End of acquisition: drain, catch up, close."""
        ...

    def latest(self) -> LatestPair | None:
        """Newest raw/denoised pair; calling it asks for fresh pairs for a second."""
        ...

    def latest_raw(self) -> np.ndarray | None:
        """Newest raw frame received."""
        ...

    def latest_widefield(self) -> np.ndarray | None:
        """Widefield of the newest complete SIM set (summed while a preview polls)."""
        ...

    def stats(self) -> LiveStats:
        """Snapshot of the run's live statistics."""
        ...

    def wait(
        self,
        timeout: float | None = None,
        progress: Callable[[LiveStats], None] | None = None,
        interval_s: float = 0.5,
    ) -> RunSummary:
        """Block until the run is over."""
        ...

    def cancel_catch_up(self) -> None:
        """Stop denoising frames still queued (recorded as missing)."""
        ...

    def finish(self, *, interrupted: bool = True, reason: str = ...) -> None:
        """End a run whose ``sequenceFinished`` never arrived."""
        ...


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
    if is_denoiser(model):
        return model
    if callable(model):
        built = model()
        if is_denoiser(built):
            return built
        raise ValueError(
            f"the model factory returned {type(built).__name__}, not a denoiser (with "
            "denoise() and provenance)."
        )
    raise ValueError(
        f"model must be a denoiser (with denoise() and provenance), a .sn2n path or a "
        f"factory; got {type(model).__name__}."
    )


def is_denoiser(obj: Any) -> bool:
    """Tell whether ``obj`` has what :class:`FrameDenoiser` asks (without calling it)."""
    return callable(getattr(obj, "denoise", None)) and hasattr(obj, "provenance")


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
