"""The preview's model: what is shown, the panes' composition, warnings, the status line."""

from dataclasses import replace

import numpy as np
import pytest

from sn2n_live.acquisition import LatestPair, LiveStats
from sn2n_live.preview import (
    CameraCalibration,
    PreviewState,
    RunHealth,
    auto_limits,
    render_panes,
    status_line,
    to_rgba,
)
from sn2n_live.preview._model import model_label

RNG = np.random.default_rng(0)
RAW = RNG.poisson(400, (16, 16)).astype(np.uint16)
DEN = np.full((16, 16), 400, np.float32) + np.linspace(0, 50, 16, dtype=np.float32)


def _pair(frame: int = 5, **kw) -> LatestPair:
    base = {"frame": frame, "index": {"t": frame}, "raw": RAW, "denoised": DEN, "latency_ms": 20.0}
    return LatestPair(**{**base, **kw})


def _stats(**kw) -> LiveStats:
    base = {
        "state": "acquiring", "elapsed_s": 1.0, "frames_received": 10, "raw_written": 10,
        "denoised_written": 8, "denoised_missing": 0, "queue_depth": 2, "queued_mb": 0.1,
        "spilled": 0, "raw_backlog": 0, "frames_behind": 2, "camera_fps": 99.94,
        "denoise_fps": 97.06, "latency_p50_ms": 12.04, "latency_p99_ms": 30.55,
        "disk_mb_s": 25.06,
    }  # fmt: skip
    return LiveStats(**{**base, **kw})


def test_take_shows_a_new_pair_once_without_copying():
    state = PreviewState()
    pair = _pair()
    assert state.take(pair, now=10.0)
    assert state.raw is RAW and state.denoised is DEN  # the handler's arrays
    assert (state.frame, state.index, state.latency_ms) == (5, {"t": 5}, 20.0)
    assert not state.take(pair, now=10.1)  # same pair: nothing to render
    assert not state.take(None)
    assert state.take(_pair(6), now=10.2)
    # A new run restarts at frame 0, and its frame 5 is a new pair.
    assert state.take(_pair(6, raw=RAW.copy()), now=10.3)


def test_age_is_latency_plus_time_since_seen_or_since_arrival():
    state = PreviewState()
    assert state.age_s(now=1.0) is None
    state.take(_pair(), now=10.0)
    assert state.age_s(now=10.5) == pytest.approx(0.52)

    # A pair that says when its frame arrived (LatestPair.arrived) is aged from then.
    state.take(replace(_pair(7), arrived=9.0), now=10.0)
    assert state.age_s(now=10.5) == pytest.approx(1.5)


def test_readout_in_adu_and_photons():
    camera = CameraCalibration.from_any({"offset_adu": 100, "gain_adu_per_e": 2})
    state = PreviewState(camera=camera)
    assert state.readout(0, 0) is None  # nothing shown
    state.take(_pair())
    r = state.readout(3, 4)
    assert (r.raw_adu, r.denoised_adu) == (float(RAW[3, 4]), float(DEN[3, 4]))
    assert r.raw_photons == pytest.approx((RAW[3, 4] - 100) / 2)
    assert r.denoised_photons == pytest.approx((DEN[3, 4] - 100) / 2)
    assert "photons" in r.text() and "x 4  y 3" in r.text()
    assert state.readout(16, 0) is None and state.readout(0, -1) is None
    assert PreviewState(raw=RAW, denoised=DEN).readout(1, 1).raw_photons is None


@pytest.mark.parametrize(
    ("camera", "expected"),
    [
        (None, None),
        ({"offset_adu": 100, "gain_adu_per_e": 0.5}, CameraCalibration(100, 0.5)),
        (type("Cam", (), {"offset_adu": 3.0, "gain_adu_per_e": 1.5})(), CameraCalibration(3, 1.5)),
    ],
)
def test_camera_calibration_from_a_mapping_or_an_object(camera, expected):
    assert CameraCalibration.from_any(camera) == expected


def test_camera_calibration_from_the_simulation_camera_model():
    from sn2n_live.simulation import CameraModel

    cam = CameraCalibration.from_any(CameraModel(offset_adu=90, gain_adu_per_e=2.5))
    assert cam == CameraCalibration(90, 2.5) and cam.photons(115) == pytest.approx(10)


