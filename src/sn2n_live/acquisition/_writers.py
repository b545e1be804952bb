"""The run folder: raw and denoised stores with identical layouts, journals and run.json.

One live-denoise run writes one folder::

    <run>/raw.ome.zarr             camera frames, camera dtype
    <run>/denoised.ome.zarr        denoised twins, float32 (or uint16), same dims and coords
    <run>/raw.frames.jsonl         crash journal: one line per raw frame written
    <run>/denoised.frames.jsonl    crash journal: one line per denoised frame written
    <run>/unplaced.ome.zarr        only if frames arrived that the layout has no place for
    <run>/run.json                 what ran, with what, how it went (see ``docs/acquisition.md``)

Both stores are written with ome-writers. Their layout comes from the event list (or
``MDASequence``): one dimension per index key in the order the events nest, with SIM
angle and phase folded into one ``sim`` dimension, because ome-writers accepts at most 5
non-position dimensions (y and x included). See :func:`layout_from_events` for the rule.

Backends (``zarr_backend``, OME-Zarr only) trade the work done on the caller's thread
against durability:

- ``zarr-python`` (default): an ``append`` returns once its chunk file is on disk (written
  atomically), so a killed run leaves every frame listed in the journals readable, and a
  frame can be read back (:meth:`RunWriter.read_raw`) as soon as it was appended. The
  write happens on the caller's thread, which holds the GIL for much of it.
- ``tensorstore``: appends return immediately and write in the background: cheaper on the
  caller's thread, but a killed process loses the frames still in flight, and frames
  cannot be read back before close.
- ``acquire-zarr`` (the C++ streaming writer): an append copies the frame into the
  writer's buffers and returns; chunks are written by its own threads, without the GIL,
  so it holds the GIL about as little as tensorstore and far less than zarr-python (its
  threads still need CPU time). It has tensorstore's limits and more. A frame is readable
  only after close. A killed run leaves a store whose frames on disk are intact except
  that a shard being written at the kill may be torn (zarr refuses it with a checksum
  error); its array shape is whatever acquire-zarr last recorded, not the layout's, and
  its ``zarr.json`` lacks the run-level attributes, which ome-writers writes on close.
  A skipped frame (a gap, the padded end of the denoised store) is passed to the writer
  as a zero frame on the caller's thread (all-zero chunks are not written to disk). At
  close, :class:`RunWriter` grows the arrays to the layout's full shape and creates
  arrays of positions that got no frame, as the other backends do from the start.

ome-writers keeps per-frame metadata in memory and writes it into ``zarr.json`` only on
close, whatever the backend, which is why the journals exist.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, get_args

import numpy as np
import useq
from ome_writers import AcquisitionSettings, Dimension, OMEStream, Position, create_stream

from sn2n_live._outputs import atomic_write, check_writable_dir, follow_umask
from sn2n_live.config import (
    ANGLE_KEY,
    PHASE_KEY,
    TIFF_DENOISED_DTYPES,
    TIFF_DIMS,
    DenoisedDtype,
    FileFormat,
    ZarrBackend,
)

__all__ = [
    "DENOISED_NAME",
    "RAW_NAME",
    "RISK_NAME",
    "RUN_JSON",
    "SIM_DIM",
    "UNPLACED_NAME",
    "DenoisedDtype",
    "FileFormat",
    "FrameLayout",
    "LayoutDim",
    "RunWriter",
    "ZarrBackend",
    "check_run_folder",
    "check_store_options",
    "flat_store_settings",
    "layout_from_events",
    "write_json_atomic",
]

RAW_NAME = "raw"
DENOISED_NAME = "denoised"
RISK_NAME = "risk"
UNPLACED_NAME = "unplaced"
RUN_JSON = "run.json"
SIM_DIM = "sim"
# ome-writers allows at most 5 non-position dimensions; y and x take two of them.
MAX_INDEX_DIMS = 3
# Per-frame keys ome-writers maps onto OME-XML Plane attributes.
_TIFF_PLANE_KEYS = frozenset({"delta_t", "exposure_time", "position_x", "position_y", "position_z"})
_KEY_TYPES = {"t": "time", "p": "position", "z": "space", "c": "channel"}
# NGFF (enforced by yaozarrs) wants axes ordered time, channel, custom, space.
_STORAGE_RANK = {"time": 0, "channel": 1, "other": 2, "space": 3}
_SUFFIX = {"ome-zarr": ".ome.zarr", "ome-tiff": ".ome.tiff"}
# Backends whose appends are on disk (and readable) when ``append`` returns.
_SYNCHRONOUS_BACKENDS = frozenset({"zarr-python"})
# acquire-zarr writes a skip as zero frames from one buffer per call: skip at most this
# many bytes at a time so a long gap needs no huge allocation.
_SKIP_BATCH_BYTES = 64 * 2**20


@dataclass(frozen=True)
class LayoutDim:
    """One non-frame dimension of the stores.

    Attributes
    ----------
    name : str
        Dimension name in the stores (``t``, ``p``, ``z``, ``c``, ``sim``, ``c_sim``, ...).
    count : int or None
        Length; None for the unbounded first dimension of a generator run.
    type : str
        ome-writers dimension type: ``time``, ``position``, ``space``, ``channel``,
        ``other``.
    keys : tuple of str
        MDA index keys folded into this dimension, slowest first (``("a", "h")`` for
        ``sim``); its element ``i`` is the mixed-radix number of those keys' values.
    sizes : tuple of int
        Size of each key in ``keys``.
    labels : tuple of str or None
        A label per element (channel configs, ``"a0h2"``, position names), if known.
    """

    name: str
    count: int | None
    type: str
    keys: tuple[str, ...]
    sizes: tuple[int, ...]
    labels: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable description."""
        return {
            "name": self.name,
            "count": self.count,
            "type": self.type,
            "keys": list(self.keys),
            "sizes": list(self.sizes),
            "labels": None if self.labels is None else list(self.labels),
        }


