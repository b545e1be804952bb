"""Risk analysis and risk-aware normalization (Adaptive-SN2N, method.md §3).

Everything that runs per frame or per tile is written in torch so the same code runs on
CPU and CUDA.  Only the display/decision helpers (:class:`RiskMap`, :func:`analyze_risk`,
:func:`decide_dataset_mode`) hand numpy back.

Why risk-aware normalization: min-max normalizing a patch by its own range ``ΔP`` scales
its noise variance by ``1/ΔP²``.  In a dark, flat background patch ``ΔP`` is only the noise
range (≈7σ), so local normalization stretches pure noise to full contrast and the network
learns to "complete" it into fake structure.  High-risk patches therefore keep the
frame-level scale; low-risk (textured) patches may use their own range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, get_args

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sn2n_live.config import NormalizationPolicy

__all__ = [
    "DEFAULT_THRESHOLDS",
    "NormalizationPolicy",
    "RiskClass",
    "RiskMap",
    "RiskThresholds",
    "TileMode",
    "analyze_risk",
    "classify_risk",
    "decide_dataset_mode",
    "denormalize",
    "frame_scale",
    "image_scale",
    "normalize_tiles",
    "patch_statistics",
]

TileMode = Literal["global", "local", "per_patch"]
# How a frame's image-wise scale is set: "min_clip" (official: frame minimum to the clip
# percentile, values clipped into [0, 1]) or "background" (background floor to the clip
# percentile, unclipped, so noise below the background and signal above the percentile
# keep their values and no bias comes from cutting them off).
ScaleKind = Literal["min_clip", "background"]

# A patch whose std is at or below this is treated as flat: its skewness is undefined and
# reported as 0 (the official aSN2N rule).
_FLAT_STD = 1e-6


class RiskThresholds(BaseModel):
    """Thresholds of the Adaptive-SN2N risk rules (method.md §3.1).

    Defaults are the values of the official aSN2N data-generation script. Means and standard
    deviations are in units of the image-normalized range ``[0, 1]``.

    Attributes
    ----------
    patch_size
        Side of the square, non-overlapping analysis patches (pixels).
    clip_percentile
        Percentile of each frame used as the top of the image-wise scale.
    background_mean_max, background_std_max
        R1, first clause: ``mean <= background_mean_max and std <= background_std_max``.
    background_skew_max, background_skew_std_max
        R1, second clause: ``skew <= background_skew_max and std <= background_skew_std_max``.
    sparse_mean_max, sparse_std_min, sparse_skew_min
        R2: ``mean <= sparse_mean_max and std >= sparse_std_min and skew >= sparse_skew_min``.
    dataset_high_risk_fraction
        The ``dataset`` policy picks global normalization when the pooled high-risk patch
        fraction is strictly above this value.
    noise_aware
        Measure the rules on the *signal*, not the raw pixels (sn2n-live's extension;
        ``False`` reproduces the official analysis). Each patch's noise variance is
        estimated from its own diagonal twins (``Var(A - B)`` equals the per-pixel noise
        variance) and removed from the patch variance, and patch means are measured from
        the frame's background floor (the darkest patch mean) instead of its darkest,
        noise-dominated pixel. At low photon counts raw patch statistics are dominated by
        shot and read noise, so the official rules flag nothing and every policy falls
        back to patch-wise normalization exactly where it hallucinates most.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    patch_size: int = Field(64, ge=4)
    clip_percentile: float = Field(99.99, gt=0.0, le=100.0)
    background_mean_max: float = Field(0.20, ge=0.0, le=1.0)
    background_std_max: float = Field(0.028, ge=0.0, le=1.0)
    background_skew_max: float = 0.0
    background_skew_std_max: float = Field(0.05, ge=0.0, le=1.0)
    sparse_mean_max: float = Field(0.30, ge=0.0, le=1.0)
    sparse_std_min: float = Field(0.075, ge=0.0, le=1.0)
    sparse_skew_min: float = 3.0
    dataset_high_risk_fraction: float = Field(0.10, ge=0.0, le=1.0)
    noise_aware: bool = True


