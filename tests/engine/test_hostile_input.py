"""Hostile input (issue 16): no crash, no hang, every message about a file located.

Runbooks, params files and runbook.yaml come from many hands. Whatever their
shape (huge, deep, alias bombs, bad encodings, control characters, tags,
mutations of valid files), the engine answers with an exit code of SPEC 3 and
a `file:line:col` message saying what was expected, and executes nothing when
validation fails. Sizes are bounded before anything is expanded, so the big
cases are refused in time proportional to the file.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InvalidRunbook, Problem
from engine.loader import MAX_NODES, load_text
from engine.params import load_params_file, resolve_params
from engine.plugins import Registry, load_registry
from engine.validate import validate_document

if TYPE_CHECKING:
    from tests.conftest import Result, Workspace

REPO = Path(__file__).resolve().parents[2]
SPEC_EXIT_CODES = {0, 2, 10, 11, 12, 20, 30, 40, 50, 60}

HEAD = """\
runbook: hostile
title: Hostile input
version: 1
description: Issue 16.
source: issue 16
"""
MARK = """\
  - id: mark
    action: file.write
    with: {path: marker.txt, content: x}
"""


def runbook(params: str = "", steps: str = "") -> str:
    """A runbook whose first step writes marker.txt, with extra params and steps spliced in."""
    return HEAD + (f"params:\n{params}" if params else "") + "steps:\n" + MARK + steps


def laughs(indent: str, levels: int = 9) -> str:
    """Billion laughs: each level is nine aliases of the previous one (9**levels strings)."""
    lines = [f"{indent}l0: &l0 [lol]\n"]
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, levels + 1)]
    return "".join(lines)


BIG = "x" * 400_000


@dataclass
class Case:
    """A hostile runbook file and what the operator must be told about it."""

    data: bytes | str
    expected: str
    where: str = r"\d+:\d+"


CASES: dict[str, Case] = {
    "UTF-16 file": Case(runbook().encode("utf-16"), "file is UTF-16 text (expected UTF-8)", "1:1"),
    "latin-1 byte": Case(runbook().replace("Issue 16.", "Caf\xe9.").encode("latin-1"),
                         "not UTF-8 text: byte 0xe9 (expected UTF-8", "4:17"),
    "control character": Case(runbook().replace("Issue 16.", "Bell\x07."), "unacceptable character #x0007", "4:18"),
    "NUL byte": Case(runbook().replace("Issue 16.", "Nul\x00."), "unacceptable character #x0000", "4:17"),
    "billion laughs in a param default": Case(
        runbook(params="  p:\n    type: object\n    default:\n" + laughs("      ")),
        f"aliases expand to more than {MAX_NODES} YAML nodes"),
    "billion laughs in with": Case(
        runbook(steps="  - id: x\n    check: noop\n    with:\n      value:\n" + laughs("        ")),
        f"aliases expand to more than {MAX_NODES} YAML nodes"),
    "a 400 KB string aliased 2,500 times": Case(
        runbook(params=f"  p:\n    type: array\n    default: [&s {BIG}{', *s' * 2500}]\n"),
        "aliases expand to more than 4194304 bytes of text"),
    "nested 150 levels": Case(runbook(params="  p: {type: array, default: " + "[" * 150 + "]" * 150 + "}\n"),
                              "nested more than 100 levels deep (expected a shallower document)"),
    "self-referencing alias": Case(runbook(params="  p: &p {type: array, default: [*p]}\n"),
                                   "an alias refers to its own anchor"),
    "a million-node list just under 4 MB": Case(
        runbook(params=f"  p: {{type: array, default: [{'1, ' * 1_200_000}]}}\n"),
        f"more than {MAX_NODES} YAML nodes (expected a smaller document)"),
    "68,000 steps": Case(
        runbook(steps="".join(f"  - id: s{i}\n    check: noop\n" for i in range(68_000))),
        f"more than {MAX_NODES} YAML nodes"),
    "1,001 steps": Case(runbook(steps="".join(f"  - id: s{i}\n    check: noop\n" for i in range(1000))),
                        "1001 steps (expected at most 1000; split the procedure into runbooks joined by call steps)",
                        "2008:5"),
    "a 3.9 MB template of 280,000 tags": Case(
        runbook(params="  n: {type: integer, default: 1}\n",
                steps="  - id: x\n    check: noop\n    with: {value: \"" + "{{ params.n }}" * 280_000 + "\"}\n"),
        "template has 280000 {{ }}/{% %} tags (expected at most 2000)", "14:11"),
    "an expect of 10,000 parentheses": Case(
        runbook(steps="  - id: x\n    check: noop\n    expect: \"" + "(" * 10_000 + "1" + ")" * 10_000 + "\"\n"),
        "expect: brackets nested more than 32 levels deep", "12:13"),
    "a when of 5,000 nots": Case(
        runbook(steps="  - id: x\n    check: noop\n    when: \"" + "not " * 5000 + "true\"\n"),
        "when: nested too deeply", "12:11"),
    "python tag on a mapping": Case(
        runbook(steps="  - id: x\n    check: noop\n    with: !!python/object/apply:os.system [echo hi]\n"),
        "unsupported YAML tag tag:yaml.org,2002:python/object/apply:os.system (expected plain mappings and lists)",
        "12:11"),
    "set tag": Case(HEAD + "tags: !!set {a: null}\nsteps:\n" + MARK,
                    "unsupported YAML tag tag:yaml.org,2002:set", "6:7"),
    "fullwidth digits in a duration": Case(runbook(steps="  - id: x\n    check: noop\n    timeout: \"１０s\"\n"),
                                           "bad duration", "12:14"),
    "over 4 MB": Case(HEAD.replace("Issue 16.", "x" * 4_200_000) + "steps:\n" + MARK,
                      "bytes (expected at most 4194304 bytes)", "1:1"),
}


def assert_refused(ws: Workspace, result: Result, where: str, expected: str, name: str = "hostile.yaml") -> None:
    """Exit 20, a located message saying what was expected, no crash, nothing executed."""
    assert result.code == 20, result.text
    assert "internal error" not in result.text and "Traceback" not in result.text
    assert re.search(rf"{re.escape(name)}:{where}: ", result.err), result.err[:2000]
    assert expected in result.err, result.err[:2000]
    assert not (ws.root / "marker.txt").exists()


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_hostile_runbooks_are_refused_located_and_quickly(ws: Workspace, case: Case) -> None:
    """`validate` and `run` both refuse the file with a located message; nothing runs."""
    path = ws.root / "runbooks" / "hostile.yaml"
    path.write_bytes(case.data.encode("utf-8") if isinstance(case.data, str) else case.data)
    assert_refused(ws, ws.cli("validate", str(path)), case.where, case.expected)
    assert_refused(ws, ws.cli("run", str(path), "--no-input"), case.where, case.expected)
    assert ws.evidence_dirs() == []


def test_a_param_named_items_is_the_param(ws: Workspace) -> None:
    """`params.items` is the param called items, not the dict method (same for keys, values ...)."""
    ws.write("runbooks/items.yaml", HEAD.replace("hostile", "items") + (
        "params:\n"
        "  items: {type: string, default: apples}\n"
        "  keys: {type: string, default: k}\n"
        "steps:\n"
        "  - id: x\n"
        "    check: noop\n"
        "    with: {value: \"{{ params.items }}\"}\n"
        "    expect: result.value == 'apples' and params.keys == 'k'\n"))
    result = ws.cli("run", "items", "--no-input")
    assert result.code == 0, result.text


# -- params files and arguments ------------------------------------------------------------------


@pytest.fixture
def params_ws(ws: Workspace) -> Workspace:
    """A workspace with runbook `p` (integer param n) whose first step writes marker.txt."""
    ws.write("runbooks/p.yaml", HEAD.replace("hostile", "p") + "params:\n  n: {type: integer, default: 1}\nsteps:\n"
             + MARK)
    return ws


@pytest.mark.parametrize(("text", "where", "expected"), [
    ("n: 1\nm: abc\n", "2:1", "unknown param 'm' of runbook p (expected one of: n)"),
    ("n: abc\n", "1:4", "param 'n': 'abc' is not of type 'integer'"),
    ("n: 1\nzz: " + laughs("  ").replace("  l0", "\n  l0", 1), r"\d+:\d+", "aliases expand to more than"),
    (f"n: 1\nzz: [&s {BIG}{', *s' * 2500}]\n", r"2:\d+", "aliases expand to more than 4194304 bytes"),
    ("n: 1\nzz: " + "y" * 4_200_000 + "\n", "1:1", "bytes (expected at most 4194304 bytes)"),
    ("- n\n", "1:1", "params file must be a mapping of NAME: VALUE"),
    ("n: 1\x07\n", "1:5", "unacceptable character #x0007"),
], ids=["unknown key", "type error", "billion laughs", "aliased 400 KB string", "over 4 MB", "a list",
        "control character"])
def test_params_file_problems_are_located_in_the_params_file(params_ws: Workspace, text: str, where: str,
                                                              expected: str) -> None:
    """A params file is blamed by its own path, line and column; the runbook is not blamed; nothing runs."""
    params_ws.write("values.yaml", "")
    (params_ws.root / "values.yaml").write_text(text, encoding="utf-8")
    result = params_ws.cli("run", "p", "--params-file", "values.yaml", "--no-input")
    assert_refused(params_ws, result, where, expected, name="values.yaml")
    assert "a runbook" not in result.err and "p.yaml" not in result.err


def test_undecodable_bytes_in_arguments_are_refused(params_ws: Workspace) -> None:
    """Bytes that are not UTF-8: a bad --param exits 20, any other argument is a usage error (2)."""
    import os
    import subprocess

    from tests.conftest import RUNBOOK

    def run(*args: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([os.fsencode(RUNBOOK), *args], cwd=params_ws.root, capture_output=True,
                              env=params_ws.env(), timeout=60)

    bad_param = run(b"run", b"p", b"--param", b"n=\xff", b"--no-input")
    assert bad_param.returncode == 20, bad_param.stderr
    assert b"--param: n=\\xff: not valid UTF-8 (expected NAME=VALUE in UTF-8 text)" in bad_param.stderr
    bad_operator = run(b"run", b"p", b"--operator", b"\xff\xfe", b"--no-input")
    assert bad_operator.returncode == 2, bad_operator.stderr
    assert b"--operator \\xff\\xfe: not valid UTF-8" in bad_operator.stderr
    for proc in (bad_param, bad_operator):
        assert b"internal error" not in proc.stderr
    assert not (params_ws.root / "marker.txt").exists()


@pytest.mark.parametrize(("args", "code", "expected"), [
    (["--trigger", "[" * 5000 + "]" * 5000], 2, "--trigger: JSON nested more than 100 levels deep"),
    (["--trigger", "[" * 150 + "]" * 150], 2, "--trigger: JSON nested more than 100 levels deep"),
    (["--trigger", "{nope"], 2, "--trigger: not valid JSON"),
    (["--param", "n=１０"], 20, "--param: param 'n': '１０' is not valid (expected integer)"),
], ids=["trigger nested 5000 deep", "trigger nested 150 deep", "trigger not JSON", "fullwidth digits"])
def test_hostile_command_line_values(params_ws: Workspace, args: list[str], code: int, expected: str) -> None:
    """Command-line values that nest without end or only look like numbers: refused, named, nothing run."""
    result = params_ws.cli("run", "p", "--no-input", *args)
    assert result.code == code, result.text
    assert expected in result.err and "internal error" not in result.text
    assert not (params_ws.root / "marker.txt").exists()


PARAM_SCHEMAS: dict[str, tuple[str, str]] = {
    "invalid regex": ("  s: {type: string, default: a, pattern: '['}\n", "pattern: '[' is not a 'regex'"),
    "catastrophic regex": ("  s: {type: string, default: a, pattern: '(a+)+$'}\n",
                           "pattern '(a+)+$' repeats a repeated group, which can take exponential time"),
    "remote $ref": ("  s: {$ref: 'http://example.com/schema.json'}\n", "$ref is not supported in params"),
    "wrong keyword type": ("  s: {type: string, minLength: -1}\n", "(expected a valid JSON Schema)"),
}


@pytest.mark.parametrize("case", PARAM_SCHEMAS.values(), ids=list(PARAM_SCHEMAS))
def test_param_schemas_that_would_fail_at_run_time_are_refused_by_validate(ws: Workspace, case: tuple[str, str]) -> None:
    """A param schema that would crash, hang or fetch when values are checked: exit 20, located at the param."""
    ws.write("runbooks/hostile.yaml", runbook(params=case[0]))
    for command in (["validate", "runbooks/hostile.yaml"], ["run", "hostile", "--no-input", "--param", "s=" + "a" * 40 + "!"]):
        assert_refused(ws, ws.cli(*command), r"7:\d+", case[1])


def test_a_missing_param_is_located_at_its_declaration(ws: Workspace) -> None:
    """No value for a param without a default: the message points at the declaration and says how to give one."""
    ws.write("runbooks/hostile.yaml", runbook(params="  s: {type: string}\n"))
    result = ws.cli("run", "hostile", "--no-input")
    assert_refused(ws, result, "7:6", "missing required param 's' (expected --param s=VALUE or a value in --params-file)")


@pytest.mark.parametrize("name", ["**", "/", "[", "x" * 5000, "x" * 5000 + ".yaml", "../../etc/hosts"],
                         ids=["glob", "root", "bracket", "5000 characters", "5000-character path", "outside"])
def test_odd_runbook_names_are_unknown_runbooks(params_ws: Workspace, name: str) -> None:
    """A name that is a glob, a directory or too long for the file system: exit 20 naming it, no crash."""
    result = params_ws.cli("run", name, "--no-input")
    assert result.code == 20, result.text
    assert "no runbook named" in result.err and "internal error" not in result.text
    assert not (params_ws.root / "marker.txt").exists()


# -- runbook.yaml ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "where", "expected"), [
    ("kill_switch: K\n" + "x: " + laughs("  ").replace("  l0", "\n  l0", 1), r"\d+:\d+", "aliases expand"),
    ("state_dir: a_file\n", "1:12", "state_dir: {root}/a_file is not a directory (expected a directory"),
    ("evidence_dir: a_file/below\n", "1:15", "a_file is a file) (expected a directory"),
    ("kill_switch: K\x07\n", "1:15", "unacceptable character #x0007"),
    ('evidence_dir: "ev\\x00"\n', "1:15", "contains a NUL character (expected a directory"),
], ids=["billion laughs", "state_dir is a file", "evidence_dir under a file", "control character", "NUL in a path"])
def test_bad_runbook_yaml_is_a_located_configuration_error(params_ws: Workspace, config: str, where: str,
                                                           expected: str) -> None:
    """runbook.yaml problems: exit 20, runbook.yaml:line:col and what was expected, for every command."""
    (params_ws.root / "a_file").write_text("not a directory\n", encoding="utf-8")
    (params_ws.root / "runbook.yaml").write_text(config, encoding="utf-8")
    for command in (["validate"], ["run", "p", "--no-input"]):
        result = params_ws.cli(*command)
        assert_refused(params_ws, result, where, expected.format(root=params_ws.root), name="runbook.yaml")


# -- seeded corpus and properties (in-process, every input) -------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The built-in plugins."""
    return load_registry([])


