from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from sn2n_live.simulation._camera import CameraModel
from sn2n_live.simulation._frames import SimulatedFrames, simulate_sim_frames
from sn2n_live.simulation._optics import (
    DEFAULT_PERIOD_PX,
    DEFAULT_PSF_SIGMA_PX,
    SIMIllumination,
    otf,
    otf_cutoff,
    psf_blur,
)
from sn2n_live.simulation._sample import SimulatedSample
from sn2n_live.simulation._structures import (
    STRUCTURE_KINDS,
    make_structure_layers,
    make_structures,
)

# --- structures ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", STRUCTURE_KINDS)
def test_structures_are_nonempty_float32_in_unit_range(kind):
    image = make_structures((64, 96), kind=kind, seed=3)
    assert image.shape == (64, 96)
    assert image.dtype == np.float32
    assert image.min() >= 0.0
    assert image.max() == 1.0
    assert (image > 0.05).mean() > 0.02


@pytest.mark.parametrize("kind", STRUCTURE_KINDS)
def test_structures_are_deterministic_per_seed(kind):
    a = make_structures((80, 80), kind=kind, seed=11)
    b = make_structures((80, 80), kind=kind, seed=11)
    c = make_structures((80, 80), kind=kind, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("seed", range(5))
def test_mixed_leaves_a_large_empty_background(seed):
    image = make_structures((256, 256), kind="mixed", seed=seed)
    assert (image == 0).mean() >= 0.4
    # Not just gaps between thin lines: a big region far from any structure.
    far = ndimage.distance_transform_edt(image == 0) > 8
    assert far.mean() >= 0.4
    tiles = image.reshape(4, 64, 4, 64).max(axis=(1, 3))
    assert (tiles == 0).sum() >= 1


def _components(image, threshold=0.2):
    labels, _ = ndimage.label(image > threshold)
    slices = ndimage.find_objects(labels)
    return [max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in slices]


def test_structure_kinds_have_their_morphology():
    for seed in range(3):
        filaments = _components(make_structures((128, 128), kind="filaments", seed=seed))
        mitochondria = _components(make_structures((128, 128), kind="mitochondria", seed=seed))
        puncta = _components(make_structures((128, 128), kind="puncta", seed=seed))
        assert max(filaments) >= 96  # long filaments cross most of the field
        assert np.median(mitochondria) >= 10 and max(mitochondria) <= 80  # short worms
        assert max(puncta) <= 10  # small dots
        assert len(puncta) >= 20


def test_structures_work_at_the_minimum_and_non_square_sizes():
    for kind in STRUCTURE_KINDS:
        for shape in ((16, 16), (16, 200), (200, 24)):
            image = make_structures(shape, kind=kind, seed=0)
            assert image.shape == shape
            assert image.max() == 1.0


# --- PSF and drifting sample --------------------------------------------------------


def test_psf_blur_is_gaussian_with_requested_sigma_and_max_one():
    dot = np.zeros((64, 64))
    dot[32, 32] = 0.3
    blurred = psf_blur(dot, 2.0)
    assert blurred.dtype == np.float32
    assert blurred.max() == 1.0
    profile = blurred.sum(axis=0).astype(np.float64)
    x = np.arange(64)
    mean = (profile * x).sum() / profile.sum()
    var = (profile * (x - mean) ** 2).sum() / profile.sum()
    assert mean == pytest.approx(32.0, abs=1e-6)
    assert var == pytest.approx(4.0, rel=0.01)


def test_sample_at_zero_is_the_normalized_blurred_structure():
    sample = SimulatedSample((64, 80), kind="filaments", psf_sigma_px=1.5, seed=4)
    field = sample.at(0.0)
    assert field.shape == (64, 80)
    assert field.dtype == np.float32
    assert field.max() == 1.0
    assert field.min() >= 0.0
    expected = psf_blur(make_structures((64, 80), kind="filaments", seed=4), 1.5)
    np.testing.assert_array_equal(field, expected)
    np.testing.assert_array_equal(
        sample.structure, make_structures((64, 80), kind="filaments", seed=4)
    )


def test_drift_translates_by_the_requested_subpixel_amount():
    drift = (0.3, -0.7)
    sample = SimulatedSample((128, 128), kind="filaments", drift_px_per_s=drift, seed=2)
    for time_s in (1.0, 2.5):
        # Plain cross-correlation: phase normalization would weight the near-empty
        # high frequencies of the blurred field as much as the signal.
        shift, _, _ = phase_cross_correlation(
            sample.at(0.0), sample.at(time_s), upsample_factor=100, normalization=None
        )
        # phase_cross_correlation returns the shift that registers `moving` back.
        np.testing.assert_allclose(-shift, np.multiply(drift, time_s), atol=0.02)


def test_integer_drift_is_an_exact_periodic_roll():
    sample = SimulatedSample((64, 64), kind="puncta", drift_px_per_s=(2.0, -3.0), seed=1)
    np.testing.assert_allclose(sample.at(1.0), np.roll(sample.at(0.0), (2, -3), (0, 1)), atol=1e-5)


def test_density_drifts_with_the_blurred_sample():
    sample = SimulatedSample(
        (64, 64), kind="mixed", drift_px_per_s=(2.0, -3.0), haze_fraction=0.0, seed=1
    )
    np.testing.assert_allclose(
        sample.density_at(1.0), np.roll(sample.structure, (2, -3), (0, 1)), atol=1e-5
    )
    # Without haze and background, uniform full light images exactly the blurred sample.
    for time_s in (0.0, 0.37):
        np.testing.assert_allclose(
            sample.image(time_s, scale=1.0) - sample.background_fraction,
            sample.at(time_s),
            atol=1e-5,
        )


def test_sample_is_not_mutated_and_is_thread_safe():
    sample = SimulatedSample((64, 64), kind="mixed", drift_px_per_s=(0.4, 0.9), seed=5)
    reference = [sample.at(t) for t in np.linspace(0.0, 3.0, 8)]
    first = sample.at(0.0)
    first[:] = 0.0  # callers own what `at` returns
    with ThreadPoolExecutor(max_workers=4) as pool:
        again = list(pool.map(sample.at, np.linspace(0.0, 3.0, 8)))
    for a, b in zip(reference, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not sample.blurred.flags.writeable


# --- illumination -------------------------------------------------------------------


def test_patterns_shape_range_and_mean():
    ill = SIMIllumination(n_angles=3, n_phases=5, period_px=6.0, modulation=0.9)
    pats = ill.patterns((64, 48))
    assert pats.shape == (3, 5, 64, 48)
    assert pats.dtype == np.float32
    assert pats.min() >= 0.0
    assert pats.max() <= 1.0
    assert pats.max() == pytest.approx(ill.peak, abs=0.01)
    # Equally spaced phases sum to a flat field (widefield) for n_phases >= 3.
    np.testing.assert_allclose(pats.mean(axis=1), 0.5, atol=1e-5)


@pytest.mark.parametrize(("period", "orientation"), [(8.0, 0.0), (5.0, 20.0), (12.0, -35.0)])
def test_patterns_have_the_requested_period_and_angles(period, orientation):
    n = 128
    ill = SIMIllumination(n_angles=3, n_phases=1, period_px=period, orientation_deg=orientation)
    pats = ill.patterns((n, n))
    freqs = np.fft.fftfreq(n)
    for a, theta in enumerate(np.deg2rad(orientation) + np.arange(3) * np.pi / 3):
        spectrum = np.abs(np.fft.fft2(pats[a, 0] - pats[a, 0].mean()))
        iy, ix = np.unravel_index(np.argmax(spectrum), spectrum.shape)
        found = np.array([freqs[iy], freqs[ix]])
        expected = np.array([np.sin(theta), np.cos(theta)]) / period
        # The peak is at +k or -k (real pattern), within one frequency bin.
        err = min(np.abs(found - expected).max(), np.abs(found + expected).max())
        assert err <= 1.0 / n


def test_full_modulation_stays_in_unit_range():
    ill = SIMIllumination(n_angles=4, n_phases=7, period_px=3.3, modulation=1.0, orientation_deg=7)
    pats = ill.patterns((200, 136))
    assert pats.min() >= 0.0
    assert pats.max() <= 1.0
    assert pats.min() < 1e-3
    assert pats.max() > 0.999


def test_phases_shift_the_pattern():
    ill = SIMIllumination(n_angles=2, n_phases=4, period_px=8.0, modulation=0.7)
    pats = ill.patterns((32, 32))
    # Phase p advances the cosine by p/4 of a period = 2p px along x for angle 0.
    for p in range(4):
        np.testing.assert_allclose(pats[0, p], np.roll(pats[0, 0], -2 * p, axis=1), atol=1e-6)
    # Angle 1 (90 degrees) varies along y instead.
    np.testing.assert_allclose(pats[1, 1], np.roll(pats[1, 0], -2, axis=0), atol=1e-6)
    assert not np.allclose(pats[0, 0], pats[0, 1])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_angles": 0},
        {"n_phases": 0},
        {"period_px": 1.5},
        {"modulation": 1.2},
        {"modulation": -0.1},
        {"orientation_deg": float("nan")},
        {"wavelength_nm": 488},
    ],
)
def test_illumination_rejects_bad_fields(kwargs):
    with pytest.raises(ValidationError):
        SIMIllumination(**kwargs)


