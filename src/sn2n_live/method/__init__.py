"""Adaptive-SN2N: twins, risk-aware normalization, U-Net, training, tiling, packages.

This package is pure computation: it never imports microscope, engine or GUI code.
"""

from sn2n_live.method._denoiser import Denoiser, TileRunner, TorchRunner
from sn2n_live.method._hallucination import Denoised, hallucination_risk, risk_fraction
from sn2n_live.method._package import (
    FORMAT_VERSION,
    InferenceMode,
    ModelPackage,
    ModelPackageError,
    load_package,
    save_package,
)
from sn2n_live.method._photometry import (
    FramePhotometry,
    PhotometryWatch,
    check_photometry,
    measure_photometry,
    photometry_record,
)
from sn2n_live.method._pretrained import (
    PRETRAINED,
    initial_package,
    pretrained_package,
    pretrained_path,
)
from sn2n_live.method._recipes import RECIPES, Recipe
from sn2n_live.method._risk import (
    NormalizationPolicy,
    RiskClass,
    RiskMap,
    RiskThresholds,
    ScaleKind,
    TileMode,
    analyze_risk,
    decide_dataset_mode,
    denormalize,
    frame_scale,
    image_scale,
    normalize_tiles,
)
from sn2n_live.method._tiling import TilePlan, fit_tile, gaussian_window, plan_tiles
from sn2n_live.method._training import (
    TrainingConfig,
    TrainingPairs,
    TrainingProgress,
    make_training_pairs,
    signal_to_noise_ratio,
    train,
)
from sn2n_live.method._twins import (
    UpsampleMode,
    diagonal_twins,
    fourier_upsample,
    fourier_upsample_tensor,
    make_twins,
    make_twins_tensor,
)
from sn2n_live.method._unet import PRESETS, UNet, UNetConfig

__all__ = [
    "FORMAT_VERSION",
    "PRESETS",
    "PRETRAINED",
    "RECIPES",
    "Denoised",
    "Denoiser",
    "FramePhotometry",
    "InferenceMode",
    "ModelPackage",
    "ModelPackageError",
    "NormalizationPolicy",
    "PhotometryWatch",
    "Recipe",
    "RiskClass",
    "RiskMap",
    "RiskThresholds",
    "ScaleKind",
    "TileMode",
    "TilePlan",
    "TileRunner",
    "TorchRunner",
    "TrainingConfig",
    "TrainingPairs",
    "TrainingProgress",
    "UNet",
    "UNetConfig",
    "UpsampleMode",
    "analyze_risk",
    "check_photometry",
    "decide_dataset_mode",
    "denormalize",
    "diagonal_twins",
    "fit_tile",
    "fourier_upsample",
    "fourier_upsample_tensor",
    "frame_scale",
    "gaussian_window",
    "hallucination_risk",
    "image_scale",
    "initial_package",
    "load_package",
    "make_training_pairs",
    "make_twins",
    "make_twins_tensor",
    "measure_photometry",
    "normalize_tiles",
    "photometry_record",
    "plan_tiles",
    "pretrained_package",
    "pretrained_path",
    "risk_fraction",
    "save_package",
    "signal_to_noise_ratio",
    "train",
]
