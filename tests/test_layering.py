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
