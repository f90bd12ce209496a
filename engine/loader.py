"""YAML -> plain values with the position of every node; YAML 1.2 scalar meaning.

PyYAML resolves plain scalars by YAML 1.1 rules (`NO` -> False, `12:30:00`
-> 45000, `2024-01-01` -> date). The loader composes the node tree with no
implicit resolvers and resolves plain scalars itself by the YAML 1.2 core
schema, so `NO` stays the string "NO". Duplicate keys are an error.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import InvalidRunbook, Problem

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NODES = 100_000
MAX_EXPANDED_BYTES = MAX_FILE_BYTES
MAX_DEPTH = 100
_PRESCAN_ABOVE_BYTES = 64 * 1024
_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}

Key = tuple[str | int, ...]

_NULL = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_INT = re.compile(r"^[-+]?[0-9]+$")
_OCT = re.compile(r"^0o[0-7]+$")
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(inf|Inf|INF)$")
_NAN = re.compile(r"^\.(nan|NaN|NAN)$")
_NUMBER_START = frozenset("+-.0123456789")  # what each pattern above can begin with

_TAG = "tag:yaml.org,2002:"
_PLAIN = "tag:runbook-engine,2026:plain"


@dataclass
class Document:
    """A loaded YAML file: its data, where each node was, and the file's sha256."""

    path: str
    data: Any
    sha256: str
    text: str
    positions: dict[Key, tuple[int, int]] = field(default_factory=dict)

    def where(self, key: Key) -> tuple[int | None, int | None]:
        """Line and column (1-based) of the node at `key`, or of its nearest ancestor."""
        for n in range(len(key), -1, -1):
            found = self.positions.get(tuple(key[:n]))
            if found:
                return found
        return None, None

    def problem(self, key: Key, message: str, step: str | None = None) -> Problem:
        """A Problem located at `key`."""
        line, col = self.where(key)
        return Problem(self.path, line, col, step, message)


def load_file(path: str | Path) -> Document:
    """Read and parse one YAML file; InvalidRunbook (exit 20) with a located message if it cannot."""
    return load_text(read_bytes(path), str(path))


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a file; InvalidRunbook (exit 20) naming it if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidRunbook([Problem(str(path), None, None, None, f"cannot read file: {exc.strerror}")]) from None


