"""env.present, config.validate, config.hash and process.alive."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from checks.config import ConfigHash, ConfigValidate
from checks.env import EnvPresent
from checks.process import ProcessAlive
from engine.errors import PluginError
from engine.plugins import StepContext

SECRET = "sk-live-9f8e7d6c5b4a"


def test_env_present_never_returns_a_value(
    ctx: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RB_TEST_KEY", SECRET)
    monkeypatch.setenv("RB_TEST_EMPTY", "")
    monkeypatch.delenv("RB_TEST_ABSENT", raising=False)
    result = EnvPresent().run({"names": ["RB_TEST_KEY", "RB_TEST_EMPTY", "RB_TEST_ABSENT"]}, ctx)
    assert result["vars"] == {
        "RB_TEST_KEY": {"present": True, "length": len(SECRET)},
        "RB_TEST_EMPTY": {"present": True, "length": 0},
        "RB_TEST_ABSENT": {"present": False, "length": 0},
    }
    assert result["missing"] == ["RB_TEST_EMPTY", "RB_TEST_ABSENT"] and result["ok"] is False
    assert SECRET not in json.dumps(result)
    assert EnvPresent().run({"names": ["RB_TEST_KEY"]}, ctx)["ok"] is True


SCHEMA = {
    "type": "object",
    "required": ["symbol", "max_lot", "sessions"],
    "additionalProperties": False,
    "properties": {
        "symbol": {"type": "string", "pattern": "^[A-Z]{6}$"},
        "max_lot": {"type": "number", "maximum": 5},
        "sessions": {
            "type": "array",
            "items": {"type": "string", "enum": ["asia", "london", "ny"]},
        },
        "start": {"type": "string"},
    },
}


def test_config_validate_lists_every_error(ctx: StepContext, tmp_path: Path) -> None:
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "bad.yaml").write_text(
        "symbol: xauusd\nmax_lot: 9\nsessions: [asia, tokyo]\nextra: 1\n"
    )
    result = ConfigValidate().run({"config": "bad.yaml", "schema": "schema.json"}, ctx)
    assert result["valid"] is False and result["ok"] is False
    by_path = {(e["path"], e["validator"]) for e in result["errors"]}
    assert by_path == {
        ("$", "additionalProperties"),
        ("$.max_lot", "maximum"),
        ("$.sessions[1]", "enum"),
        ("$.symbol", "pattern"),
    }
    assert all(e["message"] for e in result["errors"])
    (tmp_path / "good.yaml").write_text(
        "symbol: XAUUSD\nmax_lot: 1\nsessions: [ny]\nstart: 2025-01-02\n"
    )
    good = ConfigValidate().run({"config": "good.yaml", "schema": "schema.json"}, ctx)
    assert (good["valid"], good["errors"]) == (True, [])  # a YAML date stays a string, as in JSON


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: [1, 2\n", r"bad.yaml:3:1: YAML syntax error"),
        ("a: 1\nb: 2\na: 3\n", r"bad.yaml:3:1: duplicate key 'a'"),
    ],
)
def test_ill_formed_config_is_located(
    ctx: StepContext, tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(PluginError, match=message):
        ConfigValidate().run({"config": "bad.yaml", "schema": "schema.json"}, ctx)


def test_invalid_schema_and_missing_files(ctx: StepContext, tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text("{}")
    (tmp_path / "s.json").write_text('{"type": 12}')
    with pytest.raises(PluginError, match="s.json: invalid JSON Schema"):
        ConfigValidate().run({"config": "c.json", "schema": "s.json"}, ctx)
    with pytest.raises(PluginError, match="file not found: .*nope.yaml"):
        ConfigHash().run({"config": "nope.yaml"}, ctx)


def test_config_hash_ignores_format(ctx: StepContext, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "# limits\nsymbol: XAUUSD\nlimits:\n  max_lot: 1.5\n  tags: [a, 'b']\nname: caf\u00e9\n"
    )
    (tmp_path / "b.json").write_text(
        '{"name":"caf\\u00e9","limits":{"tags":["a","b"],"max_lot":1.5},\n "symbol": "XAUUSD"}'
    )
    (tmp_path / "c.yaml").write_text(
        "symbol: XAUUSD\nlimits: {max_lot: 2, tags: [a, b]}\nname: caf\u00e9\n"
    )
    a = ConfigHash().run({"config": "a.yaml"}, ctx)
    b = ConfigHash().run({"config": "b.json"}, ctx)
    assert a["config_hash"] == b["config_hash"] and a["algorithm"] == "sha256"
    assert len(a["config_hash"]) == 64
    assert ConfigHash().run({"config": "c.yaml"}, ctx)["config_hash"] != a["config_hash"]


def test_process_alive_by_pid(ctx: StepContext) -> None:
    assert ProcessAlive().run({"pid": os.getpid()}, ctx) == {
        "pid": os.getpid(),
        "alive": True,
        "ok": True,
    }
    proc = subprocess.Popen(["true"])
    proc.wait()
    dead = ProcessAlive().run({"pid": proc.pid, "should_be_alive": False}, ctx)
    assert (dead["alive"], dead["ok"]) == (False, True)
    assert ProcessAlive().run({"pid": 1}, ctx)["alive"] is True  # EPERM or not: pid 1 exists


def test_process_alive_zombie_is_dead(ctx: StepContext) -> None:
    proc = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert ProcessAlive().run({"pid": proc.pid}, ctx)["alive"] is False
    finally:
        proc.wait()


def test_process_alive_by_pidfile(ctx: StepContext, tmp_path: Path) -> None:
    (tmp_path / "bot.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "lock.json").write_text(json.dumps({"active": True, "pid": os.getpid()}))
    (tmp_path / "junk.pid").write_text("hello")
    assert ProcessAlive().run({"pidfile": "bot.pid"}, ctx)["ok"] is True
    assert ProcessAlive().run({"pidfile": "lock.json"}, ctx)["alive"] is True
    missing = ProcessAlive().run({"pidfile": "gone.pid"}, ctx)
    assert (missing["pid"], missing["alive"], missing["pidfile_exists"], missing["ok"]) == (
        None,
        False,
        False,
        False,
    )
    with pytest.raises(PluginError, match="does not hold a pid"):
        ProcessAlive().run({"pidfile": "junk.pid"}, ctx)
