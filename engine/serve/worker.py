"""A warm run process for serve: the engine is imported before the alert arrives.

Serve keeps one spare worker waiting. The worker reads one JSON command line (the arguments of
`runbook`, e.g. `["run", NAME, "--run-id", ID, ...]`) from stdin and runs it with the normal CLI,
then exits with the run's exit code. End of input without a command (serve stopped or died first)
exits 0 having done nothing. Starting a run this way costs a pipe write instead of an interpreter
start and the engine's imports.
"""

from __future__ import annotations

import json
import os
import sys


def _preload() -> None:
    """Import what every run needs (the CLI, the interpreter, the sandbox, the schema checkers)."""
    import engine.cli  # noqa: F401
    import engine.session  # noqa: F401
    from engine.expressions import environment

    environment()
    try:
        from engine.plugins import load_registry

        load_registry([])  # imports the built-in plugins' modules
    except Exception:  # noqa: BLE001 - a preload that fails only costs time later, in the run itself
        pass
    for module in ("jsonschema", "fastjsonschema", "engine.validate", "engine.evidence", "engine.report"):
        try:
            __import__(module)
        except ImportError:
            continue


def main() -> int:
    """Wait for one command line on stdin and run it; the CLI's exit code."""
    _preload()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    argv = json.loads(line)
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        print(f"runbook serve worker: expected a JSON list of arguments, got {line[:200]!r}", file=sys.stderr)
        return 2
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    from engine.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