def test_illumination_is_frozen():
    ill = SIMIllumination()
    with pytest.raises(ValidationError):
        ill.period_px = 4.0


# --- camera -------------------------------------------------------------------------


def test_expected_adu_is_offset_plus_gain_times_photons():
    cam = CameraModel(offset_adu=90.0, gain_adu_per_e=2.5)
    photons = np.array([[0.0, 1.0], [10.0, 4.2]])
    out = cam.expected_adu(photons)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 90.0 + 2.5 * photons, rtol=1e-6)


def test_exposure_mean_and_variance_on_a_flat_field():
    cam = CameraModel(offset_adu=100.0, gain_adu_per_e=2.0, read_noise_e=1.5)
    photons = np.full((256, 256), 50.0)
    raw = cam.expose(photons, np.random.default_rng(0))
    assert raw.dtype == np.uint16
    assert raw.shape == photons.shape
    values = raw.astype(np.float64)
    assert values.mean() == pytest.approx(100.0 + 2.0 * 50.0, rel=0.005)
    expected_var = 2.0**2 * (50.0 + 1.5**2) + 1.0 / 12.0  # + rounding to integer ADU
    assert values.var() == pytest.approx(expected_var, rel=0.03)


def test_exposure_clips_to_the_adc_range_and_is_reproducible():
    cam = CameraModel(offset_adu=0.0, gain_adu_per_e=1.0, read_noise_e=3.0, bit_depth=8)
    photons = np.concatenate([np.zeros(5000), np.full(5000, 1000.0)])
    raw = cam.expose(photons, np.random.default_rng(1))
    assert raw.min() == 0  # negative read noise clips, never wraps around
    assert raw.max() == cam.max_adu == 255
    np.testing.assert_array_equal(raw, cam.expose(photons, np.random.default_rng(1)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gain_adu_per_e": 0.0},
        {"read_noise_e": -1.0},
        {"offset_adu": -5.0},
        {"bit_depth": 17},
        {"bit_depth": 8, "offset_adu": 300.0},
        {"quantum_efficiency": 0.8},
    ],
)
def test_camera_rejects_bad_fields(kwargs):
    with pytest.raises(ValidationError):
        CameraModel(**kwargs)


