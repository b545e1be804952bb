"""Engines: ONNX export, CPU backends against the torch reference, plan cache, selection."""

import dataclasses
import importlib.util
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sn2n_live import __version__
from sn2n_live.engine._base import BackendUnavailable, Engine, InputShapes
from sn2n_live.engine._onnx import export_onnx, read_onnx_info
from sn2n_live.engine._onnxruntime import OnnxRuntimeEngine
from sn2n_live.engine._plan_cache import (
    PlanMetadata,
    StalePlanError,
    list_cached_plans,
    plan_cache_dir,
    plan_cache_key,
    plan_path,
    read_plan,
    write_plan,
)
from sn2n_live.engine._select import (
    AUTO_ORDER,
    BACKENDS,
    available_backends,
    select_engine,
)
from sn2n_live.engine._tensorrt import TENSORRT_INSTALL_HINT, TensorRTEngine, build_engine_plan
from sn2n_live.engine._torch import TorchEngine, fold_batchnorm
from sn2n_live.method._denoiser import Denoiser, TileRunner
from sn2n_live.method._package import ModelPackage
from sn2n_live.method._risk import RiskThresholds
from sn2n_live.method._unet import UNet, UNetConfig

HAS_CUDA = torch.cuda.is_available()
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="torch.cuda.is_available() is False")
needs_tensorrt = pytest.mark.skipif(
    not (HAS_CUDA and HAS_TENSORRT), reason="needs a CUDA GPU and TensorRT"
)


def _make_package(mode: str = "global", *, depth: int = 2, base: int = 8) -> ModelPackage:
    """A tiny U-Net with non-trivial BatchNorm statistics and a wide output range."""
    torch.manual_seed(0)
    config = UNetConfig(depth=depth, base_channels=base)
    net = UNet(config)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        # Untrained nets output ~0.5 everywhere; a larger last layer spreads the output
        # over [0, 1] so the comparisons below are sensitive.
        net.outc.weight.mul_(20.0)
    return ModelPackage(
        unet=config,
        state_dict=net.state_dict(),
        policy=mode,
        resolved_mode=mode,
        thresholds=RiskThresholds(),
        upsample="official",
        patch_size=32,
    )


@pytest.fixture(scope="module")
def package() -> ModelPackage:
    return _make_package()


@pytest.fixture(scope="module")
def reference(package):
    return package.build_model("cpu")


@pytest.fixture(scope="module")
def onnx_file(package, tmp_path_factory):
    return export_onnx(package, tmp_path_factory.mktemp("onnx") / "model.onnx")


def _frame(shape=(96, 80), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    clean = 40 + 300 * np.exp(-((yy - shape[0] / 3) ** 2 + (xx - shape[1] / 2) ** 2) / 150.0)
    return (rng.poisson(clean) + 100).astype(np.uint16)


def _psnr(a, b, data_range):
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)


def _ref(reference, x):
    with torch.inference_mode():
        return reference(x)


# -- ONNX export -----------------------------------------------------------------------------


def test_onnx_export_is_checked_and_carries_provenance(package, onnx_file):
    model = onnx.load(onnx_file)
    onnx.checker.check_model(model)
    info = read_onnx_info(onnx_file)
    assert info.model_sha256 == package.sha256
    assert info.sn2n_live_version == __version__
    assert info.spatial_multiple == 4
    assert info.metadata["sn2n_live.dynamic"] == "true"
    # Batch, height and width are symbolic; the channel is fixed.
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "height", "width"]
    ops = {node.op_type for node in model.graph.node}
    assert "BatchNormalization" not in ops  # folded in eval mode
    assert "Resize" in ops


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (3, 1, 16, 16), (7, 1, 64, 64), (2, 1, 32, 48)])
def test_onnx_dynamic_axes_match_torch_in_onnxruntime(onnx_file, reference, shape):
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    (out,) = session.run(None, {"input": x.numpy()})
    assert out.shape == shape
    assert np.abs(out - _ref(reference, x).numpy()).max() <= 1e-4


