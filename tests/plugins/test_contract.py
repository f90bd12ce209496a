"""The plugin contract is checked when a plugin is loaded; a broken plugin is a located error (exit 20)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.plugins import PluginContractError, Registry
from tests.conftest import Workspace

USES_IT = """
runbook: uses-plugin
title: Uses a plugin from plugin_paths
version: 1
description: t
source: tests
steps:
  - id: one
    {kind}: {name}
    with: {{}}
  - id: done
    end: SUCCESS
"""

GOOD_CHECK = '''
class Fine:
    name = "acme.fine"
    mutates = False
    params_schema = {"type": "object", "additionalProperties": False, "properties": {}}

    def run(self, params, ctx):
        return {"ok": True}
'''

# (file content, kind/name used, fragments the message must hold, the line it points at)
BROKEN = [
    pytest.param("x = 1\ndef broken(:\n    pass\n", "check", "acme.fine",
                 ["bad.py:2:", "has a syntax error"], id="syntax-error"),
    pytest.param("import json\nraise RuntimeError('no database configured')\n", "check", "acme.fine",
                 ["bad.py:2:1:", "failed to import: RuntimeError: no database configured"], id="raises-on-import"),
    pytest.param("import no_such_module_anywhere\n", "check", "acme.fine",
                 ["bad.py:1:1:", "ModuleNotFoundError"], id="missing-dependency"),
    pytest.param('''
class Half:
    name = "acme.half"
    mutates = True
    params_schema = {"type": "object", "properties": {}}

    def run(self, params, ctx):
        return {}
''', "action", "acme.half", ["bad.py:1:1:", "action plugin 'acme.half'", "has no plan, verify method"],
                 id="action-without-plan-and-verify"),
    pytest.param('''
class BadSchema:
    name = "acme.bad_schema"
    mutates = False
    params_schema = {"type": "object", "properties": {"n": {"type": "integr"}}}

    def run(self, params, ctx):
        return {}
''', "check", "acme.bad_schema", ["bad.py:1:1:", "invalid params_schema at properties/n/type"],
                 id="invalid-schema"),
]


@pytest.mark.parametrize(("source", "kind", "name", "fragments"), BROKEN)
def test_a_broken_plugin_file_is_a_located_error(ws: Workspace, source: str, kind: str, name: str,
                                                 fragments: list[str]) -> None:
    ws.write("runbook.yaml", "plugin_paths: [plugins]\n")
    ws.write("plugins/good.py", GOOD_CHECK)
    ws.write("plugins/bad.py", source)
    ws.runbook("uses-plugin", USES_IT.format(kind=kind, name=name))
    for command in (("validate",), ("run", "uses-plugin")):
        result = ws.cli(*command)
        assert result.code == 20, result.text
        assert "internal error" not in result.text and "Traceback" not in result.text
        for fragment in fragments:
            assert fragment in result.err, result.err
    assert not ws.evidence_dirs(), "nothing ran"


def test_a_good_plugin_file_still_works(ws: Workspace) -> None:
    ws.write("runbook.yaml", "plugin_paths: [plugins]\n")
    ws.write("plugins/good.py", GOOD_CHECK)
    ws.runbook("uses-plugin", USES_IT.format(kind="check", name="acme.fine"))
    assert ws.cli("run", "uses-plugin").code == 0


class _Spread:
    """A well-formed check."""

    name = "acme.spread"
    mutates = False
    params_schema: dict[str, Any] = {"type": "object", "properties": {}}

    def run(self, params: Any, ctx: Any) -> dict[str, Any]:
        """Nothing."""
        return {}


class _Mutating(_Spread):
    mutates = True


def _origin(name: str) -> str:
    return f"entry point runbook.checks: {name} = acme_runbook.fx:Spread"


@pytest.mark.parametrize(("registered_as", "cls", "message"), [
    ("acme.other", _Spread, "declares name 'acme.spread', expected 'acme.other'"),
    ("acme.spread", _Mutating, "has mutates = True, expected False for a check"),
])
def test_an_entry_point_that_breaks_the_contract_names_the_entry_point(registered_as: str, cls: type,
                                                                       message: str) -> None:
    registry = Registry()
    registry.add("check", registered_as, lambda: cls, _origin(registered_as))
    with pytest.raises(PluginContractError) as caught:
        registry.get("check", registered_as)
    problem = caught.value.problems[0]
    assert problem.path == __file__ and problem.line is not None
    assert _origin(registered_as) in problem.message and message in problem.message
    assert caught.value.exit_code == 20


def test_an_entry_point_whose_module_does_not_import_is_located() -> None:
    from engine.plugins import _import_target

    origin = "entry point runbook.checks: acme.gone = acme_missing_pkg.fx:Spread"
    registry = Registry()
    registry.add("check", "acme.gone", _import_target("acme_missing_pkg.fx:Spread", origin), origin)
    with pytest.raises(PluginContractError) as caught:
        registry.get("check", "acme.gone")
    assert origin in str(caught.value) and "ModuleNotFoundError" in str(caught.value)


def test_registry_get_is_typed_by_kind(tmp_path: Path) -> None:
    from engine.plugins import Action, Check, load_registry

    registry = load_registry()
    action = registry.get("action", "file.write")
    check = registry.get("check", "file.exists")
    assert isinstance(action, Action) and isinstance(check, Check) and not isinstance(check, Action)


def test_a_schema_proven_once_is_remembered_and_a_refused_one_never_is(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import cache, plugins

    monkeypatch.setattr(cache, "cache_places", lambda: [tmp_path])
    good = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    bad = {"type": "object", "properties": {"n": {"type": "integer", "minimum": "one"}}}
    assert plugins._schema_problem(good) is None
    assert [p.name for p in tmp_path.iterdir()] and all(p.name.startswith("schema-ok-") for p in tmp_path.iterdir())
    assert plugins._schema_problem(good) is None
    for _ in range(2):
        problem = plugins._schema_problem(bad)
        assert problem is not None and "properties/n/minimum" in problem
    assert len(list(tmp_path.iterdir())) == 1
