"""The live preview widget on real runs: DemoCamera MDA, a real tiny denoiser, both backends.

Nothing of pymmcore-plus or of the handler is mocked: the widget polls the real
``live_denoise`` handler from its timer while the MDA runs on another thread and the
test spins the Qt event loop (``qtbot.waitUntil``). Frame counts stay small (tens):
PySide6 6.12 with compiled psygnal leaks a reference to None per emit.
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading

import numpy as np
import pytest
import useq
import zarr

pytest.importorskip("qtpy", reason="needs qtpy and a Qt binding")
pytest.importorskip("pytestqt", reason="needs pytest-qt")

from qtpy.QtCore import QEvent, QPointF, Qt
from qtpy.QtGui import QMouseEvent
from qtpy.QtWidgets import QApplication

from _preview_screen import wheel
from _run_checks import assert_record_matches_stores
from sn2n_live.acquisition import LiveDenoiseHandler, live_denoise
from sn2n_live.method._denoiser import Denoiser
from sn2n_live.method._package import save_package
from sn2n_live.preview import DenoisePreviewWidget, to_rgba

SIDE = 64  # the conftest `core` fixture's frame size
CAMERA = {"offset_adu": 100.0, "gain_adu_per_e": 2.0}
WAIT_MS = 60_000  # generous: two cores are shared with the run's threads


@pytest.fixture
def denoiser(package) -> Denoiser:
    return Denoiser(package, tile=None)


class FailingDenoiser:
    """A real Denoiser that raises from frame ``fail_at`` on."""

    def __init__(self, inner: Denoiser, fail_at: int):
        self.inner, self.fail_at, self.done = inner, fail_at, 0

    @property
    def provenance(self):
        return self.inner.provenance

    def denoise(self, frames: np.ndarray) -> np.ndarray:
        if self.done + len(frames) > self.fail_at:
            raise RuntimeError("CUDA out of memory (simulated)")
        self.done += len(frames)
        return self.inner.denoise(frames)


def _events(n: int, interval_s: float = 0.0) -> list[useq.MDAEvent]:
    return list(useq.MDASequence(time_plan={"interval": interval_s, "loops": n}))


def _widget(qtbot, denoiser, **kw) -> DenoisePreviewWidget:
    w = DenoisePreviewWidget(provenance=denoiser.provenance, camera=CAMERA, **kw)
    qtbot.addWidget(w)
    w.resize(900, 520)
    w.show()
    qtbot.waitExposed(w)
    return w


def _high_pass_std(image: np.ndarray) -> float:
    """Std of horizontal differences: what noise adds and smoothing removes."""
    return float(np.diff(np.asarray(image, np.float64), axis=-1).std())


def _run_while_polling(core, w, handler, events, qtbot, until=None):
    """Run the MDA on its thread while the GUI thread spins; return frames shown meanwhile."""
    shown: set[int] = set()
    th = core.run_mda(events)

    def done() -> None:
        if w.state.frame is not None:
            shown.add(w.state.frame)
        assert (until() if until else False) or not th.is_alive()

    qtbot.waitUntil(done, timeout=WAIT_MS)
    return th, shown


def _mouse(pane, kind: QEvent.Type, pos: QPointF, buttons: Qt.MouseButton) -> None:
    button = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseMove else Qt.MouseButton.LeftButton
    event = QMouseEvent(
        kind, pos, pane.mapToGlobal(pos), button, buttons, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(pane, event)


def test_the_widget_builds_without_a_run(qtbot, denoiser):
    w = _widget(qtbot, denoiser)
    assert not w.timer.isActive()  # nothing to poll
    w.refresh()
    raw, den = w.grab_panes()
    assert raw.shape == den.shape == (0, 0, 4)
    assert w.status_text().startswith("no run · ") and w.status_text().endswith(" · QImage")
    assert "torch fp32" in w.status_text()
    assert w.banner_text() is None
    assert w.timer.interval() == 100  # 10 Hz by default, whatever the camera rate
    with pytest.raises(ValueError, match="refresh_ms"):
        DenoisePreviewWidget(refresh_ms=5)


def test_the_widget_shows_a_live_run_as_it_goes(core, denoiser, qtbot, tmp_path):
    w = _widget(qtbot, denoiser, refresh_ms=20)
    events = _events(24, interval_s=0.02)
    with live_denoise(
        core, model=denoiser, out=tmp_path / "run", events=events, isolation="thread"
    ) as h:
        w.set_handler(h)
        assert w.timer.isActive()
        th, shown = _run_while_polling(core, w, h, events, qtbot)
        th.join()
    assert h.wait().status == "completed"
    assert shown, "the widget showed no pair while the run went on"
    w.refresh()
    latest, stats = h.latest(), h.stats()

    # The newest pair, as the handler holds it (not a copy), and its statistics.
    assert w.state.frame == latest.frame == len(events) - 1
    assert w.state.raw is latest.raw and w.state.denoised is latest.denoised
    assert w.state.stats == stats
    text = w.status_text()
    for part in (
        f"camera {stats.camera_fps:.1f} fps",
        f"denoise {stats.denoise_fps:.1f} fps",
        f"p50/p99 {stats.latency_p50_ms:.1f}/{stats.latency_p99_ms:.1f} ms",
        f"behind {stats.frames_behind}",
        f"queue {stats.queue_depth}",
        denoiser.provenance["model_sha256"][:8] + " torch fp32",
        f"frame {latest.frame}",
        "QImage",
    ):
        assert part in text, f"{part!r} not in the status line {text!r}"
    assert w.banner_text() is None

    # What the panes display is the newest pair under the current limits.
    raw_px, den_px = w.grab_panes()
    np.testing.assert_array_equal(raw_px, to_rgba(latest.raw, w.state.limits_raw))
    np.testing.assert_array_equal(den_px, to_rgba(latest.denoised, w.state.limits_denoised))

    # Linked contrast: one set of limits; the denoised pane is smoother than the raw.
    assert w.state.linked and w.state.limits_raw == w.state.limits_denoised
    assert _high_pass_std(den_px[..., 0]) < _high_pass_std(raw_px[..., 0])
    assert _high_pass_std(latest.denoised) < 0.1 * _high_pass_std(latest.raw)
    # Separate: each pane its own limits; both panes show structure (not blank).
    w.link_contrast.setChecked(False)
    assert w.state.limits_raw != w.state.limits_denoised
    raw_px, den_px = w.grab_panes()
    assert raw_px[..., 0].std() > 10 and den_px[..., 0].std() > 10
    # Manual limits, separate then linked.
    w.set_contrast("manual", raw_limits=(0, 2000), denoised_limits=(700, 800))
    assert (w.state.limits_raw, w.state.limits_denoised) == ((0, 2000), (700, 800))
    assert w.raw_max.value() == 2000 and w.den_min.isEnabled()
    w.link_contrast.setChecked(True)
    assert w.state.limits_raw == w.state.limits_denoised == (0, 2000)
    assert not w.den_min.isEnabled()
    w.contrast_combo.setCurrentText("auto")
    assert not w.raw_min.isEnabled()

    # Colormap: both panes through the chosen LUT.
    w.colormap_combo.setCurrentText("magma")
    raw_px, den_px = w.grab_panes()
    np.testing.assert_array_equal(raw_px, to_rgba(latest.raw, w.state.limits_raw, "magma"))

    # Overlays: the residual replaces the denoised pane; off restores it exactly. The
    # pair carries no risk map, so the risk overlay changes nothing.
    w.overlay_boxes["residual"].setChecked(True)
    raw_res, den_res = w.grab_panes()
    np.testing.assert_array_equal(raw_res, raw_px)
    assert (den_res != den_px).any()
    w.overlay_boxes["residual"].setChecked(False)
    np.testing.assert_array_equal(w.grab_panes()[1], den_px)
    w.set_overlay("risk", True)
    np.testing.assert_array_equal(w.grab_panes()[1], den_px)
    w.set_overlay("risk", False)

    _check_linked_zoom_and_pan(w, qtbot)
    _check_pixel_readout(w, latest)


def _check_linked_zoom_and_pan(w: DenoisePreviewWidget, qtbot) -> None:
    raw_pane, den_pane = w.raw_pane, w.denoised_pane
    assert raw_pane.view() == den_pane.view() == (1.0, SIDE / 2, SIDE / 2)
    wheel(raw_pane, 2, QPointF(raw_pane.width() / 4, raw_pane.height() / 4))
    zoom, cx, cy = raw_pane.view()
    assert zoom == pytest.approx(1.25**2) and (cx, cy) != (SIDE / 2, SIDE / 2)
    assert den_pane.view() == raw_pane.view()
    # A drag on the other pane pans both.
    start = QPointF(den_pane.width() / 2, den_pane.height() / 2)
    _mouse(den_pane, QEvent.Type.MouseButtonPress, start, Qt.MouseButton.LeftButton)
    _mouse(den_pane, QEvent.Type.MouseMove, start + QPointF(40, 0), Qt.MouseButton.LeftButton)
    _mouse(
        den_pane, QEvent.Type.MouseButtonRelease, start + QPointF(40, 0), Qt.MouseButton.NoButton
    )
    z2, cx2, cy2 = den_pane.view()
    assert z2 == zoom and cx2 < cx and cy2 == pytest.approx(cy)
    assert raw_pane.view() == den_pane.view()
    w.link_views = False
    wheel(raw_pane, -1, start)
    assert raw_pane.view() != den_pane.view()
    w.link_views = True
    qtbot.wait(10)  # paint events run with the zoomed views


def _check_pixel_readout(w: DenoisePreviewWidget, latest) -> None:
    r = w.readout(10, 20)
    assert r.raw_adu == float(latest.raw[10, 20])
    assert r.denoised_adu == float(latest.denoised[10, 20])
    assert r.raw_photons == pytest.approx((latest.raw[10, 20] - 100.0) / 2.0)
    assert w.readout(SIDE, 0) is None
    # The cursor over a pane: the label reads that pixel in both.
    pane = w.raw_pane
    pos = QPointF(pane.width() / 2 + 3, pane.height() / 2 + 3)
    row, col = pane.pixel_at(pos)
    _mouse(pane, QEvent.Type.MouseMove, pos, Qt.MouseButton.NoButton)
    assert w.readout_label.text() == w.readout(row, col).text()
    assert f"raw {float(latest.raw[row, col]):.1f} ADU" in w.readout_label.text()


def test_closing_the_widget_mid_run_stops_its_timer_and_the_run_completes(
    core, denoiser, qtbot, tmp_path
):
    w = _widget(qtbot, denoiser, refresh_ms=20)
    events = _events(30, interval_s=0.05)  # >= 1.5 s: the close lands mid-run
    run = tmp_path / "run"
    with live_denoise(core, model=denoiser, out=run, events=events, isolation="thread") as h:
        listeners = len(h.events.raw_failed), len(h.events.finished)
        w.set_handler(h)
        assert (len(h.events.raw_failed), len(h.events.finished)) == (
            listeners[0] + 1,
            listeners[1] + 1,
        )
        received = lambda: w.state.stats is not None and w.state.stats.frames_received > 0  # noqa: E731
        th, _ = _run_while_polling(core, w, h, events, qtbot, until=received)
        assert th.is_alive(), "the MDA ended before the widget saw it start"
        w.close()
        assert not w.timer.isActive()
        # The widget let go of the handler's signals; nothing of it runs any more.
        assert (len(h.events.raw_failed), len(h.events.finished)) == listeners
        frozen = w.state.stats
        qtbot.waitUntil(lambda: not th.is_alive(), timeout=WAIT_MS)
        assert w.state.stats is frozen
    summary = h.wait()
    assert summary.status == "completed"
    doc = assert_record_matches_stores(run)  # run.json against the stores themselves
    assert doc["status"] == "completed"
    counts = doc["counts"]
    assert counts["received"] == counts["raw_written"] == len(events)
    assert counts["denoised_written"] == len(events)
    raw = np.asarray(zarr.open_group(run / "raw.ome.zarr", mode="r")["0"])
    assert raw.shape == (len(events), SIDE, SIDE) and raw.any(axis=(1, 2)).all()


def test_one_widget_follows_successive_runs(core, denoiser, qtbot, tmp_path):
    w = _widget(qtbot, denoiser, refresh_ms=20)
    handlers = []
    for name, n in (("first", 6), ("second", 4)):
        events = _events(n)
        with live_denoise(
            core, model=denoiser, out=tmp_path / name, events=events, isolation="thread"
        ) as h:
            w.set_handler(h)
            assert w.state.frame is None  # the previous run's pair is gone
            th, _ = _run_while_polling(core, w, h, events, qtbot)
            th.join()
        h.wait()
        w.refresh()
        assert w.state.frame == n - 1 and w.state.raw is h.latest().raw
        handlers.append(h)
    assert w.handler is handlers[1]
    assert w.state.stats == handlers[1].stats()
    w.set_handler(None)
    assert not w.timer.isActive() and w.state.frame is None


def test_a_raw_failure_from_a_worker_thread_shows_a_banner_on_the_next_poll(
    qtbot, denoiser, tmp_path
):
    w = _widget(qtbot, denoiser)
    h = LiveDenoiseHandler(denoiser, tmp_path / "run")  # a real handler, no run yet
    w.set_handler(h)
    message = "frame 3 (raw.ome.zarr): OSError: [Errno 28] No space left on device"
    th = threading.Thread(target=h.events.raw_failed.emit, args=(message,))
    th.start()
    th.join()
    # The emit touched no Qt object: only the widget's poll shows it.
    assert w.banner_text() is None
    w.refresh()
    assert w.banner_text() == f"RAW FRAMES ARE NOT BEING SAVED: {message}"
    assert "background: #b00020" in w.banner.styleSheet()
    assert w.status_text().startswith("waiting · ")
    # It stays until the widget follows another run.
    w.refresh()
    assert w.banner_text() is not None
    w.set_handler(None)
    assert w.banner_text() is None


def test_a_denoiser_failure_ends_in_an_error_banner(core, denoiser, qtbot, tmp_path):
    w = _widget(qtbot, denoiser, refresh_ms=20)
    events = _events(12)
    with live_denoise(
        core,
        model=FailingDenoiser(denoiser, fail_at=4),
        out=tmp_path / "run",
        events=events,
        isolation="thread",
        max_batch=2,
    ) as h:
        w.set_handler(h)
        th, _ = _run_while_polling(core, w, h, events, qtbot)
        th.join()
    assert h.wait().status == "denoiser_failed"
    w.refresh()  # the finished signal came from a worker thread; the poll reads it
    assert "The denoiser failed" in w.banner_text()
    assert "frames without denoised twin" in w.status_text()
    assert "font-weight: bold" in w.status_label.styleSheet()  # the warning colour


def test_the_widget_follows_a_run_in_a_denoise_process(core, package, denoiser, qtbot, tmp_path):
    # Process mode: latest() copies the pair out of shared memory when the widget asks.
    model = save_package(package, tmp_path / "model.sn2n")
    w = _widget(qtbot, denoiser, refresh_ms=20)
    events = _events(12, interval_s=0.02)
    run = tmp_path / "run"
    with live_denoise(core, model=model, out=run, events=events, isolation="process") as h:
        w.set_handler(h)
        th, _ = _run_while_polling(core, w, h, events, qtbot)
        th.join()
    assert h.wait().status == "completed"
    w.refresh()
    latest = h.latest()
    assert w.state.frame == latest.frame == len(events) - 1
    assert w.state.stats == h.stats()
    raw_px, den_px = w.grab_panes()
    np.testing.assert_array_equal(raw_px, to_rgba(latest.raw, w.state.limits_raw))
    np.testing.assert_array_equal(den_px, to_rgba(latest.denoised, w.state.limits_denoised))
    assert w.banner_text() is None


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_run_with_risk_maps_shows_them_in_the_risk_overlay(
    core, package, denoiser, qtbot, tmp_path, isolation
):
    # risk=True: every pair (saved or fresh) carries its hallucination-risk map, in
    # process mode through the shared-memory pair slot; the overlay veils the pane red.
    model = save_package(package, tmp_path / "model.sn2n") if isolation == "process" else denoiser
    w = _widget(qtbot, denoiser, refresh_ms=20)
    events = _events(8, interval_s=0.02)
    run = tmp_path / "run"
    with live_denoise(
        core, model=model, out=run, events=events, isolation=isolation, risk=True
    ) as h:
        w.set_handler(h)
        th, _ = _run_while_polling(core, w, h, events, qtbot)
        th.join()
    assert h.wait().status == "completed"
    w.refresh()
    latest = h.latest()
    assert latest.risk is not None and latest.risk.shape == latest.raw.shape
    assert latest.risk.dtype == np.float32 and 0 <= latest.risk.min() <= latest.risk.max() <= 1
    np.testing.assert_array_equal(w.state.risk, latest.risk)
    saved = zarr.open_group(run / "risk.ome.zarr", mode="r")["0"]
    np.testing.assert_allclose(
        np.asarray(saved[...]).reshape(-1, SIDE, SIDE)[-1], latest.risk, atol=1e-6
    )
    plain = w.grab_panes()[1]
    w.set_overlay("risk", True)
    veiled = w.grab_panes()[1]
    from sn2n_live.preview import blend_risk

    np.testing.assert_array_equal(veiled, blend_risk(plain, latest.risk))
    if latest.risk.max() > 0:
        assert (veiled != plain).any()


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_the_widefield_overlay_shows_the_newest_complete_sim_set(
    core, package, denoiser, qtbot, tmp_path, isolation
):
    # While the widget polls, the handler sums each SIM set's raw frames (the raw writer
    # in thread mode, the feeder in process mode); the widget shows the newest complete
    # one in the raw pane when the widefield overlay is on.
    from sn2n_live.acquisition import SIMPlan

    plan = SIMPlan(n_angles=3, n_phases=3, pattern_source="metadata")
    events = plan.expand(useq.MDASequence(time_plan={"interval": 0.05, "loops": 4}))
    model = save_package(package, tmp_path / "model.sn2n") if isolation == "process" else denoiser
    w = _widget(qtbot, denoiser, refresh_ms=20)
    run = tmp_path / "run"
    with live_denoise(core, model=model, out=run, events=events, isolation=isolation) as h:
        w.set_handler(h)
        th, _ = _run_while_polling(core, w, h, events, qtbot)
        th.join()
    assert h.wait().status == "completed"
    w.refresh()
    widefield = h.latest_widefield()
    assert widefield is not None and widefield.dtype == np.float32
    raw = np.asarray(zarr.open_group(run / "raw.ome.zarr", mode="r")["0"][...])
    last_set = raw.reshape(-1, SIDE, SIDE)[-9:].astype(np.float64)
    np.testing.assert_allclose(widefield, last_set.mean(axis=0), rtol=1e-5)
    assert w.state.widefield is widefield
    w.set_overlay("widefield", True)
    raw_px, _ = w.grab_panes()
    np.testing.assert_array_equal(raw_px, to_rgba(widefield, w.state.limits_raw))


def test_the_timer_renders_new_pairs_off_the_gui_thread(core, denoiser, qtbot, tmp_path):
    # The timer's polls hand new pairs to the render worker; its pixels reach the panes
    # (the GUI thread only shows them), exactly as a render on the GUI thread would be.
    w = _widget(qtbot, denoiser, refresh_ms=20)
    events = _events(16, interval_s=0.02)
    with live_denoise(
        core, model=denoiser, out=tmp_path / "run", events=events, isolation="thread"
    ) as h:
        w.set_handler(h)
        th, _ = _run_while_polling(core, w, h, events, qtbot)
        th.join()
    latest = h.latest()
    qtbot.waitUntil(
        lambda: w.state.frame == latest.frame and w._render_job is None, timeout=WAIT_MS
    )
    threads = {t.name for t in threading.enumerate()}
    assert any(name.startswith("sn2n-preview-render") for name in threads)
    raw_px, den_px = w.grab_panes()
    np.testing.assert_array_equal(raw_px, to_rgba(latest.raw, w.state.limits_raw))
    np.testing.assert_array_equal(den_px, to_rgba(latest.denoised, w.state.limits_denoised))
    w.close()
    assert not any(
        t.name.startswith("sn2n-preview-render") and t.is_alive() for t in threading.enumerate()
    ), "closing the widget leaves its render worker running"
