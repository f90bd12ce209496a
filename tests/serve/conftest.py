"""A real `runbook serve` on 127.0.0.1 (a free port), started and stopped by the fixtures, and a project for it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Workspace

TOKENS = {"alertmanager": "am-token-0123456789", "alice": "alice-token-abcdef", "bob": "bob-token-fedcba",
          "ops": "ops-token-777"}
SAMPLES = Path(__file__).resolve().parent / "samples"  # real Alertmanager v4 payloads (firing, group update, resolve)


def sha(token: str) -> str:
    """The stored form of a token."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll until predicate() is truthy (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


RUNBOOKS = {
    "hello": """
        runbook: hello
        title: Hello
        version: 1
        params:
          reason: {type: string, default: none}
        steps:
          - id: say
            check: shell
            with: {argv: [echo, "{{ params.reason }}"]}
          - id: done
            end: SUCCESS
        """,
    "blocker": """
        runbook: blocker
        title: Blocks until the file `release` exists
        version: 1
        params:
          reason: {type: string, default: none}
        steps:
          - id: hold
            check: shell
            with: {argv: [sh, -c, "while [ ! -f release ]; do sleep 0.05; done"]}
            timeout: 5m
          - id: done
            end: SUCCESS
        """,
    "failing": """
        runbook: failing
        title: Always rejects
        version: 1
        steps:
          - id: nope
            check: shell
            with: {argv: ["false"]}
          - id: done
            end: SUCCESS
        """,
    "gated": """
        runbook: gated
        title: Needs alice's approval
        version: 1
        steps:
          - id: gate
            approve: {prompt: "restart the gateway?", approvers: [alice]}
          - id: done
            end: SUCCESS
        """,
    "gated4": """
        runbook: gated4
        title: Needs someone other than who started it
        version: 1
        steps:
          - id: gate
            approve: {prompt: "go?", four_eyes: true}
          - id: done
            end: SUCCESS
        """,
}


class Project(Workspace):
    """A workspace with the test runbooks, tokens, trigger rules, and the server it runs."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        for name, text in RUNBOOKS.items():
            self.runbook(name, text)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    def configure(self, triggers: str, max_concurrent_runs: int = 4, extra: str = "") -> None:
        """Write runbook.yaml with every test token and these trigger rules (YAML list text)."""
        tokens = "\n".join(f"    {k}: \"{sha(v)}\"" for k, v in TOKENS.items())
        body = textwrap.dedent(triggers).strip("\n")
        self.root.joinpath("runbook.yaml").write_text(
            f"runbook_paths: [runbooks]\nkill_switch: KILL_SWITCH\n{extra}"
            f"serve:\n  max_concurrent_runs: {max_concurrent_runs}\n  tokens:\n{tokens}\n"
            f"triggers:\n{textwrap.indent(body, '  ')}\n", encoding="utf-8")

    # -- the server ------------------------------------------------------------------

    def start(self) -> None:
        """Start `runbook serve` and wait until /healthz answers."""
        log = (self.root / "serve.out").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--listen", f"127.0.0.1:{self.port}"],
                                     cwd=self.root, env=self.env(), stdout=log, stderr=log)
        log.close()

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.read('serve.out')}")
            try:
                return httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "serve to answer /healthz")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server with a signal; its exit code."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=120)
        self.proc = None
        return code

    def read(self, name: str) -> str:
        """A file of the workspace as text ('' when absent)."""
        path = self.root / name
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    # -- requests --------------------------------------------------------------------

    def post(self, path: str, body: Any, identity: str | None = "alertmanager", **headers: str) -> httpx.Response:
        """POST JSON with the identity's bearer token."""
        if identity is not None:
            headers["Authorization"] = f"Bearer {TOKENS[identity]}"
        return httpx.post(f"{self.base}{path}", json=body, headers=headers, timeout=30)

    def get(self, path: str, identity: str | None = "alice") -> httpx.Response:
        """GET with the identity's bearer token."""
        headers = {"Authorization": f"Bearer {TOKENS[identity]}"} if identity else {}
        return httpx.get(f"{self.base}{path}", headers=headers, timeout=30)

    def fire(self, *alerts: dict[str, Any]) -> list[dict[str, Any]]:
        """Post alerts as one Alertmanager webhook; the decisions (asserting 202)."""
        response = self.post("/hooks/alertmanager", webhook(*alerts))
        assert response.status_code == 202, response.text
        decisions: list[dict[str, Any]] = response.json()["decisions"]
        return decisions

    # -- state ---------------------------------------------------------------------------

    def records(self) -> dict[str, dict[str, Any]]:
        """Every run record by run id."""
        root = self.root / ".runbook" / "runs"
        out = {}
        for path in root.glob("*.json") if root.exists() else []:
            with contextlib.suppress(ValueError):
                data = json.loads(path.read_text(encoding="utf-8"))
                out[data["run_id"]] = data
        return out

    def finished(self, run_id: str) -> dict[str, Any] | None:
        """The run record once the run finished, else None."""
        record = self.records().get(run_id)
        return record if record and record.get("status") == "finished" else None

    def wait_finished(self, run_id: str, timeout: float = 90) -> dict[str, Any]:
        """Wait until a run has finished; its record."""
        record: dict[str, Any] = wait_for(lambda: self.finished(run_id), timeout, f"run {run_id} to finish")
        return record

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's evidence events."""
        path = self.root / "evidence" / run_id / "events.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def verify_cli(self, run_id: str) -> int:
        """`runbook evidence verify RUN_ID`'s exit code."""
        return self.cli("evidence", "verify", run_id).code

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when absent)."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key == name and not labels or key.startswith(name + "{") and _labels(key) == want:
                return float(value)
        return 0.0


def _labels(key: str) -> str:
    inner = key[key.index("{") + 1:-1]
    return ",".join(sorted(inner.split(","))) if inner else ""


def alert(fingerprint: str, status: str = "firing", starts_at: str = "2026-11-22T14:36:38.593971275Z",
          **labels: str) -> dict[str, Any]:
    """One Alertmanager alert (labels default to the research sample's)."""
    merged = {"alertname": "OrderGatewayDown", "service": "oms-gw", "severity": "critical", "venue": "XNAS",
              **labels}
    return {"status": status, "labels": merged,
            "annotations": {"summary": f"Order gateway heartbeat missing ({fingerprint})"},
            "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else starts_at,
            "generatorURL": "http://prometheus.local/graph", "fingerprint": fingerprint}


def webhook(*alerts: dict[str, Any]) -> dict[str, Any]:
    """An Alertmanager webhook (version 4) body around alerts."""
    return {"receiver": "runbook-engine", "status": "firing", "alerts": list(alerts),
            "groupLabels": {"alertname": "OrderGatewayDown"}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093", "version": "4", "groupKey": "{}:{alertname=\"x\"}",
            "truncatedAlerts": 0}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A project whose server is stopped (SIGTERM, then SIGKILL) at the end of the test, children too."""
    proj = Project(tmp_path)
    yield proj
    if proj.proc is not None and proj.proc.poll() is None:
        proj.proc.send_signal(signal.SIGTERM)
        try:
            proj.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proj.proc.kill()
            proj.proc.wait()
    (tmp_path / "release").touch()  # let any orphaned blocker finish
