"""`shell` check: run a command, capture its output byte-exact, kill its whole group on timeout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from engine.plugins import StepContext
from transports.process import SHELL_SCHEMA, run_params


class ShellCheck:
    """Run a command; `ok` when its exit code is in `ok_exit_codes` (default [0])."""

    name: ClassVar[str] = "shell"
    params_schema: ClassVar[dict[str, Any]] = SHELL_SCHEMA
    mutates: ClassVar[bool] = False

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Run the command; result: argv, exit_code, stdout, stderr, ok, duration_s (+ json)."""
        return run_params(params, ctx)
