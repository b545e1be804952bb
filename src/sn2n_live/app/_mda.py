"""pymmcore-widgets' MDA panel, running its sequence through a live-denoise run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import useq
from pymmcore_plus import CMMCorePlus
from pymmcore_widgets import MDAWidget
from qtpy.QtWidgets import QWidget

__all__ = ["DenoisingMDAWidget"]

# What the panel's Run button calls: the sequence and the save path the user chose (None
# when saving is unchecked: the run is saved anyway, raw frames are never dropped).
StartRun = Callable[[useq.MDASequence, Path | None], Any]


class DenoisingMDAWidget(MDAWidget):
    """``MDAWidget`` whose Run button starts a saved, denoised run instead of a bare MDA.

    Everything else is pymmcore-widgets' own: channels, z, positions, grid, time plan,
    autofocus checks, and its Pause/Cancel buttons (they act on ``core.mda``, which the
    run drives).

    Parameters
    ----------
    start_run : callable
        ``start_run(sequence, save_path)``; e.g. :meth:`LiveDenoiseWindow.start_mda`.
    mmcore : CMMCorePlus
        The microscope.
    parent : QWidget, optional
        Qt parent.
    """

    def __init__(
        self, start_run: StartRun, *, mmcore: CMMCorePlus, parent: QWidget | None = None
    ) -> None:
        super().__init__(mmcore=mmcore, parent=parent)
        self._start_run = start_run

    def execute_mda(self, output: Path | str | Sequence[Any] | None) -> None:
        """Start the run (pymmcore-widgets calls this with its save path)."""
        save_path = Path(output) if isinstance(output, str | Path) else None
        self._start_run(self.value(), save_path)
