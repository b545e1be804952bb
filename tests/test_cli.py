import json

import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from sn2n_live.cli import app
from sn2n_live.io import open_stack, read_provenance
from sn2n_live.method import load_package
from sn2n_live.simulation import simulate_sim_frames

runner = CliRunner()


@pytest.fixture(scope="module")
def pilot_file(tmp_path_factory):
    frames = simulate_sim_frames((64, 64), photons=20, seed=3).raw  # (1, 3, 3, 64, 64)
    path = tmp_path_factory.mktemp("pilot") / "pilot.ome.tif"
    tifffile.imwrite(path, frames[0], ome=True, metadata={"axes": "CZYX"})
    return path


@pytest.fixture(scope="module")
def model_file(pilot_file):
    out = pilot_file.parent / "model.sn2n"
    result = runner.invoke(
        app,
        [
            "train",
            str(pilot_file),
            "--out",
            str(out),
            "--preset",
            "lite",
            "--patch",
            "32",
            "--epochs",
            "2",
            "--normalization",
            "per_patch",
            "--seed",
            "1",
            "--batch-size",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_a_package_with_provenance(model_file):
    package = load_package(model_file)
    assert package.policy == "per_patch"
    assert (package.inference, package.unet.head) == ("twins", "linear")  # twin recipe
    assert package.patch_size == 32
    assert package.training["epochs_run"] == 2
    assert package.provenance["seed"] == 1


def test_info_prints_the_manifest(model_file):
    result = runner.invoke(app, ["info", str(model_file)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["sha256"] == load_package(model_file).sha256
    assert info["unet"]["depth"] == 3
    assert info["training"]["epochs_run"] == 2
    assert not {"train_loss", "val_loss", "lr"} & set(info["training"])  # curves left out


@pytest.mark.parametrize(
    ("name", "dtype"), [("out.ome.tif", "uint16"), ("out.ome.zarr", "float32")]
)
def test_denoise_keeps_shape_axes_and_records_provenance(
    pilot_file, model_file, tmp_path, name, dtype
):
    out = tmp_path / name
    result = runner.invoke(
        app,
        [
            "denoise",
            str(pilot_file),
            "--model",
            str(model_file),
            "--out",
            str(out),
            "--dtype",
            dtype,
            "--engine",
            "torch-cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    stack = open_stack(out)
    assert stack.shape == (3, 3, 64, 64)
    data = np.asarray(stack.data[...])
    assert data.dtype == np.dtype(dtype)
    # Denoised output stays in photometric units (camera offset ~100 ADU).
    assert 80 < float(data.mean()) < 200
    prov = read_provenance(out)
    assert prov["model_sha256"] == load_package(model_file).sha256
    assert prov["engine"].startswith("torch")


def test_denoise_writes_the_risk_map_beside_the_output(pilot_file, model_file, tmp_path):
    out = tmp_path / "den.ome.zarr"
    args = ["denoise", str(pilot_file), "--model", str(model_file), "--out", str(out)]
    result = runner.invoke(app, [*args, "--engine", "torch-cpu", "--risk"])
    assert result.exit_code == 0, result.output
    assert "risk fraction" in result.output
    risk = np.asarray(open_stack(tmp_path / "den.risk.ome.zarr").data[...])
    assert risk.shape == (3, 3, 64, 64) and risk.dtype == np.float32
    assert float(risk.min()) >= 0.0 and float(risk.max()) <= 1.0
    assert read_provenance(tmp_path / "den.risk.ome.zarr")["content"].startswith("hallucination")


def test_train_paper_recipe_by_name(pilot_file, tmp_path):
    out = tmp_path / "paper.sn2n"
    result = runner.invoke(
        app,
        [
            *("train", str(pilot_file), "--out", str(out), "--recipe", "paper"),
            *("--patch", "32", "--epochs", "1", "--batch-size", "8"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and "val 0." in result.output  # the training bar
    package = load_package(out)
    assert (package.inference, package.unet.head, package.scale) == (
        "frame",
        "sigmoid",
        "min_clip",
    )


def test_user_errors_are_one_clear_line(pilot_file, tmp_path):
    result = runner.invoke(
        app,
        [
            "denoise",
            str(pilot_file),
            "--model",
            str(tmp_path / "missing.sn2n"),
            "--out",
            str(tmp_path / "o.tif"),
        ],
    )
    assert result.exit_code == 2
    assert "missing.sn2n" in result.output
    assert "Traceback" not in result.output
    corrupt = tmp_path / "corrupt.sn2n"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    result = runner.invoke(app, ["info", str(corrupt)])
    assert result.exit_code == 2
    assert "corrupt.sn2n" in result.output


def test_profile_check_reports_fields(tmp_path):
    ok = runner.invoke(app, ["profile", "check", "demo-sim"])
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[output]\nmemory_budget_mb = -1\n')
    result = runner.invoke(app, ["profile", "check", str(bad)])
    assert result.exit_code == 2
    assert "output.memory_budget_mb" in result.output
    assert "(got -1)" in result.output


def test_engine_info_lists_every_backend():
    result = runner.invoke(app, ["engine", "info"])
    assert result.exit_code == 0, result.output
    for name in ("tensorrt", "torch-cuda", "onnxruntime-cpu", "torch-cpu"):
        assert name in result.output
    assert "pip install 'sn2n-live[tensorrt]'" in result.output


def test_pilot_then_acquire_on_the_simulated_microscope(model_file, tmp_path):
    profile = tmp_path / "small.toml"
    profile.write_text(
        'name = "small"\n[microscope.simulated]\nshape = [256, 256]\n'
        "[sim]\nn_angles = 3\nn_phases = 3\n[acquisition]\ntimepoints = 2\n"
        f'[denoise]\nmodel = "{model_file}"\nengine = "torch-cpu"\ntile = 32\n'
    )
    pilot = tmp_path / "pilot.ome.tiff"
    result = runner.invoke(
        app, ["pilot", "--profile", str(profile), "--out", str(pilot), "--timepoints", "1"]
    )
    assert result.exit_code == 0, result.output
    assert tifffile.imread(pilot).reshape(-1, 256, 256).shape == (9, 256, 256)
    again = ["pilot", "--profile", str(profile), "--out", str(pilot), "--timepoints", "1"]
    refused = runner.invoke(app, again)
    assert refused.exit_code == 2
    assert "already exists" in refused.output
    assert runner.invoke(app, [*again, "--overwrite"]).exit_code == 0

    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["acquire", "--profile", str(profile), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    raw = zarr.open_group(str(run_dir / "raw.ome.zarr"), mode="r")["0"]
    den = zarr.open_group(str(run_dir / "denoised.ome.zarr"), mode="r")["0"]
    assert raw.shape == den.shape
    assert int(np.prod(raw.shape[:-2])) == 18
    assert raw.dtype == np.uint16 and den.dtype == np.float32
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["options"]["isolation"] == "process"  # the profile default
    assert run["counts"]["raw_written"] == run["counts"]["denoised_written"] == 18


def _text(result) -> str:
    """The command's output as one line: rich wraps long lines at the terminal width."""
    return " ".join(result.output.split())


def test_train_refuses_an_unwritable_output_before_training(
    pilot_file, tmp_path, model_file, unwritable_dir
):
    ro = unwritable_dir
    result = runner.invoke(app, ["train", str(pilot_file), "--out", str(ro / "m.sn2n")])
    assert result.exit_code == 2
    assert "cannot write the model package in" in _text(result)
    assert "Training on" not in result.output  # refused before the data were even read
    existing = runner.invoke(app, ["train", str(pilot_file), "--out", str(model_file)])
    assert existing.exit_code == 2
    assert "pass --overwrite to replace it" in _text(existing)


def test_denoise_checks_outputs_first_and_leaves_nothing_on_failure(
    pilot_file, model_file, tmp_path
):
    out = tmp_path / "new" / "den.ome.zarr"  # the parent is created
    args = ["denoise", str(pilot_file), "--model", str(model_file), "--engine", "torch-cpu"]
    assert runner.invoke(app, [*args, "--out", str(out), "--risk"]).exit_code == 0
    again = runner.invoke(app, [*args, "--out", str(out), "--risk"])
    assert again.exit_code == 2 and "pass --overwrite to replace it" in _text(again)
    # Only the risk map is in the way: refused before denoising, nothing written.
    (tmp_path / "new" / "second.risk.ome.zarr").mkdir()
    blocked = runner.invoke(app, [*args, "--out", str(tmp_path / "new/second.ome.zarr"), "--risk"])
    assert blocked.exit_code == 2 and "risk map" in _text(blocked)
    assert not (tmp_path / "new" / "second.ome.zarr").exists()

    nan = tmp_path / "nan.tif"
    frames = np.full((3, 64, 64), 100, np.float32)
    frames[1, 3, 3] = np.nan
    tifffile.imwrite(nan, frames, photometric="minisblack")
    thin = tmp_path / "thin.tif"
    tifffile.imwrite(thin, np.full((3, 1, 64), 100, np.uint16), photometric="minisblack")
    for bad in (nan, thin):
        failed = runner.invoke(
            app,
            ["denoise", str(bad), "-m", str(model_file), "-o", str(tmp_path / "d.ome.zarr")],
        )
        assert failed.exit_code == 2, failed.output
        assert "Traceback" not in failed.output
        # Nothing that looks like a result, not even a hidden partial store.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.tif", "new", "thin.tif"]


def test_missing_model_says_how_to_make_one(pilot_file, tmp_path):
    missing = tmp_path / "none.sn2n"
    result = runner.invoke(app, ["denoise", str(pilot_file), "-m", str(missing), "-o", "x.tif"])
    assert result.exit_code == 2
    text = _text(result)
    assert "is not a model package; train one with `sn2n-live train PILOT.ome.tiff --out" in text
    assert text.endswith("none.sn2n`")
    assert "save_package" not in result.output


def test_acquire_into_an_unwritable_folder_fails_in_one_line(model_file, tmp_path, unwritable_dir):
    profile = tmp_path / "small.toml"
    profile.write_text(
        'name = "small"\n[microscope.simulated]\nshape = [256, 256]\n'
        f'[denoise]\nmodel = "{model_file}"\n'
    )
    out = unwritable_dir / "run"
    result = runner.invoke(app, ["acquire", "--profile", str(profile), "--out", str(out)])
    assert result.exit_code == 2
    joined = _text(result)
    assert joined.startswith(f"error: cannot write the run folder in {out}")
    assert "run.json" not in joined and "catching up" not in joined


def test_denoise_warns_about_frames_unlike_the_training_frames(model_file, tmp_path):
    bright = simulate_sim_frames((64, 64), photons=2000, seed=4).raw[0]  # 100x the pilot
    stack = tmp_path / "bright.ome.tif"
    tifffile.imwrite(stack, bright, ome=True, metadata={"axes": "CZYX"})
    out = tmp_path / "bright-denoised.ome.zarr"
    result = runner.invoke(app, ["denoise", str(stack), "-m", str(model_file), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning: frames 0-8: signal" in text and "the training's" in text


def _stats(**fields):
    from sn2n_live.acquisition._stats import LiveStats

    base = {
        "state": "acquiring", "elapsed_s": 1.0, "frames_received": 10, "raw_written": 10,
        "denoised_written": 4, "denoised_missing": 0, "queue_depth": 6, "queued_mb": 1.0,
        "spilled": 0, "raw_backlog": 0, "frames_behind": 6, "camera_fps": 9.5,
        "denoise_fps": 2.0, "latency_p50_ms": None, "latency_p99_ms": None,
        "frames_expected": 72,
    }  # fmt: skip
    return LiveStats(**{**base, **fields})


def test_live_progress_says_what_the_run_is_doing():
    from sn2n_live.cli import _LiveProgress

    with _LiveProgress() as report:
        report(_stats(state="waiting"))
        assert report._progress is None  # nothing drawn before the sequence starts
        report(_stats())
        task = report._progress.tasks[0]
        assert task.description == "acquiring" and task.total == 72
        assert task.fields["line"] == "received 10/72 at 9.5 fps, denoised 4 (backlog 6)"
        report(_stats(state="catching_up", frames_received=72, denoised_written=52))
        task = report._progress.tasks[0]
        assert task.description == "catching up"
        assert task.fields["line"] == "denoised 52/72, 20 left at 2.00 fps, ETA 0:00:10"
        report(_stats(state="catching_up", frames_received=72, denoised_written=72))
        assert report._progress.tasks[0].fields["line"] == "denoised 72/72, done"


def test_training_bar_shows_epoch_steps_losses_and_time_left():
    from sn2n_live.cli import TrainingBar
    from sn2n_live.method import TrainingProgress

    def report(**fields):
        start = {
            "epoch": 0, "epochs": 3, "step": 0, "steps": 4, "run_step": 0, "run_steps": 12,
            "train_loss": None, "val_loss": None, "elapsed_s": 1.0, "remaining_s": None,
        }  # fmt: skip
        return TrainingProgress(**{**start, **fields})

    with TrainingBar() as bar:
        assert bar._progress is None  # nothing drawn before the first report
        bar(report())
        task = bar._progress.tasks[0]
        assert (task.completed, task.total) == (0, 12)
        assert task.fields == {"epoch": "0/3", "step": "-", "train": "-", "val": "-", "left": "-"}
        bar(report(epoch=2, step=3, run_step=7, train_loss=0.01234, val_loss=0.5, remaining_s=65))
        task = bar._progress.tasks[0]
        assert task.completed == 7
        assert task.fields == {
            "epoch": "2/3", "step": "3/4", "train": "0.0123", "val": "0.5000", "left": "0:01:05",
        }  # fmt: skip
