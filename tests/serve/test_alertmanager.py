"""A real Prometheus Alertmanager (Debian's prometheus-alertmanager, installed by .ci/run) firing at serve."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve.conftest import TOKENS, Project, free_port, wait_for

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

REQUIRED = bool(os.environ.get("RUNBOOK_REQUIRE_ALERTMANAGER"))  # set by .ci/run: missing is a failure there

pytestmark = pytest.mark.skipif(BINARY is None and not REQUIRED,
                                reason="prometheus-alertmanager is not installed (.ci/run installs it)")


class Alertmanager:
    """An Alertmanager on 127.0.0.1 with one webhook receiver: serve's /hooks/alertmanager."""

    def __init__(self, root: Path, serve_port: int) -> None:
        assert BINARY is not None, "prometheus-alertmanager is required (RUNBOOK_REQUIRE_ALERTMANAGER) but missing"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        config = root / "alertmanager.yml"
        config.write_text(f"""
route:
  receiver: runbook-engine
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: runbook-engine
    webhook_configs:
      - url: http://127.0.0.1:{serve_port}/hooks/alertmanager
        send_resolved: true
        http_config:
          authorization: {{type: Bearer, credentials: {TOKENS['alertmanager']}}}
""", encoding="utf-8")
        self.log = (root / "alertmanager.log").open("ab")
        self.proc = subprocess.Popen([BINARY, f"--config.file={config}", f"--storage.path={root / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
                                      "--log.level=warn"], stdout=self.log, stderr=self.log)
        wait_for(self._ready, 60, "Alertmanager to be ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"alertmanager exited {self.proc.returncode}")
        try:
            return httpx.get(f"{self.base}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, labels: dict[str, str], starts_at: datetime | None = None, ends_at: datetime | None = None) -> None:
        """Post one alert to Alertmanager's API (as Prometheus does)."""
        body: dict[str, Any] = {"labels": labels, "annotations": {"summary": f"{labels['alertname']} fired"}}
        if starts_at is not None:
            body["startsAt"] = _rfc3339(starts_at)
        if ends_at is not None:
            body["endsAt"] = _rfc3339(ends_at)
        response = httpx.post(f"{self.base}/api/v2/alerts", json=[body], timeout=10)
        assert response.status_code == 200, response.text

    def failed_notifications(self) -> float:
        """alertmanager_notifications_failed_total for the webhook integration."""
        total = 0.0
        for line in httpx.get(f"{self.base}/metrics", timeout=10).text.splitlines():
            if line.startswith("alertmanager_notifications_failed_total") and 'integration="webhook"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        """Stop it by pid."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def alertmanager(project: Project) -> Iterator[Alertmanager]:
    """Alertmanager pointed at the project's serve port."""
    am = Alertmanager(project.root / "am", project.port)
    yield am
    am.stop()


RULES = """
- name: gateway
  on: {alertmanager: {alertname: GatewayDown}}
  runbook: hello
  params: {reason: "{{ alert.labels.venue }}"}
  group_by: [alertname, venue]
  cooldown: 1h
- name: flaky
  on: {alertmanager: {alertname: Flaky}}
  runbook: failing
  breaker: {failures: 1, within: 1h}
"""


def _runs_for(project: Project, alertname: str) -> dict[str, dict[str, Any]]:
    return {rid: r for rid, r in project.records().items()
            if (r.get("trigger") or {}).get("labels", {}).get("alertname") == alertname}


def _run_of(project: Project, venue: str) -> dict[str, Any] | None:
    found = [r for r in _runs_for(project, "GatewayDown").values() if r["trigger"]["labels"].get("venue") == venue]
    return found[0] if found else None


def test_real_alertmanager_one_run_per_alert_through_renotify_outage_cooldown_breaker_resolve(
        project: Project, alertmanager: Alertmanager, capsys: pytest.CaptureFixture[str]) -> None:
    project.configure(RULES)
    project.start()

    posted = time.time()
    alertmanager.post({"alertname": "GatewayDown", "venue": "XNAS", "severity": "critical"})
    first = wait_for(lambda: _run_of(project, "XNAS"), 60, "the run for XNAS")
    started = datetime.fromisoformat(first["started_at"].replace("Z", "+00:00")).timestamp()
    with capsys.disabled():
        print(f"\n[alertmanager] first alert (serve just started) -> run started: {started - posted:.3f}s")
    assert project.wait_finished(first["run_id"])["params"] == {"reason": "XNAS"}

    # a second alert joins the group: Alertmanager re-sends XNAS with it (duplicate) and XNYS starts one run
    posted = time.time()
    alertmanager.post({"alertname": "GatewayDown", "venue": "XNYS", "severity": "critical"})
    second = wait_for(lambda: _run_of(project, "XNYS"), 60, "the run for XNYS")
    started = datetime.fromisoformat(second["started_at"].replace("Z", "+00:00")).timestamp()
    with capsys.disabled():
        print(f"[alertmanager] second alert (warm worker waiting) -> run started: {started - posted:.3f}s")
    wait_for(lambda: project.metric("runbook_alerts_total", rule="gateway", decision="duplicate") >= 1, 60,
             "Alertmanager's re-notification of XNAS to be answered duplicate")

    # serve is down while a third alert fires: Alertmanager retries until serve is back
    assert project.stop(signal.SIGTERM) == 0
    before = alertmanager.failed_notifications()
    alertmanager.post({"alertname": "GatewayDown", "venue": "ARCX", "severity": "critical"})
    wait_for(lambda: alertmanager.failed_notifications() > before, 60, "a failed delivery while serve is down")
    project.start()
    third = wait_for(lambda: _run_of(project, "ARCX"), 120, "the retried delivery of ARCX to start its run")

    # resolved: starts nothing; a new firing of the same alert (new startsAt) within the cooldown: cooldown
    now = datetime.now(UTC)
    alertmanager.post({"alertname": "GatewayDown", "venue": "XNAS", "severity": "critical"}, starts_at=now,
                      ends_at=now)
    wait_for(lambda: project.metric("runbook_alerts_total", rule="gateway", decision="resolved") >= 1, 60,
             "the resolved notification")
    alertmanager.post({"alertname": "GatewayDown", "venue": "XNAS", "severity": "critical"})
    wait_for(lambda: project.metric("runbook_alerts_total", rule="gateway", decision="cooldown") >= 1, 60,
             "the re-fired XNAS alert to be held by the cooldown")

    # breaker: one failed run opens it; the next Flaky alert is refused
    alertmanager.post({"alertname": "Flaky", "instance": "a"})
    failing = wait_for(lambda: next(iter(_runs_for(project, "Flaky")), None), 60, "the Flaky run")
    assert project.wait_finished(failing)["outcome"] == "BUSINESS_REJECT"
    wait_for(lambda: project.metric("runbook_breaker_open", rule="flaky") == 1, 60, "the breaker to open")
    alertmanager.post({"alertname": "Flaky", "instance": "b"})
    wait_for(lambda: project.metric("runbook_alerts_total", rule="flaky", decision="breaker_open") >= 1, 60,
             "the second Flaky alert to meet the open breaker")

    for record in (first, second, third):
        project.wait_finished(record["run_id"])
    runs = _runs_for(project, "GatewayDown")
    venues = sorted(r["trigger"]["labels"]["venue"] for r in runs.values())
    assert venues == ["ARCX", "XNAS", "XNYS"]
    assert len(_runs_for(project, "Flaky")) == 1
    assert all(r["operator"] == "serve:alertmanager" for r in project.records().values())
    with contextlib.suppress(OSError):
        assert "am-token" not in (project.root / ".runbook" / "serve" / "inbox.sqlite").read_bytes().decode("latin-1")
