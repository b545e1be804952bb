import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.stats import skew as scipy_skew

from sn2n_live.method._risk import (
    RiskClass,
    RiskMap,
    RiskThresholds,
    analyze_risk,
    background_floor,
    classify_risk,
    decide_dataset_mode,
    denormalize,
    image_scale,
    normalize_tiles,
    patch_statistics,
    twin_noise_variance,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]
T = RiskThresholds()


def _camera_frame(rng: np.random.Generator, shape=(256, 256)) -> tuple[np.ndarray, np.ndarray]:
    """Offset-100 camera frame: dim Poisson background, a bright textured block top-right.

    Returns the uint16 frame and a bool mask of the structure region.
    """
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    photons = np.full(shape, 4.0)
    mask = (yy < 128) & (xx >= 128)
    texture = 0.5 + 0.4 * np.sin(2 * np.pi * yy / 11.0) * np.cos(2 * np.pi * xx / 7.0)
    photons[mask] += 800.0 * texture[mask]
    adu = 100.0 + rng.poisson(photons) + rng.normal(0.0, 1.5, shape)
    return np.clip(np.round(adu), 0, 65535).astype(np.uint16), mask


def _tiles_of(frame: np.ndarray, p: int) -> np.ndarray:
    h, w = frame.shape
    return frame.reshape(h // p, p, w // p, p).transpose(0, 2, 1, 3).reshape(-1, p, p)


# ---------------------------------------------------------------------------- thresholds


def test_threshold_defaults_are_the_official_script_values():
    assert T.model_dump() == {
        "patch_size": 64,
        "clip_percentile": 99.99,
        "background_mean_max": 0.20,
        "background_std_max": 0.028,
        "background_skew_max": 0.0,
        "background_skew_std_max": 0.05,
        "sparse_mean_max": 0.30,
        "sparse_std_min": 0.075,
        "sparse_skew_min": 3.0,
        "dataset_high_risk_fraction": 0.10,
        "noise_aware": True,  # sn2n-live's extension; False reproduces the official rules
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"patch_size": 2},
        {"clip_percentile": 0.0},
        {"clip_percentile": 100.5},
        {"background_std_max": -0.01},
        {"sparse_mean_max": 1.5},
        {"dataset_high_risk_fraction": 1.1},
        {"sparse_skew_min": float("nan")},
        {"unknown_field": 1},
    ],
)
def test_thresholds_reject_bad_values(bad):
    with pytest.raises(ValidationError):
        RiskThresholds(**bad)


def test_thresholds_are_frozen():
    with pytest.raises(ValidationError):
        T.patch_size = 32  # type: ignore[misc]


# ---------------------------------------------------------------------------- image scale


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("q", [99.99, 99.0, 50.0, 100.0])
def test_image_scale_matches_numpy(device, q):
    rng = np.random.default_rng(1)
    frames = rng.gamma(2.0, 50.0, size=(3, 97, 61)).astype(np.float32)
    lo, hi = image_scale(torch.from_numpy(frames).to(device), q)
    assert lo.dtype == hi.dtype == torch.float32 and lo.shape == (3,)
    np.testing.assert_allclose(lo.cpu().numpy(), frames.reshape(3, -1).min(1))
    np.testing.assert_allclose(
        hi.cpu().numpy(), np.percentile(frames.reshape(3, -1), q, axis=1), rtol=1e-5
    )


def test_image_scale_flat_frame_keeps_hi_equal_lo_and_sparse_frame_falls_back_to_max():
    flat = torch.full((1, 128, 128), 123.0)
    sparse = torch.zeros((1, 128, 128))
    sparse[0, 5, 7] = 500.0  # 1 pixel in 16384: the 99.99th percentile is still 0
    lo, hi = image_scale(torch.cat([flat, sparse]))
    assert lo.tolist() == [123.0, 0.0]
    assert hi.tolist() == [123.0, 500.0]


