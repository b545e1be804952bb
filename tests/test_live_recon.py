"""Live and offline SIM reconstruction of runs on the real simulated SIM microscope."""

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from _run_checks import assert_record_matches_stores
from sn2n_live.acquisition import acquire_live, build_profile_denoiser, reconstruct_run
from sn2n_live.cli import app
from sn2n_live.method._package import save_package
from sn2n_live.profiles import load_profile
from sn2n_live.sim import SIMCalibration

SET_SIZE = 9
runner = CliRunner()


def _profile(folder: Path, live: str, isolation: str, extra: str = "") -> Path:
    path = folder / "recon-test.toml"
    path.write_text(
        f"""
name = "recon-test"
[microscope]
kind = "simulated"
[microscope.simulated]
shape = [256, 256]
photons_per_ms = 30.0
drift_px_per_s = [0.0, 0.0]
[camera]
exposure_ms = 5.0
[sim]
n_angles = 3
n_phases = 3
period_px = 5.0
pattern_source = "slm"
[acquisition]
timepoints = 4
[denoise]
engine = "torch-cpu"
tile = "whole"
[output]
isolation = "{isolation}"
[reconstruction]
live = "{live}"
calibration_sets = 2
{extra}
"""
    )
    return path


def _acquire(tmp_path, package, live, isolation, extra=""):
    profile = load_profile(_profile(tmp_path, live, isolation, extra))
    model = tmp_path / "model.sn2n"
    save_package(package, model)
    denoiser = functools.partial(build_profile_denoiser, profile, package)
    run = tmp_path / "run"
    summary = acquire_live(profile, denoiser=denoiser if isolation == "process" else denoiser(),
                           out_dir=run)  # fmt: skip
    return run, summary


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_live_run_saves_a_reconstruction_of_every_set(tmp_path, package, isolation):
    run, summary = _acquire(tmp_path, package, "save", isolation)
    assert summary.status == "completed"
    doc = assert_record_matches_stores(run)
    rec = doc["reconstruction"]
    assert rec["live"] == "save" and rec["source"] == "denoised" and rec["errors"] == []
    # The first two sets calibrate (pooled); every set is reconstructed once calibrated,
    # the earlier ones while it waits are kept to the newest.
    assert rec["sets_reconstructed"] + rec["sets_skipped"] == 4 and rec["sets_reconstructed"] >= 3
    calibration = SIMCalibration.load(run / "sim-calibration.json")
    assert calibration.model_dump(mode="json") == rec["calibration"]
    assert 4.5 < calibration.angles[0].period_px < 5.5  # the SLM's 5 px stripes
    store = zarr.open_group(str(run / "recon.ome.zarr"), mode="r")
    image = np.asarray(store["0"])
    assert image.shape == (4, 512, 512) and image.dtype == np.float32
    written = [t for t in range(4) if image[t].any()]
    assert len(written) == rec["sets_reconstructed"] and written[-1] == 3
    scale = store.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    raw = zarr.open_group(str(run / "raw.ome.zarr"), mode="r")
    raw_scale = raw.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert scale["scale"][-1] == pytest.approx(raw_scale["scale"][-1] / 2)
    assert store.attrs["sn2n_live"]["role"] == "recon"


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_the_preview_reconstruction_is_offered_and_nothing_is_saved(tmp_path, package, isolation):
    from sn2n_live.acquisition import (
        build_events,
        live_denoise,
        open_microscope,
        profile_run_options,
    )

    profile = load_profile(_profile(tmp_path, "preview", isolation))
    denoiser = functools.partial(build_profile_denoiser, profile, package)
    options = profile_run_options(profile)
    if isolation == "thread":
        denoiser = denoiser()
    with open_microscope(profile) as core:
        events = build_events(profile, core)
        with live_denoise(core, model=denoiser, out=tmp_path / "run", events=events,
                          **options) as handler:  # fmt: skip
            core.mda.run(events)
        handler.wait()
        latest = handler.latest_recon()
    assert latest is not None and latest.image.shape == (512, 512)
    assert latest.source == "denoised" and latest.set_number == 3 and latest.compute_ms > 0
    assert not (tmp_path / "run" / "recon.ome.zarr").exists()


