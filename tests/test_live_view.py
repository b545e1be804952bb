"""Live mode on the real pymmcore-plus core (DemoCamera): LiveView and LiveRecording.

The denoiser is a real :class:`Denoiser` on the tiny random-init package, wrapped to be
slow or to fail on demand; nothing of pymmcore-plus is mocked.
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gc
import json
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import zarr
from pymmcore_plus import CMMCorePlus

from _run_checks import assert_record_matches_stores
from sn2n_live.acquisition import (
    LiveRecording,
    LiveView,
    create_simulated_microscope,
    release_core,
)
from sn2n_live.method._denoiser import Denoiser

SIDE = 64


class Wrapped:
    """A real Denoiser, slower (sleep per call) and/or failing on the calls in ``fail``."""

    def __init__(
        self, inner: Denoiser, delay_s: float = 0.0, fail: Callable[[int], bool] | None = None
    ):
        self.inner = inner
        self.delay_s = delay_s
        self.fail = fail or (lambda call: False)
        self.calls = 0
        self.threads: set[str] = set()

    @property
    def provenance(self):
        return self.inner.provenance

    def denoise(self, frames: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.fail(self.calls):
            raise RuntimeError(f"CUDA out of memory (simulated, call {self.calls})")
        time.sleep(self.delay_s)
        return self.inner.denoise(frames)


@pytest.fixture
def denoiser(package) -> Denoiser:
    return Denoiser(package, tile=None)


@pytest.fixture
def demo(monkeypatch):
    """DemoCamera core, SIDE x SIDE frames at 10 ms, psygnal signals (a view uses none)."""
    monkeypatch.setenv("PYMM_SIGNALS_BACKEND", "psygnal")
    mmc = CMMCorePlus()
    mmc.loadSystemConfiguration()
    mmc.setProperty("Camera", "OnCameraCCDXSize", SIDE)
    mmc.setProperty("Camera", "OnCameraCCDYSize", SIDE)
    mmc.setExposure(10)
    yield mmc
    release_core(mmc)
    del mmc
    gc.collect()


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_view_follows_live_mode_and_stop_joins_it(demo, denoiser):
    view = LiveView(demo, denoiser).start()
    assert view.start() is view  # idempotent: one worker
    demo.startContinuousSequenceAcquisition(0)
    try:
        _until(lambda: view.frames_denoised >= 3)
        first = view.latest()
        _until(lambda: view.frames_denoised >= first.frame + 4)
        pair = view.latest()
        stats = view.stats()
    finally:
        demo.stopSequenceAcquisition()
    assert pair.fresh and pair.frame > first.frame
    assert pair.index["live"] > first.index["live"]
    assert pair.raw.shape == pair.denoised.shape == (SIDE, SIDE)
    assert pair.raw.dtype == np.uint16 and pair.denoised.dtype == np.float32
    assert not np.array_equal(pair.denoised, pair.raw.astype(np.float32))
    np.testing.assert_allclose(pair.denoised, denoiser.denoise(pair.raw[None])[0], rtol=1e-5)
    assert 0 <= pair.age_s() < 2.0 and pair.latency_ms > 0
    assert stats.state == "acquiring" and stats.camera_fps > 0 and stats.denoise_fps > 0
    assert stats.frames_received >= view.frames_denoised
    assert stats.latency_p50_ms is not None and stats.denoised_written == 0
    assert view.provenance == denoiser.provenance
    _until(lambda: view.stats().state == "waiting")  # live mode off: the view waits
    settled = view.stats()
    assert settled.frames_received == view.frames_denoised + view.frames_skipped
    view.stop()
    view.stop()
    assert view.finished and not view.running and view.stats().state == "finished"
    with pytest.raises(RuntimeError, match="stopped"):
        view.start()


def test_view_idles_while_no_sequence_runs(demo, denoiser):
    with LiveView(demo, denoiser) as view:
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(0.5)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        stats = view.stats()
        assert view.running
    assert view.finished
    assert view.latest() is None and view.latest_raw() is None
    assert stats.state == "waiting" and stats.frames_received == 0
    assert cpu < 0.25 * wall, f"idle view used {cpu:.3f} s of CPU in {wall:.3f} s"


class CountingSimulatedCalls:
    """Record which threads call a core method (the real method still runs)."""

    def __init__(self, core, name: str):
        self.threads: list[str] = []
        original = getattr(core, name)

        def counted(*args, **kwargs):
            self.threads.append(threading.current_thread().name)
            return original(*args, **kwargs)

        setattr(core, name, counted)


def test_the_worker_never_asks_an_idle_unicore_whether_it_streams(denoiser):
    # UniMMCore.isSequenceRunning() drops a camera thread that is made but not started
    # yet: a worker asking it while live mode starts could orphan the camera (seen as a
    # live button that did not take). The view follows the core's events instead.
    core = create_simulated_microscope(shape=(256, 256))
    try:
        asked = CountingSimulatedCalls(core, "isSequenceRunning")
        with LiveView(core, denoiser, poll_s=0.001) as view:
            time.sleep(0.3)
            assert "sn2n-live-view" not in asked.threads
            for _ in range(5):
                core.startContinuousSequenceAcquisition(0)
                assert core.isSequenceRunning()
                seen = view.stats().frames_received
                _until(lambda seen=seen: view.stats().frames_received > seen)
                core.stopSequenceAcquisition()
                _until(lambda: view.stats().state == "waiting")
        assert "sn2n-live-view" in asked.threads  # it did ask, while the camera streamed
    finally:
        release_core(core)


def test_a_slow_denoiser_skips_to_the_newest_frame(demo, denoiser):
    slow = Wrapped(denoiser, delay_s=0.1)  # 10x the camera's 10 ms
    with LiveView(demo, slow) as view:
        demo.startContinuousSequenceAcquisition(0)
        try:
            _until(lambda: view.frames_denoised >= 4)
            pairs = [view.latest()]
            _until(lambda: view.latest().frame > pairs[0].frame)
            pairs.append(view.latest())
            age = pairs[-1].age_s()
            stats = view.stats()
        finally:
            demo.stopSequenceAcquisition()
    assert pairs[1].index["live"] - pairs[0].index["live"] > 3  # frames in between skipped
    assert view.frames_skipped > view.frames_denoised
    assert view.stats().frames_received == view.frames_denoised + view.frames_skipped
    assert age < 0.5
    assert stats.camera_fps > 3 * stats.denoise_fps > 0  # the camera's rate, not the view's
    assert slow.threads == {"sn2n-live-view"}


def test_a_failing_denoiser_is_reported_not_fatal(demo, denoiser):
    failed = []
    flaky = Wrapped(denoiser, fail=lambda call: call == 2)
    broken = Wrapped(denoiser, fail=lambda call: True)
    with LiveView(demo, flaky) as view, LiveView(demo, broken, max_failures=3) as dead:
        dead.events.denoiser_failed.connect(failed.append)
        demo.startContinuousSequenceAcquisition(0)
        try:
            _until(lambda: view.frames_denoised >= 3 and dead.failed)
            raw = dead.latest_raw()
            _until(lambda: dead.latest_raw() is not raw)  # raw frames keep coming
            stats = dead.stats()
        finally:
            demo.stopSequenceAcquisition()
        assert view.running and dead.running
    assert view.failures == 1 and not view.failed and view.latest() is not None
    assert "out of memory" in view.last_error
    assert dead.failed and dead.failures == broken.calls == 3
    assert dead.latest() is None and stats.state == "denoiser_failed"
    assert dead.last_error.startswith("denoiser: RuntimeError: CUDA out of memory")
    assert failed == [dead.last_error]


def _run_json(run) -> dict:
    return json.loads((run / "run.json").read_text())


def test_record_from_live_mode_saves_a_run_and_returns_to_live(core, denoiser, tmp_path):
    core.setExposure(10)
    run = tmp_path / "run"
    view = LiveView(core, denoiser).start()
    core.startContinuousSequenceAcquisition(0)
    try:
        _until(lambda: view.frames_denoised >= 2)
        recording = LiveRecording(core, denoiser, run, view=view).start()
        assert recording.was_live and not core.isSequenceRunning() and core.mda.is_running()
        handler = recording.handler
        _until(lambda: handler.stats().frames_received >= 20)
        assert view.stats().state == "waiting"  # the MDA owns the camera and the denoiser
        denoised_before = view.frames_denoised
        summary = recording.stop()
        assert recording.stop() is summary and recording.summary is summary
        assert core.isSequenceRunning() and not core.mda.is_running()  # live mode again
        _until(lambda: view.frames_denoised > denoised_before + 2)
    finally:
        view.stop()
        if core.isSequenceRunning():
            core.stopSequenceAcquisition()
    assert summary.status == "canceled"
    n = summary.frames_received
    assert n >= 20 and summary.raw_written == summary.denoised_written == n
    doc = assert_record_matches_stores(run)
    assert doc["canceled"] is True and doc["state"] == "finished"
    assert doc["layout"]["kind"] == "flat" and doc["counts"]["received"] == n
    raw = zarr.open_group(run / "raw.ome.zarr", mode="r")["0"]
    assert raw.shape == (n, SIDE, SIDE)  # the unbounded axis: no raw frame lost
    assert all(np.asarray(raw[i]).any() for i in range(n))


def test_a_bounded_recording_completes_and_leaves_live_mode_off(core, denoiser, tmp_path):
    run = tmp_path / "run"
    with LiveRecording(core, denoiser, run, max_frames=8, interval_s=0.01) as recording:
        assert not recording.was_live
        _until(lambda: recording.handler.finished)
    summary = recording.summary
    assert summary.status == "completed" and summary.denoised_written == 8
    assert not core.isSequenceRunning()
    doc = assert_record_matches_stores(run)
    assert doc["canceled"] is False
    assert zarr.open_group(run / "raw.ome.zarr", mode="r")["0"].shape == (8, SIDE, SIDE)


def test_recording_refuses_a_used_folder_and_restarts_live_mode(demo, denoiser, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    demo.startContinuousSequenceAcquisition(0)
    try:
        with pytest.raises(ValueError):
            LiveRecording(demo, denoiser, tmp_path / "used").start()
        assert demo.isSequenceRunning()
    finally:
        demo.stopSequenceAcquisition()


def test_an_endless_recording_at_interval_0_runs_in_bursts_under_hardware_sequencing(
    demo, denoiser, tmp_path
):
    # The engine's default: it combines events of equal start time into one burst. An
    # endless time-lapse would be one endless burst that never starts.
    assert demo.mda.engine.use_hardware_sequencing
    demo.setExposure(1)
    run = tmp_path / "run"
    recording = LiveRecording(demo, denoiser, run).start()
    _until(lambda: recording.handler.stats().frames_received > 300)  # past the first burst
    summary = recording.stop()
    assert summary.status == "canceled"
    assert summary.raw_written == summary.denoised_written == summary.frames_received > 300
    assert_record_matches_stores(run)
