"""The runbook library: finding runbook files by name under the configured paths."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InvalidRunbook, Problem

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}$")
_NAME_LINE = re.compile(r"^runbook:\s*['\"]?([A-Za-z0-9_-]+)['\"]?\s*(#.*)?$", re.MULTILINE)


@dataclass(frozen=True)
class Entry:
    """One runbook file and the name it declares."""

    name: str
    path: Path


class Library:
    """All `*.yaml` / `*.yml` runbook files under the configured paths."""

    def __init__(self, paths: tuple[Path, ...] | list[Path]) -> None:
        self.paths = tuple(paths)
        self._entries: list[Entry] | None = None

    def files(self) -> list[Path]:
        """Every runbook file, sorted."""
        found: list[Path] = []
        for root in self.paths:
            if root.is_file():
                found.append(root)
            elif root.is_dir():
                found.extend(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        return sorted(set(found))

    def entries(self) -> list[Entry]:
        """Name and path of every runbook file (name read from its `runbook:` line)."""
        if self._entries is None:
            self._entries = [Entry(_declared_name(p), p) for p in self.files()]
        return self._entries

    def names(self) -> set[str]:
        """Every declared runbook name."""
        return {e.name for e in self.entries()}

    def closest(self, name: str, count: int = 3) -> list[str]:
        """The declared names nearest to `name` (a typo's likely meaning), best first."""
        import difflib

        names = sorted(self.names())
        by_prefix = [n for n in names if name and (n.startswith(name) or name.startswith(n))]
        close = difflib.get_close_matches(name, names, n=count, cutoff=0.6)
        return list(dict.fromkeys(close + by_prefix))[:count]

    def find(self, name_or_path: str) -> Path:
        """The file of a runbook given its name, or a path to a file."""
        as_path = Path(name_or_path)
        if as_path.suffix in (".yaml", ".yml") and _is_file(as_path):
            return as_path.resolve()
        plain = _PLAIN_NAME.match(name_or_path) is not None
        for root in self.paths if plain else ():
            for candidate in (root.rglob(f"{name_or_path}.yaml") if root.is_dir() else []):
                if _declared_name(candidate) == name_or_path:
                    return candidate
        matches = [e.path for e in self.entries() if e.name == name_or_path]
        if not matches:
            searched = ", ".join(str(p) for p in self.paths) or "(no runbook paths)"
            close = self.closest(name_or_path)
            hint = f"did you mean {' or '.join(repr(n) for n in close)}? " if close else ""
            raise InvalidRunbook([Problem(name_or_path, None, None, None,
                f"no runbook named '{name_or_path}' ({hint}searched {searched}; `runbook list` shows the library)")])
        return matches[0]


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _declared_name(path: Path) -> str:
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:65536]
    except OSError:
        return path.stem
    match = _NAME_LINE.search(head)
    return match.group(1) if match else path.stem
