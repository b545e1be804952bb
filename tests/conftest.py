"""Shared test set-up: headless Qt, a small deterministic torch, the live-hook fixtures."""

import os

# Qt must never try to open a display in tests; set before anything imports Qt.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests use no network. superqt/pyconify fetch icons online (pymmcore-widgets' MDAWidget):
# here connections hang until a 2 s timeout per icon (25 s per widget); a refusing proxy
# fails them at once, as an offline machine does, and they only warn.
os.environ.setdefault("HTTPS_PROXY", "http://127.0.0.1:9")

import gc
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from pymmcore_plus import CMMCorePlus

# Two cores are shared by the test process and the acquisition threads under test.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def package():
    """A tiny random-init model package (depth 2, 4 channels): a real network, fast."""
    from sn2n_live.method._package import ModelPackage
    from sn2n_live.method._risk import RiskThresholds
    from sn2n_live.method._unet import UNet, UNetConfig

    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=4)
    return ModelPackage(
        unet=config,
        state_dict=UNet(config).state_dict(),
        policy="global",
        resolved_mode="global",
        thresholds=RiskThresholds(),
        upsample="official",
        patch_size=32,
    )


@pytest.fixture(params=["psygnal", "qt"])
def core(request, monkeypatch):
    """DemoCamera core with frames of the test module's ``SIDE``, on both signal backends."""
    monkeypatch.setenv("PYMM_SIGNALS_BACKEND", request.param)
    if request.param == "qt":
        request.getfixturevalue("qapp")  # a QApplication must exist before the core
    mmc = CMMCorePlus()
    mmc.loadSystemConfiguration()
    assert type(mmc.mda.events).__name__.startswith("Q") == (request.param == "qt")
    mmc.setProperty("Camera", "OnCameraCCDXSize", request.module.SIDE)
    mmc.setProperty("Camera", "OnCameraCCDYSize", request.module.SIDE)
    mmc.setExposure(2)
    mmc.mda.engine.use_hardware_sequencing = False
    yield mmc
    # Releasing the core explicitly avoids an abort at interpreter exit (environment.md).
    del mmc
    gc.collect()


class StoppingRelay(threading.Thread):
    """Stands in for pymmcore-plus's MDARelayThread: calls the handler, then stops.

    ``stopped``: set the relay's stop flag as if ``sequenceFinished`` had been emitted
    and its delivery lost; otherwise the relay just dies.
    """

    def __init__(self, handler, events, *, stopped: bool, side: int):
        super().__init__()
        self.handler, self.events, self.side = handler, events, side
        self._stop_event = threading.Event()
        self.stopped = stopped

    def run(self):
        self.handler.sequenceStarted(None, {})
        frame = np.full((self.side, self.side), 100, np.uint16)
        for event in self.events:
            self.handler.frameReady(frame.copy(), event, {"runner_time_ms": 1.0})
        if self.stopped:
            self._stop_event.set()


@pytest.fixture
def stopping_relay() -> type[StoppingRelay]:
    """The :class:`StoppingRelay` class (test modules cannot import conftest)."""
    return StoppingRelay


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Path:
    """A folder no file can be made in: read-only for a normal user, /sys for root."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys")
    pytest.skip("no read-only folder to test with")
