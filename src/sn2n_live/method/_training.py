"""Adaptive-SN2N training: twin pairs from single noisy frames and the self-constrained fit.

Data generation follows the official aSN2N script (method.md §3.2): every frame is cut into
``patch`` windows with 50 % overlap, every window is kept, and each window is split into
diagonal twins that are Fourier up-sampled back to ``patch`` (§1.2-1.3).  The twins are then
normalized with the scale the normalization policy assigns to the window (§3.6).

Training minimizes the SN2N self-constrained loss (§2.2) with Adam (§2.3) on real
mini-batches (not the upstream batch-size-1 loader), online dihedral augmentation (§1.5),
a held-out validation split, ReduceLROnPlateau on the *validation* loss (SN2N steps it on
the last batch's loss, a noisy signal), early stopping, a wall-clock budget, and exact
checkpoint/resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import sn2n_live
from sn2n_live.config import NormalizationPolicy, UNetPreset
from sn2n_live.method._package import InferenceMode, ModelPackage
from sn2n_live.method._photometry import photometry_record
from sn2n_live.method._recipes import RECIPES, Recipe
from sn2n_live.method._risk import (
    RiskClass,
    RiskThresholds,
    ScaleKind,
    TileMode,
    analyze_risk,
    background_floor,
    classify_risk,
    decide_dataset_mode,
    frame_scale,
    normalize_tiles,
    risk_statistics,
)
from sn2n_live.method._twins import UpsampleMode, make_twins, make_twins_tensor
from sn2n_live.method._unet import PRESETS, Head, UNet, UNetConfig

__all__ = [
    "StopReason",
    "TrainingConfig",
    "TrainingPairs",
    "TrainingProgress",
    "data_sha256",
    "make_batches",
    "make_training_pairs",
    "random_dihedral",
    "resolve_device",
    "train",
]

log = logging.getLogger("sn2n_live.method")

StopReason = Literal["epochs", "early_stopping", "time_budget"]
LossKind = Literal["l1", "l2"]
Schedule = Literal["plateau", "cosine"]
Autocast = Literal["off", "bf16", "auto"]
# Fraction of the run spent warming the cosine schedule's learning rate up from a tenth.
_WARMUP_FRACTION = 0.05

_CHECKPOINT_FORMAT = "sn2n-live-checkpoint"
_CHECKPOINT_VERSION = 1
# Settings that may change between a checkpoint and its resumption: they only bound the
# run or choose the hardware, so the remaining trajectory is unchanged by them. A cosine
# schedule spans the run's epochs, so there `epochs` shapes the trajectory and must stay.
_RESUMABLE_FIELDS = frozenset({"epochs", "max_minutes", "device"})


def _resumable_fields(config: TrainingConfig) -> frozenset[str]:
    return _RESUMABLE_FIELDS - {"epochs"} if config.schedule == "cosine" else _RESUMABLE_FIELDS


class TrainingConfig(BaseModel):
    """Settings of one Adaptive-SN2N training run.

    Parameters
    ----------
    recipe : Recipe
        Named defaults for ``upsample``, ``head``, ``loss``, ``scale``, ``inference``,
        ``lr``, ``betas``, ``batch_size``, ``schedule``, ``autocast`` and
        ``consistency_weight`` (see ``RECIPES``): ``"twin"``
        (default, sn2n-live's measured best) or ``"paper"`` (the published method). Any of
        those fields given explicitly overrides the recipe.
    preset : {"paper", "lite"}
        Name of a U-Net in ``PRESETS`` (``"paper"``: the published 17.26 M network,
        ``"lite"``: a small one). Ignored when ``unet`` is given.
    unet : UNetConfig or None
        Explicit network configuration, overriding ``preset`` (its ``head`` is replaced by
        this config's ``head``).
    head : {"sigmoid", "linear"}
        Output activation of the U-Net.
    loss : {"l1", "l2"}
        Distance in the self-constrained loss: L1 (SN2N; its minimizer is the median) or
        L2 (the mean, unbiased for Poisson counts).
    scale : {"min_clip", "background"}
        Image-wise normalization scale (see ``frame_scale``); ``background`` is unclipped.
    inference : {"frame", "twins"}
        What inference feeds the network: the raw frame (paper) or both up-sampled twins
        of it, averaged (``twins``; training then builds twins from whole frames, exactly
        as inference does). ``twins`` needs ``upsample="exact"``.
    compensate : bool
        Undo the diagonal means' low-pass on the twins (``compensate_twin_sampling``), in
        training and inference alike; needs ``inference="twins"``.
    autocast : {"off", "bf16", "auto"}
        Mixed precision of the training steps: ``"bf16"`` autocast (about 1.8x the steps per
        second of float32 on a CPU with bf16 instructions), ``"off"``, or ``"auto"``: bf16
        where the device computes it natively (CUDA with bf16, CPUs with AVX-512-bf16 or
        AMX), else off. The loss, validation and the saved weights stay float32.
    schedule : {"plateau", "cosine"}
        Learning rate: halve on a validation plateau (``plateau``), or warm up over the
        first 5 % of the run and decay along a cosine to 0 at its end (``cosine``; the end
        is ``epochs`` or, when sooner, the time budget).
    policy : {"dataset", "per_patch", "global", "local"}
        Normalization policy (method.md §3.6). ``dataset`` is the official aSN2N rule.
    thresholds : RiskThresholds
        Risk rules and the image-scale clip percentile.
    upsample : {"official", "exact", "none"}
        Twin up-sampling (see ``make_twins``). ``"none"`` trains on half-size twins.
    patch : int
        Training window side (pixels): a power of two >= 16; the network input
        (``patch``, or ``patch // 2`` without up-sampling) must be a multiple of
        ``2**depth``. Windows are taken with stride ``patch // 2``.
    batch_size : int
        Pairs per optimizer step.
    epochs : int
        Maximum number of passes over the training pairs.
    max_minutes : float or None
        Wall-clock budget of one ``train`` call (data preparation included); training stops
        after the step that exceeds it, then runs a final validation pass.
    lr : float
        Adam learning rate (SN2N: 2e-4).
    betas : tuple of float
        Adam betas (SN2N: (0.5, 0.999)).
    consistency_weight : float
        λ of the self-constrained loss (SN2N: 1); 0 keeps only the twin-to-twin terms.
    val_fraction : float
        Fraction of the windows held out for validation, in (0, 0.5).
    patience : int
        Early stopping after this many epochs without a better validation loss; the LR
        halves after ``max(2, patience // 2)`` such epochs.
    device : str
        ``"auto"`` (CUDA if available, else CPU) or a torch device string.
    seed : int
        Seed of the weight init, the validation split, shuffling and augmentation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    recipe: Recipe = Recipe.TWIN
    preset: UNetPreset = UNetPreset.PAPER
    unet: UNetConfig | None = None
    head: Head
    loss: LossKind
    scale: ScaleKind
    inference: InferenceMode
    compensate: bool
    schedule: Schedule
    autocast: Autocast
    policy: NormalizationPolicy = "dataset"
    thresholds: RiskThresholds = Field(default_factory=RiskThresholds)
    upsample: UpsampleMode
    patch: int = 64
    batch_size: int = Field(ge=1)
    epochs: int = Field(100, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    lr: float = Field(gt=0)
    betas: tuple[float, float]
    consistency_weight: float = Field(ge=0)
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    patience: int = Field(10, ge=1)
    device: str = "auto"
    seed: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = data.get("recipe", Recipe.TWIN)
        try:
            recipe = Recipe(name)
        except ValueError:
            raise ValueError(
                f"recipe must be one of {[r.value for r in Recipe]}, got {name!r}"
            ) from None
        return {**RECIPES[recipe], **data, "recipe": recipe}

    @field_validator("betas")
    @classmethod
    def _check_betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"betas must both be in [0, 1), got {value}")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value == "auto":
            return value
        try:
            torch.device(value)
        except RuntimeError as exc:
            raise ValueError(
                f"device must be 'auto' or a torch device such as 'cpu' or 'cuda:0', got {value!r}"
            ) from exc
        return value

    @model_validator(mode="after")
    def _check_network_fit(self) -> TrainingConfig:
        if self.compensate and self.inference != "twins":
            raise ValueError(
                "compensate=True needs inference='twins' (the compensation is applied to the "
                "whole-frame twins that twin inference builds)"
            )
        if self.inference == "twins" and self.upsample != "exact":
            raise ValueError(
                f"inference='twins' needs upsample='exact' (the twins are up-sampled on the "
                f"exact 2x grid at inference), got upsample={self.upsample!r}"
            )
        p = self.patch
        if p < 16 or p & (p - 1):
            raise ValueError(f"patch must be a power of two >= 16 (e.g. 64), got {p}")
        size, multiple = self.input_size, self.unet_config.multiple
        if size < multiple:
            what = "patch // 2 (upsample='none' trains on half-size twins)"
            raise ValueError(
                f"the network input {what if self.upsample == 'none' else 'patch'} = {size} "
                f"is smaller than 2**depth = {multiple} of the U-Net; use patch >= "
                f"{multiple * (2 if self.upsample == 'none' else 1)} or a shallower U-Net"
            )
        return self

    @property
    def unet_config(self) -> UNetConfig:
        """The U-Net this run trains: ``unet`` if given, else ``PRESETS[preset]``, with ``head``."""
        base = self.unet if self.unet is not None else PRESETS[self.preset]
        return base.model_copy(update={"head": self.head})

    @property
    def input_size(self) -> int:
        """Side of the training pairs fed to the network."""
        return self.patch // 2 if self.upsample == "none" else self.patch


@dataclass(frozen=True)
class TrainingPairs:
    """Normalized twin pairs ready for training.

    Attributes
    ----------
    a, b
        ``(M, 1, S, S)`` float32 CPU tensors in ``[0, 1]``; ``S`` is the patch (or half of
        it with ``upsample="none"``).
    high_risk
        ``(M,)`` bool: the window was classified high risk on its frame-normalized
        statistics (used by ``per_patch``, reported for all policies).
    resolved_mode
        The normalization actually applied (``dataset`` resolves to global or local).
    dataset_high_risk_fraction
        Pooled high-risk fraction of the risk analysis that decided the ``dataset`` policy;
        None for the other policies.
    """

    a: torch.Tensor
    b: torch.Tensor
    high_risk: torch.Tensor
    resolved_mode: TileMode
    dataset_high_risk_fraction: float | None

    @property
    def n_pairs(self) -> int:
        """Number of pairs ``M``."""
        return int(self.a.shape[0])

    @property
    def high_risk_fraction(self) -> float:
        """Fraction of windows classified high risk."""
        return float(self.high_risk.float().mean())


def resolve_device(device: str) -> torch.device:
    """Return the torch device for a config value (``"auto"``: CUDA if available, else CPU).

    Parameters
    ----------
    device : str
        ``"auto"`` or a torch device string.

    Returns
    -------
    torch.device
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was requested but CUDA is not available here; use "
            "device='auto' or 'cpu'"
        )
    return resolved


def _autocast_dtype(setting: Autocast, device: torch.device) -> torch.dtype | None:
    """Return the autocast dtype of the training steps on ``device``, or None (float32)."""
    if setting == "off":
        return None
    native = (
        torch.cuda.is_bf16_supported()
        if device.type == "cuda"
        else device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    return torch.bfloat16 if setting == "bf16" or native else None


def data_sha256(frames: np.ndarray) -> str:
    """SHA-256 of an array's bytes, shape and dtype (identifies the training data).

    Parameters
    ----------
    frames : numpy.ndarray
        Any array.

    Returns
    -------
    str
        Hex digest.
    """
    arr = np.ascontiguousarray(frames)
    digest = hashlib.sha256(f"{arr.dtype.str}|{arr.shape}|".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def _check_frames(frames: np.ndarray, config: TrainingConfig) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 3:
        raise ValueError(
            f"training frames must be a (N, H, W) stack, got shape {arr.shape}; reshape "
            "extra leading axes into N (frames.reshape(-1, H, W)) or add one for a single "
            "frame (frame[None])"
        )
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"training frames must be integer or float, got dtype {arr.dtype}")
    n, h, w = arr.shape
    if n == 0:
        raise ValueError("training frames are empty (N = 0); pass at least one frame")
    if h < config.patch or w < config.patch:
        raise ValueError(
            f"training frames are {h}x{w}, smaller than the {config.patch}x{config.patch} "
            "training patch; use a smaller `patch` or larger frames"
        )
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"training frames contain {int(bad.sum())} NaN/inf values (first at index "
                f"{where}); clean or mask them before training"
            )
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        raise ValueError(
            f"training frames are constant ({lo:g} everywhere in all {n} frames): there is "
            "nothing to learn; check the camera, shutter and laser, and acquire pilot "
            "frames of the sample"
        )
    return arr


def signal_to_noise_ratio(frames: np.ndarray) -> tuple[float, float]:
    """Variance of the diagonal twins' sum over that of their difference, and its noise floor.

    The two diagonals of every 2x2 cell see the same content with independent noise, so
    ``var(A + B) / var(A - B)`` is 1 for pure noise (to within ``floor - 1``, three
    standard errors for the pixel count) and grows with the signal's variance.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(N, H, W)`` frames, each at least 2x2.

    Returns
    -------
    tuple of float
        The ratio and the largest value pure noise reaches (refuse below it).
    """
    x = np.asarray(frames, dtype=np.float64)
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    a, b = x[:, 0:h:2, 0:w:2], x[:, 1:h:2, 1:w:2]
    difference = float(np.var(a - b))
    ratio = float(np.var(a + b)) / difference if difference > 0 else math.inf
    return ratio, 1.0 + 3.0 * math.sqrt(4.0 / a.size)


def _check_signal(frames: np.ndarray) -> None:
    ratio, floor = signal_to_noise_ratio(frames)
    if ratio <= floor:
        raise ValueError(
            f"training frames show no signal above their noise (twin sum/difference "
            f"variance ratio {ratio:.3f}, pure noise reaches {floor:.3f}): a model trained "
            "on them would learn nothing. Acquire the pilot at the dose of the live run "
            "(laser power, exposure) on the sample (from Python, train(..., check_signal=False) "
            "trains on noise deliberately)"
        )


def _frame_twins(
    frame: np.ndarray, config: TrainingConfig, mode: TileMode
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Twin pairs ``(L, S, S)`` of every window of one frame, plus the window risk mask."""
    th = config.thresholds
    x = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))
    lo, hi = frame_scale(x[None], config.scale, th)
    p = config.patch
    windows = x.unfold(0, p, p // 2).unfold(1, p, p // 2).reshape(-1, p, p)
    n = windows.shape[0]
    frame_lo, frame_hi = lo.expand(n), hi.expand(n)
    floor = background_floor(x[None], th.patch_size).expand(n) if th.noise_aware else None
    stats = risk_statistics(windows, frame_lo, frame_hi, th, floor)
    high_risk = classify_risk(*stats, th) != int(RiskClass.LOW)
    if config.inference == "twins":
        # Twins of the whole (even-cropped) frame, windowed afterwards: inference builds
        # them the same way, so the network sees one distribution in training and use.
        even = x[: x.shape[0] // 2 * 2, : x.shape[1] // 2 * 2]
        whole_a, whole_b = make_twins_tensor(even, compensate=config.compensate)
        twin_a = whole_a.unfold(0, p, p // 2).unfold(1, p, p // 2).reshape(-1, p, p)
        twin_b = whole_b.unfold(0, p, p // 2).unfold(1, p, p // 2).reshape(-1, p, p)
        # (Cropping an odd side by one pixel keeps the window count: P and P/2 are even.)
        scale_lo, scale_hi = frame_lo, frame_hi
    else:
        # The official twins are built on the frame shifted to start at 0 (its [0, 255]
        # scale), so the up-sampler's clamp of negative ringing cuts at the frame minimum.
        shifted = (windows - lo).numpy()
        np_a, np_b = make_twins(shifted, config.upsample)
        twin_a, twin_b = torch.from_numpy(np_a), torch.from_numpy(np_b)
        scale_hi = (hi - lo).expand(n)
        scale_lo = torch.zeros_like(scale_hi)
    clip = config.scale == "min_clip"
    mask = high_risk if mode == "per_patch" else None
    a, _, _ = normalize_tiles(twin_a, scale_lo, scale_hi, mode, th, high_risk=mask, clip=clip)
    b, _, _ = normalize_tiles(twin_b, scale_lo, scale_hi, mode, th, high_risk=mask, clip=clip)
    return a, b, high_risk


def _pairs_from_checked(frames: np.ndarray, config: TrainingConfig) -> TrainingPairs:
    ratio: float | None = None
    mode: TileMode
    if config.policy == "dataset":
        maps = [analyze_risk(frame, config.thresholds) for frame in frames]
        mode = decide_dataset_mode(maps, config.thresholds)
        high = sum(int(np.count_nonzero(m.classes != RiskClass.LOW)) for m in maps)
        ratio = high / sum(int(m.classes.size) for m in maps)
    else:
        mode = config.policy
    parts = [_frame_twins(frame, config, mode) for frame in frames]
    a = torch.cat([part[0] for part in parts]).unsqueeze(1).contiguous()
    b = torch.cat([part[1] for part in parts]).unsqueeze(1).contiguous()
    high_risk = torch.cat([part[2] for part in parts])
    return TrainingPairs(
        a=a, b=b, high_risk=high_risk, resolved_mode=mode, dataset_high_risk_fraction=ratio
    )


def make_training_pairs(frames: np.ndarray, config: TrainingConfig) -> TrainingPairs:
    """Build normalized SN2N twin pairs from noisy frames (aSN2N data generation).

    Each frame is cut into ``config.patch`` windows with stride ``patch // 2`` (all kept;
    ``floor((H - P) / (P / 2)) + 1`` per axis), each window is split into diagonal twins
    Fourier up-sampled back to the patch size, and both twins are normalized alike:

    - ``global``: by the frame's image scale ``(min, p{clip_percentile})``;
    - ``local``: each twin by its own min/max (official aSN2N local mode);
    - ``per_patch``: the window is classified on its frame-normalized statistics; high-risk
      windows use the frame scale for both twins, low-risk windows each twin's min/max;
    - ``dataset``: every frame's risk map is pooled and the official rule picks global or
      local.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(N, H, W)`` noisy frames of any real dtype, each at least ``patch`` on a side.
    config : TrainingConfig
        Patch, twin up-sampling, normalization policy and thresholds.

    Returns
    -------
    TrainingPairs
    """
    return _pairs_from_checked(_check_frames(frames, config), config)


def make_batches(n_samples: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffle ``range(n_samples)`` and cut it into full mini-batches.

    Parameters
    ----------
    n_samples : int
        Number of training pairs (>= 1).
    batch_size : int
        Pairs per batch; with fewer samples than that, one batch holds them all.
    generator : torch.Generator
        Source of the permutation (advanced by the call).

    Returns
    -------
    list of torch.Tensor
        ``max(1, n_samples // batch_size)`` int64 index tensors of equal length; the
        remainder of the permutation is dropped (a fresh shuffle each epoch uses it).
    """
    if n_samples < 1 or batch_size < 1:
        raise ValueError(
            f"make_batches: need n_samples >= 1 and batch_size >= 1, got {n_samples} and "
            f"{batch_size}"
        )
    size = min(batch_size, n_samples)
    order = torch.randperm(n_samples, generator=generator)
    return list(order[: (n_samples // size) * size].split(size))


def _dihedral_index(size: int) -> torch.Tensor:
    """``(8, size*size)`` gather maps of the 8 dihedral transforms of a square image."""
    grid = torch.arange(size * size).reshape(size, size)
    maps = [
        torch.rot90(base, k, dims=(0, 1)).reshape(-1)
        for base in (grid, grid.flip(1))
        for k in range(4)
    ]
    return torch.stack(maps)


def random_dihedral(
    a: torch.Tensor, b: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random dihedral transform per pair, the same to both twins.

    Parameters
    ----------
    a, b : torch.Tensor
        ``(B, C, S, S)`` twins.
    generator : torch.Generator
        CPU generator that draws the transforms (one of 8 per pair, identity included).

    Returns
    -------
    tuple of torch.Tensor
        The transformed twins, same shape and device.
    """
    n, c, h, w = a.shape
    if h != w or a.shape != b.shape:
        raise ValueError(
            f"random_dihedral: twins must be equal square (B, C, S, S) batches, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    choice = torch.randint(0, 8, (n,), generator=generator)
    # One gather for the whole batch instead of a Python loop over samples.
    index = _dihedral_index(h)[choice].to(a.device).unsqueeze(1).expand(n, c, h * w)
    return (
        a.reshape(n, c, h * w).gather(2, index).reshape(a.shape),
        b.reshape(n, c, h * w).gather(2, index).reshape(b.shape),
    )


def _sn2n_loss(
    model: UNet,
    a: torch.Tensor,
    b: torch.Tensor,
    weight: float,
    kind: LossKind,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """Self-constrained loss ``(d(f(A), B) + d(f(B), A) + λ d(f(A), f(B))) / (2 + λ)``.

    ``d`` is the mean absolute (``l1``) or mean squared (``l2``) difference, computed in
    float32 even when the network runs under ``autocast``.
    """
    # One forward pass for both twins: half the kernel launches, and BatchNorm sees the pair.
    with torch.autocast(a.device.type, dtype=autocast or torch.float32, enabled=bool(autocast)):
        out = model(torch.cat([a, b])).float()
    fa, fb = out[: a.shape[0]], out[a.shape[0] :]

    def distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        diff = x - y
        return diff.abs().mean() if kind == "l1" else diff.square().mean()

    loss = distance(fa, b) + distance(fb, a)
    if weight:
        loss = loss + weight * distance(fa, fb)
    return loss / (2.0 + weight)


def _cosine_factor(progress: float) -> float:
    """Learning-rate factor at ``progress`` in [0, 1] of a run: warm-up, then cosine to 0."""
    if progress < _WARMUP_FRACTION:
        return 0.1 + 0.9 * progress / _WARMUP_FRACTION
    done = (min(progress, 1.0) - _WARMUP_FRACTION) / (1.0 - _WARMUP_FRACTION)
    return 0.5 * (1.0 + math.cos(math.pi * done))


@torch.no_grad()
def _validation_loss(
    model: UNet,
    a: torch.Tensor,
    b: torch.Tensor,
    weight: float,
    kind: LossKind,
    batch_size: int,
    device: torch.device,
) -> float:
    """Mean loss over the held-out pairs: eval-mode BN, no augmentation, fixed order."""
    model.eval()
    total = 0.0
    for start in range(0, a.shape[0], batch_size):
        xa = a[start : start + batch_size].to(device)
        xb = b[start : start + batch_size].to(device)
        total += float(_sn2n_loss(model, xa, xb, weight, kind)) * xa.shape[0]
    return total / a.shape[0]


def _split(
    n_pairs: int, config: TrainingConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, validation) window indices; validation gets at least one window."""
    n_val = max(1, round(config.val_fraction * n_pairs))
    if n_pairs - n_val < 1:
        raise ValueError(
            f"only {n_pairs} training window(s): need at least 2 (one to train, one to "
            "validate); use more or larger frames or a smaller `patch`"
        )
    order = rng.permutation(n_pairs)
    return torch.from_numpy(np.sort(order[n_val:])), torch.from_numpy(np.sort(order[:n_val]))


def _fingerprint(
    data_hash: str, config: TrainingConfig, init: ModelPackage | None
) -> dict[str, str]:
    settings = config.model_dump(mode="json", exclude=set(_resumable_fields(config)))
    return {
        "data_sha256": data_hash,
        "config": json.dumps(settings, sort_keys=True),
        "init_sha256": "" if init is None else init.sha256,
    }


def _init_record(init: ModelPackage) -> dict[str, Any]:
    """Return what a fine-tuned package records of its initial weights."""
    return {
        "weights_sha256": init.sha256,
        "name": init.provenance.get("name"),
        "data_sha256": init.provenance.get("data_sha256"),
        "created": init.provenance.get("created"),
    }


def _check_init(init: ModelPackage, config: TrainingConfig) -> None:
    """Refuse initial weights that this run's network or twins cannot continue from."""
    wanted = {
        "unet": config.unet_config,
        "inference": config.inference,
        "scale": config.scale,
        "upsample": config.upsample,
        "compensate": config.compensate,
    }
    got = {name: getattr(init, name) for name in wanted}
    differ = [name for name in wanted if got[name] != wanted[name]]
    if differ:
        shown = "; ".join(f"{name}: package {got[name]!r}, run {wanted[name]!r}" for name in differ)
        raise ValueError(
            f"init: the initial model was trained with other settings ({shown}); train with "
            "the settings it was trained with (the shipped pretrained model: recipe 'twin', "
            "preset 'lite') or without init"
        )


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class _RunState:
    """Everything that evolves during training (what a checkpoint stores)."""

    epoch: int = 0  # completed epochs
    best_state: dict[str, torch.Tensor] | None = None
    best_val: float = math.inf
    best_epoch: int = 0
    since_best: int = 0
    seconds: float = 0.0
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    steps: int = 0  # optimizer steps taken, including those of a budget-cut last epoch


@dataclass(frozen=True)
class _Data:
    """One run's twin pairs, split into training and validation, and what identifies them."""

    pairs: TrainingPairs
    train_a: torch.Tensor
    train_b: torch.Tensor
    val_a: torch.Tensor
    val_b: torch.Tensor
    data_hash: str
    fingerprint: dict[str, str]
    photometry: dict[str, Any]

    @property
    def n_train(self) -> int:
        return int(self.train_a.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.val_a.shape[0])


@dataclass(frozen=True)
class _Fit:
    """The objects that, with a ``_RunState``, carry a run's trajectory (and its checkpoint)."""

    model: UNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    generator: torch.Generator  # shuffling and augmentation
    rng: np.random.Generator  # drew the validation split
    device: torch.device
    step_dtype: torch.dtype | None  # autocast of the training steps; None: float32


def _save_checkpoint(
    path: Path,
    *,
    fingerprint: dict[str, str],
    run: _RunState,
    fit: _Fit,
) -> None:
    payload = {
        "format": _CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        "fingerprint": fingerprint,
        "epoch": run.epoch,
        "model": _cpu_state(fit.model),
        "optimizer": fit.optimizer.state_dict(),
        "scheduler": fit.scheduler.state_dict(),
        "best_state": run.best_state,
        "best_val": run.best_val,
        "best_epoch": run.best_epoch,
        "since_best": run.since_best,
        "seconds": run.seconds,
        "steps": run.steps,
        "history": {"train_loss": run.train_loss, "val_loss": run.val_loss, "lr": run.lr},
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(fit.device) if fit.device.type == "cuda" else None,
            "generator": fit.generator.get_state(),
            "numpy": fit.rng.bit_generator.state,
        },
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename: an interrupted save never leaves a torn file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_checkpoint(
    path: Path, fingerprint: dict[str, str], resumable: frozenset[str]
) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"resume_from: checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/truncated files
        raise ValueError(
            f"resume_from: {path} is not a readable sn2n-live checkpoint ({exc}); it may be "
            "truncated or from another tool, start a fresh run instead"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"resume_from: {path} is not an sn2n-live training checkpoint")
    if payload.get("version") != _CHECKPOINT_VERSION:
        raise ValueError(
            f"resume_from: {path} has checkpoint version {payload.get('version')}, this "
            f"sn2n-live reads version {_CHECKPOINT_VERSION}; start a fresh run"
        )
    saved = payload["fingerprint"]
    if saved["data_sha256"] != fingerprint["data_sha256"]:
        raise ValueError(
            f"resume_from: {path} was written for different training frames (data sha256 "
            f"{saved['data_sha256'][:12]}…, these frames {fingerprint['data_sha256'][:12]}…); "
            "resume with the same frames or start a fresh run"
        )
    if saved.get("init_sha256", "") != fingerprint["init_sha256"]:
        raise ValueError(
            f"resume_from: {path} was written for a run with other initial weights (init); "
            "resume with the init it started from or start a fresh run"
        )
    if saved["config"] != fingerprint["config"]:
        old, new = json.loads(saved["config"]), json.loads(fingerprint["config"])
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        raise ValueError(
            f"resume_from: {path} was written with different training settings "
            f"({', '.join(changed)}); only {sorted(resumable)} may change on resume. "
            "Use the original settings or start a fresh run"
        )
    return payload


@dataclass(frozen=True)
class TrainingProgress:
    """Where a :func:`train` call is, for a progress display (its ``progress`` callback).

    Attributes
    ----------
    epoch : int
        The epoch being trained, 1-based; in the first report of a call, before any
        step, the epochs already completed (0, or those of the resumed checkpoint).
    epochs : int
        Maximum number of epochs (``config.epochs``).
    step : int
        Optimizer steps done in this epoch; 0 before its first.
    steps : int
        Steps per epoch.
    run_step : int
        Steps of the whole run done: completed epochs times ``steps``, plus ``step``.
    run_steps : int
        Steps of the whole run, ``epochs * steps``.
    train_loss : float or None
        Mean training loss of this epoch's steps so far; None before the first step.
    val_loss : float or None
        The latest validation loss; None before the first validation.
    elapsed_s : float
        Seconds since ``train`` was called (data preparation included).
    remaining_s : float or None
        Estimated seconds until training ends: the step rate's estimate, capped by the
        time budget; None while there is neither a rate nor a budget.
    """

    epoch: int
    epochs: int
    step: int
    steps: int
    run_step: int
    run_steps: int
    train_loss: float | None
    val_loss: float | None
    elapsed_s: float
    remaining_s: float | None


def _seconds_left(
    stepping_s: float, steps_done: int, steps_left: int, budget_left_s: float | None
) -> float | None:
    """Seconds until training ends: the step rate's estimate, capped by the budget."""
    left = stepping_s / steps_done * steps_left if steps_done else math.inf
    if budget_left_s is not None:
        left = min(left, max(0.0, budget_left_s))
    return left if math.isfinite(left) else None


def _checked_inputs(
    frames: np.ndarray, config: TrainingConfig, *, check_signal: bool, init: ModelPackage | None
) -> np.ndarray:
    """Return the checked frames; refuse unusable frames or initial weights before any work."""
    checked = _check_frames(frames, config)
    if check_signal:
        _check_signal(checked)
    if init is not None:
        _check_init(init, config)
    return checked


def _prepare_data(
    checked: np.ndarray,
    config: TrainingConfig,
    init: ModelPackage | None,
    rng: np.random.Generator,
) -> _Data:
    """Identify the frames, build their twin pairs and split them (seeded by ``rng``)."""
    data_hash = data_sha256(checked)
    photometry = photometry_record(checked)
    pairs = _pairs_from_checked(checked, config)
    train_idx, val_idx = _split(pairs.n_pairs, config, rng)
    return _Data(
        pairs=pairs,
        train_a=pairs.a[train_idx],
        train_b=pairs.b[train_idx],
        val_a=pairs.a[val_idx],
        val_b=pairs.b[val_idx],
        data_hash=data_hash,
        fingerprint=_fingerprint(data_hash, config, init),
        photometry=photometry,
    )


def _build_fit(
    config: TrainingConfig,
    init: ModelPackage | None,
    device: torch.device,
    rng: np.random.Generator,
) -> _Fit:
    """Build the seeded network (or ``init``'s weights), Adam, its plateau schedule, generator."""
    torch.manual_seed(config.seed)
    model = UNet(config.unet_config)
    if init is not None:
        model.load_state_dict(init.state_dict)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.5, patience=max(2, config.patience // 2)
    )
    return _Fit(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=torch.Generator().manual_seed(config.seed),
        rng=rng,
        device=device,
        step_dtype=_autocast_dtype(config.autocast, device),
    )


def _validate(fit: _Fit, data: _Data, config: TrainingConfig) -> float:
    """Return the model's loss on the held-out pairs."""
    return _validation_loss(
        fit.model,
        data.val_a,
        data.val_b,
        config.consistency_weight,
        config.loss,
        config.batch_size,
        fit.device,
    )


def _start_run(
    fit: _Fit,
    data: _Data,
    config: TrainingConfig,
    init: ModelPackage | None,
    resume_from: Path | None,
) -> _RunState:
    """Return the state to start from: a checkpoint's, or fresh (``init``'s loss the bar)."""
    if resume_from is not None:
        saved = _load_checkpoint(Path(resume_from), data.fingerprint, _resumable_fields(config))
        return _restore_checkpoint(fit, saved)
    run = _RunState()
    if init is not None:
        # Fine-tuning must never hand back something worse than where it started.
        run.best_val = _validate(fit, data, config)
        run.best_state = _cpu_state(fit.model)
    return run


def _restore_checkpoint(fit: _Fit, saved: dict[str, Any]) -> _RunState:
    """Put a checkpoint's weights, optimizer, schedule and RNGs back; return its run state."""
    fit.model.load_state_dict(saved["model"])
    fit.optimizer.load_state_dict(saved["optimizer"])
    fit.scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"]["torch"])
    if fit.device.type == "cuda" and saved["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state(saved["rng"]["cuda"], fit.device)
    fit.generator.set_state(saved["rng"]["generator"])
    # The numpy generator only draws the split today; restoring it keeps any later
    # numpy draw on the uninterrupted trajectory too.
    fit.rng.bit_generator.state = saved["rng"]["numpy"]
    history = saved["history"]
    return _RunState(
        epoch=saved["epoch"],
        best_state=saved["best_state"],
        best_val=saved["best_val"],
        best_epoch=saved["best_epoch"],
        since_best=saved["since_best"],
        seconds=saved["seconds"],
        steps=saved["steps"],
        train_loss=list(history["train_loss"]),
        val_loss=list(history["val_loss"]),
        lr=list(history["lr"]),
    )


@dataclass(frozen=True)
class _Clock:
    """A run's step counts and time: the budget, and the step rate of this call."""

    started: float  # when ``train`` was called (data preparation included)
    steps_per_epoch: int
    total_steps: int
    budget_s: float | None
    prior_seconds: float  # training seconds of a resumed checkpoint
    steps_at_start: int  # optimizer steps taken when this call's stepping began
    stepping_since: float

    @classmethod
    def start(cls, started: float, config: TrainingConfig, run: _RunState, n_train: int) -> _Clock:
        steps_per_epoch = max(1, n_train // config.batch_size)
        return cls(
            started=started,
            steps_per_epoch=steps_per_epoch,
            total_steps=config.epochs * steps_per_epoch,
            budget_s=None if config.max_minutes is None else 60.0 * config.max_minutes,
            prior_seconds=run.seconds,
            steps_at_start=run.steps,
            stepping_since=time.monotonic(),
        )

    @property
    def deadline(self) -> float | None:
        return None if self.budget_s is None else self.started + self.budget_s

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def run_seconds(self) -> float:
        """Seconds of the whole run so far, a resumed checkpoint's included."""
        return self.prior_seconds + time.monotonic() - self.started


@dataclass(frozen=True)
class _Reporter:
    """Sends ``TrainingProgress`` to the ``progress`` callback, if there is one."""

    callback: Callable[[TrainingProgress], None] | None
    epochs: int
    clock: _Clock

    def start(self, run: _RunState) -> None:
        self._send(run, run.epoch, 0, None)

    def step(self, run: _RunState, steps: int, loss_sum: torch.Tensor) -> None:
        # Reading the loss syncs the GPU: only when it is shown.
        if self.callback is not None:
            self._send(run, run.epoch + 1, steps, float(loss_sum) / steps)

    def validated(self, run: _RunState, steps: int) -> None:
        self._send(run, run.epoch + 1, steps, run.train_loss[-1])

    def _send(self, run: _RunState, epoch: int, steps: int, train_loss: float | None) -> None:
        if self.callback is None:
            return
        clock, now = self.clock, time.monotonic()
        self.callback(
            TrainingProgress(
                epoch=epoch,
                epochs=self.epochs,
                step=steps,
                steps=clock.steps_per_epoch,
                run_step=min(run.epoch, self.epochs) * clock.steps_per_epoch + steps,
                run_steps=clock.total_steps,
                train_loss=train_loss,
                val_loss=run.val_loss[-1] if run.val_loss else None,
                elapsed_s=now - clock.started,
                remaining_s=_seconds_left(
                    now - clock.stepping_since,
                    run.steps - clock.steps_at_start,
                    clock.total_steps - run.epoch * clock.steps_per_epoch - steps,
                    None if clock.deadline is None else clock.deadline - now,
                ),
            )
        )


@dataclass(frozen=True)
class _EpochSteps:
    """What one epoch's optimizer steps did."""

    steps: int
    batches: int
    mean_loss: float
    timed_out: bool

    @property
    def complete(self) -> bool:
        return self.steps == self.batches


def _train_epochs(
    fit: _Fit,
    data: _Data,
    config: TrainingConfig,
    run: _RunState,
    clock: _Clock,
    report: _Reporter,
    checkpoint_path: Path | None,
) -> StopReason:
    """Train epoch after epoch until the last, early stopping or the time budget; say which."""
    report.start(run)
    while run.epoch < config.epochs:
        if run.since_best >= config.patience:
            return "early_stopping"
        epoch = _train_epoch(fit, data, config, run, clock, report)
        _end_epoch(fit, data, config, run, epoch, report)
        if epoch.complete:
            run.epoch += 1
            run.seconds = clock.run_seconds()
            if checkpoint_path is not None:
                # Only complete epochs: a budget-cut one is redone on resume.
                _save_checkpoint(
                    Path(checkpoint_path), fingerprint=data.fingerprint, run=run, fit=fit
                )
        if epoch.timed_out:
            return "time_budget"
    return "epochs"


def _train_epoch(
    fit: _Fit,
    data: _Data,
    config: TrainingConfig,
    run: _RunState,
    clock: _Clock,
    report: _Reporter,
) -> _EpochSteps:
    """One shuffled pass of optimizer steps over the training pairs, cut at the deadline."""
    fit.model.train()
    batches = make_batches(data.n_train, config.batch_size, fit.generator)
    loss_sum = torch.zeros((), device=fit.device)
    steps = 0
    timed_out = False
    for idx in batches:
        if config.schedule == "cosine":
            _set_cosine_lr(fit.optimizer, config, clock, run.epoch * clock.steps_per_epoch + steps)
        loss_sum += _train_step(fit, data.train_a[idx], data.train_b[idx], config)
        steps += 1
        run.steps += 1
        report.step(run, steps, loss_sum)
        if clock.past_deadline():
            timed_out = True
            break
    return _EpochSteps(
        steps=steps, batches=len(batches), mean_loss=float(loss_sum) / steps, timed_out=timed_out
    )


def _set_cosine_lr(
    optimizer: torch.optim.Optimizer, config: TrainingConfig, clock: _Clock, run_step: int
) -> None:
    """Set the cosine schedule's rate at this step; its end is the last epoch or the budget."""
    done = run_step / clock.total_steps
    if clock.budget_s is not None:
        done = max(done, (time.monotonic() - clock.started) / clock.budget_s)
    for group in optimizer.param_groups:
        group["lr"] = config.lr * _cosine_factor(done)


def _train_step(
    fit: _Fit, a: torch.Tensor, b: torch.Tensor, config: TrainingConfig
) -> torch.Tensor:
    """One optimizer step on a randomly transformed batch of pairs; return its loss."""
    a, b = random_dihedral(a.to(fit.device), b.to(fit.device), fit.generator)
    loss = _sn2n_loss(fit.model, a, b, config.consistency_weight, config.loss, fit.step_dtype)
    fit.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    fit.optimizer.step()
    return loss.detach()


def _end_epoch(
    fit: _Fit,
    data: _Data,
    config: TrainingConfig,
    run: _RunState,
    epoch: _EpochSteps,
    report: _Reporter,
) -> None:
    """Validate, record the epoch, step the plateau schedule and keep the best weights."""
    val = _validate(fit, data, config)
    run.train_loss.append(epoch.mean_loss)
    run.val_loss.append(val)
    run.lr.append(float(fit.optimizer.param_groups[0]["lr"]))
    log.debug(
        "epoch %d/%d: %d steps, train loss %.4g, val loss %.4g, lr %.3g",
        run.epoch + 1,
        config.epochs,
        epoch.steps,
        run.train_loss[-1],
        val,
        run.lr[-1],
    )
    report.validated(run, epoch.steps)
    if config.schedule == "plateau":
        fit.scheduler.step(val)
    if val < run.best_val:
        run.best_val, run.best_epoch, run.since_best = val, run.epoch + 1, 0
        run.best_state = _cpu_state(fit.model)
    else:
        run.since_best += 1


def train(
    frames: np.ndarray,
    config: TrainingConfig,
    *,
    resume_from: Path | None = None,
    checkpoint_path: Path | None = None,
    progress: Callable[[TrainingProgress], None] | None = None,
    camera_offset_adu: float | None = None,
    check_signal: bool = True,
    init: ModelPackage | None = None,
) -> ModelPackage:
    """Train an Adaptive-SN2N denoiser on noisy frames and return it as a model package.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(N, H, W)`` noisy frames (any real dtype), each at least ``config.patch`` a side.
    config : TrainingConfig
        Network, data generation and optimization settings.
    resume_from : Path or None
        Checkpoint written by an earlier call with the same frames and settings (only
        ``epochs`` (not with the cosine schedule, which spans them), ``max_minutes`` and
        ``device`` may differ); training continues from its
        last completed epoch and ends with the same weights as an uninterrupted run.
    checkpoint_path : Path or None
        Where to write a checkpoint (atomically) at the end of every completed epoch. An
        epoch cut short by ``max_minutes`` is not checkpointed, so resuming redoes it.
    progress : callable or None
        Called with a :class:`TrainingProgress` before the first step, after every step
        and after every validation (``sn2n-live train`` draws it as a progress bar).
        None trains silently; each epoch's losses are also logged at DEBUG level on the
        ``"sn2n_live.method"`` logger.
    camera_offset_adu : float or None
        Camera offset to record in the package for later inference.
    check_signal : bool
        Refuse frames with no signal above their noise (:func:`signal_to_noise_ratio`);
        False trains on them anyway (tests of the training loop on pure noise).
    init : ModelPackage or None
        Initial weights (fine-tuning), e.g. :func:`pretrained_package`; its network and
        twin settings must equal this run's. Its validation loss on these frames is the
        bar to beat: if no epoch improves on it, the package keeps the initial weights.
        None starts from a seeded random initialization.

    Returns
    -------
    ModelPackage
        The weights with the best validation loss, the normalization and twin settings,
        training statistics and provenance.

    Raises
    ------
    ValueError
        For unusable frames (wrong shape or dtype, NaN/inf, constant, no signal above the
        noise, smaller than the patch, fewer than two windows), an unavailable device, or
        a checkpoint that is unreadable or was written for other frames or settings.

    Notes
    -----
    The steps: check the frames (and ``init``); build the twin pairs and split them; build
    the seeded network and optimizer; start from the checkpoint, ``init`` or scratch; train
    epoch after epoch (steps, validation, best weights, checkpoint) until the last epoch,
    early stopping or the time budget; package the best weights.
    """
    started = time.monotonic()
    checked = _checked_inputs(frames, config, check_signal=check_signal, init=init)
    device = resolve_device(config.device)
    rng = np.random.default_rng(config.seed)
    data = _prepare_data(checked, config, init, rng)
    fit = _build_fit(config, init, device, rng)
    run = _start_run(fit, data, config, init, resume_from)
    clock = _Clock.start(started, config, run, data.n_train)
    report = _Reporter(progress, config.epochs, clock)
    stopped = _train_epochs(fit, data, config, run, clock, report, checkpoint_path)
    run.seconds = clock.run_seconds()
    return _build_package(
        config=config,
        data=data,
        run=run,
        fit=fit,
        stopped=stopped,
        steps_per_epoch=clock.steps_per_epoch,
        camera_offset_adu=camera_offset_adu,
        init=init,
    )


def _build_package(
    *,
    config: TrainingConfig,
    data: _Data,
    run: _RunState,
    fit: _Fit,
    stopped: StopReason,
    steps_per_epoch: int,
    camera_offset_adu: float | None,
    init: ModelPackage | None,
) -> ModelPackage:
    """Package the best weights (the final ones if none validated) with the run's records."""
    state = run.best_state if run.best_state is not None else _cpu_state(fit.model)
    return ModelPackage(
        unet=config.unet_config,
        state_dict=state,
        policy=config.policy,
        resolved_mode=data.pairs.resolved_mode,
        thresholds=config.thresholds,
        upsample=config.upsample,
        patch_size=config.patch,
        camera_offset_adu=camera_offset_adu,
        scale=config.scale,
        inference=config.inference,
        compensate=config.compensate,
        training=_training_record(data, run, stopped, steps_per_epoch, init),
        provenance=_provenance(config, data.data_hash, fit, init),
    )


def _training_record(
    data: _Data,
    run: _RunState,
    stopped: StopReason,
    steps_per_epoch: int,
    init: ModelPackage | None,
) -> dict[str, Any]:
    """Return the package's ``training`` statistics: data sizes, history, outcome, notes."""
    return {
        "n_pairs_train": data.n_train,
        "n_pairs_val": data.n_val,
        "steps_per_epoch": steps_per_epoch,
        "epochs_run": len(run.val_loss),
        "epochs_completed": run.epoch,
        "steps": run.steps,
        "best_epoch": run.best_epoch,
        "best_val_loss": run.best_val,
        "stopped_reason": stopped,
        "seconds": run.seconds,
        "train_loss": list(run.train_loss),
        "val_loss": list(run.val_loss),
        "lr": list(run.lr),
        "high_risk_fraction": data.pairs.high_risk_fraction,
        "dataset_high_risk_fraction": data.pairs.dataset_high_risk_fraction,
        "photometry": data.photometry,
        "notes": _training_notes(run, stopped, steps_per_epoch, init),
    }


def _training_notes(
    run: _RunState, stopped: StopReason, steps_per_epoch: int, init: ModelPackage | None
) -> list[str]:
    """Warnings for the user about how the run ended (a budget too short, init kept)."""
    notes = []
    if stopped == "time_budget" and run.epoch == 0 and run.steps:
        epoch_minutes = run.seconds / run.steps * steps_per_epoch / 60.0
        notes.append(
            f"the time budget ended inside the first epoch, after {run.steps} of "
            f"{steps_per_epoch} steps: one epoch takes about {epoch_minutes:.1f} min here; "
            f"give at least {math.ceil(epoch_minutes * 1.2)} min for one whole epoch "
            "(the model saw part of the data once)"
        )
    if init is not None and run.best_epoch == 0:
        notes.append(
            "no epoch improved on the initial weights' validation loss on these frames; the "
            "package holds the initial weights unchanged"
        )
    return notes


def _provenance(
    config: TrainingConfig, data_hash: str, fit: _Fit, init: ModelPackage | None
) -> dict[str, Any]:
    """Return the package's ``provenance``: data, settings, versions, time, hardware, init."""
    return {
        "data_sha256": data_hash,
        "seed": config.seed,
        "config": config.model_dump_json(),
        "versions": {
            "sn2n_live": sn2n_live.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "created": datetime.now(UTC).isoformat(),
        "device": str(fit.device),
        "autocast": str(fit.step_dtype or "off"),
        "init": None if init is None else _init_record(init),
    }
