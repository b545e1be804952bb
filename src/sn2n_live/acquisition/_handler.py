"""The thread-mode live handler: pymmcore-plus's MDA callbacks into a :class:`LivePipeline`.

Threads: the acquisition thread --(pymmcore-plus's relay deque)--> its relay thread, which
calls these callbacks; ``frameReady`` is O(1), never blocks and never raises. The
pipeline's raw writer, denoise worker and monitor threads do the rest (see
:mod:`sn2n_live.acquisition._pipeline`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import useq

from sn2n_live.acquisition._contracts import (
    FrameDenoiser,
    LatestPair,
    LiveDenoiseEvents,
    Policy,
    RunSummary,
)
from sn2n_live.acquisition._pipeline import LivePipeline
from sn2n_live.acquisition._recon import LatestRecon, ReconOptions
from sn2n_live.acquisition._relay import RelayWatch
from sn2n_live.acquisition._stats import LiveStats
from sn2n_live.acquisition._writers import (
    DenoisedDtype,
    FileFormat,
    FrameLayout,
    RunWriter,
    ZarrBackend,
)

__all__ = ["LiveDenoiseHandler"]


class LiveDenoiseHandler:
    """Non-blocking live denoising for one pymmcore-plus MDA run, on threads of this process.

    Pass it as an MDA output (``core.mda.run(events, output=handler)``) or use
    :func:`~sn2n_live.acquisition.live_denoise`. Its MDA methods run on pymmcore-plus's
    relay thread, never raise, and never wait on the denoiser.

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
    laser : tuple, optional
        ``(device, property, percent)`` of the laser when the run starts (run.json dose).
    recon : ReconOptions, optional
        Reconstruct the run's SIM sets live on a worker thread (:meth:`latest_recon`;
        ``recon.ome.zarr`` with ``save``); see :mod:`sn2n_live.acquisition._recon`.

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
        recon: ReconOptions | None = None,
    ) -> None:
        self._pipeline = LivePipeline(
            denoiser,
            out,
            events=events,
            policy=policy,
            memory_budget_mb=memory_budget_mb,
            max_batch=max_batch,
            denoised_dtype=denoised_dtype,
            file_format=file_format,
            zarr_backend=zarr_backend,
            run_info=run_info,
            profile=profile,
            stats_interval_s=stats_interval_s,
            denoise_threads=denoise_threads,
            denoise_nice=denoise_nice,
            writer_nice=writer_nice,
            copy_frames=copy_frames,
            risk=risk,
            laser=laser,
            recon=recon,
        )
        self.run_dir = self._pipeline.run_dir
        self.events: LiveDenoiseEvents = self._pipeline.events
        self._relay = RelayWatch()
        self._frame_ready_us = self._pipeline.record.timing.frame_ready_us
        self._pipeline.add_tick(self._check_relay)

    # -- reading ---------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        """The backlog policy."""
        return self._pipeline.policy

    @property
    def layout(self) -> FrameLayout | None:
        """Store layout (known once the sequence started or ``events`` were given)."""
        return self._pipeline.layout

    @property
    def writer(self) -> RunWriter | None:
        """The run folder writer (created when the sequence starts)."""
        return self._pipeline.writer

    @property
    def started(self) -> bool:
        """Whether a sequence started."""
        return self._pipeline.started

    @property
    def finished(self) -> bool:
        """Whether the run is over: stores closed, run.json final."""
        return self._pipeline.finished

    def latest(self) -> LatestPair | None:
        """Newest raw/denoised pair (thread-safe; previews poll this).

        A call asks for fresh pairs for the next second: while the saved stream is
        behind, the worker also denoises the newest frame for the preview (at most half
        its time), so the pair shown is seconds fresh, not minutes late.
        """
        self._pipeline.want_preview()
        return self._pipeline.latest()

    def latest_raw(self) -> np.ndarray | None:
        """Newest raw frame received, denoised or not (thread-safe)."""
        return self._pipeline.latest_raw()

    def latest_widefield(self) -> np.ndarray | None:
        """Widefield (mean of the raw frames) of the newest complete SIM set.

        Summed only while a preview polls :meth:`latest` (None before, and outside SIM).
        """
        return self._pipeline.latest_widefield()

    def latest_recon(self) -> LatestRecon | None:
        """Return the newest live SIM reconstruction (None before the first, or off)."""
        return self._pipeline.latest_recon()

    def stats(self) -> LiveStats:
        """Return a snapshot of the run's live statistics (thread-safe)."""
        return self._pipeline.stats()

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
        return self._pipeline.wait(timeout, progress, interval_s)

    # -- control ---------------------------------------------------------------------------

    def cancel_catch_up(self) -> None:
        """Stop denoising frames still queued; they are recorded as missing.

        Raw saving is unaffected. Useful when the acquisition is over and waiting for
        the denoiser is not worth it; the run then ends ``interrupted`` if frames were
        left without a denoised twin.
        """
        self._pipeline.cancel_catch_up()

    def finish(
        self,
        *,
        interrupted: bool = True,
        reason: str = "the MDA did not report the end of the sequence",
    ) -> None:
        """End a run whose ``sequenceFinished`` never arrived.

        pymmcore-plus 0.18.1's relay thread can stop just before delivering
        ``sequenceFinished``, so the handler also ends the run when the relay thread is
        gone, and :func:`live_denoise` calls this after the MDA. Harmless after a
        normal end.

        Parameters
        ----------
        interrupted : bool
            True if the acquisition may not have ended normally (status
            ``interrupted``, an error is recorded); False if it is known to have ended
            (a note is recorded).
        reason : str
            What happened, for run.json.
        """
        self._pipeline.finish(interrupted=interrupted, reason=reason)

    # -- MDA callbacks (relay thread) ------------------------------------------------------

    def sequenceStarted(self, sequence: useq.MDASequence | None = None, meta: Any = None) -> None:
        """Open the run: derive the layout, start the writer and worker threads."""
        try:
            if not self._pipeline.started:
                self._relay.bind()
            self._pipeline.start(sequence)
        except Exception as exc:  # a raising handler kills pymmcore's relay
            self._pipeline.record.errors.add("sequenceStarted", exc)

    def frameReady(self, img: np.ndarray, event: useq.MDAEvent, meta: Any = None) -> None:
        """Queue the frame for the raw writer and (if admitted) the denoiser; O(1)."""
        t0 = time.perf_counter()
        try:
            self._pipeline.accept(img, event, meta, t0)
        finally:
            self._frame_ready_us.append((time.perf_counter() - t0) * 1e6)

    def sequenceCanceled(self, sequence: useq.MDASequence | None = None) -> None:
        """Remember that the run was canceled (``sequenceFinished`` follows)."""
        self._pipeline.canceled()

    def sequenceFinished(self, sequence: useq.MDASequence | None = None) -> None:
        """End of acquisition: let the writers drain, close and finalize."""
        try:
            self._pipeline.end()
        except Exception as exc:  # a raising handler kills pymmcore's relay
            self._pipeline.record.errors.add("sequenceFinished", exc)

    def _check_relay(self) -> None:
        """End the run if the thread that delivered ``sequenceStarted`` is gone."""
        if self._pipeline.acquiring and (end := self._relay.ended()) is not None:
            self._pipeline.finish(interrupted=end.interrupted, reason=end.reason)
