"""`profile check` and the road from Micro-Manager's MMConfig_demo.cfg to live runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from pymmcore_plus import find_micromanager
from typer.testing import CliRunner

from sn2n_live.cli import app
from sn2n_live.profiles import ProfileError, load_profile

runner = CliRunner()
DEMO_CFG = Path(find_micromanager() or "") / "MMConfig_demo.cfg"
ROI = 'properties = [["Camera", "OnCameraCCDXSize", "128"], ["Camera", "OnCameraCCDYSize", "128"]]'


def _demo_profile(tmp_path: Path, body: str, name: str = "rig.toml") -> Path:
    """A profile on the real MMConfig_demo.cfg, as a user writes one for a config file."""
    assert DEMO_CFG.is_file(), "mm-test-adapters ships MMConfig_demo.cfg"
    path = tmp_path / name
    path.write_text(
        f'name = "rig"\n[microscope]\nkind = "config"\nconfig_file = "{DEMO_CFG}"\n{body}'
    )
    return path


def _lines(output: str, level: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(level)]


def test_unknown_keys_list_the_allowed_ones_with_a_guess(tmp_path):
    file = tmp_path / "typo.toml"
    file.write_text('name = "p"\n[camera]\nexposure = 5\n[sim]\nphases = 3\n')
    with pytest.raises(ProfileError) as info:
        load_profile(file)
    message = str(info.value)
    assert "Extra inputs are not permitted" not in message
    assert (
        "camera.exposure: unknown key; did you mean 'exposure_ms'? [camera] allows: "
        "exposure_ms, laser_power_percent, laser_property, properties" in message
    )
    assert "sim.phases: unknown key; did you mean 'n_phases'?" in message


def test_check_on_the_demo_config_names_every_problem_and_its_fix(tmp_path):
    # What a new user writes first: an SLM SIM profile, a pilot dose, a model not trained yet.
    profile = _demo_profile(
        tmp_path,
        "[sim]\nn_angles = 3\nn_phases = 3\n[pilot]\nlaser_power_percent = 5.0\n"
        '[denoise]\nmodel = "models/rig.sn2n"\n',
    )
    result = runner.invoke(app, ["profile", "check", str(profile)])
    assert result.exit_code == 2
    out = result.stdout
    assert _lines(out, "ok    microscope:")[0].startswith(f"ok    microscope: {DEMO_CFG} loads")
    assert "ok    camera: 'Camera': 512x512 px, 16-bit frames" in out
    errors = _lines(out, "error")
    assert len(errors) == 3, out
    assert any(
        "has no SLM device" in e and "set sim.pattern_source = 'metadata'" in e for e in errors
    )
    assert any("pilot.laser_power_percent is set but" in e for e in errors)
    assert any("models/rig.sn2n does not exist; train one with" in e for e in errors)
    assert _lines(out, "note  dose:")[0].count("laser 5 %") == 1
    assert out.rstrip().endswith("3 problem(s): fix them before `sn2n-live pilot` or `acquire`")

    # The acquisition commands stop on the same problems, in one line, before acquiring.
    pilot = runner.invoke(app, ["pilot", "-p", str(profile), "-o", str(tmp_path / "p.ome.tiff")])
    assert pilot.exit_code == 2
    assert "error: pilot.laser_power_percent is set but" in " ".join(pilot.output.split())
    assert not (tmp_path / "p.ome.tiff").exists()


def test_slm_profile_on_a_config_without_slm_fails_before_the_mda(tmp_path, model_file):
    profile = _demo_profile(tmp_path, "[sim]\n[acquisition]\ntimepoints = 1\n")
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["acquire", "-p", str(profile), "-m", str(model_file), "-o", str(run)]
    )
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "TypeError" not in text and "Traceback" not in text
    assert "sim.pattern_source = 'slm' but the configuration" in text
    assert list(run.iterdir()) == []  # no store, no run.json: nothing was acquired


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny model trained on pilot frames of the demo camera, through the CLI."""
    folder = tmp_path_factory.mktemp("demo-model")
    profile = _demo_profile(folder, f"[camera]\n{ROI}\n[pilot]\ntimepoints = 4\n")
    pilot = folder / "pilot.ome.tiff"
    result = runner.invoke(app, ["pilot", "-p", str(profile), "-o", str(pilot)])
    assert result.exit_code == 0, result.output
    assert tifffile.imread(pilot).shape == (4, 128, 128)
    model = folder / "model.sn2n"
    train = [
        *("train", str(pilot), "--out", str(model), "--patch", "32", "--epochs", "1"),
        *("--batch-size", "8", "--normalization", "per_patch"),
    ]
    result = runner.invoke(app, train)
    assert result.exit_code == 0, result.output
    return model