def test_onnx_static_export_fixes_the_shape(package, tmp_path):
    path = export_onnx(package, tmp_path / "sub" / "static.onnx", tile=16, dynamic=False, batch=2)
    model = onnx.load(path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 1, 16, 16]
    assert read_onnx_info(path).metadata["sn2n_live.dynamic"] == "false"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"tile": 30}, "multiple of 4"), ({"opset": 9}, "opset"), ({"batch": 0}, "batch")],
)
def test_onnx_export_rejects_bad_arguments(package, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_onnx(package, tmp_path / "bad.onnx", **kwargs)
    assert not (tmp_path / "bad.onnx").exists()


# -- CPU engines against the torch fp32 reference ----------------------------------------------


def test_fold_batchnorm_keeps_outputs(package, reference):
    folded = fold_batchnorm(package.build_model("cpu"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 1, 32, 32)
    with torch.inference_mode():
        assert (folded(x) - reference(x)).abs().max() <= 1e-5


CPU_ENGINES = {
    "torch-cpu": lambda p: TorchEngine(p),
    "torch-cpu-nchw-unfolded": lambda p: TorchEngine(p, channels_last=False, fold_bn=False),
    "onnxruntime-cpu": lambda p: OnnxRuntimeEngine(p, intra_op_threads=1),
}


@pytest.mark.parametrize("make", CPU_ENGINES.values(), ids=CPU_ENGINES.keys())
def test_cpu_engines_match_reference(package, reference, make):
    engine = make(package)
    assert isinstance(engine, Engine) and isinstance(engine, TileRunner)
    assert engine.device == torch.device("cpu")
    assert engine.precision == "fp32"
    assert engine.input_shapes is None
    gen = torch.Generator().manual_seed(2)
    for shape in [(1, 1, 32, 32), (5, 1, 32, 32), (2, 1, 16, 48)]:
        x = torch.rand(shape, generator=gen)
        y = engine(x)
        assert y.dtype == torch.float32 and tuple(y.shape) == shape and y.is_contiguous()
        expected = _ref(reference, x)
        assert float(expected.max() - expected.min()) > 0.1  # a sensitive comparison
        # Outputs live in [0, 1]: the data range is 1.
        assert (y - expected).abs().max() <= 1e-4


@pytest.mark.parametrize("make", CPU_ENGINES.values(), ids=CPU_ENGINES.keys())
@pytest.mark.parametrize("tile", ["package", None])
def test_engines_end_to_end_through_the_denoiser(package, make, tile):
    frame = _frame()
    expected = Denoiser(package, tile=tile).denoise(frame)
    engine = make(package)
    denoiser = Denoiser(package, tile=tile, runner=engine)
    got = denoiser.denoise(frame)
    assert got.dtype == np.float32 and got.shape == frame.shape
    data_range = float(frame.max()) - float(frame.min())
    assert np.abs(got - expected).max() <= 1e-4 * data_range
    assert denoiser.provenance["engine"] == engine.name


def test_onnxruntime_engine_from_file_and_threads(package, onnx_file, reference):
    engine = OnnxRuntimeEngine(onnx_file, intra_op_threads=1)
    assert engine.name == "onnxruntime-cpu"
    assert engine.providers == ["CPUExecutionProvider"]
    assert engine.model_sha256 == package.sha256
    assert engine.intra_op_threads == 1
    x = torch.rand(3, 1, 32, 32)
    assert (engine(x) - _ref(reference, x)).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="intra_op_threads"):
        OnnxRuntimeEngine(onnx_file, intra_op_threads=0)


def test_bf16_cpu_autocast_is_close_to_fp32(package, reference):
    engine = TorchEngine(package, precision="bf16")
    assert engine.precision == "bf16"
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    y = engine(x)
    assert y.dtype == torch.float32
    raw_psnr = _psnr(y.numpy(), _ref(reference, x).numpy(), 1.0)
    frame = _frame()
    full = Denoiser(package, runner=TorchEngine(package)).denoise(frame)
    half = Denoiser(package, runner=engine).denoise(frame)
    e2e_psnr = _psnr(half, full, float(frame.max()) - float(frame.min()))
    # Measured 56.6 dB (raw) and 56.8 dB (end to end) on this tiny net; 65 dB for lite.
    assert raw_psnr >= 45.0
    assert e2e_psnr >= 45.0
    assert np.abs(half - full).max() > 0  # bf16 really ran


def test_engines_reject_bad_batches(package):
    engine = TorchEngine(package)
    cases = [
        (np.zeros((1, 1, 32, 32), np.float32), "torch.Tensor"),
        (torch.zeros(1, 32, 32), r"\(B, 1, H, W\)"),
        (torch.zeros(1, 2, 32, 32), r"\(B, 1, H, W\)"),
        (torch.zeros(1, 1, 32, 32, dtype=torch.float64), "float32"),
        (torch.zeros(1, 1, 30, 32), "multiples of 4"),
        (torch.zeros(1, 1, 32, 32, device="meta"), "move it"),
    ]
    for batch, message in cases:
        with pytest.raises(ValueError, match=message):
            engine(batch)


def test_torch_engine_rejects_unsupported_settings(package):
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        TorchEngine(package, precision="fp16")
    with pytest.raises(ValueError, match="cuda_graphs"):
        TorchEngine(package, cuda_graphs=True)
    with pytest.raises(ValueError, match="precision"):
        TorchEngine(package, precision="int8")
    with pytest.raises(ValueError, match="device"):
        TorchEngine(package, device="meta")


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-GPU error")
def test_gpu_engines_without_cuda_raise_backend_unavailable(package):
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        TorchEngine(package, device="cuda")
    with pytest.raises(BackendUnavailable, match=r"CUDAExecutionProvider|no CUDA device"):
        OnnxRuntimeEngine(package, providers=["CUDAExecutionProvider"])


# -- input shapes --------------------------------------------------------------------------------


def test_input_shapes_validate_and_contain():
    shapes = InputShapes.for_tiles(64, 16, min_tile=32)
    assert shapes.min == (1, 1, 32, 32) and shapes.opt == shapes.max == (16, 1, 64, 64)
    assert shapes.contains((16, 1, 64, 64)) and shapes.contains((3, 1, 32, 48))
    assert not shapes.contains((17, 1, 64, 64)) and not shapes.contains((1, 1, 16, 16))
    frames = InputShapes.for_frames(100, 64, multiple=16, batch_size=2)
    assert frames.min == (1, 1, 112, 64) and frames.max == (2, 1, 112, 64)
    frames.check_multiple(16)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        InputShapes((2, 1, 8, 8), (1, 1, 8, 8), (2, 1, 8, 8))
    with pytest.raises(ValueError, match="one channel"):
        InputShapes((1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))
    with pytest.raises(ValueError, match="multiple of 16"):
        InputShapes.for_tiles(24, 4).check_multiple(16)


# -- TensorRT plan cache (no TensorRT needed) -------------------------------------------------


def _metadata(**changes) -> PlanMetadata:
    base = PlanMetadata(
        model_sha256="a" * 64,
        gpu_name="NVIDIA H100 80GB HBM3",
        trt_version="10.7.0",
        shapes=InputShapes.for_tiles(64, 32),
        precision="fp16",
        graph_sha256="b" * 64,
    )
    return dataclasses.replace(base, **changes)


def test_plan_cache_key_changes_with_every_component():
    base = _metadata()
    variants = {
        "model_sha256": "c" * 64,
        "gpu_name": "NVIDIA A100-SXM4-80GB",
        "trt_version": "10.8.0",
        "shapes": InputShapes.for_tiles(128, 32),
        "precision": "bf16",
        "graph_sha256": "d" * 64,
    }
    keys = {base.key}
    for field, value in variants.items():
        keys.add(_metadata(**{field: value}).key)
    assert len(keys) == 1 + len(variants)
    assert (
        plan_cache_key(
            base.model_sha256,
            base.gpu_name,
            base.trt_version,
            base.shapes,
            base.precision,
            graph_sha256=base.graph_sha256,
        )
        == base.key
    )
    assert len(base.key) == 32 and base.key == _metadata().key  # deterministic


def test_plan_round_trip_and_stale_plans_are_rejected(tmp_path):
    meta = _metadata()
    payload = bytes(range(256)) * 4
    path = write_plan(plan_path(meta.key, tmp_path), payload, meta)
    assert path.name == f"{meta.key}.plan"
    assert read_plan(path, meta) == payload

    # Another model/GPU/precision: the message names what changed.
    with pytest.raises(StalePlanError, match="precision: 'fp16' -> 'fp32'"):
        read_plan(path, _metadata(precision="fp32"))
    with pytest.raises(StalePlanError, match="trt_version"):
        read_plan(path, _metadata(trt_version="10.9.0"))

    # A plan copied under another engine's key is still rejected.
    other = _metadata(gpu_name="NVIDIA L4")
    foreign = plan_path(other.key, tmp_path)
    foreign.write_bytes(path.read_bytes())
    with pytest.raises(StalePlanError, match="gpu_name"):
        read_plan(foreign, other)

    # A bare TensorRT plan (no header), a truncated file and an edited header.
    bare = tmp_path / "bare.plan"
    bare.write_bytes(payload)
    with pytest.raises(StalePlanError, match="magic"):
        read_plan(bare, meta)
    truncated = tmp_path / "truncated.plan"
    truncated.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StalePlanError, match="truncated"):
        read_plan(truncated, meta)
    edited = tmp_path / "edited.plan"
    edited.write_bytes(path.read_bytes().replace(b'"precision": "fp16"', b'"precision": "fp32"'))
    with pytest.raises(StalePlanError, match="edited"):
        read_plan(edited, _metadata(precision="fp32"))
    with pytest.raises(FileNotFoundError):
        read_plan(tmp_path / "missing.plan", meta)

    listed = {entry.path.name: entry for entry in list_cached_plans(tmp_path)}
    assert listed[path.name].problem is None
    assert listed[path.name].metadata == meta
    assert listed[path.name].size_bytes == path.stat().st_size
    assert "renamed" in listed[foreign.name].problem
    assert "magic" in listed[bare.name].problem
    assert "truncated" in listed[truncated.name].problem
    assert list_cached_plans(tmp_path / "nowhere") == []


