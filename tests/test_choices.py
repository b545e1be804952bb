"""Every choice is defined once, in sn2n_live.config, and every place that takes it uses it.

Each test fails if a value is added (or a choice redefined) in one place only: the CLI's
options, the profile schema (and its docs), and the code that acts on the choice.
"""

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, get_args, get_origin, get_type_hints

import numpy as np
import pytest
from pydantic import BaseModel, TypeAdapter
from typer.testing import CliRunner

from sn2n_live import cli, config
from sn2n_live.config import (
    BackendName,
    BacklogPolicy,
    DenoisedDtype,
    EngineName,
    FileFormat,
    Isolation,
    MicroscopeKind,
    NormalizationPolicy,
    PatternSource,
    Precision,
    PSFKind,
    Recipe,
    ReconLive,
    ReconSource,
    StructureKind,
    TrainingInit,
    UNetPreset,
    ZarrBackend,
    choices,
)
from sn2n_live.profiles import Profile

DOCS = Path(__file__).parents[1] / "docs"


def _is_choice(annotation: object) -> bool:
    """A StrEnum, or a Literal of two or more values (one value is a sentinel: "whole")."""
    if isinstance(annotation, type):
        return issubclass(annotation, StrEnum)
    return get_origin(annotation) is Literal and len(get_args(annotation)) > 1


