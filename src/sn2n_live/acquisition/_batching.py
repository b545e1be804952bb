"""Pure decisions of the live pipeline: what to queue, what to batch, when to wait.

Nothing here touches threads, stores or the denoiser, so every rule is tested from
tables of cases (tests/test_batching.py). :class:`~sn2n_live.acquisition._pipeline.
LivePipeline` applies them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import useq

from sn2n_live.config import ANGLE_KEY, PHASE_KEY, SIM_METADATA_KEY

__all__ = [
    "RAW_BACKLOG_HOLD",
    "Admission",
    "PendingFrame",
    "SetTag",
    "SetWidefield",
    "admit",
    "complete_batch",
    "hold_for_raw",
    "preview_batch",
    "preview_due",
    "preview_keep",
    "set_tag",
]

# The denoise worker waits while more raw frames than this are not yet written: one 3x5
# SIM set plus slack.
RAW_BACKLOG_HOLD = 16
SIM_KEY = SIM_METADATA_KEY
# Index keys that vary within one SIM set.
_PATTERN_KEYS = (ANGLE_KEY, PHASE_KEY)


@dataclass(frozen=True)
class SetTag:
    """Which SIM set a frame belongs to: its size (1 outside SIM) and the set's key."""

    size: int
    key: tuple[tuple[str, int], ...]


def set_tag(event: useq.MDAEvent) -> SetTag:
    """Return the SIM set of ``event`` (``metadata["sim"]["set_size"]``, 1 without)."""
    size = 1
    sim = event.metadata.get(SIM_KEY) if event.metadata else None
    if isinstance(sim, Mapping):
        try:
            size = max(1, int(sim.get("set_size", 1)))
        except (TypeError, ValueError):
            size = 1
    key = tuple(sorted((str(k), int(v)) for k, v in event.index.items() if k not in _PATTERN_KEYS))
    return SetTag(size, key)


class PendingFrame:
    """One frame in flight: its numbers, pixels (None once spilled), event and set."""

    __slots__ = ("_tag", "event", "image", "meta", "nbytes", "pos", "seq", "t")

    def __init__(
        self,
        seq: int,
        pos: int | None,
        image: np.ndarray | None,
        event: useq.MDAEvent,
        meta: Mapping[str, Any],
        t: float,
        nbytes: int,
        tag: SetTag | None = None,
    ) -> None:
        self.seq = seq  # arrival number
        self.pos = pos  # place in the stores (None: unplaced)
        self.image = image
        self.event = event
        self.meta = meta
        self.t = t  # arrival, perf_counter
        self.nbytes = nbytes  # bytes it counts against the memory budget
        self._tag = tag

    @property
    def tag(self) -> SetTag:
        """The frame's SIM set, read from its event on first use (off the relay thread)."""
        if self._tag is None:
            self._tag = set_tag(self.event)
        return self._tag

    def spilled(self) -> PendingFrame:
        """Return the same frame queued as its position only (pixels re-read later)."""
        return PendingFrame(self.seq, self.pos, None, self.event, self.meta, self.t, 0, self._tag)


class SetWidefield:
    """The widefield image of the newest complete SIM set: its raw frames' mean.

    Frames are added in arrival order from one thread; a frame of another set (or of
    another shape) starts the sum again, so an incomplete set is never shown. Reading
    :attr:`latest` from another thread is safe (one reference, swapped when a set ends).
    """

    def __init__(self) -> None:
        self._key: tuple[tuple[str, int], ...] | None = None
        self._sum: np.ndarray | None = None
        self._n = 0
        self.latest: np.ndarray | None = None

    def add(self, tag: SetTag, image: np.ndarray) -> None:
        """Add one raw frame of set ``tag`` (frames outside SIM sets are ignored)."""
        if tag.size <= 1:
            return
        if tag.key != self._key or self._sum is None or self._sum.shape != image.shape:
            self._key, self._sum, self._n = tag.key, np.zeros(image.shape, np.float32), 0
        self._sum += image
        self._n += 1
        if self._n == tag.size:
            self._sum /= np.float32(self._n)
            self.latest, self._sum, self._key = self._sum, None, None

    def reset(self) -> None:
        """Forget the set being summed (frames were missed: it cannot complete)."""
        self._key, self._sum, self._n = None, None, 0


