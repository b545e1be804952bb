import warnings

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from sn2n_live.method._unet import PRESETS, UNet, UNetConfig, check_input_shape


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_preset_has_published_parameter_count():
    # method.md §2.1: the SN2N U-Net has 17.26 M parameters.
    assert _n_params(UNet(PRESETS["paper"])) == pytest.approx(17.26e6, abs=0.01e6)


def test_presets_match_spec():
    assert PRESETS["paper"] == UNetConfig(depth=4, base_channels=64, leaky_slope=0.02)
    assert PRESETS["lite"] == UNetConfig(depth=3, base_channels=16)
    assert _n_params(UNet(PRESETS["lite"])) < _n_params(UNet(PRESETS["paper"])) / 20


@pytest.mark.parametrize(("depth", "base"), [(1, 4), (2, 4), (3, 8), (4, 8)])
def test_output_shape_and_range(depth, base):
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=depth, base_channels=base)).eval()
    assert model.multiple == 2**depth
    x = torch.rand(3, 1, 2 * model.multiple, 3 * model.multiple)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == x.shape
    assert y.dtype == torch.float32
    assert float(y.min()) >= 0.0
    assert float(y.max()) <= 1.0


def test_channel_progression_follows_sn2n_layout():
    model = UNet(PRESETS["paper"])
    # Encoder: 64, 128, 256, 512 and a 512-wide bottleneck.
    assert model.inc[0].in_channels == 1
    assert model.inc[3].out_channels == 64
    assert [d[1][3].out_channels for d in model.downs] == [128, 256, 512, 512]
    # Decoder: input = up-sampled + skip, mid = in/2, outputs 256, 128, 64, 64.
    assert [u.conv[0].in_channels for u in model.ups] == [1024, 512, 256, 128]
    assert [u.conv[0].out_channels for u in model.ups] == [512, 256, 128, 64]
    assert [u.conv[3].out_channels for u in model.ups] == [256, 128, 64, 64]
    assert model.outc.in_channels == 64
    assert model.outc.out_channels == 1
    assert model.outc.kernel_size == (1, 1)
    assert all(u.up.align_corners and u.up.mode == "bilinear" for u in model.ups)
    slopes = {m.negative_slope for m in model.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.02}
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert n_bn == 2 * (1 + 4 + 4)


def test_eval_mode_is_deterministic_and_batch_independent():
    torch.manual_seed(1)
    model = UNet(UNetConfig(depth=2, base_channels=4))
    # Give BatchNorm non-trivial running statistics, as after training.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 1, 32, 32))
    model.eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.inference_mode():
        a = model(x)
        b = model(x)
        single = model(x[1:2])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # In eval mode a sample's output does not depend on the rest of its batch.
    torch.testing.assert_close(a[1:2], single, rtol=1e-5, atol=1e-6)


def test_config_validation():
    with pytest.raises(ValidationError):
        UNetConfig(depth=0)
    with pytest.raises(ValidationError):
        UNetConfig(depth=7)
    with pytest.raises(ValidationError):
        UNetConfig(base_channels=3)
    with pytest.raises(ValidationError):
        UNetConfig(dept=4)  # extra fields are forbidden (catches typos)
    config = UNetConfig()
    with pytest.raises(ValidationError):
        config.depth = 3  # frozen


def test_check_input_shape():
    check_input_shape((2, 1, 32, 48), 16)
    check_input_shape((32, 16), 16)
    with pytest.raises(ValueError, match=r"W=40.*multiple of 16"):
        check_input_shape((1, 1, 32, 40), 16)
    with pytest.raises(ValueError, match=r"H=8, W=8"):
        check_input_shape((8, 8), 16)
    with pytest.raises(ValueError, match="at least 2 axes"):
        check_input_shape((32,), 16)


def test_exports_to_onnx_with_dynamic_shapes(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(2)
    model = UNet(UNetConfig(depth=2, base_channels=4)).eval()
    path = tmp_path / "unet.onnx"
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated upstream but is what engine/ uses.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.rand(2, 1, 32, 32),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 1, 64, 32)
    (y_onnx,) = session.run(None, {"x": x.numpy()})
    with torch.inference_mode():
        y_torch = model(x).numpy()
    np.testing.assert_allclose(y_onnx, y_torch, atol=1e-5)
