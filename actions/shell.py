"""`shell` action: the shared command runner, with a plan and an optional verify command."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any, ClassVar

from engine.errors import PluginError
from engine.plugins import Plan, StepContext
from transports.process import (
    SHELL_SCHEMA,
    command_argv,
    hidden_env,
    run_command,
    run_params,
    step_env,
)


class ShellAction:
    """Run a command that changes something. Same params and result as the `shell` check."""

    name: ClassVar[str] = "shell"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[dict[str, Any]] = {
        **SHELL_SCHEMA,
        "properties": {
            **SHELL_SCHEMA["properties"],
            "verify_argv": {
                "type": "array",
                "minItems": 1,
                "items": {"type": ["string", "number"]},
                "description": "After a crash: a command that exits 0 if the effect is present, "
                "1 if absent; any other exit means cannot tell.",
            },
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: argv, exit_code, stdout, stderr, ok, duration_s (+ json)."""
        return run_params(params, ctx)

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """The argv, working directory and names (not values) of extra env vars."""
        argv = command_argv(params)
        details: dict[str, Any] = {
            "argv": argv,
            "cwd": str(ctx.resolve(params.get("cwd", "."))),
            "env": sorted(params.get("env", {})),
        }
        for key in ("stdin", "timeout", "ok_exit_codes"):
            if key in params:
                details[key] = params[key]
        return Plan(summary=f"run {shlex.join(argv)}", details=details)

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """Run `verify_argv`: exit 0 = present, 1 = absent, otherwise (or no verify_argv) None."""
        if "verify_argv" not in params:
            return None
        try:
            out = run_command(
                [str(a) for a in params["verify_argv"]],
                cwd=str(ctx.resolve(params.get("cwd", "."))),
                env=step_env(params, ctx),
                unset=hidden_env(ctx),
                timeout=ctx.timeout_s or 60.0,
            )
        except PluginError:
            return None
        return {0: True, 1: False}.get(out["exit_code"])
