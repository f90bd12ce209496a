"""The seams of docs/plugins.md: plugins stand on `transports/`, never on each other or on engine internals."""

from __future__ import annotations

import ast
from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE_API = {"engine.plugins", "engine.errors"}
# What each package may import from the project (anything else of the project is refused).
ALLOWED = {
    "checks": {"transports"},
    "actions": {"transports"},
    "transports": {"transports", "simcore"},  # simcore: the `sim` core adapter drives it in-process
}
PROJECT = {"engine", "checks", "actions", "transports", "simcore", "tests", "bench", "scripts"}
FILES = [f for package in ALLOWED for f in sorted((REPO / package).glob("*.py"))]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute module name the file imports (also inside functions), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "engine":  # `from engine import plugins`
                found += [(node.lineno, f"engine.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


@pytest.mark.parametrize("path", FILES, ids=[f"{f.parent.name}/{f.name}" for f in FILES])
def test_plugins_import_only_the_plugin_api_and_transports(path: Path) -> None:
    package = path.parent.name
    wrong = []
    for line, module in _imports(path):
        top = module.split(".")[0]
        if module.startswith("."):
            wrong.append(f"{line}: relative import {module} (name the package)")
        elif top == "engine" and module not in ENGINE_API:
            wrong.append(f"{line}: {module} (plugins see the engine only through engine.plugins, engine.errors)")
        elif top in PROJECT and top != "engine" and top not in ALLOWED[package]:
            wrong.append(f"{line}: {module} ({package}/ may import {sorted(ALLOWED[package])} of the project)")
    assert not wrong, f"{path.relative_to(REPO)}:\n" + "\n".join(wrong)


@pytest.mark.parametrize(("package", "group"), [("checks", "runbook.checks"), ("actions", "runbook.actions")])
def test_a_plugin_folder_holds_only_its_plugins(package: str, group: str) -> None:
    """Every class in checks/ is a registered check, every class in actions/ a registered action."""
    registered = {ep.value for ep in entry_points(group=group)}
    for path in sorted((REPO / package).glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                assert f"{package}.{path.stem}:{node.name}" in registered, (
                    f"{package}/{path.name}:{node.lineno}: class {node.name} is not a {group} entry point; "
                    "shared code belongs in transports/"
                )


def test_the_rule_catches_an_offender(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from engine.runs import process_alive\nfrom checks.http import fetch\nfrom engine import plugins\n")
    assert [m for _, m in _imports(bad)] == ["engine.runs", "checks.http", "engine.plugins"]
