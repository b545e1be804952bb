"""SIM reconstruction (sn2n_live.sim) on simulated data whose true patterns are known."""

import json

import numpy as np
import pytest
import torch

from sn2n_live.method import Denoiser, pretrained_package
from sn2n_live.sim import (
    AngleParameters,
    OTFModel,
    SIMCalibration,
    WienerReconstructor,
    estimate_calibration,
    widefield,
)
from sn2n_live.simulation import SIMIllumination, otf, otf_cutoff, simulate_sim_frames
from sn2n_live.tune import frc, psnr


def _true_calibration(frames, otf_model: OTFModel) -> SIMCalibration:
    """The simulator's patterns in the calibration's convention (phases at the centre)."""
    h, w = frames.raw.shape[-2:]
    centre = np.array([h // 2, w // 2])
    angles = tuple(
        AngleParameters(
            wavevector=(float(k[0]), float(k[1])),
            phases_rad=tuple(float(p) for p in phases + 2 * np.pi * (k @ centre)),
            modulation=frames.modulation,
        )
        for k, phases in zip(frames.pattern_wavevectors, frames.pattern_phases, strict=True)
    )
    return SIMCalibration(shape=(h, w), otf=otf_model, angles=angles)


def _errors(estimate: SIMCalibration, truth: SIMCalibration):
    """Per angle: wave vector error (fraction), phase errors (deg), modulation error."""
    out = []
    for est, true in zip(estimate.angles, truth.angles, strict=True):
        k, phases = np.array(est.wavevector), np.array(est.phases_rad)
        k_true = np.array(true.wavevector)
        if k @ k_true < 0:  # k and -k with negated phases are the same pattern
            k, phases = -k, -phases
        k_error = np.linalg.norm(k - k_true) / np.linalg.norm(k_true)
        phase_error = np.degrees(np.angle(np.exp(1j * (phases - np.array(true.phases_rad)))))
        out.append((k_error, np.abs(phase_error).max(), abs(est.modulation - true.modulation)))
    return out


@pytest.mark.parametrize("n_phases", [3, 5])
def test_pattern_parameters_are_recovered(n_phases):
    frames = simulate_sim_frames(
        (256, 256), photons=200, illumination=SIMIllumination(n_phases=n_phases), seed=1
    )
    otf_model = OTFModel.gaussian(frames.psf_sigma_px)
    estimate = estimate_calibration(frames.raw[0], otf_model, n_angles=3, n_phases=n_phases)
    assert (estimate.n_angles, estimate.n_phases, estimate.shape) == (3, n_phases, (256, 256))
    for k_error, phase_error, modulation_error in _errors(
        estimate, _true_calibration(frames, otf_model)
    ):
        assert k_error < 0.005  # wave vector within 0.5 %
        assert phase_error < 5.0  # degrees
        assert modulation_error < 0.1


def test_a_calibration_guides_the_estimate_on_a_dim_set():
    bright = simulate_sim_frames((256, 256), photons=500, seed=2)
    otf_model = OTFModel.gaussian(bright.psf_sigma_px)
    calibration = estimate_calibration(bright.raw[0], otf_model)
    dim = simulate_sim_frames((256, 256), photons=5, n_timepoints=20, seed=2)
    with pytest.raises(ValueError, match="angle 0: no pattern peak stands out of the noise"):
        estimate_calibration(dim.raw[0], otf_model)
    # Near a calibration, a wave vector lost in the noise stays where it was.
    again = estimate_calibration(dim.raw[0], otf_model, near=calibration)
    truth = _true_calibration(dim, otf_model)
    assert all(k_error < 0.001 for k_error, _, _ in _errors(again, truth))
    # Twenty dim sets of a still sample, averaged: the pattern stands out again.
    pooled = estimate_calibration(dim.raw.reshape(-1, 256, 256), otf_model)
    for k_error, phase_error, modulation_error in _errors(pooled, truth):
        assert k_error < 0.005 and phase_error < 10 and modulation_error < 0.1
    with pytest.raises(ValueError, match="3 x 3 patterns; this set has 3 x 5"):
        estimate_calibration(np.zeros((15, 256, 256)), otf_model, n_phases=5, near=calibration)


def test_a_saved_calibration_reloads_and_reconstructs_the_same(tmp_path):
    frames = simulate_sim_frames((128, 128), photons=200, seed=3)
    calibration = estimate_calibration(
        frames.raw[0], OTFModel.gaussian(frames.psf_sigma_px), source="test set 0"
    )
    path = calibration.save(tmp_path / "cal.json")
    loaded = SIMCalibration.load(path)
    assert loaded == calibration and loaded.source == "test set 0"
    first = WienerReconstructor(calibration)(frames.raw[0])
    np.testing.assert_array_equal(WienerReconstructor(loaded)(frames.raw[0]), first)
    assert first.shape == (256, 256) and first.dtype == np.float32 and first.min() >= 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match=r"(?s)bad\.json is not a SIM calibration.*--save-calib"):
        SIMCalibration.load(bad)


def _fitted(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``image`` scaled and offset to match ``truth`` (least squares): units set aside."""
    design = np.stack([image.ravel(), np.ones(image.size)], axis=1)
    coef = np.linalg.lstsq(design, truth.ravel(), rcond=None)[0]
    return (design @ coef).reshape(image.shape)


@pytest.mark.parametrize(("psf_kind", "min_gain"), [("ideal", 1.6), ("gaussian", 1.3)])
def test_resolution_gain_over_widefield_at_high_light(psf_kind, min_gain):
    # Two independent noisy sets of one field: FRC between their reconstructions against
    # FRC between their widefield images. The Gaussian PSF passes a tail beyond its
    # cut-off that widefield uses at high light (and SIM cannot extend), hence its lower
    # bar; the ideal pupil ends at the cut-off, as a real objective does.
    frames = simulate_sim_frames(
        (512, 512), photons=5000, n_timepoints=2, seed=3, psf_kind=psf_kind
    )
    otf_model = OTFModel(kind=psf_kind, psf_sigma_px=frames.psf_sigma_px)
    reconstruct = WienerReconstructor(estimate_calibration(frames.raw[0], otf_model))
    sr = [reconstruct(frames.raw[t], clip=False) for t in range(2)]
    wf = [widefield(frames.raw[t], 3, 3) for t in range(2)]
    sr_px = frc(sr[0], sr[1], pixel_scale=0.5).resolution_px()
    wf_px = frc(wf[0], wf[1]).resolution_px()
    assert wf_px / sr_px >= min_gain, (wf_px, sr_px)
    assert sr_px >= 1.0 / (otf_cutoff(frames.psf_sigma_px) + 1.0 / frames.illumination.period_px)


def test_at_low_light_denoised_frames_reconstruct_closer_to_the_truth():
    # 15 photons at a stripe maximum. The calibration comes from a bright set of the same
    # field (calibrate once, reuse it); the truth is the reconstruction of the noise-free
    # frames with the true patterns.
    dim = simulate_sim_frames((256, 256), photons=15, seed=5)
    otf_model = OTFModel.gaussian(dim.psf_sigma_px)
    bright = simulate_sim_frames((256, 256), photons=500, seed=5)
    calibration = estimate_calibration(bright.raw[0], otf_model)
    truth = WienerReconstructor(_true_calibration(dim, otf_model))(dim.clean[0])
    raw = dim.raw[0].reshape(9, 256, 256).astype(np.float32)
    denoised = Denoiser(pretrained_package(), tile="package").denoise(raw)
    reconstruct = WienerReconstructor(calibration)
    from_raw = _fitted(reconstruct(raw), truth)
    from_denoised = _fitted(reconstruct(denoised), truth)
    assert psnr(from_denoised, truth) > psnr(from_raw, truth) + 2.0
    # Reconstruction artifacts (honeycomb, noise) where the sample is empty.
    background = np.kron(dim.background_mask, np.ones((2, 2), dtype=bool))
    spread = truth.max() - truth.min()
    assert np.std(from_denoised[background]) < 0.5 * np.std(from_raw[background])
    assert np.std(from_denoised[background]) / spread < 0.05


def test_the_ideal_psf_passes_nothing_beyond_its_cut_off():
    sigma = 1.5
    cutoff = otf_cutoff(sigma)
    assert otf(1.01 * cutoff, sigma, "ideal") == 0.0 and otf(0.0, sigma, "ideal") == 1.0
    assert otf(1.01 * cutoff, sigma) > 0  # the Gaussian's tail
    frames = simulate_sim_frames((128, 128), photons=100, psf_kind="ideal", seed=0)
    spectrum = np.abs(np.fft.fft2(frames.clean[0, 0, 0] - frames.clean[0, 0, 0].mean()))
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij"))
    assert spectrum[radius > 1.05 * cutoff].max() < 1e-3 * spectrum.max()
    assert frames.psf_kind == "ideal"


def test_bad_input_is_refused_with_what_to_fix():
    otf_model = OTFModel.gaussian(1.5)
    with pytest.raises(ValueError, match=r"3 angles x 3 phases is 9 frames"):
        estimate_calibration(np.zeros((8, 64, 64)), otf_model)
    with pytest.raises(ValueError, match=">= 3 phases"):
        estimate_calibration(np.zeros((6, 64, 64)), otf_model, n_phases=2)
    with pytest.raises(ValueError, match="takes psf_sigma_px; got na"):
        OTFModel(kind="gaussian", na=1.4)
    with pytest.raises(ValueError, match="beyond what a 2x reconstruction can hold"):
        OTFModel(kind="ideal", na=1.4, wavelength_nm=500, pixel_nm=400)
    frames = simulate_sim_frames((128, 128), photons=200, seed=3)
    calibration = estimate_calibration(frames.raw[0], otf_model)
    reconstruct = WienerReconstructor(calibration)
    with pytest.raises(ValueError, match="calibration is for 128 x 128 frames; these are 96 x 96"):
        reconstruct(np.zeros((9, 96, 96)))
    with pytest.raises(ValueError, match="wiener must be > 0"):
        WienerReconstructor(calibration, wiener=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            WienerReconstructor(calibration, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_reconstructs_as_the_cpu_does():
    frames = simulate_sim_frames((256, 256), photons=100, seed=4)
    calibration = estimate_calibration(frames.raw[0], OTFModel.gaussian(frames.psf_sigma_px))
    cpu = WienerReconstructor(calibration)(frames.raw[0])
    gpu = WienerReconstructor(calibration, device="cuda")(frames.raw[0])
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3 * float(cpu.max()))
