"""Reading and writing image stacks: TIFF, OME-TIFF and OME-Zarr.

Stacks have any number of leading axes; frames are always the last two axes (y, x).
Denoised output keeps the input's shape and axis names and carries provenance: in the
OME-XML ``Description`` of an OME-TIFF, or in the group attributes of an OME-Zarr.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from sn2n_live._outputs import check_output, follow_umask, publish, temporary_sibling
from sn2n_live.config import DenoisedDtype, choices

__all__ = [
    "ImageStack",
    "StackWriter",
    "cast_denoised",
    "is_zarr_path",
    "open_stack",
    "read_frames",
    "read_provenance",
]

PROVENANCE_KEY = "sn2n_live"
_TIFF_SUFFIXES = (".tif", ".tiff")


def is_zarr_path(path: str | Path) -> bool:
    """Return True if ``path`` names a Zarr store (``*.zarr``)."""
    return Path(path).suffix.lower() == ".zarr"


def cast_denoised(frames: np.ndarray, dtype: DenoisedDtype) -> np.ndarray:
    """Convert denoised frames to their stored dtype.

    Parameters
    ----------
    frames : numpy.ndarray
        Denoised frames in ADU, any real dtype.
    dtype : {"float32", "uint16"}
        Stored dtype: ``"uint16"`` rounds to the nearest integer and clips to 0..65535;
        ``"float32"`` keeps the values.

    Returns
    -------
    numpy.ndarray
        ``frames`` as ``dtype`` (not copied when they already are float32).

    Raises
    ------
    ValueError
        For any other dtype.
    """
    if dtype == "uint16":
        return np.clip(np.rint(frames), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    if dtype == "float32":
        return np.asarray(frames, dtype=np.float32)
    raise ValueError(f"dtype must be one of {choices(DenoisedDtype)}, got {dtype!r}")


@dataclass(frozen=True)
class ImageStack:
    """A stack of 2-D frames, read lazily where the format allows.

    Attributes
    ----------
    data : array-like
        ``numpy.ndarray`` (TIFF) or ``zarr.Array`` (OME-Zarr) of shape ``(..., H, W)``.
    axes : str
        One lower-case letter per axis, e.g. ``"tcyx"``; unknown axes are ``"q"``.
    path : Path
        Where the stack was read from.
    """

    data: Any
    axes: str
    path: Path

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the whole stack."""
        return tuple(self.data.shape)

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of every frame."""
        return (int(self.data.shape[-2]), int(self.data.shape[-1]))

    @property
    def n_frames(self) -> int:
        """Number of 2-D frames (product of the leading axes)."""
        return int(np.prod(self.data.shape[:-2], dtype=np.int64))

    def iter_chunks(self, frames_per_chunk: int) -> Iterator[np.ndarray]:
        """Yield ``(n, H, W)`` arrays of consecutive frames in C order."""
        if frames_per_chunk < 1:
            raise ValueError(f"frames_per_chunk must be >= 1, got {frames_per_chunk}")
        leading = self.data.shape[:-2]
        for start in range(0, self.n_frames, frames_per_chunk):
            stop = min(start + frames_per_chunk, self.n_frames)
            indices = [np.unravel_index(i, leading) for i in range(start, stop)]
            yield np.stack([np.asarray(self.data[idx]) for idx in indices])


def open_stack(path: str | Path) -> ImageStack:
    """Open a TIFF/OME-TIFF file or an OME-Zarr store as an :class:`ImageStack`.

    Parameters
    ----------
    path : str or Path
        ``*.tif``/``*.tiff``/``*.ome.tif`` file, or ``*.zarr`` directory (OME-Zarr 0.4/0.5
        group, or a bare Zarr array).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the format is not supported or the data has fewer than two dimensions.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No image stack at {path}")
    if is_zarr_path(path):
        data, axes = _open_zarr(path)
    elif path.suffix.lower() in _TIFF_SUFFIXES:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes.lower()
    else:
        raise ValueError(
            f"Unsupported image format for {path}: use a .tif/.tiff (OME-)TIFF file or a "
            ".zarr OME-Zarr store"
        )
    if data.ndim < 2:
        raise ValueError(f"{path} holds a {data.ndim}-D array; frames must be at least 2-D")
    if len(axes) != data.ndim or not axes.endswith("yx"):
        axes = "q" * (data.ndim - 2) + "yx"
    if int(np.prod(data.shape)) == 0:
        raise ValueError(f"{path} is empty (shape {tuple(data.shape)})")
    return ImageStack(data=data, axes=axes, path=path)


