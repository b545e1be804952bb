"""The live-denoise hook with writers and denoiser in a child process, on the real core.

The child is a separate Python interpreter: the denoisers here are module-level classes
so that it can import them. Stores are read back with zarr directly.
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json
import resource
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import useq
import zarr
from pymmcore_plus import CMMCorePlus

from _run_checks import assert_record_matches_stores
from sn2n_live.acquisition import LiveDenoiseHandler, live_denoise
from sn2n_live.acquisition._isolated import ProcessLiveDenoiseHandler
from sn2n_live.config._sim_plan import SIMPlan

SIDE = 64
SIM = SIMPlan(pattern_source="metadata")


class HalfDenoiser:
    """Output = input / 2, so every stored twin can be checked against its raw frame."""

    provenance = {"model_sha256": "half", "engine": "numpy"}  # noqa: RUF012

    def __init__(self) -> None:
        self.calls: list[int] = []

    def denoise(self, frames: np.ndarray) -> np.ndarray:
        self.calls.append(len(frames))
        return frames.astype(np.float32) / 2


class CrashingDenoiser(HalfDenoiser):
    """Ends its process abruptly (as a segfault or the OOM killer would) at frame ``at``."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.done = 0

    def denoise(self, frames: np.ndarray) -> np.ndarray:
        if self.done + len(frames) > self.at:
            os._exit(3)
        self.done += len(frames)
        return super().denoise(frames)


class SlowHalfDenoiser(HalfDenoiser):
    """HalfDenoiser taking 4 ms per call, so that a run lasts long enough to be watched."""

    def denoise(self, frames: np.ndarray) -> np.ndarray:
        time.sleep(0.004)
        return super().denoise(frames)


class DiskFullDenoiser(HalfDenoiser):
    """From its first call on, every file write of its process that grows a file past
    ``limit_bytes`` fails in the OS (EFBIG), as writes to a full disk fail (ENOSPC).

    Meant for the denoise process (``isolation="process"``), where it limits only that
    process: ``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored (set on unpickling, which runs on
    the child's main thread) so that the write raises instead of killing the process.
    """

    def __init__(self, limit_bytes: int) -> None:
        super().__init__()
        self.limit_bytes = limit_bytes
        self.armed = False

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def denoise(self, frames: np.ndarray) -> np.ndarray:
        if not self.armed:
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit_bytes, hard))
            self.armed = True
        return super().denoise(frames)


def _sim_events(loops: int) -> list[useq.MDAEvent]:
    return SIM.expand(useq.MDASequence(time_plan={"interval": 0, "loops": loops}))


def _record_frames(core: CMMCorePlus) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    core.mda.events.frameReady.connect(lambda img, *_: frames.append(np.array(img)))
    return frames


def test_process_isolation_saves_raw_and_denoised_side_by_side(core, tmp_path):
    events = _sim_events(3)
    run = tmp_path / "run"
    camera = _record_frames(core)
    pairs, stats = [], []
    with live_denoise(
        core, model=HalfDenoiser(), out=run, events=events, isolation="process"
    ) as handler:
        assert isinstance(handler, ProcessLiveDenoiseHandler)
        assert handler.pid != os.getpid()
        handler.events.pair.connect(pairs.append)
        handler.events.stats.connect(stats.append)
        core.mda.run(events)
    summary = handler.wait()
    assert summary.status == "completed"
    assert summary.frames_received == summary.raw_written == summary.denoised_written == 27
    # frameReady was timed in this process, where it runs on the relay thread.
    assert summary.frame_ready_p50_us is not None and summary.frame_ready_p50_us < 1000
    raw = zarr.open_group(run / "raw.ome.zarr", mode="r")["0"]
    den = zarr.open_group(run / "denoised.ome.zarr", mode="r")["0"]
    assert raw.shape == den.shape == (3, 9, SIDE, SIDE)
    stored = np.asarray(raw).reshape(27, SIDE, SIDE)
    np.testing.assert_array_equal(stored, np.stack(camera))
    np.testing.assert_array_equal(np.asarray(den), np.asarray(raw).astype(np.float32) / 2)
    md = zarr.open_group(run / "denoised.ome.zarr", mode="r").attrs["ome_writers"]
    assert [m["index"] for m in md["frame_metadata"]] == [dict(e.index) for e in events]
    doc = json.loads((run / "run.json").read_text())
    assert doc["status"] == "completed"
    assert doc["counts"]["raw_written"] == doc["counts"]["denoised_written"] == 27
    assert doc["model"] == {"model_sha256": "half", "engine": "numpy"}
    assert doc["options"]["isolation"] == "process"
    assert doc["timings"]["frame_ready_us"]["p50"] == summary.frame_ready_p50_us
    # Pairs and stats crossed over from the child and arrive on this process's signals.
    assert pairs and stats
    last = pairs[-1]
    np.testing.assert_array_equal(last.raw, camera[last.frame])
    np.testing.assert_array_equal(last.denoised, camera[last.frame].astype(np.float32) / 2)
    assert handler.latest() is last
    assert stats[-1].denoised_written == 27
    np.testing.assert_array_equal(handler.latest_raw(), camera[-1])


