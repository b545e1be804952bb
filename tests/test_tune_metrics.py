"""The dose tuner's metrics and decisions on synthetic images (fast, no microscope)."""

import math

import numpy as np
import pytest
from scipy import ndimage

from sn2n_live.tune import (
    DosePoint,
    SweepPlan,
    Targets,
    TuneError,
    bleaching_rate,
    break_point,
    frc,
    lowest_stable,
    profile_with_dose,
    psnr,
    register,
    shift_image,
    snr_db,
    twin_frc_resolution,
)


def _structure(shape=(256, 256), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros(shape)
    image[rng.integers(0, shape[0], 400), rng.integers(0, shape[1], 400)] = 1.0
    return ndimage.gaussian_filter(image, 1.5, mode="wrap") * 100


def test_frc_of_an_image_with_itself_is_one_and_of_independent_noise_near_zero():
    rng = np.random.default_rng(1)
    image = _structure() + rng.normal(0, 1, (256, 256))
    same = frc(image, image)
    assert np.allclose(same.correlation, 1.0)
    assert same.resolution_px() == pytest.approx(2.0)  # never below: limited by Nyquist
    noise = frc(rng.normal(size=(256, 256)), rng.normal(size=(256, 256)))
    # The first rings hold a few pixels each (their FRC scatters as 1/sqrt(n)); beyond,
    # independent noise correlates to ~0 and the "resolution" is tens of pixels at best.
    assert abs(noise.correlation[10:].mean()) < 0.02
    assert abs(noise.correlation[64:]).mean() < 0.06
    assert noise.resolution_px() > 40
    assert noise.frequency[0] > 0 and noise.frequency[-1] == pytest.approx(0.5)


def test_frc_resolution_grows_with_gaussian_blur():
    rng = np.random.default_rng(2)
    truth = _structure()
    resolutions = []
    for sigma in (1.0, 2.0, 4.0):
        blurred = ndimage.gaussian_filter(truth, sigma, mode="wrap")
        a = blurred + rng.normal(0, 0.5, truth.shape)
        b = blurred + rng.normal(0, 0.5, truth.shape)
        resolutions.append(frc(a, b).resolution_px())
    assert resolutions[0] < resolutions[1] < resolutions[2], resolutions


def test_twin_frc_is_in_frame_pixels():
    rng = np.random.default_rng(3)
    clean = ndimage.gaussian_filter(_structure((512, 512)), 2.0, mode="wrap")
    frame = rng.poisson(clean + 5).astype(float)
    twin = twin_frc_resolution(frame)
    a = rng.poisson(clean + 5).astype(float)
    full = frc(frame, a).resolution_px()
    # Twins sample every other pixel: at best 4 frame px; the same order as a full pair.
    assert 4.0 <= twin < 3 * full, (twin, full)


def test_snr_rises_with_signal():
    rng = np.random.default_rng(4)
    clean = _structure()
    low = [snr_db(clean * 0.1 + rng.normal(0, 1, clean.shape)) for _ in range(2)]
    high = snr_db(clean + rng.normal(0, 1, clean.shape))
    assert high > max(low) + 10
    a, b = (clean + rng.normal(0, 1, clean.shape) for _ in range(2))
    expected = 10 * math.log10(clean.var() / 1.0)
    assert snr_db(a, b) == pytest.approx(expected, abs=0.5)


def test_registration_recovers_a_subpixel_shift():
    truth = _structure((256, 256), seed=5)
    moved = ndimage.shift(truth, (3.37, -1.62), order=3, mode="wrap")
    rng = np.random.default_rng(6)
    shift = register(moved + rng.normal(0, 1, truth.shape), truth)
    assert shift == pytest.approx((-3.37, 1.62), abs=0.1)
    back = shift_image(moved, shift)
    assert psnr(back[16:-16, 16:-16], truth[16:-16, 16:-16]) > 35


def test_bleaching_rate_recovers_an_exponential_decay():
    doses = np.full(20, 2.0)
    before = np.concatenate([[0.0], np.cumsum(doses)[:-1]])
    intensities = 50 * doses * np.exp(-0.01 * before)
    fit = bleaching_rate(doses, intensities)
    assert fit.rate_per_dose == pytest.approx(0.01, rel=1e-6)
    assert fit.remaining == pytest.approx(math.exp(-0.01 * 40))
    assert bleaching_rate(doses, 3 * doses).rate_per_dose == pytest.approx(0.0, abs=1e-12)


def _points(doses):
    return [DosePoint(d, 100.0, d, d / 100) for d in doses]


def test_lowest_stable_and_break_point():
    points = _points([1, 2, 5, 10])
    assert lowest_stable(points, [False, True, True, True]) == points[1]
    assert lowest_stable(points, [True, False, True, True]) == points[2]  # a lucky low dose
    assert lowest_stable(points, [True, True, True, False]) is None
    assert break_point(points, [20, 25, 31, 35], [22, 26, 30, 33]) == points[2]
    assert break_point(points, [20, 25, 29, 32], [22, 26, 30, 33]) is None


def test_plan_doses_sorted_unique_and_relative():
    plan = SweepPlan(exposures_ms=(10, 5, 2), powers_percent=(50, 100))
    doses = [p.dose for p in plan.doses]
    assert doses == sorted(doses) and len(doses) == 5  # 5 ms @ 100 % == 10 ms @ 50 %
    assert plan.doses[-1].relative == pytest.approx(10 / 200)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"exposures_ms": ()}, ["exposures_ms is empty", "--exposures"]),
        ({"exposures_ms": (-1.0,)}, ["exposures_ms", "-1.0", "--exposures"]),
        ({"powers_percent": (150.0,)}, ["powers_percent", "150", "--powers"]),
        ({"repeats": 1}, ["repeats", "2..100", "--repeats"]),
        ({"reference_exposure_ms": 5.0}, ["reference dose", "--reference-exposure"]),
    ],
)
def test_bad_plans_say_what_and_how_to_fix(kwargs, words):
    with pytest.raises(TuneError) as info:
        SweepPlan(**kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"min_psnr_db": float("nan")}, "--min-psnr"),
        ({"max_risk_fraction": 2.0}, "--max-risk"),
        ({"resolution_tolerance": -0.1}, "--resolution-tolerance"),
    ],
)
def test_bad_targets_name_their_flag(kwargs, flag):
    with pytest.raises(TuneError, match=flag):
        Targets(**kwargs)


def test_profile_with_dose_changes_only_the_camera_lines():
    text = (
        'name = "x"\n\n[camera]\nexposure_ms = 10.0  # low light\nlaser_power_percent = 100.0\n'
        "\n[sim]\nexposure_ms = 3\n"
    )
    out = profile_with_dose(text, DosePoint(5.0, 30.0, 1.5, 0.1))
    assert "[camera]\nexposure_ms = 5  # low light\nlaser_power_percent = 30\n" in out
    assert "[sim]\nexposure_ms = 3\n" in out
    added = profile_with_dose('name = "x"\n', DosePoint(5.0, 30.0, 1.5, 0.1))
    assert added.endswith("[camera]\nexposure_ms = 5\nlaser_power_percent = 30\n")
