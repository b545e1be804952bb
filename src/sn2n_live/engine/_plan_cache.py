"""On-disk cache of serialized TensorRT plans, keyed by everything a plan depends on.

A TensorRT plan is only valid for the network and weights, the GPU model, the TensorRT
version, the optimization-profile shapes and the precision it was built with. Each plan
file therefore carries a header with those components and their key::

    b"SN2NTRT1" | header length (uint32, little endian) | header JSON (utf-8) | plan bytes

and :func:`read_plan` returns the plan only when the stored key equals the key of the
engine being built, the header is self-consistent and the payload hashes to the stored
digest. A foreign, stale, truncated or edited file is rejected (and then rebuilt by the
TensorRT engine), never deserialized. None of this needs TensorRT.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sn2n_live.engine._base import InputShapes, Precision, check_precision
from sn2n_live.engine._files import atomic_write, sha256_bytes

__all__ = [
    "CACHE_ENV",
    "CachedPlan",
    "PlanMetadata",
    "StalePlanError",
    "list_cached_plans",
    "plan_cache_dir",
    "plan_cache_key",
    "plan_path",
    "read_plan",
    "write_plan",
]

CACHE_ENV = "SN2N_LIVE_CACHE"
PLAN_SUFFIX = ".plan"
_MAGIC = b"SN2NTRT1"
_FORMAT = "sn2n-live-tensorrt-plan"
_FORMAT_VERSION = 1
_MAX_HEADER = 1 << 20


class StalePlanError(ValueError):
    """A cached plan file cannot be used for the requested engine (the message says why)."""


def plan_cache_dir() -> Path:
    """Folder for TensorRT plans and timing caches.

    Returns
    -------
    pathlib.Path
        ``$SN2N_LIVE_CACHE`` if set, else ``~/.cache/sn2n-live`` (not created here).
    """
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sn2n-live"


def plan_cache_key(
    model_sha256: str,
    gpu_name: str,
    trt_version: str,
    shapes: InputShapes,
    precision: Precision,
    *,
    graph_sha256: str | None = None,
) -> str:
    """Key of a TensorRT plan: a digest of every component the plan depends on.

    Parameters
    ----------
    model_sha256 : str
        ``ModelPackage.sha256`` of the weights.
    gpu_name : str
        GPU model (``torch.cuda.get_device_name``); plans are GPU-specific.
    trt_version : str
        TensorRT version (``tensorrt.__version__``); plans are version-specific.
    shapes : InputShapes
        Optimization-profile shapes.
    precision : {"fp32", "fp16", "bf16"}
        Builder precision.
    graph_sha256 : str, optional
        Digest of the ONNX graph TensorRT parsed; covers architecture settings that are not
        in the weights (activation slope) and exporter changes.

    Returns
    -------
    str
        32 hex characters; any change of any component changes it.
    """
    return PlanMetadata(model_sha256, gpu_name, trt_version, shapes, precision, graph_sha256).key


@dataclass(frozen=True)
class PlanMetadata:
    """The components a plan was built for (see :func:`plan_cache_key`)."""

    model_sha256: str
    gpu_name: str
    trt_version: str
    shapes: InputShapes
    precision: Precision
    graph_sha256: str | None = None

    def __post_init__(self) -> None:
        check_precision(self.precision)
        for name in ("model_sha256", "gpu_name", "trt_version"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"PlanMetadata.{name} must be a non-empty str.")
        if not isinstance(self.shapes, InputShapes):
            raise ValueError(f"PlanMetadata.shapes must be InputShapes; got {self.shapes!r}.")

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict of the components."""
        return {
            "model_sha256": self.model_sha256,
            "gpu_name": self.gpu_name,
            "trt_version": self.trt_version,
            "shapes": self.shapes.as_lists(),
            "precision": self.precision,
            "graph_sha256": self.graph_sha256,
        }

    @classmethod
    def from_json(cls, data: Any) -> PlanMetadata:
        """Inverse of :meth:`to_json`; raises ValueError for malformed data."""
        try:
            shapes = InputShapes(*(tuple(s) for s in data["shapes"]))
            return cls(
                model_sha256=data["model_sha256"],
                gpu_name=data["gpu_name"],
                trt_version=data["trt_version"],
                shapes=shapes,
                precision=data["precision"],
                graph_sha256=data.get("graph_sha256"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed plan metadata ({exc!r})") from exc

    @property
    def key(self) -> str:
        """The cache key (:func:`plan_cache_key`)."""
        canonical = json.dumps(
            {"format_version": _FORMAT_VERSION, **self.to_json()}, sort_keys=True
        )
        return sha256_bytes(canonical.encode())[:32]


@dataclass(frozen=True)
class CachedPlan:
    """One file in the plan cache, as :func:`list_cached_plans` reports it.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    size_bytes : int
        File size.
    metadata : PlanMetadata or None
        What the plan was built for; None when the header is unreadable.
    created : str or None
        ISO timestamp of the build.
    problem : str or None
        Why the file cannot be used (corrupt, renamed, truncated); None when it is intact.
    """

    path: Path
    size_bytes: int
    metadata: PlanMetadata | None
    created: str | None
    problem: str | None


def plan_path(key: str, cache_dir: Path | None = None) -> Path:
    """Where the plan with ``key`` lives: ``<cache_dir>/<key>.plan``."""
    return (cache_dir if cache_dir is not None else plan_cache_dir()) / f"{key}{PLAN_SUFFIX}"


def write_plan(path: Path, plan: bytes, metadata: PlanMetadata) -> Path:
    """Write a plan with its key header, atomically.

    Parameters
    ----------
    path : pathlib.Path
        Destination (normally :func:`plan_path` of ``metadata.key``).
    plan : bytes
        The serialized TensorRT engine.
    metadata : PlanMetadata
        What it was built for.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    header = json.dumps(
        {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "key": metadata.key,
            "metadata": metadata.to_json(),
            "payload_size": len(plan),
            "payload_sha256": sha256_bytes(plan),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        },
        sort_keys=True,
    ).encode()
    atomic_write(path, _MAGIC + struct.pack("<I", len(header)) + header + bytes(plan))
    return path


def _read_header(raw: bytes) -> tuple[dict[str, Any], int]:
    """Parse the header of a plan file; returns (header, payload offset)."""
    if not raw.startswith(_MAGIC) or len(raw) < len(_MAGIC) + 4:
        raise StalePlanError("not an sn2n-live plan file (bad magic; a bare or foreign plan)")
    (length,) = struct.unpack_from("<I", raw, len(_MAGIC))
    start = len(_MAGIC) + 4
    if length > _MAX_HEADER or start + length > len(raw):
        raise StalePlanError("truncated or corrupt header")
    try:
        header = json.loads(raw[start : start + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StalePlanError(f"unreadable header ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise StalePlanError("header is not an sn2n-live plan header")
    if header.get("format_version") != _FORMAT_VERSION:
        raise StalePlanError(
            f"plan format_version {header.get('format_version')!r} != {_FORMAT_VERSION}"
        )
    return header, start + length


def _check_header(header: dict[str, Any]) -> PlanMetadata:
    try:
        stored = PlanMetadata.from_json(header.get("metadata"))
    except ValueError as exc:
        raise StalePlanError(str(exc)) from exc
    if stored.key != header.get("key"):
        raise StalePlanError("the header's key does not match its components (edited file)")
    return stored


def read_plan(path: Path, expected: PlanMetadata) -> bytes:
    """Return the plan stored at ``path`` if it was built for exactly ``expected``.

    Parameters
    ----------
    path : pathlib.Path
        Plan file.
    expected : PlanMetadata
        Components of the engine being built.

    Returns
    -------
    bytes
        The serialized TensorRT engine.

    Raises
    ------
    FileNotFoundError
        If there is no file.
    StalePlanError
        If the file is foreign, truncated, edited, or was built for other components (the
        message names which ones differ).
    """
    raw = Path(path).read_bytes()
    header, offset = _read_header(raw)
    stored = _check_header(header)
    if stored.key != expected.key:
        old, new = stored.to_json(), expected.to_json()
        changed = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in new if old[k] != new[k])
        raise StalePlanError(f"built for other components ({changed})")
    payload = raw[offset:]
    if len(payload) != header.get("payload_size") or sha256_bytes(payload) != header.get(
        "payload_sha256"
    ):
        raise StalePlanError("plan bytes do not match the stored size/digest (truncated)")
    return payload


def list_cached_plans(cache_dir: Path | None = None) -> list[CachedPlan]:
    """List the plan files in the cache, newest first.

    Parameters
    ----------
    cache_dir : pathlib.Path, optional
        Folder to list; default :func:`plan_cache_dir`.

    Returns
    -------
    list of CachedPlan
        One entry per ``*.plan`` file, including unusable ones (with ``problem`` set).
    """
    folder = cache_dir if cache_dir is not None else plan_cache_dir()
    if not folder.is_dir():
        return []
    entries = []
    for path in folder.glob(f"*{PLAN_SUFFIX}"):
        size = path.stat().st_size
        with path.open("rb") as handle:  # the header only: plans can be large
            head = handle.read(len(_MAGIC) + 4)
            if len(head) == len(_MAGIC) + 4 and head.startswith(_MAGIC):
                head += handle.read(
                    min(struct.unpack_from("<I", head, len(_MAGIC))[0], _MAX_HEADER)
                )
        metadata, created, problem = None, None, None
        try:
            header, offset = _read_header(head)
            metadata = _check_header(header)
            created = header.get("created")
            if size - offset != header.get("payload_size"):
                problem = "plan bytes are truncated"
            elif path.stem != metadata.key:
                problem = f"file name does not match its key {metadata.key} (renamed file)"
        except StalePlanError as exc:
            problem = str(exc)
        entries.append(CachedPlan(path, size, metadata, created, problem))
    return sorted(entries, key=lambda e: (e.created or "", e.path.name), reverse=True)