def test_plan_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SN2N_LIVE_CACHE", str(tmp_path / "cache"))
    assert plan_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("SN2N_LIVE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert plan_cache_dir() == tmp_path / ".cache" / "sn2n-live"


# -- availability and selection ---------------------------------------------------------------


def test_available_backends_report_every_backend():
    statuses = available_backends()
    assert [s.name for s in statuses] == list(BACKENDS)
    by_name = {s.name: s for s in statuses}
    assert by_name["torch-cpu"].available and by_name["torch-cpu"].devices == ("cpu",)
    assert by_name["onnxruntime-cpu"].available
    assert by_name["torch-cuda"].available == HAS_CUDA
    assert all(s.reason for s in statuses)
    if not HAS_TENSORRT:
        assert not by_name["tensorrt"].available
        assert TENSORRT_INSTALL_HINT in by_name["tensorrt"].reason


def test_auto_selection_logs_one_line_with_the_reasons(package, caplog):
    statuses = {s.name: s for s in available_backends()}
    expected = next(name for name in AUTO_ORDER if statuses[name].available)
    with caplog.at_level(logging.INFO, logger="sn2n_live.engine"):
        engine = select_engine(package, tile_shapes=InputShapes.for_tiles(32, 8))
    records = [r for r in caplog.records if r.name == "sn2n_live.engine"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert engine.name == expected
    assert line.endswith(f"using {expected} ({engine.precision})")
    for better in AUTO_ORDER[: AUTO_ORDER.index(expected)]:
        assert statuses[better].reason in line
    if not HAS_CUDA and not HAS_TENSORRT:
        assert line.startswith("tensorrt not installed: pip install 'sn2n-live[tensorrt]'")
        assert "torch-cuda: no CUDA device" in line
        assert expected == "onnxruntime-cpu" and engine.precision == "fp32"


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU-only choice")
def test_auto_selection_honours_precision(package, caplog):
    with caplog.at_level(logging.INFO, logger="sn2n_live.engine"):
        engine = select_engine(package, precision="bf16")
    assert (engine.name, engine.precision) == ("torch-cpu", "bf16")
    assert "onnxruntime-cpu: no bf16 support" in caplog.records[-1].getMessage()
    with pytest.raises(BackendUnavailable, match="fp16 needs a GPU"):
        select_engine(package, precision="fp16")


def test_forced_backends(package, caplog):
    with caplog.at_level(logging.INFO, logger="sn2n_live.engine"):
        engine = select_engine(package, "torch-cpu")
    assert engine.name == "torch-cpu"
    assert caplog.records[-1].getMessage() == "using torch-cpu (fp32, requested)"
    with pytest.raises(ValueError, match="Unknown engine 'cuda'"):
        select_engine(package, "cuda")
    with pytest.raises(ValueError, match="onnxruntime-cpu does not support bf16"):
        select_engine(package, "onnxruntime-cpu", precision="bf16")
    with pytest.raises(ValueError, match="multiple of 4"):
        select_engine(package, tile_shapes=InputShapes.for_tiles(30, 4))


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the missing-TensorRT error")
def test_forcing_tensorrt_without_it_gives_the_pip_hint(package, tmp_path):
    with pytest.raises(BackendUnavailable) as info:
        select_engine(package, "tensorrt")
    assert str(info.value) == f"tensorrt not installed: {TENSORRT_INSTALL_HINT}"
    with pytest.raises(BackendUnavailable, match=r"pypi\.nvidia\.com"):
        TensorRTEngine(package)
    with pytest.raises(BackendUnavailable, match=r"pypi\.nvidia\.com"):
        build_engine_plan(package, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- GPU ---------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_torch_cuda_matches_reference(package, reference, precision, cuda_graphs):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("GPU without bf16")
    engine = TorchEngine(package, "cuda", precision, cuda_graphs=cuda_graphs)
    for shape in [(8, 1, 32, 32), (3, 1, 32, 32), (8, 1, 32, 32)]:
        x = torch.rand(shape)
        y = engine(x.cuda()).cpu()
        expected = _ref(reference, x)
        if precision == "fp32":
            assert (y - expected).abs().max() <= 1e-3  # cuDNN may use TF32
        else:
            assert _psnr(y.numpy(), expected.numpy(), 1.0) >= 40.0


@pytest.mark.gpu
@pytest.mark.skipif(
    not HAS_CUDA or "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs a CUDA GPU and onnxruntime-gpu",
)
def test_onnxruntime_cuda_io_binding_matches(package, reference):
    engine = OnnxRuntimeEngine(package)
    assert engine.name == "onnxruntime-cuda" and engine.device.type == "cuda"
    x = torch.rand(4, 1, 32, 48)
    assert (engine(x.cuda()).cpu() - _ref(reference, x)).abs().max() <= 1e-3


@pytest.mark.gpu
@needs_tensorrt
def test_tensorrt_engine_builds_caches_and_matches(package, reference, tmp_path):
    shapes = InputShapes.for_tiles(32, 8, min_tile=16)
    engine = TensorRTEngine(package, precision="fp16", input_shapes=shapes, cache_dir=tmp_path)
    assert not engine.plan_from_cache and engine.plan_path.is_file()
    again = TensorRTEngine(package, precision="fp16", input_shapes=shapes, cache_dir=tmp_path)
    assert again.plan_from_cache and again.plan_path == engine.plan_path
    for shape in [(8, 1, 32, 32), (2, 1, 16, 16)]:
        x = torch.rand(shape)
        y = again(x.cuda()).cpu()
        assert _psnr(y.numpy(), _ref(reference, x).numpy(), 1.0) >= 40.0
    with pytest.raises(ValueError, match="outside the engine's profile"):
        again(torch.rand(9, 1, 32, 32, device="cuda"))
    frame = _frame()
    expected = Denoiser(package).denoise(frame)
    got = Denoiser(package, batch_size=8, runner=again).denoise(frame)
    assert _psnr(got, expected, float(frame.max()) - float(frame.min())) >= 40.0


def test_build_denoiser_uses_package_tile_and_builds_engine_for_it():
    from sn2n_live.engine import build_denoiser

    package = ModelPackage.untrained(UNetConfig(depth=2, base_channels=4), patch_size=32)
    tiled = build_denoiser(package, engine="torch-cpu", batch_size=8)
    assert tiled.tile == 32 and tiled.batch_size == 8
    assert tiled.provenance["engine"].startswith("torch")
    whole = build_denoiser(package, engine="onnxruntime-cpu", tile=None)
    assert whole.tile is None
    frame = np.full((48, 40), 300, np.uint16)
    np.testing.assert_allclose(whole.denoise(frame), 300.0, atol=1e-2)
    np.testing.assert_allclose(tiled.denoise(frame), 300.0, atol=1e-2)
