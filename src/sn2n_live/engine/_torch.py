"""The torch backend: the package's U-Net in eager torch on CPU or CUDA.

Inference-only rewrites, all numerically checked against the plain model in the tests:

* eval-mode BatchNorm is folded into the preceding convolution (one pass over each
  activation map less);
* channels_last memory format (oneDNN on CPU and cuDNN on CUDA pick faster NHWC kernels);
* CPU bf16 runs under ``torch.autocast``; CUDA fp16/bf16 casts the weights and the input,
  which avoids autocast's per-op casts;
* optional CUDA graphs, captured once per input shape (the Denoiser uses at most a full and
  a remainder batch per tile size), remove the per-kernel launch cost of small tiles.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sn2n_live.engine._base import (
    BackendUnavailable,
    InputShapes,
    Precision,
    check_batch,
    check_precision,
)
from sn2n_live.method._package import ModelPackage

__all__ = ["TorchEngine", "cuda_unavailable_reason", "fold_batchnorm"]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# Each captured graph keeps its own activation memory; beyond this many shapes run eagerly.
_MAX_GRAPHS = 8


def cuda_unavailable_reason() -> str | None:
    """Why torch cannot use CUDA here, or None when it can."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"no CUDA device (torch {torch.__version__} is a CPU-only build)"
    return f"no CUDA device visible to torch {torch.__version__} (driver or GPU missing)"


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode ``Conv2d -> BatchNorm2d`` pair inside ``nn.Sequential``s, in place.

    The convolution gets the BatchNorm's affine transform in its weights and bias and the
    BatchNorm becomes ``nn.Identity``; outputs are unchanged up to float rounding.

    Parameters
    ----------
    model : torch.nn.Module
        A model in eval mode.

    Returns
    -------
    torch.nn.Module
        ``model`` (modified).
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call model.eval()).")
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in itertools.pairwise(names):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
    return model


def _engine_device(
    device: torch.device, precision: Precision, *, cuda_graphs: bool
) -> torch.device:
    """Return the device to run on (CUDA with its index); refuse what it cannot run."""
    if device.type == "cuda":
        return _cuda_device(device, precision)
    if device.type == "cpu":
        if precision == "fp16":
            raise ValueError(
                "torch-cpu: fp16 is not supported on CPU (slow emulation); use 'bf16' "
                "(autocast) or 'fp32'."
            )
        if cuda_graphs:
            raise ValueError("torch-cpu: cuda_graphs=True needs a CUDA device.")
        return device
    raise ValueError(f"TorchEngine: device must be 'cpu' or 'cuda[:N]'; got {device}.")


def _cuda_device(device: torch.device, precision: Precision) -> torch.device:
    """Return ``device`` with its index; refuse it without CUDA, or bf16 without support."""
    reason = cuda_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"torch-cuda: {reason}")
    device = torch.device(
        "cuda", torch.cuda.current_device() if device.index is None else device.index
    )
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise BackendUnavailable(
            f"torch-cuda: {torch.cuda.get_device_name(device)} has no bf16 support; "
            "use precision='fp16'."
        )
    return device


def _inference_model(
    package: ModelPackage,
    device: torch.device,
    weight_dtype: torch.dtype | None,
    *,
    channels_last: bool,
    fold_bn: bool,
) -> nn.Module:
    """Build the package's network for inference: folded, on ``device``, cast, frozen."""
    model = package.build_model("cpu").float().eval()
    if fold_bn:
        fold_batchnorm(model)
    model = model.to(device)
    if weight_dtype is not None:
        model = model.to(weight_dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


class TorchEngine:
    """Run the package's U-Net in torch.

    Parameters
    ----------
    package : ModelPackage
        The trained model.
    device : torch.device or str
        ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
    precision : {"fp32", "fp16", "bf16"}
        CPU: fp32 or bf16 (autocast). CUDA: fp32 (cuDNN may use TF32 if
        ``torch.backends.cudnn.allow_tf32`` is set, torch's default), fp16 or bf16 weights.
    channels_last : bool
        Use NHWC memory format (default; about 1.7x faster than NCHW with oneDNN here, and
        what cuDNN's fp16/bf16 tensor-core kernels prefer).
    cuda_graphs : bool
        Capture a CUDA graph per input shape and replay it (CUDA only).
    fold_bn : bool
        Fold BatchNorm into the convolutions (default True).

    Attributes
    ----------
    name : str
        ``"torch-cpu"`` or ``"torch-cuda"``.
    device : torch.device
    precision : str
    input_shapes : None
        Any batch and any H, W that are multiples of ``2**depth`` are accepted.
    model : torch.nn.Module
        The (rewritten) network.

    Raises
    ------
    BackendUnavailable
        For a CUDA device when torch has none, or bf16 on a GPU without bf16.
    ValueError
        For an unknown device type, fp16 on CPU, or CUDA graphs on CPU.
    """

    input_shapes: InputShapes | None = None

    def __init__(
        self,
        package: ModelPackage,
        device: torch.device | str = "cpu",
        precision: Precision = "fp32",
        *,
        channels_last: bool = True,
        cuda_graphs: bool = False,
        fold_bn: bool = True,
    ):
        self.precision: Precision = check_precision(precision)
        device = _engine_device(torch.device(device), precision, cuda_graphs=cuda_graphs)
        self.device = device
        self.name = f"torch-{device.type}"
        self.multiple = package.unet.multiple
        self.channels_last = bool(channels_last)
        self.cuda_graphs = bool(cuda_graphs)
        # CUDA low precision: cast the weights once; CPU bf16 autocasts per op instead
        # (oneDNN keeps the numerically sensitive parts in fp32).
        self._weight_dtype = _DTYPES.get(precision) if device.type == "cuda" else None
        self.model = _inference_model(
            package, device, self._weight_dtype, channels_last=self.channels_last, fold_bn=fold_bn
        )
        self._autocast: Callable[[], contextlib.AbstractContextManager[object]] = (
            (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
            if device.type == "cpu" and precision == "bf16"
            else contextlib.nullcontext
        )
        self._graphs: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, object]] = {}

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._weight_dtype is not None:
            x = x.to(self._weight_dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            return self.model(x)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Denoise a ``(B, 1, H, W)`` float32 batch on :attr:`device`; returns float32 NCHW."""
        check_batch(self.name, batch, self.device, self.multiple)
        with torch.inference_mode():
            if self.cuda_graphs:
                return self._replay(batch)
            return self._forward(batch).to(torch.float32).contiguous()

    def _replay(self, batch: torch.Tensor) -> torch.Tensor:
        key = tuple(batch.shape)
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= _MAX_GRAPHS:
                return self._forward(batch).to(torch.float32).contiguous()
            entry = self._graphs[key] = self._capture(batch)
        static_in, static_out, graph = entry
        static_in.copy_(batch)
        graph.replay()  # type: ignore[attr-defined]
        # The graph's output buffer is reused by the next replay: hand out a copy.
        return static_out.to(torch.float32, copy=True).contiguous()

    def _capture(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, object]:
        static_in = batch.clone()
        # Warm up on a side stream (cuDNN autotuning, allocator) before capturing.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._forward(static_in)
        return static_in, static_out, graph