@pytest.mark.parametrize("photons", [np.array([-1.0, 2.0]), np.array([np.nan]), np.array([np.inf])])
def test_camera_rejects_bad_photons(photons):
    cam = CameraModel()
    with pytest.raises(ValueError, match="photons"):
        cam.expose(photons, np.random.default_rng(0))
    with pytest.raises(ValueError, match="photons"):
        cam.expected_adu(photons)


# --- full SIM frames ----------------------------------------------------------------


def _frames(**kwargs) -> SimulatedFrames:
    args = {"shape": (64, 80), "photons": 30.0, "kind": "filaments", "seed": 7}
    args.update(kwargs)
    return simulate_sim_frames(**args)


def test_frames_shapes_dtypes_and_metadata():
    ill = SIMIllumination(n_angles=2, n_phases=5)
    cam = CameraModel(offset_adu=50.0)
    frames = _frames(n_timepoints=3, illumination=ill, camera=cam)
    assert frames.raw.shape == (3, 2, 5, 64, 80)
    assert frames.raw.dtype == np.uint16
    assert frames.clean.shape == frames.raw.shape
    assert frames.clean.dtype == np.float32
    for truth in (frames.sample, frames.density):
        assert truth.shape == (64, 80)
        assert truth.dtype == np.float32
        assert truth.max() == 1.0
    np.testing.assert_array_equal(
        frames.density, make_structures((64, 80), kind="filaments", seed=7)
    )
    assert frames.photons == 30.0
    assert frames.illumination is ill
    assert frames.camera is cam


