"""Templates and expressions are bounded (SPEC 4.2, issue 8 item 11).

A render that runs past its time limit, or whose result or any intermediate
string would exceed the size limit, fails with a message naming the limit; it
is refused before the large value is allocated (the tests measure the peak
allocation). `validate` refuses `_` attributes statically, located.
"""

from __future__ import annotations

import re
import time
import tracemalloc
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from engine import sandbox
from engine.expressions import ExpressionError, configure_limits, evaluate, render

if TYPE_CHECKING:
    from tests.conftest import Workspace

PEAK_BYTES = 16 * 1024 * 1024

OVERSIZED: dict[str, str] = {
    "printf width": "{{ '%0999999999d' % 1 }}",
    "printf of a repeated argument": "{{ ('%s' * 1000) % (('x' * 100000,) * 1000) }}",
    "format width": "{{ '{:>1500000000}'.format(1) }}",
    "format precision": "{{ '{:.999999999f}'.format(1.5) }}",
    "format of many fields": "{{ ('{0}' * 100000).format('x' * 1000) }}",
    "format_map width": "{{ '{a:>999999999}'.format_map({'a': 1}) }}",
    "ljust": "{{ 'a'.ljust(10**9) }}",
    "rjust": "{{ 'a'.rjust(10**9) }}",
    "center": "{{ 'a'.center(10**9) }}",
    "zfill": "{{ '1'.zfill(10**9) }}",
    "expandtabs": "{{ ('\t' * 1000).expandtabs(100000) }}",
    "replace": "{{ ('a' * 1000).replace('', 'x' * 10000) }}",
    "str.join": "{{ ''.join(['x' * 1000000] * 1000) }}",
    "translate": "{{ ('a' * 1000).translate({97: 'x' * 100000}) }}",
    "int.to_bytes": "{{ (1).to_bytes(10**9, 'big') }}",
    "string times int": "{{ 'a' * 10**9 }}",
    "list times int": "{{ [1] * 10**9 }}",
    "string plus string": "{{ ('x' * 1000000) + ('x' * 1000000) }}",
    "tilde concatenation": "{{ ('x' * 1000000) ~ ('x' * 1000000) }}",
    "namespace doubling loop": ("{% set ns = namespace(s='x') %}{% for i in range(64) %}"
                                "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"),
    "integer squaring loop": ("{% set ns = namespace(n=3) %}{% for i in range(64) %}"
                              "{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n > 0 }}"),
    "recursive macro doubling": ("{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s | length }}{% endmacro %}"
                                 "{{ f('x', 64) }}"),
    "macro output buffer": ("{% set s = 'x' * 1000000 %}{% macro m() %}{% for i in range(100000) %}{{ s }}"
                            "{% endfor %}{% endmacro %}{{ m() | length }}"),
    "filter block buffer": ("{% set s = 'x' * 1000000 %}{% filter upper %}{% for i in range(100000) %}{{ s }}"
                            "{% endfor %}{% endfilter %}"),
    "center filter": "{{ 'a' | center(10**9) }}",
    "format filter": "{{ '%0999999999d' | format(1) }}",
    "indent filter": "{{ ('a\n' * 1000) | indent(100000) }}",
    "join filter": "{{ (['x' * 1000000] * 1000) | join }}",
    "replace filter": "{{ ('a' * 1000) | replace('a', 'x' * 100000) }}",
    "sum filter": "{{ ([[0] * 1000000] * 1000) | sum(start=[]) | length }}",
    "batch filter fill": "{{ [1] | batch(10**9, 0) | list }}",
    "slice filter": "{{ [1] | slice(10**9) | list }}",
    "shared items turned into text": "{{ dict.fromkeys(range(10000), 'x' * 1000000) | string }}",
    "shared items written out": "{{ dict.fromkeys(range(10000), 'x' * 1000000) }} and more",
    "shared items as json": "{{ (['x' * 1000000] * 1000) | tojson }}",
    "lipsum": "{{ lipsum(10**9) }}",
    "exponent": "{{ 2 ** 100000000 }}",
    "result over the limit": "{{ 'x' * 1000000 }}{{ 'x' * 1000000 }}",
}


