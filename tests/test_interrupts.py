"""Ctrl-C during a live run, as a user at a terminal sends it (SIGINT to the process).

Each run is a real ``sn2n-live acquire`` (or ``acquire_live``) in a subprocess on the
simulated microscope; the run folder is then checked against its stores.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _run_checks import assert_record_matches_stores
from sn2n_live.method._package import save_package

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def model_path(package, tmp_path_factory) -> Path:
    return save_package(package, tmp_path_factory.mktemp("model") / "tiny.sn2n")


def _profile(tmp_path: Path, model: Path, *, timepoints: int, isolation: str) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(
        'name = "interrupt"\n[microscope.simulated]\nshape = [256, 256]\n'
        "[camera]\nexposure_ms = 10.0\n[sim]\nn_angles = 3\nn_phases = 3\n"
        f"[acquisition]\ntimepoints = {timepoints}\n"
        f'[denoise]\nmodel = "{model}"\nengine = "torch-cpu"\ntile = "whole"\n'
        f'[output]\nisolation = "{isolation}"\n'
    )
    return path


def _start(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _wait_for(run: Path, process: subprocess.Popen[str], ready, timeout: float = 120) -> dict:
    """Poll run.json until ``ready(document)``; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            document = json.loads((run / "run.json").read_text())
        except (OSError, ValueError):
            document = None
        if document is not None and ready(document):
            return document
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"run.json never became ready: {process.communicate()[0][-3000:]}")


def _ended_within(process: subprocess.Popen[str], seconds: float) -> str:
    try:
        output, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"still running {seconds} s after Ctrl-C:\n{output[-3000:]}")
    return output


def _acquire(profile: Path, run: Path) -> subprocess.Popen[str]:
    cli = [sys.executable, "-c", "from sn2n_live.cli import app; app()"]
    return _start([*cli, "acquire", "--profile", str(profile), "--out", str(run)])


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_the_first_ctrl_c_cancels_drains_and_closes_the_run(model_path, tmp_path, isolation):
    profile = _profile(tmp_path, model_path, timepoints=300, isolation=isolation)
    run = tmp_path / "run"
    process = _acquire(profile, run)
    _wait_for(run, process, lambda doc: doc["counts"]["received"] >= 18)
    process.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    output = _ended_within(process, 60)
    stopped_s = time.monotonic() - t0
    assert process.returncode == 1, output
    doc = assert_record_matches_stores(run)
    assert doc["status"] == "canceled" and doc["canceled"] is True
    assert 18 <= doc["counts"]["received"] < 300 * 9
    assert doc["errors"] == [], doc["errors"]
    assert "canceled" in output and "Ctrl-C again to stop at once" in output
    for noise in ("Traceback", "EmitLoopError", "handle is closed"):
        assert noise not in output, output
    assert stopped_s < 30, f"the run took {stopped_s:.1f} s to stop"


def test_ctrl_c_while_catching_up_stops_the_catch_up(model_path, tmp_path):
    profile = _profile(tmp_path, model_path, timepoints=4, isolation="process")
    run = tmp_path / "run"
    script = (
        "import functools, sys\n"
        "from _slow_denoiser import slow_profile_denoiser\n"
        "from sn2n_live.acquisition import acquire_live\n"
        "from sn2n_live.profiles import load_profile\n"
        "profile, model, out = sys.argv[1:]\n"
        "factory = functools.partial(slow_profile_denoiser, profile, model, 0.15)\n"
        "summary = acquire_live(load_profile(profile), denoiser=factory, out_dir=out)\n"
        "print('status', summary.status)\n"
    )
    process = _start([sys.executable, "-c", script, str(profile), str(model_path), str(run)])
    _wait_for(run, process, lambda doc: doc["state"] == "catching_up")
    process.send_signal(signal.SIGINT)
    output = _ended_within(process, 30)
    assert process.returncode == 0, output
    assert "status interrupted" in output
    doc = assert_record_matches_stores(run)
    assert doc["status"] == "interrupted" and doc["canceled"] is False
    assert doc["counts"]["received"] == 36  # the acquisition itself had ended
    assert doc["missing_denoised"]["by_reason"]["catch_up_canceled"]
    assert "Traceback" not in output


def test_a_second_ctrl_c_stops_at_once_with_readable_stores(model_path, tmp_path):
    profile = _profile(tmp_path, model_path, timepoints=300, isolation="process")
    run = tmp_path / "run"
    process = _acquire(profile, run)
    _wait_for(run, process, lambda doc: doc["counts"]["received"] >= 18)
    process.send_signal(signal.SIGINT)
    time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    output = _ended_within(process, 30)
    assert process.returncode != 0, output
    doc = assert_record_matches_stores(run)
    assert doc["status"] in ("canceled", "interrupted")
    assert doc["counts"]["received"] < 300 * 9