def test_frames_are_deterministic_and_seed_dependent():
    a = _frames(n_timepoints=2, drift_px_per_s=(0.5, 0.2))
    b = _frames(n_timepoints=2, drift_px_per_s=(0.5, 0.2))
    c = _frames(n_timepoints=2, drift_px_per_s=(0.5, 0.2), seed=8)
    np.testing.assert_array_equal(a.raw, b.raw)
    np.testing.assert_array_equal(a.clean, b.clean)
    np.testing.assert_array_equal(a.sample, b.sample)
    assert not np.array_equal(a.sample, c.sample)
    noise_a = a.raw.astype(np.float64) - a.clean
    noise_c = c.raw.astype(np.float64) - c.clean
    assert abs(np.corrcoef(noise_a.ravel(), noise_c.ravel())[0, 1]) < 0.05


def _independent_photons(density, excitation, *, scale, sigma, haze, haze_sigma, bg, norm):
    """The documented formation, written with ndimage instead of the OTF grid."""

    def blur(image, width):
        return ndimage.gaussian_filter(image, width, mode="grid-wrap", truncate=8.0)

    level = excitation.mean()
    in_focus = blur(density * excitation, sigma) / norm
    return scale * (in_focus + haze * level * blur(density, haze_sigma) / norm + bg * level)


def test_clean_is_the_psf_blur_of_density_times_pattern_plus_haze_and_background():
    ill = SIMIllumination(n_angles=3, n_phases=3, modulation=0.6)
    cam = CameraModel(offset_adu=100.0, gain_adu_per_e=1.7)
    drift = (0.4, -0.25)
    optics = {"psf_sigma_px": 1.5, "haze_fraction": 0.2, "haze_sigma_px": 6.0}
    frames = _frames(
        n_timepoints=2,
        illumination=ill,
        camera=cam,
        drift_px_per_s=drift,
        frame_interval_s=2.0,
        background_fraction=0.03,
        **optics,
    )
    density = make_structures((64, 80), kind="filaments", seed=7).astype(np.float64)
    norm = ndimage.gaussian_filter(density, 1.5, mode="grid-wrap", truncate=8.0).max()
    pats = ill.patterns((64, 80)).astype(np.float64)
    for t in range(2):
        shift = np.multiply(drift, 2.0 * t)
        moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(density), shift)).real
        for a in range(3):
            for p in range(3):
                photons = _independent_photons(
                    moved,
                    pats[a, p],
                    scale=30.0 / ill.peak,
                    sigma=1.5,
                    haze=0.2,
                    haze_sigma=6.0,
                    bg=0.03,
                    norm=norm,
                )
                np.testing.assert_allclose(
                    frames.clean[t, a, p], 100.0 + 1.7 * photons, rtol=1e-5, atol=1e-4
                )


def test_photons_is_the_in_focus_peak_under_the_pattern_peak_level():
    frames = _frames(illumination=SIMIllumination.widefield(), haze_fraction=0.0)
    in_focus = frames.clean[0, 0, 0] - 100.0 - frames.background_photons
    assert in_focus.max() == pytest.approx(30.0, rel=1e-4)
    # Widefield light of level 0.5 gives photons * sample, exactly.
    np.testing.assert_allclose(in_focus, 30.0 * frames.sample, rtol=1e-4, atol=1e-3)
    assert frames.modulation == 0.0 and frames.image_modulation == 0.0


