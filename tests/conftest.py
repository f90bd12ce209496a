"""Shared fixtures: a workspace in tmp_path and the real `runbook` CLI run as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from simcore.core import Core

RUNBOOK = str(Path(sys.executable).with_name("runbook"))
SIMCORE = str(Path(sys.executable).with_name("simcore"))
REPO = Path(__file__).resolve().parent.parent


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
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
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


class SimWorkspace(Workspace):
    """A workspace wired to a fresh simulated trading core in `core/` and the repo's runbook library.

    `runbook.yaml` points the `core.*` plugins at `core/` (adapter `sim`, or `http` when
    `core_url` is given) and the kill switch at `core/KILL_SWITCH`; the params profiles in
    `profiles/` use paths relative to this directory.
    """

    def __init__(self, root: Path, seed: int = 7) -> None:
        super().__init__(root)
        Core.init(root / "core", seed=seed)  # in-process: `simcore init` itself is tested in tests/simcore
        self.configure()

    def configure(self, core_url: str | None = None) -> None:
        """(Re)write runbook.yaml, for the sim adapter or the HTTP API at `core_url`."""
        core = f"{{adapter: http, url: '{core_url}'}}" if core_url else "{adapter: sim, root: core}"
        self.write("runbook.yaml", f"""
            runbook_paths: [{REPO / 'runbooks'}, runbooks]
            core: {core}
            kill_switch: core/KILL_SWITCH
            """)

    def simcore(self, *args: str) -> Result:
        """Run `simcore --root core ARGS...`."""
        proc = subprocess.run([SIMCORE, "--root", str(self.root / "core"), *args], cwd=self.root,
                              capture_output=True, text=True, timeout=60)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def profile(self, system: str) -> str:
        """The path of the repo's sim params profile for a system (e.g. `xauusd`)."""
        return str(REPO / "profiles" / f"{system}-sim.yaml")

    def state_hash(self) -> str:
        """sha256 over every file (path and bytes) under core/: equal before and after = untouched."""
        import hashlib

        digest = hashlib.sha256()
        core = self.root / "core"
        for path in sorted(p for p in core.rglob("*") if p.is_file() and not p.name.endswith(".flock")):
            digest.update(str(path.relative_to(core)).encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()


@pytest.fixture
def sim(tmp_path: Path) -> SimWorkspace:
    """A workspace with a fresh simulated core (seed 7)."""
    return SimWorkspace(tmp_path)
