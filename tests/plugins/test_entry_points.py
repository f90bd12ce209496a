"""Every declared built-in loads through its entry point and honours the plugin contract."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import jsonschema
import pytest

from engine.plugins import Action, Check

GROUPS = {"runbook.checks": False, "runbook.actions": True}
DECLARED = [(group, ep) for group in GROUPS for ep in entry_points(group=group)]


def test_the_builtins_are_declared() -> None:
    names = {(g, ep.name) for g, ep in DECLARED}
    assert ("runbook.checks", "sqlite.query") in names and ("runbook.actions", "notify") in names
    assert len(names) >= 20


@pytest.mark.parametrize(("group", "ep"), DECLARED, ids=[f"{g}:{ep.name}" for g, ep in DECLARED])
def test_entry_point_loads_and_honours_the_contract(group: str, ep: EntryPoint) -> None:
    cls = ep.load()
    assert cls.name == ep.name
    assert cls.mutates is GROUPS[group]
    jsonschema.Draft202012Validator.check_schema(cls.params_schema)
    schema = cls.params_schema
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert all("description" in prop for prop in schema["properties"].values()), (
        "every param is described"
    )
    assert cls.__doc__ and cls.run.__doc__
    plugin = cls()
    assert isinstance(plugin, Action if GROUPS[group] else Check)
    assert not jsonschema.Draft202012Validator(schema).is_valid({"no_such_param": 1})


def test_the_entry_point_cache_key_does_not_depend_on_how_the_engine_was_started(monkeypatch: pytest.MonkeyPatch,
                                                                                 tmp_path: object) -> None:
    """`runbook ...` puts the script's directory first on sys.path, `python -m ...` the current directory:
    the cached entry-point table must be valid for both (issue 12)."""
    import sys

    from engine.plugins import _environment_signature

    rest = sys.path[1:]
    monkeypatch.setattr(sys, "path", ["", *rest])
    as_module = _environment_signature()
    monkeypatch.setattr(sys, "path", [str(tmp_path), *rest])
    as_script = _environment_signature()
    assert as_module == as_script
    monkeypatch.setattr(sys, "path", [str(tmp_path), *rest, str(tmp_path)])
    assert _environment_signature() != as_script  # an entry beyond the first still counts