@pytest.fixture(autouse=True)
def default_limits() -> Iterator[None]:
    """Every test starts and ends with the SPEC's limits (1 s, 1 MB)."""
    configure_limits(1.0, 1_048_576)
    yield
    configure_limits(1.0, 1_048_576)


@pytest.mark.parametrize("template", OVERSIZED.values(), ids=list(OVERSIZED))
def test_oversized_values_are_refused_before_they_are_allocated(template: str) -> None:
    """Each would need a gigabyte or more; each fails naming the size limit, allocating little."""
    tracemalloc.start()
    try:
        with pytest.raises(ExpressionError) as caught:
            render(template, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "1048576 bytes" in message or "bits" in message or "exponent" in message, message
    assert peak < PEAK_BYTES, f"peak allocation {peak} bytes"


@pytest.mark.parametrize("template", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}done",
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% if i > j %}{% endif %}{% endfor %}{% endfor %}",
    "{{ range(100000) | map('string') | map('string') | list | length }}{% for i in range(100000) %}"
    "{{ range(100000) | sort | first }}{% endfor %}",
    "{% macro f(n) %}{% for i in range(100000) %}{{ f(n - 1) if n else '' }}{% endfor %}{% endmacro %}{{ f(1) }}",
], ids=["empty nested loops", "nested loops writing nothing", "nested loops testing", "filters in a loop",
        "macro in a loop"])
def test_a_render_past_its_deadline_fails(template: str) -> None:
    """Work that would take hours stops at the time limit (here lowered to 50 ms) with a message naming it."""
    configure_limits(0.05, 1_048_576)
    with pytest.raises(ExpressionError, match=r"longer than 0\.05s .*templates\.timeout in runbook\.yaml"):
        render(template, {})


def test_expressions_have_the_same_bounds() -> None:
    """A bare expression (expect, when, if ...) is bounded like a template."""
    with pytest.raises(ExpressionError, match="templates.max_bytes"):
        evaluate("'a'.ljust(10**9) | length > 0", {})
    with pytest.raises(ExpressionError, match="templates.max_bytes"):
        evaluate("'{:>1500000000}'.format(1)", {})


def test_the_limits_can_be_changed() -> None:
    """configure_limits (runbook.yaml `templates:`) moves both bounds."""
    configure_limits(1.0, 100)
    with pytest.raises(ExpressionError, match="exceed 100 bytes"):
        render("{{ 'x' * 101 }}", {})
    assert render("{{ 'x' * 100 }}", {}) == "x" * 100
    configure_limits(1.0, 10_000_000)
    assert len(render("{{ 'x' * 5000000 }}", {})) == 5_000_000
    with pytest.raises(ValueError):
        configure_limits(0, 100)


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ 'abc' | upper }} {{ '%05d' % 3 }} {{ '{:>4}'.format(7) }} {{ 'a'.ljust(3, '.') }}", "ABC 00003    7 a.."),
    ("{% for i in range(3) %}{{ loop.index }}{% endfor %} {{ [1, 2] | join(',') }} {{ 'x' ~ 1 }}", "123 1,2 x1"),
    ("{% set ns = namespace(n=0) %}{% for i in range(1000) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
     "499500"),
    ("{{ ('a\tb').expandtabs(4) }} {{ 'a-b'.replace('-', '+') }} {{ [[1], [2]] | sum(start=[]) }}", "a   b a+b [1, 2]"),
    ("{{ params.items | tojson }} {{ ('x' * 1000000) | length }}", '[1, 2] 1000000'),
], ids=["formatting", "loops and joins", "namespace accumulation", "string methods", "large but allowed"])
def test_ordinary_templates_are_unaffected(template: str, expected: str) -> None:
    """The bounds do not change what ordinary templates render."""
    assert render(template, {"params": {"items": [1, 2]}}) == expected


