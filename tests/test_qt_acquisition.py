"""Live denoising with a QApplication in the process, as every GUI runs it.

Under pymmcore-plus's Qt signal backend, ``core.mda.events`` belongs to the GUI thread;
an MDA on another thread (``core.run_mda``) must still reach the handler when the GUI
thread joins it or spins ``processEvents`` (it hung with ``mda_listeners_connected``).
Each case runs under a pytest-timeout so that a regression fails instead of hanging.
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gc
import json
import threading
import time

import numpy as np
import pytest
import useq
import zarr

pytest.importorskip("qtpy", reason="needs qtpy and a Qt binding")
pytest.importorskip("pytestqt", reason="needs pytest-qt for the qapp fixture")

from pymmcore_plus import CMMCorePlus

from sn2n_live.acquisition import live_denoise
from sn2n_live.acquisition._connect import mda_events_relayed

SIDE = 64
N_EVENTS = 6
MDA_TIMEOUT_S = 30


class HalfDenoiser:
    """Output = input / 2; module-level so that a denoise process can unpickle it."""

    provenance = {"model_sha256": "half", "engine": "numpy"}  # noqa: RUF012

    def denoise(self, frames: np.ndarray) -> np.ndarray:
        return frames.astype(np.float32) / 2


@pytest.fixture(params=["qt", "psygnal"])
def qt_core(request, qapp, monkeypatch):
    """DemoCamera core created while a QApplication exists, on each signal backend."""
    # pymmcore-plus reads the variable when the core (its MDA runner) is created.
    monkeypatch.setenv("PYMM_SIGNALS_BACKEND", request.param)
    mmc = CMMCorePlus()
    mmc.loadSystemConfiguration()
    assert type(mmc.mda.events).__name__.startswith("Q") == (request.param == "qt")
    mmc.setProperty("Camera", "OnCameraCCDXSize", SIDE)
    mmc.setProperty("Camera", "OnCameraCCDYSize", SIDE)
    mmc.setExposure(1)
    mmc.mda.engine.use_hardware_sequencing = False
    yield mmc
    del mmc
    gc.collect()


def _events() -> list[useq.MDAEvent]:
    return list(useq.MDASequence(time_plan={"interval": 0, "loops": N_EVENTS}))


def _run(core: CMMCorePlus, events: list[useq.MDAEvent], form: str, qapp) -> None:
    """Run the MDA the way a script (``block``) or a GUI (``join``, ``process_events``) does."""
    if form == "block":
        core.mda.run(events)
        return
    th = core.run_mda(events)
    if form == "join":
        th.join(timeout=MDA_TIMEOUT_S)
    else:
        deadline = time.monotonic() + MDA_TIMEOUT_S
        while th.is_alive() and time.monotonic() < deadline:
            qapp.processEvents()
            time.sleep(0.005)
    assert not th.is_alive(), f"the MDA did not end within {MDA_TIMEOUT_S} s"


FORMS = ["block", "join", "process_events"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("isolation", ["thread", "process"])
@pytest.mark.parametrize("form", FORMS)
def test_every_frame_is_saved_raw_and_denoised_under_a_qapplication(
    qt_core, qapp, tmp_path, form, isolation
):
    events = _events()
    run = tmp_path / "run"
    t0 = time.monotonic()
    with live_denoise(
        qt_core, model=HalfDenoiser(), out=run, events=events, isolation=isolation
    ) as handler:
        _run(qt_core, events, form, qapp)
    summary = handler.wait(timeout=60)
    assert time.monotonic() - t0 < 60
    assert summary.status == "completed", summary.errors
    assert summary.frames_received == summary.raw_written == N_EVENTS
    assert summary.denoised_written == N_EVENTS and summary.missing_denoised == []
    doc = json.loads((run / "run.json").read_text())
    assert doc["status"] == "completed"
    assert doc["options"]["isolation"] == isolation
    counts = doc["counts"]
    assert counts["received"] == counts["raw_written"] == counts["denoised_written"] == N_EVENTS
    raw = np.asarray(zarr.open_group(run / "raw.ome.zarr", mode="r")["0"])
    den = np.asarray(zarr.open_group(run / "denoised.ome.zarr", mode="r")["0"])
    assert raw.shape == den.shape == (N_EVENTS, SIDE, SIDE)
    assert raw.any()
    np.testing.assert_array_equal(den, raw.astype(np.float32) / 2)


class _ThreadLog:
    """Listener that records each callback and the thread it ran on."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, threading.Thread]] = []

    def sequenceStarted(self, *args) -> None:
        self.calls.append(("sequenceStarted", threading.current_thread()))

    def frameReady(self, *args) -> None:
        self.calls.append(("frameReady", threading.current_thread()))

    def sequenceFinished(self, *args) -> None:
        self.calls.append(("sequenceFinished", threading.current_thread()))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("form", FORMS)
def test_callbacks_run_in_order_on_the_relay_thread_only(qt_core, qapp, form):
    log = _ThreadLog()
    with mda_events_relayed(log, qt_core.mda.events) as relay:
        _run(qt_core, _events(), form, qapp)
    assert not relay.is_alive()
    names = [name for name, _ in log.calls]
    assert names == ["sequenceStarted", *["frameReady"] * N_EVENTS, "sequenceFinished"]
    # Neither the GUI (main) thread nor the acquisition thread: the relay, every time.
    assert {thread for _, thread in log.calls} == {relay}
    assert relay is not threading.main_thread()
