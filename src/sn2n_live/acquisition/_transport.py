"""Between the acquisition process and the denoise process: messages, shared memory, rescue.

- Messages are typed (one ``NamedTuple`` class each), sent over an authenticated
  ``multiprocessing.connection``; each carries only small values. Pixels travel through
  shared memory: the :class:`FrameRing` for every frame, the :class:`PairSlot` for the
  newest raw/denoised pair.
- :class:`SharedCounters`: int64 values both processes read without a message.
- :class:`RawRescue`: the acquisition process writes the frames a dead child had not
  written to ``raw-rescue-<h>x<w>-<dtype>.ome.zarr``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, Listener
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import useq

from sn2n_live.acquisition._contracts import LatestPair, RunSummary
from sn2n_live.acquisition._stats import LiveStats, RangeList
from sn2n_live.acquisition._writers import flat_store_settings

__all__ = [
    "RESCUE_PREFIX",
    "FrameRing",
    "PairSlot",
    "RawRescue",
    "ReconSlot",
    "SharedCounters",
    "aligned",
    "attach",
    "start_child",
    "unlink_all",
]

RESCUE_PREFIX = "raw-rescue"


# -- messages: acquisition process -> denoise process ----------------------------------------


class Setup(NamedTuple):
    """First message: what the child needs to build its pipeline."""

    sys_path: list[str]
    payload: bytes  # pickled ChildConfig, unpickled after sys.path is set


class ChildConfig(NamedTuple):
    model: Any  # .sn2n path, picklable denoiser or factory
    out: str
    options: dict[str, Any]
    counters_name: str
    ring_name: str
    nice: int


class Start(NamedTuple):
    sequence: useq.MDASequence | None


class FrameInfo(NamedTuple):
    """What the child needs of an MDA frame besides its pixels."""

    seq: int
    index: dict[str, int]
    metadata: dict[str, Any]
    exposure: float | None
    meta: dict[str, Any]  # the frame metadata keys the stores keep
    t_arrival: float  # perf_counter; the same clock in both processes
    properties: list[tuple[str, str, Any]] | None = None  # the event's, for the dose

    def event(self) -> useq.MDAEvent:
        return useq.MDAEvent(
            index=self.index,
            metadata=self.metadata,
            exposure=self.exposure,
            properties=self.properties,
        )


class FrameInRing(NamedTuple):
    info: FrameInfo
    offset: int
    shape: tuple[int, ...]
    dtype: str


class FrameInline(NamedTuple):
    info: FrameInfo
    image: np.ndarray


class UsePairSlot(NamedTuple):
    name: str


class UseReconSlot(NamedTuple):
    name: str


class ReconReady(NamedTuple):
    """A reconstruction is in the :class:`ReconSlot` under generation ``gen``."""

    gen: int
    set_number: int
    shape: tuple[int, int]
    source: str
    compute_ms: float


class Canceled(NamedTuple):
    pass


class End(NamedTuple):
    frame_ready_us: bytes  # float32 costs of frameReady in the acquisition process


class Finish(NamedTuple):
    interrupted: bool
    reason: str


class CancelCatchUp(NamedTuple):
    pass


class Close(NamedTuple):
    """End a child whose sequence never started."""


# -- messages: denoise process -> acquisition process ----------------------------------------


class Ready(NamedTuple):
    pass


class StartFailed(NamedTuple):
    exc_type: str
    message: str
    traceback: str


class StatsUpdate(NamedTuple):
    stats: LiveStats


class PairReady(NamedTuple):
    """A pair is in the :class:`PairSlot` under generation ``gen``."""

    gen: int
    frame: int
    index: dict[str, int]
    latency_ms: float
    raw_spec: tuple[tuple[int, ...], str]
    den_spec: tuple[tuple[int, ...], str]
    data_check: str | None
    arrived: float | None
    fresh: bool
    has_risk: bool = False


class RawFailed(NamedTuple):
    message: str


class Finished(NamedTuple):
    summary: RunSummary
    # The final run.json when the child could not write it (its disk quota, say).
    unwritten_document: dict[str, Any] | None = None


# -- shared memory ---------------------------------------------------------------------------


def aligned(nbytes: int) -> int:
    """``nbytes`` rounded up to 64 (a cache line)."""
    return -(-nbytes // 64) * 64


def attach(name: str) -> SharedMemory:
    """Attach to the parent's shared memory; the parent alone unlinks it."""
    from multiprocessing import resource_tracker

    shm = SharedMemory(name=name)
    # Python < 3.13 registers attached segments too, then warns or unlinks at exit.
    resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    return shm


