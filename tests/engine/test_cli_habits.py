"""What the operator reads and types (issue 13, items 4-9): next commands, failure wording, nested
sub-runbooks, everyday CLI habits, the editor schema and the reference docs."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import RUNBOOK, Workspace
from tests.engine.test_operator_mode import STEPS, drive

CHILD = """
runbook: child
title: Child
version: 1
params:
  t: {type: string, default: 300ms}
steps:
  - id: a1
    action: file.write
    with: {path: a1.txt, content: hi}
    rollback: undo_a1
  - id: flag
    wait:
      check: file.exists
      with: {path: flag}
      until: result.exists
      every: 50ms
      timeout: "{{ params.t }}"
  - id: done
    end: SUCCESS
  - id: undo_a1
    action: file.write
    with: {path: a1.txt, content: undone}
"""

PARENT = """
runbook: parent
title: Parent
version: 1
steps:
  - id: sub
    call: child
  - id: after
    check: noop
"""

GATED = """
runbook: gated
title: Gated
version: 1
steps:
  - id: gate
    approve: {prompt: "Go?"}
  - id: trade
    action: file.write
    with: {path: traded.txt, content: x}
"""


def run_id_of(text: str) -> str:
    found = re.search(r"run (\d{8}T\d{6}Z-[a-z0-9-]+-[0-9a-f]{6})", text)
    assert found, text
    return found.group(1)


# -- 6: paused results name the next command ------------------------------------------


def test_paused_run_names_the_commands_that_continue_it(ws: Workspace) -> None:
    ws.runbook("gated", GATED)
    result = ws.cli("run", "gated", "--no-input")
    assert result.code == 12, result.text
    run_id = run_id_of(result.err)
    assert f"next: runbook approve {run_id} gate --by NAME" in result.err
    assert f"runbook resume {run_id}" in result.err
    assert f"runbook cancel {run_id} --by NAME --reason TEXT" in result.err
    assert "\x1b[" not in result.err  # not a terminal: no escape codes


def test_ctrl_d_at_an_approval_prints_approve_and_resume(ws: Workspace) -> None:
    ws.runbook("guided", STEPS)
    code, screen = drive(ws, ["run", "guided"], [("approve / deny / pause?", "\x04")])
    assert code == 12, screen
    run_id = run_id_of(screen)
    assert f"runbook approve {run_id} gate --by NAME" in screen
    assert f"runbook resume {run_id}" in screen


def test_an_interrupted_run_names_resume(ws: Workspace) -> None:
    """SIGTERM (or Ctrl-C) while a step runs: the run pauses and says how to continue it."""
    ws.runbook("child", CHILD)
    proc = ws.popen("run", "child", "--no-input", "--param", "t=30s")
    try:
        deadline = time.monotonic() + 15
        while not any('"step":"flag"' in p.read_text() for p in (ws.root / "evidence").glob("*/events.jsonl")):
            assert time.monotonic() < deadline and proc.poll() is None, "the wait step never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 12, err
    run_id = run_id_of(err)
    assert f"next: runbook resume {run_id}" in err
    status = ws.cli("status", run_id)
    assert "interrupted by SIGTERM" in status.out and "{" not in status.out, status.out


# -- 4: failure wording ------------------------------------------------------------------


def test_a_failed_wait_says_what_why_which_rollbacks_and_what_next(ws: Workspace) -> None:
    ws.runbook("child", CHILD)
    result = ws.cli("run", "child", "--no-input")
    assert result.code == 50, result.text  # the SPEC's outcome and exit code stay
    err = result.err
    assert "INTERNAL_ERROR (exit 50)" in err
    assert "internal error (a bug)" not in err.lower()
    assert "timed out" in err and "still false after" in err and "polls" in err
    assert "rollbacks: undo_a1 (undoes a1) ok" in err
    assert "state: every rollback ran ok" in err
    run_id = run_id_of(err)
    assert f"next: runbook evidence report {run_id}" in err
    assert err.count("still false after") == 1, err


def test_a_failed_rollback_says_the_system_may_be_partly_changed(ws: Workspace) -> None:
    ws.runbook("child", CHILD.replace("with: {path: a1.txt, content: undone}",
                                      "with: {path: a1.txt/nope, content: undone}"))
    result = ws.cli("run", "child", "--no-input")
    assert result.code == 50, result.text
    assert "rollbacks: undo_a1 (undoes a1) FAIL" in result.err
    assert "state: rollback undo_a1 failed: the system may be partly changed" in result.err


# -- 5: sub-runbooks nested ---------------------------------------------------------------


def test_a_sub_runbook_is_indented_under_its_call_and_its_failure_told_once(ws: Workspace) -> None:
    ws.runbook("child", CHILD)
    ws.runbook("parent", PARENT)
    result = ws.cli("run", "parent", "--no-input")
    assert result.code == 50, result.text
    lines = result.err.splitlines()
    assert "[ run] sub (call)" in lines
    assert "  [ run] a1 (action)" in lines
    assert any(line.startswith("  [FAIL] flag (wait)") for line in lines)
    assert any(line.startswith("  child: INTERNAL_ERROR (exit 50) run ") for line in lines)
    assert any(line.startswith("[FAIL] sub (call)") for line in lines)
    assert any(line.startswith("parent: INTERNAL_ERROR (exit 50) run ") for line in lines)
    assert result.err.count("still false after") == 1, result.err
    assert result.err.count("recap:") == 1  # only the parent's full summary


def test_json_output_is_unchanged_by_the_wording(ws: Workspace) -> None:
    ws.runbook("child", CHILD)
    ws.runbook("parent", PARENT)
    result = ws.cli("run", "parent", "--no-input", "--output", "json")
    assert result.code == 50
    doc = json.loads(result.out)
    assert doc["outcome"] == "INTERNAL_ERROR" and "still false after" in doc["message"]
    assert result.err == ""


# -- 7: everyday CLI habits -----------------------------------------------------------------


def test_version(ws: Workspace) -> None:
    from engine import __version__

    result = ws.cli("--version")
    assert result.code == 0 and result.out.strip() == f"runbook {__version__}"


def test_config_is_found_walking_up_and_named_with_verbose(ws: Workspace) -> None:
    ws.write("top/runbook.yaml", "runbook_paths: [books]\n")
    ws.write("top/books/gated.yaml", GATED)
    deeper = ws.root / "top" / "a" / "b"
    deeper.mkdir(parents=True)
    proc = subprocess.run([RUNBOOK, "-v", "list"], cwd=deeper, capture_output=True, text=True, env=ws.env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gated")
    assert f"config {ws.root / 'top' / 'runbook.yaml'} (found in a parent directory)" in proc.stderr
    # the evidence of a run started below goes where that runbook.yaml says (relative to it)
    run = subprocess.run([RUNBOOK, "run", "gated", "--no-input"], cwd=deeper, capture_output=True, text=True,
                         env=ws.env())
    assert run.returncode == 12, run.stderr
    assert (ws.root / "top" / "evidence").is_dir() and not (deeper / "evidence").exists()


def test_the_runbook_yaml_of_the_working_directory_wins(ws: Workspace) -> None:
    ws.write("runbook.yaml", "runbook_paths: [runbooks]\n")
    ws.write("inner/runbook.yaml", "runbook_paths: [mine]\n")
    ws.write("inner/mine/gated.yaml", GATED)
    proc = subprocess.run([RUNBOOK, "-v", "list"], cwd=ws.root / "inner", capture_output=True, text=True,
                          env=ws.env())
    assert proc.stdout.startswith("gated") and "found in a parent" not in proc.stderr
    explicit = ws.cli("--config", "inner/runbook.yaml", "list")
    assert explicit.out.startswith("gated")
    via_env = ws.cli("list", env={"RUNBOOK_CONFIG": str(ws.root / "inner" / "runbook.yaml")})
    assert via_env.out.startswith("gated")


def test_list_outside_a_workspace_says_where_it_looked(tmp_path: Path) -> None:
    empty = Workspace(tmp_path)
    (tmp_path / "runbooks").rmdir()
    proc = subprocess.run([RUNBOOK, "list"], cwd=tmp_path, capture_output=True, text=True, env=empty.env())
    assert proc.returncode == 0 and proc.stdout == ""
    assert "no runbooks under" in proc.stderr and "no runbook.yaml here or in a parent directory" in proc.stderr


def test_an_unknown_name_suggests_the_closest(ws: Workspace) -> None:
    ws.runbook("gated", GATED)
    ws.runbook("child", CHILD)
    for command in (("run", "gatd", "--no-input"), ("show", "chlid"), ("graph", "gate")):
        result = ws.cli(*command)
        assert result.code == 20, result.text
        assert "did you mean" in result.err, result.err
    assert "'gated'" in ws.cli("run", "gatd").err and "'child'" in ws.cli("show", "chlid").err


def test_show_graph_and_evidence_verify_as_json(ws: Workspace) -> None:
    ws.runbook("child", CHILD)
    shown = json.loads(ws.cli("show", "child", "--output", "json").out)
    assert shown["name"] == "child" and [s["id"] for s in shown["document"]["steps"]][:2] == ["a1", "flag"]
    graph = json.loads(ws.cli("graph", "child", "--output", "json").out)
    assert {"from": "a1", "to": "undo_a1", "label": "rollback"} in graph["edges"]
    assert {n["id"]: n["kind"] for n in graph["nodes"]}["flag"] == "wait"
    run_id = run_id_of(ws.cli("run", "child", "--no-input").err)
    verified = ws.cli("evidence", "verify", run_id, "--output", "json")
    assert verified.code == 0 and json.loads(verified.out)["ok"] is True
    bundle = ws.evidence_dirs()[-1]
    (bundle / "events.jsonl").write_text((bundle / "events.jsonl").read_text().replace("a1.txt", "b1.txt"))
    broken = ws.cli("evidence", "verify", run_id, "--output", "json")
    assert broken.code == 30
    doc = json.loads(broken.out)
    assert doc["ok"] is False and doc["exit_code"] == 30 and doc["error"]


def test_runs_is_a_table_with_headers_on_a_terminal(ws: Workspace) -> None:
    ws.runbook("gated", GATED)
    run_id = run_id_of(ws.cli("run", "gated", "--no-input").err)
    code, screen = drive(ws, ["runs"], [], env={"NO_COLOR": "1"})
    assert code == 0, screen
    lines = [line for line in screen.splitlines() if line.strip()]
    assert lines[0].split()[:3] == ["RUN", "ID", "RUNBOOK"] and run_id in lines[1] and "paused" in lines[1]
    piped = ws.cli("runs")  # for scripts: one line per run, no header
    assert piped.out.splitlines()[0].startswith(run_id)


# -- 8: the editor schema --------------------------------------------------------------------

GOOD_STEP = "  - id: write\n    action: file.write\n    with: {path: out.txt, content: \"{{ params.x }}\"}\n"
BAD_STEPS = {
    "two kinds": "  - id: both\n    check: noop\n    action: file.write\n    with: {path: x}\n",
    "no kind": "  - id: none\n    title: does nothing\n",
    "unknown plugin": "  - id: typo\n    action: file.wirte\n    with: {path: x}\n",
    "unknown with key": "  - id: extra\n    action: file.write\n    with: {path: x, contnet: hi}\n",
    "missing with key": "  - id: nopath\n    action: file.write\n    with: {content: hi}\n",
    "wrong with type": "  - id: typed\n    check: file.exists\n    with: {path: 7}\n",
    "wait on unknown check": "  - id: w\n    wait: {check: file.exist, until: result.exists}\n",
}


def test_the_schema_catches_most_mistakes_while_typing(ws: Workspace) -> None:
    import jsonschema
    import yaml

    schema = json.loads(ws.cli("schema").out)
    validator = jsonschema.Draft202012Validator(schema)
    head = "runbook: demo\ntitle: Demo\nversion: 1\nsteps:\n"
    good = yaml.safe_load(head + GOOD_STEP)
    assert list(validator.iter_errors(good)) == []  # a templated value is accepted where a string is expected
    caught = {name: bool(list(validator.iter_errors(yaml.safe_load(head + GOOD_STEP + bad))))
              for name, bad in BAD_STEPS.items()}
    assert sum(caught.values()) == len(BAD_STEPS), caught
    step = schema["properties"]["steps"]["items"]
    assert "file.write" in step["properties"]["action"]["enum"] and "noop" in step["properties"]["check"]["enum"]


def test_every_library_runbook_is_valid_under_the_editor_schema() -> None:
    import jsonschema
    import yaml

    from engine.plugins import load_registry
    from engine.schema import runbook_schema

    validator = jsonschema.Draft202012Validator(runbook_schema(load_registry([])))
    repo = Path(__file__).resolve().parents[2]
    bad = {}
    for path in sorted((repo / "runbooks").rglob("*.yaml")):
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        if errors:
            bad[path.name] = errors[:2]
    assert not bad, bad


# -- 9: docs that travel with the repository --------------------------------------------------


def test_the_readme_links_the_reference_and_nothing_outside_the_repository() -> None:
    repo = Path(__file__).resolve().parents[2]
    readme = (repo / "README.md").read_text()
    assert "(docs/reference.md)" in "\n".join(readme.splitlines()[:20])
    assert "../" not in re.sub(r"https?://\S+", "", " ".join(re.findall(r"\]\(([^)]*)\)", readme)))
    reference = (repo / "docs" / "reference.md").read_text()
    for section in ("Runbook files", "Step kinds", "Outcomes and exit codes", "Command line", "Evidence bundles"):
        assert f"## {section}" in reference
    for target in re.findall(r"\]\(([^)#]+)\)", reference):
        assert not target.startswith(("http", "../")) and (repo / "docs" / target).exists(), target
    for code in ("| 0 | SUCCESS", "| 12 | PAUSED", "| 50 | INTERNAL_ERROR", "| 60 | ANOMALY_HALT"):
        assert code in reference


def test_a_rejected_run_says_which_changes_stay_in_place(ws: Workspace) -> None:
    ws.runbook("rej", """
        runbook: rej
        title: Rejected
        version: 1
        steps:
          - id: w
            action: file.write
            with: {path: w.txt, content: x}
          - id: boom
            check: file.exists
            with: {path: nope}
            expect: result.exists
    """)
    result = ws.cli("run", "rej", "--no-input")
    assert result.code == 10, result.text
    assert "why: a gate said no" in result.err
    assert "state: no rollback ran; the changes of w stay in place" in result.err


def test_bash_completion_knows_commands_options_and_runbook_names(ws: Workspace) -> None:
    import shutil

    ws.runbook("gated", GATED)
    script = ws.cli("completion", "bash")
    assert script.code == 0 and "complete -F _runbook runbook" in script.out
    if not shutil.which("bash"):
        return
    (ws.root / "completion.sh").write_text(script.out)
    probe = ('source ./completion.sh; for line in "runbook ru" "runbook run ga" "runbook run --dr" '
             '"runbook evidence ve"; do COMP_WORDS=($line); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); '
             '_runbook; echo "${COMPREPLY[*]}"; done')
    proc = subprocess.run(["bash", "-c", probe], cwd=ws.root, capture_output=True, text=True, env=ws.env())
    assert proc.stdout.splitlines() == ["run runs", "gated", "--dry-run", "verify"], proc.stdout + proc.stderr


def test_a_paused_sub_runbook_names_its_approval_and_the_parent_to_resume(ws: Workspace) -> None:
    ws.runbook("gated", GATED)
    ws.runbook("pg", PARENT.replace("runbook: parent", "runbook: pg").replace("call: child", "call: gated"))
    result = ws.cli("run", "pg", "--no-input")
    assert result.code == 12, result.text
    found = re.search(r"next: runbook approve (\S+) gate --by NAME \[--deny\]\s+\(the sub-runbook's approval; "
                      r"then: runbook resume (\S+)\)", result.err)
    assert found, result.err
    child, parent = found.groups()
    assert "-gated-" in child and "-pg-" in parent
    approved = ws.cli("approve", child, "gate", "--by", "bob")
    assert approved.code == 0 and f"continue with: runbook resume {parent}" in approved.out, approved.text
    resumed = ws.cli("resume", parent, "--no-input")
    assert resumed.code == 0, resumed.text
    assert (ws.root / "traded.txt").exists()
