"""The ONNX Runtime backend: the exported U-Net in an ``onnxruntime.InferenceSession``.

On CPU the batch goes in and out as numpy arrays sharing memory with the torch tensors.
With the CUDA execution provider the torch CUDA tensors are bound directly as ONNX Runtime
device buffers (IO binding), so nothing crosses the PCIe bus.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import onnxruntime as ort
import torch

from sn2n_live.engine._base import BackendUnavailable, InputShapes, Precision, check_batch
from sn2n_live.engine._onnx import INPUT_NAME, OUTPUT_NAME, export_onnx_bytes, read_onnx_info
from sn2n_live.engine._torch import cuda_unavailable_reason
from sn2n_live.method._package import ModelPackage

__all__ = ["OnnxRuntimeEngine", "onnxruntime_cuda_unavailable_reason"]

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_GPU_PROVIDERS = (_CUDA, "TensorrtExecutionProvider")
_NAMES = {
    _CPU: "onnxruntime-cpu",
    _CUDA: "onnxruntime-cuda",
    _GPU_PROVIDERS[1]: "onnxruntime-tensorrt",
}


def onnxruntime_cuda_unavailable_reason() -> str | None:
    """Why ONNX Runtime cannot run on a CUDA device here, or None when it can."""
    if _CUDA not in ort.get_available_providers():
        return (
            f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (pip install "
            "onnxruntime-gpu)"
        )
    # Batches arrive as torch CUDA tensors, so torch must see the GPU too.
    return cuda_unavailable_reason()


def _onnx_bytes(model: ModelPackage | str | os.PathLike[str] | bytes) -> bytes:
    """Return the ONNX graph: a package's export, the bytes given, or a file's content."""
    if isinstance(model, ModelPackage):
        return export_onnx_bytes(model)
    if isinstance(model, bytes):
        return model
    with open(os.fspath(model), "rb") as handle:
        return handle.read()


def _wanted_providers(providers: Sequence[str] | Literal["auto"]) -> list[str]:
    """Return the requested providers but the CPU one; refuse any this build or host lacks."""
    if providers == "auto":
        return [_CUDA] if onnxruntime_cuda_unavailable_reason() is None else []
    available = ort.get_available_providers()
    wanted = [p for p in providers if p != _CPU]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise BackendUnavailable(
            f"onnxruntime {ort.__version__}: {', '.join(missing)} not available "
            f"(available: {', '.join(available)})"
        )
    if any(p in _GPU_PROVIDERS for p in wanted):
        reason = cuda_unavailable_reason()
        if reason:
            raise BackendUnavailable(f"onnxruntime GPU providers: {reason}")
    return wanted


def _provider_list(wanted: list[str], device_id: int) -> list[str | tuple[str, dict[str, str]]]:
    """Return the session's providers: GPU ones on ``device_id``, the CPU one last."""
    gpu_options = {"device_id": str(device_id)}
    provider_list: list[str | tuple[str, dict[str, str]]] = [
        (p, gpu_options) if p in _GPU_PROVIDERS else p for p in wanted
    ]
    provider_list.append(_CPU)
    return provider_list


def _thread_count(intra_op_threads: int | None) -> int:
    """Return the threads per operator: as given, else torch's (one budget for both)."""
    threads = torch.get_num_threads() if intra_op_threads is None else intra_op_threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"intra_op_threads must be a positive int; got {intra_op_threads!r}.")
    return threads


def _session_options(threads: int, *, allow_spinning: bool) -> ort.SessionOptions:
    """Return sequential, fully optimized session options that log errors only."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if allow_spinning else "0"
    )
    options.log_severity_level = 3  # errors only: provider-assignment notes are noise
    return options


class OnnxRuntimeEngine:
    """Run the exported U-Net with ONNX Runtime.

    Parameters
    ----------
    model : ModelPackage, str, os.PathLike or bytes
        A package (exported to ONNX in memory with dynamic axes), or an ONNX file / bytes
        written by :func:`export_onnx`.
    providers : "auto" or sequence of str
        Execution providers in priority order. ``"auto"`` uses the CUDA provider when
        ONNX Runtime has it and torch sees a GPU, and the CPU provider otherwise. A provider
        list is used as given (e.g. ``["TensorrtExecutionProvider", "CUDAExecutionProvider"]``);
        the CPU provider is always appended as the fallback.
    intra_op_threads : int, optional
        Threads per operator; default ``torch.get_num_threads()``, so the torch and ONNX
        Runtime engines share one budget (``OMP_NUM_THREADS``, ``torch.set_num_threads``).
    allow_spinning : bool
        Let idle worker threads spin. Off by default: spinning threads take CPU time from
        the acquisition threads running beside the denoiser.
    device_id : int
        CUDA device for the GPU providers.

    Attributes
    ----------
    name : str
        ``"onnxruntime-cpu"``, ``"onnxruntime-cuda"`` or ``"onnxruntime-tensorrt"`` (the
        provider the session put first).
    device : torch.device
    precision : str
        Always ``"fp32"``.
    input_shapes : None
        Dynamic axes: any batch and any H, W that are multiples of ``2**depth``.
    providers : list of str
        The session's providers.
    model_sha256 : str or None
        Weights hash from the ONNX metadata.

    Raises
    ------
    BackendUnavailable
        When a requested provider is not available in this ONNX Runtime build.
    """

    precision: Precision = "fp32"
    input_shapes: InputShapes | None = None

    def __init__(
        self,
        model: ModelPackage | str | os.PathLike[str] | bytes,
        *,
        providers: Sequence[str] | Literal["auto"] = "auto",
        intra_op_threads: int | None = None,
        allow_spinning: bool = False,
        device_id: int = 0,
    ):
        data = _onnx_bytes(model)
        info = read_onnx_info(data)
        self.model_sha256 = info.model_sha256
        self.multiple = info.spatial_multiple or 1
        provider_list = _provider_list(_wanted_providers(providers), device_id)
        threads = _thread_count(intra_op_threads)
        options = _session_options(threads, allow_spinning=allow_spinning)
        self._session = ort.InferenceSession(data, options, providers=provider_list)
        self.providers: list[str] = self._session.get_providers()
        first = self.providers[0]
        self.name = _NAMES.get(first, f"onnxruntime-{first}")
        self.device = (
            torch.device("cuda", device_id) if first in _GPU_PROVIDERS else torch.device("cpu")
        )
        self.intra_op_threads = threads

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Denoise a ``(B, 1, H, W)`` float32 batch on :attr:`device`; returns float32 NCHW."""
        check_batch(self.name, batch, self.device, self.multiple)
        if self.device.type == "cpu":
            array = np.ascontiguousarray(batch.detach().numpy())
            (out,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: array})
            return torch.from_numpy(out)
        return self._run_bound(batch.detach().contiguous())

    def _run_bound(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        binding = self._session.io_binding()
        index = self.device.index or 0
        for bind, name, tensor in (
            (binding.bind_input, INPUT_NAME, x),
            (binding.bind_output, OUTPUT_NAME, out),
        ):
            bind(name, "cuda", index, np.float32, tuple(tensor.shape), tensor.data_ptr())
        # ONNX Runtime runs on its own CUDA stream: the input must be complete first.
        torch.cuda.current_stream(self.device).synchronize()
        self._session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return out