def test_image_scale_accepts_uint16_tensors():
    rng = np.random.default_rng(2)
    raw = rng.integers(100, 4000, size=(2, 64, 64), dtype=np.uint16)
    lo_u, hi_u = image_scale(torch.from_numpy(raw))
    lo_f, hi_f = image_scale(torch.from_numpy(raw.astype(np.float32)))
    assert torch.equal(lo_u, lo_f) and torch.equal(hi_u, hi_f)
    assert lo_u.dtype == torch.float32


def test_image_scale_errors():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        image_scale(torch.zeros(16, 16))
    with pytest.raises(ValueError, match="empty"):
        image_scale(torch.zeros(0, 16, 16))
    with pytest.raises(ValueError, match="clip_percentile"):
        image_scale(torch.zeros(1, 16, 16), 0.0)
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        image_scale(np.zeros((1, 16, 16)))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- statistics


def test_patch_statistics_match_numpy_and_scipy():
    rng = np.random.default_rng(3)
    patches = rng.beta(0.5, 3.0, size=(2, 3, 16, 16)).astype(np.float32)
    mean, std, skew = patch_statistics(torch.from_numpy(patches))
    flat = patches.reshape(2, 3, -1).astype(np.float64)
    assert mean.shape == std.shape == skew.shape == (2, 3)
    np.testing.assert_allclose(mean.numpy(), flat.mean(-1), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), flat.std(-1), rtol=1e-4)
    np.testing.assert_allclose(skew.numpy(), scipy_skew(flat, axis=-1, bias=False), rtol=1e-3)


def test_patch_statistics_flat_patch_has_zero_skew():
    patches = torch.stack([torch.full((8, 8), 0.3), torch.zeros(8, 8)])
    patches[1, 0, 0] = 1e-8  # std ~1e-9: below the 1e-6 flatness floor
    mean, std, skew = patch_statistics(patches)
    assert torch.all(std <= 1e-6)
    assert skew.tolist() == [0.0, 0.0]
    assert torch.isfinite(mean).all()


def test_patch_statistics_errors():
    with pytest.raises(ValueError, match=r"\(\.\.\., P, P\)"):
        patch_statistics(torch.zeros(5))
    with pytest.raises(ValueError, match="at least 3 pixels"):
        patch_statistics(torch.zeros(4, 1, 2))


# ---------------------------------------------------------------------------- classification


def _constructed_patches() -> torch.Tensor:
    rng = np.random.default_rng(4)
    p = 64
    dark_noise = 0.05 + 0.01 * rng.standard_normal((p, p))
    dots = 0.02 + 0.005 * rng.standard_normal((p, p))
    for y, x in [(8, 10), (30, 50), (50, 20), (12, 40)]:
        dots[y : y + 3, x : x + 3] = 1.0
    yy, xx = np.mgrid[:p, :p]
    texture = 0.5 + 0.25 * np.sin(2 * np.pi * yy / 9) * np.sin(2 * np.pi * xx / 13)
    texture += 0.02 * rng.standard_normal((p, p))
    stack = np.clip(np.stack([dark_noise, dots, texture]), 0, 1).astype(np.float32)
    return torch.from_numpy(stack)


def test_classify_constructed_patches():
    classes = classify_risk(*patch_statistics(_constructed_patches()), T)
    assert classes.dtype == torch.int8
    assert classes.tolist() == [RiskClass.BACKGROUND, RiskClass.SPARSE, RiskClass.LOW]


def test_background_rule_takes_precedence_over_sparse():
    # Loosen R2 so that the dark-noise patch satisfies both rules.
    loose = RiskThresholds(sparse_std_min=0.0, sparse_skew_min=-100.0)
    mean, std, skew = patch_statistics(_constructed_patches())
    classes = classify_risk(mean, std, skew, loose)
    assert classes[0] == RiskClass.BACKGROUND


def test_classify_rule_boundaries_are_inclusive():
    t = T
    mean = torch.tensor([t.background_mean_max, 0.9, t.sparse_mean_max, t.sparse_mean_max])
    std = torch.tensor([t.background_std_max, t.background_skew_std_max, t.sparse_std_min, 0.2])
    skew = torch.tensor([5.0, t.background_skew_max, t.sparse_skew_min, 2.99])
    assert classify_risk(mean, std, skew, t).tolist() == [1, 1, 2, 0]


