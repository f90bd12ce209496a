"""A real `ansible-playbook` for the `ansible.playbook` action's tests.

ansible-core is installed from PyPI into its own venv, tests/ansible/.venv, on first use and
kept between runs (the engine itself does not depend on Ansible). When it cannot be built the
tests are skipped with the reason (RUNBOOK_REQUIRE_ANSIBLE=1, as in .ci/run, fails instead).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from filelock import FileLock

ANSIBLE_CORE = "2.19.14"  # the newest ansible-core whose controller runs on Python 3.11
HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
STAMP = VENV / f".installed-ansible-core-{ANSIBLE_CORE}"


def _build() -> str | None:
    for argv in ([sys.executable, "-m", "venv", "--clear", str(VENV)],
                 [str(VENV / "bin" / "pip"), "install", "--quiet", f"ansible-core=={ANSIBLE_CORE}"]):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(argv[:3])}: {exc}"
        if done.returncode != 0:
            return f"{' '.join(argv[:3])} exited {done.returncode}: {(done.stderr or done.stdout)[-500:]}"
    STAMP.write_text(ANSIBLE_CORE)
    return None


@pytest.fixture(scope="session")
def ansible_path() -> str:
    """A PATH on which `ansible-playbook` is the venv's (then the engine's own bin, then the rest)."""
    with FileLock(str(Path(tempfile.gettempdir()) / "runbook-ansible-venv.lock")):
        problem = None if STAMP.exists() else _build()
    if problem:
        message = f"ansible-core {ANSIBLE_CORE} could not be installed into {VENV}: {problem}"
        if os.environ.get("RUNBOOK_REQUIRE_ANSIBLE"):
            pytest.fail(message)
        pytest.skip(message)
    return os.pathsep.join([str(VENV / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
