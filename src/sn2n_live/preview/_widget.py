"""The controller: a widget that follows a live-denoise handler at display rate.

A QTimer polls ``handler.latest()`` and ``handler.stats()`` (default every 100 ms): the
GUI thread gets no Qt event per camera frame, runs no inference and renders a pair
only when a new one (or a new setting) is there. The handler's ``raw_failed`` and
``finished`` signals come from its worker threads; they only drop a note into an
:class:`_Inbox` that the timer reads, so no slot ever runs off the GUI thread.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtGui import QCloseEvent
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from sn2n_live.acquisition import (
    FrameDenoiser,
    LatestPair,
    LiveHandler,
    LiveStats,
    LiveView,
    LiveViewEvents,
    RunSummary,
    load_denoiser,
)
from sn2n_live.preview._compose import render_panes
from sn2n_live.preview._gl import QIMAGE_RENDERER, choose_renderer, make_pane
from sn2n_live.preview._model import (
    OVERLAYS,
    CameraCalibration,
    Notice,
    PreviewState,
    Readout,
    RunHealth,
    status_line,
)
from sn2n_live.preview._render import colormaps_available
from sn2n_live.preview._view import ZoomPanPane

__all__ = ["DenoisePreviewWidget"]

_log = logging.getLogger(__name__)

MIN_REFRESH_MS = 10
_WARNING_STYLE = "color: #b35900; font-weight: bold;"
_BANNER_STYLE = (
    "background: #b00020; color: white; font-weight: bold; font-size: 14px; padding: 8px;"
)


class _Inbox:
    """Where the handler's threads leave what the GUI thread reads on its next poll.

    A plain Python object (not a QObject): psygnal may call it from any thread, even
    while the widget is being destroyed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.raw_failure: str | None = None
        self.summary: RunSummary | None = None
        self.live_failure: str | None = None

    def on_raw_failed(self, message: str) -> None:
        with self._lock:
            if self.raw_failure is None:  # the first failure is the one to read
                self.raw_failure = str(message)

    def on_finished(self, summary: RunSummary) -> None:
        with self._lock:
            self.summary = summary

    def on_live_denoiser_failed(self, message: str) -> None:
        with self._lock:
            self.live_failure = str(message)

    def read(self) -> tuple[str | None, RunSummary | None, str | None]:
        with self._lock:
            return self.raw_failure, self.summary, self.live_failure


