"""A runbook proven valid once is not validated again, in any workspace, unless something validation read
changed: the file, a runbook it calls (transitively), or a plugin's code."""

from __future__ import annotations

from tests.conftest import Workspace

PARENT = """
    runbook: parent
    version: 1
    title: Parent
    description: calls child with x
    source: tests
    steps:
      - id: delegate
        call: child
        with: {x: "1"}
    """


def child(param: str) -> str:
    return f"""
    runbook: child
    version: 1
    title: Child
    description: declares {param}
    source: tests
    params:
      {param}: {{type: string, default: "0"}}
    steps:
      - id: look
        check: noop
    """


def test_a_proof_covers_the_callee_in_this_workspace_and_any_other(tmp_path) -> None:
    first, second = Workspace(tmp_path / "a"), Workspace(tmp_path / "b")
    for ws, param in ((first, "x"), (second, "y")):
        ws.runbook("parent", PARENT)
        ws.runbook("child", child(param))
    assert first.cli("run", "parent", "--no-input").code == 0  # proven valid with a child that declares x
    refused = second.cli("run", "parent", "--no-input")  # the same parent bytes, a child without x
    assert refused.code == 20 and "runbook 'child' has no param 'x'" in refused.err, refused.text
    first.runbook("child", child("y"))  # the callee changed where the proof was made
    again = first.cli("run", "parent", "--no-input")
    assert again.code == 20 and "has no param 'x'" in again.err, again.text


def test_a_proof_covers_the_callees_callee(tmp_path) -> None:
    ws = Workspace(tmp_path)
    ws.runbook("top", PARENT.replace("runbook: parent", "runbook: top").replace("call: child", "call: middle")
               .replace('with: {x: "1"}', "with: {}"))
    ws.runbook("middle", PARENT.replace("runbook: parent", "runbook: middle"))
    ws.runbook("child", child("x"))
    assert ws.cli("run", "top", "--no-input").code == 0
    ws.runbook("child", PARENT.replace("runbook: parent", "runbook: child").replace("call: child", "call: top")
               .replace('with: {x: "1"}', "with: {}"))  # now top -> middle -> child -> top
    cycle = ws.cli("run", "top", "--no-input")
    assert cycle.code == 20 and "call cycle" in cycle.err, cycle.text


def test_a_proof_covers_the_plugin_code(ws: Workspace) -> None:
    ws.write("runbook.yaml", "plugin_paths: [plugins]\n")
    plugin = """
        from typing import Any, ClassVar

        class Probe:
            name: ClassVar[str] = "probe"
            mutates: ClassVar[bool] = False
            params_schema: ClassVar[dict[str, Any]] = {SCHEMA}

            def run(self, params: Any, ctx: Any) -> dict[str, Any]:
                return {"ok": True}
        """
    ws.write("plugins/probe.py", plugin.replace("{SCHEMA}", '{"type": "object"}'))
    ws.runbook("probing", """
        runbook: probing
        version: 1
        title: Probing
        description: one plugin step
        source: tests
        steps:
          - id: probe
            check: probe
            with: {target: db}
        """)
    assert ws.cli("run", "probing", "--no-input").code == 0
    ws.write("plugins/probe.py", plugin.replace("{SCHEMA}", '{"type": "object", "additionalProperties": False}'))
    refused = ws.cli("run", "probing", "--no-input")
    assert refused.code == 20 and "target" in refused.err, refused.text
