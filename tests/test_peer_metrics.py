"""Metrics and variance stabilization of benchmarks/peers.py (no careamics or bm3d needed)."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _metrics as m  # benchmarks/ is not a package


def _scene(size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright disk, a dim 1-px line and an empty background; returns (image, bg, thin)."""
    yy, xx = np.mgrid[:size, :size]
    c, r = size // 3, size // 12
    disk = (yy - c) ** 2 + (xx - c) ** 2 <= r**2
    thin = np.zeros((size, size), bool)
    thin[3 * size // 4, size // 10 : -size // 10] = True
    image = np.where(disk, 1.0, 0.0) + np.where(thin, 0.5, 0.0)
    near = gaussian_filter((disk | thin).astype(float), 3) > 1e-3
    return image, ~near, thin


def test_psnr_identical_is_inf_and_noise_lowers_it():
    image, _, _ = _scene()
    assert m.psnr(image, image) == math.inf
    noisy = image + np.random.default_rng(0).normal(0, 0.1, image.shape)
    assert 15 < m.psnr(noisy, image) < 25  # 20 dB for sigma 0.1 of a unit range
    assert m.ssim(image, image) == pytest.approx(1.0)
    assert m.ssim(noisy, image) < 0.9


def test_background_bias_of_an_offset_is_the_offset():
    image, bg, _ = _scene()
    assert m.background_bias(image + 1.0, image, bg) == pytest.approx(1.0)
    assert m.background_bias(image, image, bg) == 0.0
    assert math.isnan(m.background_bias(image, image, np.zeros_like(bg)))


def test_false_positive_counts_detections_on_background():
    image, bg, _ = _scene()
    assert m.background_false_positive(image, bg) == 0.0
    spurious = image.copy()
    spurious[:8, -8:] = 1.0  # a bright artefact on true background
    fp = m.background_false_positive(spurious, bg)
    assert fp == pytest.approx(64 / bg.sum())


def test_thin_recall_drops_when_a_line_is_blurred():
    image, _, thin = _scene()
    assert m.thin_recall(image, thin) == 1.0
    blurred = gaussian_filter(image, 2.0)
    assert m.thin_recall(blurred, thin) < 0.5
    assert m.thin_recall(np.zeros_like(image), thin) == 0.0  # flat: nothing detected


def test_score_frames_averages_and_checks_shapes():
    image, bg, thin = _scene(64)
    stack = np.stack([image, image + 1.0])
    scores = m.score_frames(stack, np.stack([image, image]), bg, thin)
    assert scores["background_bias_adu"] == pytest.approx(0.5)
    assert scores["psnr_db"] == math.inf
    with pytest.raises(ValueError, match="N, H, W"):
        m.score_frames(image, image, bg, thin)


@pytest.mark.parametrize("photons", [0.5, 5.0, 50.0])
def test_gat_round_trip_of_a_flat_field_is_unbiased(photons):
    offset, gain, read_e = 100.0, 1.0, 1.5
    rng = np.random.default_rng(1)
    n = 2_000_000
    electrons = rng.poisson(photons, n) + rng.normal(0.0, read_e, n)
    raw = np.clip(np.round(offset + gain * electrons), 0, 65535)
    sigma = math.hypot(gain * read_e, math.sqrt(1 / 12))  # read noise plus quantization
    stab = m.gat_forward(raw, offset_adu=offset, gain_adu_per_e=gain, read_noise_adu=sigma)
    assert 0.95 < stab.std() < 1.1  # stabilized: unit noise whatever the level
    # An ideal denoiser of the stabilized flat field returns its mean everywhere.
    back = m.gat_inverse(stab.mean(), offset_adu=offset, gain_adu_per_e=gain, read_noise_adu=sigma)
    assert float(back) == pytest.approx(offset + gain * photons, abs=0.05)
    # The naive algebraic inverse is biased at low counts; the unbiased one must beat it.
    naive = (stab.mean() / 2) ** 2 - 0.375 - sigma**2 + offset
    if photons < 1:
        assert abs(naive - (offset + photons)) > 0.1


def test_noise_sigma_estimate_ignores_smooth_signal():
    rng = np.random.default_rng(2)
    image, _, _ = _scene(256)
    smooth = 50 * gaussian_filter(image, 1.5)
    noisy = smooth + rng.normal(0.0, 2.0, smooth.shape)
    assert m.estimate_noise_sigma(noisy) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match="2x2"):
        m.estimate_noise_sigma(np.zeros((1, 5)))
