"""Shared fixtures: a workspace in tmp_path and the real `runbook` CLI run as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

RUNBOOK = str(Path(sys.executable).with_name("runbook"))


@dataclass
class Result:
    """A finished CLI invocation."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        """stdout and stderr together."""
        return self.out + self.err


class Workspace:
    """A temporary working directory with a `runbooks/` library, driven through the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "runbooks").mkdir(parents=True, exist_ok=True)

    def write(self, relative: str, text: str) -> Path:
        """Write a file (dedented) under the workspace."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def runbook(self, name: str, text: str) -> Path:
        """Write runbooks/<name>.yaml."""
        return self.write(f"runbooks/{name}.yaml", text)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment the CLI runs with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
        env["RUNBOOK_OPERATOR"] = "tester"
        env.update(extra or {})
        return env

    def cli(self, *args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 60) -> Result:
        """Run `runbook ARGS...` in the workspace."""
        proc = subprocess.run([RUNBOOK, *args], cwd=self.root, capture_output=True, text=True,
                              env=self.env(env), input=input, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start `runbook ARGS...` without waiting."""
        return subprocess.Popen([RUNBOOK, *args], cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.env(env))

    def evidence_dirs(self) -> list[Path]:
        """Every bundle written so far, oldest first."""
        root = self.root / "evidence"
        return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """An empty workspace."""
    return Workspace(tmp_path)