@pytest.mark.parametrize(
    ("sim", "frames"),
    [
        ("", 2),  # widefield / SIM-less: one frame per time point
        (
            '[sim]\npattern_source = "properties"\nangle_property = ["Excitation", "State"]\n'
            'phase_property = ["Emission", "State"]\n',
            18,
        ),
        ('[sim]\npattern_source = "metadata"\n', 18),
    ],
    ids=["no-sim", "sim-properties", "sim-metadata"],
)
def test_demo_config_checks_and_runs_live(tmp_path, model_file, sim, frames):
    profile = _demo_profile(
        tmp_path,
        f"[camera]\n{ROI}\n{sim}[acquisition]\ntimepoints = 2\ninterval_s = 0.01\n"
        f'[denoise]\nmodel = "{model_file}"\nengine = "torch-cpu"\ntile = 64\n'
        '[output]\nisolation = "thread"\n',
    )
    check = runner.invoke(app, ["profile", "check", str(profile)])
    assert check.exit_code == 0, check.output
    assert _lines(check.stdout, "error") == []
    assert "ok    camera: 'Camera': 128x128 px" in check.stdout
    assert "ok    engine: torch-cpu (fp32)" in check.stdout

    run = tmp_path / "run"
    result = runner.invoke(app, ["acquire", "-p", str(profile), "-o", str(run)])
    assert result.exit_code == 0, result.output
    doc = json.loads((run / "run.json").read_text())
    assert doc["status"] == "completed" and doc["errors"] == []
    counts = doc["counts"]
    assert counts["raw_written"] == counts["denoised_written"] == counts["received"]
    if counts["received"] < frames:
        # pymmcore-plus 0.18.1 can end a DemoCamera hardware sequence (the metadata case's
        # nine phases) an image early; run.json must say so.
        assert [n for n in doc["notes"] if "never acquired" in n], doc["notes"]
    else:
        assert counts["received"] == frames
    raw = zarr.open_group(str(run / "raw.ome.zarr"), mode="r")["0"]
    den = zarr.open_group(str(run / "denoised.ome.zarr"), mode="r")["0"]
    assert raw.shape == den.shape and raw.shape[-2:] == (128, 128)
    assert int(np.prod(raw.shape[:-2])) == frames
    if sim:
        assert [d["name"] for d in doc["layout"]["dims"]] == ["t", "sim"]


def test_bundled_demo_profiles_pass_the_check():
    for name in ("mm-demo", "mm-demo-sim"):
        result = runner.invoke(app, ["profile", "check", name])
        assert result.exit_code == 0, result.output
        assert "ok    camera: 'Camera': 256x256 px" in result.stdout
        assert "note  model: no denoise.model" in result.stdout


def test_fp16_without_a_gpu_is_refused_before_acquiring(tmp_path, model_file):
    import torch

    if torch.cuda.is_available():
        pytest.skip("fp16 runs here")
    profile = _demo_profile(tmp_path, '[denoise]\nprecision = "fp16"\n')
    check = runner.invoke(app, ["profile", "check", str(profile)])
    assert check.exit_code == 2
    (engine,) = _lines(check.stdout, "error engine:")
    assert engine.endswith("set denoise.precision = 'fp32' (or remove it) on this machine")
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["acquire", "-p", str(profile), "-m", str(model_file), "-o", str(run)]
    )
    assert result.exit_code == 2
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "fp16 needs a GPU" in text and "Traceback" not in text
    assert not run.exists()