def seeds() -> list[str]:
    """Valid runbooks of the library, the starting points of mutation."""
    names = ["examples/db-health.yaml", "examples/config-change.yaml", "xauusd/lock-stuck.yaml",
             "hyperliquid/entered-halt.yaml", "rebalance/monthly-rebalance-guard.yaml"]
    return [(REPO / "runbooks" / n).read_text(encoding="utf-8") for n in names if (REPO / "runbooks" / n).exists()]


SNIPPETS = ["&a [*a, *a]", "*nowhere", "!!set {a: null}", "!!python/name:os.system", "{{", "{% for %}",
            "((((((((", "\t", "\x00", "\x07", "\ufeff", "１０s", "~", "<<: *x", "? [a]\n: b", "- - -",
            "!!binary aGk=", "9" * 400, "'unterminated", '"\\x', "%YAML 1.1\n---", "...", "---\n---",
            "{{ ''.__class__ }}", "{{ 'a'.ljust(10**9) }}", "not " * 300, "[" * 500, "&b " + "*b " * 50,
            "\u202e", "\ud800", "key: value: other", "- id: x\n  check: noop", "on_fail: nowhere"]


def mutate(text: str, rng: random.Random) -> bytes:
    """One random edit of a valid runbook: a snippet, a cut, a dropped or repeated line, or a random byte."""
    choice = rng.randrange(6)
    lines = text.splitlines(keepends=True)
    if choice == 0:
        at = rng.randrange(len(text) + 1)
        out = text[:at] + rng.choice(SNIPPETS) + text[at:]
    elif choice == 1:
        out = text[:rng.randrange(len(text) + 1)]
    elif choice == 2 and lines:
        del lines[rng.randrange(len(lines))]
        out = "".join(lines)
    elif choice == 3 and lines:
        at = rng.randrange(len(lines))
        lines.insert(at, lines[at] * rng.randrange(1, 40))
        out = "".join(lines)
    elif choice == 4 and lines:
        at = rng.randrange(len(lines))
        lines[at] = " " * rng.randrange(0, 7) + lines[at].lstrip()
        out = "".join(lines)
    else:
        data = bytearray(text.encode("utf-8"))
        data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    return out.encode("utf-8", "surrogatepass")


