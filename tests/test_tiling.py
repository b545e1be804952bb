import math

import pytest
import torch

from sn2n_live.method._tiling import (
    TilePlan,
    blend_tiles,
    extract_tiles,
    fit_tile,
    gaussian_window,
    plan_tiles,
)

SHAPES_AND_TILES = [
    ((64, 64), 64),
    ((64, 64), 16),
    ((65, 100), 32),
    ((33, 47), 16),
    ((128, 40), 32),
    ((96, 200), 64),
    ((17, 9), 8),
]


def _coverage(plan: TilePlan) -> torch.Tensor:
    """Count, from the plan's numbers alone, how many tiles cover each original pixel."""
    count = torch.zeros(plan.padded_shape, dtype=torch.int64)
    for iy in range(plan.grid[0]):
        for ix in range(plan.grid[1]):
            y0, x0 = iy * plan.stride, ix * plan.stride
            count[y0 : y0 + plan.tile, x0 : x0 + plan.tile] += 1
    top, _, left, _ = plan.pad
    h, w = plan.frame_shape
    return count[top : top + h, left : left + w]


@pytest.mark.parametrize(("shape", "tile"), SHAPES_AND_TILES)
def test_plan_geometry(shape, tile):
    plan = plan_tiles(shape, tile)
    h, w = shape
    top, bottom, left, right = plan.pad
    assert plan.stride == tile // 2
    assert top == left == tile // 2
    assert tile // 2 <= bottom < tile
    assert tile // 2 <= right < tile
    assert plan.padded_shape == (h + top + bottom, w + left + right)
    # The grid exactly spans the padded frame.
    for axis in range(2):
        assert (plan.grid[axis] - 1) * plan.stride + tile == plan.padded_shape[axis]
    # Reflect padding is only valid for pads smaller than the side.
    assert max(top, bottom) < h
    assert max(left, right) < w


@pytest.mark.parametrize(("shape", "tile"), SHAPES_AND_TILES)
def test_every_pixel_has_four_contributors(shape, tile):
    assert torch.all(_coverage(plan_tiles(shape, tile)) == 4)


@pytest.mark.parametrize(("shape", "tile"), SHAPES_AND_TILES)
def test_extract_then_blend_reproduces_frames(shape, tile):
    gen = torch.Generator().manual_seed(0)
    frames = torch.rand(3, *shape, generator=gen) * 1000 + 100
    plan = plan_tiles(shape, tile)
    tiles = extract_tiles(frames, plan)
    assert tiles.shape == (3 * plan.n_tiles, tile, tile)
    out = blend_tiles(tiles, plan, gaussian_window(tile), n_frames=3)
    assert out.shape == frames.shape
    torch.testing.assert_close(out, frames, rtol=1e-6, atol=1e-3)


def test_tiles_are_frame_major_row_major_and_reflect_padded():
    frames = torch.arange(2 * 8 * 12, dtype=torch.float32).reshape(2, 8, 12)
    plan = plan_tiles((8, 12), 4)
    tiles = extract_tiles(frames, plan).reshape(2, *plan.grid, 4, 4)
    # Tile (1, 1) starts at padded (2, 2) = original (0, 0).
    torch.testing.assert_close(tiles[1, 1, 1], frames[1, :4, :4])
    # Tile (2, 3) starts at padded (4, 6) = original (2, 4).
    torch.testing.assert_close(tiles[0, 2, 3], frames[0, 2:6, 4:8])
    # Tile (0, 0) covers padded rows/cols -2..1: reflection without repeating the edge.
    torch.testing.assert_close(tiles[0, 0, 0, 0, 0], frames[0, 2, 2])
    torch.testing.assert_close(tiles[0, 0, 0, 2:, 2:], frames[0, :2, :2])


def test_blend_is_weighted_mean():
    plan = plan_tiles((16, 16), 8)
    window = gaussian_window(8)
    # Every tile constant with its own value: the result is a convex combination, so it
    # lies between the extremes and equals the constant when all tiles agree.
    values = torch.arange(plan.n_tiles, dtype=torch.float32)
    tiles = values[:, None, None].expand(plan.n_tiles, 8, 8).contiguous()
    out = blend_tiles(tiles, plan, window, n_frames=1)
    assert float(out.min()) >= 0.0
    assert float(out.max()) <= plan.n_tiles - 1
    same = blend_tiles(torch.full_like(tiles, 7.5), plan, window, n_frames=1)
    torch.testing.assert_close(same, torch.full((1, 16, 16), 7.5))
    # The pixel at the centre of tile (1, 1) gets the largest weight from that tile.
    centre = out[0, 3:5, 3:5]
    neighbours = torch.tensor([values[0], values[1], values[plan.grid[1]]]).max()
    assert float(centre.mean()) > float(neighbours)


