"""Rehearsals (the shape of orquesta's): a runbook, scripted plugin results, the expected steps and outcome.

Routing is what is tested here, not the CLI or a subprocess, so each case runs in this process through the
same `Workspace.start` the CLI calls, with two plugins from a `plugin_paths` file that answer from a script:
`script.json` maps a step id to the results of its successive calls (the last one repeats); `{"raise": MSG}`
fails the call. The steps taken are read back from the run's evidence (the final `step_finished` and the
`rollback` records), so a case also proves the log says what happened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.console import QuietConsole
from engine.session import RunOptions, Workspace

PLUGINS = '''
import json
from typing import Any, ClassVar

from engine.errors import PluginError
from engine.plugins import Plan


def answer(ctx: Any) -> dict[str, Any]:
    script = json.loads((ctx.workdir / "script.json").read_text())
    calls = ctx.workdir / "calls.txt"
    done = calls.read_text().split().count(ctx.step_id) if calls.exists() else 0
    with calls.open("a") as out:
        out.write(ctx.step_id + "\\n")
    results = script.get(ctx.step_id) or [{"ok": True}]
    result = results[min(done, len(results) - 1)]
    if "raise" in result:
        raise PluginError(result["raise"])
    return result


class Rehearse:
    name: ClassVar[str] = "rehearse"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    def run(self, params: Any, ctx: Any) -> dict[str, Any]:
        return answer(ctx)


class RehearseAct(Rehearse):
    name: ClassVar[str] = "rehearse.act"
    mutates: ClassVar[bool] = True

    def plan(self, params: Any, ctx: Any) -> Plan:
        return Plan(summary=f"would act for {ctx.step_id}")

    def verify(self, params: Any, ctx: Any) -> bool | None:
        return None
'''

HEAD = "runbook: rehearsal\ntitle: Rehearsal\nversion: 1\ndescription: d\nsource: tests\n"
FAIL = [{"raise": "no"}]
BAD = [{"ok": False}]

# (case, runbook body after HEAD, script, the steps taken, outcome): a step taken is (step, status) of its final
# `step_finished` record, and a rollback is ("rollback", step) followed by the rollback step's own record.
REHEARSALS: list[tuple[str, str, dict[str, Any], list[tuple[str, str]], str]] = [
    ("steps fall through to the end", """
steps:
  - {id: a, check: rehearse}
  - {id: b, action: rehearse.act}
  - {id: done, end: SUCCESS}
""", {}, [("a", "ok"), ("b", "ok"), ("done", "ok")], "SUCCESS"),
    ("the last step falling off the list ends the run in SUCCESS", """
steps:
  - {id: a, check: rehearse}
""", {}, [("a", "ok")], "SUCCESS"),
    ("a check that says ok: false fails, unhandled: BUSINESS_REJECT", """
steps:
  - {id: a, check: rehearse}
  - {id: done, end: SUCCESS}
""", {"a": BAD}, [("a", "failed")], "BUSINESS_REJECT"),
    ("a failed action, unhandled: INTERNAL_ERROR", """
steps:
  - {id: a, action: rehearse.act}
  - {id: done, end: SUCCESS}
""", {"a": FAIL}, [("a", "failed")], "INTERNAL_ERROR"),
    ("the step's fail outcome wins over default_fail", """
default_fail: ANOMALY_HALT
steps:
  - {id: a, check: rehearse, fail: BUSINESS_SKIP}
  - {id: done, end: SUCCESS}
""", {"a": BAD}, [("a", "failed")], "BUSINESS_SKIP"),
    ("default_fail wins over the kind's outcome", """
default_fail: ANOMALY_HALT
steps:
  - {id: a, action: rehearse.act}
""", {"a": FAIL}, [("a", "failed")], "ANOMALY_HALT"),
    ("on_fail routes a failure to a handler", """
