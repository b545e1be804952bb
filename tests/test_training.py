"""Tests of Adaptive-SN2N data generation and training (tiny U-Nets, 96 px frames)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sn2n_live.method._package import load_package, save_package
from sn2n_live.method._recipes import RECIPES, Recipe
from sn2n_live.method._risk import RiskThresholds, frame_scale
from sn2n_live.method._training import (
    TrainingConfig,
    _cosine_factor,
    _seconds_left,
    _sn2n_loss,
    data_sha256,
    make_batches,
    make_training_pairs,
    random_dihedral,
    signal_to_noise_ratio,
    train,
)
from sn2n_live.method._twins import make_twins, make_twins_tensor
from sn2n_live.method._unet import UNetConfig

TINY = UNetConfig(depth=2, base_channels=4)
# 32 px analysis patches give a 3x3 risk map on the 96 px test frames.
THRESHOLDS = RiskThresholds(patch_size=32)


def _config(**overrides: object) -> TrainingConfig:
    # The published recipe: these tests pin its data generation and optimizer; the twin
    # recipe has tests of its own below.
    settings: dict[str, object] = {
        "recipe": "paper",
        "unet": TINY,
        "patch": 32,
        "batch_size": 8,
        "epochs": 2,
        "val_fraction": 0.2,
        "thresholds": THRESHOLDS,
        "policy": "global",
        "lr": 2e-3,
        "device": "cpu",
    }
    settings.update(overrides)
    return TrainingConfig(**settings)  # type: ignore[arg-type]


def _blobs(n: int, shape: tuple[int, int] = (96, 96), *, n_blobs: int = 14, seed: int = 0):
    """Gaussian blobs on a dark background with Poisson noise, as uint16 ADU (offset 100)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    frames = []
    for _ in range(n):
        clean = np.zeros(shape)
        for cy, cx in rng.uniform((0, 0), shape, size=(n_blobs, 2)):
            clean += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5**2))
        photons = 200.0 * clean / clean.max() + 1.0
        frames.append(rng.poisson(photons) + 100)
    return np.stack(frames).astype(np.uint16)