def test_a_large_step_output_can_still_be_truncated() -> None:
    """Reading a large value is not an intermediate string: `result.stdout | truncate(200)` works."""
    big = "y" * 3_000_000
    assert render("{{ result.stdout | truncate(20) }}", {"result": {"stdout": big}}) == "y" * 17 + "..."
    assert evaluate("'y' in result.stdout", {"result": {"stdout": big}}) is True


def test_weight_counts_shared_items_every_time() -> None:
    """The size of a container as text counts an item each time it appears, and stops at the limit."""
    shared = ["x" * 1000] * 2000
    assert sandbox.weight(shared) > 1_048_576
    assert sandbox.weight(["x" * 10] * 3) < 100


# -- through the CLI -----------------------------------------------------------------------------------


def test_an_oversized_render_fails_its_step_and_routes_like_any_failure(ws: Workspace) -> None:
    """The step fails with a clear message; the next action does not run; exit 10 (failed check)."""
    ws.runbook("big", """
        runbook: big
        title: Big
        version: 1
        steps:
          - id: blow
            check: noop
            with: {value: "{{ '%0999999999d' % 1 }}"}
          - id: mark
            action: file.write
            with: {path: marker.txt, content: x}
    """)
    result = ws.cli("run", "big", "--no-input")
    assert result.code == 10, result.text
    assert "step 'blow' failed" in result.err
    assert "would exceed 1048576 bytes (the limit is templates.max_bytes in runbook.yaml)" in result.err
    assert "Traceback" not in result.text and "internal error" not in result.text
    assert not (ws.root / "marker.txt").exists()


def test_a_render_past_the_configured_deadline_fails_its_step(ws: Workspace) -> None:
    """runbook.yaml `templates: {timeout: ...}` is the deadline of every render."""
    ws.write("runbook.yaml", "templates: {timeout: 100ms, max_bytes: 1048576}\n")
    ws.runbook("slow", """
        runbook: slow
        title: Slow
        version: 1
        steps:
          - id: spin
            check: noop
            with: {value: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"}
    """)
    result = ws.cli("run", "slow", "--no-input")
    assert result.code == 10, result.text
    assert "step 'spin' failed" in result.err
    assert "longer than 0.1s (the limit is templates.timeout in runbook.yaml)" in result.err


def test_the_size_limit_comes_from_runbook_yaml(ws: Workspace) -> None:
    """`templates: {max_bytes: 64}` refuses a 65-byte value that the default would allow."""
    ws.write("runbook.yaml", "templates: {max_bytes: 64}\n")
    ws.runbook("small", """
        runbook: small
        title: Small
        version: 1
        steps:
          - id: fits
            check: noop
            with: {value: "{{ 'x' * 64 }}"}
          - id: over
            check: noop
            with: {value: "{{ 'x' * 65 }}"}
    """)
    result = ws.cli("run", "small", "--no-input")
    assert result.code == 10, result.text
    assert "step 'over' failed" in result.err and "exceed 64 bytes" in result.err


@pytest.mark.parametrize(("setting", "expected"), [
    ("templates: {timeout: fast}", "templates.timeout: bad duration 'fast'"),
    ("templates: {max_bytes: -1}", "templates.max_bytes: expected a positive integer, got -1"),
    ("templates: {max_size: 10}", "templates: expected {timeout: DURATION, max_bytes: INTEGER}"),
    ("templates: 5", "templates: expected {timeout: DURATION, max_bytes: INTEGER}"),
], ids=["bad timeout", "negative size", "unknown key", "not a mapping"])
def test_bad_template_settings_are_located_configuration_errors(ws: Workspace, setting: str, expected: str) -> None:
    """A bad `templates:` setting: exit 20, runbook.yaml:line:col and what was expected."""
    ws.write("runbook.yaml", f"kill_switch: KILL\n{setting}\n")
    result = ws.cli("validate")
    assert result.code == 20, result.text
    assert re.search(r"runbook\.yaml:2:\d+: ", result.err), result.err
    assert expected in result.err, result.err


