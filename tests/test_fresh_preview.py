"""The preview lane: while the saved stream is behind, a watcher sees the newest frame."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import itertools
import json
import threading
import time

import numpy as np
import pytest
import useq

from _run_checks import assert_record_matches_stores
from sn2n_live.acquisition import live_denoise

SIDE = 64


class SlowHalf:
    """Output = input / 2 after 40 ms per frame: far slower than the camera."""

    provenance = {"model_sha256": "slow-half", "engine": "numpy"}  # noqa: RUF012

    def denoise(self, frames: np.ndarray) -> np.ndarray:
        time.sleep(0.04 * len(frames))
        return frames.astype(np.float32) / 2


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_watched_run_shows_the_newest_frame_while_saving_catches_up(core, tmp_path, isolation):
    n = 150
    seq = useq.MDASequence(time_plan={"interval": 0.01, "loops": n})
    run = tmp_path / "run"
    shown = []
    stop = threading.Event()
    with live_denoise(core, model=SlowHalf(), out=run, events=seq, isolation=isolation) as h:

        def watch() -> None:  # a preview polling at 10 Hz
            while not stop.wait(0.1):
                pair = h.latest()
                stats = h.stats()
                if pair is not None and stats.state == "acquiring":
                    shown.append(
                        (pair, pair.age_s(), stats.frames_received, stats.denoised_written)
                    )

        watcher = threading.Thread(target=watch)
        watcher.start()
        core.mda.run(seq)
        stop.set()
        watcher.join()
    summary = h.wait(timeout=120)
    assert summary.status == "completed"
    assert summary.raw_written == summary.denoised_written == n
    doc = assert_record_matches_stores(run)
    assert doc["counts"]["previewed"] > 0
    fresh = [(p, age, received, saved) for p, age, received, saved in shown if p.fresh]
    assert fresh, "no fresh pair was shown"
    # The saved stream fell far behind, yet the frame on screen stayed recent.
    assert max(received - saved for _, _, received, saved in shown) > 30
    ages = sorted(age for _, age, _, _ in shown[len(shown) // 4 :])
    assert ages[len(ages) // 2] < 0.5, ages
    # A preview never goes back in time, and each pair is its frame, denoised.
    frames = [p.frame for p, *_ in shown]
    assert all(b >= a for a, b in itertools.pairwise(frames))
    for pair, *_ in fresh:
        np.testing.assert_array_equal(pair.denoised, pair.raw.astype(np.float32) / 2)
    assert json.loads((run / "run.json").read_text())["timings"]["preview_s"] > 0