def test_classify_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        classify_risk(torch.zeros(3), torch.zeros(3), torch.zeros(4), T)


# ---------------------------------------------------------------------------- risk map


def test_analyze_risk_map_shape_values_and_fraction():
    rng = np.random.default_rng(5)
    frame, _ = _camera_frame(rng)
    official = RiskThresholds(noise_aware=False)
    risk = analyze_risk(frame[:250, :200], official)  # partial edge patches are dropped
    assert risk.classes.shape == risk.mean.shape == (3, 3)
    assert risk.classes.dtype == np.int8 and risk.std.dtype == np.float32
    assert risk.patch_size == 64
    crop = frame[:250, :200].astype(np.float64)
    assert risk.lo == crop.min()
    assert risk.hi == pytest.approx(np.percentile(crop, 99.99), rel=1e-5)
    # Rows 0-1 / column 2 are inside the structure block, the rest is dim background.
    expected = np.full((3, 3), RiskClass.BACKGROUND)
    expected[:2, 2] = RiskClass.LOW
    np.testing.assert_array_equal(risk.classes, expected)
    assert risk.high_risk_fraction == pytest.approx(7 / 9)
    # The recorded statistics are those of the image-normalized patch.
    patch = np.clip((crop[64:128, 0:64] - risk.lo) / (risk.hi - risk.lo), 0, 1)
    assert risk.std[1, 0] == pytest.approx(patch.std(), rel=1e-4)
    # Noise-aware statistics agree on the classes here; background signal std is ~0.
    aware = analyze_risk(frame[:250, :200])
    np.testing.assert_array_equal(aware.classes, expected)
    assert float(aware.std[1, 0]) < 0.25 * float(risk.std[1, 0])


def test_noise_aware_rules_see_background_through_shot_noise():
    # 5 photons at the peak: raw patch std is noise, so the official rules flag nothing.
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:256, :256]
    signal = np.where(xx < 128, 5.0 * (0.5 + 0.5 * np.sin(yy / 3.0) * np.cos(xx / 4.0)), 0.0)
    frame = 100.0 + rng.poisson(signal) + rng.normal(0.0, 1.5, signal.shape)
    official = analyze_risk(frame, RiskThresholds(noise_aware=False))
    aware = analyze_risk(frame)
    assert official.high_risk_fraction == 0.0
    background = np.zeros((4, 4), bool)
    background[:, 2:] = True
    assert np.all(aware.classes[background] != RiskClass.LOW)
    assert np.all(aware.classes[~background] == RiskClass.LOW)
    assert decide_dataset_mode([aware]) == "global"
    assert decide_dataset_mode([official]) == "local"


def test_twin_noise_variance_matches_pixel_noise_and_ignores_smooth_signal():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :64]
    smooth = 50.0 * np.sin(yy / 9.0) + 30.0 * np.cos(xx / 7.0)
    noisy = smooth + rng.normal(0.0, 2.0, (16, 64, 64))
    var = twin_noise_variance(torch.from_numpy(noisy))
    # 1024 difference pixels per patch: each estimate within 20 %, their mean within 5 %.
    np.testing.assert_allclose(var.numpy(), 4.0, rtol=0.2)
    assert float(var.mean()) == pytest.approx(4.0, rel=0.05)
    floor = background_floor(torch.from_numpy(np.stack([smooth, smooth + 7.0])), 32)
    assert float(floor[1] - floor[0]) == pytest.approx(7.0, abs=1e-3)


def test_analyze_risk_errors():
    with pytest.raises(ValueError, match="2-D"):
        analyze_risk(np.zeros((2, 64, 64)))
    with pytest.raises(ValueError, match="smaller than one 64x64"):
        analyze_risk(np.zeros((63, 128)))
    bad = np.zeros((64, 64), np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        analyze_risk(bad)


def test_risk_map_validates_shapes():
    z = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="std has shape"):
        RiskMap(np.zeros((2, 2), np.int8), z, np.zeros((2, 3), np.float32), z, 64, 0.0, 1.0)
    with pytest.raises(ValueError, match="non-empty"):
        RiskMap(np.zeros((0, 2), np.int8), z, z, z, 64, 0.0, 1.0)


