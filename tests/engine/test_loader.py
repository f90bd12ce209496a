"""The loader (engine.loader.load_text): YAML 1.2 meaning, duplicate keys, positions, never a crash."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InvalidRunbook, Problem
from engine.loader import Document, load_text


def value_of(scalar: str) -> Any:
    """What `key: SCALAR` loads as."""
    return load_text(f"key: {scalar}\n").data["key"]


@pytest.mark.parametrize(("scalar", "expected"), [
    ("NO", "NO"), ("no", "no"), ("off", "off"), ("On", "On"), ("yes", "yes"), ("y", "y"),
    ("12:30:00", "12:30:00"), ("2024-01-01", "2024-01-01"), ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z"),
    ("1_000", "1_000"), ("0b101", "0b101"),
    ("0x1F", 31), ("0o17", 15), ("017", 17), ("-5", -5), ("+1", 1),
    ("1e3", 1000.0), ("1.5", 1.5), (".5", 0.5),
    ("~", None), ("null", None), ("", None),
    ("true", True), ("False", False),
    ("'NO'", "NO"), ('"0x1F"', "0x1F"),
])
def test_plain_scalars_keep_their_yaml_1_2_meaning(scalar: str, expected: Any) -> None:
    """Values YAML 1.1 would turn into booleans, times or dates stay strings; numbers are YAML 1.2 numbers."""
    got = value_of(scalar)
    assert got == expected and type(got) is type(expected)


def test_special_floats() -> None:
    """`.inf`, `-.inf` and `.nan` are the IEEE values."""
    assert value_of(".inf") == math.inf
    assert value_of("-.inf") == -math.inf
    assert math.isnan(value_of(".nan"))


def test_explicit_str_tag_keeps_a_string() -> None:
    """`!!str 1` is the string "1"."""
    assert value_of("!!str 1") == "1"
    assert value_of("!!str") == ""


@pytest.mark.parametrize(("text", "message"), [
    ("key: !!python/object:os.system x\n", "unsupported YAML tag"),
    ("key: !!binary aGk=\n", "unsupported YAML tag"),
    ("key: !custom x\n", "unsupported YAML tag"),
    ("key: !!int 08\n", "'08' is not a valid int"),
    ("key: !!bool yes\n", "'yes' is not a valid bool"),
    ("? [1, 2]\n: x\n", "mapping keys must be plain scalars"),
])
def test_unsafe_or_unknown_tags_are_located_problems(text: str, message: str) -> None:
    """Tags other than plain values are refused with a located problem (never constructed)."""
    with pytest.raises(InvalidRunbook) as caught:
        load_text(text, "f.yaml")
    problem = caught.value.problems[0]
    assert message in problem.message
    assert problem.line == 1 and problem.col is not None


def test_merge_keys_are_refused() -> None:
    """`<<: *base` is refused (expected plain keys)."""
    with pytest.raises(InvalidRunbook, match="merge keys"):
        load_text("base: &b {a: 1}\nother:\n  <<: *b\n")


@pytest.mark.parametrize(("text", "line", "col", "first"), [
    ("a: 1\nb: 2\na: 3\n", 3, 1, 1),
    ("steps:\n  - id: x\n    check: noop\n    check: shell\n", 4, 5, 3),
    ("top:\n  inner:\n    k: 1\n    k: 2\n", 4, 5, 3),
])
def test_duplicate_keys_are_located_errors(text: str, line: int, col: int, first: int) -> None:
    """A key given twice in one mapping: an error at the second, naming the first line."""
    with pytest.raises(InvalidRunbook) as caught:
        load_text(text, "f.yaml")
    [problem] = caught.value.problems
    assert (problem.path, problem.line, problem.col) == ("f.yaml", line, col)
    assert f"duplicate key '{text.splitlines()[line - 1].split(':')[0].strip()}'" in problem.message
    assert f"(first at line {first})" in problem.message
    assert str(problem).startswith(f"f.yaml:{line}:{col}: ")


def test_every_duplicate_key_is_reported() -> None:
    """Two duplicate keys in different places: two problems."""
    with pytest.raises(InvalidRunbook) as caught:
        load_text("a: 1\na: 2\nb:\n  c: 1\n  c: 2\n")
    assert [(p.line, p.col) for p in caught.value.problems] == [(2, 1), (5, 3)]


def test_positions_of_values_and_sequence_items() -> None:
    """`where` gives the 1-based line and column of each node, or of its nearest ancestor."""
    doc = load_text("runbook: x\nsteps:\n  - id: first\n    check: noop\n  - id: second\n    with: {a: 1}\n")
    assert doc.where(("runbook",)) == (1, 10)
    assert doc.where(("steps", 0)) == (3, 5)
    assert doc.where(("steps", 1, "id")) == (5, 9)
    assert doc.where(("steps", 1, "with", "a")) == (6, 15)
    assert doc.where(("steps", 1, "with", "missing")) == (6, 11)


def test_syntax_errors_are_located() -> None:
    """A YAML syntax error names line and column; a tab is called out."""
    with pytest.raises(InvalidRunbook) as caught:
        load_text("a:\n\tb: 1\n", "f.yaml")
    [problem] = caught.value.problems
    assert (problem.line, problem.col) == (2, 1)
    assert "tab" in problem.message


def test_document_keeps_text_and_sha256() -> None:
    """The Document records the exact text and its sha256."""
    import hashlib

    text = "runbook: x  # comment\n"
    doc = load_text(text, "f.yaml")
    assert doc.text == text
    assert doc.sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_oversized_text_is_refused_before_parsing() -> None:
    """More than the size cap: one problem saying how big it is and what is allowed."""
    with pytest.raises(InvalidRunbook, match=r"bytes \(expected at most \d+ bytes"):
        load_text("a: 1\n" + "#" * (5 * 1024 * 1024))


def test_non_utf8_bytes_are_a_problem() -> None:
    """Bytes that are not UTF-8 give a problem, not a UnicodeDecodeError."""
    with pytest.raises(InvalidRunbook, match="not UTF-8"):
        load_text(b"a: \xff\xfe\n")


def outcome(text: str | bytes) -> Document | list[Problem]:
    """load_text's result: a Document, or the Problems of the InvalidRunbook it raised."""
    try:
        return load_text(text, "h.yaml")
    except InvalidRunbook as exc:
        return exc.problems


