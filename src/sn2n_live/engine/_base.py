"""The engine interface shared by every backend: protocol, precisions, shapes, errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from sn2n_live.config import Precision, choices

__all__ = [
    "PRECISIONS",
    "BackendStatus",
    "BackendUnavailable",
    "Engine",
    "InputShapes",
    "Precision",
    "check_batch",
    "check_precision",
]

PRECISIONS: tuple[str, ...] = choices(Precision)

Shape4 = tuple[int, int, int, int]


class BackendUnavailable(RuntimeError):
    """An inference backend cannot run here (library missing, no device, ...).

    The message says why and, where there is one, how to fix it.
    """


@dataclass(frozen=True)
class BackendStatus:
    """Whether one backend can run on this machine (for ``sn2n-live engine info``).

    Attributes
    ----------
    name : str
        Backend name, as accepted by ``select_engine(preference=...)``.
    available : bool
        True when the backend can be constructed here.
    reason : str
        Why it is unavailable (with the fix), or what it will run on when available.
    devices : tuple of str
        Devices it would use (e.g. ``("cuda:0 NVIDIA H100 80GB HBM3",)`` or ``("cpu",)``).
    """

    name: str
    available: bool
    reason: str
    devices: tuple[str, ...] = ()


def _shape4(value: object, what: str) -> Shape4:
    if (
        not isinstance(value, tuple | list)
        or len(value) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"InputShapes.{what} must be 4 ints (N, 1, H, W); got {value!r}.")
    shape = tuple(int(v) for v in value)
    if min(shape) < 1 or shape[1] != 1:
        raise ValueError(
            f"InputShapes.{what} = {shape} must be positive with one channel (N, 1, H, W)."
        )
    return shape  # type: ignore[return-value]


@dataclass(frozen=True)
class InputShapes:
    """The (min, opt, max) NCHW input shapes a fixed-shape engine (TensorRT) is built for.

    Every axis of ``min`` <= ``opt`` <= ``max``; the engine accepts any input whose shape lies
    between ``min`` and ``max`` axis by axis, and is tuned for ``opt``.

    Parameters
    ----------
    min, opt, max : tuple of int
        ``(N, 1, H, W)`` shapes.
    """

    min: Shape4
    opt: Shape4
    max: Shape4

    def __post_init__(self) -> None:
        lo, opt, hi = (_shape4(getattr(self, k), k) for k in ("min", "opt", "max"))
        object.__setattr__(self, "min", lo)
        object.__setattr__(self, "opt", opt)
        object.__setattr__(self, "max", hi)
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)):
            raise ValueError(
                f"InputShapes must satisfy min <= opt <= max on every axis; got min={lo}, "
                f"opt={opt}, max={hi}."
            )

    @classmethod
    def for_tiles(cls, tile: int, batch_size: int, *, min_tile: int | None = None) -> InputShapes:
        """Shapes for overlap-tile inference: 1..``batch_size`` tiles of ``tile`` pixels.

        Parameters
        ----------
        tile : int
            Tile side the Denoiser uses (the optimum and the maximum).
        batch_size : int
            Tiles per call (the optimum and maximum batch); the last call of a frame may
            carry fewer, so the minimum batch is 1.
        min_tile : int, optional
            Smallest tile side to accept (frames smaller than the tile get a smaller tile);
            default ``tile``.

        Returns
        -------
        InputShapes
        """
        if not isinstance(tile, int) or tile < 1:
            raise ValueError(f"tile must be a positive int; got {tile!r}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
        small = tile if min_tile is None else min_tile
        return cls((1, 1, small, small), (batch_size, 1, tile, tile), (batch_size, 1, tile, tile))

    @classmethod
    def for_frames(
        cls, height: int, width: int, *, multiple: int, batch_size: int = 1
    ) -> InputShapes:
        """Shapes for whole-frame inference of ``height`` x ``width`` frames.

        The Denoiser reflect-pads whole frames to multiples of ``2**depth``; the shapes use
        the padded size and 1..``batch_size`` frames per call.

        Parameters
        ----------
        height, width : int
            Frame size before padding.
        multiple : int
            ``2**depth`` of the U-Net (``package.unet.multiple``).
        batch_size : int
            Most frames per call.

        Returns
        -------
        InputShapes
        """
        if min(height, width, multiple, batch_size) < 1:
            raise ValueError(
                f"for_frames needs positive sizes; got height={height}, width={width}, "
                f"multiple={multiple}, batch_size={batch_size}."
            )
        padded = (1, 1, height + (-height % multiple), width + (-width % multiple))
        most = (batch_size, *padded[1:])
        return cls(padded, most, most)

    def contains(self, shape: tuple[int, ...]) -> bool:
        """Whether an input of ``shape`` lies within ``min``..``max`` on every axis."""
        return len(shape) == 4 and all(
            a <= s <= b for a, s, b in zip(self.min, shape, self.max, strict=True)
        )

    def as_lists(self) -> list[list[int]]:
        """``[min, opt, max]`` as plain lists (JSON-friendly)."""
        return [list(self.min), list(self.opt), list(self.max)]

    def check_multiple(self, multiple: int) -> None:
        """Raise ValueError unless every H and W is a multiple of ``multiple``."""
        bad = [
            f"{name}={shape}"
            for name, shape in (("min", self.min), ("opt", self.opt), ("max", self.max))
            if shape[2] % multiple or shape[3] % multiple
        ]
        if bad:
            raise ValueError(
                f"Input shapes {', '.join(bad)} have H or W that is not a multiple of "
                f"{multiple} (= 2**depth of the U-Net); use tile sizes that are multiples of "
                f"{multiple}."
            )


@runtime_checkable
class Engine(Protocol):
    """An inference backend running the U-Net on batches of tiles (a ``TileRunner``).

    Attributes
    ----------
    name : str
        Backend name (``"torch-cpu"``, ``"onnxruntime-cpu"``, ``"tensorrt"``, ...).
    device : torch.device
        Where inputs are expected and outputs returned.
    precision : {"fp32", "fp16", "bf16"}
        Arithmetic the network runs in; inputs and outputs are always float32.
    input_shapes : InputShapes or None
        The shapes a fixed-shape engine was built for; None when any valid shape works.
    """

    name: str
    device: torch.device
    precision: Precision
    input_shapes: InputShapes | None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Map ``(B, 1, H, W)`` float32 in [0, 1] on ``device`` to the same shape, float32."""
        ...