def _open_zarr(path: Path) -> tuple[Any, str]:
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node, ""
    attrs = node.attrs.asdict()
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        raise ValueError(
            f"{path} is a Zarr group without OME 'multiscales' metadata; pass the array "
            "inside it (e.g. {path}/0) instead"
        )
    first = multiscales[0]
    array = node[first["datasets"][0]["path"]]
    axes = "".join(
        (ax["name"] if isinstance(ax, dict) else str(ax))[:1].lower()
        for ax in first.get("axes", [])
    )
    return array, axes


def read_frames(paths: str | Path | list[str | Path]) -> np.ndarray:
    """Read every 2-D frame of one or more stacks into one ``(N, H, W)`` array.

    Parameters
    ----------
    paths : str, Path or list of them
        Stacks to read; all frames must have the same ``(H, W)``.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` frames in their stored dtype.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise ValueError("No input stacks given")
    stacks = [open_stack(p) for p in paths]
    shapes = {s.frame_shape for s in stacks}
    if len(shapes) > 1:
        detail = ", ".join(f"{s.path.name}: {s.frame_shape}" for s in stacks)
        raise ValueError(f"All stacks must have the same frame size, got {detail}")
    return np.concatenate(
        [np.asarray(s.data[...]).reshape(-1, *s.frame_shape) for s in stacks], axis=0
    )


_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


class StackWriter:
    """Write a stack frame by frame with the input's shape, axes and provenance.

    ``*.zarr`` outputs are OME-Zarr written with ome-writers; ``*.tif(f)`` outputs are
    OME-TIFF written with tifffile (float32 OME-TIFF is not supported by ome-writers).

    The output is written under a hidden temporary name next to ``path`` and renamed to
    ``path`` by :meth:`close`; :meth:`abort` (or leaving the ``with`` block on an
    exception) removes it, so a failed run leaves nothing that looks like a result.

    Parameters
    ----------
    path : str or Path
        Output path; its suffix picks the format.
    shape : tuple of int
        Full stack shape ``(..., H, W)``.
    axes : str
        One letter per axis (as in :class:`ImageStack`).
    dtype : {"float32", "uint16"}
        Stored dtype; ``uint16`` rounds and clips.
    provenance : Mapping
        JSON-serialisable provenance stored with the data.
    overwrite : bool
        Replace an existing output instead of failing.

    Raises
    ------
    FileExistsError
        If ``path`` exists and not ``overwrite``.
    sn2n_live._outputs.OutputPathError
        If its folder cannot be created or written to.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        shape: tuple[int, ...],
        axes: str,
        dtype: DenoisedDtype = "float32",
        provenance: Mapping[str, Any],
        overwrite: bool = False,
    ) -> None:
        if dtype not in choices(DenoisedDtype):
            raise ValueError(f"dtype must be one of {choices(DenoisedDtype)}, got {dtype!r}")
        self.path = check_output(path, overwrite=overwrite)
        self._overwrite = overwrite
        self.dtype = np.dtype(dtype)
        self._dtype_name: DenoisedDtype = dtype
        self.shape = tuple(shape)
        self.axes = axes
        self._provenance = json.loads(json.dumps(dict(provenance), default=str))
        self._written = 0
        self._zarr_stream = None
        self._tiff_buffer: np.ndarray | None = None
        if not is_zarr_path(self.path) and self.path.suffix.lower() not in _TIFF_SUFFIXES:
            raise ValueError(
                f"Unsupported output format for {self.path}: use .zarr (OME-Zarr) or .tif(f)"
            )
        self._cleanup = contextlib.ExitStack()
        self._partial = self._cleanup.enter_context(temporary_sibling(self.path))
        try:
            if is_zarr_path(self.path):
                self._zarr_stream = self._open_zarr_stream()
            else:
                self._tiff_buffer = np.empty(self.shape, self.dtype)
        except BaseException:
            self._cleanup.close()
            raise

    def _open_zarr_stream(self) -> Any:
        from ome_writers import AcquisitionSettings, Dimension, create_stream

        if len(self.shape) > 6:
            raise ValueError(
                f"OME-Zarr output supports at most 6 axes, the input has {len(self.shape)}; "
                "write an OME-TIFF instead"
            )
        dims = [
            Dimension(
                name=f"{name}{i}" if name == "q" else name,
                count=int(size),
                type=_AXIS_TYPES.get(name, "other"),
                chunk_size=None if name in "yx" else 1,
            )
            for i, (name, size) in enumerate(zip(self.axes, self.shape, strict=True))
        ]
        settings = AcquisitionSettings(
            root_path=str(self._partial),
            dimensions=dims,
            dtype=str(self.dtype),
            format="ome-zarr",
        )
        stream = create_stream(settings)
        stream.set_global_metadata(PROVENANCE_KEY, self._provenance)
        return stream

    def write(self, frames: np.ndarray) -> None:
        """Append ``(n, H, W)`` frames in C order of the leading axes."""
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.shape[1:] != self.shape[-2:]:
            raise ValueError(
                f"Expected frames of shape (n, {self.shape[-2]}, {self.shape[-1]}), "
                f"got {frames.shape}"
            )
        total = int(np.prod(self.shape[:-2], dtype=np.int64))
        if self._written + len(frames) > total:
            raise ValueError(f"Too many frames: the stack holds {total}")
        cast = cast_denoised(frames, self._dtype_name)
        if self._zarr_stream is not None:
            for frame in cast:
                self._zarr_stream.append(frame)
        else:
            assert self._tiff_buffer is not None
            flat = self._tiff_buffer.reshape(-1, *self.shape[-2:])
            flat[self._written : self._written + len(cast)] = cast
        self._written += len(frames)

    def close(self) -> None:
        """Flush the output, close it and move it to :attr:`path`."""
        with self._cleanup:
            if self._zarr_stream is not None:
                self._zarr_stream.close()
                self._zarr_stream = None
                follow_umask(self._partial)
            elif self._tiff_buffer is not None:
                axes = self.axes.upper() if set(self.axes) <= set("tczyx") else None
                metadata: dict[str, Any] = {
                    "Description": json.dumps({PROVENANCE_KEY: self._provenance})
                }
                if axes:
                    metadata["axes"] = axes
                tifffile.imwrite(self._partial, self._tiff_buffer, ome=True, metadata=metadata)
                self._tiff_buffer = None
            else:
                return  # closed or aborted before
            publish(self._partial, self.path, overwrite=self._overwrite)

    def abort(self) -> None:
        """Close the output and remove it: nothing is left at :attr:`path`."""
        stream, self._zarr_stream, self._tiff_buffer = self._zarr_stream, None, None
        with self._cleanup:
            if stream is not None:
                stream.close()

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_provenance(path: str | Path) -> dict[str, Any]:
    """Return the sn2n-live provenance stored with a written stack.

    Parameters
    ----------
    path : str or Path
        An output written by :class:`StackWriter`.
    """
    path = Path(path)
    if is_zarr_path(path):
        attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
        found = _find_key(attrs, PROVENANCE_KEY)
    else:
        with tifffile.TiffFile(path) as tif:
            desc = _ome_description(tif.ome_metadata or "")
        found = json.loads(desc).get(PROVENANCE_KEY) if desc else None
    if found is None:
        raise ValueError(f"{path} carries no sn2n-live provenance")
    return dict(found)


def _find_key(tree: Any, key: str) -> Any:
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def _ome_description(ome_xml: str) -> str | None:
    from xml.etree import ElementTree

    if not ome_xml:
        return None
    root = ElementTree.fromstring(ome_xml)
    for element in root.iter():
        if element.tag.endswith("Description") and element.text:
            return element.text
    return None
