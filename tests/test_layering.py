"""The package's import rules (docs/architecture.md), checked on the source itself."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "sn2n_live"
QT = ("qtpy", "PySide6", "PyQt5", "PyQt6", "ndv", "vispy", "superqt")
RULES = {
    "method": ("sn2n_live.acquisition", "sn2n_live.engine", "pymmcore_plus", *QT),
    "simulation": (
        "sn2n_live.acquisition",
        "sn2n_live.engine",
        "sn2n_live.method",
        "pymmcore_plus",
        "torch",
        *QT,
    ),
    "engine": ("sn2n_live.acquisition", "pymmcore_plus", *QT),
    # The schemas: no hardware, writers, torch or GUI (profile check --schema-only).
    "config": (
        "sn2n_live.acquisition",
        "sn2n_live.engine",
        "sn2n_live.method",
        "pymmcore_plus",
        "ome_writers",
        "torch",
        *QT,
    ),
    "acquisition": QT,
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_does_not_import_forbidden_layers(package):
    files = sorted((SRC / package).glob("*.py"))
    assert files, f"no modules found in {package}"
    for file in files:
        for name in _imports(file):
            bad = [f for f in RULES[package] if name == f or name.startswith(f + ".")]
            assert not bad, f"{file.relative_to(SRC)} imports {name} ({package} must not)"


def test_profile_schema_check_loads_no_hardware_writers_or_torch():
    import subprocess
    import sys

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
