import numpy as np
import pytest

from sn2n_live.method._twins import diagonal_twins, fourier_upsample, make_twins


def _pattern(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Smooth, nearly band-limited test scene: two cosines and a wide Gaussian blob."""
    waves = 50 * np.cos(2 * np.pi * y / 37 + 0.3) * np.cos(2 * np.pi * x / 29)
    blob = 80 * np.exp(-((y - 60) ** 2 + (x - 70) ** 2) / (2 * 5.0**2))
    return 100 + waves + blob


def _centroid(image: np.ndarray, window: tuple[slice, slice]) -> np.ndarray:
    w = image[window]
    yy, xx = np.mgrid[window]
    return np.array([(w * yy).sum(), (w * xx).sum()]) / w.sum()


# ---------------------------------------------------------------------------- diagonal twins


def test_diagonal_twins_values_and_odd_edge_dropped():
    x = np.array([[1, 2, 9], [4, 8, 9], [9, 9, 9]], dtype=np.uint8)
    a, b = diagonal_twins(x)
    assert a.dtype == b.dtype == np.float32
    assert a.tolist() == [[4.5]] and b.tolist() == [[3.0]]


def test_diagonal_twins_do_not_overflow_uint16():
    x = np.array([[65535, 0], [0, 65535]], dtype=np.uint16)
    a, b = diagonal_twins(x)
    assert a.item() == 65535.0 and b.item() == 0.0


@pytest.mark.parametrize(
    ("shape", "half"),
    [
        ((4, 4), (2, 2)),
        ((5, 7), (2, 3)),
        ((3, 2, 64, 48), (3, 2, 32, 24)),
        ((2, 33, 65), (2, 16, 32)),
    ],
)
def test_shapes_for_all_modes(shape, half):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, size=shape).astype(np.uint16)
    a, b = make_twins(image, "none")
    assert a.shape == b.shape == half
    full = (*half[:-2], 2 * half[-2], 2 * half[-1])
    for mode in ("official", "exact"):
        a, b = make_twins(image, mode)
        assert a.shape == b.shape == full and a.dtype == np.float32
        assert a.min() >= 0 and b.min() >= 0


def test_fourier_upsample_odd_sizes():
    rng = np.random.default_rng(1)
    out = fourier_upsample(rng.random((2, 5, 7)), "exact")
    assert out.shape == (2, 10, 14) and out.dtype == np.float32


def test_leading_axes_are_independent_frames():
    rng = np.random.default_rng(2)
    stack = rng.poisson(30.0, size=(2, 3, 32, 40)).astype(np.uint16)
    for mode in ("none", "official", "exact"):
        a, b = make_twins(stack, mode)
        a1, b1 = make_twins(stack[1, 2], mode)
        np.testing.assert_allclose(a[1, 2], a1, rtol=1e-6)
        np.testing.assert_allclose(b[1, 2], b1, rtol=1e-6)


def test_large_stack_is_processed_in_chunks_consistently():
    # 520x520 twins exceed the per-chunk budget, so each frame is its own chunk.
    rng = np.random.default_rng(3)
    stack = rng.integers(0, 4000, size=(3, 520, 520)).astype(np.uint16)
    out = fourier_upsample(stack)
    assert out.shape == (3, 1040, 1040)
    np.testing.assert_array_equal(out[2], fourier_upsample(stack[2]))


@pytest.mark.parametrize("mode", ["none", "official", "exact"])
def test_twins_of_a_constant_image_are_that_constant(mode):
    a, b = make_twins(np.full((2, 64, 48), 37.0), mode)
    np.testing.assert_allclose(a, 37.0, rtol=1e-6)
    np.testing.assert_allclose(b, 37.0, rtol=1e-6)


# ---------------------------------------------------------------------------- noise


@pytest.mark.parametrize("mode", ["none", "official", "exact"])
def test_twin_noise_is_uncorrelated_on_flat_poisson_field(mode):
    rng = np.random.default_rng(4)
    field = rng.poisson(20.0, size=(512, 512)).astype(np.uint16)
    a, b = make_twins(field, mode)
    r = np.corrcoef((a - a.mean()).ravel(), (b - b.mean()).ravel())[0, 1]
    assert abs(r) < 0.02
    if mode == "none":
        # Each twin averages two independent pixels: variance halves.
        assert a.var() == pytest.approx(10.0, rel=0.05)
        assert b.var() == pytest.approx(10.0, rel=0.05)


def test_twin_correlation_detects_pixel_correlated_noise():
    # Positive control for the statistic above: horizontally correlated noise makes the
    # anti-diagonal and diagonal averages share signal.
    rng = np.random.default_rng(5)
    white = rng.normal(size=(256, 257))
    a, b = make_twins(white[:, :-1] + white[:, 1:], "official")
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.3


# ---------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("shape", [(128, 128), (130, 98)])
@pytest.mark.parametrize(("mode", "tol"), [("official", 0.025), ("exact", 0.01)])
def test_smooth_pattern_is_reproduced_at_full_resolution(shape, mode, tol):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    image = _pattern(yy, xx)
    for twin in make_twins(image, mode):
        h, w = twin.shape
        err = np.abs(twin - image[:h, :w])[16:-16, 16:-16].max() / np.ptp(image)
        assert err < tol


@pytest.mark.parametrize("shape", [(128, 128), (130, 98)])
def test_exact_mode_samples_twin_cells_on_the_full_resolution_grid(shape):
    # A twin pixel averages g at (2i, 2j) and (2i+1, 2j+1) (resp. the anti-diagonal), so
    # its band-limited interpolant at full-res pixel (y, x) is the same average around
    # (y, x).  Exact mode hits it up to interpolation error; official drifts with its 0.4 %
    # scale error.
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    image = _pattern(yy, xx)
    ref_a = 0.5 * (_pattern(yy - 0.5, xx - 0.5) + _pattern(yy + 0.5, xx + 0.5))
    ref_b = 0.5 * (_pattern(yy - 0.5, xx + 0.5) + _pattern(yy + 0.5, xx - 0.5))
    scale = np.ptp(image)

    def err(twin, ref):
        h, w = twin.shape
        return np.abs(twin - ref[:h, :w])[16:-16, 16:-16].max() / scale

    a, b = make_twins(image, "exact")
    assert err(a, ref_a) < 2e-3 and err(b, ref_b) < 2e-3
    a, b = make_twins(image, "official")
    assert err(a, ref_a) > 5e-3 and err(b, ref_b) > 5e-3


def test_blob_positions_and_distance():
    yy, xx = np.mgrid[:128, :128].astype(np.float64)

    def blob(cy, cx):
        return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))

    true_centres = np.array([[60.3, 29.2], [66.7, 99.2]])
    image = 1000 * (blob(*true_centres[0]) + blob(*true_centres[1]))
    windows = [np.s_[40:80, 10:50], np.s_[46:86, 80:120]]
    true_distance = np.linalg.norm(true_centres[1] - true_centres[0])
    distance_error = {}
    for mode in ("official", "exact"):
        for twin in make_twins(image, mode):
            centres = np.array([_centroid(twin, w) for w in windows])
            distance_error[mode] = abs(np.linalg.norm(centres[1] - centres[0]) - true_distance)
            if mode == "exact":
                np.testing.assert_allclose(centres, true_centres, atol=0.01)
    # Official: output step N/(2N-1) twin pixels -> distances shrink by 255/256 (§1.3).
    assert distance_error["official"] == pytest.approx(true_distance / 256, rel=0.1)
    assert distance_error["exact"] < 0.01 < distance_error["official"]


# ---------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        diagonal_twins(np.zeros(8))
    with pytest.raises(ValueError, match="at least 2x2"):
        diagonal_twins(np.zeros((1, 8)))
    with pytest.raises(ValueError, match="integer or float"):
        diagonal_twins(np.zeros((4, 4), dtype=np.complex64))
    with pytest.raises(ValueError, match="mode must be 'official' or 'exact'"):
        fourier_upsample(np.zeros((4, 4)), "none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2x2"):
        fourier_upsample(np.zeros((4, 1)))
    bad = np.zeros((4, 4))
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        fourier_upsample(bad)
    with pytest.raises(ValueError, match="upsample must be one of"):
        make_twins(np.zeros((4, 4)), "bilinear")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- torch twins


@pytest.mark.parametrize("shape", [(2, 16, 16), (1, 32, 20), (3, 9, 13)])
def test_torch_upsample_matches_numpy_exact_grid_without_clamp(shape):
    import torch

    from sn2n_live.method._twins import fourier_upsample_tensor

    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 5.0, shape)  # negative values: nothing may be clamped
    # The interpolant is linear and keeps constants, so an offset avoids numpy's clamp.
    ref = fourier_upsample(x + 1000.0, "exact") - 1000.0
    got = fourier_upsample_tensor(torch.from_numpy(x.astype(np.float32))).numpy()
    assert got.shape == (shape[0], 2 * shape[1], 2 * shape[2])
    np.testing.assert_allclose(got, ref, atol=2e-4)
    assert got.min() < 0  # negative ringing kept (the numpy version clamps it to 0)
    np.testing.assert_allclose(np.maximum(got, 0), fourier_upsample(x, "exact"), atol=2e-4)


def test_make_twins_tensor_keeps_a_smooth_scene_and_its_position():
    import torch

    from sn2n_live.method._twins import make_twins_tensor

    y, x = np.mgrid[0:128, 0:128].astype(np.float64)
    scene = _pattern(y, x)
    a, b = make_twins_tensor(torch.from_numpy(scene.astype(np.float32)))
    window = (slice(45, 76), slice(55, 86))
    for twin in (a.numpy(), b.numpy()):
        assert twin.shape == scene.shape
        interior = (slice(8, -8), slice(8, -8))
        assert np.abs(twin[interior] - scene[interior]).max() < 0.02 * scene.max()
        np.testing.assert_allclose(
            _centroid(twin - 100, window), _centroid(scene - 100, window), atol=0.05
        )


def test_torch_twins_reject_odd_frames():
    import torch

    from sn2n_live.method._twins import diagonal_twins_tensor

    with pytest.raises(ValueError, match="even H and W"):
        diagonal_twins_tensor(torch.zeros(5, 6))


@pytest.mark.parametrize("freq", [(0.11, 0.19), (0.2, -0.05), (0.0, 0.23)])
def test_compensation_gives_both_twins_the_cell_centre_signal(freq):
    import math

    import torch

    from sn2n_live.method._twins import compensate_twin_sampling, diagonal_twins_tensor

    fy, fx = freq
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    a, b = diagonal_twins_tensor(torch.cos(2 * math.pi * (fy * yy + fx * xx)))
    cy, cx = torch.meshgrid(
        torch.arange(0, 128, 2) + 0.5, torch.arange(0, 128, 2) + 0.5, indexing="ij"
    )
    centre = torch.cos(2 * math.pi * (fy * cy + fx * cx))
    inner = (slice(12, -12), slice(12, -12))
    # The diagonal means attenuate by cos(pi (fx +- fy)) ...
    gain_a = float((a * centre)[inner].sum() / (centre * centre)[inner].sum())
    assert gain_a == pytest.approx(math.cos(math.pi * (fx + fy)), abs=0.01)
    # ... and the compensated twins both carry the signal at the cell centres.
    ca, cb = compensate_twin_sampling(a, b)
    for twin in (ca, cb):
        assert float((twin - centre)[inner].abs().max()) < 0.02
