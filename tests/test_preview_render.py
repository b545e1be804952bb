"""The preview's pure rendering: limits, LUTs, residual, risk veil, widefield (no Qt)."""

import numpy as np
import pytest

from sn2n_live.preview import (
    COLORMAPS,
    auto_limits,
    blend_risk,
    colormap_lut,
    colormaps_available,
    residual,
    residual_limits,
    to_rgba,
    widefield_image,
)
from sn2n_live.preview._render import DIVERGING

RAMP = np.arange(1000, dtype=np.uint16).reshape(10, 100)


@pytest.mark.parametrize(
    ("images", "percentiles", "expected"),
    [
        ((RAMP,), (0.0, 100.0), (0.0, 999.0)),
        ((RAMP,), (50.0, 100.0), (499.5, 999.0)),
        ((RAMP.astype(np.float32) - 500,), (0.0, 100.0), (-500.0, 499.0)),
        # Linked: the percentiles of both images together.
        ((np.zeros((4, 4)), np.full((4, 4), 10.0)), (0.0, 100.0), (0.0, 10.0)),
        # Flat: hi > lo all the same, so that scaling never divides by zero.
        ((np.full((8, 8), 7, np.uint16),), (0.5, 99.5), (7.0, 8.0)),
        # NaNs are left out; no finite pixel at all gives (0, 1).
        ((np.array([[np.nan, 1.0], [3.0, np.nan]]),), (0.0, 100.0), (1.0, 3.0)),
        ((np.full((2, 2), np.nan),), (0.5, 99.5), (0.0, 1.0)),
    ],
)
def test_auto_limits(images, percentiles, expected):
    assert auto_limits(*images, percentiles=percentiles) == pytest.approx(expected)


def test_auto_limits_of_a_large_frame_come_from_a_sample_and_agree():
    frame = np.random.default_rng(0).normal(500, 30, (2048, 2048)).astype(np.float32)
    lo, hi = auto_limits(frame)
    full = np.percentile(frame, [0.5, 99.5])
    assert lo == pytest.approx(full[0], abs=2.0) and hi == pytest.approx(full[1], abs=2.0)


@pytest.mark.parametrize("bad", [(50.0, 50.0), (-1.0, 99.0), (1.0, 101.0)])
def test_auto_limits_rejects_bad_percentiles(bad):
    with pytest.raises(ValueError, match="percentiles"):
        auto_limits(RAMP, percentiles=bad)


@pytest.mark.parametrize(
    ("value", "limits", "index"),
    [
        (0, (0, 255), 0),
        (255, (0, 255), 255),
        (-5, (0, 255), 0),  # below lo: the first colour
        (300, (0, 255), 255),  # above hi: the last
        (150, (100, 200), 127),
        (np.nan, (0, 1), 0),
        (5, (5, 5), 0),  # equal limits are widened, not divided by
    ],
)
def test_to_rgba_maps_limits_onto_the_lut(value, limits, index):
    image = np.array([[value]], dtype=np.float32)
    out = to_rgba(image, limits, "gray")
    assert out.shape == (1, 1, 4) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out[0, 0], colormap_lut("gray")[index])


@pytest.mark.parametrize("name", [*COLORMAPS, DIVERGING, "no-such-map"])
def test_every_lut_is_256_rgba_opaque_and_read_only(name):
    lut = colormap_lut(name)
    assert lut.shape == (256, 4) and lut.dtype == np.uint8
    assert (lut[:, 3] == 255).all()
    assert not lut.flags.writeable


def test_colour_maps_come_from_matplotlib_and_unknown_names_fall_back_to_gray():
    from matplotlib import colormaps

    assert colormaps_available() == COLORMAPS
    magma = colormaps["magma"](np.linspace(0, 1, 256), bytes=True)
    np.testing.assert_array_equal(colormap_lut("magma"), magma)
    np.testing.assert_array_equal(colormap_lut("no-such-map"), colormap_lut("gray"))
    gray = colormap_lut("gray")
    assert (gray[:, 0] == np.arange(256)).all() and (gray[:, 0] == gray[:, 2]).all()