@pytest.mark.parametrize("camera", [{"offset_adu": 1}, {"offset_adu": 1, "gain_adu_per_e": 0}])
def test_camera_calibration_rejects_incomplete_or_zero_gain(camera):
    with pytest.raises(ValueError, match="gain_adu_per_e"):
        CameraCalibration.from_any(camera)


@pytest.mark.parametrize(
    ("contrast", "linked", "same"),
    [
        ("auto", True, True),
        ("auto", False, False),
        ("manual", True, True),
        ("manual", False, False),
    ],
)
def test_linked_contrast_gives_one_set_of_limits_separate_two(contrast, linked, same):
    state = PreviewState(
        contrast=contrast, linked=linked, manual_raw=(0, 500), manual_denoised=(380, 460)
    )
    state.take(_pair())
    render_panes(state)
    assert (state.limits_raw == state.limits_denoised) is same
    if contrast == "manual":
        assert state.limits_raw == (0, 500)
    elif linked:
        assert state.limits_raw == auto_limits(RAW, DEN)
    else:
        assert state.limits_denoised == auto_limits(DEN)


def test_render_panes_before_and_with_a_pair():
    state = PreviewState()
    raw, den = render_panes(state)
    assert raw.shape == den.shape == (0, 0, 4)
    state.take(_pair())
    raw, den = render_panes(state)
    np.testing.assert_array_equal(raw, to_rgba(RAW, state.limits_raw))
    np.testing.assert_array_equal(den, to_rgba(DEN, state.limits_denoised))
    state.colormap = "magma"
    assert not np.array_equal(render_panes(state)[0], raw)


def test_overlays_change_their_pane_and_off_restores_it():
    state = PreviewState()
    risk = np.zeros((16, 16), np.float32)
    risk[:4] = 1.0
    state.take(LatestPair(**{**_pair().__dict__, "risk": risk}))
    raw0, den0 = render_panes(state)
    state.overlays.add("residual")
    raw1, den1 = render_panes(state)
    np.testing.assert_array_equal(raw1, raw0)
    assert not np.array_equal(den1, den0)
    state.overlays = {"risk"}
    _, den2 = render_panes(state)
    assert (den2[:4, :, 0] >= den0[:4, :, 0]).all() and not np.array_equal(den2[:4], den0[:4])
    np.testing.assert_array_equal(den2[4:], den0[4:])  # no risk: unchanged
    state.overlays = {"widefield"}
    np.testing.assert_array_equal(render_panes(state)[0], raw0)  # none given: raw stays
    state.widefield = np.full((16, 16), 7.0, np.float32)
    assert not np.array_equal(render_panes(state)[0], raw0)
    state.overlays = set()
    raw3, den3 = render_panes(state)
    np.testing.assert_array_equal(raw3, raw0)
    np.testing.assert_array_equal(den3, den0)


def test_the_reconstruction_overlay_shows_it_in_the_denoised_pane_with_its_own_limits():
    state = PreviewState(overlays={"reconstruction", "residual", "risk"})
    state.take(LatestPair(**{**_pair().__dict__, "risk": np.ones((16, 16), np.float32)}))
    without = render_panes(state)[1]  # none given yet: the residual, veiled
    recon = np.linspace(-5, 900, 32 * 32, dtype=np.float32).reshape(32, 32)
    state.recon, state.recon_set = recon, 3
    raw, den = render_panes(state)
    assert den.shape == (32, 32, 4) and not np.array_equal(den[:16, :16], without)
    assert state.limits_denoised == auto_limits(recon)  # not linked to the raw pane's
    np.testing.assert_array_equal(den, to_rgba(recon, auto_limits(recon)))
    np.testing.assert_array_equal(raw, to_rgba(RAW, auto_limits(RAW)))
    # The readout reads the reconstruction's own pixel (twice as fine) while it is shown.
    reading = state.readout(2, 3, recon_pixel=(5, 7))
    assert reading.raw_adu == RAW[2, 3] and reading.recon_value == recon[5, 7]
    assert f"SIM {recon[5, 7]:.1f}" in reading.text()
    state.overlays = {"residual"}
    assert state.readout(2, 3, recon_pixel=(5, 7)).recon_value is None
    assert render_panes(state)[1].shape == (16, 16, 4)