def check_one(data: bytes, registry: Registry) -> list[Problem]:
    """Load and validate one input in-process: a runbook or located problems, never another exception."""
    try:
        doc = load_text(data, "input.yaml")
    except InvalidRunbook as exc:
        return exc.problems
    _, problems = validate_document(doc, registry)
    return problems


def assert_located(problems: list[Problem]) -> None:
    """Every problem names the file, a line and a column."""
    for problem in problems:
        assert problem.path == "input.yaml" and problem.line is not None and problem.col is not None, problem


def test_a_seeded_corpus_of_mutated_runbooks(registry: Registry) -> None:
    """300 mutations of valid runbooks: each is a runbook or located problems; no exception escapes."""
    rng = random.Random(16)
    texts = seeds()
    refused = 0
    for _ in range(300):
        problems = check_one(mutate(rng.choice(texts), rng), registry)
        assert_located(problems)
        refused += bool(problems)
    assert refused > 100


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_edit_of_a_valid_runbook_gives_a_runbook_or_located_problems(registry: Registry, data: Any) -> None:
    """Property: insert any text anywhere in a valid runbook; never a crash, always located problems."""
    text = data.draw(st.sampled_from(seeds()))
    at = data.draw(st.integers(0, len(text)))
    inserted = data.draw(st.one_of(st.text(max_size=40), st.sampled_from(SNIPPETS)))
    assert_located(check_one((text[:at] + inserted + text[at:]).encode("utf-8", "surrogatepass"), registry))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_runbook_or_located_problems(registry: Registry, data: bytes) -> None:
    """Property: arbitrary bytes never crash the loader or validator."""
    assert_located(check_one(HEAD.encode() + data, registry))


