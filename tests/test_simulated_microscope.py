"""The simulated SIM microscope (Python devices in a UniMMCore) and the demo core."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import useq
from pymmcore_plus import CMMCorePlus
from scipy import ndimage

from sn2n_live.acquisition._simulated import (
    DEFAULT_BLEACH_RATE_PER_MS,
    SimulatedMicroscope,
    create_demo_core,
    create_simulated_microscope,
    release_core,
)
from sn2n_live.config._sim_plan import SIMPlan
from sn2n_live.simulation import SimulatedSample, simulate_sim_frames

SHAPE = (256, 256)
OFFSET = 100.0  # CameraModel's default offset


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Frames = list[tuple[np.ndarray, useq.MDAEvent, dict]]


def record(core: CMMCorePlus) -> Frames:
    frames: Frames = []
    core.mda.events.frameReady.connect(
        lambda img, event, meta: frames.append((img.copy(), event, meta))
    )
    return frames


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_scope(clock: FakeClock) -> Iterator[Callable[..., SimulatedMicroscope]]:
    made: list[SimulatedMicroscope] = []

    def make(**kwargs: object) -> SimulatedMicroscope:
        kwargs = {"shape": SHAPE, "clock": clock, "realtime": False, **kwargs}
        made.append(create_simulated_microscope(**kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for core in made:
        release_core(core)


def snap_mean_signal(core: SimulatedMicroscope, n: int = 2) -> float:
    total = 0.0
    for _ in range(n):
        core.snapImage()
        total += float(core.getImage().mean()) - OFFSET
    return total / n


def sim_run(core: SimulatedMicroscope, plan: SIMPlan) -> Frames:
    frames = record(core)
    events = plan.expand(
        useq.MDASequence(time_plan={"interval": 0, "loops": 1}),
        slm_shape=(core.getSLMHeight(), core.getSLMWidth()),
    )
    core.mda.run(events, output="memory")
    return frames


def test_devices_and_defaults(make_scope: Callable[..., SimulatedMicroscope]) -> None:
    core = make_scope()
    assert core.getCameraDevice() == "Camera" and core.getSLMDevice() == "SLM"
    assert (core.getImageHeight(), core.getImageWidth()) == SHAPE
    assert (core.getSLMHeight(), core.getSLMWidth()) == SHAPE
    assert core.getExposure() == 10.0 and not core.getAutoShutter()
    assert float(core.getProperty("Laser", "Power")) == 100.0
    assert (
        core.getPropertyLowerLimit("Laser", "Power"),
        core.getPropertyUpperLimit("Laser", "Power"),
    ) == (0, 100)
    with pytest.raises(ValueError, match="allowed range"):
        core.setProperty("Laser", "Power", 150)
    # Genuinely low light by default: 20 in-focus photons at the brightest point, 10 ms,
    # 100 %; the empty background gets the flat 2 % autofluorescence, 0.4 photons.
    assert core.expected_adu().min() == pytest.approx(OFFSET + 0.4, abs=0.01)
    in_focus = make_scope(haze_fraction=0.0, background_fraction=0.0)
    assert in_focus.expected_adu().max() == pytest.approx(OFFSET + 20.0, rel=1e-4)


def test_sim_plan_run_gives_one_frame_per_pattern(
    make_scope: Callable[..., SimulatedMicroscope],
) -> None:
    core = make_scope()
    frames = sim_run(core, SIMPlan())
    assert len(frames) == 9
    assert all(img.dtype == np.uint16 and img.shape == SHAPE for img, _, _ in frames)
    assert [(e.index["a"], e.index["h"]) for _, e, _ in frames] == [
        (a, h) for a in range(3) for h in range(3)
    ]
    assert all(e.metadata["sim"]["set_size"] == 9 for _, e, _ in frames)
    view = core.mda.get_view()
    assert view is not None and view.shape == (9, *SHAPE)


def formed_photons(sample: SimulatedSample, excitation: np.ndarray, scale: float) -> np.ndarray:
    """PSF (*) (density x excitation) + haze + background, written with ndimage."""

    def blur(image: np.ndarray, sigma: float) -> np.ndarray:
        return ndimage.gaussian_filter(image, sigma, mode="grid-wrap", truncate=8.0)

    density = sample.structure.astype(np.float64)
    norm = blur(density, sample.psf_sigma_px).max()
    level = excitation.mean()
    haze = sample.haze_fraction * level * blur(density, sample.haze_sigma_px)
    in_focus = blur(density * excitation, sample.psf_sigma_px)
    return scale * ((in_focus + haze) / norm + sample.background_fraction * level)


def test_patterns_modulate_frames_and_sum_out_over_phases(
    make_scope: Callable[..., SimulatedMicroscope],
) -> None:
    # Bright enough that noise is small against the pattern modulation; a coarse period
    # keeps the stripes' image contrast (OTF 0.5) well above the noise.
    core = make_scope(photons_per_ms=100.0, kind="filaments")
    core.setSLMPixelsTo(255)
    core.displaySLMImage()
    widefield = core.expected_adu() - OFFSET  # time is frozen, so this holds for every frame
    np.testing.assert_allclose(
        widefield, formed_photons(core.sample, np.ones(SHAPE), 1000.0), rtol=1e-4, atol=1e-3
    )

    plan = SIMPlan(period_px=8.0)
    frames = sim_run(core, plan)
    raw = np.stack([img for img, _, _ in frames]).astype(np.float64).reshape(3, 3, *SHAPE) - OFFSET
    patterns = plan.slm_patterns(SHAPE).astype(np.float64) / 255.0
    # (a, h, H, W) expected signal of each frame: the stripes excite the sharp density,
    # then the PSF blurs both (not the blurred sample times the stripes).
    expected = np.stack(
        [[formed_photons(core.sample, pattern, 1000.0) for pattern in angle] for angle in patterns]
    )
    noise = np.sqrt(expected + core.camera_model.read_noise_e**2)

    # Each frame matches its own pattern within the noise, and not any other pattern.
    for a in range(3):
        for h in range(3):
            own = np.sqrt(np.mean((raw[a, h] - expected[a, h]) ** 2 / noise[a, h] ** 2))
            assert own < 1.1, (a, h, own)
            for b in range(3):
                for g in range(3):
                    if (b, g) != (a, h):
                        other = np.sqrt(
                            np.mean((raw[a, h] - expected[b, g]) ** 2 / noise[b, g] ** 2)
                        )
                        assert other > 1.5 * own, (a, h, b, g)

    # The mean over phases is widefield at the patterns' mean level (0.5): the
    # modulation sums out, while single frames are far from it (less far than unblurred
    # stripes would be: the PSF halves their contrast at this period).
    level = patterns.mean()
    mean_noise = np.sqrt(np.mean(noise**2, axis=1) / 3)
    for a in range(3):
        residual = (raw[a].mean(axis=0) - level * widefield) / mean_noise[a]
        assert np.sqrt(np.mean(residual**2)) < 1.1
        single = (raw[a, 0] - level * widefield) / mean_noise[a]
        assert np.sqrt(np.mean(single**2)) > 3


def test_noise_free_frames_match_simulate_sim_frames(
    make_scope: Callable[..., SimulatedMicroscope],
) -> None:
    core = make_scope(seed=3, kind="mixed", photons_per_ms=3.0)
    plan = SIMPlan()
    illumination = plan.illumination()
    # The same seed draws the same sample; the photon scales agree when `photons` is the
    # microscope's full-illumination scale at the pattern peak.
    frames = simulate_sim_frames(
        SHAPE,
        photons=3.0 * 10.0 * illumination.peak,
        kind="mixed",
        seed=3,
        illumination=illumination,
    )
    for a, angle in enumerate(plan.slm_patterns(SHAPE)):
        for h, pattern in enumerate(angle):
            core.setSLMImage(pattern)
            core.displaySLMImage()
            # Only the SLM's 8-bit rounding of the pattern differs.
            np.testing.assert_allclose(
                core.expected_adu(), frames.clean[0, a, h], rtol=2e-3, atol=0.01
            )


def test_laser_power_scales_signal(make_scope: Callable[..., SimulatedMicroscope]) -> None:
    core = make_scope(bleach_rate_per_ms=0)  # the snaps would bleach the truth compared
    full = snap_mean_signal(core)
    full_truth = core.expected_adu() - OFFSET
    core.setProperty("Laser", "Power", 50)
    half = snap_mean_signal(core)
    np.testing.assert_allclose(core.expected_adu() - OFFSET, full_truth / 2, rtol=1e-5, atol=1e-4)
    assert half / full == pytest.approx(0.5, abs=0.03)
    core.setProperty("Laser", "Power", 0)
    assert abs(snap_mean_signal(core)) < 0.05


def test_exposure_scales_signal(make_scope: Callable[..., SimulatedMicroscope]) -> None:
    core = make_scope()
    core.setExposure(5.0)
    short = snap_mean_signal(core)
    core.setExposure(20.0)
    long = snap_mean_signal(core)
    assert long / short == pytest.approx(4.0, rel=0.05)


def test_drift_moves_the_sample_with_the_clock(
    make_scope: Callable[..., SimulatedMicroscope], clock: FakeClock
) -> None:
    # No bleaching: the early snap would dim the late truth compared with the early one.
    core = make_scope(photons_per_ms=50.0, drift_px_per_s=(0.3, 0.2), bleach_rate_per_ms=0)
    assert core.elapsed_s() == 0.0
    early_truth = core.expected_adu()
    core.snapImage()
    early = core.getImage().astype(np.float64)

    clock.now += 10.0  # 3 px down, 2 px right
    assert core.elapsed_s() == pytest.approx(10.0)
    late_truth = core.expected_adu()
    core.snapImage()
    late = core.getImage().astype(np.float64)

    np.testing.assert_allclose(late_truth, np.roll(early_truth, (3, 2), axis=(0, 1)), atol=0.5)

    def corr(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])

    assert corr(late, late_truth) > corr(late, early_truth) + 0.1
    assert corr(early, early_truth) > corr(early, late_truth) + 0.1


def test_same_seed_and_clock_give_identical_frames(
    make_scope: Callable[..., SimulatedMicroscope],
) -> None:
    a, b, c = make_scope(seed=3), make_scope(seed=3), make_scope(seed=4)
    snaps = []
    for core in (a, b, c):
        core.snapImage()
        snaps.append(core.getImage().copy())
    np.testing.assert_array_equal(snaps[0], snaps[1])
    assert not np.array_equal(snaps[0], snaps[2])


def test_hardware_sequenced_burst(make_scope: Callable[..., SimulatedMicroscope]) -> None:
    core = make_scope()
    frames = record(core)
    core.mda.engine.use_hardware_sequencing = True
    core.mda.run(useq.MDASequence(time_plan={"interval": 0, "loops": 10}))
    assert len(frames) == 10
    assert all(meta.get("hardware_triggered") for _, _, meta in frames)
    assert [e.index["t"] for _, e, _ in frames] == list(range(10))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (128, 128)}, "256..2048"),
        ({"shape": (256, 4096)}, "256..2048"),
        ({"shape": (256,)}, "256..2048"),
        ({"photons_per_ms": 0.0}, "photons_per_ms"),
        ({"photons_per_ms": float("inf")}, "photons_per_ms"),
        ({"drift_px_per_s": (1.0,)}, "drift_px_per_s"),
    ],
)
def test_invalid_microscopes_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_simulated_microscope(**kwargs)


@pytest.fixture
def demo_core() -> Iterator[CMMCorePlus]:
    core = create_demo_core()
    core.setExposure(1.0)
    yield core
    release_core(core)


def test_demo_core_runs_a_metadata_plan(demo_core: CMMCorePlus) -> None:
    assert demo_core.getCameraDevice() == "Camera" and not demo_core.getSLMDevice()
    frames = record(demo_core)
    demo_core.mda.engine.use_hardware_sequencing = False
    plan = SIMPlan(n_phases=5, pattern_source="metadata")
    demo_core.mda.run(plan.expand(useq.MDASequence(channels=["DAPI"])))
    assert len(frames) == 15
    for k, (img, event, meta) in enumerate(frames):
        assert img.shape == (512, 512)
        assert event.metadata["sim"]["angle"] == k // 5 and event.metadata["sim"]["phase"] == k % 5
        assert meta["mda_event"].metadata["sim"] == event.metadata["sim"]


def test_demo_core_hardware_sequencing(demo_core: CMMCorePlus) -> None:
    frames = record(demo_core)
    demo_core.mda.engine.use_hardware_sequencing = True
    demo_core.mda.run(useq.MDASequence(time_plan={"interval": 0, "loops": 20}, channels=["DAPI"]))
    assert len(frames) == 20
    assert all(meta["hardware_triggered"] for _, _, meta in frames)

    # A metadata-only SIM plan merges into bursts too, each frame keeping its indices.
    frames.clear()
    plan = SIMPlan(pattern_source="metadata")
    demo_core.mda.run(
        plan.expand(useq.MDASequence(time_plan={"interval": 0, "loops": 2}, channels=["DAPI"]))
    )
    assert len(frames) == 18
    assert all(meta["hardware_triggered"] for _, _, meta in frames)
    assert [(e.index["t"], e.index["a"], e.index["h"]) for _, e, _ in frames] == [
        (t, a, h) for t in range(2) for a in range(3) for h in range(3)
    ]


# -- photobleaching ---------------------------------------------------------------------


def _sim_snaps(core: SimulatedMicroscope, n_sets: int) -> list[float]:
    """Snap ``n_sets`` full SIM sets; return each set's mean expected signal (truth)."""
    patterns = SIMPlan().slm_patterns(SHAPE).reshape(-1, *SHAPE)
    means = []
    for _ in range(n_sets):
        total = 0.0
        for pattern in patterns:
            core.setSLMImage(pattern)
            core.displaySLMImage()
            total += float(core.expected_adu().mean()) - OFFSET
            core.snapImage()
        means.append(total / len(patterns))
    return means


