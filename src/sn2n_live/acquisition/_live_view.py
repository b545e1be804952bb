"""Live mode: denoise the newest frame of a continuous acquisition, and record from it.

While the camera runs continuously (``core.startContinuousSequenceAcquisition(0)``, what
pymmcore-widgets' LiveButton starts), :class:`LiveView` denoises the newest frame as fast
as the denoiser allows and offers the pair to a preview; nothing is saved.
:class:`LiveRecording` starts a saved run from that moment: an MDA time-lapse through
:func:`~sn2n_live.acquisition.live_denoise`, with the stores and run.json of any MDA run.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import useq
from psygnal import Signal, SignalGroup

from sn2n_live.acquisition._background import BackgroundRun
from sn2n_live.acquisition._contracts import (
    FrameDenoiser,
    LatestPair,
    LiveHandler,
    RunState,
    RunSummary,
)
from sn2n_live.acquisition._stats import LatencyRecorder, LiveStats, RateMeter

if TYPE_CHECKING:
    from types import TracebackType

    from pymmcore_plus import CMMCorePlus

__all__ = ["LiveRecording", "LiveView", "LiveViewEvents"]

_log = logging.getLogger("sn2n_live.acquisition")

DENOISER_FAILED = "denoiser_failed"  # LiveView.stats().state once it stopped denoising
_RATE_EVENTS = 4096  # timestamps a RateMeter keeps
_MAX_RECHECK_S = 0.05  # longest wait between two looks for a new frame while live
_CORE_ERROR_WAIT_S = 0.1  # pause after a core call raised (e.g. devices unloaded)
# Unbounded recordings at interval 0: events of one burst share a start time, so that
# pymmcore-plus's hardware sequencing (which combines equal start times) ends each burst.
_BURST_FRAMES = 256
_BURST_STEP_S = 1e-6


class LiveViewEvents(SignalGroup):
    """Signals of a :class:`LiveView`, emitted from its worker thread.

    Signals
    -------
    denoiser_failed(str)
        Once, when the view stopped calling the denoiser after consecutive failures
        (the last error, as text). Raw frames keep coming (``latest_raw``).
    finished()
        Once, when :meth:`LiveView.stop` has joined the worker.
    """

    denoiser_failed = Signal(str)
    finished = Signal()


class LiveView:
    """Follow live mode: denoise the camera's newest frame, again and again; save nothing.

    A daemon worker thread polls the core. While a continuous sequence acquisition runs
    (``core.isSequenceRunning()``) and no MDA does, it takes the newest image
    (``core.getLastImageAndMD()``) whenever its ``ImageNumber`` changed, denoises that one
    frame and publishes a :class:`LatestPair` (``fresh=True``, ``frame``: the pairs
    published before it, ``index={"live": image number}``, ``arrived``: when the worker saw
    the frame, ``latency_ms``: seen to denoised). Frames the camera takes meanwhile are
    skipped: the preview always gets the newest frame, never a backlog. With no sequence
    running it sleeps ``poll_s`` between two cheap checks. It never starts, stops or
    changes the camera.

    Parameters
    ----------
    core : pymmcore_plus.CMMCorePlus
        The core whose live mode to follow.
    denoiser : FrameDenoiser
        Called from the worker thread only (``denoise(frame[None])``).
    poll_s : float
        Sleep between two checks when no new frame is there.
    max_failures : int
        Consecutive denoiser failures after which the view stops calling it (state
        ``"denoiser_failed"``, :attr:`LiveViewEvents.denoiser_failed`).

    Notes
    -----
    A denoiser that raises is not fatal: the error is counted and kept as text
    (:attr:`last_error`) and the next frame is tried; after ``max_failures`` failures in a
    row the view keeps following live mode without denoising. Errors of the core calls
    (e.g. devices unloaded under it) are kept the same way; the worker goes on.

    While an MDA runs, the view waits: the MDA owns the camera, and whatever denoises its
    frames (a live handler) owns the denoiser. :meth:`pause` holds it too, e.g. while a
    :class:`LiveRecording` takes over the same denoiser.

    Frame numbers: ``frames_received`` counts distinct camera frames from the deltas of
    their image numbers (so frames the worker skipped count too). Image numbers restart
    when live mode restarts: the first frame seen in a live run counts as one, frames the
    camera took before it are not counted. A camera without ``ImageNumber`` metadata is
    followed by its ``TimeReceivedByCore`` stamp (skipped frames are then not counted).

    Examples
    --------
    >>> view = LiveView(core, denoiser).start()  # doctest: +SKIP
    >>> core.startContinuousSequenceAcquisition(0)  # doctest: +SKIP
    >>> pair = view.latest()  # raw and denoised, or None  # doctest: +SKIP
    >>> view.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        core: CMMCorePlus,
        denoiser: FrameDenoiser,
        *,
        poll_s: float = 0.005,
        max_failures: int = 3,
    ) -> None:
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0; got {poll_s}.")
        if max_failures < 1:
            raise ValueError(f"max_failures must be >= 1; got {max_failures}.")
        self.events = LiveViewEvents()
        self._core = core
        self._denoiser = denoiser
        self._poll_s = float(poll_s)
        self._max_failures = int(max_failures)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._finished = False
        self._lock = threading.Lock()  # counters and the stats snapshot
        self._busy = threading.Lock()  # held by the worker while it takes and denoises
        self._paused = False
        self._latest: LatestPair | None = None
        self._latest_raw: np.ndarray | None = None
        self._live = False
        self._live_since: float | None = None
        self._received = 0
        self._denoised = 0
        self._skipped = 0
        self._failures = 0
        self._consecutive_failures = 0
        self._gave_up = False
        self._last_error: str | None = None
        self._camera_rate = RateMeter(maxlen=_RATE_EVENTS)
        # Pairs come seconds apart on a CPU: a 2 s window would often hold one (rate 0).
        self._denoise_rate = RateMeter(window_s=10.0)
        self._latency = LatencyRecorder()
        # Whether the camera streams, from the core's events (and asked once here, on the
        # caller's thread). The worker asks isSequenceRunning() only while this is set:
        # UniMMCore's answers by dropping a thread that is not alive, and a thread that
        # is made but not yet started is not alive, so a worker asking from the side while
        # live mode starts can orphan the camera thread (live mode then reads as off).
        self._streaming = threading.Event()
        if core.isSequenceRunning():
            self._streaming.set()
        core.events.continuousSequenceAcquisitionStarted.connect(self._on_streaming_started)
        core.events.sequenceAcquisitionStopped.connect(self._on_sequence_stopped)

    def _on_streaming_started(self) -> None:
        self._streaming.set()

    def _on_sequence_stopped(self, *_: Any) -> None:
        self._streaming.clear()

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> LiveView:
        """Start the worker thread (once; a second call does nothing).

        Returns
        -------
        LiveView
            ``self``.

        Raises
        ------
        RuntimeError
            After :meth:`stop`: a stopped view does not restart (make a new one).
        """
        if self._finished:
            raise RuntimeError("this LiveView was stopped; make a new one to follow live mode")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sn2n-live-view", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the worker and join it (a second call does nothing).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the worker at most (it finishes the frame it denoises).
        """
        if self._finished:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return  # still denoising its last frame; stop() again to wait more
        self._finished = True
        events = self._core.events
        with contextlib.suppress(TypeError, RuntimeError):  # the core may be gone already
            events.continuousSequenceAcquisitionStarted.disconnect(self._on_streaming_started)
            events.sequenceAcquisitionStopped.disconnect(self._on_sequence_stopped)
        self._emit(self.events.finished)

    def __enter__(self) -> LiveView:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def pause(self, timeout: float | None = None) -> bool:
        """Stop calling the denoiser until :meth:`resume`; wait for the frame in hand.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the frame being denoised at most.

        Returns
        -------
        bool
            True once the worker is not inside the denoiser (and will not enter it).
        """
        self._paused = True
        if not self._busy.acquire(timeout=-1 if timeout is None else timeout):
            return False
        self._busy.release()
        return True

    def resume(self) -> None:
        """Denoise live frames again after :meth:`pause`."""
        self._paused = False

    # -- what previews read -------------------------------------------------------------

    @property
    def core(self) -> CMMCorePlus:
        """The core followed."""
        return self._core

    @property
    def provenance(self) -> Mapping[str, Any]:
        """The denoiser's provenance (what produces the denoised frames)."""
        return self._denoiser.provenance

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def finished(self) -> bool:
        """True once :meth:`stop` has joined the worker."""
        return self._finished

    @property
    def failed(self) -> bool:
        """True once the view gave up on the denoiser (``max_failures`` in a row)."""
        return self._gave_up

    @property
    def last_error(self) -> str | None:
        """The last error caught (``"denoiser: RuntimeError: ..."``), or None."""
        return self._last_error

    @property
    def frames_denoised(self) -> int:
        """Live frames denoised and published so far."""
        return self._denoised

    @property
    def frames_skipped(self) -> int:
        """Camera frames that came while the worker was busy and were never taken."""
        return self._skipped

    @property
    def failures(self) -> int:
        """Denoiser calls that raised, in all."""
        return self._failures

    def latest(self) -> LatestPair | None:
        """Return the newest denoised pair (None before the first one)."""
        return self._latest

    def latest_raw(self) -> np.ndarray | None:
        """Return the newest camera frame taken (also while the denoiser is not used)."""
        return self._latest_raw

    def stats(self) -> LiveStats:
        """Return a snapshot of live mode, in :class:`LiveStats` form.

        Fields in live mode:

        - ``state``: ``"waiting"`` (no continuous acquisition running, an MDA running,
          paused, or no frame yet), ``"acquiring"`` (following live frames),
          ``"denoiser_failed"`` (following, the denoiser no longer called) or
          ``"finished"`` (stopped).
        - ``elapsed_s``: since the first frame of the current live run (0 while waiting).
        - ``frames_received``: distinct camera frames seen, skipped ones included.
        - ``camera_fps``: camera frames per second (image-number deltas) over ~2 s;
          ``denoise_fps``: preview pairs published per second over ~2 s.
        - ``latency_p50_ms``, ``latency_p99_ms``: frame seen to denoised, last 512 pairs.
        - ``raw_written``, ``denoised_written``, ``denoised_missing``, ``queue_depth``,
          ``queued_mb``, ``spilled``, ``raw_backlog``, ``frames_behind``: always 0 (nothing
          is saved or queued); :attr:`frames_denoised` and :attr:`frames_skipped` say what
          happened to the frames.
        """
        now = time.perf_counter()
        with self._lock:
            if self._finished:
                state = RunState.FINISHED.value
            elif not self._live or self._received == 0:
                state = RunState.WAITING.value
            elif self._gave_up:
                state = DENOISER_FAILED
            else:
                state = RunState.ACQUIRING.value
            since = self._live_since
            received = self._received
        p50, p99 = self._latency.percentiles(recent=True)
        return LiveStats(
            state=state,
            elapsed_s=round(now - since, 3) if since is not None and self._live else 0.0,
            frames_received=received,
            raw_written=0,
            denoised_written=0,
            denoised_missing=0,
            queue_depth=0,
            queued_mb=0.0,
            spilled=0,
            raw_backlog=0,
            frames_behind=0,
            camera_fps=round(self._camera_rate.rate(now), 3),
            denoise_fps=round(self._denoise_rate.rate(now), 3),
            latency_p50_ms=p50,
            latency_p99_ms=p99,
        )

    # -- the worker ---------------------------------------------------------------------

    def _run(self) -> None:
        last_key: object = None  # identity of the frame last taken in this live run
        last_number: int | None = None
        last_seen = 0.0
        while not self._stop.is_set():
            try:
                live = self._following()
            except Exception as exc:  # e.g. the core released under the view
                self._note_error("core", exc)
                self._set_live(False)
                self._stop.wait(_CORE_ERROR_WAIT_S)
                continue
            if not live:
                self._set_live(False)
                last_key = last_number = None
                self._stop.wait(self._poll_s)
                continue
            try:
                with self._busy:
                    taken = None if self._paused else self._take(last_key, last_number, last_seen)
            except Exception as exc:  # a bug of ours must not end the worker silently
                _log.exception("LiveView: the worker failed on a frame")
                self._note_error("worker", exc)
                taken = None
            if taken is None:
                self._stop.wait(self._recheck_s())
                continue
            last_key, last_number, last_seen = taken

    def _recheck_s(self) -> float:
        """Wait before looking again for a new frame: a quarter of the camera's period.

        Each look copies the newest frame (there is no cheaper "is there a new one?"
        call), so a slow camera is not polled every ``poll_s``; capped at 50 ms.
        """
        fps = self._camera_rate.rate()
        if fps <= 0:
            return self._poll_s
        return min(max(self._poll_s, 0.25 / fps), _MAX_RECHECK_S)

    def _following(self) -> bool:
        """Whether a continuous acquisition runs that the view may follow."""
        if self._paused or not self._streaming.is_set():
            return False
        return bool(self._core.isSequenceRunning()) and not self._core.mda.is_running()

    def _take(
        self, last_key: object, last_number: int | None, last_seen: float
    ) -> tuple[object, int | None, float] | None:
        """Take and denoise the newest frame if it is new; None if there is none."""
        try:
            img, md = self._core.getLastImageAndMD()
        except IndexError:  # "Circular buffer is empty": the first frame is not there yet
            return None
        except Exception as exc:
            self._note_error("core", exc)
            return None
        arrived = time.perf_counter()
        number = _image_number(md)
        key: object = number if number is not None else _stamp(md)
        if key is not None and key == last_key:
            return None
        frame = img if img.flags.owndata else np.array(img, copy=True)
        restarted = last_key is None or (
            number is not None and last_number is not None and number < last_number
        )
        delta = 1 if restarted or number is None or last_number is None else number - last_number
        self._count_camera_frames(delta, last_seen, arrived, restarted)
        self._latest_raw = frame
        if not self._gave_up:
            self._denoise(frame, number, arrived)
        return key, number, arrived

    def _count_camera_frames(
        self, delta: int, last_seen: float, arrived: float, restarted: bool
    ) -> None:
        with self._lock:
            if not self._live or restarted:
                self._live_since = arrived
            self._live = True
            self._received += delta
            self._skipped += delta - 1
        if restarted or last_seen <= 0:
            self._camera_rate.add(arrived)
            return
        # The skipped frames came between the last frame taken and this one (the meter
        # keeps the last _RATE_EVENTS only).
        step = (arrived - last_seen) / delta
        for k in range(max(1, delta - _RATE_EVENTS + 1), delta + 1):
            self._camera_rate.add(last_seen + k * step)

    def _denoise(self, frame: np.ndarray, number: int | None, arrived: float) -> None:
        try:
            denoised = np.asarray(self._denoiser.denoise(frame[None]), dtype=np.float32)[0]
        except Exception as exc:
            self._failures += 1
            self._consecutive_failures += 1
            self._note_error("denoiser", exc)
            if self._consecutive_failures >= self._max_failures and not self._gave_up:
                self._gave_up = True
                _log.warning(
                    "LiveView: %d denoiser failures in a row; live frames are no longer "
                    "denoised (last: %s)",
                    self._consecutive_failures,
                    self._last_error,
                )
                self._emit(self.events.denoiser_failed, self._last_error or "")
            return
        done = time.perf_counter()
        self._consecutive_failures = 0
        latency_ms = (done - arrived) * 1000.0
        self._latency.add(latency_ms)
        self._denoise_rate.add(done)
        self._latest = LatestPair(
            frame=self._denoised,
            index={"live": -1 if number is None else number},
            raw=frame,
            denoised=denoised,
            latency_ms=round(latency_ms, 3),
            arrived=arrived,
            fresh=True,
        )
        self._denoised += 1

    def _set_live(self, live: bool) -> None:
        with self._lock:
            self._live = live
            if not live:
                self._live_since = None

    def _note_error(self, where: str, exc: Exception) -> None:
        text = f"{where}: {type(exc).__name__}: {exc}"
        if text != self._last_error:
            _log.warning("LiveView: %s", text)
        self._last_error = text

    def _emit(self, signal: Any, *args: Any) -> None:
        try:
            signal.emit(*args)
        except Exception:  # a failing slot must not end the worker
            _log.exception("LiveView: a %s callback raised", signal.name)


