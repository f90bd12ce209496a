"""`runbook.yaml`: where runbooks, evidence, state and plugins live. Every key has a default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.durations import parse_duration
from engine.errors import InvalidRunbook, Problem, UsageError
from engine.keys import check_private, load_public
from engine.loader import load_file

DEFAULTS: dict[str, Any] = {
    "runbook_paths": ["runbooks"],
    "evidence_dir": "evidence",
    "state_dir": ".runbook",
    "kill_switch": "KILL_SWITCH",
    "plugin_paths": [],
    "core": {"adapter": "sim"},
    "signing_key_env": "RUNBOOK_SIGNING_KEY",
    "signing": {},
    "serve": None,
    "triggers": None,
    "templates": {"timeout": "1s", "max_bytes": 1048576},
    "approvals": {},
}


@dataclass(frozen=True)
class Config:
    """Resolved configuration; all paths absolute."""

    base: Path
    runbook_paths: tuple[Path, ...]
    evidence_dir: Path
    state_dir: Path
    kill_switch: Path
    plugin_paths: tuple[Path, ...]
    core: dict[str, Any] = field(default_factory=dict)
    signing_key_env: str = "RUNBOOK_SIGNING_KEY"  # retired HMAC signing; accepted, unused
    signing_key: Path | None = None  # `signing: {key: PATH}`: Ed25519 private key that signs every bundle
    source: Path | None = None
    serve: Any = None  # raw `serve:` block; validated by engine.serve.rules
    triggers: Any = None  # raw `triggers:` list (or a file path); validated by engine.serve.rules
    templates_timeout_s: float = 1.0  # `templates: {timeout, max_bytes}`: the bounds of every render
    templates_max_bytes: int = 1048576
    # `approvals: {require_signature: BOOL, keys: {NAME: PUBLIC_KEY_PATH}}` (SPEC 8: signed approvals)
    approvals_require_signature: bool = False
    approval_keys: dict[str, Path] = field(default_factory=dict)


_PATH_LISTS = ("runbook_paths", "plugin_paths")
_STRINGS = ("evidence_dir", "state_dir", "kill_switch", "signing_key_env")


def _type_problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for every setting of the wrong type."""
    out = []
    for key in _PATH_LISTS:
        value = raw.get(key)
        if key in raw and not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            out.append((key, f"{key}: expected a path or a list of paths, got {value!r}"))
    for key in _STRINGS:
        if key in raw and not isinstance(raw[key], str):
            out.append((key, f"{key}: expected a string, got {raw[key]!r}"))
    core = raw.get("core")
    if "core" in raw:
        if not isinstance(core, dict):
            out.append(("core", f"core: expected a mapping such as {{adapter: sim, root: DIR}}, got {core!r}"))
        elif core.get("adapter", "sim") not in ("sim", "http", "freqtrade"):
            out.append(("core", f"core.adapter: expected sim or http or freqtrade, got {core.get('adapter')!r}"))
        elif core.get("adapter") == "freqtrade":
            for key in ("url", "username_env", "password_env"):
                if not isinstance(core.get(key, "-"), str) or (key == "url" and not core.get("url")):
                    out.append(("core", f"core.{key}: expected a string for the freqtrade adapter, got {core.get(key)!r}"))
    signing = raw.get("signing")
    if "signing" in raw and not (isinstance(signing, dict) and set(signing) <= {"key"}
                                 and isinstance(signing.get("key", ""), str)):
        out.append(("signing", f"signing: expected {{key: PATH}} (an Ed25519 private key), got {signing!r}"))
    if "templates" in raw:
        out += [("templates", message) for message in _template_problems(raw["templates"])]
    return out


def _template_problems(value: Any) -> list[str]:
    expected = "expected {timeout: DURATION, max_bytes: INTEGER} such as {timeout: 1s, max_bytes: 1048576}"
    if not isinstance(value, dict) or not set(value) <= {"timeout", "max_bytes"}:
        return [f"templates: {expected}, got {value!r}"]
    out = []
    try:
        if "timeout" in value and parse_duration(value["timeout"]) <= 0:
            out.append(f"templates.timeout: {value['timeout']!r} is not positive ({expected})")
    except ValueError as exc:
        out.append(f"templates.timeout: {exc}")
    size = value.get("max_bytes", 1)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        out.append(f"templates.max_bytes: expected a positive integer, got {size!r}")
    return out


def discover(cwd: Path) -> Path:
    """The `runbook.yaml` to use from `cwd`: its own (SPEC 6), else the nearest in a parent directory, like git.

    The walk stops at a workspace without a config (a directory with `runbooks/`), at the top of a
    git repository and at the home directory; nothing found: `cwd/runbook.yaml` (absent, so the defaults).
    """
    own = cwd / "runbook.yaml"
    home = Path.home().resolve() if "HOME" in os.environ else None
    if own.exists() or (cwd / "runbooks").is_dir() or (cwd / ".git").exists() or cwd == home:
        return own
    for directory in cwd.parents:
        candidate = directory / "runbook.yaml"
        try:
            if candidate.is_file():
                return candidate
            if (directory / "runbooks").is_dir() or (directory / ".git").exists() or directory == home:
                break
        except OSError:
            break
    return own