def _stripe_modulation(image, k):
    """Least-squares fit of mean + stripe at wave vector ``k`` (cycles/px) in the interior.

    The default period does not divide the field, so the periodic blur mixes the two
    sides of the pattern's seam at the edges; 16 px in the PSF has forgotten it.
    """
    h, w = image.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    arg = 2 * np.pi * (k[0] * y + k[1] * x)
    inner = (slice(16, h - 16), slice(16, w - 16))
    design = np.stack([np.ones(image.shape), np.cos(arg), np.sin(arg)], axis=-1)[inner]
    coef, *_ = np.linalg.lstsq(design.reshape(-1, 3), image[inner].ravel(), rcond=None)
    return float(np.hypot(coef[1], coef[2]) / coef[0])


@pytest.mark.parametrize("period", [DEFAULT_PERIOD_PX, 3.0, 6.0, 10.0])
def test_image_modulation_is_excitation_modulation_times_otf(period):
    ill = SIMIllumination(n_angles=2, n_phases=1, period_px=period, orientation_deg=20.0)
    sample = SimulatedSample.from_density(
        np.ones((96, 96)), haze_fraction=0.0, background_fraction=0.0
    )
    expected = ill.modulation * otf(1.0 / period, 1.5)
    assert ill.image_modulation(1.5) == pytest.approx(expected)
    for a, k in enumerate(ill.wavevectors()):
        frame = sample.image(0.0, ill.patterns((96, 96))[a, 0])
        assert _stripe_modulation(frame, k) == pytest.approx(expected, rel=0.02)


def test_haze_and_background_add_their_documented_photons():
    ill = SIMIllumination(n_angles=1, n_phases=1)
    haze, bg, scale = 0.15, 0.02, 50.0
    sample = SimulatedSample.from_density(
        np.ones((96, 96)), haze_fraction=haze, background_fraction=bg
    )
    pattern = ill.patterns((96, 96))[0, 0]
    frame = sample.image(0.0, pattern, scale=scale)
    level = pattern.mean()
    # A uniform density: in focus the pattern mean, plus haze and background on top,
    # both excited by the mean, which dilute the stripes.
    inner = frame[16:-16, 16:-16]
    assert inner.mean() == pytest.approx(scale * level * (1 + haze + bg), rel=0.01)
    k = ill.wavevectors()[0]
    assert _stripe_modulation(frame, k) == pytest.approx(
        ill.image_modulation(1.5) / (1 + haze + bg), rel=0.02
    )
    # Far from all structure only the background is left.
    dot = np.zeros((128, 128))
    dot[0, 0] = 1.0
    alone = SimulatedSample.from_density(dot, haze_fraction=haze, haze_sigma_px=4.0)
    far = alone.image(0.0, ill.patterns((128, 128))[0, 0], scale=scale)[64, 64]
    assert far == pytest.approx(scale * 0.02 * ill.patterns((128, 128))[0, 0].mean(), rel=1e-3)


def test_a_pattern_beyond_the_cutoff_leaves_no_stripes():
    cutoff = otf_cutoff(1.5)
    ill = SIMIllumination(n_angles=1, n_phases=1, period_px=1.0 / (1.5 * cutoff), modulation=1.0)
    sample = SimulatedSample.from_density(np.ones((96, 96)), haze_fraction=0.0)
    frame = sample.image(0.0, ill.patterns((96, 96))[0, 0])
    assert _stripe_modulation(frame, ill.wavevectors()[0]) < 1e-3
    assert ill.image_modulation(1.5) < 1e-3


def test_default_pattern_frequency_is_inside_the_optical_support():
    assert otf_cutoff(1.5) == pytest.approx(0.28)
    ill = SIMIllumination()
    assert ill.period_px == DEFAULT_PERIOD_PX
    assert 0.8 <= (1.0 / ill.period_px) / otf_cutoff(DEFAULT_PSF_SIGMA_PX) <= 0.9
    # The stripes still reach the image, attenuated like a real OTF near its edge.
    assert 0.04 <= otf(1.0 / ill.period_px, DEFAULT_PSF_SIGMA_PX) <= 0.15
    np.testing.assert_allclose(np.linalg.norm(ill.wavevectors(), axis=1), 1.0 / ill.period_px)


