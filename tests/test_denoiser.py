import numpy as np
import pytest
import torch

from sn2n_live.method import _denoiser
from sn2n_live.method._denoiser import Denoiser, TileRunner, TorchRunner
from sn2n_live.method._package import ModelPackage
from sn2n_live.method._risk import RiskThresholds, denormalize, image_scale, normalize_tiles
from sn2n_live.method._tiling import gaussian_window
from sn2n_live.method._unet import UNet, UNetConfig

TINY = UNetConfig(depth=2, base_channels=4)  # multiple = 4
MODES = ["global", "local", "per_patch"]
POLICY = {"global": "global", "local": "dataset", "per_patch": "per_patch"}


def _smooth_batch(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random smooth images in [0, 1] (sums of plane waves)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.zeros(n, size, size)
    for _ in range(4):
        fy, fx, phase = torch.rand(3, n, 1, 1, generator=gen)
        out += torch.sin(2 * torch.pi * (fy * yy + fx * xx) / 20 + 2 * torch.pi * phase)
    lo = out.amin((1, 2), keepdim=True)
    hi = out.amax((1, 2), keepdim=True)
    return (out - lo) / (hi - lo)


@pytest.fixture(scope="module")
def trained_state() -> dict[str, torch.Tensor]:
    """A tiny U-Net briefly trained to denoise, so its output really depends on its input.

    A freshly initialized network is nearly constant (sigmoid of small activations), which
    would make tile-invariance checks vacuous.
    """
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = UNet(TINY).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        clean = _smooth_batch(8, 32, gen)
        noisy = (clean + 0.1 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
        loss = (model(noisy[:, None]) - clean[:, None]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _package(state: dict[str, torch.Tensor], mode: str = "global", patch: int = 64):
    return ModelPackage(
        unet=TINY,
        state_dict=state,
        policy=POLICY[mode],
        resolved_mode=mode,
        thresholds=RiskThresholds(),
        upsample="official",
        patch_size=patch,
    )


@pytest.fixture(scope="module")
def random_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return UNet(TINY).state_dict()


def _frame(shape=(160, 192), seed=0, offset=500.0) -> np.ndarray:
    """Smooth structure plus noise, in ADU."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    signal = 300 * np.sin(yy / 15) * np.cos(xx / 20)
    return (offset + signal + rng.normal(0, 20, shape)).astype(np.float32)


def _mixed_frame(seed=1) -> np.ndarray:
    """A dark, flat noisy background on the left and bright texture on the right."""
    rng = np.random.default_rng(seed)
    frame = 100 + rng.normal(0, 2, (128, 192))
    yy, xx = np.mgrid[:128, 96:192]
    frame[:, 96:] += 2000 * (1 + np.sin(yy / 4) * np.cos(xx / 5))
    return frame.astype(np.float32)


class IdentityRunner:
    """A TileRunner returning its input, so the pipeline must reproduce its input."""

    name = "identity"
    precision = "fp16"

    def __init__(self):
        self.device = torch.device("cpu")
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(batch.shape))
        return batch.clone()


class SqrtRunner:
    """A pointwise, non-linear TileRunner: its output does not depend on tiling."""

    device = torch.device("cpu")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.sqrt()


# -- correctness ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_constant_frame_gives_the_constant(random_state, mode):
    frames = np.full((2, 96, 128), 1234, np.uint16)
    out = Denoiser(_package(random_state, mode)).denoise(frames)
    # Blending identical values is exact up to float32 rounding at 1234 (ulp ~1e-4).
    np.testing.assert_allclose(out, 1234.0, rtol=0, atol=1e-3)
    if mode == "global":
        whole = Denoiser(_package(random_state, mode), tile=None).denoise(frames)
        np.testing.assert_allclose(whole, 1234.0, rtol=0, atol=1e-3)


@pytest.mark.parametrize("mode", ["local", "per_patch"])
def test_identity_runner_reproduces_frames_exactly(random_state, mode):
    frame = _mixed_frame()
    runner = IdentityRunner()
    denoiser = Denoiser(_package(random_state, mode), runner=runner, batch_size=16)
    out = denoiser.denoise(frame)
    # Tile min/max normalization is invertible, so any error would come from tiling,
    # de-normalization or blending.
    np.testing.assert_allclose(out, frame, rtol=0, atol=2e-3)
    assert {s[1:] for s in runner.shapes} == {(1, 64, 64)}
    assert max(s[0] for s in runner.shapes) == 16


def _reference_tiled(frame: np.ndarray, tile: int, mode: str, fn) -> np.ndarray:
    """Straightforward per-tile loop implementing method.md §3.6.4, as a test oracle."""
    s = tile // 2
    h, w = frame.shape
    padded = np.pad(frame, ((s, s + (-h % s)), (s, s + (-w % s))), mode="reflect")
    lo, hi = image_scale(torch.from_numpy(frame)[None])
    window = gaussian_window(tile).numpy().astype(np.float64)
    acc = np.zeros(padded.shape)
    weight = np.zeros(padded.shape)
    scales = set()
    for y0 in range(0, padded.shape[0] - tile + 1, s):
        for x0 in range(0, padded.shape[1] - tile + 1, s):
            raw = torch.from_numpy(padded[None, y0 : y0 + tile, x0 : x0 + tile].copy())
            norm, t_lo, t_hi = normalize_tiles(raw, lo, hi, mode, RiskThresholds())
            scales.add(bool(t_lo == lo))
            out = denormalize(fn(norm), t_lo, t_hi)[0].numpy()
            acc[y0 : y0 + tile, x0 : x0 + tile] += window * out
            weight[y0 : y0 + tile, x0 : x0 + tile] += window
    assert mode != "per_patch" or scales == {True, False}, "frame must mix both scales"
    return (acc / weight)[s : s + h, s : s + w]


@pytest.mark.parametrize("mode", ["local", "per_patch"])
def test_tiles_are_denormalized_with_their_own_scale_before_blending(random_state, mode):
    # The mixed frame has high-risk (frame scale) and low-risk (own min/max) tiles in
    # per_patch mode; a non-linear pointwise runner makes the result depend on each
    # tile's scale, so it matches the oracle only if every tile is de-normalized with
    # the scale its own input used.
    frame = _mixed_frame()
    expected = _reference_tiled(frame, 64, mode, torch.sqrt)
    out = Denoiser(_package(random_state, mode), runner=SqrtRunner()).denoise(frame)
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-3)


@pytest.mark.parametrize("tile", [32, 64, 128, None])
def test_global_mode_denormalizes_with_the_frame_scale(random_state, tile):
    frame = _frame((150, 190))
    out = Denoiser(_package(random_state), tile=tile, runner=SqrtRunner()).denoise(frame)
    lo = frame.min()
    hi = np.percentile(frame, 99.99)
    expected = lo + (hi - lo) * np.sqrt(np.clip((frame - lo) / (hi - lo), 0, 1))
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-3)


def test_tile_size_invariance_in_global_mode(trained_state):
    frame = _frame()
    pkg = _package(trained_state)
    outs = {tile: Denoiser(pkg, tile=tile).denoise(frame) for tile in (64, 128, None)}
    whole = outs[None]
    span = float(np.ptp(frame))
    # The denoiser really changes the frame, so agreement below is not trivial.
    assert np.abs(whole - frame).mean() > 0.01 * span
    # With eval-mode BatchNorm the network is translation-equivariant; the only tile
    # dependence is the zero padding of its convolutions near tile borders (plus, for the
    # whole frame, zero instead of reflect padding at the frame border). The Gaussian window
    # gives tile-border pixels <= 14% weight, and each pixel sits >= P/4 from the border of
    # one of its tiles. Measured against the whole frame: mean |difference| 0.22% of the
    # frame range, max 2.5% away from the frame border (up to ~17% within the ~20 px
    # receptive field of the frame border, where whole-frame mode zero-pads); tile 64 vs
    # 128: mean 0.05%, max 1.6% everywhere. The bounds allow ~2x; tiles misplaced by one
    # pixel give a mean difference of ~1%, which fails them.
    inner = (slice(24, -24), slice(24, -24))
    for tile in (64, 128):
        diff = np.abs(outs[tile] - whole) / span
        assert diff.mean() < 0.005, tile
        assert diff[inner].max() < 0.05, tile
    diff = np.abs(outs[64] - outs[128]) / span
    assert diff.mean() < 0.002
    assert diff.max() < 0.035


@pytest.mark.parametrize(("mode", "tile"), [("global", 64), ("global", None), ("local", 64)])
def test_output_is_in_photometric_units(trained_state, mode, tile):
    frame = _frame((96, 128))
    denoiser = Denoiser(_package(trained_state, mode), tile=tile)
    base = denoiser.denoise(frame)
    shifted = denoiser.denoise(frame + 1000)
    # Normalization removes the offset and de-normalization restores it exactly.
    np.testing.assert_allclose(shifted - base, 1000.0, rtol=0, atol=0.02)
    assert abs(float(base.mean()) - float(frame.mean())) < 0.1 * float(np.ptp(frame))


def test_shape_and_dtype_preserved(random_state):
    denoiser = Denoiser(_package(random_state))
    stack = _frame((64, 80)).astype(np.uint16)[None, None].repeat(3, axis=1).repeat(2, axis=0)
    out = denoiser.denoise(stack)
    assert out.shape == (2, 3, 64, 80)
    assert out.dtype == np.float32
    single = denoiser.denoise(stack[0, 0])
    assert single.shape == (64, 80)
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, out[1, 2], rtol=0, atol=1e-3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_input_dtypes_give_the_same_result(trained_state, dtype):
    frame = np.clip(_frame((64, 96), offset=120) / 4, 0, 255).round().astype(np.uint8)
    denoiser = Denoiser(_package(trained_state))
    reference = denoiser.denoise(frame.astype(np.float32))
    out = denoiser.denoise(frame.astype(dtype))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("mode", "tile"), [("local", 64), ("per_patch", 64), ("global", None)])
def test_batched_frames_equal_one_by_one(trained_state, mode, tile, monkeypatch):
    frames = np.stack([_frame((96, 128), seed=s) for s in range(3)])
    frames[1] *= 3  # frames with different scales share batches
    singles = np.stack(
        [Denoiser(_package(trained_state, mode), tile=tile).denoise(f) for f in frames]
    )
    batched = Denoiser(_package(trained_state, mode), tile=tile, batch_size=7).denoise(frames)
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-3)
    # Long stacks are processed in chunks of whole frames; results must not change.
    monkeypatch.setattr(_denoiser, "_CHUNK_TILE_PIXELS", 1)
    chunked = Denoiser(_package(trained_state, mode), tile=tile).denoise(frames)
    np.testing.assert_allclose(chunked, singles, rtol=1e-5, atol=1e-3)


def test_frames_smaller_than_tile_use_a_fitted_tile(random_state):
    frame = _mixed_frame()[:40, :100]
    runner = IdentityRunner()
    out = Denoiser(_package(random_state, "local"), runner=runner).denoise(frame)
    assert out.shape == (40, 100)
    assert {s[2:] for s in runner.shapes} == {(32, 32)}
    np.testing.assert_allclose(out, frame, rtol=0, atol=2e-3)


def test_whole_frame_pads_non_multiples(random_state):
    frame = _frame((37, 66))  # neither side a multiple of 4
    runner = IdentityRunner()
    out = Denoiser(_package(random_state), tile=None, runner=runner).denoise(frame)
    assert out.shape == (37, 66)
    assert runner.shapes == [(1, 1, 40, 68)]
    hi = np.percentile(frame, 99.99)
    np.testing.assert_allclose(out, np.minimum(frame, hi), rtol=0, atol=2e-3)


def test_denoise_tensor(trained_state):
    denoiser = Denoiser(_package(trained_state))
    frames = np.stack([_frame((64, 64), seed=s) for s in range(2)])
    out = denoiser.denoise_tensor(torch.from_numpy(frames).to(torch.float64))
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    assert out.device == denoiser.device
    assert not out.requires_grad
    np.testing.assert_allclose(out.numpy(), denoiser.denoise(frames), rtol=0, atol=1e-4)
    as_int = denoiser.denoise_tensor(torch.from_numpy(frames.round().astype(np.int32)))
    assert as_int.shape == (2, 64, 64)


def test_default_runner_and_provenance(trained_state):
    pkg = _package(trained_state, "local")
    denoiser = Denoiser(pkg, batch_size=8)
    assert isinstance(denoiser.runner, TorchRunner)
    assert isinstance(denoiser.runner, TileRunner)
    assert not denoiser.runner.model.training
    assert denoiser.tile == 64
    assert denoiser.mode == "local"
    assert denoiser.provenance == {
        "model_sha256": pkg.sha256,
        "engine": "torch",
        "precision": "fp32",
        "normalization": "dataset",
        "resolved_mode": "local",
        "tile": 64,
        "batch_size": 8,
    }
    custom = Denoiser(_package(trained_state), tile=None, runner=IdentityRunner())
    assert custom.provenance["engine"] == "identity"
    assert custom.provenance["precision"] == "fp16"
    assert custom.provenance["tile"] is None
    # A runner without name/precision attributes gets the defaults.
    plain = Denoiser(_package(trained_state), runner=SqrtRunner())
    assert (plain.provenance["engine"], plain.provenance["precision"]) == ("torch", "fp32")


# -- errors -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def denoiser(random_state) -> Denoiser:
    return Denoiser(_package(random_state))


def test_rejects_bad_shapes(denoiser):
    with pytest.raises(ValueError, match=r"at least 2 axes.*shape \(64,\)"):
        denoiser.denoise(np.zeros(64))
    with pytest.raises(ValueError, match=r"empty \(shape \(0, 64, 64\)\)"):
        denoiser.denoise(np.zeros((0, 64, 64)))
    with pytest.raises(ValueError, match="3x64 pixels are smaller than this model's minimum side"):
        denoiser.denoise(np.zeros((3, 64)))


def test_rejects_non_real_dtypes(denoiser):
    with pytest.raises(ValueError, match="dtype bool"):
        denoiser.denoise(np.zeros((64, 64), bool))
    with pytest.raises(ValueError, match="dtype complex64"):
        denoiser.denoise(np.zeros((64, 64), np.complex64))
    with pytest.raises(ValueError, match=r"dtype torch\.complex64"):
        denoiser.denoise_tensor(torch.zeros(1, 64, 64, dtype=torch.complex64))


def test_rejects_nan_and_inf_with_count_and_location(denoiser):
    frames = np.ones((2, 3, 64, 64), np.float32)
    frames[1, 0, 5, 7] = np.nan
    frames[1, 2, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 NaN/inf value\(s\).*first is at index \[1, 0, 5, 7\]"):
        denoiser.denoise(frames)
    tensor = torch.ones(2, 64, 64)
    tensor[1, 9, 3] = -torch.inf
    with pytest.raises(ValueError, match=r"1 NaN/inf value\(s\).*\[1, 9, 3\]"):
        denoiser.denoise_tensor(tensor)


def test_denoise_tensor_input_errors(denoiser):
    with pytest.raises(ValueError, match=r"expects a torch\.Tensor"):
        denoiser.denoise_tensor(np.zeros((1, 64, 64)))
    with pytest.raises(ValueError, match=r"\(N, H, W\).*frames\[None\]"):
        denoiser.denoise_tensor(torch.zeros(64, 64))


def test_constructor_errors(random_state):
    with pytest.raises(ValueError, match=r"Whole-frame inference.*'global'.*uses 'local'"):
        Denoiser(_package(random_state, "local"), tile=None)
    with pytest.raises(ValueError, match="uses 'per_patch'"):
        Denoiser(_package(random_state, "per_patch"), tile=None)
    with pytest.raises(ValueError, match="tile=30 is not a multiple of 4"):
        Denoiser(_package(random_state), tile=30)
    with pytest.raises(ValueError, match="positive int"):
        Denoiser(_package(random_state), tile=-8)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        Denoiser(_package(random_state), batch_size=0)


def test_runner_returning_wrong_shape(random_state):
    class Cropper:
        device = torch.device("cpu")

        def __call__(self, batch: torch.Tensor) -> torch.Tensor:
            return batch[..., 1:, :]

    with pytest.raises(ValueError, match="TileRunner must return its input's shape"):
        Denoiser(_package(random_state), runner=Cropper()).denoise(_frame((64, 64)))


# -- CUDA upload path (pinned buffers, overlapped copies) ---------------------------------


@pytest.mark.parametrize(
    "dtype", [np.uint16, np.dtype(">u2"), np.uint8, np.int16, np.int32, np.float64, np.float16]
)
def test_upload_encoding_is_lossless(dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        values = np.linspace(info.min, info.max, 4096).round().astype(dtype)
    else:
        values = np.linspace(-1e3, 6e4, 4096).astype(dtype)
    stack = values.reshape(1, 64, 64)
    host = _denoiser._uploadable(stack)
    assert host.dtype in _denoiser._TORCH_DTYPES
    assert host.itemsize <= max(stack.itemsize, 4)  # camera data is never widened to float
    decoded = _denoiser._decode_upload(torch.from_numpy(host.copy()), stack.dtype)
    assert decoded.dtype == torch.float32
    np.testing.assert_array_equal(decoded.numpy(), stack.astype(np.float32))


@pytest.mark.parametrize(
    ("tile", "batch", "expected"),
    # 160x192 frames, 64-px tiles at 50% overlap with P/2 padding: 6 x 7 = 42 tiles.
    [(64, 8, 1), (64, 64, 1), (64, 256, 6), (None, 4, 1), (None, 64, 8)],
)
def test_frames_per_call_fill_one_network_call(random_state, tile, batch, expected):
    denoiser = Denoiser(_package(random_state, "global"), tile=tile, batch_size=batch)
    assert denoiser._frames_per_call((160, 192)) == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda.is_available() is False")
@pytest.mark.parametrize(("mode", "tile"), [("per_patch", 64), ("global", None)])
def test_cuda_streamed_denoise_matches_cpu(trained_state, mode, tile):
    frames = np.stack([_frame((96, 128), seed=s) for s in range(5)])
    frames = (frames * 40).clip(0, 65535).astype(np.uint16)  # values above int16's range
    assert frames.max() > 32767
    package = _package(trained_state, mode)
    cpu = Denoiser(package, tile=tile).denoise(frames)
    # batch_size 8: several groups per call, so uploads and downloads overlap compute.
    gpu = Denoiser(package, tile=tile, batch_size=8, device="cuda")
    assert gpu._frames_per_call(frames.shape[-2:]) < len(frames)
    out = gpu.denoise(frames)
    assert out.dtype == np.float32 and out.shape == frames.shape
    np.testing.assert_allclose(out, cpu, rtol=1e-4, atol=1e-3 * float(frames.max()))


# ---------------------------------------------------------------------------- twin inference


def _twin_package(state: dict[str, torch.Tensor], mode: str = "global") -> ModelPackage:
    return ModelPackage(
        unet=TINY,
        state_dict=state,
        policy=POLICY[mode],
        resolved_mode=mode,
        thresholds=RiskThresholds(patch_size=16),
        upsample="exact",
        patch_size=32,
        scale="background",
        inference="twins",
    )


def test_twin_inference_is_the_mean_of_the_denoised_twins(trained_state):
    from sn2n_live.method import frame_scale, make_twins_tensor

    gen = torch.Generator().manual_seed(3)
    frames = 100 + 50 * _smooth_batch(2, 64, gen) + 3 * torch.randn(2, 64, 64, generator=gen)
    package = _twin_package(trained_state)
    denoiser = Denoiser(package)
    assert denoiser.tile is None  # global twin packages run whole frames
    got = torch.from_numpy(denoiser.denoise(frames.numpy()))
    lo, hi = frame_scale(frames, "background", package.thresholds)
    a, b = make_twins_tensor(frames)
    model = package.build_model()
    span = (hi - lo)[:, None, None]

    def run(twin: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            y = model(((twin - lo[:, None, None]) / span)[:, None])[:, 0]
        return y * span + lo[:, None, None]

    torch.testing.assert_close(got, 0.5 * (run(a) + run(b)), atol=1e-3, rtol=1e-5)


def test_twin_inference_handles_odd_frames_and_keeps_tiles_for_patchwise_modes(trained_state):
    odd = np.random.default_rng(0).poisson(30, (2, 45, 38)).astype(np.uint16) + 100
    out = Denoiser(_twin_package(trained_state)).denoise(odd)
    assert out.shape == odd.shape and np.isfinite(out).all()
    assert Denoiser(_twin_package(trained_state, "local")).tile == 32


def test_risk_comes_with_the_same_image(trained_state):
    frames = np.random.default_rng(1).poisson(30, (3, 64, 64)).astype(np.float32) + 100
    for package in (_twin_package(trained_state), _package(trained_state, "global", 32)):
        denoiser = Denoiser(package)
        result = denoiser.denoise(frames, risk=True)
        np.testing.assert_allclose(result.image, denoiser.denoise(frames), atol=1e-4)
        assert result.risk.shape == frames.shape and result.risk_fraction.shape == (3,)
        assert result.risk.min() >= 0.0 and result.risk.max() <= 1.0
