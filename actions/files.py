"""File actions: `file.write` (atomic), `file.remove`, `archive.create` (zip, atomic)."""

from __future__ import annotations

import difflib
import glob
import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

from engine.errors import PluginError
from engine.plugins import Plan, StepContext, sha256_file
from transports.util import atomic_write, fsync_dir

PATH = {
    "type": "string",
    "minLength": 1,
    "description": "File path, relative to the run's workdir.",
}
MAX_DIFF_LINES = 2000


def _new_content(params: Mapping[str, Any]) -> bytes:
    if "json" in params:
        return (
            json.dumps(params["json"], indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        ).encode()
    return str(params["content"]).encode()


NO_NEWLINE = "\\ No newline at end of file\n"


def _current(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise PluginError(f"{path} is a directory") from None
    except OSError as e:
        raise PluginError(f"cannot read {path}: {e.strerror}") from None


class FileWrite:
    """Write a file atomically (text `content`, or `json` with indent 2 and sorted keys)."""

    name: ClassVar[str] = "file.write"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": PATH,
            "content": {"type": "string", "description": "Text written as UTF-8, as is."},
            "json": {
                "description": "Any value, written as JSON (indent 2, sorted keys, final newline)."
            },
            "mode": {
                "type": "string",
                "pattern": "^0?[0-7]{3,4}$",
                "description": "Octal permissions, e.g. '0640'. Default: keep an existing file's, "
                "else 0666 minus umask.",
            },
            "mkdir": {
                "type": "boolean",
                "description": "Create missing parent directories. Default true.",
            },
        },
        "oneOf": [{"required": ["content"]}, {"required": ["json"]}],
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: path, bytes, sha256, changed (false when the content was already there)."""
        path = ctx.resolve(params["path"])
        data = _new_content(params)
        mode = int(params["mode"], 8) if "mode" in params else None
        if params.get("mkdir", True):
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.parent.is_dir():
            raise PluginError(f"directory not found: {path.parent}")
        changed = _current(path) != data
        if changed:
            atomic_write(path, lambda fh: fh.write(data), mode)
        elif mode is not None and path.stat().st_mode & 0o7777 != mode:
            os.chmod(path, mode)
        return {
            "path": str(path),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "changed": changed,
        }

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """The target path and a unified diff of its current content against the new one."""
        path = ctx.resolve(params["path"])
        data = _new_content(params)
        old = _current(path)
        diff = [
            line if line.endswith("\n") else f"{line}\n{NO_NEWLINE}"
            for line in difflib.unified_diff(
                (old or b"").decode(errors="replace").splitlines(keepends=True),
                data.decode().splitlines(keepends=True),
                fromfile=f"a/{params['path']}" if old is not None else "/dev/null",
                tofile=f"b/{params['path']}",
            )
        ]
        if len(diff) > MAX_DIFF_LINES:
            diff = diff[:MAX_DIFF_LINES] + [f"... {len(diff) - MAX_DIFF_LINES} more diff lines\n"]
        verb = "create" if old is None else ("rewrite" if old != data else "leave unchanged")
        return Plan(
            summary=f"{verb} {path} ({len(data)} bytes)",
            details={
                "path": str(path),
                "exists": old is not None,
                "changed": old != data,
                "bytes": len(data),
                "mode": params.get("mode"),
                "diff": "".join(diff),
            },
        )

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """True when the target already holds exactly the new content."""
        try:
            return _current(ctx.resolve(params["path"])) == _new_content(params)
        except PluginError:
            return None


class FileRemove:
    """Remove a file (not a directory); a missing file is fine unless `missing_ok: false`."""

    name: ClassVar[str] = "file.remove"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": PATH,
            "missing_ok": {
                "type": "boolean",
                "description": "A missing file is not an error. Default true.",
            },
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: path, removed."""
        path = ctx.resolve(params["path"])
        if path.is_dir() and not path.is_symlink():
            raise PluginError(f"{path} is a directory; file.remove removes files only")
        try:
            path.unlink()
        except FileNotFoundError:
            if not params.get("missing_ok", True):
                raise PluginError(f"file not found: {path}") from None
            return {"path": str(path), "removed": False}
        except OSError as e:
            raise PluginError(f"cannot remove {path}: {e.strerror}") from None
        fsync_dir(path.parent)
        return {"path": str(path), "removed": True}

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """The path, whether it exists and its size."""
        path = ctx.resolve(params["path"])
        exists = path.is_file() or path.is_symlink()
        size = path.lstat().st_size if exists else None
        summary = (
            f"remove {path} ({size} bytes)" if exists else f"remove {path} (absent: nothing to do)"
        )
        return Plan(summary=summary, details={"path": str(path), "exists": exists, "size": size})

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """True when the file is absent."""
        path = ctx.resolve(params["path"])
        return not (path.exists() or path.is_symlink())


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def collect_files(paths: list[str], ctx: StepContext) -> list[tuple[Path, str]]:
    """(file, name in archive) for every file, directory (recursive) or glob; sorted, no duplicates."""
    found: dict[Path, str] = {}
    for entry in paths:
        base = ctx.resolve(entry)
        if _is_glob(entry):
            matches = [Path(m) for m in sorted(glob.glob(str(base), recursive=True))]
            if not matches:
                raise PluginError(f"no files match: {entry}")
        elif base.exists():
            matches = [base]
        else:
            raise PluginError(f"no such file or directory: {base}")
        for match in matches:
            files = (
                sorted(p for p in match.rglob("*") if p.is_file()) if match.is_dir() else [match]
            )
            for file in files:
                try:
                    arcname = file.relative_to(ctx.workdir).as_posix()
                except ValueError:
                    arcname = file.relative_to(
                        match.parent if match.is_dir() else file.parent
                    ).as_posix()
                found.setdefault(file, arcname)
    return sorted(found.items(), key=lambda item: item[1])


class ArchiveCreate:
    """Zip files, directories and globs into `{prefix}_{UTC %Y%m%d_%H%M%S}.zip` (`_2`, `_3` ... after it when
    an archive of the same second exists) or `name`, atomically."""

    name: ClassVar[str] = "archive.create"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["paths", "dest_dir"],
        "properties": {
            "paths": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "minLength": 1},
                "description": "Files, directories (recursive) or globs (** allowed), relative to the workdir.",
            },
            "dest_dir": {
                "type": "string",
                "minLength": 1,
                "description": "Directory for the archive (created).",
            },
            "prefix": {
                "type": "string",
                "pattern": "^[^/]+$",
                "description": "Name prefix. Default 'archive'.",
            },
            "name": {
                "type": "string",
                "pattern": "^[^/]+$",
                "description": "Explicit file name instead of prefix + timestamp (makes verify possible).",
            },
        },
    }

    def _target(self, params: Mapping[str, Any], ctx: StepContext) -> Path:
        folder = ctx.resolve(params["dest_dir"])
        if params.get("name"):
            return Path(folder / params["name"])
        stem = f"{params.get('prefix', 'archive')}_{datetime.now(UTC).strftime('%Y%m%d_%H%M%S')}"
        target, n = folder / f"{stem}.zip", 1
        while target.exists():  # another archive of the same second: the next free `_N`
            n += 1
            target = folder / f"{stem}_{n}.zip"
        return Path(target)

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: archive, files (count), bytes, sha256. Refuses to overwrite an existing archive."""
        target = self._target(params, ctx)
        files = [(f, a) for f, a in collect_files(params["paths"], ctx) if f != target]
        if target.exists():
            raise PluginError(f"archive already exists: {target}")
        target.parent.mkdir(parents=True, exist_ok=True)

        def fill(fh: IO[bytes]) -> None:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False) as zf:
                for file, arcname in files:
                    zf.write(file, arcname)

        atomic_write(target, fill)
        return {
            "archive": str(target),
            "files": len(files),
            "bytes": target.stat().st_size,
            "sha256": sha256_file(target),
        }

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """The archive path (timestamp as of planning) and every file that would go in."""
        target = self._target(params, ctx)
        files = [a for f, a in collect_files(params["paths"], ctx) if f != target]
        return Plan(
            summary=f"zip {len(files)} files into {target}",
            details={"archive": str(target), "files": files, "exists": target.exists()},
        )

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """With an explicit `name`: whether that archive exists and is a valid zip; else None."""
        if "name" not in params:
            return None
        target = self._target(params, ctx)
        return target.is_file() and zipfile.is_zipfile(target)
