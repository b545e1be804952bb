"""The main window: live mode, record and MDA runs around the raw | denoised preview.

The controller's rules, in one place:

- **Live mode** (the Live button): the camera runs continuously
  (``startContinuousSequenceAcquisition``), a :class:`~sn2n_live.acquisition.LiveView`
  denoises its newest frame on a worker thread, the preview shows the pair; nothing is
  saved.
- **Record** and the MDA panel's **Run** start a :class:`~sn2n_live.acquisition.LiveRecording`
  (raw and denoised stores, run.json) in a new folder under ``runs_dir``. Live mode
  pauses for the run (the camera serves one acquisition at a time) and resumes after.
  The preview follows the run's handler, then live mode again.
- A QTimer (5 Hz) notices when a run is over; nothing here blocks the GUI thread except
  closing the window mid-run, which cancels the run and waits (bounded) for its stores
  to close, so that no raw frame is lost.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from pathlib import Path
from typing import Any

import useq
from pymmcore_plus import CMMCorePlus
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QCloseEvent
from qtpy.QtWidgets import (
    QDockWidget,
    QFormLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from sn2n_live.acquisition import (
    LiveRecording,
    LiveView,
    build_profile_denoiser,
    profile_events,
    profile_run_options,
)
from sn2n_live.method import ModelPackage
from sn2n_live.preview import DenoisePreviewWidget
from sn2n_live.profiles import Profile

__all__ = ["LiveDenoiseWindow", "next_run_folder"]

# Closing the window mid-run waits this long for the stores to close (then it lets the
# run finish in the background: its worker thread keeps the process alive until then).
CLOSE_WAIT_S = 60.0
_ERROR_STYLE = "color: #b00020; font-weight: bold;"


def next_run_folder(runs_dir: Path, stem: str, now: float | None = None) -> Path:
    """Return a new run folder ``runs_dir/<YYYYmmdd-HHMMSS>-<stem>[-N]`` that does not exist.

    Parameters
    ----------
    runs_dir : Path
        Where the GUI's runs go.
    stem : str
        What the run is (``"record"``, the MDA panel's save name); characters other than
        letters, digits, ``-``, ``_`` and ``.`` become ``_``.
    now : float, optional
        Epoch seconds for the stamp (default: now).
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", stem).strip("._") or "run"
    folder = runs_dir / f"{stamp}-{safe}"
    n = 1
    while folder.exists():
        n += 1
        folder = runs_dir / f"{stamp}-{safe}-{n}"
    return folder


class LiveDenoiseWindow(QMainWindow):
    """The ``sn2n-live gui`` window on one microscope and one model.

    Parameters
    ----------
    core : CMMCorePlus
        The open microscope (the caller releases it after the window closed).
    profile : Profile
        SIM plan, camera, engine and output settings of every run.
    package : ModelPackage
        The model: built in this process for live mode, in the denoise process (as the
        profile's ``output.isolation`` says) for saved runs.
    runs_dir : Path
        Where Record and the MDA panel create their run folders.
    mda_panel : bool
        Show pymmcore-widgets' MDA panel (needs ``pymmcore-widgets``).
    camera : object, optional
        Camera calibration for the readout in photons (``offset_adu``, ``gain_adu_per_e``).
    parent : QWidget, optional
        Qt parent.
    """

    def __init__(
        self,
        core: CMMCorePlus,
        profile: Profile,
        package: ModelPackage,
        *,
        runs_dir: Path,
        mda_panel: bool = True,
        camera: Any = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.core = core
        self.profile = profile
        self.runs_dir = Path(runs_dir)
        self.denoiser = build_profile_denoiser(profile, package)
        # A picklable factory: a saved run builds its own denoiser in the denoise process.
        self._run_model = functools.partial(build_profile_denoiser, profile, package)
        self.live_view = LiveView(core, self.denoiser)
        self.run: LiveRecording | None = None
        self.last_run: LiveRecording | None = None
        self.last_error: str | None = None
        self._following_run = False

        self.setWindowTitle(f"sn2n-live · {profile.name}")
        self.preview = DenoisePreviewWidget(provenance=self.denoiser.provenance, camera=camera)
        self.setCentralWidget(self.preview)
        self._build_controls()
        self.mda_widget: QWidget | None = None
        if mda_panel:
            self._build_mda_panel()
        self._timer = QTimer(self)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._poll)
        self._timer.start()
        self.live_view.start()
        self.preview.set_handler(self.live_view)
        self._show_state()

    # -- layout --------------------------------------------------------------------------

    def _build_controls(self) -> None:
        panel = QWidget()
        layout = QVBoxLayout(panel)
        self.summary_label = QLabel(self._summary_text())
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.summary_label)

        self.live_button = QPushButton("Live")
        self.live_button.setCheckable(True)
        self.live_button.toggled.connect(self.set_live)
        layout.addWidget(self.live_button)

        form = QFormLayout()
        self.record_timepoints = QSpinBox()
        self.record_timepoints.setRange(1, 100_000)
        self.record_timepoints.setValue(max(100, self.profile.acquisition.timepoints))
        self.record_timepoints.setToolTip("Time points to record at most (Stop ends earlier)")
        form.addRow("record at most", self.record_timepoints)
        layout.addLayout(form)
        self.record_button = QPushButton("Record")
        self.record_button.clicked.connect(self._on_record_clicked)
        layout.addWidget(self.record_button)
        self.stop_button = QPushButton("Stop run")
        self.stop_button.clicked.connect(self.stop_run)
        layout.addWidget(self.stop_button)

        self.run_label = QLabel()
        self.run_label.setWordWrap(True)
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.run_label)
        layout.addStretch()
        dock = QDockWidget("Microscope", self)
        dock.setObjectName("sn2n_microscope")
        dock.setWidget(panel)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)

    def _build_mda_panel(self) -> None:
        from sn2n_live.app._mda import DenoisingMDAWidget

        self.mda_widget = DenoisingMDAWidget(self.start_mda, mmcore=self.core)
        dock = QDockWidget("MDA (saved raw + denoised)", self)
        dock.setObjectName("sn2n_mda")
        dock.setWidget(self.mda_widget)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)

    def _summary_text(self) -> str:
        core, prof = self.core, self.profile
        provenance = self.denoiser.provenance
        sim = prof.sim
        sim_text = f"SIM {sim.n_angles}x{sim.n_phases}" if sim is not None else "no SIM plan"
        lines = [
            f"<b>{prof.name}</b>: {prof.description}"
            if prof.description
            else f"<b>{prof.name}</b>",
            f"camera {core.getCameraDevice() or '-'} {core.getImageWidth()}x"
            f"{core.getImageHeight()}, {core.getExposure():g} ms; {sim_text}",
            f"model {provenance.get('model_name') or provenance.get('name') or '-'} "
            f"(sha256 {str(provenance.get('model_sha256', ''))[:12]}), "
            f"{provenance.get('engine', '?')} {provenance.get('precision', '')}",
            f"runs go to {self.runs_dir}",
        ]
        return "<br>".join(lines)

    # -- live mode -----------------------------------------------------------------------

    @property
    def live(self) -> bool:
        """Whether live mode is on (the camera streams continuously)."""
        return self.core.isSequenceRunning() and not self.core.mda.is_running()

    def set_live(self, on: bool) -> None:
        """Start or stop live mode (not while a run acquires: the button is disabled)."""
        if self.live_button.isChecked() != on:
            self.live_button.setChecked(on)  # re-enters with the same value
            return
        if self.run is not None:
            return
        if on and not self.core.isSequenceRunning():
            self.core.startContinuousSequenceAcquisition(0)
        elif not on and self.core.isSequenceRunning():
            self.core.stopSequenceAcquisition()
        self._show_state()

    # -- saved runs ----------------------------------------------------------------------

    def record(self, timepoints: int | None = None) -> LiveRecording | None:
        """Record from now: a time-lapse of SIM sets at full speed, saved (Stop ends it)."""
        loops = int(timepoints or self.record_timepoints.value())
        sequence = useq.MDASequence(time_plan={"interval": 0, "loops": loops}, axis_order="tpgcz")
        return self._start(sequence, "record")

    def start_mda(self, sequence: useq.MDASequence, save_path: Path | None = None) -> Any:
        """Run ``sequence`` (e.g. from the MDA panel), each event a complete SIM set, saved."""
        stem = save_path.name.split(".")[0] if save_path is not None else "mda"
        return self._start(sequence, stem)

    def stop_run(self) -> None:
        """End the current run early (``canceled`` in run.json; saved frames stay)."""
        if self.run is not None:
            self.run.cancel()

    def _on_record_clicked(self) -> None:
        self.record()

    def _start(self, sequence: useq.MDASequence, stem: str) -> LiveRecording | None:
        if self.run is not None:
            self._error(f"A run is going on ({self.run.out}); stop it before starting another.")
            return None
        try:
            events = profile_events(self.profile, self.core, sequence)
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            run = LiveRecording(
                self.core,
                self._run_model,
                next_run_folder(self.runs_dir, stem),
                events=events,
                view=self.live_view,
                **profile_run_options(self.profile),
            ).start(wait=False)
        except (OSError, RuntimeError, ValueError) as exc:
            self._error(f"Cannot start the run: {exc}")
            return None
        self.run, self.last_error, self._following_run = run, None, False
        self._show_state()
        return run

    def _poll(self) -> None:
        run = self.run
        if run is None:
            return
        if not self._following_run and run.handler is not None:
            self.preview.set_handler(run.handler, provenance=self.denoiser.provenance)
            self._following_run = True
        if run.done:
            self._run_over(run)
        self._show_state()

    def _run_over(self, run: LiveRecording) -> None:
        self.run, self.last_run = None, run
        try:
            run.stop()  # returns at once (the run is over); live mode comes back
        except Exception as exc:
            self._error(f"The run in {run.out} failed: {type(exc).__name__}: {exc}")
        self.preview.set_handler(self.live_view, provenance=self.denoiser.provenance)
        self._following_run = False

    def _error(self, message: str) -> None:
        self.last_error = message
        self.statusBar().showMessage(message)
        self.run_label.setStyleSheet(_ERROR_STYLE)
        self.run_label.setText(message)

    def _show_state(self) -> None:
        running = self.run is not None
        self.record_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.live_button.setEnabled(not running)
        if self.mda_widget is not None:
            self.mda_widget.control_btns.run_btn.setEnabled(not running)
        if self.last_error is not None:
            return
        self.run_label.setStyleSheet("")
        if running:
            assert self.run is not None
            self.run_label.setText(f"recording to {self.run.out}")
        elif self.last_run is not None:
            summary = self.last_run.summary
            status = summary.status if summary is not None else "not started"
            self.run_label.setText(f"last run: {status}<br>{self.last_run.out}")
        else:
            self.run_label.setText("live mode: nothing is saved" if self.live else " ")

    # -- shutdown ------------------------------------------------------------------------

    def shutdown(self, timeout: float = CLOSE_WAIT_S) -> None:
        """Stop live mode and any run (its stores closed, up to ``timeout`` s); idempotent."""
        self._timer.stop()
        run, self.run = self.run, None
        if run is not None:
            self.last_run = run
            run.cancel()
            deadline = time.monotonic() + timeout
            while not run.done and time.monotonic() < deadline:
                time.sleep(0.02)
            if run.done:
                with contextlib.suppress(Exception):  # its error is in run.json already
                    run.stop()
        if self.core.isSequenceRunning() and not self.core.mda.is_running():
            self.core.stopSequenceAcquisition()
        self.live_view.stop()
        self.preview.set_handler(None)

    def closeEvent(self, event: QCloseEvent) -> None:
        """End live mode and cancel a run on close; its frames so far stay saved."""
        self.shutdown()
        super().closeEvent(event)