def test_bleaching_decays_with_dose_and_not_without_rate(
    make_scope: Callable[..., SimulatedMicroscope],
) -> None:
    core = make_scope(kind="mitochondria")
    assert core.bleach_rate_per_ms == 3.5e-4
    assert core.bleached_fraction == 1.0 and core.delivered_dose == 0.0
    means = _sim_snaps(core, 4)
    assert all(b < a for a, b in itertools.pairwise(means))
    # 36 snaps of 10 ms at 100 %; the mean pixel saw half (patterns of mean 0.5).
    assert core.delivered_dose == pytest.approx(360.0)
    assert float(core.dose_map().mean()) == pytest.approx(180.0, rel=0.01)
    assert core.bleached_fraction == pytest.approx(np.exp(-3.5e-4 * 180.0), abs=0.01)
    # The truth includes the bleaching: a snap's mean matches it.
    core.snapImage()
    assert float(core.getImage().mean()) - OFFSET == pytest.approx(
        float(core.expected_adu().mean()) - OFFSET, rel=0.02
    )

    steady = make_scope(kind="mitochondria", bleach_rate_per_ms=0)
    flat = _sim_snaps(steady, 3)
    assert flat[0] == pytest.approx(flat[-1], rel=1e-6)
    assert steady.bleached_fraction == 1.0 and steady.delivered_dose == pytest.approx(270.0)