def test_reconstruct_command_fills_a_run_offline_from_raw_or_denoised(tmp_path, package):
    run, _ = _acquire(tmp_path, package, "off", "thread")
    assert not (run / "recon.ome.zarr").exists()
    saved = tmp_path / "cal.json"
    result = runner.invoke(
        app, ["reconstruct", str(run), "--from", "raw", "--save-calibration", str(saved)]
    )
    assert result.exit_code == 0, result.output
    assert "4 sets" in result.output
    raw_recon = np.asarray(zarr.open_group(str(run / "recon-raw.ome.zarr"), mode="r")["0"])
    assert raw_recon.shape == (4, 512, 512) and all(raw_recon[t].any() for t in range(4))
    # The saved calibration, reused on the denoised frames.
    summary = reconstruct_run(run, calibration=SIMCalibration.load(saved))
    assert summary.sets_written == 4 and summary.path == run / "recon.ome.zarr"
    denoised_recon = np.asarray(zarr.open_group(str(summary.path), mode="r")["0"])
    assert not np.allclose(denoised_recon, raw_recon)
    again = runner.invoke(app, ["reconstruct", str(run)])
    assert again.exit_code != 0 and "exists already" in again.output
    not_sim = tmp_path / "nothing"
    not_sim.mkdir()
    missing = runner.invoke(app, ["reconstruct", str(not_sim)])
    assert missing.exit_code != 0 and "no readable run.json" in missing.output
    doc = json.loads((run / "run.json").read_text())
    assert doc["reconstruction"] is None


def test_the_preview_widget_shows_the_live_reconstruction_in_step_with_the_raw_pane(
    tmp_path, package, qtbot
):
    pytest.importorskip("pytestqt", reason="needs pytest-qt")
    from qtpy.QtCore import QEvent, QPointF, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    from sn2n_live.acquisition import (
        build_events,
        live_denoise,
        open_microscope,
        profile_run_options,
    )
    from sn2n_live.preview import DenoisePreviewWidget, auto_limits, to_rgba

    profile = load_profile(_profile(tmp_path, "preview", "thread"))
    denoiser = build_profile_denoiser(profile, package)
    w = DenoisePreviewWidget(provenance=denoiser.provenance, refresh_ms=20)
    qtbot.addWidget(w)
    w.resize(900, 520)
    w.show()
    qtbot.waitExposed(w)
    w.set_overlay("reconstruction", True)
    with open_microscope(profile) as core:
        events = build_events(profile, core)
        with live_denoise(core, model=denoiser, out=tmp_path / "run", events=events,
                          **profile_run_options(profile)) as handler:  # fmt: skip
            w.set_handler(handler)
            thread = core.run_mda(events)
            # The widget's timer takes each new reconstruction as the run goes on.
            qtbot.waitUntil(lambda: w.state.recon is not None, timeout=120_000)
            thread.join()
        handler.wait()
    w.refresh()
    latest = handler.latest_recon()
    assert w.state.recon is latest.image and w.state.recon_set == latest.set_number
    w.set_overlay("reconstruction", True)  # renders now, on this thread
    raw_px, recon_px = w.grab_panes()
    assert raw_px.shape == (256, 256, 4) and recon_px.shape == (512, 512, 4)
    np.testing.assert_array_equal(recon_px, to_rgba(latest.image, auto_limits(latest.image)))
    assert w.denoised_title.text() == f"SIM reconstruction, 2x (set {latest.set_number})"
    # Linked zoom and pan: the same field in both panes, at twice the coordinates.
    w.raw_pane.zoom_at(2.0, QPointF(w.raw_pane.width() * 0.3, w.raw_pane.height() * 0.4))
    zoom, cx, cy = w.raw_pane.view()
    assert w.denoised_pane.view() == pytest.approx((zoom, 2 * cx, 2 * cy))
    # The readout under the cursor on the reconstruction: its pixel and the camera's.
    pos = QPointF(w.denoised_pane.width() / 2, w.denoised_pane.height() / 2)
    row, col = w.denoised_pane.pixel_at(pos)
    move = QMouseEvent(QEvent.Type.MouseMove, pos, w.denoised_pane.mapToGlobal(pos),
                       Qt.MouseButton.NoButton, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)  # fmt: skip
    QApplication.sendEvent(w.denoised_pane, move)
    text = w.readout_label.text()
    assert f"x {col // 2}  y {row // 2} " in text and f"SIM {latest.image[row, col]:.1f}" in text
    w.set_overlay("reconstruction", False)
    assert w.grab_panes()[1].shape == (256, 256, 4) and w.denoised_title.text() == "denoised"