def test_a_polling_preview_gets_whole_pairs_and_the_last_one(core, tmp_path):
    # No listener on events.pair: pairs cross over only when latest() takes them.
    events = _sim_events(8)
    camera = _record_frames(core)
    polled: dict[int, object] = {}
    stop = threading.Event()
    with live_denoise(
        core, model=SlowHalfDenoiser(), out=tmp_path / "run", events=events, isolation="process"
    ) as handler:

        def poll() -> None:
            while not stop.wait(0.002):
                pair = handler.latest()
                if pair is not None:
                    polled[pair.frame] = pair

        poller = threading.Thread(target=poll)
        poller.start()
        core.mda.run(events)
        handler.wait()
        stop.set()
        poller.join()
    assert len(polled) > 1
    for frame, pair in polled.items():  # never torn by the child writing the next one
        np.testing.assert_array_equal(pair.raw, camera[frame])
        np.testing.assert_array_equal(pair.denoised, camera[frame].astype(np.float32) / 2)
    # The end of the run publishes the last denoised frame, as the in-process hook has it.
    final = handler.latest()
    assert final.frame == len(events) - 1
    np.testing.assert_array_equal(final.raw, camera[-1])
    assert handler.latest() is final


def test_a_dead_denoise_process_loses_no_raw_frame(core, tmp_path):
    events = _sim_events(4)
    run = tmp_path / "run"
    camera = _record_frames(core)
    finished = threading.Event()
    with live_denoise(
        core, model=CrashingDenoiser(at=10), out=run, events=events, isolation="process"
    ) as handler:
        handler.events.finished.connect(lambda _: finished.set())
        core.mda.run(events)
    summary = handler.wait(timeout=60)
    assert finished.is_set()
    assert summary.status == "failed"
    assert summary.frames_received == 36
    assert any(e["where"] == "denoise_process" for e in summary.errors)
    # Frames the child wrote are in raw.ome.zarr (journal); the parent wrote the rest.
    journal = (run / "raw.frames.jsonl").read_text().splitlines()
    written = {json.loads(line)["frame"] for line in journal}
    doc = json.loads((run / "run.json").read_text())
    assert doc["status"] == "failed"
    (store_name,) = doc["raw_rescue"]["stores"]
    rescue = zarr.open_group(run / store_name, mode="r")
    rescued_md = rescue.attrs["ome_writers"]["frame_metadata"]
    rescued = [m["frame"] for m in rescued_md]
    assert rescued, "the child died early: some frames must have been rescued"
    assert written | set(rescued) == set(range(36))
    data = np.asarray(rescue["0"])
    for row, frame in enumerate(rescued):
        np.testing.assert_array_equal(data[row], camera[frame])
        assert rescued_md[row]["index"] == dict(events[frame].index)
    raw = np.asarray(zarr.open_group(run / "raw.ome.zarr", mode="r")["0"]).reshape(36, SIDE, SIDE)
    for frame in written:
        np.testing.assert_array_equal(raw[frame], camera[frame])
    assert_record_matches_stores(run)
    assert summary.rescue_stores == doc["raw_rescue"]["stores"]
    assert summary.raw_written == 36


