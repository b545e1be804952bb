"""The denoise process: ``python -m sn2n_live.acquisition._denoise_process``.

Started by :class:`~sn2n_live.acquisition._isolated.ProcessLiveDenoiseHandler`, which
writes the address and key of its listener to this process's stdin. It runs the same
:class:`~sn2n_live.acquisition._pipeline.LivePipeline` as thread mode, fed through
:meth:`LivePipeline.accept` from the frames the acquisition process put in shared memory.

Ctrl-C in a terminal reaches every process of its group; this one ignores it, so the
acquisition process alone decides how a run ends (cancel, drain, close the stores).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Client, Connection
from typing import Any

import numpy as np

from sn2n_live.acquisition import _transport as tp
from sn2n_live.acquisition._contracts import LatestPair, RunSummary, load_denoiser
from sn2n_live.acquisition._pipeline import LivePipeline
from sn2n_live.acquisition._recon import LatestRecon

__all__ = ["child_main"]

# The latest raw/denoised pair is published at most this often once the previous one
# was taken (a preview's rate), and refreshed this often while nobody takes them.
_PAIR_MIN_INTERVAL_S = 0.05
_PAIR_REFRESH_S = 1.0


class _Link:
    """The connection to the acquisition process; sends stop quietly once it is gone."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.gone = threading.Event()
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        if self.gone.is_set():
            return
        try:
            with self._lock:
                self.conn.send(message)
        except (OSError, EOFError, ValueError):
            self.gone.set()  # one failure, not one error per stats tick


class _PairPublisher:
    """Puts the newest pair in shared memory at a preview's pace.

    Not through the pipe: megabytes unpickled there would hold the acquisition process's
    GIL.
    """

    def __init__(self, link: _Link, counters: tp.SharedCounters) -> None:
        self._link = link
        self.counters = counters
        self.slot: tp.PairSlot | None = None
        self.recon: _ReconPublisher | None = None  # the reconstruction's, beside the pair's
        self._gen = 0
        self._time = 0.0
        self.frame = -1
        self._lock = threading.Lock()

    def publish(self, pair: LatestPair, *, last: bool = False) -> None:
        with self._lock:
            if pair.frame < self.frame:
                return  # a newer pair is out already
            now = time.monotonic()
            c = self.counters
            taken = c[c.PAIR_TAKEN] == self._gen
            interval = _PAIR_MIN_INTERVAL_S if taken else _PAIR_REFRESH_S
            if self.slot is None or (not last and now - self._time < interval):
                return
            self._gen += 2
            ready = self.slot.publish(pair, self._gen)
            self._time, self.frame = now, pair.frame
            self._link.send(ready)


class _ReconPublisher:
    """Puts each new live SIM reconstruction in shared memory (pixels never in the pipe)."""

    def __init__(self, link: _Link) -> None:
        self._link = link
        self.slot: tp.ReconSlot | None = None
        self._gen = 0
        self._lock = threading.Lock()

    def publish(self, latest: LatestRecon) -> None:
        with self._lock:
            if self.slot is None:
                return
            self._gen += 2
            if self.slot.publish(latest.image, self._gen):
                shape = (int(latest.image.shape[0]), int(latest.image.shape[1]))
                ready = tp.ReconReady(
                    self._gen, latest.set_number, shape, latest.source, latest.compute_ms
                )
                self._link.send(ready)