def test_widefield_frames_have_no_stripes():
    widefield = SIMIllumination.widefield()
    assert (widefield.n_angles, widefield.n_phases, widefield.modulation) == (1, 1, 0.0)
    np.testing.assert_array_equal(widefield.patterns((32, 32)), 0.5)
    flat = SimulatedSample.from_density(np.ones((64, 64)))
    frame = flat.image(0.0, widefield.patterns((64, 64))[0, 0], scale=40.0)
    np.testing.assert_allclose(frame, frame.mean(), rtol=1e-5)
    # Widefield equals the phase average of a SIM set at the same photon scale.
    wf = _frames(illumination=widefield, photons=15.0)
    sim = _frames(illumination=SIMIllumination(), photons=15.0 * SIMIllumination().peak / 0.5)
    np.testing.assert_allclose(sim.clean[0].mean(axis=1)[0], wf.clean[0, 0, 0], rtol=1e-4)


def test_pattern_truth_matches_the_patterns():
    ill = SIMIllumination(n_angles=3, n_phases=5, period_px=5.5, modulation=0.7, orientation_deg=9)
    frames = _frames(illumination=ill, psf_sigma_px=1.2)
    assert frames.pattern_wavevectors.shape == (3, 2)
    assert frames.pattern_phases.shape == (3, 5)
    y, x = np.mgrid[0:64, 0:80]
    pats = ill.patterns((64, 80))
    for a, (ky, kx) in enumerate(frames.pattern_wavevectors):
        for p, phase in enumerate(frames.pattern_phases[a]):
            expected = 0.5 * (1 + 0.7 * np.cos(2 * np.pi * (ky * y + kx * x) + phase))
            np.testing.assert_allclose(pats[a, p], expected, atol=1e-5)
    assert frames.modulation == 0.7
    assert frames.image_modulation == pytest.approx(0.7 * otf(1 / 5.5, 1.2))
    assert frames.psf_sigma_px == 1.2


@pytest.mark.parametrize("seed", range(3))
def test_background_and_thin_masks(seed):
    frames = simulate_sim_frames((256, 256), kind="mixed", seed=seed)
    background, thin, density = frames.background_mask, frames.thin_mask, frames.density
    assert background.dtype == thin.dtype == np.bool_
    assert background.shape == thin.shape == (256, 256)
    # Everything far from any fluorophore is background, and background is dark.
    far = ndimage.distance_transform_edt(density < 1e-3) > 8
    assert np.all(background[far])
    assert background.mean() >= 0.4
    assert density[background].max() < 0.05
    np.testing.assert_array_equal(background, frames.sample < 0.02)
    # Thin structures: on the density, never background, narrow and long.
    assert not np.any(thin & background)
    assert 0.02 <= thin.mean() <= 0.2
    assert density[thin].min() >= 0.05
    core = ndimage.binary_erosion(thin, np.ones((3, 3)))
    assert core.sum() < 0.4 * thin.sum()
    labels, _ = ndimage.label(thin, np.ones((3, 3)))
    extents = [
        max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndimage.find_objects(labels)
    ]
    assert max(extents) >= 40


@pytest.mark.parametrize("kind", ["mitochondria", "puncta"])
def test_kinds_without_thin_lines_have_an_empty_thin_mask(kind):
    layers = make_structure_layers((64, 64), kind=kind, seed=1)
    np.testing.assert_array_equal(layers.thin, 0.0)
    assert not _frames(kind=kind).thin_mask.any()


@pytest.mark.parametrize("kind", STRUCTURE_KINDS)
def test_structure_layers(kind):
    layers = make_structure_layers((96, 64), kind=kind, seed=5)
    np.testing.assert_array_equal(layers.density, make_structures((96, 64), kind=kind, seed=5))
    assert layers.thin.dtype == np.float32
    assert np.all(layers.thin >= 0) and np.all(layers.thin <= layers.density)
    if kind in ("filaments", "mixed"):
        assert layers.thin.max() > 0.2