class SharedCounters:
    """int64 counters in shared memory, written by one process each.

    ``RAW_DONE`` (child): frames its raw writer is done with, in arrival order.
    ``PAIR_GEN`` (child): the pair slot's generation, odd while being written (a seqlock).
    ``PAIR_TAKEN`` (parent): the last generation copied out.
    ``PREVIEW_UNTIL_US`` (parent): ``perf_counter`` in µs until which a preview watches.
    """

    RAW_DONE, PAIR_GEN, PAIR_TAKEN, PREVIEW_UNTIL_US = 0, 1, 2, 3
    _N = 4

    def __init__(self, shm: SharedMemory) -> None:
        self.shm = shm
        self.values = np.ndarray((self._N,), np.int64, buffer=shm.buf)

    @classmethod
    def create(cls) -> SharedCounters:
        counters = cls(SharedMemory(create=True, size=8 * cls._N))
        counters.values[:] = 0
        return counters

    def __getitem__(self, i: int) -> int:
        return int(self.values[i])

    def __setitem__(self, i: int, value: int) -> None:
        self.values[i] = value


class FrameRing:
    """Shared memory holding frames from their arrival until the child has written them.

    Slots are handed out in order; a slot is free again once the child's raw writer is
    past its frame (``RAW_DONE``). The parent alone allocates.
    """

    def __init__(self, shm: SharedMemory) -> None:
        self.shm = shm
        self.slot_bytes = 0
        self.n_slots = 0
        self._next = 0

    @classmethod
    def create(cls, nbytes: int) -> FrameRing:
        ring = cls(SharedMemory(create=True, size=nbytes))
        # Fault every page in now: a page fault during the burst takes the process's
        # memory lock that the acquisition thread's own allocations need.
        np.ndarray((ring.shm.size,), np.uint8, buffer=ring.shm.buf)[:: mmap.PAGESIZE] = 0
        return ring

    def size_for(self, frame_nbytes: int) -> None:
        """Cut the ring into slots for frames of ``frame_nbytes`` (the first frame's)."""
        self.slot_bytes = aligned(frame_nbytes)
        self.n_slots = self.shm.size // self.slot_bytes

    def fits(self, img: np.ndarray) -> bool:
        return img.nbytes <= self.slot_bytes and self.n_slots >= 2 and img.flags.c_contiguous

    def next_slot(self) -> int:
        slot = self._next
        self._next = (slot + 1) % self.n_slots
        return slot

    def view(self, slot: int, shape: tuple[int, ...], dtype: np.dtype | str) -> np.ndarray:
        return np.ndarray(shape, dtype, buffer=self.shm.buf, offset=slot * self.slot_bytes)

    def read(self, offset: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """Copy a frame out (the child's side: the slot is reused once it is written)."""
        return np.ndarray(shape, np.dtype(dtype), buffer=self.shm.buf, offset=offset).copy()


class ReconSlot:
    """The newest live SIM reconstruction in shared memory, behind its own seqlock.

    The first 8 bytes hold the generation (odd while being written); the image follows.
    The child writes (:meth:`publish`), the parent copies out (:meth:`take`).
    """

    _HEADER = 64

    def __init__(self, shm: SharedMemory) -> None:
        self.shm = shm

    def _generation(self) -> np.ndarray:
        # A view made per use: one kept would stop the segment from ever closing.
        return np.ndarray((1,), np.int64, buffer=self.shm.buf)

    @classmethod
    def bytes_for(cls, frame: np.ndarray) -> int:
        """Room for the float32 reconstruction (2x in each direction) of ``frame``."""
        return cls._HEADER + 16 * frame.size

    def publish(self, image: np.ndarray, gen: int) -> bool:
        """Write ``image`` under generation ``gen`` (even); False if it does not fit."""
        if self._HEADER + 4 * image.size > self.shm.size:
            return False
        generation = self._generation()
        generation[0] = gen - 1
        view = np.ndarray(image.shape, np.float32, buffer=self.shm.buf, offset=self._HEADER)
        np.copyto(view, image, casting="same_kind")
        generation[0] = gen
        del view, generation
        return True

    def take(self, ready: ReconReady) -> np.ndarray | None:
        """Copy the image out; None if the child overwrote it meanwhile."""
        if int(self._generation()[0]) != ready.gen:
            return None
        buf = self.shm.buf
        image = np.ndarray(ready.shape, np.float32, buffer=buf, offset=self._HEADER).copy()
        return image if int(self._generation()[0]) == ready.gen else None


class PairSlot:
    """One raw frame and its denoised twin in shared memory, guarded by a seqlock.

    Previews only ever read this slot; saved frames never go through it. The child
    writes (:meth:`publish`), the parent copies out (:meth:`take`).
    """

    def __init__(self, shm: SharedMemory, counters: SharedCounters) -> None:
        self.shm = shm
        self.counters = counters

    @staticmethod
    def bytes_for(frame: np.ndarray) -> int:
        """Room for a raw frame, its (at most 4 bytes/pixel) denoised twin and risk map."""
        return aligned(frame.nbytes) + 2 * aligned(4 * frame.size)

    def publish(self, pair: LatestPair, gen: int) -> PairReady:
        """Write ``pair`` under generation ``gen`` (even); return its message."""
        c = self.counters
        c[c.PAIR_GEN] = gen - 1  # odd: being written
        raw, den = pair.raw, np.ascontiguousarray(pair.denoised)
        buf = self.shm.buf
        np.copyto(np.ndarray(raw.shape, raw.dtype, buffer=buf), raw)
        np.copyto(np.ndarray(den.shape, den.dtype, buffer=buf, offset=aligned(raw.nbytes)), den)
        if pair.risk is not None:
            offset = aligned(raw.nbytes) + aligned(4 * raw.size)
            risk = np.ndarray(raw.shape, np.float32, buffer=buf, offset=offset)
            np.copyto(risk, pair.risk, casting="same_kind")
        c[c.PAIR_GEN] = gen
        return PairReady(
            gen,
            pair.frame,
            pair.index,
            pair.latency_ms,
            (raw.shape, raw.dtype.str),
            (den.shape, den.dtype.str),
            pair.data_check,
            pair.arrived,
            pair.fresh,
            pair.risk is not None,
        )

    def take(self, ready: PairReady) -> LatestPair | None:
        """Copy the pair out; None if the child overwrote it meanwhile."""
        c = self.counters
        if c[c.PAIR_GEN] != ready.gen:
            return None
        buf = self.shm.buf
        raw_shape, raw_dtype = ready.raw_spec
        raw = np.ndarray(raw_shape, np.dtype(raw_dtype), buffer=buf).copy()
        den_shape, den_dtype = ready.den_spec
        offset = aligned(raw.nbytes)
        den = np.ndarray(den_shape, np.dtype(den_dtype), buffer=buf, offset=offset).copy()
        risk = None
        if ready.has_risk:
            offset = aligned(raw.nbytes) + aligned(4 * raw.size)
            risk = np.ndarray(raw_shape, np.float32, buffer=buf, offset=offset).copy()
        if c[c.PAIR_GEN] != ready.gen:  # overwritten while copying
            return None
        c[c.PAIR_TAKEN] = ready.gen
        return LatestPair(
            ready.frame,
            ready.index,
            raw,
            den,
            ready.latency_ms,
            ready.data_check,
            ready.arrived,
            ready.fresh,
            risk,
        )


def unlink_all(*segments: SharedMemory | None) -> None:
    """Unlink shared memory segments (the parent's job), ignoring ones already gone."""
    for shm in segments:
        if shm is not None:
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()


# -- the child process -----------------------------------------------------------------------


def start_child(timeout: float) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start ``python -m sn2n_live.acquisition._denoise_process``; accept its connection.

    A fresh interpreter (not multiprocessing's spawn, which re-runs the user's
    ``__main__`` script) that connects back over an authenticated local socket or pipe.
    """
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


# -- rescue ------------------------------------------------------------------------------------


class RawRescue:
    """Raw frames written by the acquisition process after the denoise process died."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.frames = RangeList()
        self._streams: dict[str, Any] = {}

    @property
    def stores(self) -> list[str]:
        """Names of the rescue stores in the run folder."""
        return sorted(self._streams)

    def write(self, seq: int, img: np.ndarray, index: dict[str, int], meta: dict[str, Any]) -> None:
        from ome_writers import create_stream

        h, w = img.shape[-2:]
        name = f"{RESCUE_PREFIX}-{h}x{w}-{img.dtype.name}.ome.zarr"
        stream = self._streams.get(name)
        if stream is None:
            stream = create_stream(flat_store_settings(self.run_dir / name, img.shape, img.dtype))
            self._streams[name] = stream
        stream.append(img, frame_metadata={"frame": seq, "index": index, **meta})
        self.frames.add(seq)

    def close(self) -> list[Exception]:
        """Close every rescue store; return what failed."""
        failures = []
        for stream in self._streams.values():
            try:
                stream.close()
            except Exception as exc:
                failures.append(exc)
        return failures
