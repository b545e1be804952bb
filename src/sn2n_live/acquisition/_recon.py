"""SIM reconstruction of a run's sets: live (beside the writers) and offline (a finished run).

Live, :class:`LiveReconstruction` is fed by the pipeline's writer threads (raw frames by
the raw writer, denoised ones by the denoise thread) and never makes them wait: a
complete set is handed to its own worker thread, which keeps only the newest set for the
preview ("preview"), or a short queue of sets to save ("save"; a set that finds the queue
full is recorded as skipped, and ``sn2n-live reconstruct`` can make it afterwards). The
calibration is the profile's saved one, or is estimated on that worker from the run's
first complete raw sets, pooled (a dim sample's pattern stands out of their mean).

Offline, :func:`reconstruct_run` reconstructs every complete set of a finished run folder
from its raw or denoised store with one calibration.

Both write ``recon.ome.zarr`` (``recon-raw.ome.zarr`` from raw frames offline): the run's
dimensions without the SIM pattern axis, at twice the sampling, with half the pixel size.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ome_writers import AcquisitionSettings, Dimension, create_stream

from sn2n_live.acquisition._batching import PendingFrame
from sn2n_live.config import ANGLE_KEY, PHASE_KEY, ReconSource
from sn2n_live.sim import OTFModel, SIMCalibration, WienerReconstructor, estimate_calibration
from sn2n_live.simulation import DEFAULT_PSF_SIGMA_PX

RECON_STORE = "recon.ome.zarr"
SIM_DIM = "sim"
# Sets a "save" reconstruction may hold while its worker is busy.
_SAVE_QUEUE = 4


@dataclass(frozen=True)
class ReconOptions:
    """What a live reconstruction does (from a profile's ``[reconstruction]``).

    Attributes
    ----------
    save : bool
        Also write every set it reconstructs to ``recon.ome.zarr`` (else preview only).
    source : ReconSource
        Reconstruct the denoised or the raw frames.
    otf : OTFModel
        The detection OTF.
    wiener : float
        The Wiener parameter.
    calibration : SIMCalibration, optional
        A saved calibration; None estimates one from ``calibration_sets`` raw sets.
    calibration_sets : int
        Complete raw sets pooled for the estimate.
    """

    save: bool
    source: ReconSource
    otf: OTFModel
    wiener: float = 0.05
    calibration: SIMCalibration | None = None
    calibration_sets: int = 4


def profile_otf(settings: Any, microscope_kind: str) -> OTFModel | None:
    """Return the OTF a profile's ``[reconstruction]`` states (the simulator's on it)."""
    if settings.na is not None:
        return OTFModel(
            kind="ideal",
            na=settings.na,
            wavelength_nm=settings.wavelength_nm,
            pixel_nm=settings.pixel_nm,
        )
    if settings.psf_sigma_px is not None:
        return OTFModel(kind=settings.psf, psf_sigma_px=settings.psf_sigma_px)
    if microscope_kind == "simulated":
        return OTFModel(kind="gaussian", psf_sigma_px=DEFAULT_PSF_SIGMA_PX)
    return None


def recon_options(profile: Any) -> ReconOptions | None:
    """Return the live reconstruction a :class:`~sn2n_live.profiles.Profile` asks for."""
    rec = profile.reconstruction
    if rec.live == "off":
        return None
    otf = profile_otf(rec, str(profile.microscope.kind))
    assert otf is not None  # the profile's validator requires one off the simulator
    calibration = None if rec.calibration is None else SIMCalibration.load(rec.calibration)
    return ReconOptions(
        save=rec.live == "save",
        source=ReconSource(rec.source),
        otf=otf,
        wiener=rec.wiener,
        calibration=calibration,
        calibration_sets=rec.calibration_sets,
    )


@dataclass(frozen=True)
class LatestRecon:
    """The newest reconstruction of a live run.

    Attributes
    ----------
    set_number : int
        Which set of the run (its position in the stores' set order).
    image : numpy.ndarray
        ``(2H, 2W)`` float32, in the frames' units.
    source : str
        ``"raw"`` or ``"denoised"``.
    compute_ms : float
        How long the reconstruction took.
    made_at : float
        ``time.perf_counter()`` when it was ready (in the process that took it).
    gen : int
        Its generation in process mode's shared slot (0 in thread mode).
    """

    set_number: int
    image: np.ndarray
    source: str
    compute_ms: float
    made_at: float = field(default_factory=time.perf_counter)
    gen: int = 0


class _SetCollector:
    """Gather the frames of one SIM set as they come; hand the set on when complete."""

    def __init__(self, n_angles: int, n_phases: int) -> None:
        self.n_phases = n_phases
        self.size = n_angles * n_phases
        self._number: int | None = None
        self._frames: list[np.ndarray | None] = [None] * self.size

    def add(self, set_number: int, place: int, image: np.ndarray) -> np.ndarray | None:
        if set_number != self._number:
            self._number, self._frames = set_number, [None] * self.size
        self._frames[place] = image
        if any(f is None for f in self._frames):
            return None
        frames = np.stack(self._frames)  # type: ignore[arg-type]
        self._number, self._frames = None, [None] * self.size
        return frames


class ReconStore:
    """``recon.ome.zarr``: one 2x image per set, in the run's set order (gaps skipped)."""

    def __init__(
        self,
        path: Path,
        dims: list[tuple[str, int | None, str]],
        shape: tuple[int, int],
        pixel_size_um: float | None,
        metadata: Mapping[str, Any],
    ) -> None:
        scale: dict[str, Any] = {}
        if pixel_size_um:
            scale = {"unit": "micrometer", "scale": float(pixel_size_um) / 2.0}
        dimensions = [Dimension(name=n, count=c, type=t) for n, c, t in dims]  # type: ignore[arg-type]
        if not dimensions:
            dimensions = [Dimension(name="t", count=None, type="time")]
        dimensions += [
            Dimension(name="y", count=2 * shape[0], type="space", **scale),
            Dimension(name="x", count=2 * shape[1], type="space", **scale),
        ]
        self.path = path
        self._stream = create_stream(
            AcquisitionSettings(
                root_path=str(path),
                dimensions=dimensions,
                dtype="float32",
                format={"name": "ome-zarr", "backend": "zarr-python"},
                overwrite=False,
            )
        )
        self._stream.set_global_metadata("sn2n_live", {"role": "recon", **metadata})
        self._next = 0
        self.written = 0

    def write(self, set_number: int, image: np.ndarray) -> None:
        """Append the set's image; sets before it that never came are skipped (zeros)."""
        if set_number < self._next:
            return
        if set_number > self._next:
            self._stream.skip(frames=set_number - self._next)
        self._stream.append(np.ascontiguousarray(image, dtype=np.float32))
        self._next = set_number + 1
        self.written += 1

    def close(self) -> None:
        """Close the store."""
        self._stream.close()


def set_dims(layout_dims: list[Mapping[str, Any]]) -> tuple[list[tuple[str, Any, str]], int, int]:
    """Return the recon store's dimensions and ``(n_angles, n_phases)`` of a layout.

    Raises
    ------
    ValueError
        If the layout has no SIM axis last (``a`` x ``h`` folded into ``sim``) or has
        positions.
    """
    names = [d["name"] for d in layout_dims]
    if not names or names[-1] != SIM_DIM:
        raise ValueError(
            f"the run's layout ({' x '.join(names) or 'flat'}) has no SIM pattern axis last, "
            "so its frames do not form sets to reconstruct (a run of a profile with [sim])"
        )
    sim = layout_dims[-1]
    sizes = dict(zip(sim.get("keys", []), sim.get("sizes", []), strict=False))
    if set(sizes) != {ANGLE_KEY, PHASE_KEY}:
        raise ValueError(f"the run's SIM axis folds {sorted(sizes)}; expected angle and phase")
    if any(d.get("type") == "position" for d in layout_dims):
        raise ValueError("runs with several stage positions are not reconstructed yet")
    dims = [(d["name"], d.get("count"), d.get("type") or "other") for d in layout_dims[:-1]]
    return dims, int(sizes[ANGLE_KEY]), int(sizes[PHASE_KEY])


class LiveReconstruction:
    """Reconstruct a live run's sets on a worker thread (see the module docstring).

    Parameters
    ----------
    options : ReconOptions
        What to do.
    run_dir : pathlib.Path
        The run folder (``recon.ome.zarr`` goes there with ``options.save``).
    layout : mapping
        The run's layout (``FrameLayout.to_dict()``): sets are its last axis.
    on_ready : callable, optional
        Called with each new :class:`LatestRecon` on the worker thread (process mode
        publishes it to the acquisition process).
    """

    def __init__(
        self,
        options: ReconOptions,
        run_dir: Path,
        layout: Mapping[str, Any],
        on_ready: Callable[[LatestRecon], None] | None = None,
    ) -> None:
        self.options = options
        self._on_ready = on_ready
        self.run_dir = run_dir
        self._dims, n_angles, n_phases = set_dims(list(layout["dims"]))
        self._raw_sets = _SetCollector(n_angles, n_phases)
        self._den_sets = _SetCollector(n_angles, n_phases)
        self._n_angles, self._n_phases = n_angles, n_phases
        self._pool: list[np.ndarray] = []
        self._calibration = options.calibration
        self._reconstructor: WienerReconstructor | None = None
        self._pending: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._store: ReconStore | None = None
        self._pixel_size_um: float | None = None
        self.latest: LatestRecon | None = None
        self.reconstructed = 0
        self.skipped = 0
        self.errors: list[str] = []
        self._compute_ms: list[float] = []
        self._thread = threading.Thread(target=self._run, name="sn2n-recon", daemon=True)
        self._thread.start()

    # -- fed by the writer threads (cheap: a reference, a stack when a set completes) -------

    def offer_raw(self, item: PendingFrame, image: np.ndarray) -> None:
        """Take a raw frame the raw writer saved."""
        if self._pixel_size_um is None:
            self._pixel_size_um = item.meta.get("pixel_size_um") or None
        need_pool = self._calibration is None and len(self._pool) < self.options.calibration_sets
        if self.options.source != ReconSource.RAW and not need_pool:
            return
        # A copy: in process mode the frame lives in a shared ring the camera refills.
        frames = self._collect(self._raw_sets, item, np.array(image, copy=True))
        if frames is None:
            return
        if need_pool:
            self._pool.append(frames)
            if len(self._pool) == self.options.calibration_sets:
                self._submit(-1, np.concatenate(self._pool))  # -1: estimate the calibration
        if self.options.source == ReconSource.RAW:
            self._submit(self._set_number(item), frames)

    def offer_denoised(self, item: PendingFrame, image: np.ndarray) -> None:
        """Take a denoised frame the denoise thread saved."""
        if self.options.source != ReconSource.DENOISED:
            return
        frames = self._collect(self._den_sets, item, image)
        if frames is not None:
            self._submit(self._set_number(item), frames)

    def _set_number(self, item: PendingFrame) -> int:
        assert item.pos is not None
        return item.pos // (self._n_angles * self._n_phases)

    def _collect(
        self, collector: _SetCollector, item: PendingFrame, image: np.ndarray
    ) -> np.ndarray | None:
        if item.pos is None:
            return None
        index = item.event.index
        place = int(index.get(ANGLE_KEY, 0)) * self._n_phases + int(index.get(PHASE_KEY, 0))
        return collector.add(self._set_number(item), place, image)

    def _submit(self, set_number: int, frames: np.ndarray) -> None:
        with self._cond:
            if set_number < 0:
                self._pending.appendleft((set_number, frames))
            elif not self.options.save:
                # The preview wants the newest set only: older ones give way.
                self._pending = collections.deque(j for j in self._pending if j[0] < 0)
                self._pending.append((set_number, frames))
            elif sum(1 for j in self._pending if j[0] >= 0) >= _SAVE_QUEUE:
                self.skipped += 1
            else:
                self._pending.append((set_number, frames))
            self._cond.notify()

    # -- the worker -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                if self._calibration is None and self._pending[0][0] >= 0:
                    # Sets before the calibration: keep the newest, wait for the pool.
                    if self._closing:
                        self.skipped += len(self._pending)
                        return
                    newest = self._pending[-1]
                    self.skipped += len(self._pending) - 1
                    self._pending = collections.deque([newest])
                    self._cond.wait()
                    continue
                set_number, frames = self._pending.popleft()
            try:
                self._work(set_number, frames)
            except Exception as exc:  # recorded in run.json; saving raw never depends on it
                self.errors.append(f"{type(exc).__name__}: {exc}")
                if set_number < 0 or len(self.errors) >= 3:
                    self._give_up()
                    return

    def _work(self, set_number: int, frames: np.ndarray) -> None:
        if set_number < 0:
            self._calibration = estimate_calibration(
                frames,
                self.options.otf,
                n_angles=self._n_angles,
                n_phases=self._n_phases,
                source=f"{self.run_dir}: the first {len(self._pool)} complete raw sets",
            )
            self._calibration.save(self.run_dir / "sim-calibration.json")
            return
        if self._reconstructor is None:
            assert self._calibration is not None
            self._reconstructor = WienerReconstructor(self._calibration, wiener=self.options.wiener)
        started = time.perf_counter()
        image = self._reconstructor(frames)
        ms = (time.perf_counter() - started) * 1e3
        self._compute_ms.append(ms)
        self.latest = LatestRecon(set_number, image, str(self.options.source), round(ms, 2))
        self.reconstructed += 1
        if self._on_ready is not None:
            self._on_ready(self.latest)
        if self.options.save:
            if self._store is None:
                self._store = ReconStore(
                    self.run_dir / RECON_STORE,
                    self._dims,
                    self._reconstructor.shape,
                    self._pixel_size_um,
                    self._metadata(),
                )
            self._store.write(set_number, image)

    def _give_up(self) -> None:
        with self._cond:
            self.skipped += sum(1 for j in self._pending if j[0] >= 0)
            self._pending.clear()

    def _metadata(self) -> dict[str, Any]:
        assert self._calibration is not None
        return {
            "source": str(self.options.source),
            "wiener": self.options.wiener,
            "calibration": self._calibration.model_dump(mode="json"),
        }

    def close(self, timeout: float | None = 60.0) -> None:
        """Finish the queued sets ("save") or drop them ("preview"); close the store."""
        with self._cond:
            self._closing = True
            if not self.options.save:
                self.skipped += sum(1 for j in self._pending if j[0] >= 0)
                self._pending = collections.deque(j for j in self._pending if j[0] < 0)
            self._cond.notify()
        self._thread.join(timeout)
        if self._store is not None:
            self._store.close()

    def summary(self) -> dict[str, Any]:
        """Return what run.json records under ``reconstruction``."""
        ms = np.asarray(self._compute_ms)
        return {
            "live": "save" if self.options.save else "preview",
            "source": str(self.options.source),
            "wiener": self.options.wiener,
            "sets_reconstructed": self.reconstructed,
            "sets_skipped": self.skipped,
            "compute_ms_p50": round(float(np.median(ms)), 2) if ms.size else None,
            "store": RECON_STORE if self._store is not None else None,
            "calibration": None
            if self._calibration is None
            else self._calibration.model_dump(mode="json"),
            "errors": list(self.errors),
        }


# -- offline ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconstructionSummary:
    """What :func:`reconstruct_run` made."""

    path: Path
    sets_written: int
    sets_incomplete: int
    calibration: SIMCalibration
    seconds: float


def reconstruct_run(
    run_dir: str | Path,
    *,
    source: ReconSource | str = ReconSource.DENOISED,
    otf: OTFModel | None = None,
    calibration: SIMCalibration | None = None,
    wiener: float = 0.05,
    calibration_sets: int = 4,
    out: str | Path | None = None,
    save_calibration: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReconstructionSummary:
    """Reconstruct every complete SIM set of a finished run folder.

    Parameters
    ----------
    run_dir : str or Path
        A run folder (run.json, the raw and denoised stores, their journals).
    source : {"denoised", "raw"}
        Which store's frames to reconstruct.
    otf : OTFModel, optional
        The detection OTF; default: the run's profile's ``[reconstruction]``, or the
        simulated microscope's.
    calibration : SIMCalibration, optional
        Default: the run's ``sim-calibration.json`` (a live reconstruction's), else one
        estimated from the first ``calibration_sets`` complete raw sets, pooled.
    wiener : float
        The Wiener parameter.
    out : str or Path, optional
        The store to write; default ``recon.ome.zarr`` (``recon-raw.ome.zarr`` from raw
        frames) in the run folder. It must not exist.
    save_calibration : str or Path, optional
        Also write the calibration used there (JSON), to reuse for later runs.
    progress : callable, optional
        ``progress(done, total)`` after each set.

    Raises
    ------
    ValueError
        If the folder is not a SIM run, its store is missing, no OTF is known, or ``out``
        exists; the message says what to do.
    """
    from sn2n_live.io import open_stack

    started = time.perf_counter()
    run_dir = Path(run_dir)
    source = ReconSource(source)
    try:
        doc = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{run_dir} has no readable run.json ({exc}): is it a run folder?"
        ) from exc
    dims, n_angles, n_phases = set_dims(list((doc.get("layout") or {}).get("dims") or []))
    set_size = n_angles * n_phases
    stores = doc.get("stores") or {}
    target = (
        Path(out)
        if out is not None
        else run_dir / (RECON_STORE if source == ReconSource.DENOISED else "recon-raw.ome.zarr")
    )
    if target.exists():
        raise ValueError(f"{target} exists already; pass another --out or remove it")
    otf = otf or _run_otf(doc)
    frames_of = {role: open_stack(run_dir / stores[role]["path"]) for role in ("raw", str(source))}
    complete = _complete_sets(run_dir, str(source), set_size)
    if not complete:
        raise ValueError(f"{run_dir} holds no complete SIM set of {set_size} {source} frames")
    if calibration is None:
        saved = run_dir / "sim-calibration.json"
        if saved.exists():
            calibration = SIMCalibration.load(saved)
        else:
            raw_complete = _complete_sets(run_dir, "raw", set_size)[:calibration_sets]
            pool = np.concatenate([_read_set(frames_of["raw"], s, set_size) for s in raw_complete])
            calibration = estimate_calibration(
                pool, otf, n_angles=n_angles, n_phases=n_phases,
                source=f"{run_dir}: raw sets {raw_complete}",
            )  # fmt: skip
    if save_calibration is not None:
        calibration.save(save_calibration)
    reconstruct = WienerReconstructor(calibration, wiener=wiener)
    store = ReconStore(
        target,
        dims,
        reconstruct.shape,
        _pixel_size_um(run_dir / stores["raw"]["path"]),
        {
            "source": str(source),
            "wiener": wiener,
            "run": str(run_dir),
            "calibration": calibration.model_dump(mode="json"),
        },
    )
    try:
        for done, number in enumerate(complete, start=1):
            store.write(number, reconstruct(_read_set(frames_of[str(source)], number, set_size)))
            if progress is not None:
                progress(done, len(complete))
    finally:
        store.close()
    n_sets = int(np.prod([c or 0 for _, c, _ in dims])) if dims else len(complete)
    return ReconstructionSummary(
        path=target,
        sets_written=store.written,
        sets_incomplete=max(0, n_sets - len(complete)),
        calibration=calibration,
        seconds=round(time.perf_counter() - started, 3),
    )


def _run_otf(doc: Mapping[str, Any]) -> OTFModel:
    from sn2n_live.profiles import Profile

    profile_doc = doc.get("profile")
    otf = None
    if profile_doc:
        profile = Profile.model_validate(profile_doc)
        otf = profile_otf(profile.reconstruction, str(profile.microscope.kind))
    if otf is None:
        raise ValueError(
            "the run's profile states no detection OTF; pass --psf-sigma PX, or --na, "
            "--wavelength-nm and --pixel-nm"
        )
    return otf


def _complete_sets(run_dir: Path, role: str, set_size: int) -> list[int]:
    counts = collections.Counter(pos // set_size for pos in _journal_positions(run_dir, role))
    return sorted(s for s, n in counts.items() if n == set_size)


def _journal_positions(run_dir: Path, role: str) -> set[int]:
    positions: set[int] = set()
    try:
        lines = (run_dir / f"{role}.frames.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return positions
    for line in lines:
        try:
            pos = json.loads(line).get("pos")
        except (ValueError, AttributeError):
            continue
        if isinstance(pos, int):
            positions.add(pos)
    return positions


def _read_set(stack: Any, set_number: int, set_size: int) -> np.ndarray:
    data = stack.data
    leading = data.shape[:-3]  # the axes before the SIM axis
    index = np.unravel_index(set_number, leading) if leading else ()
    frames = np.asarray(data[(*index, slice(None))], dtype=np.float32)
    return frames.reshape(set_size, *data.shape[-2:])


def _pixel_size_um(store: Path) -> float | None:
    try:
        ome = json.loads((store / "zarr.json").read_text())["attributes"]["ome"]
        transform = ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
        return float(transform["scale"][-1])
    except (OSError, KeyError, IndexError, TypeError, ValueError):
        return None
