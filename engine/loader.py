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

_TAG = "tag:yaml.org,2002:"
_PLAIN = "tag:runbook-engine,2026:plain"


class _ComposeOnly(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Composes nodes without YAML 1.1 implicit typing (the loader resolves scalars itself)."""

    yaml_implicit_resolvers: dict[str, Any] = {}

    def resolve(self, kind: type, value: str | None, implicit: tuple[bool, bool]) -> str:
        """Untagged plain scalars get a private tag so an explicit `!!str` can be told apart."""
        if kind is yaml.ScalarNode and implicit[0]:
            return _PLAIN
        return str(super().resolve(kind, value, implicit))


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
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InvalidRunbook([Problem(str(p), None, None, None, f"cannot read file: {exc.strerror}")]) from None
    return load_text(raw, str(p))


def load_text(raw: bytes | str, path: str = "<string>") -> Document:
    """Parse YAML text into a Document; InvalidRunbook with a located message on any problem.

    Whatever the input, this takes time and memory in proportion to the file: aliases are
    counted as what they expand to and refused before anything is expanded.
    """
    data_bytes = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    digest = hashlib.sha256(data_bytes).hexdigest()
    if len(data_bytes) > MAX_FILE_BYTES:
        raise InvalidRunbook([Problem(path, 1, 1, None,
            f"file is {len(data_bytes)} bytes (expected at most {MAX_FILE_BYTES} bytes)")])
    text = _decode(data_bytes, path)
    try:
        if len(text) > _PRESCAN_ABOVE_BYTES:
            _count_events(text, path)
        node = yaml.compose(text, Loader=_ComposeOnly)
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
    doc = Document(path=path, data=None, sha256=digest, text=text)
    if node is None:
        return doc
    _check_expansion(node, path)
    builder = _Builder(doc)
    try:
        doc.data = builder.build(node, ())
    except RecursionError:
        raise InvalidRunbook([Problem(path, 1, 1, None, "YAML nested too deeply (expected a shallower document)")]) from None
    if builder.problems:
        raise InvalidRunbook(builder.problems)
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


def _count_events(text: str, path: str) -> None:
    """Refuse a document of more than MAX_NODES nodes before composing it."""
    count = 0
    for event in yaml.parse(text, Loader=_ComposeOnly):
        count += isinstance(event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent))
        if count > MAX_NODES:
            mark = event.start_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
            raise InvalidRunbook([Problem(path, line, col, None,
                f"more than {MAX_NODES} YAML nodes (expected a smaller document)")])


def _check_expansion(root: yaml.Node, path: str) -> None:
    """Refuse a document nested deeper than MAX_DEPTH, or whose aliases expand to more than MAX_NODES nodes
    or MAX_EXPANDED_BYTES of text.

    Each collection is visited once (aliases share their node), so this is linear in the file.
    """
    if isinstance(root, yaml.ScalarNode):
        return
    done: dict[int, tuple[int, int, int]] = {}
    open_nodes = {id(root)}
    # each frame: the collection, an iterator over its children, and [nodes, bytes, depth] so far
    stack: list[tuple[yaml.Node, Any, list[int]]] = [(root, iter(_children(root)), [1, 0, 0])]
    while stack:
        node, children, acc = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            open_nodes.discard(id(node))
            totals = (acc[0], acc[1], acc[2] + 1)
            done[id(node)] = totals
            if totals[2] > MAX_DEPTH:
                _refuse(path, node, f"nested more than {MAX_DEPTH} levels deep (expected a shallower document)")
            if totals[0] > MAX_NODES:
                _refuse(path, node, f"aliases expand to more than {MAX_NODES} YAML nodes (expected a smaller document)")
            if totals[1] > MAX_EXPANDED_BYTES:
                _refuse(path, node, f"aliases expand to more than {MAX_EXPANDED_BYTES} bytes of text "
                                    f"(expected a smaller document)")
            if stack:
                _add(stack[-1][2], totals)
        elif isinstance(child, yaml.ScalarNode):
            _add(acc, (1, len(child.value), 1))
        elif id(child) in done:
            _add(acc, done[id(child)])
        elif id(child) in open_nodes:
            _refuse(path, child, "an alias refers to its own anchor (expected a finite document)")
        else:
            open_nodes.add(id(child))
            stack.append((child, iter(_children(child)), [1, 0, 0]))


def _add(acc: list[int], totals: tuple[int, int, int]) -> None:
    acc[0] += totals[0]
    acc[1] += totals[1]
    acc[2] = max(acc[2], totals[2])


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _refuse(path: str, node: yaml.Node, message: str) -> None:
    raise InvalidRunbook([Problem(path, node.start_mark.line + 1, node.start_mark.column + 1, None, message)])


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []
        self.count = 0

    def build(self, node: yaml.Node, key: Key) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise InvalidRunbook([Problem(self.doc.path, node.start_mark.line + 1, node.start_mark.column + 1,
                None, f"more than {MAX_NODES} YAML nodes (alias expansion?)")])
        self.doc.positions.setdefault(key, (node.start_mark.line + 1, node.start_mark.column + 1))
        if not isinstance(node, yaml.ScalarNode) and node.tag not in (_TAG + "map", _TAG + "seq"):
            self._flag(node, f"unsupported YAML tag {node.tag} (expected plain mappings and lists)")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, key)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, key + (i,)) for i, child in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, key: Key) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge" or (isinstance(key_node, yaml.ScalarNode) and key_node.value == "<<" and not key_node.style):
                self._flag(key_node, "YAML merge keys (<<) are not supported (expected plain keys)")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._flag(key_node, "mapping keys must be plain scalars")
                continue
            name = key_node.value
            if name in out:
                self._flag(key_node, f"duplicate key '{name}' (first at line {self.doc.positions.get(key + (name,), ('?',))[0]})")
                continue
            self.doc.positions[key + (name,)] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
            self.doc.positions.setdefault(("__key__",) + key + (name,), (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
            out[name] = self.build(value_node, key + (name,))
        return out

    def _flag(self, node: yaml.Node, message: str) -> None:
        self.problems.append(Problem(self.doc.path, node.start_mark.line + 1, node.start_mark.column + 1, None, message))

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        value, tag = node.value, node.tag
        if tag == _PLAIN:
            return resolve_plain(value)
        if tag == _TAG + "str":
            return value
        explicit: Any = {
            _TAG + "null": lambda v: None,
            _TAG + "bool": lambda v: _bool(v),
            _TAG + "int": lambda v: int(v, 0),
            _TAG + "float": lambda v: float(v),
        }.get(tag)
        if explicit is None:
            self._flag(node, f"unsupported YAML tag {tag} (expected plain values)")
            return None
        try:
            return explicit(value)
        except ValueError:
            self._flag(node, f"{value!r} is not a valid {tag.rsplit(':', 1)[-1]}")
            return None


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
