"""The package's import rules (docs/architecture.md), checked on the source itself."""

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "sn2n_live"
QT = ("qtpy", "PySide6", "PyQt5", "PyQt6", "ndv", "vispy", "superqt")
# What a user interface uses: the library layers report through callbacks instead.
UI = ("rich", "typer", "sn2n_live.cli")
# Forbidden imports of each package (folder) or module, anywhere in its source.
RULES = {
    "method": (
        "sn2n_live.app",
        "sn2n_live.acquisition",
        "sn2n_live.engine",
        "sn2n_live.io",
        "sn2n_live.profiles",
        "pymmcore_plus",
        *UI,
        *QT,
    ),
    "simulation": (
        "sn2n_live.app",
        "sn2n_live.acquisition",
        "sn2n_live.engine",
        "sn2n_live.method",
        "sn2n_live.config",  # it imports the simulation's optics
        "pymmcore_plus",
        "torch",
        *QT,
    ),
    "engine": (
        "sn2n_live.app",
        "sn2n_live.acquisition",
        "sn2n_live.io",
        "sn2n_live.profiles",
        "pymmcore_plus",
        *UI,
        *QT,
    ),
    # The schemas: no hardware, writers, torch or GUI (profile check --schema-only).
    "config": (
        "sn2n_live.app",
        "sn2n_live.acquisition",
        "sn2n_live.engine",
        "sn2n_live.method",
        "sn2n_live.io",
        "sn2n_live.profiles",
        "pymmcore_plus",
        "ome_writers",
        "torch",
        *UI,
        *QT,
    ),
    # SIM reconstruction: numpy/scipy/torch on frames; it knows no hardware, store or GUI.
    "sim": (
        "sn2n_live.app",
        "sn2n_live.acquisition",
        "sn2n_live.engine",
        "sn2n_live.method",
        "sn2n_live.io",
        "sn2n_live.profiles",
        "sn2n_live.preview",
        "pymmcore_plus",
        "ome_writers",
        "zarr",
        *UI,
        *QT,
    ),
    "acquisition": (*QT, "sn2n_live.preview", "sn2n_live.app"),
    # The GUI application composes the layers below it; only the command line is above.
    "app": UI,
    "io": (
        "sn2n_live.app",
        "sn2n_live.acquisition",
        "sn2n_live.engine",
        "sn2n_live.method",
        "sn2n_live.profiles",
        "pymmcore_plus",
        "torch",
        *UI,
        *QT,
    ),
    # The command line may use every layer, but only inside its commands (see below).
    "cli": QT,
}
# Nothing below the dose tuner imports it.
for _below in ("method", "simulation", "sim", "engine", "config", "acquisition", "io", "preview"):
    RULES.setdefault(_below, ())
    RULES[_below] = (*RULES[_below], "sn2n_live.tune")
# Modules that import nothing but the standard library and these.
ONLY = {
    "profiles": ("pydantic", "sn2n_live.config"),
    "config/_choices": (),
}
# The live preview (models, views and controllers apart, ndv's way) imports only these,
# the standard library, and acquisition through its public face: exactly the module
# `sn2n_live.acquisition`, never one of its private modules.
PREVIEW = ("qtpy", "numpy", "matplotlib", "sn2n_live.config", "sn2n_live.preview", "vispy")
# The app may import the other layers only through their public faces.
APP_FACES = (
    "sn2n_live.acquisition",
    "sn2n_live.method",
    "sn2n_live.preview",
    "sn2n_live.profiles",
)
PREVIEW_FACES = ("sn2n_live.acquisition",)
# The dose tuner (sn2n-live tune) composes the layers below it through their public faces;
# it draws nothing itself (progress through a callback) and knows no Qt.
TUNE = ("numpy", "scipy", "skimage", "matplotlib", "torch", "useq", "sn2n_live.tune")
TUNE_FACES = (
    "sn2n_live.acquisition",
    "sn2n_live.method",
    "sn2n_live.engine",
    "sn2n_live.profiles",
    "sn2n_live.config",
)
# Its modules that stay free of Qt (pure models and rendering) or of acquisition (the
# views); vispy (the OpenGL pane) only in `_gl`.
_VIEW_MUST_NOT = ("sn2n_live.acquisition", "sn2n_live.preview._model", "sn2n_live.preview._widget")
PREVIEW_MODULES = {
    "_render": (*QT, "sn2n_live.acquisition"),
    "_compose": (*QT, "sn2n_live.acquisition"),
    "_model": QT,
    "_view": (*_VIEW_MUST_NOT, "vispy"),
    "_gl": _VIEW_MUST_NOT,
    "_widget": ("vispy",),
}
# What cli.py imports when it is loaded: `sn2n-live --help` and `profile check
# --schema-only` start without torch, engines, writers or hardware.
CLI_MODULE_LEVEL = ("numpy", "typer", "rich", "sn2n_live.config")


