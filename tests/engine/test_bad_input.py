"""Bad input (SPEC 3, exit 20 / 2): a clear located message, no traceback, nothing executed.

Every runbook below starts with a step that would write `marker.txt`; a bad
file must be rejected before that step can run, and no evidence bundle is
written.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import Result, Workspace

HEAD = """\
runbook: bad
title: Bad input
version: 1
params:
  n: {type: integer, default: 1}
steps:
  - id: mark
    action: file.write
    with: {path: marker.txt, content: x}
"""
# The first added step line is line 10.


def with_steps(steps: str) -> str:
    """HEAD followed by more steps (indented like the first one)."""
    return HEAD + textwrap.indent(textwrap.dedent(steps).lstrip("\n"), "  ")


@dataclass
class Bad:
    """One bad input: the file, the command line, and what the operator must be told."""

    text: str
    expected: list[str]
    code: int = 20
    args: list[str] = field(default_factory=list)
    where: str | None = None  # "line:col" the message must name
    step: str | None = None


CASES: dict[str, Bad] = {
    "malformed YAML": Bad(
        with_steps("- id: x\n  check: noop\n  with: {value: [1, 2\n"),
        ["YAML syntax error", "expected ',' or ']'"], where=r"\d+:\d+"),
    "tab-indented": Bad(
        HEAD + "  - id: x\n\tcheck: noop\n",
        ["YAML syntax error", "a tab: YAML must be indented with spaces"], where="11:1"),
    "unknown step key": Bad(
        with_steps("- id: x\n  check: noop\n  chekc: 1\n"),
        ["unknown key 'chekc'", "expected one of:", "check"], where="12:5", step="x"),
    "two kinds in one step": Bad(
        with_steps("- id: x\n  check: noop\n  action: shell\n"),
        ["needs exactly one of check, action", "found check, action"], where="10:5", step="x"),
    "no kind in a step": Bad(
        with_steps("- id: x\n  title: nothing to do\n"),
        ["needs exactly one of", "found none"], where="10:5", step="x"),
    "duplicate ids": Bad(
        with_steps("- id: mark\n  check: noop\n"),
        ["duplicate step id 'mark'", "first used by step #1"], where="10:9", step="mark"),
    "dangling goto": Bad(
        with_steps("- id: x\n  check: noop\n  goto: nowhere\n"),
        ["goto target 'nowhere' is not a step id", "expected one of: mark, x"], where="12:11", step="x"),
    "dangling on_fail": Bad(
        with_steps("- id: x\n  check: noop\n  on_fail: nowhere\n"),
        ["on_fail target 'nowhere' is not a step id"], where="12:14", step="x"),
    "dangling rollback": Bad(
        with_steps("- id: x\n  action: file.remove\n  with: {path: y}\n  rollback: nowhere\n"),
        ["rollback target 'nowhere' is not a step id"], where="13:15", step="x"),
    "unreachable step": Bad(
        with_steps("- id: done\n  end: SUCCESS\n- id: orphan\n  check: noop\n"),
        ["unreachable step", "no route leads here"], where="12:5", step="orphan"),
    "cycle with no exit": Bad(
        with_steps("- id: a1\n  check: noop\n  goto: a2\n- id: a2\n  check: noop\n  goto: a1\n"),
        ["cycle a1 -> a2 -> a1 has no exit", "expected a decide branch leaving it or a wait step"],
        where="10:5", step="a1"),
    "unknown plugin": Bad(
        with_steps("- id: x\n  check: nosuch\n"),
        ["unknown check plugin 'nosuch'", "expected one of:", "noop"], where="11:12", step="x"),
    "action used as a check": Bad(
        with_steps("- id: x\n  check: file.write\n  with: {path: a, content: b}\n"),
        ["unknown check plugin 'file.write'", "use `action: file.write`"], where="11:12", step="x"),
    "unknown plugin param": Bad(
        with_steps("- id: x\n  check: noop\n  with: {valu: 1}\n"),
        ["unknown key 'valu'", "expected one of: value"], where="12:12", step="x"),
    "ill-typed plugin param": Bad(
        with_steps("- id: x\n  check: shell\n  with: {argv: 5}\n"),
        ["argv: expected array, got an integer"], where="12:18", step="x"),
    "missing plugin param": Bad(
        with_steps("- id: x\n  action: file.write\n  with: {content: x}\n"),
        ["missing required key 'path'"], where=r"12:\d+", step="x"),
    "undefined name in a template": Bad(
        with_steps("- id: x\n  check: noop\n  with: {value: '{{ nope }}'}\n"),
        ["unknown name 'nope'", "expected one of: env, now, params, run, steps, trigger"],
        where="12:11", step="x"),
    "undefined param in a template": Bad(
        with_steps("- id: x\n  check: noop\n  with: {value: '{{ params.m }}'}\n"),
        ["unknown param 'm'", "expected one of: n"], where="12:11", step="x"),
    "undeclared env in a template": Bad(
        with_steps("- id: x\n  check: noop\n  with: {value: '{{ env.HOME }}'}\n"),
        ["env 'HOME' is not declared in env:"], where="12:11", step="x"),
    "unknown step in an expression": Bad(
        with_steps("- id: x\n  check: noop\n  expect: steps.ghost.ok\n"),
        ["unknown step 'ghost'", "expected one of: mark, x"], where="12:13", step="x"),
    "expression syntax error": Bad(
        with_steps("- id: x\n  check: noop\n  expect: 'result.value =='\n"),
        ["expect:", "syntax error"], where="12:13", step="x"),
    "bad duration": Bad(
        with_steps("- id: x\n  check: noop\n  timeout: 5 minutes\n"),
        ["bad duration '5 minutes'", "expected a number and a unit: 500ms, 30s, 5m, 1h"],
        where="12:14", step="x"),
    "unknown outcome": Bad(
        with_steps("- id: x\n  end: DONE\n"),
        ["'DONE' is not valid", "expected one of: SUCCESS"], where="11:10", step="x"),
    "call of an unknown runbook": Bad(
        with_steps("- id: x\n  call: nosuch\n"),
        ["call of unknown runbook 'nosuch'", "expected one of: bad"], where="11:11", step="x"),
    "runbook file is not a mapping": Bad(
        "- id: mark\n  action: file.write\n",
        ["expected a mapping with runbook, title, version, steps, got a list"], where="1:1"),
    "runbook missing required keys": Bad(
        "runbook: bad\nsteps: []\n",
        ["missing required key 'title'"], where="1:1"),
    "empty file": Bad("", ["file is empty", "expected a mapping with runbook, title, version, steps"]),
    "comment-only file": Bad("# nothing here\n", ["file is empty"]),
    "unknown --param": Bad(HEAD, ["unknown param 'zz'", "expected one of: n"], args=["--param", "zz=1"]),
    "ill-typed --param": Bad(HEAD, ["param 'n'", "'abc' is not valid", "expected integer"],
                             args=["--param", "n=abc"]),
    "--param without =": Bad(HEAD, ["'n1'", "expected NAME=VALUE"], args=["--param", "n1"]),
    "malformed --assume": Bad(HEAD, ["--assume", "expected STEP=ok or STEP=fail"], code=2,
                              args=["--dry-run", "--assume", "mark"]),
    "--assume of an unknown step": Bad(HEAD, ["--assume", "no step 'ghost'"], code=2,
                                       args=["--dry-run", "--assume", "ghost=fail"]),
    "--assume without --dry-run": Bad(HEAD, ["--assume only applies to --dry-run"], code=2,
                                      args=["--assume", "mark=ok"]),
}


def assert_rejected(ws: Workspace, result: Result, code: int) -> None:
    """Exit code as SPEC 3 says, no traceback, nothing executed, no evidence."""
    assert result.code == code, result.text
    assert "Traceback" not in result.text
    assert "internal error" not in result.text
    assert not (ws.root / "marker.txt").exists()
    assert ws.evidence_dirs() == []


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_bad_input_is_rejected_with_a_located_message(ws: Workspace, case: Bad) -> None:
    """`runbook run` of a bad file or command line: exit code, located message, nothing run."""
    ws.write("runbooks/bad.yaml", case.text)
    result = ws.cli("run", "bad", "--no-input", *case.args)
    assert_rejected(ws, result, case.code)
    for text in case.expected:
        assert text in result.err, f"{text!r} not in:\n{result.err}"
    if case.where is not None:
        assert re.search(rf"bad\.yaml:{case.where}: ", result.err), result.err
    if case.step is not None:
        assert f"step '{case.step}':" in result.err, result.err
    if case.code == 20:
        assert "nothing was executed" in result.err


def test_validate_reports_every_bad_file_of_the_library(ws: Workspace) -> None:
    """`runbook validate` over a library of bad files: each file's problem, located, exit 20."""
    files = {re.sub(r"\W+", "_", name): case for name, case in CASES.items() if not case.args}
    for slug, case in files.items():
        ws.write(f"runbooks/{slug}.yaml", case.text)
    result = ws.cli("validate")
    assert result.code == 20, result.text
    assert "Traceback" not in result.text
    assert f"{len(files)} files checked" in result.err
    for slug, case in files.items():
        lines = [line for line in result.err.splitlines() if f"/{slug}.yaml" in line]
        assert any(case.expected[0] in line for line in lines), (slug, lines)
    assert ws.evidence_dirs() == []


