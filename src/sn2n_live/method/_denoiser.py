"""The inference pipeline: risk-aware normalization, batched overlap tiles, Gaussian blending.

For a stack of frames the :class:`Denoiser`

1. computes each frame's image-wise scale ``(lo, hi)`` (``frame_scale``: min or background
   floor, clip percentile);
   for a package trained with ``inference="twins"`` it then replaces every frame by its two
   up-sampled diagonal twins (what the network was trained on), runs steps 2-6 on both and
   averages the two results;
2. cuts the reflect-padded frames into 50%-overlap tiles (all frames at once, unfold);
3. normalizes every tile with the scale the package's mode assigns it (frame scale, tile
   min/max, or the per-patch risk rule);
4. runs the tiles through the network in batches of ``batch_size``, across frames;
5. de-normalizes every output tile with its own ``(lo, hi)`` *before* blending, so tiles
   that used different scales blend consistently, and the result is in the input's
   photometric units (method.md §3.6.4);
6. blends with a Gaussian window (``sigma = tile / 4``) and crops.

In ``global`` mode the fully convolutional network may instead run on whole frames
(``tile=None``), reflect-padded to a multiple of ``2**depth``.

The network is reached only through a :class:`TileRunner`, so engines (onnxruntime,
TensorRT) plug in without touching the pipeline; the default runs the package's U-Net in
torch, in eval mode, under ``torch.inference_mode``.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Literal, Protocol, overload, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sn2n_live.method._hallucination import (
    Denoised,
    fidelity_risk,
    hallucination_risk,
    risk_fraction,
)
from sn2n_live.method._package import ModelPackage
from sn2n_live.method._risk import (
    TileMode,
    background_floor,
    denormalize,
    frame_scale,
    normalize_tiles,
)
from sn2n_live.method._tiling import (
    TilePlan,
    blend_tiles,
    extract_tiles,
    fit_tile,
    gaussian_window,
    plan_tiles,
)
from sn2n_live.method._twins import make_twins_tensor

__all__ = ["Denoiser", "TileRunner", "TorchRunner"]

# Frames are processed in chunks of at most this many tile pixels (about 64 MiB per float32
# buffer), so long stacks do not materialize all their tiles at once. Each chunk holds whole
# frames and is still batched across frames.
_CHUNK_TILE_PIXELS = 1 << 24


# Host dtypes uploaded as they are (uint16 travels as its int16 bit pattern, see
# _uploadable); anything else is converted to float32 on the host first.
_TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.float32): torch.float32,
}


def _uploadable(stack: np.ndarray) -> np.ndarray:
    """``stack`` in a dtype that torch copies to a GPU, without widening camera data.

    uint16 (the usual camera dtype) is reinterpreted as int16, because torch's uint16 has
    only limited operator support; :func:`_decode_upload` undoes it on the device.
    """
    if stack.dtype == np.uint16:
        return stack.view(np.int16)
    if stack.dtype in _TORCH_DTYPES:
        return stack
    return stack.astype(np.float32)


def _decode_upload(raw: torch.Tensor, source: np.dtype) -> torch.Tensor:
    """float32 frames from an upload made by :func:`_uploadable` of ``source`` data."""
    if source == np.uint16:
        return raw.to(torch.int32).bitwise_and_(0xFFFF).to(torch.float32)
    return raw.to(torch.float32)


@runtime_checkable
class TileRunner(Protocol):
    """What an inference engine provides to the :class:`Denoiser`.

    A runner may also expose ``name: str`` (engine name, default ``"torch"``) and
    ``precision: str`` (default ``"fp32"``); both are recorded in the provenance.

    Attributes
    ----------
    device : torch.device
        Where the runner expects its input and returns its output.
    """

    device: torch.device

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Map a ``(B, 1, P, P)`` float32 batch in [0, 1] to the same shape in [0, 1]."""
        ...


class TorchRunner:
    """Run a torch module (the U-Net) in eval mode under ``torch.inference_mode``.

    Parameters
    ----------
    model : torch.nn.Module
        The network; it is moved to ``device`` and put in eval mode.
    device : torch.device or str
        Device to run on.
    """

    name = "torch"
    precision = "fp32"

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(batch)


