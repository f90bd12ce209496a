"""HTTP check and action, webhook notify and time.offset against a real server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actions.http import HttpRequest
from actions.notify import Notify
from checks.clock import TimeOffset
from checks.http import HttpGet
from engine.errors import PluginError
from engine.plugins import StepContext


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_get_json(ctx: StepContext, http_server: Any) -> None:
    result = HttpGet().run({"url": f"{http_server.url}/json", "headers": {"X-Probe": "1"}}, ctx)
    assert (result["status"], result["ok"], result["json"]) == (200, True, {"status": "up", "n": 3})
    assert result["headers"]["content-type"] == "application/json"
    assert result["elapsed_s"] >= 0
    assert http_server.requests[0]["headers"]["X-Probe"] == "1"
    json.dumps(result)


def test_get_text_and_expect_json(ctx: StepContext, http_server: Any) -> None:
    result = HttpGet().run({"url": f"{http_server.url}/text"}, ctx)
    assert (result["body"], result["json"]) == ("caf\u00e9", None)
    with pytest.raises(PluginError, match="response is not JSON") as info:
        HttpGet().run({"url": f"{http_server.url}/text", "expect_json": True}, ctx)
    assert info.value.result is not None and info.value.result["status"] == 200


def test_404_is_a_result_not_an_error(ctx: StepContext, http_server: Any) -> None:
    result = HttpGet().run({"url": f"{http_server.url}/missing"}, ctx)
    assert (result["status"], result["ok"]) == (404, False)
    assert result["json"] == {"error": "no such thing"}


def test_redirects(ctx: StepContext, http_server: Any) -> None:
    assert HttpGet().run({"url": f"{http_server.url}/redirect"}, ctx)["json"] == {
        "status": "up",
        "n": 3,
    }
    assert (
        HttpGet().run({"url": f"{http_server.url}/redirect", "follow_redirects": False}, ctx)[
            "status"
        ]
        == 302
    )


def test_connection_refused_is_an_error(ctx: StepContext) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/x"
    with pytest.raises(PluginError, match=f"GET {url}: .*refused"):
        HttpGet().run({"url": url}, ctx)


def test_timeout_is_an_error(ctx: StepContext, http_server: Any) -> None:
    with pytest.raises(PluginError, match="timed out after 0.3s"):
        HttpGet().run({"url": f"{http_server.url}/slow", "timeout": 0.3}, ctx)
    short = dataclasses.replace(ctx, timeout_s=0.2)
    with pytest.raises(PluginError, match="timed out after 0.2s"):
        HttpGet().run({"url": f"{http_server.url}/slow"}, short)


def test_url_credentials_stay_out_of_messages(ctx: StepContext) -> None:
    url = f"http://user:hunter2@127.0.0.1:{_closed_port()}/x"
    with pytest.raises(PluginError) as info:
        HttpGet().run({"url": url}, ctx)
    assert "hunter2" not in str(info.value)


def test_post_json_with_idempotency_key(ctx: StepContext, http_server: Any) -> None:
    params = {
        "method": "POST",
        "url": f"{http_server.url}/orders",
        "json": {"qty": 1},
        "idempotency_header": True,
    }
    result = HttpRequest().run(params, ctx)
    assert (result["status"], result["ok"], result["json"]) == (200, True, {"received": True})
    sent = http_server.requests[-1]
    assert (sent["method"], sent["path"], json.loads(sent["body"])) == (
        "POST",
        "/orders",
        {"qty": 1},
    )
    assert sent["headers"]["Idempotency-Key"] == "run-1:step_a:1"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert HttpRequest().verify(params, ctx) is None


def test_request_plan_redacts_credentials(ctx: StepContext, http_server: Any) -> None:
    secret_ctx = dataclasses.replace(ctx, secrets=("sk-live-123",))
    params = {
        "method": "DELETE",
        "url": f"{http_server.url}/orders/7",
        "headers": {
            "Authorization": "Bearer abc",
            "X-MBX-APIKEY": "k",
            "X-Trace": "sk-live-123",
            "Cookie": "session=s1",
            "X-Signature": "f00d",
            "Idempotency-Key": "run-1:step_a:1",
            "Accept": "text/plain",
        },
        "body": "reason=sk-live-123&password=hunter22",
    }
    plan = HttpRequest().plan(params, secret_ctx)
    assert plan.summary == f"DELETE {http_server.url}/orders/7"
    assert plan.details["headers"] == {
        "Authorization": "***",
        "X-MBX-APIKEY": "***",
        "X-Trace": "***",
        "Cookie": "***",
        "X-Signature": "***",
        "Idempotency-Key": "run-1:step_a:1",
        "Accept": "text/plain",
    }
    assert plan.details["body"] == "reason=***&password=***"
    dumped = json.dumps(plan.details)
    assert "abc" not in dumped and "sk-live-123" not in dumped
    assert http_server.requests == []  # planning sends nothing


def test_request_schema(valid: Callable) -> None:
    assert valid(HttpRequest(), {"method": "POST", "url": "http://x/", "json": {}})
    assert not valid(HttpRequest(), {"method": "POST", "url": "http://x/", "json": {}, "body": "x"})
    assert not valid(HttpRequest(), {"method": "BREW", "url": "http://x/"})
    assert not valid(HttpRequest(), {"method": "GET", "url": "ftp://x/"})
    assert not valid(HttpGet(), {"url": "http://x/", "method": "GET"})


def test_notify_all_channels(
    ctx: StepContext, http_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = {
        "message": "halt: spread too wide",
        "channels": ["console", "jsonl", "webhook"],
        "path": "notes/alerts.jsonl",
        "url": f"{http_server.url}/hook",
        "severity": "critical",
    }
    plan = Notify().plan(params, ctx)
    assert (
        plan.details["channels"] == ["console", "jsonl", "webhook"]
        and plan.details["message"] == params["message"]
    )
    result = Notify().run(params, ctx)
    assert result["ok"] is True and set(result["channels"]) == {"console", "jsonl", "webhook"}
    assert "[CRITICAL] run-1 step_a: halt: spread too wide" in capsys.readouterr().err
    record = json.loads((tmp_path / "notes" / "alerts.jsonl").read_text())
    assert (record["message"], record["token"], record["severity"]) == (
        params["message"],
        "run-1:step_a:1",
        "critical",
    )
    assert record["ts"].endswith("Z")
    hook = json.loads(http_server.requests[-1]["body"])
    assert hook == {
        "text": params["message"],
        "run_id": "run-1",
        "step": "step_a",
        "token": "run-1:step_a:1",
        "severity": "critical",
    }


def test_notify_jsonl_verify_by_token(ctx: StepContext) -> None:
    params = {"message": "m", "channel": "jsonl", "path": "a.jsonl"}
    assert Notify().verify(params, ctx) is False
    Notify().run(params, ctx)
    assert Notify().verify(params, ctx) is True
    assert Notify().verify(params, dataclasses.replace(ctx, attempt=2)) is False
    assert Notify().verify({**params, "channel": "webhook", "url": "http://x/"}, ctx) is None


def test_notify_failure_keeps_other_deliveries(ctx: StepContext, tmp_path: Path) -> None:
    params = {
        "message": "m",
        "channels": ["webhook", "jsonl"],
        "path": "a.jsonl",
        "url": f"http://127.0.0.1:{_closed_port()}/",
    }
    with pytest.raises(PluginError, match="notify failed on webhook") as info:
        Notify().run(params, ctx)
    assert info.value.result is not None
    assert info.value.result["channels"]["jsonl"]["ok"] is True
    assert info.value.result["channels"]["webhook"]["ok"] is False
    assert (tmp_path / "a.jsonl").exists()
    with pytest.raises(PluginError, match="needs `path`"):
        Notify().run({"message": "m", "channel": "jsonl"}, ctx)


def test_time_offset_from_date_header(ctx: StepContext, http_server: Any) -> None:
    result = TimeOffset().run({"url": f"{http_server.url}/now"}, ctx)
    assert abs(result["offset_ms"]) <= 1000 and result["ok"] is True
    assert result["resolution_ms"] == 1000 and result["rtt_ms"] >= 0
    assert result["offset_ms"] == pytest.approx(result["remote_ms"] - result["local_ms"], abs=1)
    assert http_server.requests[-1]["method"] == "HEAD"
    shifted = TimeOffset().run({"url": f"{http_server.url}/shifted", "max_offset_ms": 5000}, ctx)
    assert 3_598_000 <= shifted["offset_ms"] <= 3_602_000 and shifted["ok"] is False


def test_time_offset_from_json_field_and_command(ctx: StepContext, http_server: Any) -> None:
    result = TimeOffset().run(
        {
            "json_url": f"{http_server.url}/servertime",
            "json_field": "serverTime",
            "max_offset_ms": 250,
        },
        ctx,
    )
    assert abs(result["offset_ms"]) < 250 and result["ok"] is True
    iso = TimeOffset().run({"argv": ["date", "-u", "+%Y-%m-%dT%H:%M:%S.%3NZ"]}, ctx)
    assert abs(iso["offset_ms"]) < 1000
    ahead = TimeOffset().run({"argv": ["sh", "-c", "echo $(( $(date +%s) + 120 ))"]}, ctx)
    assert 118_000 <= ahead["offset_ms"] <= 122_000 and ahead["ok"] is False
    with pytest.raises(PluginError, match="not a timestamp"):
        TimeOffset().run({"argv": ["echo", "soon"]}, ctx)


def test_time_offset_schema(valid: Callable) -> None:
    assert valid(TimeOffset(), {"url": "http://x/"})
    assert valid(TimeOffset(), {"json_url": "http://x/", "json_field": "serverTime"})
    assert not valid(TimeOffset(), {"json_url": "http://x/"})
    assert not valid(TimeOffset(), {"url": "http://x/", "argv": ["date"]})
    assert not valid(TimeOffset(), {})
