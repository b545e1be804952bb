"""Thousands of frames through the live hook with random delays, failures and cancels.

Both isolation modes and both signal backends; for every run the stores, the live
statistics and run.json must agree, and every camera frame must be in a raw store,
pixel for pixel. The moments are random but seeded, so a failure reproduces.
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import itertools
import random
import threading
import time

import numpy as np
import pytest
import useq
import zarr

from _run_checks import assert_record_matches_stores
from sn2n_live.acquisition import live_denoise
from sn2n_live.config import SIMPlan

SIDE = 32
SETS = 224  # x 9 frames = 2016 frames per run
SIM = SIMPlan(pattern_source="metadata")


class RandomDenoiser:
    """Output = input / 2 after a random delay; fails at frame ``fail_at`` if given.

    Picklable, so that the denoise process builds its own copy (same seed: same delays).
    """

    provenance = {"model_sha256": "random-delays", "engine": "numpy"}  # noqa: RUF012

    def __init__(self, seed: int, max_delay_s: float, fail_at: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.max_delay_s = max_delay_s
        self.fail_at = fail_at
        self.done = 0

    def denoise(self, frames: np.ndarray) -> np.ndarray:
        if self.fail_at is not None and self.done + len(frames) > self.fail_at:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")
        time.sleep(self.rng.uniform(0, self.max_delay_s))
        self.done += len(frames)
        return frames.astype(np.float32) / 2


def _events() -> list[useq.MDAEvent]:
    return SIM.expand(useq.MDASequence(time_plan={"interval": 0, "loops": SETS}))


def _when(handler, frames: int, action) -> threading.Thread:
    """Run ``action`` once the handler has received ``frames`` frames (at most 60 s)."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while handler.stats().frames_received < frames and time.monotonic() < deadline:
            time.sleep(0.001)
        action()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


@pytest.mark.parametrize("isolation", ["thread", "process"])
@pytest.mark.parametrize("scenario", ["cancel", "denoiser_fails", "catch_up_canceled"])
def test_stores_stats_and_run_json_agree_under_random_faults(core, tmp_path, isolation, scenario):
    rng = random.Random(f"{scenario}-{isolation}")
    events = _events()
    n_events = len(events)
    camera: list[np.ndarray] = []
    core.mda.events.frameReady.connect(lambda img, *_: camera.append(np.array(img)))
    fail_at = rng.randrange(100, n_events - 100) if scenario == "denoiser_fails" else None
    slow = scenario == "catch_up_canceled"  # the denoiser falls behind: a long catch-up
    denoiser = RandomDenoiser(rng.randrange(2**31), 0.02 if slow else 0.004, fail_at)
    run = tmp_path / "run"
    stats = []
    listener_calls = []

    def flaky_listener(pair) -> None:
        listener_calls.append(pair.frame)
        if len(listener_calls) % 3 == 0:
            raise ValueError("a preview listener failed")

    watchers = []
    with live_denoise(
        core,
        model=denoiser,
        out=run,
        events=events,
        isolation=isolation,
        memory_budget_mb=0.05,  # ~25 frames: the rest spill and are re-read
        stats_interval_s=0.05,
    ) as handler:
        handler.events.stats.connect(stats.append)
        handler.events.pair.connect(flaky_listener)
        if scenario == "cancel":
            watchers.append(_when(handler, rng.randrange(50, n_events - 50), core.mda.cancel))
        if scenario == "catch_up_canceled":
            stop_after = rng.uniform(0.2, 1.0)
            watchers.append(
                _when(
                    handler, n_events, lambda: (time.sleep(stop_after), handler.cancel_catch_up())
                )
            )
        core.mda.run(events)
    summary = handler.wait(timeout=120)
    for watcher in watchers:
        watcher.join()

    doc = assert_record_matches_stores(run)
    received = summary.frames_received
    # Every camera frame is in the raw store, pixel for pixel.
    assert received == len(camera)
    raw = np.asarray(zarr.open_group(run / "raw.ome.zarr", mode="r")["0"]).reshape(-1, SIDE, SIDE)
    np.testing.assert_array_equal(raw[:received], np.stack(camera))
    assert summary.raw_written == received
    # The summary, run.json and the last live statistics tell the same numbers.
    counts = doc["counts"]
    final = handler.stats()
    assert final.state == "finished"
    assert (final.frames_received, final.raw_written, final.denoised_written) == (
        received,
        counts["raw_written"],
        counts["denoised_written"],
    )
    assert final.denoised_missing == counts["denoised_missing"]
    assert summary.denoised_written == counts["denoised_written"]
    assert summary.missing_denoised == doc["missing_denoised"]["ranges"]
    # Live statistics only ever grow.
    for before, after in itertools.pairwise(stats):
        assert after.frames_received >= before.frames_received
        assert after.denoised_written >= before.denoised_written
    # The failing listener is one error with a count, and it stopped nothing.
    listener_errors = [e for e in doc["errors"] if "listener" in e["where"]]
    if len(listener_calls) >= 3:
        assert len(listener_errors) == 1 and listener_errors[0]["count"] >= 1
    if scenario == "cancel":
        assert summary.status == "canceled" and received < n_events
        assert summary.denoised_written == received
    elif scenario == "denoiser_fails":
        assert summary.status == "denoiser_failed" and received == n_events
        assert summary.first_missing_denoised is not None
        assert summary.first_missing_denoised <= fail_at
    else:
        assert received == n_events
        if doc["missing_denoised"]["by_reason"].get("catch_up_canceled"):
            assert summary.status == "interrupted"
        else:  # the catch-up finished before the cancel came
            assert summary.status == "completed"