PRIVATE: dict[str, tuple[str, str]] = {
    "dunder in a template": ("with: {value: \"{{ ''.__class__ }}\"}", "'__class__'"),
    "dunder chain in a template": ("with: {value: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"}", "'__"),
    "private name in an expression": ("expect: result._private == 1", "'_private'"),
    "attr filter": ("with: {value: \"{{ params|attr('__class__') }}\"}", "'__class__'"),
    "format field": ("with: {value: \"{{ '{0.__class__}'.format(1) }}\"}", "'__class__'"),
    "namespace attribute": ("with: {value: \"{% set ns = namespace() %}{% set ns._x = 1 %}\"}", "'_x'"),
    "param path": ("with: {value: \"{{ params.__class__ }}\"}", "'__class__'"),
    "in a when": ("when: \"steps.__init__ is defined\"", "'__init__'"),
}


@pytest.mark.parametrize("line", [v[0] for v in PRIVATE.values()], ids=list(PRIVATE))
def test_validate_refuses_private_attributes_located(ws: Workspace, line: str) -> None:
    """Any attribute whose name starts with `_` is refused by validate: exit 20, file:line:col, step, why."""
    name = PRIVATE[[k for k, v in PRIVATE.items() if v[0] == line][0]][1]
    ws.runbook("peek", f"""
        runbook: peek
        title: Peek
        version: 1
        description: Issue 8 item 11.
        source: SPEC 4.2
        steps:
          - id: look
            check: noop
            {line}
    """)
    for command in (["validate", "runbooks/peek.yaml"], ["run", "peek", "--no-input"]):
        result = ws.cli(*command)
        assert result.code == 20, result.text
        assert re.search(r"peek\.yaml:9:\d+: step 'look': ", result.err), result.err
        assert name in result.err and "starts with '_'" in result.err and "expected a public name" in result.err
    assert ws.evidence_dirs() == []


@pytest.mark.parametrize(("expect", "expected"), [
    ("(" * 10000 + "1" + ")" * 10000, "brackets nested more than 32 levels deep"),
    ("(" * 40 + "1" + ")" * 40, "brackets nested more than 32 levels deep"),
    ("not " * 5000 + "true", "nested too deeply"),
    (" + ".join(["1"] * 300), "nested too deeply"),
], ids=["10000 parentheses", "40 parentheses", "5000 nots", "300 additions"])
def test_deeply_nested_expressions_are_located_validation_errors(ws: Workspace, expect: str, expected: str) -> None:
    """Nesting that would overflow the parser or compiler: exit 20 located, no internal error."""
    ws.runbook("deep", f"""
        runbook: deep
        title: Deep
        version: 1
        description: Issue 8 item 11.
        source: SPEC 4.2
        steps:
          - id: x
            check: noop
            expect: "{expect}"
    """)
    for command in (["validate", "runbooks/deep.yaml"], ["run", "deep", "--no-input"]):
        result = ws.cli(*command)
        assert result.code == 20, result.text
        assert re.search(r"deep\.yaml:9:\d+: step 'x': expect: ", result.err), result.err
        assert expected in result.err, result.err
        assert "internal error" not in result.text


def test_method_calls_inside_loops_and_blocks_work() -> None:
    """Jinja hands calls inside a loop its loop scope; a bounded str method call must not see it."""
    from engine.expressions import render

    assert render("{% for x in 'a b'.split() %}{{ x.upper() }}{% endfor %}", {}) == "AB"
    assert render("{% for x in [1] %}{{ 'a,b'.split(',') | join('-') }}{% endfor %}", {}) == "a-b"


def test_a_render_that_waits_for_a_core_is_not_cut_short() -> None:
    """The limit is the render's CPU time: on a loaded machine a render waits for a core, and that wait
    (played here by a call that sleeps four times the limit) is not the template's work."""
    configure_limits(0.05, 1_048_576)
    assert render("{{ wait() or '' }}{% for i in range(100) %}{% endfor %}done", {"wait": lambda: time.sleep(0.2)}) == "done"
    with pytest.raises(ExpressionError, match=r"longer than 0\.05s"):  # CPU work past the limit still stops
        render("{{ wait() }}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
               {"wait": lambda: time.sleep(0.2)})
