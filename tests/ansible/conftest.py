"""A real `ansible-playbook` for the `ansible.playbook` action's tests.

ansible-core is installed from PyPI into its own venv, tests/ansible/.venv, on first use and
kept between runs (the engine itself does not depend on Ansible). When it cannot be built the
tests are skipped with the reason (RUNBOOK_REQUIRE_ANSIBLE=1, as in .ci/run, fails instead).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.tool_venvs import ANSIBLE


@pytest.fixture(scope="session")
def ansible_path() -> str:
    """A PATH on which `ansible-playbook` is the venv's (then the engine's own bin, then the rest)."""
    return os.pathsep.join([str(ANSIBLE.ready_or_skip()), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