def test_a_call_cycle_is_rejected(ws: Workspace) -> None:
    """Two runbooks calling each other: exit 20 naming the cycle."""
    ws.runbook("ping", "runbook: ping\ntitle: P\nversion: 1\nsteps:\n  - id: c\n    call: pong\n")
    ws.runbook("pong", "runbook: pong\ntitle: Q\nversion: 1\nsteps:\n  - id: c\n    call: ping\n")
    result = ws.cli("run", "ping")
    assert result.code == 20, result.text
    assert "ping.yaml:6:11: step 'c': call cycle: ping -> pong -> ping" in result.err
    assert ws.evidence_dirs() == []


def test_a_ten_megabyte_file_is_rejected_by_size(ws: Workspace) -> None:
    """A 10 MB runbook file: exit 20 with a size message, not parsed, nothing run."""
    ws.write("runbooks/bad.yaml", HEAD + "# padding padding padding\n" * (10 * 1024 * 1024 // 26))
    result = ws.cli("run", "bad")
    assert_rejected(ws, result, 20)
    assert re.search(r"bad\.yaml:1:1: file is \d+ bytes \(expected at most \d+ bytes", result.err), result.err


def test_all_problems_of_a_file_are_reported_at_once(ws: Workspace) -> None:
    """Three different problems in one file: three located lines and a count."""
    ws.write("runbooks/bad.yaml", with_steps("""
        - id: x
          check: noop
          goto: nowhere
        - id: y
          check: nosuch
        - id: z
          check: noop
          with: {value: '{{ nope }}'}
    """))
    result = ws.cli("run", "bad")
    assert_rejected(ws, result, 20)
    assert "goto target 'nowhere'" in result.err
    assert "unknown check plugin 'nosuch'" in result.err
    assert "unknown name 'nope'" in result.err
    assert "3 problems; nothing was executed" in result.err


def test_all_structural_problems_are_reported_at_once(ws: Workspace) -> None:
    """Unknown key, two kinds and a duplicate id in one file: all three reported."""
    ws.write("runbooks/bad.yaml", with_steps("""
        - id: x
          check: noop
          chekc: 1
        - id: y
          check: noop
          action: noop
        - id: mark
          end: SUCCESS
    """))
    result = ws.cli("run", "bad")
    assert_rejected(ws, result, 20)
    assert "unknown key 'chekc'" in result.err
    assert "needs exactly one of" in result.err
    assert "duplicate step id 'mark'" in result.err


def test_schema_and_name_problems_are_reported_together(ws: Workspace) -> None:
    """An unknown key in one step and an undefined name in another: both reported."""
    ws.write("runbooks/bad.yaml", with_steps("""
        - id: x
          check: noop
          chekc: 1
        - id: z
          check: noop
          with: {value: '{{ nope }}'}
    """))
    result = ws.cli("run", "bad")
    assert result.code == 20
    assert "unknown key 'chekc'" in result.err
    assert "unknown name 'nope'" in result.err


def test_a_bad_duration_is_reported_once(ws: Workspace) -> None:
    """One bad duration is one problem."""
    ws.write("runbooks/bad.yaml", with_steps("- id: x\n  check: noop\n  timeout: 5 minutes\n"))
    result = ws.cli("run", "bad")
    assert result.code == 20
    assert "1 problem; nothing was executed" in result.err


@pytest.mark.parametrize("body", [
    pytest.param("[" * 3000 + "]" * 3000, id="deeply nested flow sequences"),
    pytest.param("&loop [*loop]", id="self-referencing alias"),
])
def test_pathological_yaml_is_data_invalid(ws: Workspace, body: str) -> None:
    """Small files that nest without end: exit 20 with a message, not an internal error."""
    ws.write("runbooks/bad.yaml", HEAD.replace("version: 1\n", f"version: 1\ndescription: {body}\n"))
    result = ws.cli("run", "bad")
    assert_rejected(ws, result, 20)


def test_a_template_reaching_python_internals_is_blocked_at_run_time(ws: Workspace) -> None:
    """An attribute name computed at run time cannot be judged statically; it fails its step in the sandbox.

    (A literal `_` attribute is refused by validation: tests/engine/test_templates_bounded.py.)
    The check fails unhandled -> BUSINESS_REJECT (exit 10); no traceback; the
    classes it tried to reach are printed nowhere.
    """
    ws.runbook("bad", """
        runbook: bad
        title: Sandbox
        version: 1
        steps:
          - id: peek
            check: noop
            with: {value: "{{ ''|attr('_' ~ '_class__') }}"}
          - id: mark
            action: file.write
            with: {path: marker.txt, content: x}
    """)
    result = ws.cli("run", "bad", "--no-input")
    assert result.code == 10, result.text
    assert "blocked by the sandbox" in result.err
    assert "step 'peek' failed" in result.err
    assert "Traceback" not in result.text
    assert "<class" not in result.text and "object" not in result.text.replace("'str' object", "")
    assert not (ws.root / "marker.txt").exists()
    bundle = ws.evidence_dirs()[0]
    everything = b"".join(p.read_bytes() for p in bundle.rglob("*") if p.is_file())
    assert b"<class" not in everything


@pytest.mark.parametrize("expr", ["'a' * 10**9", "[1] * 10**9", "2 ** 100000000"])
def test_oversized_expression_values_fail_cleanly(ws: Workspace, expr: str) -> None:
    """A value that would be huge fails its step quickly with a message, exit 10, no crash."""
    ws.runbook("big", f"""
        runbook: big
        title: Big
        version: 1
        steps:
          - id: blow
            check: noop
            with: {{value: "{{{{ {expr} }}}}"}}
    """)
    result = ws.cli("run", "big", "--no-input", timeout=20)
    assert result.code == 10, result.text
    assert "step 'blow' failed" in result.err
    assert "too large" in result.err or "exceed" in result.err
    assert "Traceback" not in result.text