def load_text(raw: bytes | str, path: str = "<string>", positions: bool = True) -> Document:
    """Parse YAML text into a Document; InvalidRunbook with a located message on any problem.

    Whatever the input, this takes time and memory in proportion to the file: aliases are
    counted as what they expand to and refused before anything is expanded. `positions=False`
    (a file already proven valid) leaves Document.positions empty, which makes loading cheaper.
    """
    data_bytes = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    digest = hashlib.sha256(data_bytes).hexdigest()
    if len(data_bytes) > MAX_FILE_BYTES:
        raise InvalidRunbook([Problem(path, 1, 1, None,
            f"file is {len(data_bytes)} bytes (expected at most {MAX_FILE_BYTES} bytes)")])
    text = _decode(data_bytes, path)
    doc = Document(path=path, data=None, sha256=digest, text=text)
    try:
        doc.data = _Reader(doc, len(text) > _PRESCAN_ABOVE_BYTES, positions).read(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        what = exc.problem or "invalid YAML"
        if mark and _tab_before(text, mark.line, mark.column):
            what += " (a tab: YAML must be indented with spaces)"
        context = f" {exc.context}" if exc.context else ""
        raise InvalidRunbook([Problem(path, line, col, None, f"YAML syntax error: {what}{context}")]) from None
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        raise InvalidRunbook([Problem(path, line, col, None,
            f"unacceptable character {_codepoint(exc.character)}: {exc.reason} (expected printable text)")]) from None
    except yaml.YAMLError as exc:
        raise InvalidRunbook([Problem(path, 1, 1, None, f"YAML error: {exc}")]) from None
    except RecursionError:
        raise InvalidRunbook([Problem(path, 1, 1, None, "YAML nested too deeply (expected a shallower document)")]) from None
    return doc


def _decode(data: bytes, path: str) -> str:
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            raise InvalidRunbook([Problem(path, 1, 1, None, f"file is {name} text (expected UTF-8)")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = len(data[data.rfind(b"\n", 0, exc.start) + 1:exc.start].decode("utf-8", "replace")) + 1
        raise InvalidRunbook([Problem(path, line, col, None,
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} (expected UTF-8; save the file as UTF-8)")]) from None


def _codepoint(character: Any) -> str:
    return f"#x{ord(character):04x}" if isinstance(character, str) else f"#x{character:04x}"


def _line_col(text: str, position: int) -> tuple[int, int]:
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


_Parser: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP, _SEQ, _STR, _MERGE = _TAG + "map", _TAG + "seq", _TAG + "str", _TAG + "merge"
_EXPLICIT: dict[str, Callable[[str], Any]] = {
    _TAG + "null": lambda v: None,
    _TAG + "bool": lambda v: _bool(v),
    _TAG + "int": lambda v: int(v, 0),
    _TAG + "float": float,
}
_Totals = tuple[int, int, int]


class _Frame:
    """A collection being built: its value, its path (None: not built), and for a mapping the key whose value
    comes next."""

    __slots__ = ("value", "path", "is_map", "expect_key", "name", "skip_value")

    def __init__(self, value: Any, path: Key | None, is_map: bool) -> None:
        self.value, self.path, self.is_map = value, path, is_map
        self.expect_key, self.name, self.skip_value = True, "", False


class _Reader:
    """One pass over the YAML event stream: counts nodes, checks anchors, depth and what aliases expand to,
    and builds the values with the position of every node.

    Each refusal is the one composing the node tree and walking it depth first (an alias counted as what
    it expands to) would find first. Building stops once the totals so far make a refusal certain, so
    aliases are expanded only while the whole document stays within MAX_NODES and MAX_EXPANDED_BYTES.
    Syntax and anchor errors come first, in stream order; in a file above _PRESCAN_ABOVE_BYTES the
    node count and the syntax of the whole stream are checked before anchor errors.
    """

    def __init__(self, doc: Document, big: bool, keep_positions: bool = True) -> None:
        self.path, self.big, self.positions, self.keep = doc.path, big, doc.positions, keep_positions
        self.problems: list[Problem] = []
        self.kept: list[Any] = []
        self.recording = 0
        self.anchor_mark: dict[str, Any] = {}
        self.anchor_start: dict[str, int] = {}
        self.anchor_end: dict[str, int] = {}
        self.anchor_totals: dict[str, _Totals] = {}
        self.open: list[tuple[Any, list[int]]] = []
        self.frames: list[_Frame] = []
        self.expanded = [0, 0]
        self.composer_error: yaml.MarkedYAMLError | None = None
        self.refusal: Problem | None = None
        self.building = True
        self.root: Any = None
        self.root_event: Any = None

    def read(self, text: str) -> Any:
        """The document's value; InvalidRunbook for a refusal or problems, a yaml error for bad syntax."""
        parser = _Parser(text)
        try:
            self._stream(parser.get_event)
        finally:
            parser.dispose()
        if self.composer_error is not None:
            raise self.composer_error
        if self.refusal is not None:
            raise InvalidRunbook([self.refusal])
        if self.problems:
            raise InvalidRunbook(self.problems)
        return self.root

    def _stream(self, get: Callable[[], Any]) -> None:
        kept, count, documents = self.kept, 0, 0
        scalar, mapping, sequence, alias = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.AliasEvent
        mapping_end, sequence_end = yaml.MappingEndEvent, yaml.SequenceEndEvent
        document, stream_end = yaml.DocumentStartEvent, yaml.StreamEndEvent
        opened, plain, close, node = self.open, self._plain, self._close, self._node
        while True:
            event = get()
            kind = type(event)
            if kind is scalar or kind is mapping or kind is sequence:
                count += 1
                if count > MAX_NODES and self.big:
                    mark = event.start_mark
                    raise InvalidRunbook([Problem(self.path, mark.line + 1, mark.column + 1, None,
                                                  f"more than {MAX_NODES} YAML nodes (expected a smaller document)")])
            elif kind is document:
                documents += 1
                if documents > 1 and self.composer_error is None:
                    self._composer(yaml.composer.ComposerError(
                        "expected a single document in the stream", self.root_event.start_mark,
                        "but found another document", event.start_mark))
                continue
            elif kind is stream_end:
                return
            elif kind is not alias and kind is not mapping_end and kind is not sequence_end:
                continue
            if self.composer_error is not None:
                continue
            if self.root_event is None:
                self.root_event = event
            if self.recording:
                kept.append(event)
            if kind is scalar and event.anchor is None and event.tag is None and self.building and opened:
                plain(event)
            elif kind is alias:
                self._alias(event)
            elif kind is mapping_end or kind is sequence_end:
                close()
            else:
                node(event, kind)

    def _composer(self, error: yaml.MarkedYAMLError) -> None:
        if not self.big:
            raise error
        self.composer_error = error
        self.building = False

    def _refuse(self, mark: Any, message: str) -> None:
        self.refusal = Problem(self.path, mark.line + 1, mark.column + 1, None, message)
        self.building = False

    def _count(self, totals: _Totals) -> None:
        expanded = self.expanded
        expanded[0] += totals[0]
        expanded[1] += totals[1]
        if expanded[0] > MAX_NODES or expanded[1] > MAX_EXPANDED_BYTES:
            self.building = False

    def _plain(self, event: Any) -> None:
        """An untagged scalar without an anchor inside a collection while building: what _node, _count and
        _build do for it, in one call (most events are these)."""
        value = event.value
        expanded, acc = self.expanded, self.open[-1][1]
        expanded[0] += 1
        expanded[1] += len(value)
        acc[0] += 1
        acc[1] += len(value)
        if acc[2] < 1:
            acc[2] = 1
        if expanded[0] > MAX_NODES or expanded[1] > MAX_EXPANDED_BYTES:
            self.building = False
            return
        top = self.frames[-1]
        path = top.path
        if path is None:
            return
        mark = event.start_mark
        if not top.is_map:
            if self.keep:
                self.positions.setdefault(path + (len(top.value),), (mark.line + 1, mark.column + 1))
            top.value.append(resolve_plain(value) if event.implicit[0] else value)
        elif top.expect_key:
            top.expect_key = False
            self._key(top, path, event, yaml.ScalarEvent)
        elif top.skip_value:
            top.expect_key, top.skip_value = True, False
        else:
            top.expect_key = True
            if self.keep:
                self.positions[path + (top.name,)] = (mark.line + 1, mark.column + 1)
            top.value[top.name] = resolve_plain(value) if event.implicit[0] else value

    def _node(self, event: Any, kind: type) -> None:
        anchor = event.anchor
        if anchor is not None:
            if anchor in self.anchor_mark:
                self._composer(yaml.composer.ComposerError("found duplicate anchor; first occurrence",
                                                           self.anchor_mark[anchor], "second occurrence",
                                                           event.start_mark))
                return
            self._keep(anchor, event)
        if kind is yaml.ScalarEvent:
            totals = (1, len(event.value), 1)
            if anchor is not None:
                self.anchor_totals[anchor] = totals
                self.anchor_end[anchor] = self.anchor_start[anchor]
                self.recording -= 1
            if self.refusal is None and self.open:
                self._count(totals)
                _add(self.open[-1][1], totals)
        elif self.refusal is None:
            self._count((1, 0, 0))
            self.open.append((event, [1, 0, 0]))
        if self.building:
            self._build(event, kind)

    def _keep(self, anchor: str, event: Any) -> None:
        """Keep the anchored node's events (until its end) for its aliases to build it again."""
        self.anchor_mark[anchor] = event.start_mark
        if not self.recording:
            self.kept.append(event)
        self.anchor_start[anchor] = len(self.kept) - 1
        self.recording += 1

    def _close(self) -> None:
        if self.building:
            self.frames.pop()
        if self.refusal is not None:
            return
        start, acc = self.open.pop()
        totals = (acc[0], acc[1], acc[2] + 1)
        if start.anchor is not None:
            self.anchor_totals[start.anchor] = totals
            self.anchor_end[start.anchor] = len(self.kept) - 1
            self.recording -= 1
        mark = start.start_mark
        if totals[2] > MAX_DEPTH:
            self._refuse(mark, f"nested more than {MAX_DEPTH} levels deep (expected a shallower document)")
        elif totals[0] > MAX_NODES:
            self._refuse(mark, f"aliases expand to more than {MAX_NODES} YAML nodes (expected a smaller document)")
        elif totals[1] > MAX_EXPANDED_BYTES:
            self._refuse(mark, f"aliases expand to more than {MAX_EXPANDED_BYTES} bytes of text "
                                f"(expected a smaller document)")
        elif self.open:
            _add(self.open[-1][1], totals)

    def _alias(self, event: Any) -> None:
        name = event.anchor
        if name not in self.anchor_mark:
            self._composer(yaml.composer.ComposerError(None, None, "found undefined alias", event.start_mark))
            return
        if self.refusal is not None:
            return
        totals = self.anchor_totals.get(name)
        if totals is None:
            self._refuse(self.anchor_mark[name], "an alias refers to its own anchor (expected a finite document)")
            return
        self._count(totals)
        _add(self.open[-1][1], totals)
        if self.building:
            self._replay(name)

    def _replay(self, name: str) -> None:
        """Build the anchored node again where its alias is (positions and problems are the anchor's)."""
        for event in self.kept[self.anchor_start[name]:self.anchor_end[name] + 1]:
            kind = type(event)
            if kind is yaml.AliasEvent:
                self._replay(event.anchor)
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                self.frames.pop()
            else:
                self._build(event, kind)

    def _build(self, event: Any, kind: type) -> None:
        frames = self.frames
        top = frames[-1] if frames else None
        if top is None:
            path: Key | None = ()
        elif top.path is None:
            path = None
        elif not top.is_map:
            path = top.path + (len(top.value),) if self.keep else ()
        elif top.expect_key:
            top.expect_key = False
            self._key(top, top.path, event, kind)
            path = None
        else:
            top.expect_key = True
            path = None if top.skip_value else top.path + (top.name,) if self.keep else ()
            top.skip_value = False
        if path is None:
            if kind is not yaml.ScalarEvent:
                frames.append(_Frame(None, None, False))
            return
        if self.keep:
            mark = event.start_mark
            where = (mark.line + 1, mark.column + 1)
            if top is not None and top.is_map:
                self.positions[path] = where
            else:
                self.positions.setdefault(path, where)
        frame: _Frame | None = None
        if kind is yaml.ScalarEvent:
            value = self._scalar(event)
        else:
            tag = event.tag
            if tag is None or tag == "!":
                tag = _MAP if kind is yaml.MappingStartEvent else _SEQ
            if tag == _MAP or tag == _SEQ:
                value = {} if kind is yaml.MappingStartEvent else []
                frame = _Frame(value, path, kind is yaml.MappingStartEvent)
            else:
                self._flag(event, f"unsupported YAML tag {tag} (expected plain mappings and lists)")
                value = None
                frame = _Frame(None, None, False)
        if top is None:
            self.root = value
        elif top.is_map:
            top.value[top.name] = value
        else:
            top.value.append(value)
        if frame is not None:
            frames.append(frame)

    def _key(self, top: _Frame, base: Key, event: Any, kind: type) -> None:
        if event.tag == _MERGE or (kind is yaml.ScalarEvent and event.value == "<<" and not event.style):
            self._flag(event, "YAML merge keys (<<) are not supported (expected plain keys)")
            top.skip_value = True
        elif kind is not yaml.ScalarEvent:
            self._flag(event, "mapping keys must be plain scalars")
            top.skip_value = True
        elif event.value in top.value:
            first = self.positions.get(base + (event.value,), ("?",))[0]
            self._flag(event, f"duplicate key '{event.value}' (first at line {first})")
            top.skip_value = True
        else:
            top.name = event.value
            if self.keep:
                mark = event.start_mark
                self.positions.setdefault(("__key__",) + base + (event.value,), (mark.line + 1, mark.column + 1))

    def _flag(self, event: Any, message: str) -> None:
        mark = event.start_mark
        self.problems.append(Problem(self.path, mark.line + 1, mark.column + 1, None, message))

    def _scalar(self, event: Any) -> Any:
        value, tag = event.value, event.tag
        if tag is None or tag == "!":
            return resolve_plain(value) if event.implicit[0] else value
        if tag == _PLAIN:
            return resolve_plain(value)
        if tag == _STR:
            return value
        explicit = _EXPLICIT.get(tag)
        if explicit is None:
            self._flag(event, f"unsupported YAML tag {tag} (expected plain values)")
            return None
        try:
            return explicit(value)
        except ValueError:
            self._flag(event, f"{value!r} is not a valid {tag.rsplit(':', 1)[-1]}")
            return None


def _add(acc: list[int], totals: _Totals) -> None:
    acc[0] += totals[0]
    acc[1] += totals[1]
    if totals[2] > acc[2]:
        acc[2] = totals[2]


def _tab_before(text: str, line: int, column: int) -> bool:
    lines = text.splitlines()
    return line < len(lines) and "\t" in lines[line][: column + 1]


def _bool(value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(value)


def resolve_plain(value: str) -> Any:
    """The YAML 1.2 core-schema meaning of a plain scalar."""
    if value in _NULL:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if value[:1] not in _NUMBER_START:
        return value
    if _INT.match(value):
        return int(value)
    if _OCT.match(value):
        return int(value[2:], 8)
    if _HEX.match(value):
        return int(value[2:], 16)
    if _FLOAT.match(value):
        return float(value)
    if _INF.match(value):
        return -math.inf if value.startswith("-") else math.inf
    if _NAN.match(value):
        return math.nan
    return value
