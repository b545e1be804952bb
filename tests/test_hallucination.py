"""The hallucination-risk map on twins whose outputs agree, disagree, or invent content."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sn2n_live.method import Denoised, hallucination_risk, risk_fraction
from sn2n_live.method._hallucination import fidelity_risk


def _blur(x: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    r = int(3 * sigma)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1.0) / sigma) ** 2)
    k = k / k.sum()
    y = F.pad(x[:, None], (r, r, r, r), mode="reflect")
    y = F.conv2d(F.conv2d(y, k.reshape(1, 1, 1, -1)), k.reshape(1, 1, -1, 1))
    return y[:, 0]


@pytest.fixture
def noisy_twins() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A smooth scene and two twins with independent noise (sigma 5)."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    scene = (100 + 40 * torch.exp(-((yy - 64) ** 2 + (xx - 40) ** 2) / 50.0))[None]
    a = scene + 5 * torch.randn(scene.shape, generator=g)
    b = scene + 5 * torch.randn(scene.shape, generator=g)
    return scene, a, b


def test_a_smoother_and_the_identity_are_explained_by_the_noise(noisy_twins):
    _, a, b = noisy_twins
    for out_a, out_b in ((_blur(a), _blur(b)), (a, b)):
        risk = hallucination_risk(out_a, out_b, a, b)
        assert risk.shape == a.shape
        assert float(risk.min()) >= 0.0 and float(risk.max()) <= 1.0
        assert float(risk_fraction(risk)[0]) <= 0.05


def test_amplified_noise_is_flagged_everywhere(noisy_twins):
    scene, a, b = noisy_twins
    # A network that stretches the noise (as patch-wise min-max normalization does).
    risk = hallucination_risk(scene + 3 * (a - scene), scene + 3 * (b - scene), a, b)
    assert float(risk_fraction(risk)[0]) >= 0.95


def test_structure_only_one_twin_shows_is_flagged_and_nothing_else(noisy_twins):
    _, a, b = noisy_twins
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    # A filament one output invents (five noise sigmas), absent from the other.
    invented = 25 * torch.exp(-((xx - 96 - 5 * torch.sin(yy / 9)) ** 2) / 4.5)[None]
    out_a, out_b = _blur(a) + invented, _blur(b)
    flagged = hallucination_risk(out_a, out_b, a, b) > 0.5
    area = invented > 5.0
    elsewhere = invented < 0.01
    assert float(flagged[area].float().mean()) >= 0.8
    assert float(flagged[elsewhere].float().mean()) <= 0.05


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="one \\(N, H, W\\) shape"):
        hallucination_risk(
            torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), torch.zeros(1, 8, 9)
        )


def test_denoised_is_a_frozen_record():
    d = Denoised(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), np.zeros(2))
    with pytest.raises(AttributeError):
        d.image = np.ones(1)  # type: ignore[misc]


def _raw_like_twins(scene: torch.Tensor, seed: int) -> torch.Tensor:
    """A raw frame whose per-pixel noise variance equals Var(A - B) of the fixture (50)."""
    g = torch.Generator().manual_seed(seed)
    return scene + 50**0.5 * torch.randn(scene.shape, generator=g)


def test_fidelity_accepts_a_faithful_or_smoothing_output(noisy_twins):
    scene, a, b = noisy_twins
    raw = _raw_like_twins(scene, 1)
    for output in (scene, _blur(raw, 1.5), raw):
        risk = fidelity_risk(output, raw, a, b)
        assert float(risk.min()) >= 0.0 and float(risk.max()) <= 1.0
        assert float(risk_fraction(risk)[0]) <= 0.05


def test_fidelity_flags_an_output_lifted_above_its_data(noisy_twins):
    scene, a, b = noisy_twins
    raw = _raw_like_twins(scene, 2)
    region = torch.zeros_like(scene, dtype=torch.bool)
    region[:, 70:120, 70:120] = True
    # Half a noise sigma per pixel, the size of the lift a patch-wise normalization makes.
    lifted = torch.where(region, scene + 0.5 * 50**0.5, scene)
    flagged = fidelity_risk(lifted, raw, a, b) > 0.5
    inner = torch.zeros_like(region)
    inner[:, 78:112, 78:112] = True
    assert float(flagged[inner].float().mean()) >= 0.8
    assert float(flagged[~region].float().mean()) <= 0.05
    # Output below its data (signal removed) is not what this map flags.
    lowered = torch.where(region, scene - 0.5 * 50**0.5, scene)
    assert float((fidelity_risk(lowered, raw, a, b) > 0.5).float().mean()) <= 0.05
