"""Dock the sn2n-live preview in pymmcore-gui, next to its own widgets.

pymmcore-gui registers every dockable widget as a ``WidgetActionInfo`` (a key, a menu text
and ``create_widget(parent) -> QWidget``); registering one more before the window is made
adds "sn2n-live preview" to its Window menu, docked on the right. The preview follows
live mode (pymmcore-gui's Live button) and every MDA the core runs: the newest frame is
denoised on a worker thread and shown beside the raw one; pymmcore-gui keeps saving what
it saves.

Run (pymmcore-gui pins PyQt6 and its own pymmcore; install it in an environment of its own
together with sn2n-live, e.g. ``pip install pymmcore-gui sn2n-live``)::

    QT_API=pyqt6 python examples/pymmcore_gui_dock.py --model sample.sn2n

Written against pymmcore-gui 0.0.1rc0 (``pymmcore_gui.actions.WidgetActionInfo``); it
cannot run on the project's own environment, whose PySide6 and pymmcore 12.5 conflict with
pymmcore-gui's pins (docs/preview.md).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("QT_API", "pyqt6")  # pymmcore-gui is a PyQt6 application

from pymmcore_gui import MicroManagerGUI
from pymmcore_gui._qt.QtAds import CDockWidget, DockWidgetArea
from pymmcore_gui._qt.QtCore import QTimer
from pymmcore_gui._qt.QtWidgets import QApplication, QWidget
from pymmcore_gui.actions import WidgetActionInfo

from sn2n_live.preview import DenoisePreviewWidget

PREVIEW_KEY = "sn2n_live.preview"


def register_preview(model: str) -> None:
    """Add the sn2n-live preview to pymmcore-gui's widget registry (once per process)."""

    def create_preview(parent: QWidget) -> QWidget:
        # pymmcore-gui passes its main window, which owns the core.
        return DenoisePreviewWidget(parent.mmcore, model=model, parent=parent)

    WidgetActionInfo(
        key=PREVIEW_KEY,
        text="sn2n-live preview",
        create_widget=create_preview,
        dock_area=DockWidgetArea.RightDockWidgetArea,
        # The panes fit the dock (a scroll area would keep them at their minimum size).
        scroll_mode=CDockWidget.eInsertMode.ForceNoScrollArea,
    )


def main() -> None:
    """Open pymmcore-gui with the preview docked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a .sn2n model package")
    parser.add_argument("--screenshot", help="start live mode, save the window, exit")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    app = QApplication([])
    register_preview(args.model)
    window = MicroManagerGUI()
    window.mmcore.loadSystemConfiguration()  # Micro-Manager's demo devices
    window.get_widget(PREVIEW_KEY)  # create and dock it now (else: Window menu)
    window.resize(1600, 900)
    window.show()
    if args.screenshot:
        window.mmcore.startContinuousSequenceAcquisition(0)

        def grab() -> None:
            window.grab().save(args.screenshot)
            window.mmcore.stopSequenceAcquisition()
            window.close()

        QTimer.singleShot(int(args.seconds * 1000), grab)
    app.exec()


if __name__ == "__main__":
    main()