@dataclass(frozen=True)
class FrameLayout:
    """Where each frame of a run goes in the stores.

    A *nested* layout has one dimension per (folded) index key and places a frame by its
    ``event.index``; a *flat* layout has a single ``t`` axis holding frames in arrival
    order (their real index is in the per-frame metadata).

    Attributes
    ----------
    dims : tuple of LayoutDim
        Non-frame dimensions in acquisition order (slowest first).
    flat : bool
        True for the single-axis fallback.
    key_sizes : tuple of (str, int)
        Every index key of a nested layout with its size, slowest first (size-1 keys that
        were dropped from ``dims`` included).
    notes : tuple of str
        How the layout was derived (folds, drops, why it is flat).
    """

    dims: tuple[LayoutDim, ...]
    flat: bool
    key_sizes: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = ()
    _strides: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        strides: dict[str, int] = {}
        stride = 1
        for key, size in reversed(self.key_sizes):
            strides[key] = stride
            stride *= size
        object.__setattr__(self, "_strides", strides)

    @property
    def n_frames(self) -> int | None:
        """Frames the layout holds; None if unbounded."""
        counts = [d.count for d in self.dims]
        if any(c is None for c in counts):
            return None
        return math.prod(c for c in counts if c is not None)

    def position(self, index: Mapping[str, int]) -> int | None:
        """Frame number in the layout of a frame with MDA ``index``; None if it has no place.

        Flat layouts place frames by arrival order and always return None here. Keys the
        layout does not know must be absent or 0.
        """
        if self.flat:
            return None
        pos = 0
        strides = self._strides
        for key, size in self.key_sizes:
            value = index.get(key)
            if value is None or not 0 <= value < size:
                return None
            pos += value * strides[key]
        if len(index) > len(self.key_sizes) and any(
            value for key, value in index.items() if key not in strides
        ):
            return None
        return pos

    def dim_index(self, position: int) -> tuple[int, ...]:
        """Per-dimension index (acquisition order) of frame number ``position``."""
        if self.flat:
            return (position,)
        out = []
        rest = position
        for dim in reversed(self.dims):
            count = dim.count or 1
            out.append(rest % count)
            rest //= count
        return tuple(reversed(out))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable description (stored in run.json and in both stores)."""
        return {
            "kind": "flat" if self.flat else "nested",
            "dims": [d.to_dict() for d in self.dims],
            "n_frames": self.n_frames,
            "index_keys": [[k, s] for k, s in self.key_sizes],
            "notes": list(self.notes),
        }


def _flat(count: int | None, note: str) -> FrameLayout:
    dim = LayoutDim(name="t", count=count, type="time", keys=(), sizes=())
    return FrameLayout(dims=(dim,), flat=True, notes=(note,))


def _acquires_image(event: useq.MDAEvent) -> bool:
    return event.action is None or isinstance(event.action, useq.AcquireImage)


def _key_label(key: str, value: int, event: useq.MDAEvent) -> str:
    if key == "c" and event.channel is not None:
        return str(event.channel.config)
    if key == "p" and event.pos_name:
        return str(event.pos_name)
    return f"{key}{value}"


def layout_from_events(
    events: useq.MDASequence | Iterable[useq.MDAEvent] | None,
) -> FrameLayout:
    """Derive the store layout from the events of a run.

    Rule:

    1. Only image events count. If the events are unknown (None, an iterator, a
       pymmcore-plus generator placeholder), the layout is flat and unbounded.
    2. Every image event must carry the same index keys, each taking the values
       ``0..n-1``, and the events must enumerate the full product of those ranges in
       nested-loop order (the order is read from the events: the key that changes
       least often is outermost). Otherwise the layout is flat with one bounded axis.
    3. Angle ``a`` directly followed by phase ``h`` fold into one ``sim`` dimension
       (``a * n_phases + h``, labels ``a0h0, a0h1, ...``).
    4. While more than 3 non-position dimensions remain (ome-writers' limit of 5
       including y and x): drop the innermost size-1 dimension if there is one, else
       fold the innermost two adjacent non-position dimensions into one named
       ``<outer>_<inner>`` (e.g. ``c_sim``). If none are adjacent, fall back to flat.
    5. ``p`` becomes an ome-writers position dimension (one array per position, which
       does not count against the limit); ``t`` is time, ``z`` space, ``c`` channel,
       everything else ``other``.

    Parameters
    ----------
    events : useq.MDASequence, iterable of useq.MDAEvent, or None
        The events that will be run (an exact ``useq.MDASequence`` is iterated; a list
        is read; an iterator is *not* consumed).

    Returns
    -------
    FrameLayout
        The layout; its ``notes`` say how it was derived.
    """
    if events is None:
        return _flat(None, "events unknown: one unbounded axis in arrival order")
    if isinstance(events, useq.MDASequence) and type(events) is not useq.MDASequence:
        # pymmcore-plus's GeneratorMDASequence stands for a plain event list it cannot see.
        return _flat(None, "events unknown: one unbounded axis in arrival order")
    if isinstance(events, Iterator):
        return _flat(None, "events given as an iterator (not consumed): one unbounded axis")
    frames = [e for e in events if _acquires_image(e)]
    if not frames:
        return _flat(None, "no image events: one unbounded axis")
    grid = _nested_grid(frames)
    if isinstance(grid, str):
        return _flat(len(frames), grid)
    order, sizes = grid
    key_sizes = tuple((k, sizes[k]) for k in order)
    groups = _dimensions(frames, order, sizes)
    notes: list[str] = []
    _fold_sim(groups, notes)
    if not _fit_dimension_limit(groups, notes):
        return _flat(len(frames), "too many dimensions and none adjacent to fold: one axis")
    return FrameLayout(dims=tuple(groups), flat=False, key_sizes=key_sizes, notes=tuple(notes))


def _nested_grid(frames: list[useq.MDAEvent]) -> tuple[list[str], dict[str, int]] | str:
    """Rule 2: return the index keys, outermost first, and their sizes.

    A string instead says why the events are not a full nested-loop grid.
    """
    n = len(frames)
    keys: list[str] = []
    for event in frames:
        # useq's index keys may be str-enums (Axis.TIME); store plain names.
        keys.extend(str(getattr(k, "value", k)) for k in event.index if k not in keys)
    rows = [tuple(e.index.get(k, -1) for k in keys) for e in frames]
    if any(-1 in row for row in rows):
        return "image events carry different index keys: one axis in event order"
    sizes = {}
    for j, key in enumerate(keys):
        values = {row[j] for row in rows}
        if values != set(range(len(values))):
            return f"index {key!r} does not run 0..n-1: one axis in event order"
        sizes[key] = len(values)
    if math.prod(sizes.values()) != n:
        return "events are not a full grid of their index ranges: one axis"
    changes = {
        key: sum(rows[i][j] != rows[i - 1][j] for i in range(1, n)) for j, key in enumerate(keys)
    }
    order = sorted((k for k in keys if sizes[k] > 1), key=lambda k: changes[k])
    # Size-1 keys never change, so any place is valid: keep them after their neighbour
    # in the events' own index order (t, c, ... rather than c, t, ...).
    for j, key in enumerate(keys):
        if sizes[key] == 1:
            before = [k for k in keys[:j] if k in order]
            order.insert(order.index(before[-1]) + 1 if before else 0, key)
    probe = FrameLayout(dims=(), flat=False, key_sizes=tuple((k, sizes[k]) for k in order))
    if any(probe.position(e.index) != i for i, e in enumerate(frames)):
        return "events are not in nested-loop order: one axis in event order"
    return order, sizes


def _dimensions(
    frames: list[useq.MDAEvent], order: list[str], sizes: dict[str, int]
) -> list[LayoutDim]:
    """Rule 5: one dimension per index key, labelled from the events."""
    labels = {k: [f"{k}{v}" for v in range(sizes[k])] for k in order}
    for event in frames:
        for key in order:
            labels[key][event.index[key]] = _key_label(key, event.index[key], event)
    return [
        LayoutDim(
            name=k,
            count=sizes[k],
            type=_KEY_TYPES.get(k, "other"),
            keys=(k,),
            sizes=(sizes[k],),
            labels=tuple(labels[k]),
        )
        for k in order
    ]


def _fold_sim(groups: list[LayoutDim], notes: list[str]) -> None:
    """Rule 3: angle directly followed by phase become one ``sim`` dimension."""
    names = [g.name for g in groups]
    if ANGLE_KEY in names and PHASE_KEY in names:
        i = names.index(ANGLE_KEY)
        if i + 1 < len(names) and names[i + 1] == PHASE_KEY:
            groups[i : i + 2] = [_fold(groups[i], groups[i + 1], SIM_DIM)]
            notes.append(f"a x h -> {SIM_DIM}")


def _fit_dimension_limit(groups: list[LayoutDim], notes: list[str]) -> bool:
    """Rule 4: drop size-1, then fold adjacent dimensions until ome-writers' limit holds.

    Returns False if no adjacent pair is left to fold.
    """
    while sum(d.type != "position" for d in groups) > MAX_INDEX_DIMS:
        ones = [i for i, g in enumerate(groups) if g.count == 1 and g.type != "position"]
        if ones:
            dropped = groups.pop(ones[-1])
            notes.append(f"dropped size-1 dimension {dropped.name}")
            continue
        pair = next(
            (
                i
                for i in range(len(groups) - 2, -1, -1)
                if groups[i].type != "position" and groups[i + 1].type != "position"
            ),
            None,
        )
        if pair is None:
            return False
        outer, inner = groups[pair], groups[pair + 1]
        name = f"{outer.name}_{inner.name}"
        groups[pair : pair + 2] = [_fold(outer, inner, name)]
        notes.append(f"{outer.name} x {inner.name} -> {name}")
    return True


def _fold(outer: LayoutDim, inner: LayoutDim, name: str) -> LayoutDim:
    o_labels = outer.labels or tuple(str(i) for i in range(outer.count or 0))
    i_labels = inner.labels or tuple(str(i) for i in range(inner.count or 0))
    sep = "" if name == SIM_DIM else "/"
    return LayoutDim(
        name=name,
        count=(outer.count or 1) * (inner.count or 1),
        type="other",
        keys=outer.keys + inner.keys,
        sizes=outer.sizes + inner.sizes,
        labels=tuple(f"{a}{sep}{b}" for a in o_labels for b in i_labels),
    )


def write_json_atomic(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` as JSON to ``path`` via a temporary file and an atomic rename."""
    atomic_write(path, json.dumps(document, indent=2, default=_json_default))


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def flat_store_settings(
    path: Path, frame_shape: tuple[int, ...], dtype: np.dtype
) -> AcquisitionSettings:
    """Return settings for a crash-safe OME-Zarr store of frames in arrival order.

    One unbounded ``t`` axis, zarr-python (each appended frame is on disk at once). Used
    for frames that have no place in a run's layout and for raw frames rescued when the
    denoise process died.

    Parameters
    ----------
    path : pathlib.Path
        The store (``*.ome.zarr``); must not exist.
    frame_shape : tuple of int
        Frame shape; the last two entries are height and width.
    dtype : numpy dtype
        Pixel type.

    Returns
    -------
    ome_writers.AcquisitionSettings
        For :func:`ome_writers.create_stream`.
    """
    height, width = frame_shape[-2:]
    return AcquisitionSettings(
        root_path=str(path),
        dimensions=[
            Dimension(name="t", count=None, type="time"),
            Dimension(name="y", count=height, type="space"),
            Dimension(name="x", count=width, type="space"),
        ],
        dtype=np.dtype(dtype).name,
        format={"name": "ome-zarr", "backend": "zarr-python"},
        overwrite=False,
    )