def _map(classes: np.ndarray) -> RiskMap:
    z = np.zeros(classes.shape, np.float32)
    return RiskMap(classes.astype(np.int8), z, z, z, 64, 0.0, 1.0)


def test_decide_dataset_mode_pools_patches_over_frames():
    all_high = _map(np.ones((1, 1)))
    mostly_low = np.zeros((10, 10))
    mostly_low.flat[:5] = RiskClass.SPARSE
    # Pooled: 6/101 < 0.10 -> local, although the mean of per-frame fractions is 0.525.
    assert decide_dataset_mode([all_high, _map(mostly_low)], T) == "local"
    mostly_low.flat[:11] = RiskClass.BACKGROUND
    assert decide_dataset_mode([all_high, _map(mostly_low)], T) == "global"


def test_decide_dataset_mode_threshold_is_strict():
    classes = np.zeros((10, 10))
    classes.flat[:10] = RiskClass.BACKGROUND
    assert decide_dataset_mode([_map(classes)], T) == "local"
    assert decide_dataset_mode([_map(classes)], RiskThresholds(dataset_high_risk_fraction=0.09))
    with pytest.raises(ValueError, match="at least one RiskMap"):
        decide_dataset_mode([], T)


# ---------------------------------------------------------------------------- normalization


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["global", "local", "per_patch"])
def test_normalize_denormalize_round_trip(device, mode):
    rng = np.random.default_rng(6)
    frame, _ = _camera_frame(rng)
    tiles = torch.from_numpy(_tiles_of(frame, 64).astype(np.float32)).to(device)
    # Frame scale from the tiles' full range so that every value is inside [lo, hi].
    f_lo = tiles.amin().expand(len(tiles))
    f_hi = tiles.amax().expand(len(tiles))
    y, lo, hi = normalize_tiles(tiles, f_lo, f_hi, mode, T)
    assert y.dtype == lo.dtype == hi.dtype == torch.float32
    assert y.shape == tiles.shape and lo.shape == hi.shape == (len(tiles),)
    assert y.min() >= 0 and y.max() <= 1
    back = denormalize(y, lo, hi)
    torch.testing.assert_close(back, tiles, rtol=0, atol=1e-3)
    # Network output layout (N, 1, P, P) broadcasts the same way.
    torch.testing.assert_close(denormalize(y[:, None], lo, hi)[:, 0], back)


def test_normalize_clips_values_outside_the_frame_scale():
    tiles = torch.tensor([[[0.0, 50.0], [100.0, 200.0]]])
    y, lo, hi = normalize_tiles(tiles, torch.tensor([10.0]), torch.tensor([110.0]), "global", T)
    torch.testing.assert_close(y.flatten(), torch.tensor([0.0, 0.4, 0.9, 1.0]))
    assert (lo.item(), hi.item()) == (10.0, 110.0)


@pytest.mark.parametrize("mode", ["global", "local", "per_patch"])
def test_flat_tile_has_no_nan_and_reconstructs_exactly(mode):
    tiles = torch.stack([torch.full((64, 64), 137.0), torch.full((64, 64), 0.0)])
    lo_f = torch.tensor([137.0, 0.0])  # flat frames: image_scale gives hi == lo
    y, lo, hi = normalize_tiles(tiles, lo_f, lo_f.clone(), mode, T)
    assert torch.isfinite(y).all() and torch.all(y == 0)
    assert torch.equal(denormalize(y, lo, hi), tiles)


