"""Every closed set of choices in sn2n-live, each defined once.

The command line (typer), the profiles (pydantic) and the code that acts on a choice all
take its values from here, so a value added here is accepted everywhere at once, and no
place can accept a value the others reject (``tests/test_choices.py`` checks that).

Choices that public functions take as plain strings (``select_engine(package,
"torch-cpu")``, ``StackWriter(..., dtype="uint16")``, ``live_denoise(..., policy=...)``) are
``Literal`` aliases, so that type checkers accept those strings. The others are
``StrEnum`` classes, whose members equal their strings (``Recipe.TWIN == "twin"``).

Standard library only: the method and engine layers import it, and ``sn2n-live profile
check --schema-only`` loads it without torch or hardware.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, get_args

__all__ = [
    "TIFF_DENOISED_DTYPES",
    "TIFF_DIMS",
    "BackendName",
    "BacklogPolicy",
    "DenoisedDtype",
    "EngineName",
    "FileFormat",
    "Isolation",
    "MicroscopeKind",
    "NormalizationPolicy",
    "PatternSource",
    "Precision",
    "Recipe",
    "ReconLive",
    "ReconSource",
    "TrainingInit",
    "UNetPreset",
    "ZarrBackend",
    "choices",
]

# Inference: the backends, best first (the order `sn2n-live engine info` lists them in).
BackendName = Literal["tensorrt", "torch-cuda", "onnxruntime-cuda", "onnxruntime-cpu", "torch-cpu"]
# What a user may ask for: a backend, or "auto" (the best one that runs here).
EngineName = Literal["auto", BackendName]
Precision = Literal["fp32", "fp16", "bf16"]

# Training: the normalization policy (method.md §3.6).
NormalizationPolicy = Literal["dataset", "per_patch", "global", "local"]

# Saving: stored dtype of denoised frames (uint16 rounds and clips), store format and
# ome-writers' OME-Zarr backend.
DenoisedDtype = Literal["float32", "uint16"]
FileFormat = Literal["ome-zarr", "ome-tiff"]
ZarrBackend = Literal["zarr-python", "tensorstore", "acquire-zarr"]
# What ome-writers' OME-TIFF backend can store: only these dimensions (besides positions,
# y and x), and only integer pixels (its OME-XML pixel type rejects float32).
TIFF_DIMS: frozenset[str] = frozenset({"t", "c", "z"})
TIFF_DENOISED_DTYPES: tuple[DenoisedDtype, ...] = ("uint16",)

# Live runs: whether the denoiser catches up on every frame after the acquisition
# ("complete") or skips to the newest ("preview"), and where it runs.
BacklogPolicy = Literal["complete", "preview"]
Isolation = Literal["thread", "process"]

# SIM: how the pattern reaches the hardware (see SIMPlan).
PatternSource = Literal["slm", "properties", "metadata"]


# SIM reconstruction during a run: none, the newest set for the preview, or every set it
# can keep up with also saved (recon.ome.zarr).
ReconLive = Literal["off", "preview", "save"]


class ReconSource(StrEnum):
    """Which frames of a run a SIM reconstruction is made from."""

    RAW = "raw"
    DENOISED = "denoised"


class Recipe(StrEnum):
    """Named sets of training defaults (``sn2n_live.method.RECIPES``)."""

    PAPER = "paper"
    TWIN = "twin"


class UNetPreset(StrEnum):
    """Named U-Net configurations (``sn2n_live.method.PRESETS``)."""

    PAPER = "paper"
    LITE = "lite"


class TrainingInit(StrEnum):
    """Where training starts, besides the path of a ``.sn2n`` package to continue from."""

    SCRATCH = "scratch"
    PRETRAINED = "pretrained"


class MicroscopeKind(StrEnum):
    """Which core a profile drives."""

    SIMULATED = "simulated"
    DEMO = "demo"
    CONFIG = "config"


def choices(choice: Any) -> tuple[str, ...]:
    """Return the values of a choice, in the order they are defined.

    Parameters
    ----------
    choice : type
        A ``StrEnum`` or a ``Literal`` alias of this module.

    Returns
    -------
    tuple of str
        E.g. ``choices(FileFormat) == ("ome-zarr", "ome-tiff")``.
    """
    if isinstance(choice, type) and issubclass(choice, StrEnum):
        return tuple(member.value for member in choice)
    return get_args(choice)