class _Store:
    """One ome-writers stream plus its cursor (next frame number) and journal.

    ``skip_batch`` caps the frames per ``stream.skip`` call (None: no cap); ``arrays``, if
    given, are the store's arrays with their full shape (unbounded axes 0), completed by
    :func:`_complete_arrays` after the stream closed (acquire-zarr).
    """

    def __init__(
        self,
        stream: OMEStream,
        path: Path,
        journal: IO[str],
        *,
        tiff: bool,
        skip_batch: int | None = None,
        arrays: _ArraySpec | None = None,
    ) -> None:
        self.stream = stream
        self.path = path
        self.journal = journal
        self.tiff = tiff
        self.skip_batch = skip_batch
        self.arrays = arrays
        self.cursor = 0
        self.closed = False

    def put(self, pos: int, frame: np.ndarray, metadata: dict[str, Any]) -> None:
        if pos < self.cursor:
            raise ValueError(f"frame number {pos} was already written or skipped")
        self.pad_to(pos)
        stored = _tiff_plane_metadata(metadata) if self.tiff else metadata
        try:
            self.stream.append(frame, frame_metadata=stored)
        finally:
            # ome-writers advances its frame iterator before writing, so the position is
            # used up even if the write raised; keep the cursor in step with it.
            self.cursor = pos + 1
        # Journal after the append returned: a line means the frame was handed over.
        self.journal.write(json.dumps({"pos": pos, **metadata}, default=_json_default) + "\n")

    def pad_to(self, n: int) -> None:
        while n > self.cursor:
            step = n - self.cursor
            if self.skip_batch is not None:
                step = min(step, self.skip_batch)
            self.stream.skip(frames=step)
            self.cursor += step

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.stream.close()
                if self.arrays is not None:
                    _complete_arrays(self.arrays)
                if not self.tiff:
                    follow_umask(self.path)
            finally:
                self.journal.close()


