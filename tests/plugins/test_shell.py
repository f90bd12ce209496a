"""The shell check and action: real subprocesses, byte-exact output, group kill on timeout."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from actions.shell import ShellAction
from checks.shell import ShellCheck
from engine.errors import PluginError
from engine.plugins import StepContext
from transports.process import _base_env

check = ShellCheck()
action = ShellAction()


def _gone(pid: int) -> bool:
    """True when pid no longer runs (absent, or a zombie waiting for its reaper)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_runs_argv_and_reports_exit_code(ctx: StepContext) -> None:
    result = check.run({"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]}, ctx)
    assert result["argv"] == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    assert (result["exit_code"], result["stdout"], result["stderr"]) == (3, "out\n", "err\n")
    assert result["ok"] is False
    assert result["duration_s"] >= 0
    json.dumps(result)


def test_ok_exit_codes(ctx: StepContext) -> None:
    assert check.run({"argv": ["sh", "-c", "exit 3"], "ok_exit_codes": [0, 3]}, ctx)["ok"] is True
    assert check.run({"argv": ["true"]}, ctx)["ok"] is True


def test_output_is_byte_exact(ctx: StepContext) -> None:
    result = check.run({"argv": ["printf", "a\\r\\nb\\303\\251\\377\\n"]}, ctx)
    assert result["stdout"] == "a\r\nb\u00e9\ufffd\n"


def test_stdin_env_cwd_and_runbook_variables(ctx: StepContext, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    script = 'cat; echo "|$PWD|$EXTRA|$RUNBOOK_RUN_ID|$RUNBOOK_STEP_ID|$RUNBOOK_IDEMPOTENCY_TOKEN"'
    result = check.run(
        {"command": script, "shell": True, "stdin": "in\n", "env": {"EXTRA": 42}, "cwd": "sub"}, ctx
    )
    assert result["stdout"] == f"in\n|{tmp_path / 'sub'}|42|run-1|step_a|run-1:step_a:1\n"


def test_parse_json(ctx: StepContext) -> None:
    result = check.run({"argv": ["echo", '{"a": [1, 2]}'], "parse_json": True}, ctx)
    assert result["json"] == {"a": [1, 2]}


def test_parse_json_failure_carries_the_result(ctx: StepContext) -> None:
    with pytest.raises(PluginError, match="not JSON") as info:
        check.run({"argv": ["echo", "STATUS=PASS"], "parse_json": True}, ctx)
    assert info.value.result is not None
    assert info.value.result["stdout"] == "STATUS=PASS\n"


def test_command_not_found(ctx: StepContext) -> None:
    with pytest.raises(PluginError, match="^command not found: no-such-cmd-xyz$"):
        check.run({"argv": ["no-such-cmd-xyz", "x"]}, ctx)


def test_missing_cwd(ctx: StepContext) -> None:
    with pytest.raises(PluginError, match="working directory not found"):
        check.run({"argv": ["true"], "cwd": "nope"}, ctx)


def test_timeout_kills_the_whole_process_group(ctx: StepContext, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    command = f"sleep 30 & echo $! > {pidfile}; echo started; sleep 30"
    start = time.monotonic()
    with pytest.raises(PluginError, match="timed out after 0.5s") as info:
        check.run({"command": command, "shell": True, "timeout": 0.5}, ctx)
    assert time.monotonic() - start < 5
    assert info.value.result is not None
    assert info.value.result["stdout"] == "started\n"
    assert info.value.result["timed_out"] is True
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(grandchild)


def test_step_timeout_applies_when_smaller(ctx: StepContext) -> None:
    short = dataclasses.replace(ctx, timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(PluginError, match="timed out after 0.3s"):
        check.run({"argv": ["sleep", "10"], "timeout": 10}, short)
    assert time.monotonic() - start < 3


def test_large_stdin_and_output_do_not_deadlock(ctx: StepContext) -> None:
    data = "x" * 1_000_000
    result = check.run({"argv": ["cat"], "stdin": data, "timeout": 10}, ctx)
    assert len(result["stdout"]) == 1_000_000


@pytest.mark.parametrize(
    ("params", "ok"),
    [
        ({"argv": ["true"]}, True),
        ({"command": "true", "shell": True}, True),
        ({"command": "true"}, False),  # a command line needs shell: true
        ({"command": "true", "shell": False}, False),
        ({"argv": ["true"], "shell": True}, False),  # shell: true needs command
        ({"argv": ["true"], "command": "true", "shell": True}, False),
        ({"argv": []}, False),
        ({}, False),
        ({"argv": ["true"], "bogus": 1}, False),
        ({"argv": ["true"], "timeout": 0}, False),
    ],
)
def test_schema(valid: Callable, params: dict, ok: bool) -> None:
    assert valid(check, params) is ok
    assert valid(action, params) is ok


def test_action_runs_and_plans(ctx: StepContext) -> None:
    params = {"argv": ["echo", "hi"], "env": {"TOKEN": "s3cret"}, "cwd": "."}
    plan = action.plan(params, ctx)
    assert plan.details["argv"] == ["echo", "hi"]
    assert plan.details["env"] == ["TOKEN"]
    assert "s3cret" not in json.dumps(plan.details) + plan.summary
    assert plan.summary == "run echo hi"
    assert action.run(params, ctx)["stdout"] == "hi\n"
    assert action.plan({"command": "a | b", "shell": True}, ctx).details["argv"] == [
        "/bin/sh",
        "-c",
        "a | b",
    ]


@pytest.mark.parametrize(
    ("verify_argv", "answer"),
    [
        (None, None),
        (["true"], True),
        (["false"], False),
        (["sh", "-c", "exit 2"], None),
        (["no-such-cmd-xyz"], None),
    ],
)
def test_action_verify(
    valid: Callable, ctx: StepContext, verify_argv: list[str] | None, answer: bool | None
) -> None:
    params: dict = {"argv": ["true"]}
    if verify_argv:
        params["verify_argv"] = verify_argv
    assert action.verify(params, ctx) is answer
    assert valid(action, params)
    assert valid(check, params) is (verify_argv is None)


def test_the_trading_core_credentials_are_not_inherited(ctx: StepContext, monkeypatch: pytest.MonkeyPatch,
                                                       request: pytest.FixtureRequest) -> None:
    """core.username_env / core.password_env name the core's credentials: no step process sees them."""
    monkeypatch.setenv("FT_TEST_USER", "ops")
    monkeypatch.setenv("FT_TEST_PASS", "canary-not-for-steps")
    monkeypatch.setenv("OTHER_VAR", "visible")
    _base_env.cache_clear()  # the runner snapshots the engine's environment once per process
    request.addfinalizer(_base_env.cache_clear)
    settings = {"core": {"adapter": "freqtrade", "url": "http://127.0.0.1:1", "username_env": "FT_TEST_USER",
                         "password_env": "FT_TEST_PASS"}}
    core_ctx = dataclasses.replace(ctx, settings=settings)
    params = {"argv": ["env"], "verify_argv": ["sh", "-c", 'test -z "$FT_TEST_PASS" && test -n "$OTHER_VAR"']}
    out = ShellCheck().run({"argv": ["env"]}, core_ctx)["stdout"]
    assert "canary-not-for-steps" not in out and "FT_TEST_USER" not in out and "OTHER_VAR=visible" in out
    assert ShellAction().verify(params, core_ctx) is True
