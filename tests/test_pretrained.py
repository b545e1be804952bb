"""The shipped pretrained lite model: what it is, that it denoises, and fine-tuning from it."""

from __future__ import annotations

import numpy as np
import pytest

from sn2n_live.method import (
    PRETRAINED,
    Denoiser,
    ModelPackageError,
    TrainingConfig,
    _pretrained,
    initial_package,
    pretrained_package,
    pretrained_path,
    save_package,
    train,
)
from sn2n_live.simulation import simulate_sim_frames


@pytest.fixture(scope="module")
def pretrained():
    return pretrained_package()


def _psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(estimate, np.float64) - clean) ** 2))
    return 10 * np.log10(float(np.ptp(clean)) ** 2 / mse)


def test_it_is_a_twin_lite_package_with_its_recipe_in_the_provenance(pretrained):
    assert PRETRAINED == ("lite",)
    assert pretrained.inference == "twins" and pretrained.unet.base_channels == 16
    made = pretrained.provenance["pretraining"]
    assert made["command"].startswith("python scripts/pretrain.py")
    seeds = [s["seed"] for s in made["samples"]]
    # Away from the seeds of the benchmarks, the demo and these tests (0-2999).
    assert min(seeds) >= 100_000 and len(set(seeds)) == len(seeds)
    assert {s["modality"] for s in made["samples"]} == {"sim", "widefield"}
    assert made["n_frames"] == pretrained.provenance["pretraining"]["n_frames"] > 100


def test_it_denoises_unseen_frames_without_any_training(pretrained):
    frames = simulate_sim_frames((128, 128), photons=20, seed=7)
    raw, clean = frames.raw.reshape(-1, 128, 128), frames.clean.reshape(-1, 128, 128)
    denoised = Denoiser(pretrained).denoise(raw)
    gain = np.mean(
        [_psnr(d, c) - _psnr(r, c) for d, r, c in zip(denoised, raw, clean, strict=True)]
    )
    assert gain > 10.0  # raw 20-photon SIM frames are ~17 dB; the model gives ~30


def test_fine_tuning_starts_from_it_and_records_it(pretrained):
    frames = simulate_sim_frames((128, 128), photons=20, seed=8).raw.reshape(-1, 128, 128)
    config = TrainingConfig(preset="lite", epochs=1, device="cpu")
    tuned = train(frames, config, init=pretrained)
    scratch = train(frames, config)
    assert tuned.provenance["init"]["name"] == "lite"
    assert tuned.provenance["init"]["weights_sha256"] == pretrained.sha256
    assert tuned.training["best_val_loss"] < scratch.training["best_val_loss"]


def test_initial_package_resolves_every_choice(pretrained, tmp_path):
    assert initial_package("scratch") is None
    assert initial_package("pretrained").sha256 == pretrained.sha256
    path = save_package(pretrained, tmp_path / "start.sn2n")
    assert initial_package(path).sha256 == pretrained.sha256
    with pytest.raises(ModelPackageError, match="does not exist"):
        initial_package(tmp_path / "missing.sn2n")
    with pytest.raises(ValueError, match="no pretrained model 'paper'"):
        pretrained_path("paper")


def test_a_missing_shipped_file_says_how_to_regenerate_it(monkeypatch, tmp_path):
    monkeypatch.setattr(_pretrained, "pretrained_path", lambda name="lite": tmp_path / "x.sn2n")
    with pytest.raises(ModelPackageError, match="make pretrained"):
        pretrained_package()