@dataclass(frozen=True)
class _ArraySpec:
    """The arrays of one OME-Zarr store and the shape each must have after close."""

    paths: tuple[Path, ...]
    shape: tuple[int, ...]  # unbounded axes 0
    dtype: str
    dimension_names: tuple[str, ...]


def _complete_arrays(spec: _ArraySpec) -> None:
    """Give an acquire-zarr store's arrays the shape the other backends give them.

    acquire-zarr records as an array's shape only the extent of the frames it was handed
    and creates no array for a position that got no frame, so a run that stopped early
    would leave a store shorter than its bounded layout, or with datasets missing. Chunks
    never written read as the fill value (0), so growing the shape in ``zarr.json`` (or
    writing that file for a missing array, from a sibling's or afresh) is all it takes.
    An unbounded axis keeps the extent written.
    """
    existing = [p / "zarr.json" for p in spec.paths if (p / "zarr.json").is_file()]
    template = json.loads(existing[0].read_text(encoding="utf-8")) if existing else None
    for array in spec.paths:
        meta_path = array / "zarr.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            recorded = [int(n) for n in meta["shape"]]
        elif template is not None:
            meta = dict(template)
            recorded = [0] * len(spec.shape)
        else:
            import zarr

            zarr.create_array(
                store=str(array),
                shape=spec.shape,
                chunks=tuple(1 for _ in spec.shape[:-2]) + spec.shape[-2:],
                dtype=spec.dtype,
                fill_value=0,
                dimension_names=spec.dimension_names,
                compressors=None,
                zarr_format=3,
            )
            continue
        grown = [max(r, n) for r, n in zip(recorded, spec.shape, strict=True)]
        if grown != meta.get("shape"):
            meta["shape"] = grown
            array.mkdir(parents=True, exist_ok=True)
            write_json_atomic(meta_path, meta)


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