@dataclass
class _Runbook:
    """Just what resolve_params reads."""

    name: str = "p"
    path: Path = Path("p.yaml")
    params: dict[str, Any] = field(default_factory=lambda: {"n": {"type": "integer", "default": 1},
                                                             "s": {"type": "string", "default": "x"}})

    def param_defaults(self) -> dict[str, Any]:
        """Declared defaults."""
        return {k: v["default"] for k, v in self.params.items()}


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_any_params_file_gives_values_or_problems_located_in_it(tmp_path_factory: pytest.TempPathFactory,
                                                                text: str) -> None:
    """Property: a params file of any text resolves, or every problem is located in that file."""
    path = tmp_path_factory.mktemp("pf") / "values.yaml"
    path.write_bytes(("n: 1\n" + text).encode("utf-8", "surrogatepass"))
    try:
        resolve_params(_Runbook(), load_params_file(str(path)), {})  # type: ignore[arg-type]
    except InvalidRunbook as exc:
        for problem in exc.problems:
            assert problem.path == str(path) and problem.line is not None, problem


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_through_the_cli_a_mutated_runbook_is_run_only_if_valid(tmp_path_factory: pytest.TempPathFactory,
                                                                data: Any) -> None:
    """Property through the real CLI: exit codes of SPEC 3, no internal error, nothing run when invalid."""
    from tests.conftest import Workspace as CliWorkspace

    ws = CliWorkspace(tmp_path_factory.mktemp("cli"))
    text = runbook(params="  n: {type: integer, default: 1}\n",
                   steps="  - id: x\n    check: noop\n    with: {value: '{{ params.n }}'}\n    expect: result.value == 1\n")
    at = data.draw(st.integers(0, len(text)))
    mutated = text[:at] + data.draw(st.sampled_from(SNIPPETS)) + text[at:]
    (ws.root / "runbooks" / "hostile.yaml").write_bytes(mutated.encode("utf-8", "surrogatepass"))
    checked = ws.cli("validate", "runbooks/hostile.yaml")
    ran = ws.cli("run", "runbooks/hostile.yaml", "--no-input")
    for result in (checked, ran):
        assert result.code in SPEC_EXIT_CODES and "internal error" not in result.text, result.text
        for line in result.err.splitlines():
            if "hostile.yaml" in line and "evidence" not in line:
                assert re.search(r"hostile\.yaml:\d+:\d+: ", line), line
    if checked.code == 20:
        assert ran.code == 20 and not (ws.root / "marker.txt").exists(), ran.text
