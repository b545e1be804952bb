"""Overlap-tile geometry, Gaussian blending windows, and vectorized tile extraction/blending.

Tiles of size P are taken with stride P/2 from a frame that is reflect-padded by P/2 on all
sides (plus bottom/right so the grid fits exactly). Every original pixel is therefore covered
by exactly two tiles per axis (four in 2-D), and never only by a tile edge (method.md §3.6,
an improvement over the official bottom/right-only padding of §3.4). Tiles are blended with
an isotropic Gaussian window: ``sum(w * tile) / sum(w)``.

Everything is expressed as pure functions of a :class:`TilePlan` so the geometry can be
tested on its own; extraction and blending use ``unfold``/``fold`` (no Python loop over
tiles).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "TilePlan",
    "blend_tiles",
    "extract_tiles",
    "fit_tile",
    "gaussian_window",
    "plan_tiles",
]


@dataclass(frozen=True)
class TilePlan:
    """Geometry of an overlap-tiling of one frame shape.

    Attributes
    ----------
    frame_shape : tuple of int
        ``(H, W)`` of the original frame.
    tile : int
        Tile side P (even).
    stride : int
        Tile step, ``P // 2``.
    pad : tuple of int
        Reflect padding ``(top, bottom, left, right)``.
    padded_shape : tuple of int
        ``(H + top + bottom, W + left + right)``.
    grid : tuple of int
        Number of tiles along y and x.
    """

    frame_shape: tuple[int, int]
    tile: int
    stride: int
    pad: tuple[int, int, int, int]
    padded_shape: tuple[int, int]
    grid: tuple[int, int]

    @property
    def n_tiles(self) -> int:
        """Tiles per frame, ``grid[0] * grid[1]``."""
        return self.grid[0] * self.grid[1]


def fit_tile(frame_shape: tuple[int, int], tile: int, multiple: int) -> int:
    """Return a tile size usable on frames of ``frame_shape``.

    ``tile`` is returned unchanged when it fits (``tile <= min(H, W)``); otherwise the
    largest ``multiple * 2**k`` that is ``<= min(H, W)``.

    Parameters
    ----------
    frame_shape : tuple of int
        ``(H, W)``.
    tile : int
        Requested tile side; a positive multiple of ``multiple``.
    multiple : int
        Size divisor the network needs (``2**depth``, even).

    Returns
    -------
    int
        The tile side to use.

    Raises
    ------
    ValueError
        If ``tile`` is not a positive multiple of ``multiple``, ``multiple`` is not a
        positive even number, or the frame is smaller than ``multiple``.
    """
    if multiple < 2 or multiple % 2:
        raise ValueError(f"multiple must be a positive even number; got {multiple}.")
    if tile <= 0 or tile % multiple:
        raise ValueError(
            f"Tile size {tile} is not a positive multiple of {multiple} (= 2**depth of the "
            f"network); choose e.g. {max(multiple, tile - tile % multiple)}."
        )
    side = min(frame_shape)
    if tile <= side:
        return tile
    if side < multiple:
        raise ValueError(
            f"Frame of shape {tuple(frame_shape)} is smaller than the network's minimum input "
            f"side {multiple} (= 2**depth); use larger frames or a shallower network."
        )
    fitted = multiple
    while fitted * 2 <= side:
        fitted *= 2
    return fitted


def plan_tiles(frame_shape: tuple[int, int], tile: int) -> TilePlan:
    """Plan a stride-P/2 tiling with reflect padding P/2 on all sides.

    Parameters
    ----------
    frame_shape : tuple of int
        ``(H, W)`` of the frame.
    tile : int
        Even tile side P with ``P <= min(H, W)`` (use :func:`fit_tile` for small frames:
        reflect padding needs the padding to be smaller than the frame side).

    Returns
    -------
    TilePlan
        The tiling; bottom/right padding is ``P/2 + (-S mod P/2)`` for a side S.

    Raises
    ------
    ValueError
        If ``tile`` is not a positive even number, or larger than a side of the frame.
    """
    height, width = (int(s) for s in frame_shape)
    if tile < 2 or tile % 2:
        raise ValueError(f"Tile size must be a positive even number; got {tile}.")
    if tile > min(height, width):
        raise ValueError(
            f"Tile size {tile} is larger than the frame {height}x{width}; reflect padding "
            "needs tile <= min(H, W). Shrink the tile with fit_tile()."
        )
    stride = tile // 2
    # The grid fits exactly when (padded - tile) is a multiple of the stride; with stride
    # padding on both ends that means (side + extra) % stride == 0. The total bottom/right
    # pad stays < tile <= side, which reflect padding requires.
    extra_y = -height % stride
    extra_x = -width % stride
    pad = (stride, stride + extra_y, stride, stride + extra_x)
    padded = (height + pad[0] + pad[1], width + pad[2] + pad[3])
    grid = ((padded[0] - tile) // stride + 1, (padded[1] - tile) // stride + 1)
    return TilePlan(
        frame_shape=(height, width),
        tile=tile,
        stride=stride,
        pad=pad,
        padded_shape=padded,
        grid=grid,
    )


def gaussian_window(
    tile: int,
    sigma_scale: float = 4.0,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Isotropic 2-D Gaussian blending window.

    Parameters
    ----------
    tile : int
        Window side P.
    sigma_scale : float
        ``sigma = P / sigma_scale`` (aSN2N uses 4).
    device : torch.device or str, optional
        Where to create the window.

    Returns
    -------
    torch.Tensor
        ``(P, P)`` float32, centred at ``((P - 1) / 2, (P - 1) / 2)``, maximum 1, floored at
        ``float32 eps`` so that no weight is zero.
    """
    if tile < 1:
        raise ValueError(f"Window size must be positive; got {tile}.")
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be positive; got {sigma_scale}.")
    sigma = tile / sigma_scale
    coords = torch.arange(tile, dtype=torch.float64, device=device) - (tile - 1) / 2
    profile = torch.exp(-(coords**2) / (2 * sigma**2))
    window = torch.outer(profile, profile)
    window = window / window.max()
    return window.clamp_min(torch.finfo(torch.float32).eps).to(torch.float32)


