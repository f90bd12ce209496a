"""The venvs of the external programs the tests drive for real (freqtrade, ansible-core), built from PyPI.

Each lives in its own folder (tests/freqtrade/.venv, tests/ansible/.venv; the engine depends on neither) and
is kept between runs. `python -m tests.tool_venvs` builds the missing ones: `make test` runs it beside the
linters, so the downloads overlap with mypy instead of holding a test worker. A fixture that finds its venv
missing (pytest run directly) builds it itself; a file lock makes every builder wait for the one at work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ToolVenv:
    """One program's venv: where it lives, the pinned requirement, the variable that makes a failure fatal."""

    package: str
    version: str
    venv: Path
    require_env: str

    @property
    def stamp(self) -> Path:
        """Written last: its presence means the install completed."""
        return self.venv / f".installed-{self.package}-{self.version}"

    def ensure(self) -> str | None:
        """Build the venv unless it is complete; None when it is ready, else why not."""
        with FileLock(str(Path(tempfile.gettempdir()) / f"runbook-{self.package}-venv.lock")):
            return None if self.stamp.exists() else self._build()

    def ready_or_skip(self) -> Path:
        """The venv's bin folder for a test; skips (or fails under `require_env`) when it cannot be built."""
        problem = self.ensure()
        if problem:
            message = f"{self.package} {self.version} could not be installed into {self.venv}: {problem}"
            if os.environ.get(self.require_env):
                pytest.fail(message)
            pytest.skip(message)
        return self.venv / "bin"

    def _build(self) -> str | None:
        for argv in ([sys.executable, "-m", "venv", "--clear", str(self.venv)],
                     [str(self.venv / "bin" / "pip"), "install", "--quiet", f"{self.package}=={self.version}"]):
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"{' '.join(argv[:3])}: {exc}"
            if done.returncode != 0:
                return f"{' '.join(argv[:3])} exited {done.returncode}: {(done.stderr or done.stdout)[-500:]}"
        self.stamp.write_text(self.version)
        return None


# freqtrade is big (about 770 MB with ccxt, pandas, scipy); ansible-core 2.19 is the newest whose controller
# runs on Python 3.11.
FREQTRADE = ToolVenv("freqtrade", "2026.9", HERE / "freqtrade" / ".venv", "RUNBOOK_REQUIRE_FREQTRADE")
ANSIBLE = ToolVenv("ansible-core", "2.19.14", HERE / "ansible" / ".venv", "RUNBOOK_REQUIRE_ANSIBLE")


def main() -> int:
    """Build every missing venv and say how it went; the tests report a failure (this exits 0)."""
    for tool in (FREQTRADE, ANSIBLE):
        problem = tool.ensure()
        print(f"{tool.package} {tool.version}: {problem or f'ready in {tool.venv}'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