def child_main(conn: Connection) -> None:
    """Build the pipeline the acquisition process asks for and feed it until the run ends."""
    link = _Link(conn)
    setup: tp.Setup = conn.recv()
    sys.path[:] = setup.sys_path  # the model's class may live beside the user's script
    try:
        config: tp.ChildConfig = pickle.loads(setup.payload)
        if config.nice and hasattr(os, "nice"):
            os.nice(config.nice)  # before any thread starts: they all inherit it
        pipeline = LivePipeline(
            load_denoiser(config.model), config.out, isolation="process", **config.options
        )
    except Exception as exc:
        link.send(tp.StartFailed(type(exc).__name__, str(exc), traceback.format_exc()))
        return
    counters = tp.SharedCounters(tp.attach(config.counters_name))
    ring = tp.FrameRing(tp.attach(config.ring_name))
    publisher = _PairPublisher(link, counters)
    publisher.recon = _ReconPublisher(link)
    pipeline.recon_listener = publisher.recon.publish
    finished = _connect(pipeline, link, publisher)
    link.send(tp.Ready())
    stop = threading.Event()
    progress = threading.Thread(
        target=_report_raw_progress, args=(pipeline, counters, stop), daemon=True
    )
    progress.start()
    try:
        _serve(conn, pipeline, ring, publisher, finished)
        counters[counters.RAW_DONE] = pipeline.record.counts.raw_done
    finally:
        # The mappings go with the process; the parent unlinks the segments.
        stop.set()
        progress.join()
        conn.close()


def _connect(pipeline: LivePipeline, link: _Link, publisher: _PairPublisher) -> threading.Event:
    """Forward the pipeline's signals to the acquisition process; return 'finished'."""
    finished = threading.Event()

    def on_finished(summary: RunSummary) -> None:
        try:
            final = pipeline.latest()
            if final is not None and final.frame != publisher.frame:
                publisher.publish(final, last=True)
            link.send(tp.Finished(summary, pipeline.unwritten_document))
        finally:
            finished.set()

    pipeline.events.stats.connect(lambda stats: link.send(tp.StatsUpdate(stats)))
    pipeline.events.pair.connect(publisher.publish)
    pipeline.events.raw_failed.connect(lambda message: link.send(tp.RawFailed(message)))
    pipeline.events.finished.connect(on_finished)
    return finished


def _report_raw_progress(
    pipeline: LivePipeline, counters: tp.SharedCounters, stop: threading.Event
) -> None:
    """Publish how far the raw writer got; pass on whether a preview watches.

    The parent frees ring slots by the first.
    """
    while not stop.wait(0.005):
        counters[counters.RAW_DONE] = pipeline.record.counts.raw_done
        pipeline.preview_deadline = counters[counters.PREVIEW_UNTIL_US] / 1e6


def _serve(
    conn: Connection,
    pipeline: LivePipeline,
    ring: tp.FrameRing,
    publisher: _PairPublisher,
    finished: threading.Event,
) -> None:
    """Apply the acquisition process's messages to the pipeline until the run is over."""
    while not finished.is_set():
        if not conn.poll(0.05):
            continue
        try:
            message = conn.recv()
        except (EOFError, OSError):
            # The acquisition process is gone: close what we have.
            if pipeline.started:
                pipeline.finish(
                    interrupted=True, reason="the acquisition process ended during the run"
                )
            break
        if isinstance(message, tp.FrameInRing):
            info = message.info
            img = ring.read(message.offset, message.shape, message.dtype)
            pipeline.accept(img, info.event(), info.meta, info.t_arrival)
        elif isinstance(message, tp.FrameInline):
            info = message.info
            pipeline.accept(message.image, info.event(), info.meta, info.t_arrival)
        elif isinstance(message, tp.UsePairSlot):
            publisher.slot = tp.PairSlot(tp.attach(message.name), publisher.counters)
        elif isinstance(message, tp.UseReconSlot) and publisher.recon is not None:
            publisher.recon.slot = tp.ReconSlot(tp.attach(message.name))
        elif isinstance(message, tp.Start):
            pipeline.start(message.sequence)
        elif isinstance(message, tp.Canceled):
            pipeline.canceled()
        elif isinstance(message, tp.End):
            pipeline.end(np.frombuffer(message.frame_ready_us, np.float32).tolist())
        elif isinstance(message, tp.Finish):
            pipeline.finish(interrupted=message.interrupted, reason=message.reason)
        elif isinstance(message, tp.CancelCatchUp):
            pipeline.cancel_catch_up()
        elif isinstance(message, tp.Close) and not pipeline.started:
            return
    if pipeline.started:
        pipeline.wait()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    address, authkey = pickle.load(sys.stdin.buffer)
    child_main(Client(address, authkey=authkey))