def check_precision(precision: object) -> Precision:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}.")
    return precision  # type: ignore[return-value]


def check_batch(engine: str, batch: object, device: torch.device, multiple: int) -> torch.Tensor:
    """Validate an engine input: float32 ``(B, 1, H, W)`` on ``device``, H and W fit the net.

    Parameters
    ----------
    engine : str
        Engine name, for the message.
    batch : object
        The input to check.
    device : torch.device
        Device the engine expects.
    multiple : int
        Required divisor of H and W (``2**depth``).

    Returns
    -------
    torch.Tensor
        ``batch``, unchanged.

    Raises
    ------
    ValueError
        Naming what is wrong with the input and how to fix it.
    """
    if not isinstance(batch, torch.Tensor):
        raise ValueError(f"{engine}: expected a torch.Tensor batch; got {type(batch).__name__}.")
    if batch.ndim != 4 or batch.shape[1] != 1 or batch.numel() == 0:
        raise ValueError(
            f"{engine}: expected a non-empty (B, 1, H, W) batch; got shape {tuple(batch.shape)}."
        )
    if batch.dtype != torch.float32:
        raise ValueError(f"{engine}: expected float32 input; got {batch.dtype}. Use .float().")
    if batch.device.type != device.type or (
        device.index is not None and batch.device.index != device.index
    ):
        raise ValueError(
            f"{engine}: the batch is on {batch.device} but the engine runs on {device}; move it "
            f"with batch.to({str(device)!r})."
        )
    height, width = batch.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(
            f"{engine}: H={height}, W={width} are not multiples of {multiple} (= 2**depth of "
            "the U-Net); pad or tile the frames (the Denoiser does this)."
        )
    return batch