def test_a_tuning_sweep_bleaches_visibly_but_not_totally() -> None:
    # 6 doses x 3 repeats x 9 SIM frames of 10 ms at full power, in one field.
    for kind, rate in DEFAULT_BLEACH_RATE_PER_MS.items():
        remaining = np.exp(-rate * 6 * 3 * 9 * 10.0 * 0.5)
        assert 0.7 <= remaining <= 0.9, kind


def test_bleaching_is_faster_with_more_power_and_longer_exposure(
    make_scope: Callable[..., SimulatedMicroscope],
) -> None:
    def loss(**settings: float) -> float:
        core = make_scope(bleach_rate_per_ms=1e-3)
        core.setExposure(settings.get("exposure", 10.0))
        core.setProperty("Laser", "Power", settings.get("power", 100.0))
        for _ in range(10):
            core.snapImage()
        return 1.0 - core.bleached_fraction

    base, weak, long = loss(), loss(power=25.0), loss(exposure=40.0)
    assert 0 < weak < base < long
    assert base == pytest.approx(1 - np.exp(-1e-3 * 100), rel=1e-4)  # widefield: uniform
    assert weak == pytest.approx(1 - np.exp(-1e-3 * 25), rel=1e-4)


def test_sim_stripes_bleach_where_they_illuminate(
    make_scope: Callable[..., SimulatedMicroscope],
) -> None:
    core = make_scope(bleach_rate_per_ms=5e-3)
    pattern = SIMPlan().slm_patterns(SHAPE)[0, 0]
    core.setSLMImage(pattern)
    core.displaySLMImage()
    for _ in range(20):
        core.snapImage()
    remaining = core.remaining_map()
    bright, dark = pattern > 200, pattern < 55
    assert remaining[bright].mean() < remaining[dark].mean() - 0.1
    lit = pattern.astype(np.float64) / 255.0
    np.testing.assert_allclose(remaining, np.exp(-5e-3 * 200.0 * lit), rtol=1e-4)
    # Under uniform light afterwards, the frame shows the stripes burnt in.
    core.setSLMImage(np.full(SHAPE, 255, np.uint8))
    core.displaySLMImage()
    truth = core.expected_adu() - OFFSET
    ratio = truth / (core.sample.image(core.elapsed_s(), None, scale=20.0)).clip(1e-3)
    structure = core.sample.blurred > 0.3
    assert ratio[structure & bright].mean() < ratio[structure & dark].mean() - 0.03


