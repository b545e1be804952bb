"""The TensorRT backend (TensorRT 10 Python API): ONNX -> cached plan -> execute_async_v3.

Building a plan takes seconds to minutes, so plans are cached on disk (:mod:`._plan_cache`)
under a key of the weights, ONNX graph, GPU model, TensorRT version, profile shapes and
precision; a cached file built for anything else is rebuilt, never used. Tactic timings are
kept in a per-GPU, per-version timing cache file so rebuilds (new shapes, precision) are
fast. Inference binds torch CUDA tensors as the engine's input and output buffers and runs
on a dedicated CUDA stream ordered after the caller's current stream.

``tensorrt`` is imported lazily: the package works without it. This module could not be
exercised on the machines sn2n-live is developed on (no GPU, no installable TensorRT);
the plan-cache logic it relies on is tested without TensorRT.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from sn2n_live.engine._base import (
    BackendStatus,
    BackendUnavailable,
    InputShapes,
    Precision,
    check_batch,
    check_precision,
)
from sn2n_live.engine._files import atomic_write, sha256_bytes
from sn2n_live.engine._onnx import INPUT_NAME, OUTPUT_NAME, export_onnx_bytes, read_onnx_info
from sn2n_live.engine._plan_cache import (
    PlanMetadata,
    StalePlanError,
    plan_cache_dir,
    plan_path,
    read_plan,
    write_plan,
)
from sn2n_live.engine._torch import cuda_unavailable_reason
from sn2n_live.method._package import ModelPackage

__all__ = [
    "TENSORRT_INSTALL_HINT",
    "TensorRTEngine",
    "build_engine_plan",
    "import_tensorrt",
    "tensorrt_status",
]

log = logging.getLogger("sn2n_live.engine")

TENSORRT_INSTALL_HINT = (
    "pip install 'sn2n-live[tensorrt]' --extra-index-url https://pypi.nvidia.com"
)
DEFAULT_BATCH = 64


def import_tensorrt() -> ModuleType:
    """Import ``tensorrt`` (>= 10) or raise :class:`BackendUnavailable` saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"tensorrt not installed: {TENSORRT_INSTALL_HINT}") from exc
    except Exception as exc:  # a broken install fails in its own ways (missing libnvinfer)
        raise BackendUnavailable(
            f"tensorrt cannot be imported ({type(exc).__name__}: {exc}); reinstall it: "
            f"{TENSORRT_INSTALL_HINT}"
        ) from exc
    version = str(getattr(trt, "__version__", "0"))
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 10:
        raise BackendUnavailable(
            f"tensorrt {version} is too old; sn2n-live needs TensorRT >= 10: "
            f"{TENSORRT_INSTALL_HINT}"
        )
    return trt


def tensorrt_status() -> BackendStatus:
    """Whether the TensorRT backend can run here, and on which GPUs."""
    try:
        trt = import_tensorrt()
    except BackendUnavailable as exc:
        return BackendStatus("tensorrt", False, str(exc))
    reason = cuda_unavailable_reason()
    if reason:
        return BackendStatus("tensorrt", False, f"tensorrt {trt.__version__}: {reason}")
    devices = tuple(
        f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
    )
    return BackendStatus("tensorrt", True, f"tensorrt {trt.__version__}", devices)


