"""The ``sn2n-live gui`` application: a microscope window around the live preview.

It composes what the other rooms offer and adds no method of its own:

- ``_window``: ``LiveDenoiseWindow``, the preview (``sn2n_live.preview``) in the middle,
  live mode and record on the left, pymmcore-widgets' MDA panel on the right; every run
  it starts is a :class:`~sn2n_live.acquisition.LiveRecording` (raw and denoised saved,
  run.json), so the GUI thread never waits on the camera, the denoiser or a store
- ``_mda``: ``DenoisingMDAWidget``, pymmcore-widgets' ``MDAWidget`` whose Run button
  starts such a run, each event a complete SIM set of the profile
- ``_launch``: ``launch``, open the profile's microscope, show the window, optionally
  grab a screenshot after N seconds and exit (``--screenshot PATH --seconds N``)

Only ``sn2n_live.cli`` imports this package; it imports the public faces of
acquisition, preview, method and profiles (tests/test_layering.py).
"""

from sn2n_live.app._launch import launch, resolve_model
from sn2n_live.app._mda import DenoisingMDAWidget
from sn2n_live.app._window import LiveDenoiseWindow, next_run_folder

__all__ = [
    "DenoisingMDAWidget",
    "LiveDenoiseWindow",
    "launch",
    "next_run_folder",
    "resolve_model",
]
