"""File checks and actions on real files in tmp_path."""

from __future__ import annotations

import json
import os
import stat
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from actions.files import ArchiveCreate, FileRemove, FileWrite
from checks.files import FileAge, FileExists, FileJson, JsonlTail
from engine.errors import PluginError
from engine.plugins import StepContext


def test_file_exists(ctx: StepContext, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    result = FileExists().run({"path": "a.txt"}, ctx)
    assert (result["exists"], result["is_file"], result["is_dir"], result["size"]) == (
        True,
        True,
        False,
        5,
    )
    assert result["ok"] is True and result["path"] == str(tmp_path / "a.txt")
    absent = FileExists().run({"path": "nope.txt"}, ctx)
    assert (absent["exists"], absent["size"], absent["ok"]) == (False, None, False)
    assert FileExists().run({"path": "nope.txt", "should_exist": False}, ctx)["ok"] is True
    assert FileExists().run({"path": "."}, ctx)["is_dir"] is True


def test_file_age(ctx: StepContext, tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    path.write_text("x")
    old = time.time() - 600
    os.utime(path, (old, old))
    result = FileAge().run({"path": "feed.csv", "max_age": "5m"}, ctx)
    assert 599 <= result["age_s"] <= 660
    assert result["ok"] is False and result["max_age_s"] == 300
    assert result["mtime_utc"].endswith("Z")
    assert FileAge().run({"path": "feed.csv", "max_age": 3600}, ctx)["ok"] is True
    assert FileAge().run({"path": "feed.csv"}, ctx)["ok"] is True
    with pytest.raises(PluginError, match="file not found: .*missing.csv"):
        FileAge().run({"path": "missing.csv"}, ctx)


def test_file_json(ctx: StepContext, tmp_path: Path) -> None:
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert FileJson().run({"path": "ok.json"}, ctx)["data"] == {"a": 1}
    (tmp_path / "bad.json").write_text('{\n  "a": 1,\n  "b": }\n')
    with pytest.raises(PluginError, match=r"bad.json:3:8: invalid JSON"):
        FileJson().run({"path": "bad.json"}, ctx)


def test_jsonl_tail_filters_then_takes_the_last_n(ctx: StepContext, tmp_path: Path) -> None:
    lines = [
        json.dumps({"i": i, "kind": "fill" if i % 2 else "order", "o": {"sym": "XAU"}})
        for i in range(10)
    ]
    lines.insert(3, "{broken")
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n\n")
    result = JsonlTail().run(
        {"path": "log.jsonl", "n": 2, "where": {"kind": "fill", "o.sym": "XAU"}}, ctx
    )
    assert [r["i"] for r in result["records"]] == [7, 9]
    assert (result["count"], result["matched"], result["bad_lines"]) == (2, 5, 1)
    assert len(JsonlTail().run({"path": "log.jsonl"}, ctx)["records"]) == 10
    assert JsonlTail().run({"path": "log.jsonl", "where": {"kind": "none"}}, ctx)["records"] == []
    with pytest.raises(PluginError, match="file not found"):
        JsonlTail().run({"path": "none.jsonl"}, ctx)


def test_file_write_is_atomic_and_reports_change(ctx: StepContext, tmp_path: Path) -> None:
    params = {"path": "conf/out.json", "json": {"b": 1, "a": "\u00e9"}, "mode": "0640"}
    result = FileWrite().run(params, ctx)
    target = tmp_path / "conf" / "out.json"
    assert target.read_text() == '{\n  "a": "\u00e9",\n  "b": 1\n}\n'
    assert result["changed"] is True and result["bytes"] == len(target.read_bytes())
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert FileWrite().run(params, ctx)["changed"] is False
    assert os.listdir(tmp_path / "conf") == ["out.json"]  # no temp file left behind


def test_file_write_keeps_existing_mode_and_can_refuse_mkdir(
    ctx: StepContext, tmp_path: Path
) -> None:
    target = tmp_path / "x.txt"
    target.write_text("old")
    target.chmod(0o600)
    FileWrite().run({"path": "x.txt", "content": "new"}, ctx)
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(PluginError, match="directory not found"):
        FileWrite().run({"path": "no/dir/x.txt", "content": "x", "mkdir": False}, ctx)


def test_file_write_plan_diff_marks_a_missing_final_newline(ctx: StepContext, tmp_path: Path) -> None:
    (tmp_path / "mode").write_text("armed\nlive")
    diff = FileWrite().plan({"path": "mode", "content": "armed\nsafe"}, ctx).details["diff"]
    assert diff.endswith("-live\n\\ No newline at end of file\n+safe\n\\ No newline at end of file\n"), diff
    grown = FileWrite().plan({"path": "mode", "content": "armed\nlive\n"}, ctx).details["diff"]
    assert "-live\n\\ No newline at end of file\n+live\n" in grown, grown


def test_file_write_plan_shows_a_diff_and_changes_nothing(ctx: StepContext, tmp_path: Path) -> None:
    target = tmp_path / "limits.yaml"
    target.write_text("max_lot: 1\nsymbol: XAUUSD\n")
    plan = FileWrite().plan({"path": "limits.yaml", "content": "max_lot: 2\nsymbol: XAUUSD\n"}, ctx)
    assert plan.details["path"] == str(target)
    assert "-max_lot: 1\n+max_lot: 2\n" in plan.details["diff"]
    assert plan.details["diff"].startswith("--- a/limits.yaml\n+++ b/limits.yaml\n")
    assert target.read_text() == "max_lot: 1\nsymbol: XAUUSD\n"
    assert (
        FileWrite().plan({"path": "new.txt", "content": "x\n"}, ctx).summary.startswith("create ")
    )


def test_file_write_verify(ctx: StepContext, tmp_path: Path) -> None:
    params = {"path": "v.txt", "content": "abc"}
    assert FileWrite().verify(params, ctx) is False
    (tmp_path / "v.txt").write_text("abx")
    assert FileWrite().verify(params, ctx) is False
    FileWrite().run(params, ctx)
    assert FileWrite().verify(params, ctx) is True


def test_file_write_schema(valid: Callable) -> None:
    plugin = FileWrite()
    assert valid(plugin, {"path": "a", "content": "x"})
    assert valid(plugin, {"path": "a", "json": None})
    assert not valid(plugin, {"path": "a"})
    assert not valid(plugin, {"path": "a", "content": "x", "json": {}})
    assert not valid(plugin, {"path": "a", "content": "x", "mode": "rw-r--r--"})


def test_file_remove(ctx: StepContext, tmp_path: Path) -> None:
    target = tmp_path / "lock"
    target.write_text("12345")
    plan = FileRemove().plan({"path": "lock"}, ctx)
    assert plan.details == {"path": str(target), "exists": True, "size": 5}
    assert FileRemove().verify({"path": "lock"}, ctx) is False
    assert FileRemove().run({"path": "lock"}, ctx)["removed"] is True
    assert not target.exists()
    assert FileRemove().verify({"path": "lock"}, ctx) is True
    assert FileRemove().run({"path": "lock"}, ctx)["removed"] is False
    with pytest.raises(PluginError, match="file not found"):
        FileRemove().run({"path": "lock", "missing_ok": False}, ctx)
    with pytest.raises(PluginError, match="is a directory"):
        FileRemove().run({"path": "."}, ctx)


def _tree(tmp_path: Path) -> None:
    (tmp_path / "logs" / "deep").mkdir(parents=True)
    (tmp_path / "logs" / "a.log").write_text("a")
    (tmp_path / "logs" / "deep" / "b.log").write_text("b")
    (tmp_path / "state.json").write_text("{}")
    (tmp_path / "x.csv").write_text("1")
    (tmp_path / "y.csv").write_text("2")


def test_archive_create(ctx: StepContext, tmp_path: Path) -> None:
    _tree(tmp_path)
    params = {"paths": ["logs", "state.json", "*.csv"], "dest_dir": "archives", "prefix": "eod"}
    plan = ArchiveCreate().plan(params, ctx)
    assert plan.details["files"] == [
        "logs/a.log",
        "logs/deep/b.log",
        "state.json",
        "x.csv",
        "y.csv",
    ]
    assert not (tmp_path / "archives").exists()
    result = ArchiveCreate().run(params, ctx)
    archive = Path(result["archive"])
    assert archive.parent == tmp_path / "archives"
    assert archive.name.startswith("eod_") and len(archive.name) == len("eod_20250101_000000.zip")
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == plan.details["files"]
        assert zf.read("logs/deep/b.log") == b"b"
        assert zf.getinfo("state.json").compress_type == zipfile.ZIP_DEFLATED
    assert result["files"] == 5 and result["bytes"] == archive.stat().st_size
    assert os.listdir(tmp_path / "archives") == [archive.name]
    assert ArchiveCreate().verify(params, ctx) is None


def test_archives_of_the_same_second_get_the_next_free_name(ctx: StepContext, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of one maintenance runbook in the same second each keep their backup (neither is refused)."""
    import datetime as real

    class Frozen(real.datetime):
        @classmethod
        def now(cls, tz: real.tzinfo | None = None) -> real.datetime:
            return real.datetime(2025, 1, 2, 3, 4, 5, tzinfo=tz)

    monkeypatch.setattr("actions.files.datetime", Frozen)
    _tree(tmp_path)
    params = {"paths": ["state.json"], "dest_dir": "out", "prefix": "weekly"}
    names = [Path(ArchiveCreate().run(params, ctx)["archive"]).name for _ in range(3)]
    assert names == ["weekly_20250102_030405.zip", "weekly_20250102_030405_2.zip", "weekly_20250102_030405_3.zip"]


def test_archive_with_name_verifies_and_refuses_overwrite(ctx: StepContext, tmp_path: Path) -> None:
    _tree(tmp_path)
    params = {"paths": ["state.json"], "dest_dir": "out", "name": "eod-2025-01-02.zip"}
    assert ArchiveCreate().verify(params, ctx) is False
    ArchiveCreate().run(params, ctx)
    assert ArchiveCreate().verify(params, ctx) is True
    with pytest.raises(PluginError, match="archive already exists"):
        ArchiveCreate().run(params, ctx)


@pytest.mark.parametrize(
    ("paths", "message"), [(["nope.txt"], "no such file"), (["*.nothing"], "no files match")]
)
def test_archive_missing_source(ctx: StepContext, paths: list[str], message: str) -> None:
    with pytest.raises(PluginError, match=message):
        ArchiveCreate().run({"paths": paths, "dest_dir": "out"}, ctx)
