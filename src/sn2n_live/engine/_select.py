"""Which backends can run here, and picking the best one for a package."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import onnxruntime as ort
import torch

from sn2n_live.config import BackendName, EngineName, choices
from sn2n_live.engine._base import (
    BackendStatus,
    BackendUnavailable,
    Engine,
    InputShapes,
    Precision,
    check_precision,
)
from sn2n_live.engine._onnxruntime import (
    OnnxRuntimeEngine,
    onnxruntime_cuda_unavailable_reason,
)
from sn2n_live.engine._tensorrt import DEFAULT_BATCH, TensorRTEngine, tensorrt_status
from sn2n_live.engine._torch import TorchEngine, cuda_unavailable_reason
from sn2n_live.method._denoiser import Denoiser
from sn2n_live.method._package import ModelPackage

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "BackendChoice",
    "BackendName",
    "available_backends",
    "build_denoiser",
    "choose_backend",
    "select_engine",
]

log = logging.getLogger("sn2n_live.engine")

BACKENDS: tuple[str, ...] = choices(BackendName)
# "auto" tries these in order. onnxruntime-cuda is never better than torch-cuda on the same
# GPU, so it is only used when asked for.
AUTO_ORDER: tuple[str, ...] = ("tensorrt", "torch-cuda", "onnxruntime-cpu", "torch-cpu")

# Precisions each backend can run, default first.
_PRECISIONS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("fp16", "bf16", "fp32"),
    "torch-cuda": ("fp16", "bf16", "fp32"),
    "onnxruntime-cuda": ("fp32",),
    "onnxruntime-cpu": ("fp32",),
    "torch-cpu": ("fp32", "bf16"),
}


def _cuda_devices() -> tuple[str, ...]:
    return tuple(
        f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
    )


def _torch_cuda_status() -> BackendStatus:
    reason = cuda_unavailable_reason()
    if reason:
        return BackendStatus("torch-cuda", False, reason)
    return BackendStatus("torch-cuda", True, f"torch {torch.__version__}", _cuda_devices())


def _onnxruntime_cuda_status() -> BackendStatus:
    reason = onnxruntime_cuda_unavailable_reason()
    if reason:
        return BackendStatus("onnxruntime-cuda", False, reason)
    return BackendStatus(
        "onnxruntime-cuda", True, f"onnxruntime {ort.__version__}", _cuda_devices()
    )


def _cpu_threads() -> str:
    return f"{torch.get_num_threads()} threads of {os.cpu_count()} CPUs"


def _onnxruntime_cpu_status() -> BackendStatus:
    if "CPUExecutionProvider" not in ort.get_available_providers():
        return BackendStatus(
            "onnxruntime-cpu", False, f"onnxruntime {ort.__version__} has no CPU provider"
        )
    return BackendStatus(
        "onnxruntime-cpu", True, f"onnxruntime {ort.__version__}, {_cpu_threads()}", ("cpu",)
    )


def _torch_cpu_status() -> BackendStatus:
    return BackendStatus(
        "torch-cpu", True, f"torch {torch.__version__}, {_cpu_threads()}", ("cpu",)
    )


_STATUS: dict[str, Callable[[], BackendStatus]] = {
    "tensorrt": tensorrt_status,
    "torch-cuda": _torch_cuda_status,
    "onnxruntime-cuda": _onnxruntime_cuda_status,
    "onnxruntime-cpu": _onnxruntime_cpu_status,
    "torch-cpu": _torch_cpu_status,
}


def available_backends() -> list[BackendStatus]:
    """Report every backend, best first, with why it can or cannot run here.

    Returns
    -------
    list of BackendStatus
        One entry per name in :data:`BACKENDS`.
    """
    return [_STATUS[name]() for name in BACKENDS]


def _construct(
    name: str, package: ModelPackage, precision: Precision, tile_shapes: InputShapes
) -> Engine:
    if name == "tensorrt":
        return TensorRTEngine(package, precision=precision, input_shapes=tile_shapes)
    if name == "torch-cuda":
        return TorchEngine(package, "cuda", precision)
    if name == "onnxruntime-cuda":
        return OnnxRuntimeEngine(package, providers=["CUDAExecutionProvider"])
    if name == "onnxruntime-cpu":
        return OnnxRuntimeEngine(package, providers=[])
    return TorchEngine(package, "cpu", precision)


@dataclass(frozen=True)
class BackendChoice:
    """The backend :func:`select_engine` would use here, found without building it.

    Attributes
    ----------
    name : str
        The backend.
    precision : str
        The precision it would run.
    skipped : tuple of str
        Why each better backend was passed over (``"auto"`` only).
    """

    name: str
    precision: str
    skipped: tuple[str, ...] = ()


def _candidates(
    preference: str, precision: Precision | None, skipped: list[str]
) -> Iterator[tuple[str, Precision]]:
    """Yield ``(backend, precision)`` to try in order, appending to ``skipped`` why not others.

    Raises
    ------
    BackendUnavailable, ValueError
        For a forced backend that cannot run or an invalid request (:func:`select_engine`).
    """
    if preference != "auto" and preference not in BACKENDS:
        raise ValueError(
            f"Unknown engine {preference!r}; choose 'auto' or one of {', '.join(BACKENDS)}."
        )
    if precision is not None:
        check_precision(precision)
    if preference != "auto":
        supported = _PRECISIONS[preference]
        if precision is not None and precision not in supported:
            raise ValueError(
                f"{preference} does not support {precision}; it runs {', '.join(supported)}."
            )
        status = _STATUS[preference]()
        if not status.available:
            reason = status.reason
            raise BackendUnavailable(
                reason if reason.startswith(preference) else f"{preference}: {reason}"
            )
        yield preference, precision or supported[0]  # type: ignore[misc]
        return
    for name in AUTO_ORDER:
        supported = _PRECISIONS[name]
        if precision is not None and precision not in supported:
            skipped.append(f"{name}: no {precision} support")
            continue
        status = _STATUS[name]()
        if not status.available:
            reason = status.reason
            skipped.append(reason if reason.startswith(name) else f"{name}: {reason}")
            continue
        yield name, precision or supported[0]  # type: ignore[misc]


def _nothing_runs(skipped: list[str], precision: Precision | None) -> BackendUnavailable:
    # torch-cpu runs fp32 and bf16; only fp16 can fall through every CPU backend.
    return BackendUnavailable(
        "no backend can run this request: "
        + "; ".join(skipped)
        + (". fp16 needs a GPU; use fp32 or bf16 on CPU." if precision == "fp16" else "")
    )


def choose_backend(
    preference: EngineName = "auto", *, precision: Precision | None = None
) -> BackendChoice:
    """Say which backend and precision :func:`select_engine` would use, building nothing.

    For ``sn2n-live profile check``: quick, and it needs no model. Only constructing the
    engine can show a failure of the backend itself (e.g. a TensorRT plan that does not
    build), after which ``"auto"`` would go on to the next backend.

    Parameters
    ----------
    preference : str
        ``"auto"`` or one of :data:`BACKENDS`.
    precision : {"fp32", "fp16", "bf16"}, optional
        Required precision; default each backend's own.

    Raises
    ------
    BackendUnavailable, ValueError
        As :func:`select_engine`.
    """
    skipped: list[str] = []
    first = next(_candidates(preference, precision, skipped), None)
    if first is None:
        raise _nothing_runs(skipped, precision)
    return BackendChoice(*first, skipped=tuple(skipped))


def select_engine(
    package: ModelPackage,
    preference: EngineName = "auto",
    *,
    precision: Precision | None = None,
    tile_shapes: InputShapes | None = None,
) -> Engine:
    """Construct the best available engine for a package, or the one asked for.

    ``"auto"`` tries tensorrt > torch-cuda > onnxruntime-cpu > torch-cpu and uses the first
    that is available and supports ``precision``. One INFO line on the
    ``"sn2n_live.engine"`` logger says what was chosen and why each better backend was not,
    e.g. ``"tensorrt not installed: pip install ...; torch-cuda: no CUDA device (...);
    using onnxruntime-cpu (fp32)"``.

    Parameters
    ----------
    package : ModelPackage
        The trained model.
    preference : str
        ``"auto"`` or one of :data:`BACKENDS`.
    precision : {"fp32", "fp16", "bf16"}, optional
        Required precision; default each backend's own (fp16 on GPUs, fp32 on CPUs).
    tile_shapes : InputShapes, optional
        Shapes a fixed-shape engine (TensorRT) is built for; default
        ``InputShapes.for_tiles(package.patch_size, 64)`` (the Denoiser's defaults).
        Dynamic backends accept any shape and ignore it.

    Returns
    -------
    Engine

    Raises
    ------
    BackendUnavailable
        If the forced backend cannot run here (the message says why and how to fix it).
    ValueError
        For an unknown preference, or a precision the forced backend does not support.
    """
    if tile_shapes is None:
        tile_shapes = InputShapes.for_tiles(package.patch_size, DEFAULT_BATCH)
    tile_shapes.check_multiple(package.unet.multiple)
    skipped: list[str] = []
    for name, chosen in _candidates(preference, precision, skipped):
        if preference != "auto":
            engine = _construct(name, package, chosen, tile_shapes)
            log.info("using %s (%s, requested)", name, chosen)
            return engine
        try:
            engine = _construct(name, package, chosen, tile_shapes)
        except BackendUnavailable as exc:
            skipped.append(str(exc))
            continue
        log.info("%s", "; ".join([*skipped, f"using {name} ({chosen})"]))
        return engine
    raise _nothing_runs(skipped, precision)


def build_denoiser(
    package: ModelPackage,
    *,
    engine: EngineName = "auto",
    tile: int | Literal["package"] | None = "package",
    batch_size: int = DEFAULT_BATCH,
    precision: Precision | None = None,
) -> Denoiser:
    """Build a :class:`~sn2n_live.method.Denoiser` running on the chosen engine.

    The engine is built for the shapes the Denoiser will feed it (``batch_size`` tiles of
    ``tile`` pixels), which fixed-shape engines (TensorRT) need.

    Parameters
    ----------
    package : ModelPackage
        The trained model.
    engine : str
        ``"auto"`` or one of :data:`BACKENDS` (see :func:`select_engine`).
    tile : int, "package" or None
        Tile side; ``"package"`` uses the package's ``inference_tile``, None runs whole
        frames (global normalization only).
    batch_size : int
        Tiles per engine call.
    precision : {"fp32", "fp16", "bf16"}, optional
        Required precision; default the engine's own.
    """
    tile_size = package.inference_tile if tile == "package" else tile
    shapes = InputShapes.for_tiles(tile_size, batch_size) if tile_size else None
    runner = select_engine(package, engine, precision=precision, tile_shapes=shapes)
    return Denoiser(package, tile=tile, batch_size=batch_size, runner=runner)