def _describe_location(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


class Denoiser:
    """Denoise frames with a trained :class:`ModelPackage`.

    Parameters
    ----------
    package : ModelPackage
        The trained model and its normalization settings.
    tile : int, None or "package"
        Tile side (a multiple of ``2**depth``); ``"package"`` (default) uses the package's
        ``inference_tile`` (whole frames for a ``twins`` package in global mode, else the
        training patch size); ``None`` runs whole frames in one pass, which is only
        allowed in ``global`` mode. Frames smaller than the tile get the largest fitting
        ``2**depth * 2**k`` tile.
    batch_size : int
        Tiles per network call (tiles of several frames share a batch). In whole-frame mode
        it bounds the pixels per call to ``batch_size * package.patch_size**2`` (at least
        one frame).
    runner : TileRunner, optional
        Inference engine; default: the package's U-Net in torch on ``device``.
    device : torch.device or str
        Device of the default runner (ignored when ``runner`` is given).

    Attributes
    ----------
    package : ModelPackage
        The model package.
    tile : int or None
        Tile side; ``None`` means whole-frame.
    batch_size : int
        Tiles per network call.
    mode : TileMode
        Normalization applied to tiles, resolved from the package's policy.
    runner : TileRunner
        The engine that runs the network.
    multiple : int
        Frames must be at least this large on each side (``2**depth``).
    """

    def __init__(
        self,
        package: ModelPackage,
        *,
        tile: int | Literal["package"] | None = "package",
        batch_size: int = 64,
        runner: TileRunner | None = None,
        device: torch.device | str = "cpu",
    ):
        self.package = package
        self.mode: TileMode = package.resolved_mode
        self.multiple = package.unet.multiple
        if tile == "package":
            tile = package.inference_tile
        if tile is None:
            if self.mode != "global":
                raise ValueError(
                    f"Whole-frame inference (tile=None) needs a package trained in 'global' "
                    f"mode, but this package uses {self.mode!r}: its tiles are normalized by "
                    "their own range or risk class, which only exists per tile. Use a tile "
                    f"size instead (e.g. tile={package.patch_size})."
                )
        elif isinstance(tile, bool) or not isinstance(tile, Integral) or tile <= 0:
            raise ValueError(f"tile must be a positive int, None or 'package'; got {tile!r}.")
        else:
            tile = int(tile)
        if tile is not None and tile % self.multiple:
            raise ValueError(
                f"tile={tile} is not a multiple of {self.multiple} (= 2**depth of the U-Net); "
                f"use e.g. tile={max(self.multiple, tile - tile % self.multiple)}."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
        self.tile: int | None = tile
        self.batch_size = int(batch_size)
        self.runner: TileRunner = (
            runner if runner is not None else TorchRunner(package.build_model(), device)
        )
        self._sha256 = package.sha256
        self._windows: dict[int, torch.Tensor] = {}
        self._streams: tuple[torch.cuda.Stream, torch.cuda.Stream] | None = None

    @property
    def device(self) -> torch.device:
        """Device the runner works on; :meth:`denoise_tensor` returns results there."""
        return torch.device(self.runner.device)

    @property
    def provenance(self) -> dict[str, Any]:
        """What produced the output: model hash, engine, precision, normalization, tiling."""
        return {
            "model_sha256": self._sha256,
            "engine": str(getattr(self.runner, "name", "torch")),
            "precision": str(getattr(self.runner, "precision", "fp32")),
            "normalization": self.package.policy,
            "resolved_mode": self.mode,
            "tile": self.tile,
            "batch_size": self.batch_size,
        }

    # -- public entry points ---------------------------------------------------------------

    @overload
    def denoise(self, frames: np.ndarray, *, risk: Literal[False] = False) -> np.ndarray: ...

    @overload
    def denoise(self, frames: np.ndarray, *, risk: Literal[True]) -> Denoised: ...

    def denoise(self, frames: np.ndarray, *, risk: bool = False) -> np.ndarray | Denoised:
        """Denoise frames given as a numpy array.

        Parameters
        ----------
        frames : numpy.ndarray
            ``(..., H, W)``, any integer or floating dtype, in camera units (ADU).
        risk : bool
            Also return the hallucination-risk map of every frame (see
            :func:`hallucination_risk`). For a package with ``inference="twins"`` the map
            comes from the two passes denoising already makes; for ``"frame"`` packages it
            costs two extra passes (the twins).

        Returns
        -------
        numpy.ndarray or Denoised
            float32 with the input's shape, in the same photometric units; with ``risk``, a
            :class:`Denoised` holding the image, the risk map and per-frame risk fractions.

        Raises
        ------
        ValueError
            For fewer than 2 axes, an empty array, a non-real dtype, NaN/inf values (with
            their count and first location), or frames smaller than ``2**depth``.
        """
        arr = np.asarray(frames)
        # Kinds i/u/f: signed, unsigned, float (excludes bool, complex, object, strings).
        self._check_frames(tuple(arr.shape), arr.dtype, real=arr.dtype.kind in "iuf")
        if arr.dtype.kind == "f":
            bad = ~np.isfinite(arr)
            if bad.any():
                first = np.unravel_index(int(np.argmax(bad)), arr.shape)
                self._raise_nonfinite(int(bad.sum()), first, arr.shape)
        stack = arr.reshape(-1, *arr.shape[-2:])
        if risk:
            x = torch.from_numpy(np.ascontiguousarray(stack, np.float32)).to(self.device)
            lo, hi = frame_scale(x, self.package.scale, self.package.thresholds)
            image, risk_map = self._run_twins(x, lo, hi, risk=True)
            return Denoised(
                image=image.cpu().numpy().reshape(arr.shape),
                risk=risk_map.cpu().numpy().reshape(arr.shape),
                risk_fraction=risk_fraction(risk_map).cpu().numpy().reshape(arr.shape[:-2]),
            )
        if self.device.type == "cuda":
            return self._denoise_streamed(stack).reshape(arr.shape)
        x = torch.from_numpy(np.ascontiguousarray(stack, np.float32))
        return self._run(x.to(self.device)).cpu().numpy().reshape(arr.shape)

    def denoise_tensor(self, frames: torch.Tensor) -> torch.Tensor:
        """Denoise an ``(N, H, W)`` tensor.

        Parameters
        ----------
        frames : torch.Tensor
            ``(N, H, W)`` real-valued frames in camera units, on any device (moved to
            :attr:`device`).

        Returns
        -------
        torch.Tensor
            ``(N, H, W)`` float32 on :attr:`device`, in the same photometric units.

        Raises
        ------
        ValueError
            As :meth:`denoise`, and if ``frames`` is not 3-D.
        """
        if not isinstance(frames, torch.Tensor):
            raise ValueError(
                f"denoise_tensor expects a torch.Tensor; got {type(frames).__name__} "
                "(use denoise() for numpy arrays)."
            )
        if frames.ndim != 3:
            raise ValueError(
                f"denoise_tensor expects (N, H, W) frames; got shape {tuple(frames.shape)}. "
                "Use frames[None] for a single frame, or denoise() for other layouts."
            )
        real = frames.dtype != torch.bool and not frames.dtype.is_complex
        self._check_frames(tuple(frames.shape), frames.dtype, real=real)
        x = frames.to(device=self.device, dtype=torch.float32)
        if frames.is_floating_point():
            bad = ~torch.isfinite(x)
            n_bad = int(bad.sum())
            if n_bad:
                first = tuple(int(i) for i in bad.nonzero()[0])
                self._raise_nonfinite(n_bad, first, tuple(frames.shape))
        return self._run(x)

    def _denoise_streamed(self, stack: np.ndarray) -> np.ndarray:
        """CUDA path: pinned host buffers, copies overlapping compute.

        Frames are uploaded in their camera dtype (uint16 is half the bytes of float32)
        from page-locked memory on an upload stream, one network call's worth of frames
        (a group) at a time. The host copies group k+1 into pinned memory and queues its
        upload while the compute stream still works on group k, and group k's result goes
        down on a download stream while group k+1 computes.
        """
        device = self.device
        host = _uploadable(stack)
        staging = torch.empty(host.shape, dtype=_TORCH_DTYPES[host.dtype], pin_memory=True)
        result = torch.empty(stack.shape, dtype=torch.float32, pin_memory=True)
        staging_np = staging.numpy()
        compute = torch.cuda.current_stream(device)
        upload, download = self._copy_streams()
        group = self._frames_per_call(stack.shape[-2:])
        for start in range(0, stack.shape[0], group):
            part = slice(start, start + group)
            staging_np[part] = host[part]
            with torch.cuda.stream(upload):
                raw = staging[part].to(device, non_blocking=True)
            compute.wait_stream(upload)
            raw.record_stream(compute)  # allocated on the upload stream, used on compute
            out = self._run(_decode_upload(raw, stack.dtype))
            download.wait_stream(compute)
            with torch.cuda.stream(download):
                result[part].copy_(out, non_blocking=True)
            out.record_stream(download)
        download.synchronize()
        return result.numpy()

    def _copy_streams(self) -> tuple[torch.cuda.Stream, torch.cuda.Stream]:
        if self._streams is None:
            self._streams = (torch.cuda.Stream(self.device), torch.cuda.Stream(self.device))
        return self._streams

    def _frames_per_call(self, shape: tuple[int, int]) -> int:
        """Frames whose tiles (or whole frames) fill about one network call."""
        height, width = shape
        if self.tile is None:
            padded = (height + -height % self.multiple) * (width + -width % self.multiple)
            return max(1, self.batch_size * self.package.patch_size**2 // padded)
        tile = fit_tile((height, width), self.tile, self.multiple)
        return max(1, self.batch_size // plan_tiles((height, width), tile).n_tiles)

    # -- validation --------------------------------------------------------------------------

    def _check_frames(self, shape: tuple[int, ...], dtype: object, *, real: bool) -> None:
        if len(shape) < 2:
            raise ValueError(
                f"Frames must have at least 2 axes (..., H, W); got shape {shape}. A single "
                "frame is a 2-D array."
            )
        if 0 in shape:
            raise ValueError(f"Frames are empty (shape {shape}); nothing to denoise.")
        if not real:
            raise ValueError(
                f"Frames must be integer or floating point camera data; got dtype {dtype}."
            )
        height, width = shape[-2:]
        if min(height, width) < self.multiple:
            raise ValueError(
                f"Frames of {height}x{width} pixels are smaller than this model's minimum "
                f"side of {self.multiple} (= 2**depth of the U-Net); acquire a larger ROI or "
                "use a model with a shallower U-Net."
            )

    @staticmethod
    def _raise_nonfinite(count: int, first: tuple[int, ...], shape: tuple[int, ...]) -> None:
        raise ValueError(
            f"Frames contain {count} NaN/inf value(s) (shape {shape}); the first is at index "
            f"{_describe_location(first)}. Replace or mask them (e.g. numpy.nan_to_num) before "
            "denoising."
        )

    # -- pipeline ----------------------------------------------------------------------------

    @torch.no_grad()
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise validated float32 ``(N, H, W)`` frames on the runner's device."""
        lo, hi = frame_scale(x, self.package.scale, self.package.thresholds)
        if self.package.inference == "twins":
            return self._run_twins(x, lo, hi, risk=False)[0]
        return self._run_frames(x, lo, hi)

    def _run_twins(
        self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, *, risk: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Denoise both up-sampled twins of every frame with the frame's scale.

        Returns the denoised frames (the twins' mean for ``inference="twins"``, the frame
        itself denoised otherwise) and, with ``risk``, the hallucination-risk maps (an
        empty tensor without).
        """
        n, height, width = x.shape
        pad_h, pad_w = height % 2, width % 2
        if pad_h or pad_w:
            # Twins need even sides; the extra row/column is cropped off again below.
            x = F.pad(x[:, None], (0, pad_w, 0, pad_h), mode="replicate")[:, 0]
        # Twins and their spectra take several frame-sized buffers: bound frames per pass.
        per_chunk = max(1, _CHUNK_TILE_PIXELS // (8 * x.shape[-2] * x.shape[-1]))
        out = torch.empty_like(x)
        risk_map = torch.empty_like(x) if risk else x.new_empty(0)
        for i in range(0, n, per_chunk):
            part = slice(i, i + per_chunk)
            a, b = make_twins_tensor(x[part], compensate=self.package.compensate)
            k = a.shape[0]
            both = self._run_frames(torch.cat([a, b]), lo[part].repeat(2), hi[part].repeat(2))
            out_a, out_b = both[:k], both[k:]
            if self.package.inference == "twins":
                out[part] = 0.5 * (out_a + out_b)
            else:
                out[part] = self._run_frames(x[part], lo[part], hi[part])
            if risk:
                risk_map[part] = torch.maximum(
                    hallucination_risk(out_a, out_b, a, b),
                    fidelity_risk(out[part], x[part], a, b),
                )
        if risk:
            risk_map = risk_map[:, :height, :width]
        return out[:, :height, :width], risk_map

    def _run_frames(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Denoise ``(N, H, W)`` network inputs scaled by their frames' ``(lo, hi)``."""
        if self.tile is None:
            return self._run_whole(x, lo, hi)
        height, width = x.shape[-2:]
        tile = fit_tile((height, width), self.tile, self.multiple)
        plan = plan_tiles((height, width), tile)
        window = self._window(tile)
        per_chunk = max(1, _CHUNK_TILE_PIXELS // (plan.n_tiles * tile * tile))
        chunks = [
            self._run_tiles(
                x[i : i + per_chunk], lo[i : i + per_chunk], hi[i : i + per_chunk], plan, window
            )
            for i in range(0, x.shape[0], per_chunk)
        ]
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def _run_tiles(
        self,
        x: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        plan: TilePlan,
        window: torch.Tensor,
    ) -> torch.Tensor:
        n_tiles = plan.n_tiles
        thresholds = self.package.thresholds
        floor = None
        if self.mode == "per_patch" and thresholds.noise_aware:
            floor = background_floor(x, thresholds.patch_size).repeat_interleave(n_tiles)
        tiles = extract_tiles(x, plan)
        normalized, tile_lo, tile_hi = normalize_tiles(
            tiles,
            lo.repeat_interleave(n_tiles),
            hi.repeat_interleave(n_tiles),
            self.mode,
            thresholds,
            floor=floor,
            clip=self.package.scale == "min_clip",
        )
        del tiles
        out = self._infer(normalized, self.batch_size)
        # De-normalize each tile with the scale its input used before blending, so tiles
        # normalized differently (local, per_patch) blend in common photometric units.
        return blend_tiles(denormalize(out, tile_lo, tile_hi), plan, window, x.shape[0])

    def _run_whole(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if pad_h or pad_w:
            # pad < multiple <= side, as reflect padding requires.
            x = F.pad(x[:, None], (0, pad_w, 0, pad_h), mode="reflect")[:, 0]
        normalized, lo, hi = normalize_tiles(
            x, lo, hi, "global", self.package.thresholds, clip=self.package.scale == "min_clip"
        )
        per_call = self._frames_per_call((height, width))
        out = denormalize(self._infer(normalized, per_call), lo, hi)
        return out[:, :height, :width]

    def _infer(self, normalized: torch.Tensor, batch: int) -> torch.Tensor:
        """Run ``(B, h, w)`` normalized inputs through the runner, ``batch`` at a time."""
        out = torch.empty_like(normalized)
        for start in range(0, normalized.shape[0], batch):
            chunk = normalized[start : start + batch, None]
            result = self.runner(chunk)
            if tuple(result.shape) != tuple(chunk.shape):
                raise ValueError(
                    f"The runner {type(self.runner).__name__} returned shape "
                    f"{tuple(result.shape)} for an input of shape {tuple(chunk.shape)}; a "
                    "TileRunner must return its input's shape."
                )
            out[start : start + batch] = result[:, 0]
        return out

    def _window(self, tile: int) -> torch.Tensor:
        window = self._windows.get(tile)
        if window is None:
            window = self._windows[tile] = gaussian_window(tile, device=self.device)
        return window
