"""Live denoising inside pymmcore-plus acquisitions: SIM plans, the live hook, writers.

This package never imports Qt: previews poll :meth:`LiveHandler.latest` or connect to
its psygnal signals. Modules, one job each (docs/architecture.md draws a frame's path):

- ``_contracts``: the denoiser and handler Protocols, LatestPair, RunSummary, events,
  run states
- ``_handler``: thread mode, pymmcore-plus's MDA callbacks into the pipeline
- ``_isolated``: process mode, the acquisition side (frameReady, feeder, reader, rescue)
- ``_denoise_process``: process mode, the child that runs the pipeline
- ``_transport``: typed messages, the shared-memory ring and pair slot, the rescue store
- ``_pipeline``: one path from ``accept(frame)`` to the stores (queues, threads)
- ``_batching``: pure decisions (admission, batches, waiting for the raw writer)
- ``_record``: counts, missing frames, errors, run.json, the RunSummary
- ``_relay``: the watch on pymmcore-plus's relay thread
- ``_writers``: store layout and the run folder's stores
- ``_session``: ``live_denoise``, ``open_microscope``, ``acquire_*``
- ``_background``: ``BackgroundRun``, one run on a worker thread (for GUIs)
- ``_recon``: SIM reconstruction of a run's sets, live (``LiveReconstruction``) and
  offline (``reconstruct_run``), into ``recon.ome.zarr``
- ``_live_view``: live mode (``LiveView``: the newest frame denoised, nothing saved) and
  ``LiveRecording`` (a saved run from that moment)
"""

from sn2n_live.acquisition._background import BackgroundRun
from sn2n_live.acquisition._check import Finding, check_profile
from sn2n_live.acquisition._contracts import (
    FrameDenoiser,
    LatestPair,
    LiveDenoiseEvents,
    LiveHandler,
    RunState,
    RunStatus,
    RunSummary,
    load_denoiser,
)
from sn2n_live.acquisition._handler import LiveDenoiseHandler
from sn2n_live.acquisition._isolated import ProcessLiveDenoiseHandler
from sn2n_live.acquisition._live_view import LiveRecording, LiveView, LiveViewEvents
from sn2n_live.acquisition._recon import (
    LatestRecon,
    ReconOptions,
    ReconstructionSummary,
    reconstruct_run,
)
from sn2n_live.acquisition._session import (
    acquire_live,
    acquire_pilot,
    build_events,
    build_profile_denoiser,
    live_denoise,
    open_microscope,
    profile_events,
    profile_run_options,
)
from sn2n_live.acquisition._simulated import (
    DEFAULT_BLEACH_RATE_PER_MS,
    SimulatedMicroscope,
    create_demo_core,
    create_simulated_microscope,
    release_core,
)
from sn2n_live.acquisition._stats import LiveStats
from sn2n_live.acquisition._writers import check_run_folder
from sn2n_live.config import SIMEventMetadata, SIMPlan, expand_sequence

__all__ = [
    "DEFAULT_BLEACH_RATE_PER_MS",
    "BackgroundRun",
    "Finding",
    "FrameDenoiser",
    "LatestPair",
    "LatestRecon",
    "LiveDenoiseEvents",
    "LiveDenoiseHandler",
    "LiveHandler",
    "LiveRecording",
    "LiveStats",
    "LiveView",
    "LiveViewEvents",
    "ProcessLiveDenoiseHandler",
    "ReconOptions",
    "ReconstructionSummary",
    "RunState",
    "RunStatus",
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
    "profile_events",
    "profile_run_options",
    "reconstruct_run",
    "release_core",
]
