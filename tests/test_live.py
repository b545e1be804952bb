"""The live-denoise hook on the real pymmcore-plus core (DemoCamera), both signal backends.

The denoiser is a real :class:`Denoiser` on a tiny random-init package, wrapped to be slow
(or to fail) on demand; nothing of pymmcore-plus is mocked. Stores are read back with
zarr/tifffile directly.
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import functools
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import useq
import zarr
from pymmcore_plus.mda import MDAEngine

from _run_checks import assert_record_matches_stores
from sn2n_live.acquisition import LiveDenoiseHandler, _session, live_denoise, load_denoiser
from sn2n_live.acquisition._batching import RAW_BACKLOG_HOLD
from sn2n_live.acquisition._writers import RunWriter
from sn2n_live.config._sim_plan import SIMPlan
from sn2n_live.method._denoiser import Denoiser
from sn2n_live.method._package import save_package

SIDE = 64
SIM = SIMPlan(pattern_source="metadata")


class SlowDenoiser:
    """A real Denoiser made slower (sleep per frame) and/or failing from frame ``fail_at``."""

    def __init__(self, inner: Denoiser, delay_s: float = 0.0, fail_at: int | None = None):
        self.inner = inner
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.done = 0

    @property
    def provenance(self):
        return self.inner.provenance

    def denoise(self, frames: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        if self.fail_at is not None and self.done + len(frames) > self.fail_at:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        self.calls.append(len(frames))
        time.sleep(self.delay_s * len(frames))
        self.done += len(frames)
        return self.inner.denoise(frames)


@pytest.fixture
def denoiser(package) -> Denoiser:
    return Denoiser(package, tile=None)


def _open(run: Path, name: str) -> zarr.Array:
    return zarr.open_group(run / f"{name}.ome.zarr", mode="r")["0"]


def _frame_md(run: Path, name: str) -> list[dict]:
    return zarr.open_group(run / f"{name}.ome.zarr", mode="r").attrs["ome_writers"][
        "frame_metadata"
    ]


def _run_json(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def _sim_events(loops: int) -> list[useq.MDAEvent]:
    return SIM.expand(useq.MDASequence(time_plan={"interval": 0, "loops": loops}))


def test_sim_run_saves_raw_and_denoised_side_by_side(core, denoiser, tmp_path):
    events = _sim_events(3)
    slow = SlowDenoiser(denoiser)
    run = tmp_path / "run"
    pairs = []
    with live_denoise(core, model=slow, out=run, events=events, run_info={"user": "t"}) as h:
        h.events.pair.connect(pairs.append)
        core.mda.run(events)
    summary = h.wait()
    assert summary.status == "completed"
    assert summary.raw_written == summary.denoised_written == 27
    # Whole SIM sets go to the denoiser, on the worker thread.
    assert slow.calls == [9, 9, 9]
    assert slow.threads == {"sn2n-denoiser"}
    raw, den = _open(run, "raw"), _open(run, "denoised")
    assert raw.shape == den.shape == (3, 9, SIDE, SIDE)
    assert raw.dtype == np.uint16 and den.dtype == np.float32
    raw_md, den_md = _frame_md(run, "raw"), _frame_md(run, "denoised")
    assert [m["index"] for m in raw_md] == [m["index"] for m in den_md]
    assert [m["index"] for m in raw_md] == [dict(e.index) for e in events]
    assert den_md[4]["sim"] == {"angle": 1, "phase": 1}
    assert den_md[4]["denoise"]["model_sha256"] == denoiser.provenance["model_sha256"]
    assert den_md[4]["denoise"]["latency_ms"] > 0
    # Every stored denoised frame is the denoiser's output for its own raw frame.
    expected = denoiser.denoise(np.asarray(raw[1]))
    np.testing.assert_allclose(den[1], expected, rtol=1e-4, atol=1e-2)
    doc = _run_json(run)
    assert doc["status"] == "completed"
    assert doc["run_info"] == {"user": "t"}
    assert doc["counts"]["raw_written"] == doc["counts"]["denoised_written"] == 27
    assert doc["layout"]["dims"][1]["name"] == "sim"
    assert doc["missing_denoised"]["ranges"] == []
    assert doc["model"]["model_sha256"] == denoiser.provenance["model_sha256"]
    assert pairs and pairs[-1].frame == 26
    np.testing.assert_array_equal(pairs[-1].raw, raw[2, 8])
    assert h.latest() is pairs[-1]


def test_slow_denoiser_never_slows_the_camera(core, denoiser, tmp_path):
    n = 60
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": n})
    t0 = time.perf_counter()
    core.mda.run(seq)
    baseline_s = time.perf_counter() - t0
    slow = SlowDenoiser(denoiser, delay_s=10 * baseline_s / n)
    run = tmp_path / "run"
    # A budget of ~2 frames forces most frames to be re-read from the raw store.
    queued_mb, progress = [], []
    with live_denoise(
        core, model=slow, out=run, events=seq, memory_budget_mb=0.02, progress=progress.append
    ) as h:
        h.events.stats.connect(lambda stats: queued_mb.append(stats.queued_mb))
        core.mda.run(seq)
        acquired = h.stats()
    summary = h.wait()
    # The block waited for the catch-up, reporting progress until the end.
    assert progress[-1].state == "finished" and progress[-1].denoised_written == n
    assert any(p.state == "catching_up" for p in progress)
    assert summary.status == "completed"
    assert summary.raw_written == summary.denoised_written == n
    # The denoiser needs ~10x the acquisition time; the acquisition itself stays fast.
    assert summary.acquisition_s < 2.5 * baseline_s + 0.3
    assert summary.catch_up_s > 5 * baseline_s
    assert queued_mb and max(queued_mb) <= 0.02
    # When run() returned, the denoiser was far behind (the block then waited for it).
    assert acquired.denoised_written < n / 2
    doc = _run_json(run)
    assert doc["counts"]["spilled"] > n / 2
    assert doc["counts"]["reread"] == doc["counts"]["spilled"]
    raw, den = _open(run, "raw"), _open(run, "denoised")
    assert raw.shape == den.shape == (n, SIDE, SIDE)
    assert [m["frame"] for m in _frame_md(run, "denoised")] == list(range(n))
    rereads = [m["frame"] for m in _frame_md(run, "denoised") if m["denoise"]["reread"]]
    assert len(rereads) == doc["counts"]["reread"]
    k = rereads[-1]
    np.testing.assert_allclose(den[k], denoiser.denoise(np.asarray(raw[k])), rtol=1e-4, atol=1e-2)


def test_denoising_waits_while_the_raw_writer_is_behind(core, denoiser, tmp_path, monkeypatch):
    # A slow disk: every raw frame takes 15 ms to write, several camera frames' time.
    append_raw = RunWriter.append_raw

    def slow_append_raw(self, pos, frame, metadata):
        time.sleep(0.015)
        append_raw(self, pos, frame, metadata)

    monkeypatch.setattr(RunWriter, "append_raw", slow_append_raw)
    n = 80
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": n})
    backlog_at_call: list[tuple[bool, int, int]] = []

    class Recording(SlowDenoiser):
        def denoise(self, frames):
            stats = h.stats()
            backlog_at_call.append((stats.state == "acquiring", stats.raw_backlog, len(frames)))
            return super().denoise(frames)

    run = tmp_path / "run"
    with live_denoise(core, model=Recording(denoiser), out=run, events=seq) as h:
        core.mda.run(seq)
    summary = h.wait()
    assert summary.status == "completed"
    assert summary.raw_written == summary.denoised_written == n
    during = [(backlog, size) for acquiring, backlog, size in backlog_at_call if acquiring]
    # Frames arriving between the check and the call add a few more.
    assert all(backlog <= RAW_BACKLOG_HOLD + 2 * size for backlog, size in during)
    assert _run_json(run)["timings"]["denoise_held_for_raw_writer_s"] > 0


def test_cancel_mid_run_leaves_consistent_stores(core, denoiser, tmp_path):
    seq = useq.MDASequence(time_plan={"interval": 0.02, "loops": 200})
    run = tmp_path / "run"
    slow = SlowDenoiser(denoiser, delay_s=0.005)
    with live_denoise(core, model=slow, out=run, events=seq) as h:

        def cancel_after_frames() -> None:
            deadline = time.monotonic() + 30
            while h.stats().frames_received < 15 and time.monotonic() < deadline:
                time.sleep(0.005)
            core.mda.cancel()

        canceller = threading.Thread(target=cancel_after_frames)
        canceller.start()
        core.mda.run(seq)
        canceller.join()
    summary = h.wait()
    assert summary.status == "canceled"
    n = summary.frames_received
    assert 15 <= n < 200
    assert summary.raw_written == summary.denoised_written == n
    doc = _run_json(run)
    assert doc["canceled"] is True and doc["counts"]["received"] == n
    raw, den = _open(run, "raw"), _open(run, "denoised")
    assert raw.shape == den.shape == (200, SIDE, SIDE)
    assert len(_frame_md(run, "raw")) == len(_frame_md(run, "denoised")) == n
    assert np.asarray(den[n - 1]).any() and not np.asarray(den[n]).any()
    assert not np.asarray(raw[n]).any()
    assert_record_matches_stores(run)


def test_denoiser_failure_stops_denoising_not_saving(core, denoiser, tmp_path):
    events = _sim_events(4)
    run = tmp_path / "run"
    failing = SlowDenoiser(denoiser, fail_at=14)
    with live_denoise(core, model=failing, out=run, events=events) as h:
        core.mda.run(events)
    summary = h.wait()
    assert summary.status == "denoiser_failed"
    assert summary.raw_written == 36
    # Sets are denoised whole: the set holding frame 14 (frames 9..17) fails.
    assert summary.denoised_written == 9
    assert summary.first_missing_denoised == 9
    assert summary.missing_denoised == [[9, 35]]
    doc = _run_json(run)
    assert doc["status"] == "denoiser_failed"
    assert doc["missing_denoised"]["first"] == 9
    assert doc["missing_denoised"]["by_reason"] == {"denoiser_failed": [[9, 35]]}
    error = next(e for e in doc["errors"] if e["where"] == "denoiser")
    assert error["type"] == "RuntimeError" and "out of memory" in error["message"]
    assert error["frame"] == 9 and error["index"] == {"t": 1, "a": 0, "h": 0}
    raw, den = _open(run, "raw"), _open(run, "denoised")
    assert raw.shape == den.shape == (4, 9, SIDE, SIDE)
    assert all(np.asarray(raw[t, s]).any() for t in range(4) for s in range(9))
    assert np.asarray(den[0]).any() and not np.asarray(den[1:]).any()
    assert_record_matches_stores(run)


def test_preview_policy_records_frames_without_a_twin(core, denoiser, tmp_path):
    events = _sim_events(8)
    run = tmp_path / "run"
    slow = SlowDenoiser(denoiser, delay_s=0.01)
    queued_mb = []
    with live_denoise(
        core, model=slow, out=run, events=events, policy="preview", memory_budget_mb=0.1
    ) as h:
        h.events.stats.connect(lambda stats: queued_mb.append(stats.queued_mb))
        core.mda.run(events)
    summary = h.wait()
    # 0.1 MB holds 12 frames of 64x64 uint16: older frames were evicted, memory stayed bounded.
    assert queued_mb and max(queued_mb) <= 0.1
    assert summary.status == "completed"
    assert summary.raw_written == 72
    missing = {i for lo, hi in summary.missing_denoised for i in range(lo, hi + 1)}
    assert missing and summary.denoised_written + len(missing) == 72
    doc = _run_json(run)
    assert doc["missing_denoised"]["by_reason"]["preview"] == summary.missing_denoised
    # Preview denoises whole sets and always the newest one at the end.
    assert all(c == 9 for c in slow.calls)
    denoised_frames = [m["frame"] for m in _frame_md(run, "denoised")]
    assert denoised_frames[-9:] == list(range(63, 72))
    assert sorted(set(range(72)) - missing) == denoised_frames
    den = _open(run, "denoised")
    for frame in range(72):
        t, s = divmod(frame, 9)
        assert np.asarray(den[t, s]).any() == (frame not in missing)
    assert_record_matches_stores(run)


def test_hardware_sequenced_burst_reaches_both_stores(core, denoiser, tmp_path):
    core.mda.engine.use_hardware_sequencing = True
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 20}, channels=["DAPI"])
    emitted = []
    core.mda.events.frameReady.connect(lambda img, event, meta: emitted.append(event.index["t"]))
    run = tmp_path / "run"
    with live_denoise(core, model=denoiser, out=run, events=seq, max_batch=4) as h:
        core.mda.run(seq)
    summary = h.wait()
    assert summary.status == "completed"
    # pymmcore-plus 0.18.1 can end a DemoCamera burst a frame or two early on a loaded
    # machine (it logs "Unexpected number of images"); every frame it emits is saved.
    assert len(emitted) >= 15
    assert summary.raw_written == summary.denoised_written == len(emitted), summary.to_dict()
    raw_md = _frame_md(run, "raw")
    assert all(m.get("hardware_triggered") for m in raw_md)
    assert [m["index"]["t"] for m in raw_md] == emitted == list(range(len(emitted)))
    assert [m["index"]["t"] for m in _frame_md(run, "denoised")] == emitted
    assert _open(run, "raw").shape == _open(run, "denoised").shape == (20, 1, SIDE, SIDE)


class _EngineThatLosesAFrame(MDAEngine):
    """The real engine, except that event t=1 yields no image: what pymmcore-plus does
    when a hardware sequence returns fewer images than asked for (it yields None)."""

    def exec_event(self, event: useq.MDAEvent):
        if event.index.get("t") == 1:
            return iter([None])
        return super().exec_event(event)


def test_a_frame_the_engine_never_delivered_is_noted_in_run_json(core, denoiser, tmp_path):
    core.mda.set_engine(_EngineThatLosesAFrame(core))
    seq = useq.MDASequence(time_plan={"interval": 0.01, "loops": 3})  # one event per frame
    run = tmp_path / "run"
    with live_denoise(core, model=denoiser, out=run, events=seq) as h:
        core.mda.run(seq)
    summary = h.wait()
    doc = json.loads((run / "run.json").read_text())
    assert summary.status == "completed"
    assert doc["counts"]["received"] == doc["counts"]["raw_written"] == 2
    assert [n for n in doc["notes"] if "delivered 2 of the 3 frames" in n], doc["notes"]


def test_a_complete_run_has_no_never_acquired_note(core, denoiser, tmp_path):
    seq = useq.MDASequence(time_plan={"interval": 0.01, "loops": 2})
    run = tmp_path / "run"
    with live_denoise(core, model=denoiser, out=run, events=seq) as h:
        core.mda.run(seq)
    h.wait()
    doc = json.loads((run / "run.json").read_text())
    assert doc["counts"]["raw_written"] == 2
    assert not [n for n in doc["notes"] if "never acquired" in n], doc["notes"]


def test_ome_tiff_option_for_a_non_sim_sequence(core, denoiser, tmp_path):
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 3}, channels=["DAPI", "FITC"])
    run = tmp_path / "run"
    with live_denoise(
        core, model=denoiser, out=run, events=seq, file_format="ome-tiff", denoised_dtype="uint16"
    ) as h:
        core.mda.run(seq)
    assert h.wait().status == "completed"
    raw = tifffile.imread(run / "raw.ome.tiff")
    den = tifffile.imread(run / "denoised.ome.tiff")
    assert raw.shape == den.shape == (3, 2, SIDE, SIDE)
    assert den.dtype == np.uint16
    expected = np.clip(np.rint(denoiser.denoise(raw[2, 1])), 0, 65535)
    np.testing.assert_allclose(den[2, 1], expected, atol=1)


def test_plain_output_handler_with_a_package_path_and_no_event_list(core, package, tmp_path):
    path = save_package(package, tmp_path / "model.sn2n")
    events = list(useq.MDASequence(time_plan={"interval": 0, "loops": 5}))
    handler = LiveDenoiseHandler(load_denoiser(path), tmp_path / "run")
    core.mda.run(events, output=handler)
    summary = handler.wait(timeout=30)
    assert summary.status == "completed" and summary.denoised_written == 5
    # A plain list is a generator to pymmcore-plus: one unbounded axis in arrival order.
    doc = _run_json(tmp_path / "run")
    assert doc["layout"]["kind"] == "flat"
    assert _open(tmp_path / "run", "denoised").shape == (5, SIDE, SIDE)
    assert summary.frame_ready_p50_us is not None and summary.frame_ready_p50_us < 1000


def test_bad_options_fail_before_the_acquisition(denoiser, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "run.json").write_text("{}")
    with pytest.raises(ValueError, match="not an empty folder"):
        LiveDenoiseHandler(denoiser, tmp_path / "used")
    with pytest.raises(ValueError, match="policy must be one of"):
        LiveDenoiseHandler(denoiser, tmp_path / "a", policy="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory_budget_mb must be > 0"):
        LiveDenoiseHandler(denoiser, tmp_path / "a", memory_budget_mb=0)
    with pytest.raises(ValueError, match="dimension"):
        LiveDenoiseHandler(denoiser, tmp_path / "a", events=_sim_events(1), file_format="ome-tiff")
    with pytest.raises(ValueError, match=r"writer_nice must be an int in 0\.\.19; got 20"):
        LiveDenoiseHandler(denoiser, tmp_path / "a", writer_nice=20)
    with pytest.raises(ValueError, match=r"denoise_nice must be an int in 0\.\.19; got True"):
        LiveDenoiseHandler(denoiser, tmp_path / "a", denoise_nice=True)
    with pytest.raises(ValueError, match="is not a file"):
        load_denoiser(tmp_path / "missing.sn2n")
    with pytest.raises(ValueError, match="must be a denoiser"):
        load_denoiser(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_an_unwritable_run_folder_is_refused_before_the_mda(
    core, denoiser, unwritable_dir, isolation
):
    from sn2n_live._outputs import OutputPathError

    parent = unwritable_dir
    frames = []
    core.mda.events.frameReady.connect(lambda *args: frames.append(1))
    events = _sim_events(1)
    with (
        pytest.raises(OutputPathError, match=r"cannot write the run folder in .*run: "),
        live_denoise(core, model=denoiser, out=parent / "run", events=events, isolation=isolation),
    ):
        core.mda.run(events)
    assert frames == []  # the sample was never exposed


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_risk_map_is_a_third_store_beside_raw_and_denoised(
    core, package, denoiser, tmp_path, isolation
):
    events = _sim_events(2)
    run = tmp_path / "run"
    model = save_package(package, tmp_path / "m.sn2n")
    model_arg = denoiser if isolation == "thread" else model
    with live_denoise(
        core, model=model_arg, out=run, events=events, isolation=isolation, risk=True
    ) as h:
        core.mda.run(events)
    summary = h.wait()
    assert summary.status == "completed", summary
    raw, risk = _open(run, "raw"), _open(run, "risk")
    assert risk.shape == raw.shape and risk.dtype == np.float32
    # The stored map is the denoiser's own risk map of that raw frame.
    expected = denoiser.denoise(np.asarray(raw[1]), risk=True)
    np.testing.assert_allclose(risk[1], expected.risk, atol=1e-3)
    assert float(np.min(risk)) >= 0.0 and float(np.max(risk)) <= 1.0
    risk_md = _frame_md(run, "risk")
    assert [m["index"] for m in risk_md] == [dict(e.index) for e in events]
    np.testing.assert_allclose(risk_md[9]["risk_fraction"], expected.risk_fraction[0], atol=1e-3)
    doc = _run_json(run)
    assert doc["stores"]["risk"]["path"] == "risk.ome.zarr"
    assert doc["options"]["risk"] is True
    assert doc["risk"]["frames"] == 18
    fractions = [m["risk_fraction"] for m in risk_md]
    assert doc["risk"]["max_fraction"] == pytest.approx(max(fractions), abs=1e-5)


def test_risk_map_needs_a_denoiser_that_makes_one_and_ome_zarr(denoiser, tmp_path):
    class NoRisk:
        provenance: dict = {}  # noqa: RUF012 - a fixture class

        def denoise(self, frames: np.ndarray) -> np.ndarray:
            return frames

    with pytest.raises(ValueError, match="risk=True needs a denoiser with denoise"):
        LiveDenoiseHandler(NoRisk(), tmp_path / "a", risk=True)
    with pytest.raises(ValueError, match="risk map is written as OME-Zarr only"):
        LiveDenoiseHandler(
            denoiser, tmp_path / "b", risk=True, file_format="ome-tiff", denoised_dtype="uint16"
        )


def test_frames_unlike_the_training_frames_are_noted_in_run_json(core, package, tmp_path):
    from sn2n_live.method import photometry_record
    from sn2n_live.simulation import simulate_sim_frames

    pilot = simulate_sim_frames((64, 64), photons=2, seed=0).raw.reshape(-1, 64, 64)
    dim_pilot = replace(package, training={"photometry": photometry_record(pilot)})
    events = _sim_events(1)
    run = tmp_path / "run"
    pairs = []
    with live_denoise(core, model=Denoiser(dim_pilot, tile=None), out=run, events=events) as h:
        h.events.pair.connect(pairs.append)
        core.mda.run(events)
    summary = h.wait()
    assert summary.status == "completed"
    # The demo camera's frames are nothing like a 2-photon pilot: every frame is flagged.
    assert summary.notes and summary.notes[0].startswith("frames 0-8: ")
    assert _run_json(run)["notes"] == summary.notes
    assert all(m["denoise"]["data_check"] for m in _frame_md(run, "denoised"))
    assert pairs[-1].data_check is not None


def test_isolation_defaults_to_a_process_where_the_model_can_go_there(
    package, denoiser, tmp_path, caplog
):
    path = save_package(package, tmp_path / "m.sn2n")
    assert _session._default_isolation(path) == "process"
    assert _session._default_isolation(functools.partial(load_denoiser, path)) == "process"
    with caplog.at_level("INFO", logger="sn2n_live.acquisition"):
        assert _session._default_isolation(denoiser) == "thread"
        assert _session._default_isolation(lambda: denoiser) == "thread"  # lambdas do not pickle
    assert "isolation='thread' because the model is a Denoiser object" in caplog.text
    assert "cannot be sent to a child process" in caplog.text


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_run_json_records_the_dose_delivered(package, tmp_path, isolation):
    from sn2n_live.acquisition import create_simulated_microscope, release_core

    scope = create_simulated_microscope(shape=(256, 256), realtime=False, seed=1)
    path = save_package(package, tmp_path / "m.sn2n")
    try:
        scope.setExposure(10.0)
        scope.setProperty("Laser", "Power", 40)
        # Six frames: two at the core's 10 ms / 40 %, then an event sets 20 ms and 100 %
        # (the power persists on the core), then 5 ms.
        laser = [("Laser", "Power", 100)]
        exposures = [None, None, 20.0, 20.0, 5.0, 5.0]
        events = [
            useq.MDAEvent(index={"t": i}, exposure=e, properties=laser if i == 2 else None)
            for i, e in enumerate(exposures)
        ]
        run = tmp_path / "run"
        with live_denoise(
            scope, model=path, out=run, events=events, isolation=isolation
        ) as handler:
            scope.mda.run(events)
        assert handler.wait().status == "completed"
        dose = _run_json(run)["dose"]
        assert dose["frames"] == 6 and dose["frames_without_exposure"] == 0
        assert dose["exposure_ms_total"] == pytest.approx(70.0)
        assert dose["laser_property"] == ["Laser", "Power"]
        assert dose["laser_power_percent_start"] == 40.0
        assert dose["relative_dose"] == pytest.approx(2 * 10 * 0.4 + 2 * 20 + 2 * 5)
        # The microscope's own account of the light agrees.
        assert scope.delivered_dose == pytest.approx(dose["relative_dose"])
        assert scope.bleached_fraction < 1.0
        assert_record_matches_stores(run)
    finally:
        release_core(scope)


def test_run_json_dose_without_a_laser(core, denoiser, tmp_path):
    events = _sim_events(1)
    run = tmp_path / "run"
    with live_denoise(core, model=denoiser, out=run, events=events) as handler:
        core.mda.run(events)
    handler.wait()
    dose = _run_json(run)["dose"]
    assert dose["frames"] == 9 and dose["relative_dose"] is None
    assert dose["exposure_ms_total"] == pytest.approx(9 * core.getExposure())
