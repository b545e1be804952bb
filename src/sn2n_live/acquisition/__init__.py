"""Live denoising inside pymmcore-plus acquisitions: SIM plans, the live hook, writers.

This package never imports Qt: previews poll :meth:`LiveDenoiseHandler.latest` or
connect to its psygnal signals.
"""

from sn2n_live.acquisition._check import Finding, check_profile
from sn2n_live.acquisition._isolated import ProcessLiveDenoiseHandler
from sn2n_live.acquisition._live import (
    FrameDenoiser,
    LatestPair,
    LiveDenoiseEvents,
    LiveDenoiseHandler,
    RunSummary,
    check_run_folder,
    live_denoise,
    load_denoiser,
)
from sn2n_live.acquisition._session import (
    acquire_live,
    acquire_pilot,
    build_events,
    build_profile_denoiser,
    open_microscope,
)
from sn2n_live.acquisition._simulated import (
    SimulatedMicroscope,
    create_demo_core,
    create_simulated_microscope,
    release_core,
)
from sn2n_live.acquisition._stats import LiveStats
from sn2n_live.config import SIMEventMetadata, SIMPlan, expand_sequence

__all__ = [
    "Finding",
    "FrameDenoiser",
    "LatestPair",
    "LiveDenoiseEvents",
    "LiveDenoiseHandler",
    "LiveStats",
    "ProcessLiveDenoiseHandler",
    "RunSummary",
    "SIMEventMetadata",
    "SIMPlan",
    "SimulatedMicroscope",
    "acquire_live",
    "acquire_pilot",
    "build_events",
    "build_profile_denoiser",
    "check_profile",
    "check_run_folder",
    "create_demo_core",
    "create_simulated_microscope",
    "expand_sequence",
    "live_denoise",
    "load_denoiser",
    "open_microscope",
    "release_core",
]
