"""`sn2n-live gui`'s window on the real simulated SIM microscope, with a real tiny model.

Live mode, Record, the MDA panel (pymmcore-widgets' own MDAWidget) and closing mid-run,
all on a real UniMMCore with Python camera and SLM; every saved run is checked against
its stores (tests/_run_checks). The screenshot path runs the real command in a
subprocess.
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import useq

pytest.importorskip("qtpy", reason="needs qtpy and a Qt binding")
pytest.importorskip("pytestqt", reason="needs pytest-qt")
pytest.importorskip("pymmcore_widgets", reason="needs pymmcore-widgets (the gui extra)")

from _run_checks import assert_record_matches_stores
from sn2n_live.acquisition import open_microscope
from sn2n_live.app import LiveDenoiseWindow, next_run_folder
from sn2n_live.method._package import save_package
from sn2n_live.profiles import load_profile

WAIT_MS = 90_000  # two cores shared by the camera, the denoiser and the writers
SET_SIZE = 9  # 3 angles x 3 phases


def _profile_file(folder: Path, isolation: str = "thread") -> Path:
    path = folder / "app-test.toml"
    path.write_text(
        f"""
name = "app-test"
description = "simulated SIM, 256^2, for the GUI tests"
[microscope]
kind = "simulated"
[microscope.simulated]
shape = [256, 256]
[camera]
exposure_ms = 5.0
[sim]
n_angles = 3
n_phases = 3
period_px = 8.0
pattern_source = "slm"
[acquisition]
timepoints = 2
[denoise]
engine = "torch-cpu"
tile = "whole"
[output]
isolation = "{isolation}"
"""
    )
    return path


@pytest.fixture
def profile(tmp_path):
    return load_profile(_profile_file(tmp_path))


@pytest.fixture
def window(qtbot, profile, package, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # superqt's offline icon fetches
        with open_microscope(profile) as core:
            w = LiveDenoiseWindow(core, profile, package, runs_dir=tmp_path / "runs")
            qtbot.addWidget(w)
            w.resize(1300, 760)
            w.show()
            qtbot.waitExposed(w)
            yield w
            w.shutdown()


def _wait_run_over(qtbot, w):
    qtbot.waitUntil(lambda: w.run is None and w.last_run is not None, timeout=WAIT_MS)
    return Path(w.last_run.out)


def test_next_run_folder_is_new_and_named_safely(tmp_path):
    first = next_run_folder(tmp_path, "my exp/1.ome.zarr", now=0)
    first.mkdir()
    second = next_run_folder(tmp_path, "my exp/1.ome.zarr", now=0)
    assert first.name.endswith("-my_exp_1.ome.zarr") and second.name == first.name + "-2"


def test_live_mode_shows_denoised_pairs_and_saves_nothing(qtbot, window, tmp_path):
    window.set_live(True)
    assert window.live and window.live_button.isChecked()
    preview = window.preview
    qtbot.waitUntil(lambda: preview.state.pairs_shown >= 3, timeout=WAIT_MS)
    assert preview.handler is window.live_view
    raw, denoised = preview.state.raw, preview.state.denoised
    assert raw.shape == denoised.shape == (256, 256) and denoised.dtype == np.float32
    stats = window.live_view.stats()
    assert stats.camera_fps > 0 and stats.frames_received >= 3
    assert "live mode" in window.run_label.text()
    window.set_live(False)
    qtbot.waitUntil(lambda: not window.core.isSequenceRunning(), timeout=5_000)
    assert not (tmp_path / "runs").exists(), "live mode must not save anything"


def test_record_saves_sim_sets_and_live_mode_resumes(qtbot, window):
    window.set_live(True)
    qtbot.waitUntil(lambda: window.preview.state.pairs_shown >= 1, timeout=WAIT_MS)
    run = window.record(timepoints=2)
    assert run is not None and not window.record_button.isEnabled()
    qtbot.waitUntil(lambda: window.preview.handler is run.handler, timeout=WAIT_MS)
    folder = _wait_run_over(qtbot, window)
    doc = assert_record_matches_stores(folder)
    assert doc["status"] == "completed", doc
    assert doc["counts"]["raw_written"] == doc["counts"]["denoised_written"] == 2 * SET_SIZE
    assert "completed" in window.run_label.text()
    # Back to live mode: the camera streams again and the preview follows the live view.
    qtbot.waitUntil(lambda: window.live, timeout=10_000)
    assert window.preview.handler is window.live_view and window.record_button.isEnabled()


def test_stop_run_ends_a_recording_canceled_with_every_raw_frame_saved(qtbot, window):
    run = window.record(timepoints=500)
    qtbot.waitUntil(
        lambda: run.handler is not None and run.handler.stats().frames_received >= SET_SIZE,
        timeout=WAIT_MS,
    )
    window.stop_button.click()
    folder = _wait_run_over(qtbot, window)
    doc = assert_record_matches_stores(folder)
    assert doc["status"] == "canceled", doc
    counts = doc["counts"]
    assert SET_SIZE <= counts["raw_written"] < 500 * SET_SIZE
    assert counts["raw_written"] == counts["received"], "a raw frame was lost"


def test_the_mda_panel_runs_through_our_handler(qtbot, window):
    mda = window.mda_widget
    assert mda is not None
    mda.setValue(useq.MDASequence(time_plan={"interval": 0, "loops": 2}))
    mda.control_btns.run_btn.click()
    folder = _wait_run_over(qtbot, window)
    doc = assert_record_matches_stores(folder)
    assert doc["status"] == "completed", doc
    # Every event of the panel's sequence became a complete SIM set.
    assert doc["counts"]["raw_written"] == 2 * SET_SIZE
    assert folder.parent == window.runs_dir


def test_a_second_run_is_refused_while_one_goes_on(qtbot, window):
    first = window.record(timepoints=500)
    assert window.record(timepoints=1) is None
    assert "stop it before starting another" in window.last_error
    window.stop_run()
    _wait_run_over(qtbot, window)
    assert first.done


def test_closing_mid_run_cancels_it_and_closes_the_stores(qtbot, profile, package, tmp_path):
    with open_microscope(profile) as core:
        w = LiveDenoiseWindow(core, profile, package, runs_dir=tmp_path / "runs", mda_panel=False)
        qtbot.addWidget(w)
        w.show()
        run = w.record(timepoints=500)
        qtbot.waitUntil(
            lambda: run.handler is not None and run.handler.stats().frames_received >= 3,
            timeout=WAIT_MS,
        )
        w.close()
        assert run.done, "closing the window returned before the run's stores were closed"
        assert not core.isSequenceRunning() and not w.live_view.running
    doc = assert_record_matches_stores(Path(run.out))
    assert doc["status"] == "canceled"
    assert doc["counts"]["raw_written"] == doc["counts"]["received"]


def test_gui_command_saves_a_screenshot_of_the_window(tmp_path, package):
    model = save_package(package, tmp_path / "tiny.sn2n")
    shot = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    cmd = [str(Path(sys.executable).parent / "sn2n-live"), "gui", "--profile"]
    cmd += [str(_profile_file(tmp_path)), "--model", str(model), "--runs", str(tmp_path / "r")]
    cmd += ["--seconds", "4", "--screenshot", str(shot)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pairs shown" in proc.stderr
    from qtpy.QtGui import QImage

    image = QImage(str(shot))
    assert not image.isNull() and image.width() >= 1000, "no window-sized PNG"
    shown = int(proc.stderr.split(" pairs shown")[0].split()[-1])
    assert shown >= 1, proc.stderr
    assert not (tmp_path / "r").exists()