def test_risk_of_another_shape_is_not_drawn():
    state = PreviewState(overlays={"risk"})
    state.take(LatestPair(**{**_pair().__dict__, "risk": np.ones((4, 4))}))
    np.testing.assert_array_equal(render_panes(state)[1], to_rgba(DEN, state.limits_denoised))


@pytest.mark.parametrize(
    ("provenance", "label"),
    [
        ({}, ""),
        (
            {"model_sha256": "1ad8149b07", "engine": "torch", "precision": "fp32"},
            "1ad8149b torch fp32",
        ),
        ({"model_name": "lite", "model_sha256": "ff", "engine": "tensorrt"}, "lite tensorrt"),
    ],
)
def test_model_label(provenance, label):
    assert model_label(provenance) == label


def test_status_line_carries_the_stats_numbers():
    line = status_line(
        _stats(), {"model_sha256": "abcdef123", "engine": "torch", "precision": "fp16"},
        renderer="QImage", frame=41, age_s=0.05,
    )  # fmt: skip
    assert line == (
        "acquiring · camera 99.9 fps · denoise 97.1 fps · latency p50/p99 12.0/30.6 ms · "
        "behind 2 · queue 2 · disk 25.1 MiB/s · abcdef12 torch fp16 · frame 41 (0.05 s) · "
        "QImage"
    )
    assert status_line(None, {}, renderer="QImage") == "no run · QImage"
    no_latency = status_line(_stats(latency_p50_ms=None, latency_p99_ms=None), {}, renderer="R")
    assert "latency p50/p99 -/- ms" in no_latency


def _feed(health: RunHealth, behind: list[int], dt: float = 0.1, **kw) -> float:
    t = 0.0
    for b in behind:
        health.update(_stats(frames_behind=b, **kw), now=t)
        t += dt
    return t - dt


def test_frames_behind_warns_when_its_floor_rises_not_when_it_oscillates():
    oscillating = RunHealth()
    now = _feed(oscillating, [0, 8, 16, 4] * 8)  # batches of 16: 0..16 and back
    assert not oscillating.behind_growing(now)
    growing = RunHealth()
    now = _feed(growing, [i // 2 + (i % 4) * 4 for i in range(32)])
    assert growing.behind_growing(now)
    texts = [n.text for n in growing.notices(_stats(frames_behind=20), now)]
    assert texts == ["denoiser falling behind (20)"]
    # Not yet two windows of history: no verdict.
    young = RunHealth()
    assert not young.behind_growing(_feed(young, [1, 5, 9]))
    # Acquisition over and caught up: nothing to warn about.
    assert growing.notices(_stats(state="finished"), now) == []


def test_a_denoiser_that_writes_nothing_while_frames_arrive_is_flagged():
    health = RunHealth(stall_s=3.0)
    for i in range(50):
        health.update(_stats(frames_received=10 + i, denoised_written=8, frames_behind=0), i * 0.1)
    texts = [n.text for n in health.notices(_stats(frames_received=60), now=4.9)]
    assert texts == ["denoiser stopped? no denoised frame for 5 s"]
    fine = RunHealth(stall_s=3.0)
    for i in range(50):
        fine.update(_stats(frames_received=10 + i, denoised_written=8 + i), i * 0.1)
    assert fine.notices(_stats(), now=4.9) == []


def test_errors_come_first_raw_failure_and_failed_runs():
    health = RunHealth()
    health.raw_failure = "frame 12: [Errno 28] No space left on device"
    health.final_status = "failed"
    notices = health.notices(_stats(denoised_missing=3), now=0.0)
    assert [n.level for n in notices] == ["error", "warning"]
    assert "NOT BEING SAVED" in notices[0].text and "No space left" in notices[0].text
    assert notices[1].text == "3 frames without denoised twin"
    health.raw_failure = None
    health.final_status = "denoiser_failed"
    assert [n.text for n in health.notices(None)] == [
        "The denoiser failed: the run ended denoiser_failed."
    ]
    health.reset()
    assert health.notices(replace(_stats(), state="finished")) == []
