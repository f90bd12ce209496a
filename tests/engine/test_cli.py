"""The command line (SPEC 4): library commands, runs and status, help and usage errors."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.conftest import Workspace

ALPHA = """
runbook: alpha
title: Alpha check
version: 2
description: Checks alpha before the open.
source: ops-manual §1
tags: [daily, preflight]
params:
  n: {type: integer, default: 1}
steps:
  - id: look
    check: noop
    on_fail: bad
  - id: route
    decide:
      - if: params.n > 1
        goto: bad
      - else: done
  - id: done
    end: SUCCESS
  - id: bad
    end: BUSINESS_REJECT
"""

BETA = """
runbook: beta
title: Beta gate
version: 1
description: Waits for a human.
source: ops-manual §2
tags: [weekly]
steps:
  - id: gate
    approve: {prompt: "Proceed with beta?", approvers: [alice, bob]}
  - id: after
    check: noop
"""


@pytest.fixture
def library(ws: Workspace) -> Workspace:
    """A workspace with two runbooks, one in a sub-folder."""
    ws.runbook("alpha", ALPHA)
    ws.write("runbooks/ops/beta.yaml", BETA)
    return ws


def cli_json(ws: Workspace, *args: str) -> Any:
    """Run a command that prints JSON; its parsed output."""
    result = ws.cli(*args)
    assert result.code == 0, result.text
    return json.loads(result.out)


# -- library ---------------------------------------------------------------------


def test_list(library: Workspace) -> None:
    """`list`: one line per runbook with title and tags."""
    result = library.cli("list")
    assert result.code == 0
    lines = result.out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("alpha") and "Alpha check" in lines[0] and "[daily, preflight]" in lines[0]
    assert lines[1].startswith("beta") and "Beta gate" in lines[1]


def test_list_by_tag_as_json(library: Workspace) -> None:
    """`list --tag T --output json`: only the runbooks with that tag, as JSON."""
    rows = cli_json(library, "list", "--tag", "daily", "--output", "json")
    assert [r["name"] for r in rows] == ["alpha"]
    assert rows[0]["title"] == "Alpha check" and rows[0]["tags"] == ["daily", "preflight"]
    assert rows[0]["source"] == "ops-manual §1"
    assert cli_json(library, "list", "--tag", "none-such", "--output", "json") == []


def test_show(library: Workspace) -> None:
    """`show NAME`: version, title, source, params with defaults, steps with their routes."""
    result = library.cli("show", "alpha")
    assert result.code == 0, result.text
    text = result.out
    assert text.startswith("alpha v2: Alpha check")
    assert "source: ops-manual §1" in text
    assert "n: integer = 1" in text
    assert "on_fail bad" in text and "params.n > 1 -> bad" in text and "else -> done" in text


def test_show_of_an_unknown_runbook(library: Workspace) -> None:
    """`show` of a name not in the library: exit 20 naming it."""
    result = library.cli("show", "gamma")
    assert result.code == 20
    assert "no runbook named 'gamma'" in result.err


def test_validate_a_clean_library(library: Workspace) -> None:
    """`validate` with no arguments checks every file: exit 0, all valid."""
    result = library.cli("validate")
    assert result.code == 0, result.text
    assert "2 files checked, all valid" in result.out


def test_schema_is_a_valid_json_schema_that_accepts_the_library(library: Workspace) -> None:
    """`schema` prints a Draft 2020-12 JSON Schema; library files satisfy it; junk does not."""
    import yaml
    from jsonschema import Draft202012Validator

    schema = cli_json(library, "schema")
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    assert list(validator.iter_errors(yaml.safe_load(ALPHA))) == []
    assert list(validator.iter_errors({"runbook": "x", "steps": [{"id": "a", "bogus": 1}]}))


def test_graph_mermaid(library: Workspace) -> None:
    """`graph NAME`: a mermaid flowchart with every step and route."""
    result = library.cli("graph", "alpha")
    assert result.code == 0, result.text
    lines = result.out.splitlines()
    assert lines[0] == "flowchart TD"
    assert "  look --> route" in lines
    assert "  look -.->|on_fail| bad" in lines
    assert "  route -->|params.n > 1| bad" in lines
    assert "  route -->|else| done" in lines


def test_graph_dot(library: Workspace) -> None:
    """`graph NAME --format dot`: a digraph with every step and route."""
    result = library.cli("graph", "alpha", "--format", "dot")
    assert result.code == 0, result.text
    text = result.out
    assert text.startswith('digraph "alpha" {') and text.rstrip().endswith("}")
    assert '"route" [shape=diamond' in text
    assert '"look" -> "bad" [label="on_fail", style=dashed];' in text
    assert '"route" -> "done" [label="else"];' in text


# -- runs and status -----------------------------------------------------------------


def start(ws: Workspace, *args: str) -> dict[str, Any]:
    """`run ARGS --no-input --output json`: the result document."""
    result = ws.cli("run", *args, "--no-input", "--output", "json")
    doc: dict[str, Any] = json.loads(result.out)
    assert doc["exit_code"] == result.code
    return doc


def test_runs_lists_and_filters(library: Workspace) -> None:
    """`runs` lists every run; --runbook and --outcome filter; --output json gives records."""
    ok = start(library, "alpha")
    rejected = start(library, "alpha", "--param", "n=2")
    paused = start(library, "beta")
    assert (ok["outcome"], rejected["outcome"], paused["outcome"]) == ("SUCCESS", "BUSINESS_REJECT", "PAUSED")
    listing = library.cli("runs")
    assert listing.code == 0
    assert len(listing.out.splitlines()) == 3
    assert {ok["run_id"], rejected["run_id"], paused["run_id"]} <= set(listing.out.split())
    records = cli_json(library, "runs", "--output", "json")
    assert {r["run_id"] for r in records} == {ok["run_id"], rejected["run_id"], paused["run_id"]}
    by_runbook = cli_json(library, "runs", "--runbook", "alpha", "--output", "json")
    assert {r["run_id"] for r in by_runbook} == {ok["run_id"], rejected["run_id"]}
    by_outcome = cli_json(library, "runs", "--outcome", "BUSINESS_REJECT", "--output", "json")
    assert [r["run_id"] for r in by_outcome] == [rejected["run_id"]]
    [record] = cli_json(library, "runs", "--outcome", "PAUSED", "--output", "json")
    assert record["status"] == "paused" and record["operator"] == "tester"


def test_status_of_a_finished_and_a_paused_run(library: Workspace) -> None:
    """`status RUN`: outcome and evidence; for a paused run, what it waits for and how to go on."""
    ok = start(library, "alpha")
    status = library.cli("status", ok["run_id"])
    assert status.code == 0
    assert "status:    finished   outcome: SUCCESS" in status.out
    assert ok["evidence_dir"] in status.out
    paused = start(library, "beta")
    status = library.cli("status", paused["run_id"])
    assert "status:    paused" in status.out
    assert "approval of step 'gate': Proceed with beta? (approvers: alice, bob)" in status.out
    assert f"runbook approve {paused['run_id']} gate --by NAME" in status.out
    doc = cli_json(library, "status", paused["run_id"], "--output", "json")
    assert doc["waiting_for"]["step"] == "gate" and doc["waiting_for"]["approvers"] == ["alice", "bob"]


def test_status_of_an_unknown_run(library: Workspace) -> None:
    """`status` of a run id that does not exist: a message, non-zero, no traceback."""
    result = library.cli("status", "no-such-run")
    assert result.code == 2
    assert "no run 'no-such-run'" in result.err and "Traceback" not in result.text


# -- help and usage errors -------------------------------------------------------------


def test_help_lists_every_command(ws: Workspace) -> None:
    """`runbook --help`: exit 0, every command and the exit codes."""
    result = ws.cli("--help")
    assert result.code == 0
    for command in ("list", "show", "validate", "schema", "graph", "run", "resume", "approve", "runs",
                    "status", "evidence"):
        assert f"    {command} " in result.out, command
    assert "20 DATA_INVALID" in result.out


@pytest.mark.parametrize("args", [
    ["bogus"],
    ["run"],
    ["run", "alpha", "--output", "yaml"],
    ["graph", "alpha", "--format", "png"],
    ["approve", "RUN", "STEP"],
    ["run", "alpha", "--force-lock-break"],
])
def test_usage_errors_exit_2(library: Workspace, args: list[str]) -> None:
    """Command-line usage errors: exit 2 with a usage message, no traceback, no run."""
    result = library.cli(*args)
    assert result.code == 2, result.text
    assert "error" in result.err or "runbook:" in result.err
    assert "Traceback" not in result.text
    assert library.evidence_dirs() == []


def test_run_of_an_unknown_runbook(library: Workspace) -> None:
    """`run` of a name not in the library: exit 20, the name and where it looked, nothing run."""
    result = library.cli("run", "gamma")
    assert result.code == 20
    assert "no runbook named 'gamma'" in result.err
    assert "runbooks" in result.err and "nothing was executed" in result.err
    assert library.evidence_dirs() == []


def test_run_by_path(library: Workspace) -> None:
    """`run PATH` runs a file given by path."""
    result = library.cli("run", "runbooks/alpha.yaml", "--no-input")
    assert result.code == 0, result.text


@pytest.mark.parametrize(("config", "expected"), [
    ("runbook_paths: 5\n", "runbook_paths: expected a path or a list of paths"),
    ("core: {adapter: ftp}\n", "core.adapter: expected sim or http"),
    ("evidence_dir: [a, b]\n", "evidence_dir: expected a string"),
    ("evidnce_dir: x\n", "unknown setting 'evidnce_dir'"),
])
def test_bad_config_is_a_located_error(ws: Workspace, config: str, expected: str) -> None:
    """A wrong runbook.yaml is DATA_INVALID with its location, never an internal error."""
    ws.write("runbook.yaml", config)
    result = ws.cli("list")
    assert result.code == 20, result.text
    assert "runbook.yaml:1:" in result.err and expected in result.err
    assert "internal error" not in result.text