class DenoisePreviewWidget(QWidget):
    """Raw and denoised side by side, following a live-denoise run or live mode.

    The timer's polls render new pairs on a worker thread (contrast, colormap and
    overlays are numpy work on two frames, ~40 ms at 2048^2): the GUI thread only
    hands the finished pixels to the panes, so it never freezes for a render.
    :meth:`refresh`, :meth:`show_pair` and the settings render at once, on the caller's
    thread (replays, scripts, tests read the panes right after).

    Three ways in: a run's handler (``live_denoise``), a :class:`LiveView`, or a core and
    a model (``DenoisePreviewWidget(mmcore, model="sample.sn2n")``, what an app docks):
    the widget then makes its own :class:`LiveView` on that core, which denoises the
    newest frame of live mode on a worker thread, and stops it when it is closed.

    Parameters
    ----------
    source : LiveHandler, LiveView or CMMCorePlus, optional
        What to follow; :meth:`set_handler` changes it. A core needs ``model``.
    model : FrameDenoiser, str or os.PathLike, optional
        With a core: the denoiser or ``.sn2n`` package of the widget's live view.
    provenance : mapping, optional
        What produces the denoised frames (the denoiser's ``provenance``: model sha256,
        engine, precision), shown in the status bar.
    camera : object or mapping, optional
        ``offset_adu`` and ``gain_adu_per_e`` (e.g. ``sn2n_live.simulation.CameraModel``):
        the readout then also gives photons, ``(adu - offset) / gain``.
    refresh_ms : int
        Poll interval (default 100 ms: 10 Hz, whatever the camera rate); at least 10.
    renderer : {"auto", "gl", "qimage"}, optional
        How the panes draw (see :func:`~sn2n_live.preview.choose_renderer`): default the
        environment variable ``SN2N_LIVE_RENDERER``, else ``"auto"`` (OpenGL where it
        works, QImage elsewhere). :attr:`renderer` names the one used,
        :attr:`renderer_reason` says why; the status bar names it too.
    parent : QWidget, optional
        Qt parent.
    """

    # Emitted by the render worker when a background render is ready (queued to the GUI).
    _render_done = Signal()

    def __init__(
        self,
        source: Any = None,
        *,
        model: FrameDenoiser | str | os.PathLike[str] | None = None,
        provenance: Mapping[str, Any] | None = None,
        camera: Any = None,
        refresh_ms: int = 100,
        renderer: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        if refresh_ms < MIN_REFRESH_MS:
            raise ValueError(f"refresh_ms must be >= {MIN_REFRESH_MS}; got {refresh_ms}.")
        self.renderer, self.renderer_reason = choose_renderer(renderer)
        self.state = PreviewState(
            provenance=dict(provenance or {}), camera=CameraCalibration.from_any(camera)
        )
        self.health = RunHealth()
        self.link_views = True
        self._handler: LiveHandler | LiveView | None = None
        self._own_view: LiveView | None = None  # made here from a core: stopped on close
        self._inbox = _Inbox()
        self._connected: Any = None  # the events our inbox is connected to
        self._render_pool: ThreadPoolExecutor | None = None  # made on the first poll
        # The render in flight and the generation it renders.
        self._render_job: tuple[int, Future[tuple[PreviewState, np.ndarray, np.ndarray]]] | None
        self._render_job = None
        self._render_generation = 0  # renders older than the newest are dropped
        self._render_again = False
        self._render_done.connect(self._apply_background_render)
        self._timer = QTimer(self)
        self._timer.setInterval(int(refresh_ms))
        self._timer.timeout.connect(self._on_timer)
        self._build()
        self._render()
        self._show_status()
        if _is_core(source):
            if model is None:
                raise ValueError(
                    "DenoisePreviewWidget(core) needs model=: a .sn2n package path or a "
                    "denoiser, e.g. DenoisePreviewWidget(mmcore, model='sample.sn2n')."
                )
            denoiser = load_denoiser(model)
            self._own_view = LiveView(source, denoiser).start()
            # A docked widget may be destroyed with its window and never get a close
            # event; its worker must not be inside the engine when Python exits.
            app = QApplication.instance()
            if app is not None:
                app.aboutToQuit.connect(self._own_view.stop)
            if provenance is None:
                self.state.provenance = dict(denoiser.provenance)
            source = self._own_view
        elif model is not None:
            raise ValueError("model= is for DenoisePreviewWidget(core, model=...) only.")
        if source is not None:
            self.set_handler(source)

    # -- layout --------------------------------------------------------------------------

    def _build(self) -> None:
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(_BANNER_STYLE)
        self.banner.hide()

        self.contrast_combo = QComboBox()
        self.contrast_combo.addItems(["auto", "manual"])
        self.link_contrast = QCheckBox("link contrast")
        self.link_contrast.setChecked(self.state.linked)
        self.raw_min, self.raw_max = _spin(), _spin()
        self.den_min, self.den_max = _spin(), _spin()
        self.colormap_combo = QComboBox()
        self.colormap_combo.addItems(list(colormaps_available()))
        self.overlay_boxes = {name: QCheckBox(name) for name in OVERLAYS}

        controls = QHBoxLayout()
        controls.addWidget(QLabel("contrast"))
        controls.addWidget(self.contrast_combo)
        controls.addWidget(self.link_contrast)
        controls.addWidget(QLabel("raw"))
        controls.addWidget(self.raw_min)
        controls.addWidget(self.raw_max)
        controls.addWidget(QLabel("denoised"))
        controls.addWidget(self.den_min)
        controls.addWidget(self.den_max)
        controls.addStretch(1)
        display = QHBoxLayout()
        display.addWidget(QLabel("colormap"))
        display.addWidget(self.colormap_combo)
        display.addWidget(QLabel("overlays"))
        for box in self.overlay_boxes.values():
            display.addWidget(box)
        display.addStretch(1)

        self.raw_pane, self.denoised_pane = self._make_panes()
        self.raw_title, self.denoised_title = QLabel("raw"), QLabel("denoised")
        panes = QHBoxLayout()
        for title, pane in (
            (self.raw_title, self.raw_pane),
            (self.denoised_title, self.denoised_pane),
        ):
            column = QVBoxLayout()
            column.addWidget(title)
            column.addWidget(pane, 1)
            panes.addLayout(column, 1)

        self.readout_label = QLabel(" ")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(controls)
        layout.addLayout(display)
        layout.addLayout(panes, 1)
        layout.addWidget(self.readout_label)
        layout.addWidget(self.status_label)

        self.contrast_combo.currentTextChanged.connect(self._on_contrast)
        self.link_contrast.toggled.connect(self._on_contrast)
        for spin in (self.raw_min, self.raw_max, self.den_min, self.den_max):
            spin.valueChanged.connect(self._on_manual_limits)
        self.colormap_combo.currentTextChanged.connect(self.set_colormap)
        for name, box in self.overlay_boxes.items():
            box.toggled.connect(lambda on, name=name: self.set_overlay(name, on))
        self.raw_pane.view_changed.connect(
            lambda *v: self._follow_view(self.raw_pane, self.denoised_pane, v)
        )
        self.denoised_pane.view_changed.connect(
            lambda *v: self._follow_view(self.denoised_pane, self.raw_pane, v)
        )
        self.raw_pane.hovered.connect(lambda r, c: self._on_hover(self.raw_pane, r, c))
        self.denoised_pane.hovered.connect(lambda r, c: self._on_hover(self.denoised_pane, r, c))
        self._sync_controls()

    def _make_panes(self) -> tuple[ZoomPanPane, ZoomPanPane]:
        try:
            panes = make_pane(self.renderer), make_pane(self.renderer)
        except Exception as exc:  # the check passed, the canvas did not come up
            if self.renderer == QIMAGE_RENDERER:
                raise
            self.renderer_reason = (
                f"the {self.renderer} pane failed ({type(exc).__name__}: {exc}); "
                f"was: {self.renderer_reason}"
            )
            self.renderer = QIMAGE_RENDERER
            panes = make_pane(self.renderer), make_pane(self.renderer)
        _log.info("preview renderer: %s (%s)", self.renderer, self.renderer_reason)
        return panes

    # -- the run -------------------------------------------------------------------------

    @property
    def handler(self) -> LiveHandler | LiveView | None:
        """The run (or live view) followed."""
        return self._handler

    @property
    def core(self) -> Any:
        """The core of the widget's own live view (made from a core), else None."""
        return None if self._own_view is None else self._own_view.core

    @property
    def timer(self) -> QTimer:
        """The poll timer (active while a handler is followed and the widget is open)."""
        return self._timer

    def set_handler(
        self,
        handler: LiveHandler | LiveView | None,
        *,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        """Follow another run or live view (None: none); pair, statistics, notices afresh.

        Parameters
        ----------
        handler : LiveHandler, LiveView or None
            The new run's handler, or a live view (live mode: nothing saved).
        provenance : mapping, optional
            Its denoiser's provenance (default: keep the one given before).
        """
        self._disconnect()
        self._handler = handler
        self._inbox = _Inbox()
        self.state.clear()
        live = isinstance(handler, LiveView)
        self.health.reset(live=live)
        if provenance is not None:
            self.state.provenance = dict(provenance)
        if handler is None:
            self._timer.stop()
        else:
            if isinstance(handler, LiveView):
                handler.events.denoiser_failed.connect(self._inbox.on_live_denoiser_failed)
            else:
                handler.events.raw_failed.connect(self._inbox.on_raw_failed)
                handler.events.finished.connect(self._inbox.on_finished)
            self._connected = handler.events
            self._timer.start()
        self._render()
        self._show_status()

    def _disconnect(self) -> None:
        events, self._connected = self._connected, None
        if isinstance(events, LiveViewEvents):
            events.denoiser_failed.disconnect(self._inbox.on_live_denoiser_failed, missing_ok=True)
        elif events is not None:
            events.raw_failed.disconnect(self._inbox.on_raw_failed, missing_ok=True)
            events.finished.disconnect(self._inbox.on_finished, missing_ok=True)

    def refresh(self, *, background: bool = False) -> None:
        """Poll the handler once: newest pair, statistics, failures (what the timer does).

        ``background``: render a new pair on the worker thread (the timer's way);
        default: at once, on this thread.
        """
        handler = self._handler
        if handler is None:
            return
        raw_failure, summary, live_failure = self._inbox.read()
        self.health.live_failure = live_failure
        if summary is None and not isinstance(handler, LiveView) and handler.finished:
            # `finished` is emitted just after the run is marked over: a poll in between
            # takes the summary from the handler (wait returns at once by then).
            summary = handler.wait(timeout=0)
            self._inbox.on_finished(summary)
        self.health.raw_failure = raw_failure
        self.health.final_status = None if summary is None else summary.status
        if not isinstance(handler, LiveView):
            widefield = handler.latest_widefield()
            if widefield is not None and widefield is not self.state.widefield:
                self.state.widefield = widefield
                if "widefield" in self.state.overlays:
                    self._render()
            recon = handler.latest_recon()  # the same object until a newer one is made
            if recon is not None and recon.image is not self.state.recon:
                self.state.recon, self.state.recon_set = recon.image, recon.set_number
                if "reconstruction" in self.state.overlays:
                    self._render()
        self.show_pair(handler.latest(), handler.stats(), background=background)

    def show_pair(
        self, pair: LatestPair | None, stats: LiveStats | None = None, *, background: bool = False
    ) -> None:
        """Display one pair and statistics snapshot (what :meth:`refresh` polled).

        Also usable without a handler (replays, tests). Renders only when the pair is new;
        ``background`` renders it on the worker thread.
        """
        now = time.perf_counter()
        if stats is not None:
            self.state.stats = stats
            self.health.update(stats, now)
        if self.state.take(pair, now):
            if background:
                self._render_in_background()
            else:
                self._render()
        self._show_status(now)

    def set_widefield(self, image: np.ndarray | None) -> None:
        """Give the widefield image of the latest complete SIM set (None: forget it).

        See :func:`~sn2n_live.preview.widefield_image`; the widefield overlay shows it.
        """
        self.state.widefield = None if image is None else np.asarray(image)
        self._render()

    # -- settings ------------------------------------------------------------------------

    def set_recon(self, image: np.ndarray | None, set_number: int | None = None) -> None:
        """Give a SIM reconstruction (``(2H, 2W)``; None: forget it) to show.

        What :meth:`refresh` takes from ``handler.latest_recon()``; the reconstruction
        overlay shows it in the denoised pane.
        """
        self.state.recon = None if image is None else np.asarray(image)
        self.state.recon_set = None if image is None else set_number
        self._render()

    def set_overlay(self, name: str, on: bool) -> None:
        """Switch an overlay on or off.

        ``"residual"``, ``"risk"``, ``"widefield"`` or ``"reconstruction"``.
        """
        if name not in OVERLAYS:
            raise ValueError(f"overlay must be one of {OVERLAYS}; got {name!r}.")
        if on:
            self.state.overlays.add(name)
        else:
            self.state.overlays.discard(name)
        box = self.overlay_boxes[name]
        if box.isChecked() != on:
            box.setChecked(on)  # re-enters with the same value: a no-op
        self._render()

    def set_colormap(self, name: str) -> None:
        """Colormap of both panes (one of the combo's names)."""
        if name not in colormaps_available():
            raise ValueError(f"colormap must be one of {colormaps_available()}; got {name!r}.")
        self.state.colormap = name
        if self.colormap_combo.currentText() != name:
            self.colormap_combo.setCurrentText(name)
        self._render()

    def set_contrast(
        self,
        mode: str,
        *,
        linked: bool | None = None,
        raw_limits: tuple[float, float] | None = None,
        denoised_limits: tuple[float, float] | None = None,
    ) -> None:
        """Contrast: ``"auto"`` (percentiles) or ``"manual"``, linked or separate.

        Parameters
        ----------
        mode : {"auto", "manual"}
            Percentile limits or the manual ones.
        linked : bool, optional
            One set of limits for both panes; default: keep.
        raw_limits, denoised_limits : tuple of float, optional
            Manual limits (linked: ``raw_limits`` serves both).
        """
        if mode not in ("auto", "manual"):
            raise ValueError(f"contrast mode must be 'auto' or 'manual'; got {mode!r}.")
        self.state.contrast = mode  # type: ignore[assignment]
        if linked is not None:
            self.state.linked = bool(linked)
        if raw_limits is not None:
            self.state.manual_raw = (float(raw_limits[0]), float(raw_limits[1]))
        if denoised_limits is not None:
            self.state.manual_denoised = (float(denoised_limits[0]), float(denoised_limits[1]))
        self._render()

    def readout(self, row: int, col: int) -> Readout | None:
        """Both panes' values at ``(row, col)`` in ADU (and photons with a camera)."""
        return self.state.readout(row, col)

    def grab_panes(self) -> tuple[np.ndarray, np.ndarray]:
        """Copy what the panes display: ``(raw_rgba, denoised_rgba)``, ``(H, W, 4)`` uint8."""
        return self.raw_pane.rgba().copy(), self.denoised_pane.rgba().copy()

    def grab_rendered(self) -> tuple[np.ndarray, np.ndarray]:
        """Read back what the panes draw on screen: ``(raw, denoised)`` RGBA, pane-sized.

        The QImage panes paint into a pixmap; the OpenGL panes render their canvas.
        """
        return self.raw_pane.rendered(), self.denoised_pane.rendered()

    def status_text(self) -> str:
        """Return the status bar's text."""
        return self.status_label.text()

    def banner_text(self) -> str | None:
        """Return the error banner's text, None while it is hidden."""
        return None if self.banner.isHidden() else self.banner.text()

    # -- internals -----------------------------------------------------------------------

    def _render(self) -> None:
        self._render_generation += 1  # a background render still running is outdated
        raw_rgba, den_rgba = render_panes(self.state)
        self._show_rendered(raw_rgba, den_rgba)

    def _show_rendered(
        self, raw_rgba: np.ndarray, den_rgba: np.ndarray, state: PreviewState | None = None
    ) -> None:
        self.raw_pane.set_image(raw_rgba)
        resized = self.denoised_pane.rgba().shape[:2] != den_rgba.shape[:2]
        self.denoised_pane.set_image(den_rgba)
        if resized and self.link_views and raw_rgba.size:  # the other sampling, same field
            self._follow_view(self.raw_pane, self.denoised_pane, self.raw_pane.view())
        s = self.state if state is None else state
        self.raw_title.setText("widefield (SIM set)" if s.showing_widefield() else "raw")
        self.denoised_title.setText(
            f"SIM reconstruction, 2x (set {s.recon_set})" if s.showing_recon() else "denoised"
        )
        self._sync_controls()

    def _render_in_background(self) -> None:
        """Render the state on the worker (one at a time; a newer pair waits for it)."""
        if self._render_job is not None:
            self._render_again = True
            return
        if self._render_pool is None:
            self._render_pool = ThreadPoolExecutor(1, thread_name_prefix="sn2n-preview-render")
        self._render_generation += 1
        generation = self._render_generation
        # A shallow copy: the arrays are immutable by contract; render_panes writes only
        # the limits, which come back with the pixels.
        snapshot = dataclasses.replace(self.state, overlays=set(self.state.overlays))

        def render() -> tuple[PreviewState, np.ndarray, np.ndarray]:
            return (snapshot, *render_panes(snapshot))

        job = self._render_pool.submit(render)
        self._render_job = (generation, job)
        # Done callbacks run once the result is set; the signal is queued to this thread.
        job.add_done_callback(lambda _: self._render_done.emit())

    def _apply_background_render(self) -> None:
        if self._render_job is None or not self._render_job[1].done():
            return
        generation, job = self._render_job
        self._render_job = None
        try:
            snapshot, raw_rgba, den_rgba = job.result()
        except Exception as exc:  # shown like a failed poll: loudly, once
            self._timer.stop()
            self.banner.setText(f"The preview stopped: {type(exc).__name__}: {exc}")
            self.banner.show()
            return
        if generation == self._render_generation:
            self.state.limits_raw = snapshot.limits_raw
            self.state.limits_denoised = snapshot.limits_denoised
            self._show_rendered(raw_rgba, den_rgba, snapshot)
        if self._render_again:
            self._render_again = False
            self._render_in_background()

    def _sync_controls(self) -> None:
        """Show the state in the controls (auto limits too), without re-entering it."""
        s = self.state
        manual = s.contrast == "manual"
        raw_lim = s.manual_raw if manual else s.limits_raw
        den_lim = (s.manual_raw if s.linked else s.manual_denoised) if manual else s.limits_denoised
        widgets = (self.contrast_combo, self.link_contrast, self.raw_min, self.raw_max)
        widgets += (self.den_min, self.den_max)
        for w in widgets:
            w.blockSignals(True)
        try:
            self.contrast_combo.setCurrentText(s.contrast)
            self.link_contrast.setChecked(s.linked)
            for spin, value in zip(
                (self.raw_min, self.raw_max, self.den_min, self.den_max),
                (*(raw_lim or (0.0, 0.0)), *(den_lim or (0.0, 0.0))),
                strict=True,
            ):
                spin.setValue(value)
            for spin in (self.raw_min, self.raw_max):
                spin.setEnabled(manual)
            for spin in (self.den_min, self.den_max):
                spin.setEnabled(manual and not s.linked)
        finally:
            for w in widgets:
                w.blockSignals(False)

    def _on_contrast(self, *_: object) -> None:
        self.set_contrast(self.contrast_combo.currentText(), linked=self.link_contrast.isChecked())

    def _on_manual_limits(self, *_: object) -> None:
        self.set_contrast(
            "manual",
            raw_limits=(self.raw_min.value(), self.raw_max.value()),
            denoised_limits=(self.den_min.value(), self.den_max.value()),
        )

    def _follow_view(self, moved: ZoomPanPane, other: ZoomPanPane, view: tuple[float, ...]) -> None:
        # Zoom is relative to the fitted image, the centre in image pixels: a pane showing
        # the 2x reconstruction gets the same field at twice the coordinates.
        if self.link_views:
            zoom, cx, cy = view
            sy, sx = _sampling(other, moved)
            other.set_view(zoom, cx * sx, cy * sy)

    def _on_hover(self, pane: ZoomPanPane, row: int, col: int) -> None:
        value = None
        if row >= 0:
            sy, sx = _sampling(self.raw_pane, pane)  # camera pixels per pane pixel
            cam_row, cam_col = int(row * sy), int(col * sx)
            ry, rx = _sampling(self.denoised_pane, self.raw_pane)
            recon_pixel = (
                (row, col) if pane is self.denoised_pane else (int(row * ry), int(col * rx))
            )
            value = self.state.readout(cam_row, cam_col, recon_pixel)
        self.readout_label.setText(value.text() if value is not None else " ")

    def _show_status(self, now: float | None = None) -> None:
        s = self.state
        line = status_line(
            s.stats, s.provenance, renderer=self.renderer, frame=s.frame, age_s=s.age_s(now)
        )
        notices = self.health.notices(s.stats, now)
        self._show_notices(line, notices)

    def _show_notices(self, line: str, notices: list[Notice]) -> None:
        errors = [n.text for n in notices if n.level == "error"]
        warnings = [n.text for n in notices if n.level == "warning"]
        if warnings:
            line = " · ".join([*warnings, line])
        self.status_label.setText(line)
        self.status_label.setStyleSheet(_WARNING_STYLE if warnings else "")
        if errors:
            self.banner.setText("\n".join(errors))
            self.banner.show()
        else:
            self.banner.hide()

    def _on_timer(self) -> None:
        # A poll that raises would raise again every 100 ms: stop and say so, loudly.
        try:
            self._apply_background_render()  # in case its signal came before the result
            self.refresh(background=True)
        except Exception as exc:
            self._timer.stop()
            self.banner.setText(f"The preview stopped: {type(exc).__name__}: {exc}")
            self.banner.show()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Stop polling and let go of the handler's signals; the run goes on.

        A live view the widget made itself (from a core) is stopped; the camera is not.
        """
        self._timer.stop()
        self._disconnect()
        if self._own_view is not None:
            self._own_view.stop()
        if self._render_pool is not None:
            self._render_pool.shutdown(wait=True)  # a render takes tens of ms at most
            self._render_pool = None
        super().closeEvent(event)


def _is_core(source: object) -> bool:
    """Whether ``source`` is a pymmcore-plus core (not a handler or live view)."""
    return not hasattr(source, "latest") and hasattr(source, "startContinuousSequenceAcquisition")


def _sampling(to: ZoomPanPane, of: ZoomPanPane) -> tuple[float, float]:
    """Pixels of ``to``'s image per pixel of ``of``'s, ``(y, x)``; 1 before both have one."""
    (th, tw), (oh, ow) = to.rgba().shape[:2], of.rgba().shape[:2]
    if not (th and tw and oh and ow):
        return 1.0, 1.0
    return th / oh, tw / ow


def _spin() -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(-1e9, 1e9)
    spin.setDecimals(1)
    spin.setKeyboardTracking(False)  # a value typed digit by digit is one change
    return spin