def load_config(explicit: str | None = None, cwd: Path | None = None) -> Config:
    """The configuration from `--config`, `$RUNBOOK_CONFIG`, `./runbook.yaml`, or defaults."""
    cwd = (cwd or Path.cwd()).resolve()
    chosen = explicit or os.environ.get("RUNBOOK_CONFIG")
    path = Path(chosen) if chosen else discover(cwd)
    if not path.is_absolute():
        path = cwd / path
    raw: dict[str, Any] = {}
    source: Path | None = None
    if path.exists():
        doc = load_file(path)
        if doc.data is not None and not isinstance(doc.data, dict):
            raise InvalidRunbook([doc.problem((), "expected a mapping of settings")])
        raw = doc.data or {}
        unknown = sorted(set(raw) - set(DEFAULTS))
        if unknown:
            raise InvalidRunbook([
                doc.problem((k,), f"unknown setting '{k}' (expected one of: {', '.join(DEFAULTS)})") for k in unknown
            ])
        problems = [doc.problem((k,), message) for k, message in _type_problems(raw)]
        if problems:
            raise InvalidRunbook(problems)
        source = path
    elif chosen:
        raise InvalidRunbook([Problem(str(path), None, None, None, "config file not found")])
    base = path.parent if source else cwd
    merged = {**DEFAULTS, **raw}

    def resolve(value: Any) -> Path:
        p = Path(os.path.expanduser(str(value)))
        return p if p.is_absolute() else base / p

    def listing(value: Any) -> tuple[Path, ...]:
        return tuple(resolve(v) for v in ([value] if isinstance(value, str) else value or []))

    core = {**DEFAULTS["core"], **(merged.get("core") or {})}
    if core.get("root"):
        core["root"] = str(resolve(core["root"]))
    signing_key = resolve(merged["signing"]["key"]) if (merged.get("signing") or {}).get("key") else None
    if signing_key is not None:
        problem = check_private(signing_key)
        if problem:
            raise InvalidRunbook([Problem(str(source), None, None, None, f"signing.key: {problem}")])
    if source is not None and "approvals" in raw:
        problems = _approval_problems(raw["approvals"], resolve, source)
        if problems:
            raise InvalidRunbook(problems)
    approval_keys = {name: resolve(value) for name, value in ((merged.get("approvals") or {}).get("keys") or {}).items()}
    unusable = [(key, message) for key in ("state_dir", "evidence_dir")
                if (message := _unusable_directory(key, resolve(merged[key]))) is not None]
    if unusable:
        raise InvalidRunbook([_setting_problem(source, path, key, message) for key, message in unusable])
    config = Config(
        base=base,
        runbook_paths=listing(merged["runbook_paths"]),
        evidence_dir=resolve(merged["evidence_dir"]),
        state_dir=resolve(merged["state_dir"]),
        kill_switch=resolve(merged["kill_switch"]),
        plugin_paths=listing(merged["plugin_paths"]),
        core=core,
        signing_key_env=str(merged["signing_key_env"]),
        signing_key=signing_key,
        source=source,
        serve=merged.get("serve"),
        triggers=merged.get("triggers"),
        templates_timeout_s=_template_limit(merged, "timeout"),
        templates_max_bytes=int(_template_limit(merged, "max_bytes")),
        approvals_require_signature=bool((merged.get("approvals") or {}).get("require_signature", False)),
        approval_keys=approval_keys,
    )
    return config


def _approval_problems(value: Any, resolve: Any, source: Path) -> list[Problem]:
    """Located problems of the `approvals:` block: its shape, and every approver key an Ed25519 public key."""
    doc = load_file(source)
    expected = "expected {require_signature: BOOL, keys: {NAME: PUBLIC_KEY_PATH}}"
    if not isinstance(value, dict) or not set(value) <= {"require_signature", "keys"}:
        return [doc.problem(("approvals",), f"approvals: {expected}, got {value!r}")]
    out = []
    if not isinstance(value.get("require_signature", False), bool):
        out.append(doc.problem(("approvals", "require_signature"),
                               f"approvals.require_signature: expected true or false, got {value['require_signature']!r}"))
    raw_keys = value.get("keys", {})
    if not isinstance(raw_keys, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw_keys.items()):
        return [*out, doc.problem(("approvals", "keys") if "keys" in value else ("approvals",),
                                  f"approvals.keys: expected a mapping of approver name to public key path "
                                  f"(the .pub of `runbook keys generate`), got {raw_keys!r}")]
    if value.get("require_signature") and not raw_keys:
        out.append(doc.problem(("approvals", "require_signature"),
                               "approvals.require_signature: true needs approvals.keys (approver name: public key path)"))

    for name, path in raw_keys.items():
        try:
            load_public(resolve(path))
        except UsageError as exc:
            out.append(doc.problem(("approvals", "keys", name), f"approvals.keys.{name}: {str(exc).removeprefix('--key ')}"))
    return out


def _template_limit(merged: dict[str, Any], key: str) -> float:
    value = {**DEFAULTS["templates"], **(merged.get("templates") or {})}[key]
    return parse_duration(value) if key == "timeout" else float(value)


def _unusable_directory(key: str, path: Path) -> str | None:
    """Why `path` cannot be used as a directory (a file stands where it or a parent should be), or None."""
    expected = "(expected a directory, or a path where one can be made)"
    if "\0" in str(path):
        return f"{key}: {str(path)!r} contains a NUL character {expected}"
    try:
        for candidate in (path, *path.parents):
            if candidate.exists():
                if not candidate.is_dir():
                    where = "" if candidate == path else f" ({candidate} is a file)"
                    return f"{key}: {path} is not a directory{where} {expected}"
                if candidate != path and not os.access(candidate, os.W_OK | os.X_OK):
                    return f"{key}: {path} cannot be made ({candidate} is not writable) {expected}"
                return None
    except (OSError, ValueError) as exc:
        return f"{key}: {str(path)!r} is not a usable path ({exc}) {expected}"
    return None


def _setting_problem(source: Path | None, path: Path, key: str, message: str) -> Problem:
    if source is None:
        return Problem(str(path), None, None, None, f"{message}; it is the default: set {key} in runbook.yaml")

    doc = load_file(source)
    line, col = doc.where((key,)) if key in (doc.data or {}) else (None, None)
    return Problem(str(source), line, col, None, message)