class Admission(StrEnum):
    """What becomes of a frame offered to the denoise queue."""

    QUEUE = "queue"  # pixels held in memory
    SPILL = "spill"  # position only; re-read from the raw store (complete policy)
    DROP = "drop"  # recorded as missing (preview policy)


def admit(policy: str, queued_bytes: int, nbytes: int, budget: int) -> Admission:
    """Decide where a frame of ``nbytes`` goes with ``queued_bytes`` of ``budget`` used."""
    if queued_bytes + nbytes <= budget:
        return Admission.QUEUE
    return Admission.DROP if policy == "preview" else Admission.SPILL


def preview_keep(set_size: int) -> int:
    """Frames a preview queue may hold: the newest set and one more being built."""
    return 2 * set_size - 1


def preview_due(
    wanted: bool,
    newest: int | None,
    shown: int,
    saved_upto: int,
    since_last_s: float,
    last_cost_s: float,
    min_interval_s: float,
) -> bool:
    """Whether the worker should denoise the newest frame for the preview now.

    Only while someone watches (``wanted``), for a frame newer than the one shown and not
    yet reached by the saving lane (then its in-order pair is fresh anyway), and at most
    half of the worker's time: the pause since the last preview frame must be as long as
    that frame took (and at least ``min_interval_s``, the display's period).
    """
    if not wanted or newest is None or newest <= shown or newest < saved_upto:
        return False
    return since_last_s >= max(min_interval_s, last_cost_s)


def hold_for_raw(acquiring: bool, raw_backlog: int, raw_writer_alive: bool) -> bool:
    """Whether the denoise worker should wait for the raw writer before its next batch.

    Raw frames come first while acquiring: on a saturated CPU, denoising competes with
    the raw writer and with the acquisition thread popping the camera's buffer.
    """
    return acquiring and raw_writer_alive and raw_backlog > RAW_BACKLOG_HOLD


def _groups(tags: Sequence[SetTag]) -> list[tuple[int, int, bool]]:
    """Split ``tags`` into runs of one SIM set: ``(start, stop, cut_or_full)``.

    A set cut short by a frame of another set (a canceled or skipped event) counts as
    whole (``True``): nothing more of it will come. The last set is whole only when full.
    """
    out: list[tuple[int, int, bool]] = []
    i = 0
    while i < len(tags):
        first = tags[i]
        j = i + 1
        while j < len(tags) and j - i < first.size and tags[j].key == first.key:
            j += 1
        out.append((i, j, j - i >= first.size or j < len(tags)))
        i = j
    return out


def complete_batch(
    tags: Sequence[SetTag], ending: bool, max_batch: int, *, split_sets: bool = False
) -> int:
    """Frames to take from the front: whole sets (or single frames), up to ``max_batch``.

    A set larger than ``max_batch`` is still one batch; an unfinished last set waits
    unless nothing more comes (``ending``). 0: wait for more frames. ``split_sets``:
    take up to ``max_batch`` frames whatever their sets (frames are denoised one by one;
    whole sets only make batches larger), so that a preview waits at most one short batch.
    """
    if split_sets:
        return min(len(tags), max_batch)
    n = 0
    for start, stop, whole in _groups(tags):
        size = stop - start
        if n >= max_batch or not (whole or ending) or (n and n + size > max_batch):
            break
        n += size
    return n


def preview_batch(
    tags: Sequence[SetTag], in_memory: Sequence[bool], ending: bool
) -> tuple[int, int]:
    """Choose the newest complete in-memory SIM set; everything before it is skipped.

    Returns ``(skip, take)``: skip the first ``skip`` frames (recorded as missing), then
    denoise the next ``take`` (0: nothing to denoise yet). Sets that lost frames to
    eviction are never complete, so previews only ever show whole sets. Without a
    choice only the newest (still growing) set is kept, unless nothing more comes.
    """
    groups = _groups(tags)
    chosen = None
    for g in range(len(groups) - 1, -1, -1):
        start, stop, _ = groups[g]
        if stop - start >= tags[start].size and all(in_memory[start:stop]):
            chosen = g
            break
    if chosen is not None:
        start, stop, _ = groups[chosen]
        return start, stop - start
    if ending or not groups:
        return len(tags), 0
    return groups[-1][0], 0