def _timing_cache_path(cache_dir: Path, gpu_name: str, trt_version: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower()
    return cache_dir / f"timing-{slug}-trt{trt_version}.cache"


def _build_plan(
    trt: ModuleType,
    onnx_bytes: bytes,
    shapes: InputShapes,
    precision: Precision,
    timing_path: Path,
    workspace_bytes: int | None,
) -> bytes:
    """Parse the ONNX graph and build a serialized engine for ``shapes`` and ``precision``."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the exported ONNX graph: {errors}")
    config = builder.create_builder_config()
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    else:  # fp32 means fp32: TensorRT would otherwise use TF32 tensor cores
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(profile)

    previous = timing_path.read_bytes() if timing_path.is_file() else b""
    cache = config.create_timing_cache(previous)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log.info("timing cache %s unusable; starting an empty one", timing_path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(
            f"TensorRT failed to build a {precision} engine for shapes {shapes.as_lists()} "
            "(see the TensorRT messages above); try smaller shapes or another precision."
        )
    atomic_write(timing_path, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _cuda_device(device: torch.device | str) -> torch.device:
    """Return the CUDA device to run on, with its index; refuse other devices or no CUDA."""
    reason = cuda_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"tensorrt: {reason}")
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"TensorRTEngine runs on a CUDA device; got device={device}.")
    return torch.device(
        "cuda", torch.cuda.current_device() if device.index is None else device.index
    )


def _onnx_and_shapes(
    model: ModelPackage | str | os.PathLike[str], input_shapes: InputShapes | None
) -> tuple[bytes, InputShapes]:
    """Return the ONNX graph to build from and the profile shapes (default: package tiles)."""
    if isinstance(model, ModelPackage):
        onnx_bytes = export_onnx_bytes(model)
        if input_shapes is None:
            input_shapes = InputShapes.for_tiles(model.patch_size, DEFAULT_BATCH)
        return onnx_bytes, input_shapes
    onnx_bytes = Path(model).read_bytes()
    if input_shapes is None:
        raise ValueError(
            "TensorRTEngine: pass input_shapes when building from an ONNX file, e.g. "
            "InputShapes.for_tiles(tile, batch_size)."
        )
    return onnx_bytes, input_shapes


class TensorRTEngine:
    """Run the U-Net as a TensorRT engine built from its ONNX export.

    Parameters
    ----------
    model : ModelPackage, str or os.PathLike
        A package, or an ONNX file written by :func:`export_onnx` (then ``input_shapes``
        is required).
    precision : {"fp16", "fp32", "bf16"}
        Builder precision (fp16 default; fp32 disables TF32). Inputs and outputs stay float32.
    input_shapes : InputShapes, optional
        Optimization profile; default ``InputShapes.for_tiles(package.patch_size, 64)``,
        which covers the Denoiser's default tile and batch.
    device : torch.device or str
        CUDA device.
    cache_dir : pathlib.Path, optional
        Plan and timing-cache folder; default :func:`plan_cache_dir`.
    workspace_bytes : int, optional
        Builder workspace limit; default TensorRT's (the device memory).
    rebuild : bool
        Rebuild the plan even when a valid cached one exists.

    Attributes
    ----------
    name : str
        ``"tensorrt"``.
    device : torch.device
    precision : str
    input_shapes : InputShapes
    plan_path : pathlib.Path
        The cached plan file.
    plan_from_cache : bool
        True when the plan was loaded rather than built.

    Raises
    ------
    BackendUnavailable
        Without TensorRT >= 10 or a CUDA device.
    """

    name = "tensorrt"

    def __init__(
        self,
        model: ModelPackage | str | os.PathLike[str],
        *,
        precision: Precision = "fp16",
        input_shapes: InputShapes | None = None,
        device: torch.device | str = "cuda",
        cache_dir: Path | None = None,
        workspace_bytes: int | None = None,
        rebuild: bool = False,
    ):
        self.precision: Precision = check_precision(precision)
        trt = import_tensorrt()
        self.device = _cuda_device(device)
        onnx_bytes, input_shapes = _onnx_and_shapes(model, input_shapes)
        info = read_onnx_info(onnx_bytes)
        self.multiple = info.spatial_multiple or 1
        input_shapes.check_multiple(self.multiple)
        self.input_shapes: InputShapes = input_shapes
        metadata = self._plan_metadata(trt, onnx_bytes, info.model_sha256)
        folder = cache_dir if cache_dir is not None else plan_cache_dir()
        self.plan_path = plan_path(metadata.key, folder)
        timing = _timing_cache_path(folder, metadata.gpu_name, metadata.trt_version)
        with torch.cuda.device(self.device):
            plan = None if rebuild else self._cached_plan(metadata)
            self._logger: Any = trt.Logger(trt.Logger.WARNING)
            self._runtime: Any = trt.Runtime(self._logger)
            build = functools.partial(
                _build_plan, trt, onnx_bytes, input_shapes, precision, timing, workspace_bytes
            )
            self._engine: Any = self._deserialize_or_build(plan, metadata, build)
            self._context: Any = self._engine.create_execution_context()
            self._stream = torch.cuda.Stream(self.device)
        self._bound_shape: tuple[int, ...] | None = None

    def _plan_metadata(
        self, trt: ModuleType, onnx_bytes: bytes, model_sha256: str | None
    ) -> PlanMetadata:
        """Describe the plan to cache: weights, graph, GPU, TensorRT, shapes, precision."""
        graph_sha256 = sha256_bytes(onnx_bytes)
        return PlanMetadata(
            model_sha256=model_sha256 or graph_sha256,
            gpu_name=torch.cuda.get_device_name(self.device),
            trt_version=trt.__version__,
            shapes=self.input_shapes,
            precision=self.precision,
            graph_sha256=graph_sha256,
        )

    def _deserialize_or_build(
        self, plan: bytes | None, metadata: PlanMetadata, build: Callable[[], bytes]
    ) -> Any:
        """Deserialize the cached plan, or build, cache and deserialize a new one."""
        engine = self._runtime.deserialize_cuda_engine(plan) if plan is not None else None
        self.plan_from_cache = engine is not None
        if engine is not None:
            return engine
        if plan is not None:
            log.info("cached plan %s did not deserialize; rebuilding", self.plan_path)
        log.info("building TensorRT %s plan for %s", self.precision, self.input_shapes.as_lists())
        plan = build()
        write_plan(self.plan_path, plan, metadata)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise RuntimeError("TensorRT could not deserialize the plan it just built.")
        return engine

    def _cached_plan(self, metadata: PlanMetadata) -> bytes | None:
        try:
            return read_plan(self.plan_path, metadata)
        except FileNotFoundError:
            return None
        except StalePlanError as exc:
            log.info("cached plan %s rejected (%s); rebuilding", self.plan_path, exc)
            return None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Denoise a ``(B, 1, H, W)`` float32 CUDA batch; returns float32 NCHW on the device."""
        check_batch(self.name, batch, self.device, self.multiple)
        shape = tuple(batch.shape)
        if not self.input_shapes.contains(shape):
            raise ValueError(
                f"tensorrt: input shape {shape} is outside the engine's profile "
                f"{self.input_shapes.as_lists()} (min, opt, max); build a plan for it "
                "(TensorRTEngine(..., input_shapes=...) or `sn2n-live engine build`)."
            )
        x = batch.contiguous()
        out = torch.empty_like(x)
        if shape != self._bound_shape:
            self._context.set_input_shape(INPUT_NAME, shape)
            self._bound_shape = shape
        self._context.set_tensor_address(INPUT_NAME, x.data_ptr())
        self._context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        caller = torch.cuda.current_stream(self.device)
        # Run after the work that produced `x` and before whatever consumes `out`.
        self._stream.wait_stream(caller)
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError(f"tensorrt: execute_async_v3 failed for input shape {shape}.")
        caller.wait_stream(self._stream)
        return out


def build_engine_plan(
    package: ModelPackage,
    *,
    precision: Precision = "fp16",
    input_shapes: InputShapes | None = None,
    tile: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    cache_dir: Path | None = None,
    rebuild: bool = False,
) -> Path:
    """Build (or find) the cached TensorRT plan for a package, for ``sn2n-live engine build``.

    Parameters
    ----------
    package : ModelPackage
        The trained model.
    precision : {"fp16", "fp32", "bf16"}
        Builder precision.
    input_shapes : InputShapes, optional
        Profile shapes; default ``InputShapes.for_tiles(tile, batch_size)``.
    tile : int, optional
        Tile side for the default shapes; default ``package.patch_size``.
    batch_size : int
        Tiles per call for the default shapes (the Denoiser's ``batch_size``).
    cache_dir : pathlib.Path, optional
        Plan folder; default :func:`plan_cache_dir`.
    rebuild : bool
        Build even if a valid plan is cached.

    Returns
    -------
    pathlib.Path
        The plan file.

    Raises
    ------
    BackendUnavailable
        Without TensorRT >= 10 (with the pip command) or without a CUDA device: plans are
        GPU-specific and can only be built on the GPU that will run them.
    """
    if input_shapes is None:
        input_shapes = InputShapes.for_tiles(
            package.patch_size if tile is None else tile, batch_size
        )
    engine = TensorRTEngine(
        package,
        precision=precision,
        input_shapes=input_shapes,
        cache_dir=cache_dir,
        rebuild=rebuild,
    )
    return engine.plan_path