def check_store_options(
    layout: FrameLayout,
    *,
    file_format: FileFormat = "ome-zarr",
    denoised_dtype: DenoisedDtype = "float32",
    zarr_backend: ZarrBackend = "zarr-python",
    risk: bool = False,
) -> None:
    """Raise ``ValueError`` if :class:`RunWriter` could not store ``layout`` so.

    Called before an acquisition starts, so that no sample is exposed for a run whose
    stores cannot be written.
    """
    if file_format not in get_args(FileFormat):
        raise ValueError(f"file_format must be one of {get_args(FileFormat)}; got {file_format!r}.")
    if denoised_dtype not in get_args(DenoisedDtype):
        raise ValueError(
            f"denoised_dtype must be one of {get_args(DenoisedDtype)}; got {denoised_dtype!r}."
        )
    if zarr_backend not in get_args(ZarrBackend):
        raise ValueError(
            f"zarr_backend must be one of {get_args(ZarrBackend)}; got {zarr_backend!r}."
        )
    if file_format == "ome-tiff":
        _check_tiff(layout, denoised_dtype)
        if risk:
            raise ValueError(
                "the risk map is written as OME-Zarr only; use file_format='ome-zarr' "
                "(profile: output.format = 'ome-zarr') or turn the risk map off"
            )


