"""What the engine works out once per installation and keeps: beside its bytecode, else in the user's cache.

Entries are named by what they depend on (a hash of a schema, the installed distributions), so a
stale entry is never read; a place that cannot be read or written only costs the work again.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_places() -> list[Path]:
    """engine/__pycache__, then $XDG_CACHE_HOME/runbook-engine (default ~/.cache/runbook-engine)."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runbook-engine"
    return [Path(__file__).resolve().parent / "__pycache__", home]


def read_cached(name: str) -> bytes | None:
    """The entry `name` from the first place that holds it, or None."""
    for place in cache_places():
        try:
            return (place / name).read_bytes()
        except OSError:
            continue
    return None


def write_cached(name: str, data: bytes) -> None:
    """Store the entry `name` atomically in the first writable place (or nowhere, silently)."""
    for place in cache_places():
        try:
            place.mkdir(parents=True, exist_ok=True)
            tmp = place / f".{name}.{os.getpid()}"
            tmp.write_bytes(data)
            os.replace(tmp, place / name)
            return
        except OSError:
            continue


def writable_place() -> Path | None:
    """The first place the engine can write to, for libraries that manage their own files (Jinja's bytecode cache)."""
    for place in cache_places():
        try:
            place.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(place, os.W_OK):
            return place
    return None
