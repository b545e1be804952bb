"""sn2n-live tune on the simulated microscope: a real sweep, judged against the ground truth."""

import base64
import itertools
import json
import re

import pytest
from typer.testing import CliRunner

from sn2n_live.cli import app
from sn2n_live.profiles import find_profile, load_profile
from sn2n_live.tune import SweepPlan, Targets, lowest_stable, recommend, run_sweep, write_report

SIDE = 256


def _small_profile():
    profile = load_profile("demo-sim")
    sim = profile.microscope.simulated.model_copy(update={"shape": (SIDE, SIDE)})
    microscope = profile.microscope.model_copy(update={"simulated": sim})
    return profile.model_copy(update={"microscope": microscope})


@pytest.fixture(scope="module")
def sweep():
    from sn2n_live.engine import build_denoiser
    from sn2n_live.method import pretrained_package

    denoiser = build_denoiser(pretrained_package(), engine="torch-cpu", tile=None)
    plan = SweepPlan(
        exposures_ms=(1, 2, 5, 10, 20, 50),
        powers_percent=(100,),
        repeats=2,
        reference_exposure_ms=300,
        reference_repeats=2,
    )
    steps = []
    result = run_sweep(_small_profile(), denoiser, plan, progress=steps.append)
    return result, steps


def _index(result, point):
    return None if point is None else [d.point for d in result.doses].index(point)


def test_sweep_measures_every_dose_and_reports_progress(sweep):
    result, steps = sweep
    assert [s.step for s in steps] == list(range(len(steps)))
    assert steps[-1].step == steps[-1].steps  # the bar ends full
    assert result.simulated and len(result.doses) == 6
    psnrs = [d.psnr_denoised for d in result.doses]
    assert psnrs == sorted(psnrs), psnrs  # more light, better images
    raw_res = [d.raw_resolution_px for d in result.doses]
    assert raw_res[0] > raw_res[-1] >= result.reference_resolution_px * 0.9
    for d in result.doses:
        assert 0 <= d.risk_fraction <= 1
        assert abs(d.shift_px[0]) < 10
    # The sample drifts 0.3, 0.2 px/s of wall-clock microscope time: the reference, taken
    # last, is found shifted, most from the first dose (acquired earliest). How far depends
    # on the machine's speed; the doses between the first and the last expose for at least
    # 18 x 38 ms, which the drift turns into >= 0.2 px along y.
    shifts = [abs(d.shift_px[0]) for d in result.doses]
    assert shifts[0] > shifts[-1] + 0.1, shifts
    assert all(a >= b - 0.05 for a, b in itertools.pairwise(shifts)), shifts
    # The simulated sample bleaches (mixed structures); under SIM stripes a pixel gets
    # about half the frame's dose on average, so the fit over the sweep sees ~half the rate.
    from sn2n_live.acquisition import DEFAULT_BLEACH_RATE_PER_MS

    expected = DEFAULT_BLEACH_RATE_PER_MS["mixed"] * 0.5
    assert 0.5 * expected < result.bleaching.rate_per_dose < 2 * expected, result.bleaching
    brightness = [d.brightness_vs_reference for d in result.doses]
    assert brightness[0] > brightness[-1] > 1.0  # early doses: less bleached than the end


def test_recommended_dose_agrees_with_the_ground_truth_within_one_step(sweep):
    result, _ = sweep
    targets = Targets()
    rec = recommend(result, targets)
    truth_ok = [d.truth["psnr_denoised"] >= targets.min_psnr_db for d in result.doses]
    crossing = lowest_stable([d.point for d in result.doses], truth_ok)
    assert crossing is not None and rec.dose is not None, rec.message
    assert abs(_index(result, rec.dose) - _index(result, crossing)) <= 1, rec.message
    assert rec.dose.label in rec.message


def test_break_point_agrees_with_the_ground_truth(sweep):
    result, _ = sweep
    targets = Targets()
    measured = recommend(result, targets).break_point
    truth = recommend(result, targets, truth=True).break_point
    if measured is None or truth is None:
        assert measured is None and truth is None
    else:
        assert abs(_index(result, measured) - _index(result, truth)) <= 1
    # At the lowest dose a Gaussian filter beats this denoiser, by the truth too.
    low = result.doses[0].truth
    assert low["psnr_denoised"] < low["psnr_gaussian"]


def test_a_sweep_that_cannot_reach_the_target_says_what_to_change(sweep):
    result, _ = sweep
    rec = recommend(result, Targets(min_psnr_db=80))
    assert rec.dose is None
    for words in (
        "no dose of the sweep meets the targets",
        "50 ms @ 100 %",
        "--min-psnr",
        "--exposures",
    ):
        assert words in rec.message


def test_report_is_self_contained(sweep, tmp_path):
    result, _ = sweep
    targets = Targets()
    path = write_report(result, recommend(result, targets), targets, tmp_path)
    page = path.read_text()
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing outside the file
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == 5
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "reference_exposure_ms" in page and "min_psnr_db" in page


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--exposures", "2,abc"], ["--exposures", "comma-separated"]),
        (["--powers", "0"], ["powers_percent", "--powers"]),
        (["--repeats", "1"], ["repeats", "--repeats"]),
        (["--reference-exposure", "5"], ["reference dose", "--reference-exposure"]),
        (["--max-risk", "2"], ["max_risk_fraction", "--max-risk"]),
        (["--tile", "big"], ["--tile"]),
    ],
)
def test_bad_flags_fail_before_the_microscope_opens(args, words, tmp_path):
    result = CliRunner().invoke(app, ["tune", "--out", str(tmp_path / "t"), *args])
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.output
    assert not (tmp_path / "t").exists()


def test_cli_tune_writes_json_report_and_profile(tmp_path):
    text = find_profile("demo-sim").read_text().replace("[512, 512]", f"[{SIDE}, {SIDE}]")
    profile = tmp_path / "small.toml"
    profile.write_text(text)
    out = tmp_path / "tuned"
    args = ["tune", "-p", str(profile), "-m", "pretrained", "--out", str(out)]
    args += ["--exposures", "5,20", "--powers", "100", "--repeats", "2"]
    args += ["--reference-exposure", "100", "--reference-repeats", "2", "--min-psnr", "10"]
    args += ["--max-risk", "1", "--resolution-tolerance", "10", "--write-profile"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    document = json.loads((out / "tune.json").read_text())
    assert document["recommendation"]["dose"]["label"] == "5 ms @ 100 %"
    assert len(document["doses"]) == 2 and document["targets"]["min_psnr_db"] == 10
    assert (out / "report.html").is_file()
    tuned = load_profile(out / "small-tuned.toml")
    assert tuned.camera.exposure_ms == 5 and tuned.camera.laser_power_percent == 100