steps:
  - {id: a, check: rehearse, on_fail: handle}
  - {id: skipped_over, check: rehearse}
  - {id: handle, end: BUSINESS_REJECT, message: handled}
""", {"a": BAD}, [("a", "failed"), ("handle", "ok")], "BUSINESS_REJECT"),
    ("expect decides, not the plugin's ok", """
steps:
  - {id: a, check: rehearse, expect: result.level > 3}
""", {"a": [{"ok": True, "level": 2}]}, [("a", "failed")], "BUSINESS_REJECT"),
    ("when false skips the step and goes on", """
steps:
  - {id: a, check: rehearse, when: 'false'}
  - {id: b, check: rehearse}
""", {}, [("a", "skipped"), ("b", "ok")], "SUCCESS"),
    ("goto jumps over steps", """
steps:
  - {id: a, check: rehearse, goto: c}
  - {id: b, action: rehearse.act}
  - {id: c, action: rehearse.act, rollback: b}
""", {}, [("a", "ok"), ("c", "ok")], "SUCCESS"),
    ("decide takes the first true branch", """
steps:
  - {id: a, check: rehearse}
  - id: route
    decide:
      - {if: steps.a.result.level > 5, goto: high}
      - {if: steps.a.result.level > 1, goto: mid}
      - {else: low}
  - {id: high, end: ANOMALY_HALT}
  - {id: mid, end: BUSINESS_REJECT}
  - {id: low, end: SUCCESS}
""", {"a": [{"ok": True, "level": 3}]}, [("a", "ok"), ("route", "ok"), ("mid", "ok")], "BUSINESS_REJECT"),
    ("decide with no true branch and no else fails", """
steps:
  - id: route
    decide:
      - {if: 'false', goto: done}
  - {id: done, end: SUCCESS}
""", {}, [("route", "failed")], "BUSINESS_REJECT"),
    ("retry runs a failing action again until it passes", """
steps:
  - {id: a, action: rehearse.act, retry: {attempts: 3, delay: 0s}}
""", {"a": [*FAIL, *FAIL, {"ok": True}]}, [("a", "ok")], "SUCCESS"),
    ("retry gives up after its attempts", """
steps:
  - {id: a, action: rehearse.act, retry: {attempts: 2, delay: 0s}}
""", {"a": FAIL}, [("a", "failed")], "INTERNAL_ERROR"),
    ("an unhandled failure runs the rollbacks of done actions newest first", """
steps:
  - {id: a, action: rehearse.act, rollback: undo_a}
  - {id: b, action: rehearse.act, rollback: undo_b}
  - {id: c, check: rehearse}
  - {id: done, end: SUCCESS}
  - {id: undo_a, action: rehearse.act}
  - {id: undo_b, action: rehearse.act}
""", {"c": BAD}, [("a", "ok"), ("b", "ok"), ("c", "failed"), ("rollback", "undo_b"), ("undo_b", "ok"),
                  ("rollback", "undo_a"), ("undo_a", "ok")], "BUSINESS_REJECT"),
    ("a failed rollback is recorded and the remaining rollbacks still run", """
steps:
  - {id: a, action: rehearse.act, rollback: undo_a}
  - {id: b, action: rehearse.act, rollback: undo_b}
  - {id: c, action: rehearse.act}
  - {id: undo_a, action: rehearse.act}
  - {id: undo_b, action: rehearse.act}
""", {"c": FAIL, "undo_b": FAIL}, [("a", "ok"), ("b", "ok"), ("c", "failed"), ("rollback", "undo_b"),
                                   ("undo_b", "failed"), ("rollback", "undo_a"), ("undo_a", "ok")], "INTERNAL_ERROR"),
    ("an action that never ran registers no rollback", """
steps:
  - {id: a, action: rehearse.act, rollback: undo_a, when: 'false'}
  - {id: b, action: rehearse.act}
  - {id: undo_a, action: rehearse.act}