class RunWriter:
    """Owns the stores of one run folder.

    Threading contract: :meth:`open`, :meth:`append_raw`, :meth:`append_unplaced` and
    :meth:`close_raw` are called by the raw-writer thread only; :meth:`append_denoised`,
    :meth:`append_risk`, :meth:`read_raw` and :meth:`close_denoised` by the denoise
    worker only. The streams are independent objects, so the threads never share one.

    Parameters
    ----------
    run_dir : pathlib.Path
        The run folder (created if missing).
    layout : FrameLayout
        Store layout (identical for raw and denoised).
    file_format : {"ome-zarr", "ome-tiff"}
        Store format. OME-TIFF needs a layout whose dimensions are only t, c, z (and
        positions) and an integer denoised dtype.
    denoised_dtype : {"float32", "uint16"}
        Denoised store dtype; uint16 rounds and clips to 0..65535.
    zarr_backend : {"zarr-python", "tensorstore", "acquire-zarr"}
        ome-writers backend for OME-Zarr, a trade-off between the cost on the calling
        thread and durability (details in the module docstring):

        - ``"zarr-python"``: synchronous, atomic chunk writes; every appended frame is on
          disk, survives a kill and can be read back at once (:meth:`read_raw`).
        - ``"tensorstore"``: writes in the background; frames in flight are lost on a
          kill and frames are readable only after :meth:`close_raw`.
        - ``"acquire-zarr"``: the C++ streaming writer; an append hands the frame over
          and its own threads write it without the GIL, so the acquisition's Python
          threads wait least for the GIL (as with tensorstore; its threads still need CPU
          time). Tensorstore's limits apply (readable only after :meth:`close_raw`,
          frames in flight lost on a kill), and a killed run may leave one torn shard per
          writer thread and stores without the run-level attributes; skipped frames are
          passed to the writer as zeros on the calling thread.
    risk : bool
        Also write the hallucination-risk map (float32, 0..1, same layout) as a third
        store, ``risk.ome.zarr``; needs ``file_format="ome-zarr"``.

    Raises
    ------
    ValueError
        For an unknown option or a layout the chosen format cannot store.
    """

    def __init__(
        self,
        run_dir: Path,
        layout: FrameLayout,
        *,
        file_format: FileFormat = "ome-zarr",
        denoised_dtype: DenoisedDtype = "float32",
        zarr_backend: ZarrBackend = "zarr-python",
        risk: bool = False,
    ) -> None:
        check_store_options(
            layout,
            file_format=file_format,
            denoised_dtype=denoised_dtype,
            zarr_backend=zarr_backend,
            risk=risk,
        )
        self.run_dir = Path(run_dir)
        self.layout = layout
        self.file_format: FileFormat = file_format
        self.denoised_dtype: DenoisedDtype = denoised_dtype
        self.zarr_backend: ZarrBackend = zarr_backend
        suffix = _SUFFIX[file_format]
        self.raw_path = self.run_dir / f"{RAW_NAME}{suffix}"
        self.denoised_path = self.run_dir / f"{DENOISED_NAME}{suffix}"
        self.unplaced_path = self.run_dir / f"{UNPLACED_NAME}.ome.zarr"
        self.risk_path = self.run_dir / f"{RISK_NAME}.ome.zarr" if risk else None
        self.frame_shape: tuple[int, int] | None = None
        self.raw_dtype: np.dtype | None = None
        self._raw: _Store | None = None
        self._den: _Store | None = None
        self._risk: _Store | None = None
        self._unplaced: _Store | None = None
        self._unplaced_count = 0
        self._settings: AcquisitionSettings | None = None
        self._opened = threading.Event()
        # Notified on every raw append and on raw close, for readers waiting to re-read.
        self._raw_progress = threading.Condition()
        self._raw_closed = False
        self._storage_names: list[str] = []
        self._raw_arrays: dict[int, Any] = {}
        self._raw_view: Any = None
        self._global: dict[str, Any] = {}

    # -- opening ------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether both stores exist."""
        return self._opened.is_set()

    def wait_open(self, timeout: float | None = None) -> bool:
        """Block until :meth:`open` ran; return whether it did."""
        return self._opened.wait(timeout)

    def open(
        self,
        frame_shape: tuple[int, int],
        raw_dtype: np.dtype | str,
        *,
        pixel_size_um: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Create the stores (and their journals) for frames of ``frame_shape``.

        Parameters
        ----------
        frame_shape : tuple of int
            ``(height, width)`` of every frame.
        raw_dtype : numpy dtype
            Camera dtype of the raw store.
        pixel_size_um : float, optional
            Pixel size recorded as the y/x scale.
        metadata : mapping, optional
            JSON-serializable run-level metadata stored in both stores under
            ``attributes["sn2n_live"]`` (OME-Zarr) or a MapAnnotation (OME-TIFF).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        height, width = (int(s) for s in frame_shape)
        self.frame_shape = (height, width)
        self.raw_dtype = np.dtype(raw_dtype)
        channel_coords = self.raw_dtype.kind in "iu" and self.denoised_dtype == "uint16"
        dims = _ome_dimensions(self.layout, (height, width), pixel_size_um, channel_coords)
        storage = _storage_order(self.layout)
        fmt: dict[str, Any] = {"name": self.file_format}
        if self.file_format == "ome-zarr":
            fmt["backend"] = self.zarr_backend
        self._global = {"layout": self.layout.to_dict(), **(metadata or {})}

        def settings(path: Path, dtype: str) -> AcquisitionSettings:
            return AcquisitionSettings(
                root_path=str(path),
                dimensions=dims,
                dtype=dtype,
                format=fmt,
                storage_order=storage,
                overwrite=False,
            )

        raw_settings = settings(self.raw_path, self.raw_dtype.name)
        den_settings = settings(self.denoised_path, self.denoised_dtype)
        # Multi-position OME-TIFF becomes a folder of per-position files.
        self.raw_path = Path(raw_settings.output_path)
        self.denoised_path = Path(den_settings.output_path)
        self._settings = raw_settings
        self._storage_names = [d.name for d in raw_settings.storage_index_dimensions]
        self._raw = self._create(raw_settings, self.raw_path, RAW_NAME)
        try:
            self._den = self._create(den_settings, self.denoised_path, DENOISED_NAME)
            if self.risk_path is not None:
                risk_settings = settings(self.risk_path, "float32")
                self._risk = self._create(risk_settings, self.risk_path, RISK_NAME)
        except BaseException:
            self._raw.close()
            if self._den is not None:
                self._den.close()
            raise
        self._opened.set()

    def _create(self, settings: AcquisitionSettings, path: Path, role: str) -> _Store:
        stream = create_stream(settings)
        try:
            stream.set_global_metadata("sn2n_live", {"role": role, **self._global})
            journal = open(  # noqa: SIM115 - closed by _Store.close
                self.run_dir / f"{role}.frames.jsonl", "w", encoding="utf-8", buffering=1
            )
        except BaseException:
            stream.close()
            raise
        skip_batch = None
        arrays = None
        if getattr(settings.format, "backend", None) == "acquire-zarr":
            frame_dims = settings.array_storage_dimensions
            frame_bytes = np.dtype(settings.dtype).itemsize * math.prod(
                d.count or 1 for d in frame_dims[-2:]
            )
            skip_batch = max(1, _SKIP_BATCH_BYTES // frame_bytes)
            n_positions = len(settings.positions) if settings.positions else 1
            arrays = _ArraySpec(
                paths=tuple(self._array_path(path, i) for i in range(n_positions)),
                shape=tuple(d.count or 0 for d in frame_dims),
                dtype=settings.dtype,
                dimension_names=tuple(d.name for d in frame_dims),
            )
        return _Store(
            stream,
            path,
            journal,
            tiff=settings.format.name == "ome-tiff",
            skip_batch=skip_batch,
            arrays=arrays,
        )

    # -- raw (raw-writer thread) -----------------------------------------------------------

    @property
    def raw_cursor(self) -> int:
        """Frame number the next raw frame would take (frames before it are final)."""
        return 0 if self._raw is None else self._raw.cursor

    def append_raw(self, pos: int, frame: np.ndarray, metadata: dict[str, Any]) -> None:
        """Write raw frame number ``pos`` (skipping any gap so both stores stay aligned)."""
        if self._raw is None:
            raise RuntimeError("RunWriter.open() must be called before appending frames.")
        self._raw.put(pos, frame, metadata)
        with self._raw_progress:
            self._raw_progress.notify_all()

    def append_unplaced(self, frame: np.ndarray, metadata: dict[str, Any]) -> None:
        """Keep a raw frame the layout has no place for, in ``unplaced.ome.zarr``."""
        if self._unplaced is None:
            settings = flat_store_settings(self.unplaced_path, frame.shape, frame.dtype)
            self._unplaced = self._create(settings, self.unplaced_path, UNPLACED_NAME)
        self._unplaced.put(self._unplaced_count, frame, metadata)
        self._unplaced_count += 1

    def close_raw(self) -> None:
        """Flush and close the raw store (and the unplaced store); wake waiting readers."""
        try:
            for store in (self._raw, self._unplaced):
                if store is not None:
                    store.close()
        finally:
            with self._raw_progress:
                self._raw_closed = True
                self._raw_progress.notify_all()

    # -- re-reading raw frames (denoise worker) --------------------------------------------

    def raw_readable(self, pos: int) -> bool:
        """Whether raw frame ``pos`` can be read back now.

        With the synchronous ``zarr-python`` backend a frame is readable as soon as it was
        appended; with ``tensorstore``, ``acquire-zarr`` or OME-TIFF only after
        :meth:`close_raw` (they write in the background: before close a frame may be
        missing from disk, read as zeros, or lie outside the array's recorded shape).
        """
        if self._raw_closed:
            return True
        synchronous = self.file_format == "ome-zarr" and self.zarr_backend in _SYNCHRONOUS_BACKENDS
        return synchronous and pos < self.raw_cursor

    def wait_raw_readable(self, pos: int, timeout: float) -> bool:
        """Block up to ``timeout`` s until :meth:`raw_readable` is true for ``pos``."""
        with self._raw_progress:
            return self._raw_progress.wait_for(lambda: self.raw_readable(pos), timeout)

    def read_raw(self, pos: int) -> np.ndarray:
        """Read raw frame number ``pos`` back from the raw store.

        Raises
        ------
        RuntimeError
            If the frame is not readable yet (see :meth:`raw_readable`).
        """
        if not self.raw_readable(pos):
            raise RuntimeError(f"raw frame {pos} is not on disk yet")
        assert self._settings is not None
        acq = self.layout.dim_index(pos)
        if self.file_format == "ome-tiff":
            if self._raw_view is None:
                assert self._raw is not None
                self._raw_view = self._raw.stream.view(dynamic_shape=False)
            return np.asarray(self._raw_view[acq])
        pos_idx, storage_idx = self._storage_index(acq)
        array = self._raw_arrays.get(pos_idx)
        if array is None or any(i >= s for i, s in zip(storage_idx, array.shape, strict=False)):
            import zarr

            array = zarr.open_array(self._array_path(self.raw_path, pos_idx), mode="r")
            self._raw_arrays[pos_idx] = array
        return np.asarray(array[storage_idx])

    def _storage_index(self, acq: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        pos_idx = 0
        by_name = {}
        for dim, i in zip(self.layout.dims, acq, strict=True):
            if dim.type == "position":
                pos_idx = i
            else:
                by_name[dim.name] = i
        return pos_idx, tuple(by_name[n] for n in self._storage_names)

    def _array_path(self, root: Path, pos_idx: int) -> Path:
        if any(d.type == "position" for d in self.layout.dims):
            return root / str(pos_idx) / "0"
        return root / "0"

    # -- denoised (denoise worker) ---------------------------------------------------------

    @property
    def denoised_cursor(self) -> int:
        """Frame number the next denoised frame would take."""
        return 0 if self._den is None else self._den.cursor

    def append_denoised(self, pos: int, frame: np.ndarray, metadata: dict[str, Any]) -> None:
        """Write denoised frame number ``pos`` in the store dtype (uint16: round + clip)."""
        if self._den is None:
            raise RuntimeError("RunWriter.open() must be called before appending frames.")
        if self.denoised_dtype == "uint16":
            out = np.clip(np.rint(frame), 0, 65535).astype(np.uint16)
        else:
            out = np.asarray(frame, dtype=np.float32)
        self._den.put(pos, out, metadata)

    def append_risk(self, pos: int, risk: np.ndarray, metadata: dict[str, Any]) -> None:
        """Write the risk map of frame number ``pos`` (float32, 0..1)."""
        if self._risk is None:
            raise RuntimeError("RunWriter(risk=True).open() must be called before appending.")
        self._risk.put(pos, np.asarray(risk, dtype=np.float32), metadata)

    def close_denoised(self, pad_to: int | None = None) -> None:
        """Skip up to frame ``pad_to`` (so all stores have the same extent) and close.

        Every store is closed even when another fails; the first failure is raised.
        """
        failure: BaseException | None = None
        for store in (self._den, self._risk):
            if store is None:
                continue
            try:
                try:
                    if pad_to is not None and not store.closed:
                        store.pad_to(pad_to)
                finally:
                    store.close()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def describe(self) -> dict[str, Any]:
        """Paths and formats of the stores, for run.json."""
        out: dict[str, Any] = {
            "format": self.file_format,
            "zarr_backend": self.zarr_backend if self.file_format == "ome-zarr" else None,
            "raw": {
                "path": self.raw_path.name,  # relative to the run folder
                "dtype": None if self.raw_dtype is None else self.raw_dtype.name,
                "journal": f"{RAW_NAME}.frames.jsonl",
            },
            "denoised": {
                "path": self.denoised_path.name,
                "dtype": self.denoised_dtype,
                "journal": f"{DENOISED_NAME}.frames.jsonl",
            },
            "frame_shape": None if self.frame_shape is None else list(self.frame_shape),
            "storage_order": self._storage_names or None,
        }
        if self.risk_path is not None:
            out["risk"] = {
                "path": self.risk_path.name,
                "dtype": "float32",
                "journal": f"{RISK_NAME}.frames.jsonl",
            }
        if self._unplaced_count:
            out["unplaced"] = {"path": self.unplaced_path.name, "frames": self._unplaced_count}
        return out


def _tiff_plane_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Make per-frame metadata fit OME-XML: plane keys stay numbers, the rest strings.

    ome-writers stores non-plane keys of OME-TIFF frames in a MapAnnotation, whose values
    must be strings; nested values are JSON-encoded.
    """
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if key in _TIFF_PLANE_KEYS or isinstance(value, str):
            out[key] = value
        else:
            out[key] = json.dumps(value, default=_json_default)
    return out


def _check_tiff(layout: FrameLayout, denoised_dtype: str) -> None:
    bad = [d.name for d in layout.dims if d.type != "position" and d.name not in TIFF_DIMS]
    if bad:
        raise ValueError(
            f"OME-TIFF cannot store the dimension(s) {bad}: ome-writers' TIFF backend only "
            "knows t, c and z (plus positions). Use file_format='ome-zarr' for SIM "
            "(angle/phase) or other custom axes."
        )
    if denoised_dtype not in TIFF_DENOISED_DTYPES:
        raise ValueError(
            f"OME-TIFF cannot store denoised_dtype={denoised_dtype!r} with ome-writers (its "
            "OME-XML pixel type rejects 'float32'). Pass denoised_dtype='uint16' (rounded and "
            "clipped) or use file_format='ome-zarr'."
        )


def _ome_dimensions(
    layout: FrameLayout,
    frame_shape: tuple[int, int],
    pixel_size_um: float | None,
    channel_coords: bool,
) -> list[Dimension]:
    dims: list[Dimension] = []
    for d in layout.dims:
        if d.type == "position":
            count = d.count or 1
            coords: list[Any] = [Position(name=str(i)) for i in range(count)]
            dims.append(Dimension(name=d.name, type="position", coords=coords))
        elif d.type == "channel" and channel_coords and d.labels is not None:
            # Channel coords make ome-writers write an OMERO window from np.iinfo(dtype),
            # which fails for float stores, so they are only used when both are integer.
            dims.append(Dimension(name=d.name, count=d.count, type="channel", coords=d.labels))
        else:
            dims.append(Dimension(name=d.name, count=d.count, type=d.type))
    px: dict[str, Any] = {}
    if pixel_size_um:
        px = {"unit": "micrometer", "scale": float(pixel_size_um)}
    dims.append(Dimension(name="y", count=frame_shape[0], type="space", **px))
    dims.append(Dimension(name="x", count=frame_shape[1], type="space", **px))
    return dims


def _storage_order(layout: FrameLayout) -> list[str]:
    index_dims = [d for d in layout.dims if d.type != "position"]
    ordered = sorted(index_dims, key=lambda d: _STORAGE_RANK[d.type])
    positions = [d.name for d in layout.dims if d.type == "position"]
    return [*positions, *(d.name for d in ordered), "y", "x"]
