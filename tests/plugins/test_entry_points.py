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