def _image_number(md: Mapping[str, Any]) -> int | None:
    try:
        return int(md["ImageNumber"])
    except (KeyError, TypeError, ValueError):
        return None


def _stamp(md: Mapping[str, Any]) -> object:
    return md.get("TimeReceivedByCore") or md.get("ElapsedTime-ms")


class LiveRecording:
    """Record from this moment: a saved raw + denoised run, then back to live mode.

    :meth:`start` stops live mode if it runs (pausing ``view``) and starts a
    :class:`~sn2n_live.acquisition.BackgroundRun`: :func:`live_denoise` on ``out`` around
    an MDA on a worker thread, the same stores and run.json as any MDA run. :meth:`stop`
    cancels the MDA, waits for the run to close and restarts live mode if it was running.
    A GUI calls :meth:`cancel` (returns at once), polls :attr:`done`, then :meth:`stop`.

    Parameters
    ----------
    core : pymmcore_plus.CMMCorePlus
        The core (in live mode or not).
    model : FrameDenoiser, str, os.PathLike or callable
        What :func:`live_denoise` takes: a denoiser, a ``.sn2n`` path or a factory.
    out : str or os.PathLike
        Run folder (must not exist or be empty).
    events : sequence of useq.MDAEvent, optional
        What to record (e.g. SIM sets from :func:`profile_events`); then ``max_frames``
        and ``interval_s`` are not used. Default: a time-lapse of single frames.
    max_frames : int, optional
        Frames to record at most: the store then has a ``t`` axis of this length. None:
        until :meth:`stop`, on one unbounded axis.
    interval_s : float
        Time between frames (0: as fast as the camera goes).
    view : LiveView, optional
        A view following this core: paused while recording (pass it when it shares
        the denoiser, which need not be thread-safe), resumed after :meth:`stop`.
    restart_live : bool
        Restart continuous acquisition after :meth:`stop` if it was running at start.
    start_timeout_s : float
        Seconds :meth:`start` waits for the MDA to begin (``wait=True``).
    **live_denoise_options
        Passed to :func:`live_denoise` (``isolation``, ``policy``, ``catch_up_timeout``,
        ``progress``, ``file_format``, ...; see :func:`profile_run_options`).

    Notes
    -----
    A recording ended by :meth:`stop` or :meth:`cancel` is a canceled MDA: run.json says
    ``status: "canceled"``, ``canceled: true``, ``state: "finished"``, with every frame
    received raw-saved and (policy ``complete``) denoised; with ``max_frames`` the ``t``
    axis keeps its length and the frames after the last are empty. One that reached its
    end first says ``completed``. Call :meth:`stop` in both cases: it closes the run and
    brings live mode back. Under ``complete`` it waits for the denoiser to catch up
    (``stop(catch_up=False)`` does not: queued frames are recorded as missing).
    """

    def __init__(
        self,
        core: CMMCorePlus,
        model: FrameDenoiser | str | os.PathLike[str] | Callable[[], FrameDenoiser],
        out: str | os.PathLike[str],
        *,
        events: Sequence[useq.MDAEvent] | None = None,
        max_frames: int | None = None,
        interval_s: float = 0.0,
        view: LiveView | None = None,
        restart_live: bool = True,
        start_timeout_s: float = 10.0,
        **live_denoise_options: Any,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None; got {max_frames}.")
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0; got {interval_s}.")
        self.core = core
        self.out = out
        self._model = model
        self._events = list(events) if events is not None else None
        self._max_frames = max_frames
        self._interval_s = float(interval_s)
        self._view = view
        self._restart_live = restart_live
        self._start_timeout_s = start_timeout_s
        self._options = live_denoise_options
        self._run: BackgroundRun | None = None
        self._was_live = False
        self._back = False

    @property
    def handler(self) -> LiveHandler | None:
        """The run's handler once its stores are open: a preview follows it."""
        return None if self._run is None else self._run.handler

    @property
    def summary(self) -> RunSummary | None:
        """How the run ended, once it is over."""
        return None if self._run is None else self._run.summary

    @property
    def was_live(self) -> bool:
        """Whether live mode was running when the recording started."""
        return self._was_live

    @property
    def running(self) -> bool:
        """Whether the recording's MDA is still acquiring."""
        return self._run is not None and not self._run.done and self.core.mda.is_running()

    @property
    def done(self) -> bool:
        """Whether the run is over (stores closed); :meth:`stop` then returns at once."""
        return self._run is not None and self._run.done

    def start(self, *, wait: bool = True) -> LiveRecording:
        """Stop live mode (if on) and start the recording.

        Parameters
        ----------
        wait : bool
            Return once the MDA runs (True), or at once (False: a GUI thread; the
            handler appears a little later, failures show in :meth:`stop`).

        Returns
        -------
        LiveRecording
            ``self``.

        Raises
        ------
        RuntimeError
            If started before, or an MDA is already running.
        ValueError
            For bad :func:`live_denoise` options or a used run folder (live mode is
            then restarted); with ``wait=False`` such errors are raised by :meth:`stop`.
        """
        from sn2n_live.acquisition._writers import check_run_folder

        if self._run is not None:
            raise RuntimeError("this LiveRecording was started already")
        core = self.core
        if core.mda.is_running():
            raise RuntimeError("an MDA is running; stop it before recording")
        check_run_folder(self.out)  # before live mode stops: a used folder changes nothing
        self._was_live = bool(core.isSequenceRunning())
        if self._view is not None:
            self._view.pause()
        if self._was_live:
            core.stopSequenceAcquisition()
        self._run = BackgroundRun(
            core, self._planned_events(), model=self._model, out=self.out, **self._options
        ).start()
        if wait:
            try:
                self._wait_until_running()
            except BaseException:
                self.stop(catch_up=False)
                raise
        return self

    def cancel(self) -> None:
        """End the acquisition now, without waiting (then poll :attr:`done`, call stop)."""
        if self._run is not None:
            self._run.cancel()

    def stop(self, *, catch_up: bool = True) -> RunSummary:
        """End the recording, close its run and restart live mode if it was on.

        Parameters
        ----------
        catch_up : bool
            Wait for the denoiser to denoise every frame received (policy
            ``complete``); False records the frames still queued as missing.

        Returns
        -------
        RunSummary
            How the run ended (also :attr:`summary`; a second call returns it again).

        Raises
        ------
        RuntimeError
            If the recording was not started.
        Exception
            What stopped the run from opening (a bad option, a store that cannot be
            made), after live mode was restarted.
        """
        run = self._run
        if run is None:
            raise RuntimeError("this LiveRecording was not started")
        try:
            if not run.done:
                run.cancel()
                if not catch_up:
                    handler = run.wait_for_handler()
                    if handler is not None:
                        handler.cancel_catch_up()
                run.join()
        finally:
            self._back_to_live()
        if run.summary is None:
            raise run.error or RuntimeError(f"the recording into {self.out} did not start")
        return run.summary

    def __enter__(self) -> LiveRecording:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._run is not None:
            self.stop(catch_up=exc is None)

    def _planned_events(self) -> list[useq.MDAEvent] | useq.MDASequence | Iterator[useq.MDAEvent]:
        if self._events is not None:
            return self._events
        if self._max_frames is not None:
            sequence = useq.MDASequence(
                time_plan={"interval": self._interval_s, "loops": self._max_frames}
            )
            self._options.setdefault("events", sequence)
            return sequence
        return _time_lapse(self._interval_s)

    def _wait_until_running(self) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        run = self._run
        assert run is not None
        while not (run.handler is not None and self.core.mda.is_running()) and not run.done:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the recording's MDA did not start within {self._start_timeout_s} s"
                )
            time.sleep(0.002)
        if run.done and run.summary is None and run.error is not None:
            raise run.error

    def _back_to_live(self) -> None:
        if self._back:
            return
        self._back = True
        try:
            if (
                self._was_live
                and self._restart_live
                and not self.core.isSequenceRunning()
                and not self.core.mda.is_running()
            ):
                self.core.startContinuousSequenceAcquisition(0)
        finally:
            if self._view is not None:
                self._view.resume()


def _time_lapse(interval_s: float) -> Iterator[useq.MDAEvent]:
    """Endless time-lapse events, ``t = 0, 1, ...`` (an iterator: one unbounded axis)."""
    for t in itertools.count():
        # At interval 0: bursts of _BURST_FRAMES at most, should the engine sequence them.
        start = t * interval_s if interval_s > 0 else (t // _BURST_FRAMES) * _BURST_STEP_S
        yield useq.MDAEvent(index={"t": t}, min_start_time=start)
