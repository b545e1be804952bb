"""The configuration layer: what a run may be asked to do, with no hardware.

One definition of every choice (:mod:`sn2n_live.config._choices`: engines, precisions,
dtypes, formats, policies, recipes, ...), reused by the command line, the profiles and the
code, and the SIM plan schema. Importing it loads pydantic, useq-schema and the
simulator's optics constants, never pymmcore-plus, the writers, torch or Qt, so that
``sn2n-live profile check --schema-only`` validates a profile without them.
"""

from sn2n_live.config._choices import (
    TIFF_DENOISED_DTYPES,
    TIFF_DIMS,
    BackendName,
    BacklogPolicy,
    DenoisedDtype,
    EngineName,
    FileFormat,
    Isolation,
    MicroscopeKind,
    NormalizationPolicy,
    PatternSource,
    Precision,
    Recipe,
    ReconLive,
    ReconSource,
    TrainingInit,
    UNetPreset,
    ZarrBackend,
    choices,
)
from sn2n_live.config._sim_plan import (
    ANGLE_KEY,
    PHASE_KEY,
    SIM_METADATA_KEY,
    SIMEventMetadata,
    SIMPlan,
    expand_sequence,
)

# Defined with the simulator (which cannot import this package: it is imported by it).
from sn2n_live.simulation import PSFKind, StructureKind

__all__ = [
    "ANGLE_KEY",
    "PHASE_KEY",
    "SIM_METADATA_KEY",
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
    "PSFKind",
    "PatternSource",
    "Precision",
    "Recipe",
    "ReconLive",
    "ReconSource",
    "SIMEventMetadata",
    "SIMPlan",
    "StructureKind",
    "TrainingInit",
    "UNetPreset",
    "ZarrBackend",
    "choices",
    "expand_sequence",
]
