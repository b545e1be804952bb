"""Dock the sn2n-live preview in napari-micromanager.

napari-micromanager's ``MainWindow`` drives one pymmcore-plus core inside napari; the
preview is one more dock widget on that core: it denoises the newest frame of live mode
and of every MDA on a worker thread and shows raw | denoised beside napari's canvas.

Run (``pip install napari-micromanager sn2n-live[gui]``)::

    python examples/napari_micromanager_dock.py --model sample.sn2n
    python examples/napari_micromanager_dock.py --model sample.sn2n --screenshot shot.png

``--screenshot`` starts live mode, waits ``--seconds`` and saves napari's window (what
docs/preview.md shows).
"""

from __future__ import annotations

import argparse

import napari
from napari_micromanager import MainWindow
from pymmcore_plus import CMMCorePlus
from qtpy.QtCore import QTimer

from sn2n_live.preview import DenoisePreviewWidget


def add_preview(viewer: napari.Viewer, core: CMMCorePlus, model: str) -> DenoisePreviewWidget:
    """Open napari-micromanager on ``core`` in ``viewer`` and dock the preview on it.

    Load the configuration before: napari-micromanager replaces its core when a later
    configuration needs another kind (Python devices), and the preview follows one core.
    """
    main_window = MainWindow(viewer, mmcore=core)
    viewer.window.add_dock_widget(main_window, name="Micro-Manager")
    preview = DenoisePreviewWidget(main_window.core, model=model)
    viewer.window.add_dock_widget(preview, name="sn2n-live preview", area="right")
    return preview


def main() -> None:
    """Open napari with napari-micromanager and the preview docked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a .sn2n model package")
    parser.add_argument("--screenshot", help="save the window after --seconds and exit")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    core = CMMCorePlus()
    core.loadSystemConfiguration()  # Micro-Manager's demo devices
    viewer = napari.Viewer()
    add_preview(viewer, core, args.model)
    if args.screenshot:
        core.startContinuousSequenceAcquisition(0)

        def grab() -> None:
            viewer.window._qt_window.grab().save(args.screenshot)
            core.stopSequenceAcquisition()
            viewer.close()

        QTimer.singleShot(int(args.seconds * 1000), grab)
    napari.run()


if __name__ == "__main__":
    main()