def _texture(n: int, shape: tuple[int, int] = (96, 96), *, seed: int = 0) -> np.ndarray:
    """A dense full-range texture with Poisson noise: every patch is low risk."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    clean = 0.5 + 0.5 * np.sin(2 * np.pi * xx / 7.0) * np.sin(2 * np.pi * yy / 9.0)
    return (rng.poisson(200.0 * clean + 20.0, size=(n, *shape)) + 100).astype(np.uint16)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return _blobs(2)


@pytest.fixture(scope="module")
def base_run(frames, tmp_path_factory):
    """A 4-epoch run that also leaves its final checkpoint behind."""
    ckpt = tmp_path_factory.mktemp("base") / "run.ckpt"
    package = train(frames, _config(epochs=4), checkpoint_path=ckpt)
    return package, ckpt


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"patch": 48}, "power of two"),
        ({"patch": 8}, "power of two >= 16"),
        ({"patch": 16, "unet": UNetConfig(depth=5, base_channels=4)}, "2\\*\\*depth = 32"),
        ({"patch": 32, "unet": UNetConfig(depth=5, base_channels=4), "upsample": "none"}, "32"),
        ({"val_fraction": 0.5}, "val_fraction"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"epochs": 0}, "epochs"),
        ({"max_minutes": 0.0}, "max_minutes"),
        ({"unet": None, "preset": "huge"}, "(?s)preset.*'paper' or 'lite'.*'huge'"),
        ({"betas": (0.5, 1.0)}, "betas"),
        ({"device": "toaster"}, "device"),
        ({"learning_rate": 1e-3}, "learning_rate"),
    ],
)
def test_config_rejects_bad_values_clearly(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_config_resolves_preset_and_is_frozen():
    config = TrainingConfig(preset="lite")
    assert config.unet_config == UNetConfig(depth=3, base_channels=16, head="linear")
    assert _config().unet_config == TINY
    with pytest.raises(ValueError, match="frozen"):
        config.patch = 128  # type: ignore[misc]


# --------------------------------------------------------------------------- pairs


@pytest.mark.parametrize(("shape", "per_frame"), [((96, 96), 25), ((96, 80), 20), ((40, 33), 1)])
def test_pairs_keep_every_half_overlapping_window(shape, per_frame):
    pairs = make_training_pairs(_blobs(2, shape), _config())
    # floor((H - P) / (P / 2)) + 1 windows per axis, every window kept.
    assert per_frame == ((shape[0] - 32) // 16 + 1) * ((shape[1] - 32) // 16 + 1)
    assert pairs.n_pairs == 2 * per_frame
    for twin in (pairs.a, pairs.b):
        assert twin.shape == (2 * per_frame, 1, 32, 32)
        assert twin.dtype == torch.float32
        assert float(twin.min()) >= 0.0 and float(twin.max()) <= 1.0
    assert pairs.resolved_mode == "global"
    assert pairs.high_risk.shape == (2 * per_frame,)


def test_pairs_without_upsampling_are_half_size():
    pairs = make_training_pairs(_blobs(1), _config(upsample="none"))
    assert pairs.a.shape == (25, 1, 16, 16)


def test_global_pairs_are_twins_on_the_frame_scale(frames):
    pairs = make_training_pairs(frames[:1], _config(policy="global"))
    frame = frames[0].astype(np.float32)
    lo, hi = frame.min(), np.percentile(frame, 99.99)
    # Window (row 1, col 2) of the 5x5 grid starts at (16, 32).
    window = frame[16:48, 32:64] - lo
    ref_a, ref_b = make_twins(window, "official")
    index = 1 * 5 + 2
    np.testing.assert_allclose(
        pairs.a[index, 0].numpy(), np.clip(ref_a / (hi - lo), 0, 1), atol=2e-5
    )
    np.testing.assert_allclose(
        pairs.b[index, 0].numpy(), np.clip(ref_b / (hi - lo), 0, 1), atol=2e-5
    )
    # The frame scale keeps dark windows dark: not every twin spans [0, 1].
    assert float(pairs.a.amax(dim=(1, 2, 3)).min()) < 0.5


def test_local_pairs_are_each_min_max_normalized(frames):
    pairs = make_training_pairs(frames, _config(policy="local"))
    for twin in (pairs.a, pairs.b):
        np.testing.assert_allclose(twin.amin(dim=(1, 2, 3)).numpy(), 0.0, atol=1e-6)
        np.testing.assert_allclose(twin.amax(dim=(1, 2, 3)).numpy(), 1.0, atol=1e-6)


def test_per_patch_pairs_follow_the_window_risk():
    # Left half dark background with blobs, right half dense texture: both risk classes.
    mixed = _blobs(1, n_blobs=3)
    mixed[:, :, 48:] = _texture(1)[:, :, 48:]
    glob = make_training_pairs(mixed, _config(policy="global"))
    local = make_training_pairs(mixed, _config(policy="local"))
    mixed_pairs = make_training_pairs(mixed, _config(policy="per_patch"))
    high = mixed_pairs.high_risk
    assert mixed_pairs.resolved_mode == "per_patch"
    assert 0 < int(high.sum()) < mixed_pairs.n_pairs
    assert mixed_pairs.high_risk_fraction == pytest.approx(float(high.float().mean()))
    for name in ("a", "b"):
        got = getattr(mixed_pairs, name)
        torch.testing.assert_close(got[high], getattr(glob, name)[high])
        torch.testing.assert_close(got[~high], getattr(local, name)[~high])


@pytest.mark.parametrize(("data", "expected"), [("dark", "global"), ("texture", "local")])
def test_dataset_policy_resolves_from_the_pooled_risk(data, expected):
    frames = _blobs(2, n_blobs=3) if data == "dark" else _texture(2)
    pairs = make_training_pairs(frames, _config(policy="dataset"))
    assert pairs.resolved_mode == expected
    ratio = pairs.dataset_high_risk_fraction
    assert ratio is not None
    assert (ratio > THRESHOLDS.dataset_high_risk_fraction) == (expected == "global")


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((96, 96), np.uint16), r"\(N, H, W\)"),
        (np.zeros((2, 96, 20), np.uint16), "96x20, smaller than the 32x32"),
        (np.zeros((0, 96, 96), np.uint16), "empty"),
        (np.zeros((1, 96, 96), bool), "integer or float"),
        (np.full((1, 96, 96), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_frames_raise_clear_errors(frames, message):
    with pytest.raises(ValueError, match=message):
        make_training_pairs(frames, _config())


def test_training_needs_a_window_to_validate():
    with pytest.raises(ValueError, match="only 1 training window"):
        train(_blobs(1, (32, 32)), _config())


# --------------------------------------------------------------------------- batches


def test_make_batches_are_full_shuffled_mini_batches():
    gen = torch.Generator().manual_seed(0)
    first = make_batches(50, 8, gen)
    second = make_batches(50, 8, gen)
    assert [len(b) for b in first] == [8] * 6
    flat = torch.cat(first)
    assert len(set(flat.tolist())) == 48 and int(flat.max()) < 50
    assert not torch.equal(flat, torch.cat(second))  # reshuffled every epoch
    assert [len(b) for b in make_batches(5, 8, gen)] == [5]


def test_random_dihedral_applies_one_shared_transform_per_pair():
    image = torch.arange(16 * 16, dtype=torch.float32).reshape(1, 1, 16, 16)
    options = [
        torch.rot90(base, k, dims=(-2, -1)) for base in (image, image.flip(-1)) for k in range(4)
    ]
    a = image.repeat(64, 1, 1, 1)
    out_a, out_b = random_dihedral(a, 2 * a, torch.Generator().manual_seed(1))
    seen = set()
    for sample_a, sample_b in zip(out_a, out_b, strict=True):
        match = [i for i, opt in enumerate(options) if torch.equal(sample_a, opt[0])]
        assert len(match) == 1
        assert torch.equal(sample_b, 2 * sample_a)
        seen.add(match[0])
    assert seen == set(range(8))


# --------------------------------------------------------------------------- training


def test_training_learns_and_reports(base_run, frames, tmp_path):
    package, _ = base_run
    stats = package.training
    assert stats["stopped_reason"] == "epochs"
    assert stats["epochs_run"] == 4 and len(stats["train_loss"]) == 4
    assert stats["val_loss"][-1] < stats["val_loss"][0]
    assert stats["train_loss"][-1] < stats["train_loss"][0]
    assert stats["best_val_loss"] == min(stats["val_loss"])
    assert stats["best_epoch"] == 1 + int(np.argmin(stats["val_loss"]))
    # 50 windows: 10 validation, 40 training in full batches of 8.
    assert (stats["n_pairs_train"], stats["n_pairs_val"], stats["steps_per_epoch"]) == (40, 10, 5)
    assert stats["lr"] == [2e-3] * 4
    assert package.resolved_mode == "global" and package.patch_size == 32
    prov = package.provenance
    assert prov["data_sha256"] == data_sha256(frames)
    assert prov["device"] == "cpu" and prov["seed"] == 0
    assert TrainingConfig.model_validate_json(prov["config"]) == _config(epochs=4)
    assert set(prov["versions"]) == {"sn2n_live", "torch", "numpy", "python"}
    assert all(t.device.type == "cpu" for t in package.state_dict.values())
    # The package round-trips through a .sn2n file and denoises.
    loaded = load_package(save_package(package, tmp_path / "model.sn2n"))
    assert loaded.sha256 == package.sha256
    with torch.no_grad():
        out = loaded.build_model()(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 1, 32, 32)


def test_same_seed_same_weights_other_seed_different(base_run, frames):
    package, _ = base_run
    again = train(frames, _config(epochs=4))
    other = train(frames, _config(epochs=4, seed=1))
    for name, tensor in package.state_dict.items():
        assert torch.equal(tensor, again.state_dict[name]), name
    assert again.training["val_loss"] == package.training["val_loss"]
    assert any(not torch.equal(t, other.state_dict[k]) for k, t in package.state_dict.items())


def test_resume_matches_an_uninterrupted_run(base_run, frames, tmp_path):
    package, full_ckpt = base_run
    ckpt = tmp_path / "half.ckpt"
    half = train(frames, _config(epochs=2), checkpoint_path=ckpt)
    assert half.training["epochs_run"] == 2
    resumed = train(frames, _config(epochs=4), resume_from=ckpt, checkpoint_path=ckpt)
    for name, tensor in package.state_dict.items():
        assert torch.equal(tensor, resumed.state_dict[name]), name
    for key in ("train_loss", "val_loss", "lr", "best_epoch", "epochs_run"):
        assert resumed.training[key] == package.training[key], key
    # The final (not only the best) weights match too.
    full = torch.load(full_ckpt, weights_only=True)
    part = torch.load(ckpt, weights_only=True)
    assert full["epoch"] == part["epoch"] == 4
    for name, tensor in full["model"].items():
        assert torch.equal(tensor, part["model"][name]), name


def test_resume_refuses_other_data_or_settings(base_run, frames):
    _, ckpt = base_run
    with pytest.raises(ValueError, match="different training frames"):
        train(_blobs(2, seed=5), _config(epochs=5), resume_from=ckpt)
    with pytest.raises(ValueError, match="different training settings \\(lr\\)"):
        train(frames, _config(epochs=5, lr=1e-3), resume_from=ckpt)


def test_resume_rejects_a_file_that_is_not_a_checkpoint(frames, tmp_path):
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable sn2n-live checkpoint"):
        train(frames, _config(), resume_from=bogus)


def test_time_budget_stops_cleanly_with_a_usable_package(frames, tmp_path):
    ckpt = tmp_path / "budget.ckpt"
    package = train(frames, _config(epochs=500, max_minutes=0.001), checkpoint_path=ckpt)
    stats = package.training
    assert stats["stopped_reason"] == "time_budget"
    assert stats["epochs_run"] < 500 and len(stats["val_loss"]) == stats["epochs_run"] >= 1
    assert np.isfinite(stats["best_val_loss"])
    with torch.no_grad():
        out = package.build_model()(torch.rand(1, 1, 32, 32))
    assert torch.isfinite(out).all()
    # A partial epoch is never checkpointed, and the package says how long one would take.
    if stats["epochs_completed"] == 0:
        assert not ckpt.exists()
        assert "inside the first epoch" in stats["notes"][0]
        assert f"of {stats['steps_per_epoch']} steps" in stats["notes"][0]
    else:
        assert stats["notes"] == []


@pytest.mark.parametrize("value", [0, 100])
def test_constant_frames_are_refused(value):
    frames = np.full((2, 96, 96), value, dtype=np.uint16)
    with pytest.raises(ValueError, match=rf"constant \({value} everywhere"):
        train(frames, _config(epochs=1))


def test_frames_without_signal_are_refused_with_what_to_do():
    # The walkthrough's pilot: 0.014 photons of signal under 1.5 e- read noise.
    rng = np.random.default_rng(0)
    dark = rng.poisson(0.014, (9, 96, 96)) + rng.normal(100.0, 1.5, (9, 96, 96))
    with pytest.raises(ValueError, match=r"no signal above their noise.*dose of the live run"):
        train(dark.astype(np.float32), _config(epochs=1))


def test_signal_ratio_separates_noise_from_faint_structure():
    rng = np.random.default_rng(1)
    noise_ratio, floor = signal_to_noise_ratio(rng.poisson(50.0, (9, 128, 128)))
    assert noise_ratio <= floor < 1.05
    faint = _blobs(2, n_blobs=14, seed=2)
    ratio, floor = signal_to_noise_ratio(faint)
    assert ratio > floor


def test_time_left_is_capped_by_the_budget():
    # 10 steps took 5 s: 1000 steps left would take 500 s, but the budget ends in 60 s.
    assert _seconds_left(5.0, 10, 1000, 60.0) == 60.0
    assert _seconds_left(5.0, 10, 1000, None) == 500.0
    assert _seconds_left(0.0, 0, 1000, None) is None


def test_early_stopping_on_pure_noise():
    rng = np.random.default_rng(3)
    noise = (rng.poisson(50.0, size=(2, 96, 96)) + 100).astype(np.uint16)
    package = train(noise, _config(epochs=40, patience=1, lr=1e-2), check_signal=False)
    stats = package.training
    assert stats["stopped_reason"] == "early_stopping"
    assert stats["epochs_run"] < 40
    # patience 1: the run ends one epoch after the last improvement.
    assert stats["best_epoch"] == stats["epochs_run"] - 1


def test_training_is_silent_without_a_progress_callback(frames, capsys):
    train(frames, _config(epochs=1))
    silent = capsys.readouterr()
    assert silent.out == "" and silent.err == ""


def test_progress_callback_reports_every_step_and_validation(frames):
    reports = []
    package = train(frames, _config(epochs=2), progress=reports.append)
    steps = package.training["steps_per_epoch"]
    first, *stepping = reports
    # Before the first step: nothing trained or validated yet.
    assert (first.epoch, first.step, first.run_step) == (0, 0, 0)
    assert first.train_loss is None and first.val_loss is None
    # Then one report per step and one after each validation.
    assert len(stepping) == 2 * (steps + 1)
    assert [r.run_step for r in stepping[: steps + 1]] == [*range(1, steps + 1), steps]
    assert all((r.epochs, r.steps, r.run_steps) == (2, steps, 2 * steps) for r in reports)
    after_validation = [stepping[steps], stepping[-1]]
    assert [r.epoch for r in after_validation] == [1, 2]
    assert [r.val_loss for r in after_validation] == package.training["val_loss"]
    assert [r.train_loss for r in after_validation] == package.training["train_loss"]
    assert all(r.remaining_s is not None and r.remaining_s >= 0 for r in stepping)
    assert stepping[-1].elapsed_s >= first.elapsed_s


# --------------------------------------------------------------------------- twin recipe


def test_recipes_fill_defaults_and_explicit_fields_win():
    twin = TrainingConfig()
    assert twin.recipe == Recipe.TWIN
    assert {k: getattr(twin, k) for k in RECIPES[Recipe.TWIN]} == RECIPES[Recipe.TWIN]
    paper = TrainingConfig(recipe="paper")
    assert {k: getattr(paper, k) for k in RECIPES[Recipe.PAPER]} == RECIPES[Recipe.PAPER]
    assert paper.unet_config.head == "sigmoid" and twin.unet_config.head == "linear"
    mixed = TrainingConfig(recipe="paper", loss="l2", lr=1e-3)
    assert (mixed.loss, mixed.lr, mixed.head) == ("l2", 1e-3, "sigmoid")
    with pytest.raises(ValueError, match=r"recipe must be one of \['paper', 'twin'\]"):
        TrainingConfig(recipe="fancy")
    with pytest.raises(ValueError, match="needs upsample='exact'"):
        TrainingConfig(upsample="official")
    with pytest.raises(ValueError, match="compensate=True needs inference='twins'"):
        TrainingConfig(inference="frame", compensate=True)


def test_twin_pairs_are_windows_of_whole_frame_twins_unclipped(frames):
    config = _config(recipe="twin", policy="global", batch_size=8, lr=2e-3)
    pairs = make_training_pairs(frames[:1], config)
    x = torch.from_numpy(frames[0].astype(np.float32))
    lo, hi = frame_scale(x[None], "background", THRESHOLDS)
    whole_a, whole_b = make_twins_tensor(x)
    index = 1 * 5 + 2  # window (row 1, col 2) of the 5x5 grid starts at (16, 32)
    for got, whole in ((pairs.a, whole_a), (pairs.b, whole_b)):
        expected = (whole[16:48, 32:64] - lo) / (hi - lo)
        torch.testing.assert_close(got[index, 0], expected, atol=1e-5, rtol=1e-5)
    # Unclipped: background noise below the floor keeps its (negative) value.
    assert float(pairs.a.min()) < 0.0


def test_l2_loss_targets_the_mean_and_l1_the_median():
    # A "network" that outputs a constant c: the loss minimizer over c is the target's
    # mean for L2 and its median for L1. Poisson(0.5) counts, a faint signal: mean 0.5,
    # median 0 (L1 erases it).
    rate = torch.full((1, 1, 64, 64), 0.5)
    target = torch.poisson(rate, torch.Generator().manual_seed(0))
    costs = {}
    for kind in ("l1", "l2"):
        values = torch.linspace(0.0, 2.0, 201)
        losses = [
            float(_sn2n_loss(lambda x, c=c: torch.full_like(x, c), target, target, 0.0, kind))
            for c in values
        ]
        costs[kind] = float(values[int(np.argmin(losses))])
    assert costs["l2"] == pytest.approx(float(target.mean()), abs=0.01)
    assert costs["l1"] == pytest.approx(0.0, abs=0.01)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    assert _cosine_factor(0.0) == pytest.approx(0.1)
    assert _cosine_factor(0.05) == pytest.approx(1.0)
    assert _cosine_factor(0.5) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.45 / 0.95)))
    assert _cosine_factor(1.0) == pytest.approx(0.0, abs=1e-12)
    assert _cosine_factor(1.5) == pytest.approx(0.0, abs=1e-12)


def test_twin_training_records_its_recipe_and_cosine_resume_keeps_epochs(frames, tmp_path):
    config = _config(recipe="twin", batch_size=8, lr=2e-3, epochs=2)
    ckpt = tmp_path / "twin.ckpt"
    package = train(frames, config, checkpoint_path=ckpt)
    assert (package.scale, package.inference, package.unet.head) == (
        "background",
        "twins",
        "linear",
    )
    assert package.inference_tile is None  # global mode: whole frames
    lrs = package.training["lr"]
    assert lrs[-1] < lrs[0] or len(lrs) == 1
    assert package.training["steps"] == 2 * package.training["steps_per_epoch"]
    with pytest.raises(ValueError, match="epochs"):
        train(frames, config.model_copy(update={"epochs": 4}), resume_from=ckpt)


# --------------------------------------------------------------------------- init


@pytest.fixture(scope="module")
def twin_run(frames):
    return train(frames, _config(recipe="twin", epochs=3))


def test_init_starts_from_the_given_weights(twin_run, frames):
    scratch = train(frames, _config(recipe="twin", epochs=1))
    tuned = train(frames, _config(recipe="twin", epochs=1), init=twin_run)
    # The same split and the initial weights: the first epoch starts where they ended.
    assert tuned.training["val_loss"][0] < scratch.training["val_loss"][0]
    assert tuned.training["val_loss"][0] < 1.1 * twin_run.training["best_val_loss"]
    assert tuned.provenance["init"]["weights_sha256"] == twin_run.sha256
    assert scratch.provenance["init"] is None


def test_init_weights_are_kept_when_no_epoch_beats_them(twin_run, frames):
    # A learning rate this large wrecks the (linear-head) network in its first steps.
    config = _config(recipe="twin", epochs=1, lr=50.0)
    wrecked = train(frames, config, init=twin_run)
    assert wrecked.training["best_epoch"] == 0
    assert wrecked.training["val_loss"][0] > wrecked.training["best_val_loss"]
    assert wrecked.sha256 == twin_run.sha256
    assert any("initial weights unchanged" in note for note in wrecked.training["notes"])


def test_init_must_match_the_network_and_twins(base_run, frames):
    trained, _ = base_run
    with pytest.raises(ValueError, match=r"init: .*unet: package"):
        train(frames, _config(unet=UNetConfig(depth=2, base_channels=8)), init=trained)
    with pytest.raises(ValueError, match=r"init: .*upsample: package 'official', run 'exact'"):
        train(frames, _config(upsample="exact"), init=trained)


def test_resume_refuses_a_run_with_other_initial_weights(base_run, frames):
    trained, ckpt = base_run
    with pytest.raises(ValueError, match="other initial weights"):
        train(frames, _config(epochs=5), resume_from=ckpt, init=trained)
