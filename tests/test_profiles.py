import pytest

from sn2n_live.profiles import Profile, ProfileError, bundled_profiles, find_profile, load_profile


def test_bundled_profiles_all_validate():
    names = set(bundled_profiles())
    assert {"demo-sim", "sim-3x3", "sim-3x5", "spinning-disk-sim"} <= names
    for path in bundled_profiles().values():
        assert isinstance(load_profile(path), Profile)


def test_demo_profile_is_the_embedded_default():
    profile = load_profile("demo-sim")
    assert profile.microscope.kind == "simulated"
    assert profile.microscope.simulated.shape == (512, 512)
    assert profile.sim is not None and profile.sim.set_size == 9
    assert load_profile("sim-3x5").sim.set_size == 15
    assert load_profile("spinning-disk-sim").sim is None


def test_relative_model_path_resolves_next_to_the_profile(tmp_path):
    file = tmp_path / "p.toml"
    file.write_text('name = "p"\n[denoise]\nmodel = "models/m.sn2n"\n')
    assert load_profile(file).denoise.model == tmp_path / "models" / "m.sn2n"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('name = "p"\n[sim]\nn_phases = 0\n', "sim.n_phases"),
        ('name = "p"\n[denoise]\ntile = 100\n', "power of two"),
        ('name = "p"\n[output]\nbacklog_policy = "fast"\n', "'complete' or 'preview'"),
        ('name = "p"\n[camera]\nexposure = 5\n', "camera.exposure"),
        ('name = "p"\n[microscope]\nkind = "config"\n', "config_file"),
        (
            'name = "p"\n[sim]\n[output]\nformat = "ome-tiff"\ndenoised_dtype = "uint16"\n',
            "cannot store the SIM angle/phase axes",
        ),
        ('name = "p"\n[microscope]\nkind = "demo"\n[sim]\n', "pattern_source = 'metadata'"),
        ("[denoise]\ntile = 64\n", "name"),
        ('name = "p"\nthis is not toml', "not valid TOML"),
    ],
)
def test_errors_name_the_field_value_and_allowed(tmp_path, toml, expected):
    file = tmp_path / "bad.toml"
    file.write_text(toml)
    with pytest.raises(ProfileError, match=r"bad\.toml") as info:
        load_profile(file)
    assert expected in str(info.value)


def test_error_shows_the_value_given(tmp_path):
    file = tmp_path / "bad.toml"
    file.write_text('name = "p"\n[acquisition]\ntimepoints = -3\n')
    with pytest.raises(ProfileError) as info:
        load_profile(file)
    assert "acquisition.timepoints" in str(info.value)
    assert "(got -3)" in str(info.value)


def test_unknown_profile_lists_bundled(tmp_path):
    with pytest.raises(ProfileError, match="demo-sim"):
        find_profile(tmp_path / "nope.toml")


def test_tile_whole_means_whole_frame(tmp_path):
    file = tmp_path / "whole.toml"
    file.write_text('name = "w"\n[denoise]\ntile = "whole"\n')
    assert load_profile(file).denoise.tile_size is None
    assert load_profile("demo-sim").denoise.tile_size == 64
    file.write_text('name = "w"\n[denoise]\ntile = "all"\n')
    with pytest.raises(ProfileError, match=r"denoise\.tile"):
        load_profile(file)


def _leaf_fields(model, prefix=""):
    """(dotted key, pydantic field) of every scalar key of the profile schema."""
    from typing import get_args

    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = [
            c
            for c in (annotation, *get_args(annotation))
            if isinstance(c, type) and issubclass(c, BaseModel)
        ]
        if nested:
            yield from _leaf_fields(nested[0], f"{prefix}{name}.")
        else:
            yield prefix + name, field


def _toml(value):
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def test_docs_list_every_profile_key_with_its_default():
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "profiles.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 6 and cells[1].startswith("`"):
            rows[cells[1].strip("`")] = (cells[2], cells[3].strip("`"), cells[4])
    fields = dict(_leaf_fields(Profile))
    assert len(fields) > 30 and "sim.pattern_source" in fields
    for key, field in fields.items():
        assert key in rows, f"docs/profiles.md has no row for {key}"
        kind, documented, meaning = rows[key]
        default = "required" if field.is_required() else _toml(field.default)
        assert documented == default, f"{key}: docs say {documented}, the schema {default}"
        assert kind and meaning, key
    assert sorted(set(rows) - set(fields)) == [], "docs/profiles.md lists keys that do not exist"


def test_training_init_is_a_choice_or_a_package_next_to_the_profile(tmp_path):
    file = tmp_path / "p.toml"
    file.write_text('name = "p"\n[training]\ninit = "pretrained"\nmax_minutes = 2\n')
    assert (load_profile(file).training.init, load_profile(file).training.max_minutes) == (
        "pretrained",
        2.0,
    )
    file.write_text('name = "p"\n[training]\ninit = "models/start.sn2n"\n')
    assert load_profile(file).training.init == tmp_path / "models" / "start.sn2n"
    assert load_profile("demo-sim").training.init == "scratch"


def test_bleach_rate_is_validated_and_reaches_the_microscope(tmp_path):
    from sn2n_live.acquisition import release_core
    from sn2n_live.acquisition._session import create_core

    file = tmp_path / "bleach.toml"
    file.write_text('name = "b"\n[microscope.simulated]\nbleach_rate_per_ms = -0.001\n')
    with pytest.raises(ProfileError) as err:
        load_profile(file)
    message = str(err.value)
    assert "microscope.simulated.bleach_rate_per_ms" in message
    assert "must be a finite number >= 0" in message and "(got -0.001)" in message

    file.write_text(
        'name = "b"\n[microscope.simulated]\nbleach_rate_per_ms = 0\nshape = [256, 256]\n'
    )
    core = create_core(load_profile(file))
    try:
        assert core.bleach_rate_per_ms == 0.0
    finally:
        release_core(core)
    assert load_profile("demo-sim").microscope.simulated.bleach_rate_per_ms is None