def _files(name: str) -> list[Path]:
    folder = SRC / name
    return sorted(folder.glob("*.py")) if folder.is_dir() else [SRC / f"{name}.py"]


def _imports(path: Path) -> set[str]:
    return _imported(ast.walk(ast.parse(path.read_text())))


def _imported(nodes: Iterable[ast.AST]) -> set[str]:
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _matches(name: str, prefixes: Iterable[str]) -> list[str]:
    return [p for p in prefixes if name == p or name.startswith(p + ".")]


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_does_not_import_forbidden_layers(package):
    files = _files(package)
    assert all(f.is_file() for f in files) and files, f"no modules found for {package}"
    for file in files:
        for name in _imports(file):
            bad = _matches(name, RULES[package])
            assert not bad, f"{file.relative_to(SRC)} imports {name} ({package} must not)"


@pytest.mark.parametrize("module", sorted(ONLY))
def test_module_imports_only_the_standard_library_and_its_allowed_layers(module):
    (file,) = _files(module)
    for name in _imports(file):
        allowed = name.partition(".")[0] in sys.stdlib_module_names or _matches(name, ONLY[module])
        assert allowed, f"{module} imports {name}; it may import only {ONLY[module]} (and std)"


def test_preview_imports_only_qt_numpy_config_and_the_acquisition_face():
    files = _files("preview")
    assert files and all(f.is_file() for f in files), "no modules found for preview"
    for file in files:
        for name in _imports(file):
            allowed = (
                name.partition(".")[0] in sys.stdlib_module_names
                or _matches(name, PREVIEW)
                or name in PREVIEW_FACES
            )
            assert allowed, (
                f"{file.relative_to(SRC)} imports {name}; the preview may import only "
                f"{PREVIEW}, the public {PREVIEW_FACES} (and std)"
            )


def test_app_reads_the_other_layers_through_their_public_faces():
    files = _files("app")
    assert files, "no modules found for app"
    for file in files:
        for name in _imports(file):
            if name.startswith("sn2n_live.") and not name.startswith("sn2n_live.app"):
                assert name in APP_FACES, (
                    f"{file.relative_to(SRC)} imports {name}; the app may import only the "
                    f"public faces {APP_FACES}"
                )


@pytest.mark.parametrize("module", sorted(PREVIEW_MODULES))
def test_preview_models_know_no_qt_and_the_view_knows_no_acquisition(module):
    file = SRC / "preview" / f"{module}.py"
    for name in _imports(file):
        bad = _matches(name, PREVIEW_MODULES[module])
        assert not bad, f"preview/{module}.py imports {name} (it must not)"


def test_cli_imports_the_heavy_layers_only_inside_its_commands():
    tree = ast.parse((SRC / "cli.py").read_text())
    # Module-level statements, but not the `if TYPE_CHECKING:` block (never run).
    loaded = [
        node
        for node in tree.body
        if not (isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    ]
    for name in _imported(loaded):
        light = name.partition(".")[0] in sys.stdlib_module_names
        assert light or _matches(name, CLI_MODULE_LEVEL), (
            f"cli.py imports {name} when it is loaded; import it inside the commands that use it"
        )


def test_profile_schema_check_loads_no_hardware_writers_or_torch():
    import subprocess

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from sn2n_live.cli import app\n"
        "result = CliRunner().invoke(app, ['profile', 'check', 'demo-sim', '--schema-only'])\n"
        "assert result.exit_code == 0, result.output\n"
        "heavy = ('pymmcore_plus', 'pymmcore', 'ome_writers', 'torch', 'zarr', 'qtpy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"the schema check imported {done.stdout.strip()}"


def test_tune_imports_only_the_public_faces_and_no_user_interface():
    files = _files("tune")
    assert files and all(f.is_file() for f in files), "no modules found for tune"
    for file in files:
        for name in _imports(file):
            allowed = (
                name.partition(".")[0] in sys.stdlib_module_names
                or _matches(name, TUNE)
                or name in TUNE_FACES
            )
            assert allowed, (
                f"{file.relative_to(SRC)} imports {name}; tune may import only {TUNE}, the "
                f"public faces {TUNE_FACES} (and std), never Qt or the command line"
            )