def test_the_diverging_map_is_white_at_its_centre_blue_below_red_above():
    lut = colormap_lut(DIVERGING)
    lo, mid, hi = lut[0, :3].astype(int), lut[128, :3].astype(int), lut[255, :3].astype(int)
    assert lo[2] > lo[0] and hi[0] > hi[2]  # blue end, red end
    assert mid.min() > 230  # near white at 0


def test_to_rgba_takes_a_lut_array_and_rejects_bad_input():
    lut = np.zeros((256, 4), np.uint8)
    lut[:, 1] = 200
    assert (to_rgba(RAMP, (0, 999), lut)[..., 1] == 200).all()
    with pytest.raises(ValueError, match="2-D"):
        to_rgba(np.zeros((2, 2, 2)), (0, 1))
    with pytest.raises(ValueError, match="LUT"):
        to_rgba(RAMP, (0, 1), np.zeros((10, 4), np.uint8))


@pytest.mark.parametrize(
    ("raw", "denoised", "expected"),
    [
        (np.array([[10]], np.uint16), np.array([[12.5]], np.float32), [[-2.5]]),  # signed
        (np.array([[65535]], np.uint16), np.array([[0.0]], np.float32), [[65535.0]]),
        (np.array([[3, 4]], np.uint8), np.array([[1, 1]], np.float32), [[2.0, 3.0]]),
    ],
)
def test_residual_is_signed_float32_raw_minus_denoised(raw, denoised, expected):
    out = residual(raw, denoised)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


def test_residual_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        residual(np.zeros((2, 2)), np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("res", "expected"),
    [
        (np.array([[-4.0, 1.0], [2.0, 3.0]]), (-4.0, 4.0)),
        (np.array([[0.0, 1.0], [2.0, 10.0]]), (-10.0, 10.0)),
        (np.zeros((3, 3)), (-1.0, 1.0)),  # all zero: still a range
    ],
)
def test_residual_limits_are_symmetric_about_zero(res, expected):
    assert residual_limits(res, percentile=100) == pytest.approx(expected)


def test_zero_residual_renders_at_the_diverging_centre():
    res = np.array([[-1.0, 0.0, 1.0]], np.float32)
    out = to_rgba(res, residual_limits(res, 100), DIVERGING)
    lut = colormap_lut(DIVERGING)
    np.testing.assert_array_equal(out[0], lut[[0, 127, 255]])


@pytest.mark.parametrize(
    ("risk", "expected_rgb"),
    [
        (0.0, (100, 100, 100)),  # no risk: unchanged
        (1.0, (193, 40, 40)),  # 0.6 red over gray 100
        (2.0, (193, 40, 40)),  # clipped to 1
        (-1.0, (100, 100, 100)),
        (np.nan, (100, 100, 100)),
        (0.25, (123, 85, 85)),
    ],
)
def test_blend_risk_veils_red_in_proportion(risk, expected_rgb):
    rgba = np.full((1, 1, 4), 100, np.uint8)
    out = blend_risk(rgba, np.array([[risk]], np.float32))
    assert tuple(out[0, 0, :3]) == expected_rgb
    assert out[0, 0, 3] == 255 and rgba[0, 0, 0] == 100  # a new image


def test_blend_risk_rejects_a_map_of_another_shape_or_alpha():
    rgba = np.zeros((2, 2, 4), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        blend_risk(rgba, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="max_alpha"):
        blend_risk(rgba, np.zeros((2, 2)), max_alpha=2)


@pytest.mark.parametrize(
    ("shape", "value"),
    [((9, 4, 4), 90.0), ((3, 3, 4, 4), 90.0), ((1, 4, 4), 90.0), ((4, 4), 90.0)],
)
def test_widefield_image_sums_the_set_in_one_frames_adu_scale(shape, value):
    frames = np.full(shape, 90, np.uint16)
    frames.reshape(-1, 4, 4)[0, 0, 0] = 0  # one pattern frame dark at one pixel
    out = widefield_image(frames)
    n = int(np.prod(shape[:-2]))
    assert out.shape == (4, 4) and out.dtype == np.float32
    assert out[1, 1] == value
    assert out[0, 0] == pytest.approx(value * (n - 1) / n)


def test_widefield_image_needs_frames():
    with pytest.raises(ValueError, match="H, W"):
        widefield_image(np.zeros(4))
