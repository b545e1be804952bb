"""Training photometry: what a package records, and which new frames fall outside it."""

from __future__ import annotations

import numpy as np
import pytest

from sn2n_live.method import (
    PhotometryWatch,
    TrainingConfig,
    check_photometry,
    load_package,
    measure_photometry,
    photometry_record,
    save_package,
    train,
)
from sn2n_live.method._unet import UNetConfig
from sn2n_live.simulation import CameraModel, simulate_sim_frames


def _frames(photons: float, seed: int = 0, camera: CameraModel | None = None) -> np.ndarray:
    sim = simulate_sim_frames(
        (128, 128), photons=photons, seed=seed, camera=camera or CameraModel()
    )
    return sim.raw.reshape(-1, 128, 128)


@pytest.fixture(scope="module")
def record() -> dict:
    return photometry_record(_frames(20.0))


def test_measure_reads_the_camera_offset_noise_and_signal():
    camera = CameraModel()
    stats = measure_photometry(_frames(20.0))
    # The darkest patch holds the offset plus a little background; its noise is read +
    # shot noise of a few electrons; the peak is well above it.
    assert np.all(np.abs(stats.background - camera.offset_adu) < 5)
    assert np.all((stats.noise > 0.5) & (stats.noise < 5))
    assert np.all(stats.peak > 5 * stats.noise)
    assert not stats.constant.any()


def test_frames_like_the_training_frames_pass(record):
    assert record["frame_shape"] == [128, 128] and record["dtype"] == "uint16"
    findings = check_photometry(record, measure_photometry(_frames(20.0, seed=5)))
    assert findings == [None] * 9


@pytest.mark.parametrize(
    ("frames", "kind", "text"),
    [
        (lambda: _frames(400.0, seed=5), "bright", "x the training's"),
        (lambda: _frames(1.0, seed=5), "dim", "of the training's"),
        (lambda: _frames(20.0, seed=5) + np.uint16(500), "background", "vs 100 ADU"),
        (lambda: np.zeros((2, 128, 128), np.uint16), "blank", "every pixel 0 ADU"),
    ],
)
def test_frames_unlike_the_training_frames_are_flagged(record, frames, kind, text):
    findings = check_photometry(record, measure_photometry(frames()))
    assert all(f is not None and f[0] == kind and text in f[1] for f in findings), findings


def test_the_watch_names_the_frames_and_what_to_do(record):
    watch = PhotometryWatch(record)
    watch.check(_frames(20.0, seed=5), list(range(9)))
    watch.check(_frames(400.0, seed=6), list(range(9, 18)))
    watch.check(_frames(20.0, seed=7), list(range(18, 27)))
    assert watch.counts() == {"bright": 9}
    (note,) = watch.notes()
    assert note.startswith("frames 9-17: signal ")
    assert "same exposure and laser power" in note
    unchecked = PhotometryWatch(None)
    assert unchecked.check(_frames(400.0), list(range(9))) == [None] * 9
    assert "records no photometry" in unchecked.notes()[0]


def test_training_records_its_frames_photometry(tmp_path):
    frames = _frames(20.0)
    config = TrainingConfig(
        unet=UNetConfig(depth=2, base_channels=4), patch=32, epochs=1, device="cpu"
    )
    package = train(frames, config)
    assert package.training["photometry"] == photometry_record(frames)
    loaded = load_package(save_package(package, tmp_path / "m.sn2n"))
    assert loaded.training["photometry"] == package.training["photometry"]