def assert_document_or_problem(result: Document | list[Problem]) -> None:
    """Either a Document or at least one Problem naming the file."""
    if isinstance(result, Document):
        return
    assert result, "InvalidRunbook without a Problem"
    for problem in result:
        assert isinstance(problem, Problem) and problem.path == "h.yaml" and problem.message


YAMLISH = st.text(alphabet=st.sampled_from(list("ab:-[]{}#&*!|>'\"\t\n ,?%@`~01.xyz<=")), max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), YAMLISH))
def test_arbitrary_text_gives_a_document_or_a_located_problem(text: str) -> None:
    """Any text: a Document or InvalidRunbook with a Problem, never another exception."""
    assert_document_or_problem(outcome(text))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_document_or_a_problem(raw: bytes) -> None:
    """Any bytes: a Document or InvalidRunbook, never another exception."""
    assert_document_or_problem(outcome(raw))


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=20))
STRUCTURES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(STRUCTURES)
def test_dumped_structures_load_back(value: Any) -> None:
    """Anything yaml.safe_dump writes loads back as a Document (strings stay strings)."""
    text = yaml.safe_dump({"root": value}, allow_unicode=True)
    result = outcome(text)
    assert_document_or_problem(result)
    if isinstance(result, Document):
        assert isinstance(result.data, dict) and "root" in result.data


WORDS = st.text(alphabet=st.characters(categories=["Lu", "Ll"]), max_size=12)
PLAIN = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), WORDS),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(WORDS, children, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(PLAIN)
def test_dumped_words_and_numbers_round_trip(value: Any) -> None:
    """Numbers, booleans, null and words (`NO`, `off`, `yes` among them) come back equal."""
    assert load_text(yaml.safe_dump({"root": value})).data == {"root": value}