""", {"b": FAIL}, [("a", "skipped"), ("b", "failed")], "INTERNAL_ERROR"),
    ("for_each runs once per item and its result is the list", """
steps:
  - {id: each, check: rehearse, for_each: '[1, 2, 3]'}
  - {id: count, check: rehearse, expect: steps.each.result | length == 3}
""", {}, [("each", "ok"), ("count", "ok")], "SUCCESS"),
    ("an end step's outcome ends the run", """
steps:
  - {id: a, check: rehearse}
  - {id: stop, end: ANOMALY_HALT, message: 'level {{ steps.a.result.ok }}'}
""", {}, [("a", "ok"), ("stop", "ok")], "ANOMALY_HALT"),
]


@pytest.fixture
def rehearsal_root(tmp_path: Path) -> Iterator[Path]:
    """A workspace with the scripted plugins, entered as the working directory (as the CLI would be)."""
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "rehearse.py").write_text(PLUGINS, encoding="utf-8")
    (tmp_path / "runbook.yaml").write_text("plugin_paths: [plugins]\n", encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)


def rehearse(root: Path, body: str, script: dict[str, Any], mode: str = "live",
             assume: dict[str, str] | None = None) -> tuple[str, list[tuple[str, str]]]:
    """Run the runbook in this process; its outcome and the steps its evidence says were taken."""
    (root / "runbooks" / "rehearsal.yaml").write_text(HEAD + body.lstrip("\n"), encoding="utf-8")
    (root / "script.json").write_text(json.dumps(script), encoding="utf-8")
    (root / "calls.txt").unlink(missing_ok=True)
    ws = Workspace(load_config(cwd=root), QuietConsole())
    result = ws.start(ws.load("rehearsal"), {}, RunOptions(mode=mode, operator="rehearsal", assume=assume or {}))
    taken: list[tuple[str, str]] = []
    for line in (result.evidence_dir / "events.jsonl").read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event["type"] == "step_finished" and event["data"].get("final", True):
            taken.append((event["step"], event["data"]["status"]))
        elif event["type"] == "rollback":
            taken.append(("rollback", event["step"]))
    return str(result.outcome.name), taken


@pytest.mark.parametrize(("body", "script", "steps", "outcome"), [case[1:] for case in REHEARSALS],
                         ids=[case[0] for case in REHEARSALS])
def test_rehearsal(rehearsal_root: Path, body: str, script: dict[str, Any], steps: list[tuple[str, str]],
                   outcome: str) -> None:
    assert rehearse(rehearsal_root, body, script) == (outcome, steps)


def test_retry_calls_the_plugin_once_per_attempt(rehearsal_root: Path) -> None:
    body = "steps:\n  - {id: a, action: rehearse.act, retry: {attempts: 3, delay: 0s}}\n"
    rehearse(rehearsal_root, body, {"a": [*FAIL, *FAIL, {"ok": True}]})
    assert (rehearsal_root / "calls.txt").read_text().split() == ["a", "a", "a"]


def test_dry_run_plans_actions_and_assume_fail_routes_like_a_failure(rehearsal_root: Path) -> None:
    body = """
steps:
  - {id: a, action: rehearse.act, rollback: undo_a}
  - {id: b, action: rehearse.act, on_fail: handle}
  - {id: done, end: SUCCESS}
  - {id: handle, end: BUSINESS_REJECT}
  - {id: undo_a, action: rehearse.act}
"""
    assert rehearse(rehearsal_root, body, {}, mode="dry-run") == (
        "SUCCESS", [("a", "planned"), ("b", "planned"), ("done", "ok")])
    assert not (rehearsal_root / "calls.txt").exists()  # no action ran
    outcome, steps = rehearse(rehearsal_root, body, {}, mode="dry-run", assume={"b": "fail"})
    assert (outcome, steps) == ("BUSINESS_REJECT", [("a", "planned"), ("b", "failed"), ("handle", "ok")])
