"""Run-folder writers: layout derivation, identical raw/denoised stores, crash safety."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import useq
import zarr

from sn2n_live.acquisition import _writers
from sn2n_live.acquisition._writers import (
    SIM_DIM,
    RunWriter,
    layout_from_events,
    write_json_atomic,
)
from sn2n_live.config._sim_plan import SIMPlan

SIM = SIMPlan(pattern_source="metadata")
BACKENDS = ["zarr-python", "tensorstore", "acquire-zarr"]
# Backends that write in the background: frames are readable only after close.
BACKGROUND = ["tensorstore", "acquire-zarr"]


def _dims(layout):
    return [(d.name, d.count, d.type) for d in layout.dims]


def _fill(writer, layout, n, shape=(16, 16), *, denoised=True):
    for pos in range(n):
        writer.append_raw(pos, np.full(shape, pos + 1, np.uint16), {"frame": pos})
        if denoised:
            writer.append_denoised(pos, np.full(shape, pos + 0.25, np.float32), {"frame": pos})


# -- layout ---------------------------------------------------------------------------------


def test_layout_follows_the_event_nesting():
    seq = useq.MDASequence(
        time_plan={"interval": 0, "loops": 2},
        channels=["DAPI", "FITC"],
        z_plan={"range": 2, "step": 1},
        axis_order="tpzc",
    )
    layout = layout_from_events(seq)
    assert not layout.flat
    assert _dims(layout) == [("t", 2, "time"), ("z", 3, "space"), ("c", 2, "channel")]
    assert layout.dims[2].labels == ("DAPI", "FITC")
    events = list(seq)
    assert [layout.position(e.index) for e in events] == list(range(len(events)))
    # A list of the same events gives the same layout; dim_index inverts position.
    assert _dims(layout_from_events(events)) == _dims(layout)
    assert layout.dim_index(7) == (1, 0, 1)


def test_sim_angle_and_phase_fold_into_one_dimension():
    events = SIM.expand(useq.MDASequence(time_plan={"interval": 0, "loops": 2}))
    layout = layout_from_events(events)
    assert _dims(layout) == [("t", 2, "time"), (SIM_DIM, 9, "other")]
    assert layout.dims[1].keys == ("a", "h")
    assert layout.dims[1].labels[:4] == ("a0h0", "a0h1", "a0h2", "a1h0")
    assert layout.n_frames == 18
    assert [layout.position(e.index) for e in events] == list(range(18))


def test_too_many_dimensions_fold_the_innermost_pair():
    seq = useq.MDASequence(
        time_plan={"interval": 0, "loops": 2},
        channels=["DAPI", "FITC"],
        z_plan={"range": 1, "step": 1},
        axis_order="tpzc",
    )
    layout = layout_from_events(SIM.expand(seq))
    # t, z, c, sim would be 6 dims with y, x: c x sim folds (innermost adjacent pair).
    assert _dims(layout) == [("t", 2, "time"), ("z", 2, "space"), ("c_sim", 18, "other")]
    assert layout.notes == ("a x h -> sim", "c x sim -> c_sim")
    assert layout.dims[2].labels[0] == "DAPI/a0h0"


def test_positions_do_not_count_against_the_dimension_limit():
    seq = useq.MDASequence(
        time_plan={"interval": 0, "loops": 2},
        stage_positions=[(0, 0, 0), (10, 10, 0)],
        channels=["DAPI", "FITC"],
    )
    layout = layout_from_events(SIM.expand(seq))
    assert _dims(layout) == [
        ("t", 2, "time"),
        ("p", 2, "position"),
        ("c", 2, "channel"),
        (SIM_DIM, 9, "other"),
    ]


def test_size_one_dimensions_are_dropped_before_folding():
    seq = useq.MDASequence(
        time_plan={"interval": 0, "loops": 2},
        channels=["DAPI"],
        z_plan={"range": 1, "step": 1},
        axis_order="tpzc",
    )
    layout = layout_from_events(SIM.expand(seq))
    assert _dims(layout) == [("t", 2, "time"), ("z", 2, "space"), (SIM_DIM, 9, "other")]
    assert "dropped size-1 dimension c" in layout.notes
    event = SIM.expand(seq)[-1]
    assert layout.position(event.index) == layout.n_frames - 1
    assert layout.position({**event.index, "c": 1}) is None


@pytest.mark.parametrize(
    ("events", "count", "why"),
    [
        (None, None, "events unknown"),
        (iter([useq.MDAEvent(index={"t": 0})]), None, "iterator"),
        ([useq.MDAEvent(index={"t": i}) for i in (0, 2)], 2, "does not run 0..n-1"),
        (
            [useq.MDAEvent(index={"t": 0, "c": 0}), useq.MDAEvent(index={"t": 1})],
            2,
            "different index keys",
        ),
        (
            [useq.MDAEvent(index={"t": t, "c": c}) for t, c in [(0, 0), (0, 1), (1, 0)]],
            3,
            "not a full grid",
        ),
        (
            [useq.MDAEvent(index={"t": t, "c": c}) for t, c in [(0, 0), (1, 1), (0, 1), (1, 0)]],
            4,
            "nested-loop order",
        ),
    ],
)
def test_irregular_events_fall_back_to_one_flat_axis(events, count, why):
    layout = layout_from_events(events)
    assert layout.flat
    assert _dims(layout) == [("t", count, "time")]
    assert why in layout.notes[0]
    assert layout.position({"t": 0}) is None


def test_non_image_events_take_no_place():
    events = [
        useq.MDAEvent(index={"t": 0}),
        useq.MDAEvent(action=useq.HardwareAutofocus(autofocus_device_name="Z")),
        useq.MDAEvent(index={"t": 1}),
    ]
    assert _dims(layout_from_events(events)) == [("t", 2, "time")]


# -- stores ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_raw_and_denoised_stores_have_identical_layouts(tmp_path, backend):
    events = SIM.expand(useq.MDASequence(time_plan={"interval": 0, "loops": 2}))
    layout = layout_from_events(events)
    writer = RunWriter(tmp_path / "run", layout, zarr_backend=backend)
    writer.open((16, 16), "uint16", pixel_size_um=0.5, metadata={"model": {"sha": "abc"}})
    _fill(writer, layout, 18)
    writer.close_raw()
    writer.close_denoised()

    raw = zarr.open_group(writer.raw_path, mode="r")
    den = zarr.open_group(writer.denoised_path, mode="r")
    assert raw["0"].shape == den["0"].shape == (2, 9, 16, 16)
    assert raw["0"].dtype == np.uint16 and den["0"].dtype == np.float32
    axes = [a["name"] for a in raw.attrs["ome"]["multiscales"][0]["axes"]]
    assert axes == [a["name"] for a in den.attrs["ome"]["multiscales"][0]["axes"]]
    assert axes == ["t", "sim", "y", "x"]
    np.testing.assert_array_equal(raw["0"][1, 4], np.full((16, 16), 14))
    np.testing.assert_array_equal(den["0"][1, 4], np.full((16, 16), 13.25))
    for group in (raw, den):
        frames = group.attrs["ome_writers"]["frame_metadata"]
        assert [f["frame"] for f in frames] == list(range(18))
        assert group.attrs["sn2n_live"]["layout"]["dims"][1]["name"] == SIM_DIM
    assert den.attrs["sn2n_live"]["role"] == "denoised"
    assert den.attrs["sn2n_live"]["model"] == {"sha": "abc"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaps_are_skipped_and_the_denoised_store_padded(tmp_path, monkeypatch, backend):
    # acquire-zarr writes skipped frames as zeros from one buffer per skip; with a cap of 3
    # float32 frames per skip the 4-frame pad below takes two calls (memory stays bounded).
    monkeypatch.setattr(_writers, "_SKIP_BATCH_BYTES", 3 * 8 * 8 * 4)
    layout = layout_from_events(None)
    writer = RunWriter(tmp_path / "run", layout, zarr_backend=backend)
    writer.open((8, 8), "uint16")
    for pos in (0, 1, 4):
        writer.append_raw(pos, np.full((8, 8), pos + 1, np.uint16), {"frame": pos})
    writer.append_denoised(0, np.full((8, 8), 1.0, np.float32), {"frame": 0})
    writer.close_raw()
    assert writer.raw_cursor == 5
    stream = writer._den.stream
    skips: list[int] = []
    skip = type(stream).skip

    def spy(self, *, frames=1):
        skips.append(frames)
        return skip(self, frames=frames)

    monkeypatch.setattr(type(stream), "skip", spy)
    writer.close_denoised(pad_to=writer.raw_cursor)
    assert writer.denoised_cursor == 5
    assert skips == ([3, 1] if backend == "acquire-zarr" else [4])
    raw = zarr.open_array(writer.raw_path / "0", mode="r")
    den = zarr.open_array(writer.denoised_path / "0", mode="r")
    assert raw.shape == den.shape == (5, 8, 8)
    assert [int(raw[i, 0, 0]) for i in range(5)] == [1, 2, 0, 0, 5]
    assert [float(den[i, 0, 0]) for i in range(5)] == [1.0, 0, 0, 0, 0]
    frames = zarr.open_group(writer.raw_path, mode="r").attrs["ome_writers"]["frame_metadata"]
    assert [f["frame"] for f in frames] == [0, 1, 4]
    journal = [
        json.loads(line) for line in (tmp_path / "run/raw.frames.jsonl").read_text().splitlines()
    ]
    assert [j["pos"] for j in journal] == [0, 1, 4]


@pytest.mark.parametrize("backend", BACKGROUND)
def test_raw_frames_are_readable_during_the_run_only_with_synchronous_writes(tmp_path, backend):
    layout = layout_from_events([useq.MDAEvent(index={"t": i}) for i in range(4)])
    sync = RunWriter(tmp_path / "sync", layout, zarr_backend="zarr-python")
    background = RunWriter(tmp_path / "bg", layout, zarr_backend=backend)
    for writer in (sync, background):
        writer.open((8, 8), "uint16")
        _fill(writer, layout, 3, (8, 8), denoised=False)
    assert sync.raw_readable(2) and not sync.raw_readable(3)
    np.testing.assert_array_equal(sync.read_raw(2), np.full((8, 8), 3))
    assert not background.raw_readable(0)
    with pytest.raises(RuntimeError, match="not on disk yet"):
        background.read_raw(0)
    background.close_raw()
    assert background.wait_raw_readable(2, timeout=0)
    np.testing.assert_array_equal(background.read_raw(2), np.full((8, 8), 3))
    for writer in (sync, background):
        writer.close_raw()
        writer.close_denoised()


def test_reading_back_from_multi_position_stores(tmp_path):
    seq = useq.MDASequence(
        time_plan={"interval": 0, "loops": 2}, stage_positions=[(0, 0, 0), (5, 5, 0)]
    )
    layout = layout_from_events(seq)
    writer = RunWriter(tmp_path / "run", layout)
    writer.open((8, 8), "uint16")
    _fill(writer, layout, 4, (8, 8), denoised=False)
    assert [int(writer.read_raw(p)[0, 0]) for p in range(4)] == [1, 2, 3, 4]
    writer.close_raw()
    writer.close_denoised()
    group = zarr.open_group(writer.raw_path, mode="r")
    assert group["1/0"].shape == (2, 8, 8)
    assert int(group["1/0"][1, 0, 0]) == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_that_stopped_early_leaves_stores_of_the_full_layout(tmp_path, backend):
    # t, p, z, sim: positions are separate arrays and storage order differs from the
    # acquisition order (t, sim, z on disk). The run stops after 20 of 72 frames, inside
    # the first time point's first position: position 1 never gets a frame.
    seq = useq.MDASequence(
        time_plan={"interval": 0, "loops": 2},
        stage_positions=[(0, 0, 0), (5, 5, 0)],
        z_plan={"range": 1, "step": 1},
        axis_order="tpzc",
    )
    layout = layout_from_events(SIM.expand(seq))
    assert [d.name for d in layout.dims] == ["t", "p", "z", SIM_DIM]
    writer = RunWriter(tmp_path / "run", layout, zarr_backend=backend)
    writer.open((8, 8), "uint16")
    written = [pos for pos in range(16) if pos not in (5, 6)]
    for pos in written:
        writer.append_raw(pos, np.full((8, 8), pos + 1, np.uint16), {"frame": pos})
    for pos in written[:6]:
        writer.append_denoised(pos, np.full((8, 8), pos + 0.5, np.float32), {"frame": pos})
    writer.close_raw()
    writer.close_denoised(pad_to=writer.raw_cursor)

    assert writer.describe()["storage_order"] == ["t", SIM_DIM, "z"]
    raw = zarr.open_group(writer.raw_path, mode="r")
    den = zarr.open_group(writer.denoised_path, mode="r")
    for group in (raw, den):
        for p in ("0", "1"):
            assert group[f"{p}/0"].shape == (2, 9, 2, 8, 8)
            assert group[f"{p}"].attrs["ome"]["multiscales"][0]["axes"][1]["name"] == SIM_DIM
        assert group.attrs["sn2n_live"]["layout"]["n_frames"] == 72
    assert not raw["1/0"][:].any() and not den["1/0"][:].any()
    for pos in range(layout.n_frames):
        t, p, z, sim = layout.dim_index(pos)
        expected = pos + 1 if pos in written else 0
        assert int(raw[f"{p}/0"][t, sim, z, 0, 0]) == expected, pos
        assert float(den[f"{p}/0"][t, sim, z, 0, 0]) == (pos + 0.5 if pos in written[:6] else 0)
        if pos < writer.raw_cursor:
            np.testing.assert_array_equal(writer.read_raw(pos), np.full((8, 8), expected))
    frames = raw["0"].attrs["ome_writers"]["frame_metadata"]
    assert [f["frame"] for f in frames] == written


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_without_frames_leaves_openable_stores(tmp_path, backend):
    writer = RunWriter(tmp_path / "run", layout_from_events(None), zarr_backend=backend)
    writer.open((8, 8), "uint16", metadata={"note": "empty"})
    writer.close_raw()
    writer.close_denoised()
    for path in (writer.raw_path, writer.denoised_path):
        group = zarr.open_group(path, mode="r")
        # zarr-python and tensorstore start an unbounded axis at 1 frame, acquire-zarr at 0.
        assert group["0"].shape[1:] == (8, 8) and group["0"].shape[0] <= 1
        assert not group["0"][:].any()
        assert group.attrs["sn2n_live"]["note"] == "empty"


@pytest.mark.parametrize("backend", BACKENDS)
def test_unplaced_frames_get_their_own_flat_store(tmp_path, backend):
    layout = layout_from_events([useq.MDAEvent(index={"t": i}) for i in range(2)])
    writer = RunWriter(tmp_path / "run", layout, zarr_backend=backend)
    writer.open((8, 8), "uint16")
    writer.append_raw(0, np.full((8, 8), 1, np.uint16), {"frame": 0})
    for i in range(3):
        writer.append_unplaced(np.full((8, 8), 10 + i, np.uint16), {"frame": 1 + i})
    writer.close_raw()
    writer.close_denoised(pad_to=writer.raw_cursor)
    assert writer.describe()["unplaced"] == {"path": "unplaced.ome.zarr", "frames": 3}
    group = zarr.open_group(writer.unplaced_path, mode="r")
    assert [int(group["0"][i, 0, 0]) for i in range(3)] == [10, 11, 12]
    frames = group.attrs["ome_writers"]["frame_metadata"]
    assert [f["frame"] for f in frames] == [1, 2, 3]
    assert group.attrs["sn2n_live"]["role"] == "unplaced"
    assert int(zarr.open_array(writer.raw_path / "0", mode="r")[0, 0, 0]) == 1


def test_uint16_denoised_store_rounds_and_clips(tmp_path):
    layout = layout_from_events([useq.MDAEvent(index={"t": 0})])
    writer = RunWriter(tmp_path / "run", layout, denoised_dtype="uint16")
    writer.open((2, 2), "uint16")
    writer.append_denoised(0, np.array([[1.6, -3.0], [70000.0, 2.4]], np.float32), {})
    writer.close_raw()
    writer.close_denoised()
    den = zarr.open_array(writer.denoised_path / "0", mode="r")
    assert den.dtype == np.uint16
    np.testing.assert_array_equal(den[0], [[2, 0], [65535, 2]])


def test_ome_tiff_for_a_time_channel_layout(tmp_path):
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 2}, channels=["DAPI", "FITC"])
    layout = layout_from_events(seq)
    writer = RunWriter(tmp_path / "run", layout, file_format="ome-tiff", denoised_dtype="uint16")
    writer.open((8, 8), "uint16")
    _fill(writer, layout, 4, (8, 8))
    writer.close_raw()
    np.testing.assert_array_equal(writer.read_raw(3), np.full((8, 8), 4))
    writer.close_denoised()
    raw = tifffile.imread(writer.raw_path)
    den = tifffile.imread(writer.denoised_path)
    assert raw.shape == den.shape == (2, 2, 8, 8)
    assert int(raw[1, 1, 0, 0]) == 4 and int(den[1, 1, 0, 0]) == 3


def test_ome_tiff_refuses_sim_axes_and_float_with_pointed_errors(tmp_path):
    sim_layout = layout_from_events(
        SIM.expand(useq.MDASequence(time_plan={"interval": 0, "loops": 1}))
    )
    with pytest.raises(ValueError, match=r"dimension\(s\) \['sim'\].*file_format='ome-zarr'"):
        RunWriter(tmp_path / "a", sim_layout, file_format="ome-tiff", denoised_dtype="uint16")
    t_layout = layout_from_events(useq.MDASequence(time_plan={"interval": 0, "loops": 2}))
    with pytest.raises(ValueError, match="denoised_dtype='uint16'"):
        RunWriter(tmp_path / "b", t_layout, file_format="ome-tiff")
    with pytest.raises(ValueError, match="zarr_backend must be one of"):
        RunWriter(tmp_path / "c", t_layout, zarr_backend="n5")  # type: ignore[arg-type]


def test_run_json_is_replaced_atomically(tmp_path):
    target = tmp_path / "run.json"
    write_json_atomic(target, {"status": "running", "value": np.float32(1.5)})
    write_json_atomic(target, {"status": "completed"})
    assert json.loads(target.read_text()) == {"status": "completed"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


# -- a killed run ---------------------------------------------------------------------------

_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np, useq
    from sn2n_live.acquisition._writers import RunWriter, layout_from_events

    backend, run = sys.argv[1], Path(sys.argv[2])
    layout = layout_from_events([useq.MDAEvent(index={"t": i}) for i in range(100000)])
    writer = RunWriter(run, layout, zarr_backend=backend)
    writer.open((32, 32), "uint16")
    pos = 0
    while True:
        writer.append_raw(pos, np.full((32, 32), pos + 1, np.uint16), {"frame": pos})
        writer.append_denoised(pos, np.full((32, 32), pos + 0.5, np.float32), {"frame": pos})
        pos += 1
        if pos == 30:
            print("ready", flush=True)
    """
)