def _choices_in(annotation: object) -> list[object]:
    """The choices an annotation is made of (``X``, ``X | None``, ``Annotated[X, ...]``)."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if _is_choice(annotation):
        return [annotation]
    return [a for a in get_args(annotation) if _is_choice(a)]


DEFINITIONS = [getattr(config, name) for name in config.__all__]
DEFINITIONS = [d for d in DEFINITIONS if _is_choice(d)]

# (command, parameter) -> the definition its values come from.
CLI_OPTIONS = {
    ("train", "recipe"): Recipe,
    ("train", "preset"): UNetPreset,
    ("train", "normalization"): NormalizationPolicy,
    ("denoise", "dtype"): DenoisedDtype,
    ("denoise", "engine"): EngineName,
    ("reconstruct", "source"): ReconSource,
    ("reconstruct", "psf"): PSFKind,
}
# Arguments that get each command past its required parameters.
CLI_PREFIX = {
    "train": ["train", "pilot.tif", "--out", "model.sn2n"],
    "denoise": ["denoise", "in.tif", "--model", "model.sn2n", "--out", "out.tif"],
    "reconstruct": ["reconstruct", "run"],
}
PROFILE_FIELDS = {
    "microscope.kind": MicroscopeKind,
    "microscope.simulated.sample": StructureKind,
    "sim.pattern_source": PatternSource,
    "training.init": TrainingInit,
    "denoise.engine": EngineName,
    "denoise.precision": Precision,
    "output.format": FileFormat,
    "output.denoised_dtype": DenoisedDtype,
    "output.backlog_policy": BacklogPolicy,
    "output.zarr_backend": ZarrBackend,
    "output.isolation": Isolation,
    "reconstruction.live": ReconLive,
    "reconstruction.source": ReconSource,
    "reconstruction.psf": PSFKind,
}


def _commands(app=cli.app, prefix=""):
    for command in app.registered_commands:
        yield prefix + (command.name or command.callback.__name__), command.callback
    for group in app.registered_groups:
        yield from _commands(group.typer_instance, f"{prefix}{group.name} ")


def _leaf_fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        nested = [
            c
            for c in (field.annotation, *get_args(field.annotation))
            if isinstance(c, type) and issubclass(c, BaseModel)
        ]
        if nested:
            yield from _leaf_fields(nested[0], f"{prefix}{name}.")
        else:
            yield prefix + name, field


def _enums(schema: object) -> list[list[str]]:
    """Every ``enum`` list in a JSON schema, ``$defs`` included."""
    if isinstance(schema, dict):
        found = [schema["enum"]] if "enum" in schema else []
        return found + [e for value in schema.values() for e in _enums(value)]
    if isinstance(schema, list):
        return [e for value in schema for e in _enums(value)]
    return []


def test_choices_lists_values_in_definition_order():
    assert choices(FileFormat) == ("ome-zarr", "ome-tiff")
    assert choices(Recipe) == ("paper", "twin")
    assert choices(EngineName) == ("auto", *choices(BackendName))
    assert len(DEFINITIONS) >= 15
    for definition in DEFINITIONS:
        values = choices(definition)
        assert values and all(isinstance(v, str) for v in values), definition
        assert len(set(values)) == len(values), f"{definition} repeats a value"


# ------------------------------------------------------------------------------------ CLI


def test_cli_options_take_their_choices_from_config():
    found = {}
    for command, callback in _commands():
        for name, annotation in get_type_hints(callback, include_extras=True).items():
            for choice in _choices_in(annotation):
                assert any(choice is d for d in DEFINITIONS), (
                    f"sn2n-live {command} --{name} defines its own choices {choice}; "
                    "use one of sn2n_live.config's"
                )
                found[(command, name)] = choice
    assert found.keys() == CLI_OPTIONS.keys()
    for key, choice in found.items():
        assert choice is CLI_OPTIONS[key], key


@pytest.mark.parametrize(("command", "name"), sorted(CLI_OPTIONS))
def test_cli_help_lists_and_parsing_enforces_the_choices(command, name):
    values = choices(CLI_OPTIONS[(command, name)])
    runner = CliRunner()
    env = {"COLUMNS": "250"}  # one line per option: the list of values is not wrapped
    shown = runner.invoke(cli.app, [command, "--help"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "|".join(values) in shown.output
    option = "--" + name.replace("_", "-")
    refused = runner.invoke(cli.app, [*CLI_PREFIX[command], option, "nope"], env=env)
    assert refused.exit_code == 2
    assert all(f"'{v}'" in refused.output for v in values), refused.output


# ------------------------------------------------------------------------------- profiles


def test_profile_fields_take_their_choices_from_config():
    found = {}
    for key, field in _leaf_fields(Profile):
        for choice in _choices_in(field.annotation):
            assert any(choice is d for d in DEFINITIONS), (
                f"profile key {key} defines its own choices {choice}; use sn2n_live.config's"
            )
            found[key] = choice
    assert found.keys() == PROFILE_FIELDS.keys()
    for key, choice in found.items():
        assert choice is PROFILE_FIELDS[key], key


@pytest.mark.parametrize("key", sorted(PROFILE_FIELDS))
def test_profile_schema_allows_exactly_the_choices(key):
    field = dict(_leaf_fields(Profile))[key]
    enums = _enums(TypeAdapter(field.annotation).json_schema())
    assert enums == [list(choices(PROFILE_FIELDS[key]))]


@pytest.mark.parametrize("key", sorted(PROFILE_FIELDS))
def test_profile_docs_list_exactly_the_choices(key):
    rows = {}
    for line in (DOCS / "profiles.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 6 and cells[1].startswith("`"):
            rows[cells[1].strip("`")] = cells[2]
    assert re.findall(r'`"([^"]+)"`', rows[key]) == list(choices(PROFILE_FIELDS[key]))


# ----------------------------------------------------------------------------------- code


def test_engine_selection_knows_exactly_the_backends_and_precisions():
    from sn2n_live.engine import AUTO_ORDER, BACKENDS, PRECISIONS, choose_backend
    from sn2n_live.engine._select import _PRECISIONS, _STATUS

    assert choices(BackendName) == BACKENDS
    assert choices(Precision) == PRECISIONS
    assert set(_PRECISIONS) == set(_STATUS) == set(BACKENDS)
    assert all(set(p) <= set(PRECISIONS) for p in _PRECISIONS.values())
    assert set(AUTO_ORDER) <= set(BACKENDS)
    with pytest.raises(ValueError, match="Unknown engine") as refused:
        choose_backend("nope")  # type: ignore[arg-type]
    assert all(name in str(refused.value) for name in choices(EngineName))


def test_io_stores_exactly_the_denoised_dtypes(tmp_path):
    from sn2n_live.io import StackWriter, cast_denoised

    frames = np.array([[[-1.4, 2.5, 70000.0]]])
    for dtype in choices(DenoisedDtype):
        assert cast_denoised(frames, dtype).dtype == np.dtype(dtype)
    np.testing.assert_array_equal(cast_denoised(frames, "uint16"), [[[0, 2, 65535]]])
    with pytest.raises(ValueError, match=re.escape(str(choices(DenoisedDtype)))):
        cast_denoised(frames, "int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape(str(choices(DenoisedDtype)))):
        StackWriter(
            tmp_path / "out.tif",
            shape=(1, 1, 3),
            axes="qyx",
            dtype="int8",  # type: ignore[arg-type]
            provenance={},
        )


def test_training_knows_exactly_the_recipes_presets_policies_and_inits():
    from sn2n_live.method import PRESETS, PRETRAINED, RECIPES, TrainingConfig, initial_package
    from sn2n_live.method._package import _ALLOWED_MODES

    assert set(RECIPES) == set(Recipe)
    assert set(PRESETS) == set(UNetPreset)
    assert set(PRETRAINED) <= set(UNetPreset)
    assert set(_ALLOWED_MODES) == set(choices(NormalizationPolicy))
    fields = {"recipe": Recipe, "preset": UNetPreset, "policy": NormalizationPolicy}
    for name, choice in fields.items():
        annotation = TrainingConfig.model_fields[name].annotation
        assert annotation is choice, name
        assert _enums(TypeAdapter(annotation).json_schema()) == [list(choices(choice))], name
    assert initial_package(TrainingInit.SCRATCH) is None
    assert initial_package(TrainingInit.PRETRAINED) is not None
    assert len(TrainingInit) == 2, "initial_package must learn the new way to start"


def test_acquisition_uses_the_config_definitions():
    from sn2n_live.acquisition import _batching, _contracts, _writers

    assert _writers.FileFormat is FileFormat
    assert _writers.ZarrBackend is ZarrBackend
    assert _writers.DenoisedDtype is DenoisedDtype
    assert _contracts.Policy is BacklogPolicy
    assert _contracts.Isolation is Isolation
    assert _writers.TIFF_DIMS is config.TIFF_DIMS
    assert (_writers.ANGLE_KEY, _writers.PHASE_KEY) == (config.ANGLE_KEY, config.PHASE_KEY)
    assert _batching.SIM_KEY == config.SIM_METADATA_KEY
