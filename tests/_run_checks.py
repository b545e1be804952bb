"""Check a run folder's run.json against what its stores hold (every fault scenario uses it).

The stores are read themselves: the journals (one line per frame handed to a store), the
raw and denoised arrays and any rescue store. run.json's counts and missing ranges must
equal them, whatever ended the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr


def _journal(run: Path, name: str) -> dict[int, int]:
    """Frame number -> store position, from ``<name>.frames.jsonl`` (absent: empty)."""
    path = run / f"{name}.frames.jsonl"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        out[int(entry["frame"])] = int(entry["pos"])
    return out


def _expand(ranges: list[list[int]]) -> set[int]:
    return {i for lo, hi in ranges for i in range(lo, hi + 1)}


def _flat_frames(run: Path, store: str) -> np.ndarray:
    """The store's frames as ``(n, H, W)`` (one position; OME-Zarr)."""
    array = zarr.open_group(run / store, mode="r")["0"]
    data = np.asarray(array[...])
    return data.reshape(-1, *data.shape[-2:])


def _rescued(run: Path, document: dict) -> set[int]:
    rescue = document.get("raw_rescue") or {}
    frames = _expand(rescue.get("frames", []))
    held: set[int] = set()
    for store in rescue.get("stores", []):
        assert (run / store).is_dir(), f"run.json lists {store}, which does not exist"
        md = zarr.open_group(run / store, mode="r").attrs["ome_writers"]["frame_metadata"]
        held |= {m["frame"] for m in md}
    assert held == frames, "the rescue stores do not hold the frames run.json lists"
    unlisted = sorted(
        p.name for p in run.glob("raw-rescue-*") if p.name not in rescue.get("stores", [])
    )
    assert not unlisted, f"rescue stores not listed in run.json: {unlisted}"
    return frames


def assert_record_matches_stores(run: Path, *, check_pixels: bool = True) -> dict:
    """Assert that run.json's counts and missing frames are what the stores hold.

    Returns run.json.
    """
    document = json.loads((run / "run.json").read_text())
    assert document["state"] == "finished", document["status"]
    counts = document["counts"]
    raw = _journal(run, "raw")
    denoised = _journal(run, "denoised")
    unplaced = _journal(run, "unplaced")
    rescued = _rescued(run, document)
    received = counts["received"]
    assert counts["raw_written"] == len(raw)
    assert counts["denoised_written"] == len(denoised)
    assert counts.get("raw_rescued", 0) == len(rescued)
    # Every frame received is in exactly one raw store, or listed as unsaved (its write
    # failed: disk full): none lost silently, none twice.
    unsaved = _expand(document["raw_unsaved_frames"])
    homes = [set(raw), set(unplaced), rescued, unsaved]
    assert sum(len(h) for h in homes) == received, [len(h) for h in homes]
    assert set().union(*homes) == set(range(received))
    # A frame may be denoised before its raw write: if the child then died, its raw
    # frame is in a rescue store.
    assert set(denoised) <= set(raw) | rescued | unsaved
    missing = _expand(document["missing_denoised"]["ranges"])
    assert missing == set(range(received)) - set(denoised) - set(unplaced)
    assert counts["denoised_missing"] == len(missing)
    by_reason = document["missing_denoised"]["by_reason"]
    assert set().union(*(_expand(r) for r in by_reason.values())) == missing
    assert sum(len(_expand(r)) for r in by_reason.values()) == len(missing), "a frame twice"
    assert _expand(document["unplaced_frames"]) == set(unplaced)
    if check_pixels and raw:
        raw_frames = _flat_frames(run, "raw.ome.zarr")
        den_frames = _flat_frames(run, "denoised.ome.zarr")
        for frame, pos in raw.items():
            assert raw_frames[pos].any(), f"raw frame {frame} is listed but blank"
        for frame in missing & set(raw):
            pos = raw[frame]
            if pos < len(den_frames):
                assert not den_frames[pos].any(), f"frame {frame} listed missing has pixels"
    return document