def _journal(path: Path) -> list[int]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line)["pos"])
        except json.JSONDecodeError:  # the line being written when the process died
            break
    return out


def _frames_on_disk(array, n: int, first_value: float) -> tuple[list[int], list[int]]:
    """Read frames 0..n-1 one by one: (frames holding their value, frames zarr refuses).

    A frame not on disk reads as the fill value 0 and is in neither list. A frame with pixels
    must hold its own value (``frame number + first_value``) in every pixel.
    """
    on_disk, refused = [], []
    for i in range(min(n, array.shape[0])):
        try:
            frame = array[i]
        except ValueError as error:  # a shard torn by the kill fails its checksum
            assert "checksum" in str(error)
            refused.append(i)
            continue
        if frame.any():
            np.testing.assert_array_equal(frame, np.full(frame.shape, i + first_value))
            on_disk.append(i)
    return on_disk, refused


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_run_leaves_readable_stores(tmp_path, backend):
    run = tmp_path / "run"
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, backend, str(run)],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    raw_group = zarr.open_group(run / "raw.ome.zarr", mode="r")
    den_group = zarr.open_group(run / "denoised.ome.zarr", mode="r")
    raw, den = raw_group["0"], den_group["0"]
    raw_journal = _journal(run / "raw.frames.jsonl")
    den_journal = _journal(run / "denoised.frames.jsonl")
    assert raw_journal[:30] == list(range(30))
    n = len(den_journal)
    assert n >= 30
    if backend == "acquire-zarr":
        # acquire-zarr writes in the background and rewrites the arrays' zarr.json as it
        # goes: their shape is the extent handed over when it last did (never more than
        # was appended), not the layout's; frames still in flight are lost (read as 0) and
        # a shard being written at the kill may be torn, which zarr refuses (checksum)
        # rather than returning wrong pixels. Every other frame on disk is intact.
        # Run-level attributes reach zarr.json only on close (run.json has them).
        for group, array, journal, first in (
            (raw_group, raw, raw_journal, 1),
            (den_group, den, den_journal, 0.5),
        ):
            assert array.shape[1:] == (32, 32)
            assert array.shape[0] <= len(journal) + 1
            _, refused = _frames_on_disk(array, len(journal), first)
            assert len(refused) <= (os.cpu_count() or 1)
            assert "multiscales" in group.attrs["ome"]
            assert "sn2n_live" not in group.attrs
        return
    assert raw.shape == den.shape == (100000, 32, 32)
    assert raw_group.attrs["sn2n_live"]["role"] == "raw"
    raw_values = raw[:n, 0, 0]
    den_values = den[:n, 0, 0]
    if backend == "zarr-python":
        # A journal line is written after append returned, i.e. after the chunk file was
        # atomically on disk: every journaled frame is readable, intact.
        np.testing.assert_array_equal(raw_values, np.arange(1, n + 1))
        np.testing.assert_array_equal(den_values, np.arange(n) + 0.5)
    else:
        # tensorstore writes in the background: frames still in flight are lost (read as
        # the fill value 0), but every chunk on disk is complete.
        written = raw_values != 0
        np.testing.assert_array_equal(raw_values[written], np.arange(1, n + 1)[written])