def test_reset_bleaching_and_new_field_restore(
    make_scope: Callable[..., SimulatedMicroscope],
) -> None:
    core = make_scope(bleach_rate_per_ms=1e-3)
    fresh = core.expected_adu()
    for _ in range(5):
        core.snapImage()
    assert core.bleached_fraction < 0.99
    core.reset_bleaching()
    assert core.bleached_fraction == 1.0 and core.delivered_dose == 0.0
    np.testing.assert_array_equal(core.expected_adu(), fresh)

    for _ in range(5):
        core.snapImage()
    old_structure = core.sample.structure.copy()
    core.new_field(7)
    assert core.bleached_fraction == 1.0 and core.delivered_dose == 0.0
    assert core.sample.seed == 7 and core.sample.kind == "mixed"
    assert not np.array_equal(core.sample.structure, old_structure)
    other = make_scope(seed=7, bleach_rate_per_ms=1e-3)
    np.testing.assert_allclose(core.expected_adu(), other.expected_adu(), rtol=1e-6)


@pytest.mark.parametrize("rate", [-1e-4, float("nan"), "fast"])
def test_invalid_bleach_rates_are_rejected(rate: object) -> None:
    with pytest.raises(ValueError, match="bleach_rate_per_ms must be a finite number >= 0"):
        create_simulated_microscope(shape=SHAPE, bleach_rate_per_ms=rate)  # type: ignore[arg-type]
