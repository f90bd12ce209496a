"""Running commands: capture output byte-exact, kill the whole process group on timeout.

The `shell` check and the `shell` action share the params schema and runner below.
"""

from __future__ import annotations

import functools
import json
import os
import select
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from engine.errors import PluginError
from engine.plugins import StepContext, uninterrupted
from transports.util import effective_timeout

_GRACE_S = 2.0  # how long to drain pipes after killing the group on timeout
_Selector = getattr(selectors, "PollSelector", selectors.SelectSelector)  # no epoll fd per call

SHELL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "argv": {
            "type": "array",
            "minItems": 1,
            "items": {"type": ["string", "number"]},
            "description": "The command and its arguments; run directly, no shell.",
        },
        "command": {
            "type": "string",
            "minLength": 1,
            "description": "A shell command line for /bin/sh -c; only with `shell: true`.",
        },
        "shell": {
            "type": "boolean",
            "description": "Run `command` through /bin/sh. Default false.",
        },
        "cwd": {
            "type": "string",
            "description": "Working directory (relative to the run's workdir).",
        },
        "env": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number"]},
            "description": "Extra environment variables, added to the engine's environment.",
        },
        "stdin": {
            "type": "string",
            "description": "Text written to the command's stdin (default: none).",
        },
        "timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "Seconds before the process group is killed; the step timeout also applies.",
        },
        "parse_json": {
            "type": "boolean",
            "description": "Parse stdout as JSON into `json`. Default false.",
        },
        "ok_exit_codes": {
            "type": "array",
            "items": {"type": "integer"},
            "minItems": 1,
            "description": "Exit codes that count as ok. Default [0].",
        },
    },
    "oneOf": [{"required": ["argv"]}, {"required": ["command"]}],
    "allOf": [  # draft-7 keywords only, so that a compiled check proves valid steps without jsonschema
        {"if": {"required": ["command"]}, "then": {"required": ["shell"], "properties": {"shell": {"const": True}}}},
        {"if": {"required": ["shell"], "properties": {"shell": {"const": True}}}, "then": {"required": ["command"]}},
    ],
    "description": "Run a command (argv, or `command` with `shell: true`) and capture its output.",
}


def command_argv(params: Mapping[str, Any]) -> list[str]:
    """The argv a shell step will execute (`/bin/sh -c COMMAND` when `shell: true`)."""
    if params.get("shell"):
        return ["/bin/sh", "-c", str(params["command"])]
    return [str(a) for a in params["argv"]]


def step_env(params: Mapping[str, Any], ctx: StepContext) -> dict[str, str]:
    """Env vars added for the child: RUNBOOK_RUN_ID, RUNBOOK_STEP_ID, RUNBOOK_IDEMPOTENCY_TOKEN, `env`."""
    env = {
        "RUNBOOK_RUN_ID": ctx.run_id,
        "RUNBOOK_STEP_ID": ctx.step_id,
        "RUNBOOK_IDEMPOTENCY_TOKEN": ctx.idempotency_token,
    }
    env.update({k: str(v) for k, v in params.get("env", {}).items()})
    return env


def hidden_env(ctx: StepContext) -> tuple[str, ...]:
    """Variables a step's process must not inherit: the trading core's credentials (core.*_env)."""
    core = ctx.settings.get("core") or {}
    names = (core.get("username_env"), core.get("password_env")) if isinstance(core, Mapping) else ()
    return tuple(str(n) for n in names if n)