DEFAULT_THRESHOLDS = RiskThresholds()


class RiskClass(IntEnum):
    """Risk class of one patch: LOW may be normalized locally, the others may not."""

    LOW = 0
    BACKGROUND = 1  # R1: weak, flat background
    SPARSE = 2  # R2: a few bright objects on a dark background


def _unit_scale(
    x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, clip: bool = True
) -> torch.Tensor:
    """Return ``(x - lo) / (hi - lo)`` (clipped to [0, 1] if ``clip``), 0 wherever ``hi <= lo``.

    ``lo``/``hi`` must already broadcast against ``x``.  A flat range keeps ``hi == lo`` (so
    that ``denormalize`` reproduces it exactly) and maps to 0 instead of NaN.
    """
    span = hi - lo
    valid = span > 0
    y = (x - lo) / torch.where(valid, span, torch.ones_like(span))
    y = torch.where(valid, y, torch.zeros_like(y))
    return y.clamp_(0.0, 1.0) if clip else y


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.to(torch.float32)


def image_scale(
    frames: torch.Tensor, clip_percentile: float = 99.99
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-wise reference scale of each frame.

    Parameters
    ----------
    frames
        ``(N, H, W)`` raw frames (any real dtype; computed in float32).
    clip_percentile
        Percentile that sets the top of the scale, in ``(0, 100]``; linear interpolation
        between order statistics, as ``numpy.percentile``.

    Returns
    -------
    lo, hi
        ``(N,)`` float32 on the frames' device: ``lo`` is the frame minimum, ``hi`` the
        percentile.  If the percentile collapses onto the minimum (fewer than
        ``100 - clip_percentile`` % of the pixels are above it) ``hi`` falls back to the
        maximum, so ``hi == lo`` only for a truly flat frame; such a frame keeps
        ``hi == lo`` so that normalizing and de-normalizing reproduces it exactly.
    """
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"image_scale: frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.ndim != 3:
        raise ValueError(
            f"image_scale: frames must be (N, H, W), got shape {tuple(frames.shape)}; "
            "add a leading axis for a single frame (frames[None])"
        )
    if frames.numel() == 0:
        raise ValueError(f"image_scale: frames is empty (shape {tuple(frames.shape)})")
    if not 0.0 < clip_percentile <= 100.0:
        raise ValueError(f"image_scale: clip_percentile must be in (0, 100], got {clip_percentile}")
    flat = frames.reshape(frames.shape[0], -1).to(torch.float32)
    count = flat.shape[1]
    position = clip_percentile / 100.0 * (count - 1)
    k = math.floor(position)
    frac = position - k
    # kthvalue is 1-based and batched over rows: a selection, cheaper than sorting.
    hi = torch.kthvalue(flat, k + 1, dim=1).values
    if frac > 0.0:
        upper = torch.kthvalue(flat, k + 2, dim=1).values
        hi = hi + frac * (upper - hi)
    lo = flat.amin(dim=1)
    hi = torch.where(hi > lo, hi, flat.amax(dim=1))
    return lo, hi


def frame_scale(
    frames: torch.Tensor, kind: ScaleKind, thresholds: RiskThresholds
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-wise normalization scale ``(lo, hi)`` of each frame.

    Parameters
    ----------
    frames
        ``(N, H, W)`` raw frames.
    kind
        ``"min_clip"``: :func:`image_scale` (minimum, clip percentile). ``"background"``:
        ``lo`` is the background floor (:func:`background_floor`, the darkest analysis
        patch's mean), ``hi`` the clip percentile (the maximum where the percentile does
        not rise above the floor). The frame minimum sits several noise sigmas below the
        background, and moves with the noise; the floor is where the background really is.
    thresholds
        Supplies ``clip_percentile`` and the analysis ``patch_size``.

    Returns
    -------
    lo, hi
        ``(N,)`` float32 on the frames' device.
    """
    lo, hi = image_scale(frames, thresholds.clip_percentile)
    if kind == "min_clip":
        return lo, hi
    if kind != "background":
        raise ValueError(f"frame_scale: kind must be 'min_clip' or 'background', got {kind!r}")
    floor = background_floor(frames, thresholds.patch_size)
    top = frames.reshape(frames.shape[0], -1).amax(dim=1).to(torch.float32)
    return floor, torch.where(hi > floor, hi, torch.maximum(top, floor))


def patch_statistics(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, population std and bias-corrected skewness of each patch.

    Parameters
    ----------
    patches
        ``(..., P, P)`` patches, already image-normalized and clipped to ``[0, 1]``.

    Returns
    -------
    mean, std, skew
        Each of shape ``(...,)``.  ``skew`` is the adjusted Fisher-Pearson coefficient
        ``G1 = g1 * sqrt(n (n - 1)) / (n - 2)`` (``scipy.stats.skew(bias=False)``), and 0
        where ``std <= 1e-6``.
    """
    if patches.ndim < 2:
        raise ValueError(
            f"patch_statistics: patches must be (..., P, P), got shape {tuple(patches.shape)}"
        )
    n = patches.shape[-1] * patches.shape[-2]
    if n < 3:
        raise ValueError(
            "patch_statistics: skewness needs at least 3 pixels per patch, got patches of "
            f"{patches.shape[-2]}x{patches.shape[-1]}"
        )
    x = _as_float(patches).flatten(-2)
    mean = x.mean(dim=-1)
    dev = x - mean.unsqueeze(-1)
    m2 = (dev * dev).mean(dim=-1)
    m3 = (dev * dev * dev).mean(dim=-1)
    std = m2.sqrt()
    flat = std <= _FLAT_STD
    safe_m2 = torch.where(flat, torch.ones_like(m2), m2)
    g1 = m3 / safe_m2.pow(1.5)
    skew = torch.where(flat, torch.zeros_like(g1), g1 * (math.sqrt(n * (n - 1)) / (n - 2)))
    return mean, std, skew


def background_floor(frames: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Background level of each frame: the lowest mean over its analysis patches.

    Parameters
    ----------
    frames
        ``(N, H, W)`` raw frames.
    patch_size
        Side of the non-overlapping patches (the whole frame if it is smaller).

    Returns
    -------
    torch.Tensor
        ``(N,)`` float32, in the frames' units.
    """
    x = _as_float(frames)
    p = min(patch_size, x.shape[-2], x.shape[-1])
    ny, nx = x.shape[-2] // p, x.shape[-1] // p
    blocks = x[:, : ny * p, : nx * p].reshape(x.shape[0], ny, p, nx, p)
    return blocks.mean(dim=(2, 4)).flatten(1).amin(dim=1)


def twin_noise_variance(patches: torch.Tensor) -> torch.Tensor:
    """Per-pixel noise variance of each patch, from its diagonal twins.

    With independent pixel noise of variance s^2, the twins A (main diagonal mean) and B
    (anti-diagonal mean) each carry s^2 / 2 and share the signal, so ``Var(A - B) = s^2``.

    Parameters
    ----------
    patches
        ``(..., P, P)`` raw patches (P even; an odd last row/column is ignored).

    Returns
    -------
    torch.Tensor
        ``(...,)`` noise variance in squared input units.
    """
    x = _as_float(patches)
    h, w = (x.shape[-2] // 2) * 2, (x.shape[-1] // 2) * 2
    x = x[..., :h, :w]
    diff = (x[..., ::2, ::2] + x[..., 1::2, 1::2] - x[..., ::2, 1::2] - x[..., 1::2, ::2]) / 2
    return diff.flatten(-2).var(dim=-1, unbiased=False)


def risk_statistics(
    patches: torch.Tensor,
    frame_lo: torch.Tensor,
    frame_hi: torch.Tensor,
    thresholds: RiskThresholds,
    floor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, std and skewness of raw patches in the units the risk rules expect.

    Parameters
    ----------
    patches
        ``(N, P, P)`` raw patches.
    frame_lo, frame_hi
        ``(N,)`` image-wise scale of each patch's frame (:func:`image_scale`).
    thresholds
        ``noise_aware`` picks the official statistics (on the clipped, image-normalized
        patch) or the noise-aware ones (see :class:`RiskThresholds`).
    floor
        ``(N,)`` background floor of each patch's frame (:func:`background_floor`), used
        when ``thresholds.noise_aware``; defaults to ``frame_lo``.
    """
    x = _as_float(patches)
    lo = frame_lo.to(device=x.device, dtype=torch.float32)[:, None, None]
    hi = frame_hi.to(device=x.device, dtype=torch.float32)[:, None, None]
    if not thresholds.noise_aware:
        return patch_statistics(_unit_scale(x, lo, hi))
    # Without a floor, measure means from the frame minimum (the official reference).
    base = (frame_lo if floor is None else floor).to(device=x.device, dtype=torch.float32)
    span = (hi[:, 0, 0] - base).clamp_min(_FLAT_STD)
    mean_raw, std_raw, skew = patch_statistics(x)
    signal_var = (std_raw.square() - twin_noise_variance(x)).clamp_min(0.0)
    return (mean_raw - base) / span, signal_var.sqrt() / span, skew


def classify_risk(
    mean: torch.Tensor, std: torch.Tensor, skew: torch.Tensor, thresholds: RiskThresholds
) -> torch.Tensor:
    """Apply the R1/R2 risk rules (method.md §3.1) elementwise.

    Parameters
    ----------
    mean, std, skew
        Patch statistics of equal shape, as from :func:`patch_statistics`.
    thresholds
        Rule thresholds.

    Returns
    -------
    torch.Tensor
        ``int8`` tensor of :class:`RiskClass` values, same shape; R1 (BACKGROUND) takes
        precedence over R2 (SPARSE).
    """
    if not (mean.shape == std.shape == skew.shape):
        raise ValueError(
            "classify_risk: mean, std and skew must have the same shape, got "
            f"{tuple(mean.shape)}, {tuple(std.shape)}, {tuple(skew.shape)}"
        )
    t = thresholds
    background = ((mean <= t.background_mean_max) & (std <= t.background_std_max)) | (
        (skew <= t.background_skew_max) & (std <= t.background_skew_std_max)
    )
    sparse = (mean <= t.sparse_mean_max) & (std >= t.sparse_std_min) & (skew >= t.sparse_skew_min)
    # torch.where rather than masked assignment: no host sync on CUDA.
    classes = torch.where(sparse, int(RiskClass.SPARSE), int(RiskClass.LOW))
    classes = torch.where(background, int(RiskClass.BACKGROUND), classes)
    return classes.to(torch.int8)


@dataclass(frozen=True)
class RiskMap:
    """Per-patch risk analysis of one frame (numpy, for display and dataset decisions).

    Attributes
    ----------
    classes
        ``(ny, nx)`` int8 :class:`RiskClass` values.
    mean, std, skew
        ``(ny, nx)`` float32 patch statistics on the image-normalized frame.
    patch_size
        Analysis patch side (pixels); patch ``(i, j)`` covers rows ``i*P:(i+1)*P`` and
        columns ``j*P:(j+1)*P``.
    lo, hi
        The frame's image-wise scale used for the statistics.
    """

    classes: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    skew: np.ndarray
    patch_size: int
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if self.classes.ndim != 2 or self.classes.size == 0:
            raise ValueError(
                f"RiskMap: classes must be a non-empty (ny, nx) array, got shape "
                f"{self.classes.shape}"
            )
        for name in ("mean", "std", "skew"):
            shape = getattr(self, name).shape
            if shape != self.classes.shape:
                raise ValueError(
                    f"RiskMap: {name} has shape {shape}, expected {self.classes.shape} like classes"
                )

    @property
    def high_risk_fraction(self) -> float:
        """Fraction of patches classified BACKGROUND or SPARSE."""
        return float(np.count_nonzero(self.classes != RiskClass.LOW) / self.classes.size)


def analyze_risk(
    frame: np.ndarray,
    thresholds: RiskThresholds = DEFAULT_THRESHOLDS,
    *,
    device: str | torch.device = "cpu",
) -> RiskMap:
    """Risk map of one frame on non-overlapping analysis patches (method.md §3.6.2).

    The frame is scaled by its image-wise ``(lo, hi)`` (:func:`image_scale`), clipped to
    ``[0, 1]``, and cut into ``patch_size`` squares with stride ``patch_size``; partial
    patches at the bottom/right edge are dropped.

    Parameters
    ----------
    frame
        ``(H, W)`` raw frame, any real dtype, with ``H, W >= thresholds.patch_size``.
    thresholds
        Risk thresholds (patch size, clip percentile, rules).
    device
        Torch device to compute on.

    Returns
    -------
    RiskMap
    """
    arr = np.asarray(frame)
    if arr.ndim != 2:
        raise ValueError(
            f"analyze_risk: frame must be 2-D (H, W), got shape {arr.shape}; "
            "analyze stacks one frame at a time"
        )
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"analyze_risk: frame must be integer or float, got dtype {arr.dtype}")
    p = thresholds.patch_size
    h, w = arr.shape
    if h < p or w < p:
        raise ValueError(
            f"analyze_risk: frame {h}x{w} is smaller than one {p}x{p} analysis patch; "
            "use a larger frame or a smaller RiskThresholds.patch_size"
        )
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError("analyze_risk: frame contains NaN or inf values")
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(device)
    lo, hi = image_scale(x[None], thresholds.clip_percentile)
    ny, nx = h // p, w // p
    patches = x[: ny * p, : nx * p].reshape(ny, p, nx, p).permute(0, 2, 1, 3).reshape(-1, p, p)
    n = patches.shape[0]
    floor = background_floor(x[None], p).expand(n) if thresholds.noise_aware else None
    mean, std, skew = risk_statistics(patches, lo.expand(n), hi.expand(n), thresholds, floor)
    classes = classify_risk(mean, std, skew, thresholds)
    return RiskMap(
        classes=classes.reshape(ny, nx).cpu().numpy(),
        mean=mean.reshape(ny, nx).cpu().numpy(),
        std=std.reshape(ny, nx).cpu().numpy(),
        skew=skew.reshape(ny, nx).cpu().numpy(),
        patch_size=p,
        lo=float(lo[0]),
        hi=float(hi[0]),
    )


def decide_dataset_mode(
    maps: Sequence[RiskMap], thresholds: RiskThresholds = DEFAULT_THRESHOLDS
) -> Literal["global", "local"]:
    """Official dataset-level decision (method.md §3.1).

    Parameters
    ----------
    maps
        Risk maps of the training frames.
    thresholds
        Supplies ``dataset_high_risk_fraction``.

    Returns
    -------
    str
        ``"global"`` if the pooled fraction of high-risk patches over all maps is strictly
        above ``dataset_high_risk_fraction``, else ``"local"``.
    """
    if len(maps) == 0:
        raise ValueError("decide_dataset_mode: need at least one RiskMap, got none")
    high = sum(int(np.count_nonzero(m.classes != RiskClass.LOW)) for m in maps)
    total = sum(int(m.classes.size) for m in maps)
    return "global" if high / total > thresholds.dataset_high_risk_fraction else "local"


def normalize_tiles(
    tiles: torch.Tensor,
    frame_lo: torch.Tensor,
    frame_hi: torch.Tensor,
    mode: TileMode,
    thresholds: RiskThresholds,
    high_risk: torch.Tensor | None = None,
    floor: torch.Tensor | None = None,
    clip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalize tiles to ``[0, 1]`` with the scale the policy assigns to each tile.

    Parameters
    ----------
    tiles
        ``(N, P, P)`` tiles in raw units.
    frame_lo, frame_hi
        ``(N,)`` image-wise scale of each tile's frame (:func:`image_scale`).
    mode
        ``"global"``: every tile uses its frame's scale.  ``"local"``: every tile uses its
        own min/max.  ``"per_patch"``: each tile is classified on its frame-normalized,
        clipped statistics; high-risk tiles use the frame scale, low-risk tiles their own
        min/max.
    thresholds
        Risk rules for ``per_patch``.
    high_risk
        Optional ``(N,)`` bool mask, only for ``per_patch``: replaces the classification
        (training classifies a window once and applies the choice to both twins).
    floor
        Optional ``(N,)`` background floor of each tile's frame, for the noise-aware
        classification in ``per_patch`` (see :func:`risk_statistics`).
    clip
        Clip the normalized values to ``[0, 1]`` (official); ``False`` keeps values outside
        the scale (``frame_scale(kind="background")``), for networks with a linear head.

    Returns
    -------
    normalized, lo, hi
        ``normalized`` is ``(N, P, P)`` float32 (clipped to ``[0, 1]`` if ``clip``);
        ``lo``/``hi`` are the ``(N,)`` float32 scale actually used, so
        ``raw ≈ denormalize(normalized, lo, hi)`` for values inside ``[lo, hi]``.  A flat
        tile has ``hi == lo`` and maps to 0.
    """
    if tiles.ndim != 3:
        raise ValueError(
            f"normalize_tiles: tiles must be (N, P, P), got shape {tuple(tiles.shape)}"
        )
    n = tiles.shape[0]
    for name, value in (("frame_lo", frame_lo), ("frame_hi", frame_hi)):
        if tuple(value.shape) != (n,):
            raise ValueError(
                f"normalize_tiles: {name} must have shape ({n},), one value per tile, got "
                f"{tuple(value.shape)}"
            )
    if mode not in get_args(TileMode):
        raise ValueError(f"normalize_tiles: mode must be one of {get_args(TileMode)}, got {mode!r}")
    if high_risk is not None:
        if mode != "per_patch":
            raise ValueError(
                f"normalize_tiles: high_risk is only used by mode 'per_patch', got mode "
                f"{mode!r}; pass high_risk=None"
            )
        if tuple(high_risk.shape) != (n,) or high_risk.dtype != torch.bool:
            raise ValueError(
                f"normalize_tiles: high_risk must be a bool tensor of shape ({n},), got "
                f"{high_risk.dtype} {tuple(high_risk.shape)}"
            )

    x = tiles.to(torch.float32)
    f_lo = frame_lo.to(device=x.device, dtype=torch.float32)
    f_hi = frame_hi.to(device=x.device, dtype=torch.float32)
    if mode == "global":
        lo, hi = f_lo, f_hi
    else:
        t_lo = x.amin(dim=(-2, -1))
        t_hi = x.amax(dim=(-2, -1))
        if mode == "local":
            lo, hi = t_lo, t_hi
        else:
            if high_risk is None:
                stats = risk_statistics(x, f_lo, f_hi, thresholds, floor)
                high = classify_risk(*stats, thresholds) != int(RiskClass.LOW)
            else:
                high = high_risk.to(x.device)
            lo = torch.where(high, f_lo, t_lo)
            hi = torch.where(high, f_hi, t_hi)
    return _unit_scale(x, lo[:, None, None], hi[:, None, None], clip), lo, hi


def denormalize(y: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Undo :func:`normalize_tiles`: ``y * (hi - lo) + lo`` per tile.

    Parameters
    ----------
    y
        ``(N, ...)`` normalized tiles, e.g. ``(N, P, P)`` or network output ``(N, 1, P, P)``.
    lo, hi
        ``(N,)`` scales returned by :func:`normalize_tiles`; broadcast over the trailing axes.

    Returns
    -------
    torch.Tensor
        float32, same shape as ``y``, in raw units.
    """
    if y.ndim < 1 or tuple(lo.shape) != (y.shape[0],) or tuple(hi.shape) != (y.shape[0],):
        raise ValueError(
            "denormalize: lo and hi must have shape (N,) matching y's leading axis, got y "
            f"{tuple(y.shape)}, lo {tuple(lo.shape)}, hi {tuple(hi.shape)}"
        )
    view = (-1,) + (1,) * (y.ndim - 1)
    # float32 even for half-precision engine output: fp16 cannot hold 16-bit ADU values.
    lo_b = lo.to(device=y.device, dtype=torch.float32).reshape(view)
    hi_b = hi.to(device=y.device, dtype=torch.float32).reshape(view)
    return y.to(torch.float32) * (hi_b - lo_b) + lo_b