@pytest.mark.parametrize("tile", [8, 63, 64, 128])
def test_gaussian_window_properties(tile):
    w = gaussian_window(tile)
    assert w.shape == (tile, tile)
    assert w.dtype == torch.float32
    assert float(w.max()) == pytest.approx(1.0)
    # Symmetric about (P-1)/2 in both axes and isotropic.
    torch.testing.assert_close(w, w.flip(0))
    torch.testing.assert_close(w, w.flip(1))
    torch.testing.assert_close(w, w.T)
    # Maximum at the centre pixel(s).
    c = (tile - 1) // 2
    assert float(w[c, c]) == pytest.approx(1.0)
    assert float(w.min()) > 0.0
    # sigma = P/4: the profile along the central row follows exp(-d^2 / (2 sigma^2)).
    sigma = tile / 4
    row = w[c] / w[c, c]
    d = torch.arange(tile, dtype=torch.float64) - (tile - 1) / 2
    d0 = d[c]
    expected = torch.exp(-(d**2 - d0**2) / (2 * sigma**2)).to(torch.float32)
    torch.testing.assert_close(row, expected, rtol=1e-5, atol=1e-7)


def test_gaussian_window_edge_weights_match_asn2n():
    # method.md §3.4: for P=64, about 0.14 at the middle of an edge and 0.021 at a corner.
    w = gaussian_window(64)
    assert float(w[0, 31]) == pytest.approx(0.14, abs=0.01)
    assert float(w[0, 0]) == pytest.approx(0.021, abs=0.002)


def test_gaussian_window_floor_and_sigma_scale():
    eps = torch.finfo(torch.float32).eps
    narrow = gaussian_window(64, sigma_scale=64.0)
    assert float(narrow.min()) == pytest.approx(eps)
    wide = gaussian_window(64, sigma_scale=2.0)
    assert float(wide[0, 0]) > float(gaussian_window(64)[0, 0])
    with pytest.raises(ValueError, match="sigma_scale"):
        gaussian_window(64, sigma_scale=0.0)
    with pytest.raises(ValueError, match="positive"):
        gaussian_window(0)


def test_fit_tile():
    assert fit_tile((512, 512), 64, 16) == 64
    assert fit_tile((64, 300), 64, 16) == 64
    assert fit_tile((100, 300), 128, 16) == 64
    assert fit_tile((40, 300), 64, 16) == 32
    assert fit_tile((20, 20), 64, 16) == 16
    assert fit_tile((200, 200), 96, 16) == 96
    assert fit_tile((90, 200), 96, 16) == 64
    with pytest.raises(ValueError, match="smaller than the network's minimum"):
        fit_tile((15, 300), 64, 16)
    with pytest.raises(ValueError, match="not a positive multiple of 16"):
        fit_tile((512, 512), 40, 16)
    with pytest.raises(ValueError, match="not a positive multiple"):
        fit_tile((512, 512), 0, 16)
    with pytest.raises(ValueError, match="even"):
        fit_tile((512, 512), 64, 3)


def test_fit_tile_result_is_plannable():
    for side in range(16, 140, 7):
        tile = fit_tile((side, side + 3), 128, 16)
        assert tile % 16 == 0
        assert math.log2(tile // 16).is_integer() or tile == 128
        plan = plan_tiles((side, side + 3), tile)
        assert torch.all(_coverage(plan) == 4)


def test_plan_errors():
    with pytest.raises(ValueError, match=r"larger than the frame 40x300.*fit_tile"):
        plan_tiles((40, 300), 64)
    with pytest.raises(ValueError, match="even"):
        plan_tiles((64, 64), 15)
    with pytest.raises(ValueError, match="even"):
        plan_tiles((64, 64), 0)


def test_extract_and_blend_errors():
    plan = plan_tiles((32, 32), 16)
    with pytest.raises(ValueError, match=r"\(N, 32, 32\)"):
        extract_tiles(torch.zeros(1, 32, 40), plan)
    with pytest.raises(ValueError, match=r"\(N, 32, 32\)"):
        extract_tiles(torch.zeros(32, 32), plan)
    with pytest.raises(ValueError, match="floating-point"):
        extract_tiles(torch.zeros(1, 32, 32, dtype=torch.int32), plan)
    tiles = extract_tiles(torch.zeros(2, 32, 32), plan)
    with pytest.raises(ValueError, match="for 1 frame"):
        blend_tiles(tiles, plan, gaussian_window(16), n_frames=1)
    with pytest.raises(ValueError, match="window"):
        blend_tiles(tiles, plan, gaussian_window(8), n_frames=2)