def test_per_patch_uses_frame_scale_only_for_high_risk_tiles():
    rng = np.random.default_rng(7)
    frame, mask = _camera_frame(rng)
    f_lo, f_hi = image_scale(torch.from_numpy(frame.astype(np.float32))[None])
    tiles = torch.from_numpy(_tiles_of(frame, 64).astype(np.float32))
    n = len(tiles)
    structure = torch.from_numpy(_tiles_of(mask, 64).all(axis=(1, 2)))
    _, lo, hi = normalize_tiles(tiles, f_lo.expand(n), f_hi.expand(n), "per_patch", T)
    own_lo, own_hi = tiles.amin(dim=(1, 2)), tiles.amax(dim=(1, 2))
    assert torch.equal(lo[structure], own_lo[structure])
    assert torch.equal(hi[structure], own_hi[structure])
    assert torch.all(lo[~structure] == f_lo) and torch.all(hi[~structure] == f_hi)
    # The mask overrides the classification: all-high is global, all-low is local.
    args = (tiles, f_lo.expand(n), f_hi.expand(n))
    for fill, reference in ((True, "global"), (False, "local")):
        override = torch.full((n,), fill)
        got = normalize_tiles(*args, "per_patch", T, high_risk=override)
        want = normalize_tiles(*args, reference, T)
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g, w)


def test_adaptive_policies_do_not_amplify_background_noise():
    """The 1/ΔP² effect (method.md §3.3): local min-max stretches pure background noise."""
    rng = np.random.default_rng(8)
    frame, mask = _camera_frame(rng)
    # uint16 camera data converted to a float tensor, as the pipeline does.
    frames = torch.from_numpy(frame.astype(np.float32))[None]
    f_lo, f_hi = image_scale(frames)
    tiles = torch.from_numpy(_tiles_of(frame, 64).astype(np.float32))
    n = len(tiles)
    background = ~torch.from_numpy(_tiles_of(mask, 64).any(axis=(1, 2)))
    assert background.sum() == 12

    def noise_std(mode):
        y, _, _ = normalize_tiles(tiles, f_lo.expand(n), f_hi.expand(n), mode, T)
        return y[background].std(dim=(1, 2))

    local = noise_std("local")
    assert torch.all(local > 0.1)  # ΔP ≈ 7σ: noise fills the whole [0, 1] range
    for mode in ("per_patch", "global"):
        assert torch.all(noise_std(mode) <= local / 5), mode


def test_normalize_tiles_errors():
    tiles = torch.zeros(4, 8, 8)
    lo, hi = torch.zeros(4), torch.ones(4)
    with pytest.raises(ValueError, match=r"\(N, P, P\)"):
        normalize_tiles(torch.zeros(8, 8), lo, hi, "global", T)
    with pytest.raises(ValueError, match=r"frame_lo must have shape \(4,\)"):
        normalize_tiles(tiles, torch.zeros(3), hi, "global", T)
    with pytest.raises(ValueError, match=r"frame_hi must have shape \(4,\)"):
        normalize_tiles(tiles, lo, torch.ones(4, 1), "global", T)
    with pytest.raises(ValueError, match="mode must be one of"):
        normalize_tiles(tiles, lo, hi, "dataset", T)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only used by mode 'per_patch'"):
        normalize_tiles(tiles, lo, hi, "local", T, high_risk=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool tensor of shape"):
        normalize_tiles(tiles, lo, hi, "per_patch", T, high_risk=torch.ones(4))
    with pytest.raises(ValueError, match="bool tensor of shape"):
        normalize_tiles(tiles, lo, hi, "per_patch", T, high_risk=torch.ones(3, dtype=torch.bool))


def test_denormalize_errors():
    with pytest.raises(ValueError, match="matching y's leading axis"):
        denormalize(torch.zeros(4, 8, 8), torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="matching y's leading axis"):
        denormalize(torch.zeros(4, 8, 8), torch.zeros(4), torch.ones(4, 1))


def test_denormalize_half_precision_output_returns_float32_adu():
    y = torch.tensor([[[1.0, 0.5]]], dtype=torch.float16)
    out = denormalize(y, torch.tensor([100.0]), torch.tensor([65100.0]))
    assert out.dtype == torch.float32
    assert out.flatten().tolist() == [65100.0, 32600.0]