def _check_frames(frames: torch.Tensor, plan: TilePlan) -> None:
    if frames.ndim != 3 or tuple(frames.shape[-2:]) != plan.frame_shape:
        raise ValueError(
            f"Expected frames of shape (N, {plan.frame_shape[0]}, {plan.frame_shape[1]}) for "
            f"this tile plan; got {tuple(frames.shape)}."
        )


def extract_tiles(frames: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """Reflect-pad frames and cut them into overlapping tiles.

    Parameters
    ----------
    frames : torch.Tensor
        ``(N, H, W)`` floating point, unpadded, ``(H, W) == plan.frame_shape``.
    plan : TilePlan
        The tiling.

    Returns
    -------
    torch.Tensor
        ``(N * L, P, P)`` with ``L = plan.n_tiles``; frame-major, tiles row-major within a
        frame.
    """
    _check_frames(frames, plan)
    if not frames.is_floating_point():
        raise ValueError(f"extract_tiles needs floating-point frames; got {frames.dtype}.")
    n = frames.shape[0]
    top, bottom, left, right = plan.pad
    padded = F.pad(frames[:, None], (left, right, top, bottom), mode="reflect")
    cols = F.unfold(padded, kernel_size=plan.tile, stride=plan.stride)  # (N, P*P, L)
    return cols.transpose(1, 2).reshape(n * plan.n_tiles, plan.tile, plan.tile)


def blend_tiles(
    tiles: torch.Tensor, plan: TilePlan, window: torch.Tensor, n_frames: int
) -> torch.Tensor:
    """Blend overlapping tiles back into frames with a weighted average.

    Parameters
    ----------
    tiles : torch.Tensor
        ``(n_frames * L, P, P)`` in the order produced by :func:`extract_tiles`.
    plan : TilePlan
        The tiling.
    window : torch.Tensor
        ``(P, P)`` positive weights (see :func:`gaussian_window`).
    n_frames : int
        Number of frames N.

    Returns
    -------
    torch.Tensor
        ``(N, H, W)``: ``sum(w * tile) / sum(w)`` over the tiles covering each pixel,
        cropped to ``plan.frame_shape``.
    """
    p, n_tiles = plan.tile, plan.n_tiles
    if tiles.shape != (n_frames * n_tiles, p, p):
        raise ValueError(
            f"Expected tiles of shape ({n_frames * n_tiles}, {p}, {p}) for {n_frames} frame(s) "
            f"of this plan; got {tuple(tiles.shape)}."
        )
    if window.shape != (p, p):
        raise ValueError(f"Expected a ({p}, {p}) window; got {tuple(window.shape)}.")
    window = window.to(device=tiles.device, dtype=tiles.dtype)
    weighted = (tiles * window).reshape(n_frames, n_tiles, p * p).transpose(1, 2)
    numerator = F.fold(weighted, plan.padded_shape, kernel_size=p, stride=plan.stride)
    # The weight sum is the same for every frame: fold it once and broadcast.
    weights = window.reshape(1, p * p, 1).expand(1, p * p, n_tiles)
    denominator = F.fold(weights, plan.padded_shape, kernel_size=p, stride=plan.stride)
    top, _, left, _ = plan.pad
    height, width = plan.frame_shape
    crop = (slice(None), 0, slice(top, top + height), slice(left, left + width))
    return numerator[crop] / denominator[crop]
