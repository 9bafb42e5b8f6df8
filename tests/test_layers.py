"""Imports point one way: the import-linter contracts in pyproject.toml (layers, no cycles, pure algos and
rewards, private modules) hold, and no module imports a private name from another package."""

import ast
from pathlib import Path

from importlinter.application.use_cases import lint_imports
from importlinter.configuration import configure

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_in_pyproject_are_kept(capsys):
    configure()  # what the lint-imports command does first
    kept = lint_imports(config_filename=str(REPO / "pyproject.toml"), cache_dir=None, no_logo=True)
    assert kept, capsys.readouterr().out


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])  # sapo_vl.rollout.types -> sapo_vl.rollout


def test_no_private_name_is_imported_across_packages():
    crossings = []
    for path in sorted((REPO / "sapo_vl").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sapo_vl"):
                crossings += [f"{module}:{node.lineno} imports {node.module}.{alias.name}" for alias in node.names
                              if alias.name.startswith("_") and not alias.name.startswith("__")
                              and _package(node.module) != _package(module)]
    assert not crossings, crossings
