"""Fixtures: a fresh core directory, the real `simcore` CLI, a real HTTP server on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simcore.core import Core

SIMCORE = str(Path(sys.executable).parent / "simcore")
CSV = "data/live/XAUUSD_M1_live.csv"
CFG = ["--config", "config/settings.yaml", "--schema", "config/schema.json"]


@pytest.fixture
def core_dir(tmp_path: Path) -> Path:
    """A core directory freshly initialized with seed 7."""
    root = tmp_path / "core"
    Core.init(root, seed=7)
    return root


@pytest.fixture
def core(core_dir: Path) -> Core:
    return Core(core_dir)


def run(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `simcore` CLI in the core directory (as a runbook step would)."""
    return subprocess.run([SIMCORE, *args], cwd=root, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def wait_for(pred: Any, deadline_s: float = 10.0) -> Any:
    """Poll pred() until truthy or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met before deadline")


@pytest.fixture
def server(core_dir: Path, tmp_path: Path) -> Iterator[str]:
    """`simcore serve --port 0` on loopback; yields the base URL; stopped with SIGTERM."""
    port_file = tmp_path / "port"
    proc = subprocess.Popen([SIMCORE, "--root", str(core_dir), "serve", "--port", "0",
                             "--port-file", str(port_file)], stdout=subprocess.PIPE, text=True)
    try:
        port = wait_for(lambda: port_file.exists() and port_file.read_text().strip())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None
        assert f"listening on http://127.0.0.1:{port}" in proc.stdout.read()


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, str, Any]:
    """(status, content-type, parsed JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, ctype, raw = resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        status, ctype, raw = err.code, err.headers["Content-Type"], err.read().decode()
    return status, ctype, json.loads(raw) if ctype.startswith("application/json") else raw