def run_params(params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Run the command a shell step describes; returns the result (see `run_command`)."""
    result = run_command(
        command_argv(params),
        cwd=str(ctx.resolve(params.get("cwd", "."))),
        env=step_env(params, ctx),
        unset=hidden_env(ctx),
        stdin=params.get("stdin"),
        timeout=effective_timeout(params, ctx, None),
    )
    result["ok"] = result["exit_code"] in params.get("ok_exit_codes", [0])
    if params.get("parse_json"):
        try:
            result["json"] = json.loads(result["stdout"])
        except json.JSONDecodeError as e:
            raise PluginError(
                f"stdout of {result['argv'][0]} is not JSON (exit code {result['exit_code']}): "
                f"{e.msg} at line {e.lineno} col {e.colno}",
                result=result,
            ) from None
    return result


@functools.cache
def _base_env() -> dict[bytes, bytes]:
    """The engine's environment as bytes, built once per process (it does not change during a run)."""
    return dict(os.environb)


@functools.cache
def _devnull() -> int:
    """/dev/null opened once per process (close-on-exec): the stdin of a command given none."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def run_command(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float | None = None,
    unset: Sequence[str] = (),
) -> dict[str, Any]:
    """Run `argv` in its own session; return argv, exit_code, stdout, stderr, duration_s.

    Output is decoded as UTF-8 (undecodable bytes replaced), otherwise byte-exact.
    `env` is added to the current environment, the variables named in `unset` are
    removed from it. On timeout the whole process group is killed and PluginError
    carries the partial result.
    """
    argv = list(argv)
    if cwd is not None and not os.path.isdir(cwd):
        raise PluginError(f"working directory not found: {cwd}")
    full_env: dict[bytes, bytes] | None = None
    if env or unset:
        full_env = {**_base_env(), **{os.fsencode(k): os.fsencode(v) for k, v in (env or {}).items()}}
        for name in unset:
            full_env.pop(os.fsencode(name), None)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    out: list[bytes] = []
    err: list[bytes] = []
    sinks = {out_r: out, err_r: err}
    proc: subprocess.Popen[bytes] | None = None
    try:
        # A stop signal (the run interrupted) must not land between the child's start and `proc` being set,
        # where nothing would kill its process group: it waits for the end of this block, then cuts the run.
        with uninterrupted():
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=full_env,
                    stdin=subprocess.PIPE if stdin is not None else _devnull(),
                    stdout=out_w,
                    stderr=err_w,
                    start_new_session=True,
                    # The child keeps what the engine made inheritable on purpose: the run's driver lock
                    # (engine/driver.py), so no resume can take the run while a step it started still acts.
                    close_fds=False,
                )
            finally:
                os.close(out_w)
                os.close(err_w)
        finished = _pump(proc, stdin.encode() if stdin is not None else None, sinks, deadline)
        if finished:
            finished = _wait_exit(proc, deadline)
        if not finished:
            _kill_group(proc)
            _pump(proc, None, sinks, time.monotonic() + _GRACE_S)
    except BaseException as e:
        if proc is not None:
            _kill_group(proc)
            raise
        if isinstance(e, FileNotFoundError):
            raise PluginError(f"command not found: {argv[0]}") from None
        if isinstance(e, PermissionError):
            raise PluginError(f"command not executable: {argv[0]}") from None
        if isinstance(e, OSError):
            raise PluginError(f"cannot start {argv[0]}: {e.strerror or e}") from None
        raise
    finally:
        for fd in sinks:
            os.close(fd)
    assert proc is not None
    result = {
        "argv": argv,
        "exit_code": proc.returncode,
        "stdout": b"".join(out).decode("utf-8", errors="replace"),
        "stderr": b"".join(err).decode("utf-8", errors="replace"),
        "duration_s": round(time.monotonic() - start, 6),
    }
    if not finished:
        result["timed_out"] = True
        raise PluginError(f"timed out after {timeout:g}s: {argv[0]}", result=result)
    return result


def _pump(proc: subprocess.Popen[bytes], data: bytes | None, sinks: dict[int, list[bytes]], deadline: float | None) -> bool:
    """Feed stdin and read the output pipes (`sinks`: fd -> chunks) until both close (True) or the deadline passes
    (False); a pipe that closed is closed and left out of `sinks`."""
    with _Selector() as sel:
        for fd in sinks:
            sel.register(fd, selectors.EVENT_READ)
        view = memoryview(data or b"")
        if proc.stdin is not None and not proc.stdin.closed:
            if view:
                sel.register(proc.stdin, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        while sel.get_map():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            for key, _ in sel.select(remaining):
                fileobj: Any = key.fileobj
                if key.events & selectors.EVENT_WRITE:
                    try:
                        view = view[os.write(key.fd, view[: select.PIPE_BUF]) :]
                    except BrokenPipeError:
                        view = view[len(view) :]
                    if not view:
                        sel.unregister(fileobj)
                        fileobj.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    sinks[key.fd].append(chunk)
                else:
                    sel.unregister(key.fd)
                    os.close(key.fd)
                    del sinks[key.fd]
    return True


def _wait_exit(proc: subprocess.Popen[bytes], deadline: float | None) -> bool:
    """Wait for the child to exit by the deadline, without Popen.wait's polling sleeps."""
    if proc.poll() is not None or deadline is None:
        proc.wait()
        return True
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        os.close(pidfd)
    if not ready:
        return False
    proc.wait()
    return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole process group (its session) and reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=_GRACE_S)
    except subprocess.TimeoutExpired:
        pass

