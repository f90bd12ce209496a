"""The sandboxed Jinja2 environment: evaluate(expr, scope) and render(value, scope).

Expressions (`expect`, `if`, `when`, `until`, `for_each`) are bare Jinja2
expressions. Template values (`with`, `message`, `prompt`, `idempotency_key`)
are rendered; a value that is exactly one `{{ expr }}` keeps its native type.
Undefined names raise; so do blocked attributes and oversized results.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

MAX_RENDERED_CHARS = 1_000_000
MAX_POWER_EXPONENT = 1000

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)


class ExpressionError(Exception):
    """An expression or template could not be evaluated; the message says why."""


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _checked_mul(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
            if _size(seq) * count > MAX_RENDERED_CHARS:
                raise ExpressionError(f"result would exceed {MAX_RENDERED_CHARS} items")
    return operator.mul(left, right)


def _checked_pow(left: Any, right: Any) -> Any:
    if isinstance(right, (int, float)) and abs(right) > MAX_POWER_EXPONENT:
        raise ExpressionError(f"exponent {right} is too large (at most {MAX_POWER_EXPONENT})")
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() * right > 100_000:
        raise ExpressionError("result of ** would be too large")
    return operator.pow(left, right)


def _checked_add(left: Any, right: Any) -> Any:
    if _size(left) + _size(right) > MAX_RENDERED_CHARS:
        raise ExpressionError(f"result would exceed {MAX_RENDERED_CHARS} items")
    return operator.add(left, right)


_BINOPS = {"*": _checked_mul, "**": _checked_pow, "+": _checked_add}


def _now() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=1)
def environment() -> Any:
    """The one shared environment: immutable sandbox, strict undefined names, size-capped arithmetic.

    Jinja2 is imported here, on first use, so runs without templates start faster.
    """
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class RunbookEnvironment(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(_BINOPS)

        def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
            return _BINOPS[operator_name](left, right)

    env = RunbookEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.globals["now"] = _now
    return env


def _jinja_errors() -> tuple[type[Exception], ...]:
    from jinja2.exceptions import SecurityError, TemplateError

    return (TemplateError, SecurityError)


@lru_cache(maxsize=4096)
def _compiled_expression(expr: str) -> Any:
    try:
        return environment().compile_expression(expr, undefined_to_none=False)
    except _jinja_errors() as exc:
        raise ExpressionError(f"syntax error in `{expr}`: {exc}") from None


@lru_cache(maxsize=4096)
def _compiled_template(text: str) -> Any:
    try:
        return environment().from_string(text)
    except _jinja_errors() as exc:
        raise ExpressionError(f"syntax error in template {text!r}: {exc}") from None


def _explain(exc: Exception) -> str:
    from jinja2.exceptions import SecurityError

    if isinstance(exc, SecurityError):
        return f"blocked by the sandbox: {exc}"
    return str(exc) or type(exc).__name__


def evaluate(expr: str, scope: Mapping[str, Any]) -> Any:
    """The value of a bare expression; ExpressionError if it is invalid, undefined or blocked."""
    compiled = _compiled_expression(expr)
    from jinja2 import Undefined

    try:
        value = compiled(**scope)
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()
    except ExpressionError:
        raise
    except _jinja_errors() as exc:
        raise ExpressionError(f"{_explain(exc)} in `{expr}`") from None
    except Exception as exc:  # noqa: BLE001 - any error of user code in an expression is a step failure
        raise ExpressionError(f"{type(exc).__name__}: {exc} in `{expr}`") from None
    if _size(value) > MAX_RENDERED_CHARS:
        raise ExpressionError(f"value of `{expr}` exceeds {MAX_RENDERED_CHARS} items")
    return value


def is_template(value: Any) -> bool:
    """True for a string with Jinja2 markup."""
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """Render every template string inside `value` (mappings and lists recursively)."""
    if isinstance(value, str):
        return _render_string(value, scope) if is_template(value) else value
    if isinstance(value, Mapping):
        return {k: render(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, scope) for v in value]
    return value


def _render_string(text: str, scope: Mapping[str, Any]) -> Any:
    single = _SINGLE_EXPRESSION.match(text)
    if single:
        return evaluate(single.group("expr").strip(), scope)
    try:
        rendered = _bounded_render(_compiled_template(text), scope)
    except ExpressionError:
        raise
    except _jinja_errors() as exc:
        raise ExpressionError(f"{_explain(exc)} in template {text!r}") from None
    except Exception as exc:  # noqa: BLE001
        raise ExpressionError(f"{type(exc).__name__}: {exc} in template {text!r}") from None
    return rendered


def _bounded_render(template: Any, scope: Mapping[str, Any]) -> str:
    parts: list[str] = []
    total = 0
    for chunk in template.generate(**scope):
        total += len(chunk)
        if total > MAX_RENDERED_CHARS:
            raise ExpressionError(f"rendered template exceeds {MAX_RENDERED_CHARS} characters")
        parts.append(chunk)
    return "".join(parts)


def template_expressions(value: Any) -> list[str]:
    """The Jinja2 sources inside a template value, for static checks."""
    if isinstance(value, str):
        return [value] if is_template(value) else []
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in template_expressions(v)]
    if isinstance(value, list):
        return [s for v in value for s in template_expressions(v)]
    return []


_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_PLAIN_EXPRESSION = re.compile(rf"^\s*({_DOTTED})\s*$")
_PLAIN_TEMPLATE_PART = re.compile(rf"\{{\{{\s*({_DOTTED})\s*\}}\}}")
_LITERALS = {"true", "false", "none", "True", "False", "None"}
_KEYWORDS = {"and", "or", "not", "in", "is", "if", "else", "for", "recursive"}


def _plain_references(source: str, is_expression: bool) -> tuple[frozenset[str], tuple[tuple[str, ...], ...]] | None:
    """Names and paths of the common simple forms (`a.b.c`, `text {{ a.b }} text`) without parsing."""
    if is_expression:
        match = _PLAIN_EXPRESSION.match(source)
        dotted = [match.group(1)] if match else None
    elif "{%" in source or "{#" in source or source.count("{{") != len(_PLAIN_TEMPLATE_PART.findall(source)):
        dotted = None
    else:
        dotted = _PLAIN_TEMPLATE_PART.findall(source)
    if dotted is None or any(d.split(".")[0] in _KEYWORDS for d in dotted):
        return None
    paths = [tuple(d.split(".")) for d in dotted if d.split(".")[0] not in _LITERALS]
    return frozenset(p[0] for p in paths), tuple(p for p in paths if len(p) > 1)


@lru_cache(maxsize=8192)
def _references(source: str, is_expression: bool) -> tuple[frozenset[str], tuple[tuple[str, ...], ...]]:
    plain = _plain_references(source, is_expression)
    if plain is not None:
        return plain
    from jinja2 import TemplateError, nodes

    text = "{{ " + source + " }}" if is_expression else source
    try:
        ast = environment().parse(text)
    except TemplateError as exc:
        raise ExpressionError(f"syntax error: {exc}") from None
    env = environment()
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        known = env.filters if isinstance(node, nodes.Filter) else env.tests
        if node.name not in known:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            raise ExpressionError(f"unknown {kind} '{node.name}'")
    stored = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    free = frozenset(n.name for n in ast.find_all(nodes.Name) if n.ctx == "load" and n.name not in stored)
    paths = tuple(path for node in ast.find_all((nodes.Getattr, nodes.Getitem))
                  if (path := _dotted(node)) and path[0] in free)
    return free, paths


def references(source: str, *, is_expression: bool) -> tuple[set[str], list[tuple[str, ...]]]:
    """Free names of an expression or template, and the dotted paths it reads (`steps.x.ok`).

    Names bound inside the template (`{% for %}`, `{% set %}`) are not free. Raises
    ExpressionError on a syntax error.
    """
    free, paths = _references(source, is_expression)
    return set(free), list(paths)


def _dotted(node: Any) -> tuple[str, ...] | None:
    from jinja2 import nodes

    if isinstance(node, nodes.Name):
        return (node.name,)
    if isinstance(node, nodes.Getattr):
        inner = _dotted(node.node)
        return inner + (node.attr,) if inner else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        inner = _dotted(node.node)
        return inner + (node.arg.value,) if inner else None
    return None


def read_values(expr: str, scope: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the dotted paths an expression reads, for the evidence of a decision."""
    try:
        _, paths = references(expr, is_expression=True)
    except ExpressionError:
        return {}
    out: dict[str, Any] = {}
    for path in sorted(set(paths), key=len, reverse=True):
        name = ".".join(path)
        if any(other.startswith(name + ".") for other in out):
            continue
        value: Any = scope
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
        out[name] = value
    return out