def test_raw_frames_that_cannot_be_saved_stop_the_acquisition(core, tmp_path):
    # Chunks of 64^2 uint16 frames are 8 KB; 6 KB lets small metadata files through.
    events = _sim_events(40)
    camera = _record_frames(core)
    # 20 ms frames: the 360-frame MDA lasts >= 7 s, long enough for the cancel to land
    # even on a loaded 2-core machine (its latency, not its absence, varies with load).
    core.setExposure(20.0)
    failures: list[str] = []
    with live_denoise(
        core, model=DiskFullDenoiser(6000), out=tmp_path / "run", events=events, isolation="process"
    ) as handler:
        handler.events.raw_failed.connect(failures.append)
        core.mda.run(events)
    summary = handler.wait()
    assert summary.status == "failed"
    assert len(failures) == 1 and "File too large" in failures[0]
    # The MDA was canceled: the sample was not exposed for frames that could not be kept.
    assert len(camera) < len(events)
    raw_errors = [e for e in summary.errors if e["where"] == "raw_writer"]
    first_failed = min(e["frame"] for e in raw_errors if e["frame"] is not None)
    assert first_failed == summary.raw_written  # every frame before it is on disk
    raw = zarr.open_group(tmp_path / "run" / "raw.ome.zarr", mode="r")["0"]
    for frame in range(first_failed):
        np.testing.assert_array_equal(raw[frame // 9, frame % 9], camera[frame])
    doc = assert_record_matches_stores(tmp_path / "run")
    assert doc["raw_unsaved_frames"][0][0] == first_failed
    # The same failure on every later frame is one entry with a count, not one per frame.
    assert len(raw_errors) <= 2 and sum(e["count"] for e in raw_errors) >= 2


def test_process_options_fail_before_the_acquisition(tmp_path):
    with pytest.raises(ValueError, match="policy must be one of"):
        ProcessLiveDenoiseHandler(HalfDenoiser(), tmp_path / "a", policy="newest")
    with pytest.raises(ValueError, match="cannot be sent to the denoise process"):
        ProcessLiveDenoiseHandler(lambda: HalfDenoiser(), tmp_path / "b")
    with pytest.raises(ValueError, match="process_nice must be"):
        ProcessLiveDenoiseHandler(HalfDenoiser(), tmp_path / "c", process_nice=25)
    core = CMMCorePlus()
    with (
        pytest.raises(ValueError, match="isolation must be one of"),
        live_denoise(core, model=HalfDenoiser(), out=tmp_path / "d", isolation="gpu"),
    ):
        pass


def test_an_unused_process_handler_ends_its_child(tmp_path):
    handler = ProcessLiveDenoiseHandler(HalfDenoiser(), Path(tmp_path / "run"))
    process = handler._process
    assert process.poll() is None
    handler.close()
    assert process.wait(10) == 0


@pytest.mark.parametrize("handler_class", [LiveDenoiseHandler, ProcessLiveDenoiseHandler])
@pytest.mark.parametrize(("stopped", "status"), [(True, "completed"), (False, "interrupted")])
def test_a_relay_that_stops_without_sequence_finished_still_ends_the_run(
    tmp_path, stopped, status, stopping_relay, handler_class
):
    # Both handlers, in and out of process: the relay check is theirs, not the child's.
    events = _sim_events(1)
    handler = handler_class(HalfDenoiser(), tmp_path / "run", events=events)
    relay = stopping_relay(handler, events, stopped=stopped, side=SIDE)
    relay.start()
    relay.join()
    summary = handler.wait(timeout=30 if handler_class is ProcessLiveDenoiseHandler else 20)
    assert summary.status == status
    assert summary.raw_written == summary.denoised_written == 9
    doc = json.loads((tmp_path / "run" / "run.json").read_text())
    if stopped:
        assert "relay stopped without delivering sequenceFinished" in doc["notes"][0]
    else:
        assert doc["errors"][0]["where"] == "handler"


def test_the_ring_holds_the_whole_run_when_it_fits():
    from sn2n_live.acquisition._isolated import _ring_bytes, _shared_memory_limit

    frame = 2048 * 2048 * 2
    events = list(useq.MDASequence(time_plan={"interval": 0, "loops": 100}))
    assert _ring_bytes(None, frame, events) == min(100 * frame, _shared_memory_limit())
    # Unknown run size: the default; a tiny run: at least the minimum.
    assert _ring_bytes(None, None, None) == min(512 * 2**20, _shared_memory_limit())
    tiny_run = _ring_bytes(None, SIDE * SIDE * 2, _sim_events(1))
    assert tiny_run == min(64 * 2**20, _shared_memory_limit())
    assert _ring_bytes(10, frame, events) == 10 * 2**20
    with pytest.raises(ValueError, match="ring_mb must be > 0"):
        _ring_bytes(0, frame, events)
    with pytest.raises(ValueError, match="exceeds the"):
        _ring_bytes(_shared_memory_limit() / 2**20 + 1, frame, events)