def test_raw_is_an_unbiased_noisy_version_of_clean():
    cam = CameraModel(offset_adu=100.0, gain_adu_per_e=2.0, read_noise_e=1.5)
    frames = _frames(shape=(96, 96), photons=40.0, camera=cam, kind="mitochondria")
    raw = frames.raw.astype(np.float64)
    signal_clean = frames.clean - 100.0
    signal_raw = raw - 100.0
    assert signal_raw.mean() == pytest.approx(signal_clean.mean(), rel=0.03)
    # Residual variance: gain * expected signal (shot noise) + read noise + rounding.
    residual = raw - frames.clean
    expected_var = (2.0 * signal_clean + (2.0 * 1.5) ** 2 + 1.0 / 12.0).mean()
    assert residual.var() == pytest.approx(expected_var, rel=0.03)


# --- input validation ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 64), (64,), (64, 64, 3), (64.5, 64), "ab", (True, 64), 64])
def test_bad_shapes_are_rejected(shape):
    with pytest.raises(ValueError, match="shape must be two integers"):
        make_structures(shape)
    with pytest.raises(ValueError, match="shape must be two integers"):
        simulate_sim_frames(shape)
    with pytest.raises(ValueError, match="shape must be two integers"):
        SIMIllumination().patterns(shape)


def test_unknown_kind_lists_the_allowed_kinds():
    with pytest.raises(ValueError, match=r"filaments.*mitochondria.*puncta.*mixed.*'actin'"):
        make_structures((32, 32), kind="actin")
    with pytest.raises(ValueError, match="kind must be one of"):
        SimulatedSample((32, 32), kind="actin")
    with pytest.raises(ValueError, match="kind must be one of"):
        simulate_sim_frames((32, 32), kind="actin")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"photons": 0.0}, "photons must be > 0"),
        ({"photons": -3.0}, "photons must be > 0"),
        ({"photons": float("nan")}, "photons must be a finite number"),
        ({"photons": float("inf")}, "photons must be a finite number"),
        ({"n_timepoints": 0}, "n_timepoints"),
        ({"n_timepoints": 1.5}, "n_timepoints"),
        ({"frame_interval_s": -1.0}, "frame_interval_s"),
        ({"psf_sigma_px": -0.5}, "psf_sigma_px"),
        ({"haze_fraction": -0.1}, "haze_fraction must be >= 0"),
        ({"haze_sigma_px": float("nan")}, "haze_sigma_px must be a finite number"),
        ({"background_fraction": -0.01}, "background_fraction must be >= 0"),
        ({"drift_px_per_s": (1.0,)}, "drift_px_per_s"),
        ({"drift_px_per_s": (1.0, float("nan"))}, "drift_px_per_s"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"illumination": {"n_angles": 3}}, "illumination must be a SIMIllumination"),
        ({"camera": None}, "camera must be a CameraModel"),
    ],
)
def test_bad_frame_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_sim_frames((32, 32), **kwargs)


def test_bad_time_is_rejected():
    sample = SimulatedSample((32, 32))
    with pytest.raises(ValueError, match="time_s must be a finite number"):
        sample.at(float("nan"))


def test_from_density_leaves_the_callers_array_alone():
    density = np.full((32, 32), 0.5, dtype=np.float32)
    sample = SimulatedSample.from_density(density)
    assert density.flags.writeable and not sample.structure.flags.writeable
    assert sample.kind is None and sample.seed is None
    assert sample.background_mask.sum() == 0 and sample.thin_mask.sum() == 0


def test_bad_images_and_densities_are_rejected():
    sample = SimulatedSample((32, 32))
    with pytest.raises(ValueError, match=r"illumination must have the sample's shape \(32, 32\)"):
        sample.image(0.0, np.ones((32, 31)))
    with pytest.raises(ValueError, match=r"illumination must lie in \[0, 1\]"):
        sample.image(0.0, np.full((32, 32), 1.5))
    with pytest.raises(ValueError, match="scale must be >= 0"):
        sample.image(0.0, scale=-1.0)
    with pytest.raises(ValueError, match=r"density must be finite and in \[0, 1\]"):
        SimulatedSample.from_density(np.full((32, 32), 2.0))
    with pytest.raises(ValueError, match="density must be a 2-D"):
        SimulatedSample.from_density(np.ones(32))
    with pytest.raises(ValueError, match="positive maximum"):
        SimulatedSample.from_density(np.zeros((32, 32)))
    with pytest.raises(ValueError, match="thin must have the density's shape"):
        SimulatedSample.from_density(np.full((32, 32), 0.5), thin=np.ones((32, 32)))
