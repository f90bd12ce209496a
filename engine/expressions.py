"""The sandboxed Jinja2 environment: evaluate(expr, scope) and render(value, scope).

Expressions (`expect`, `if`, `when`, `until`, `for_each`) are bare Jinja2
expressions. Template values (`with`, `message`, `prompt`, `idempotency_key`)
are rendered; a value that is exactly one `{{ expr }}` keeps its native type.
Undefined names raise; so do blocked attributes. Every render is bounded in time
and size (engine.sandbox, SPEC 4.2). Sources are checked when parsed: size,
nesting and `_`-prefixed attributes are refused with a message, so `validate`
reports them located instead of a run failing (or the parser overflowing).
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from engine import sandbox
from engine.errors import ExpressionError

MAX_SOURCE_TOKENS = 20_000
MAX_TEMPLATE_TAGS = 2_000
MAX_BRACKET_DEPTH = 32
MAX_SYNTAX_DEPTH = 64

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)


def configure_limits(timeout_s: float, max_bytes: int) -> None:
    """Bound every later render: at most `timeout_s` seconds, no result or intermediate string over `max_bytes`."""
    sandbox.configure_limits(timeout_s, max_bytes)


def _now() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=1)
def environment() -> Any:
    """The one shared environment: immutable sandbox, strict undefined names, bounded in time and size.

    Jinja2 is imported here, on first use, so runs without templates start faster.
    """
    from jinja2 import StrictUndefined, nodes
    from jinja2.compiler import CodeGenerator, Frame
    from jinja2.sandbox import (
        ImmutableSandboxedEnvironment,
        SandboxedEscapeFormatter,
        SandboxedFormatter,
    )

    class BoundedCodeGenerator(CodeGenerator):
        """Loops iterate through `bounded_iter`; `~` joins through the checked `concat`."""

        loop_iterables: set[int]

        def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
            if id(node) not in getattr(self, "loop_iterables", ()):
                return super().visit(node, *args, **kwargs)
            self.write("environment.bounded_iter(")
            super().visit(node, *args, **kwargs)
            self.write(")")
            return None

        def visit_For(self, node: nodes.For, frame: Frame) -> None:
            if not hasattr(self, "loop_iterables"):
                self.loop_iterables = set()
            self.loop_iterables.add(id(node.iter))
            super().visit_For(node, frame)

        def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
            self.write("environment.concat((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class BoundedFormatting:
        total = 0

        def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
            self.total = len(format_string)
            return super().vformat(format_string, args, kwargs)  # type: ignore[misc, no-any-return]

        def format_field(self, value: Any, format_spec: str) -> Any:
            sandbox.tick()
            self.total += sandbox.format_field_size(value, format_spec)
            if self.total > sandbox.LIMITS.max_bytes:
                raise sandbox.too_large("the result of format()")
            return super().format_field(value, format_spec)  # type: ignore[misc]

    class BoundedFormatter(BoundedFormatting, SandboxedFormatter):
        pass

    class BoundedEscapeFormatter(BoundedFormatting, SandboxedEscapeFormatter):
        pass

    class RunbookEnvironment(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(sandbox.BINOPS)
        code_generator_class = BoundedCodeGenerator

        def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
            sandbox.tick()
            return sandbox.checked(sandbox.BINOPS[operator_name](left, right), f"the result of {operator_name}")

        def getattr(self, obj: Any, attribute: str) -> Any:
            """A mapping's keys come before its methods: `params.items` is the param named items."""
            sandbox.tick()
            if isinstance(obj, Mapping) and not isinstance(obj, str):
                try:
                    return obj[attribute]
                except (KeyError, TypeError):
                    pass
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            sandbox.tick()
            return super().getitem(obj, argument)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            from jinja2.exceptions import SecurityError

            sandbox.tick()
            if not __self.is_safe_callable(__obj):
                raise SecurityError(f"{__obj!r} is not safely callable")
            owner = getattr(__obj, "__self__", None)
            if isinstance(owner, (str, bytes, bytearray, int)):
                # Jinja passes its own scope to calls inside loops and blocks; Context.call drops it, so do we
                kwargs = {k: v for k, v in kwargs.items() if k not in ("_loop_vars", "_block_vars")}
                result = sandbox.checked_method_call(__obj, args, kwargs)
            else:
                result = __context.call(__obj, *args, **kwargs)
            return sandbox.checked(result, "the result of a call")

        def wrap_str_format(self, value: Any) -> Any:
            from markupsafe import Markup

            if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or \
                    value.__name__ not in ("format", "format_map") or not isinstance(value.__self__, str):
                return None
            owner: str = value.__self__
            formatter = BoundedEscapeFormatter(self, escape=owner.escape) if isinstance(owner, Markup) \
                else BoundedFormatter(self)
            is_map = value.__name__ == "format_map"

            def wrapper(*args: Any, **kwargs: Any) -> str:
                if is_map:
                    if kwargs or len(args) != 1:
                        raise TypeError("format_map() takes exactly one argument")
                    kwargs = dict(args[0])
                    args = ()
                return type(owner)(formatter.vformat(owner, args, kwargs))

            return functools.update_wrapper(wrapper, value)

    env = RunbookEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                             finalize=sandbox.bounded_finalize)
    env.concat = sandbox.bounded_concat  # type: ignore[method-assign]
    env.bounded_iter = sandbox.bounded_iter  # type: ignore[attr-defined]
    env.filters = {name: sandbox.bounded_filter(name, func) for name, func in env.filters.items()}
    env.globals["lipsum"] = sandbox.bounded_lipsum
    env.globals["now"] = _now
    return env


def _jinja_errors() -> tuple[type[Exception], ...]:
    from jinja2.exceptions import SecurityError, TemplateError

    return (TemplateError, SecurityError)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _parse(source: str, is_expression: bool) -> Any:
    """The syntax tree of a source whose size, nesting and attribute names are within bounds."""
    from jinja2 import TemplateError

    env = environment()
    tags = source.count("{{") + source.count("{%") if not is_expression else 1
    if tags > MAX_TEMPLATE_TAGS:
        raise ExpressionError(f"template has {tags} {{{{ }}}}/{{% %}} tags (expected at most {MAX_TEMPLATE_TAGS})")
    if len(source) > sandbox.LIMITS.max_bytes:
        raise ExpressionError(f"source is {len(source)} characters (expected at most {sandbox.LIMITS.max_bytes})")
    text = "{{ " + source + " }}" if is_expression else source
    try:
        _check_tokens(env, text)
        ast = env.parse(text)
    except TemplateError as exc:
        raise ExpressionError(f"syntax error: {exc}") from None
    except RecursionError:
        raise ExpressionError(f"nested too deeply (expected at most {MAX_SYNTAX_DEPTH} levels)") from None
    _check_tree(ast)
    return ast


def _check_tokens(env: Any, text: str) -> None:
    depth = count = 0
    for _, kind, value in env.lexer.tokeniter(text, None):
        count += 1
        if count > MAX_SOURCE_TOKENS:
            raise ExpressionError(f"more than {MAX_SOURCE_TOKENS} tokens (expected a shorter expression or template)")
        if kind == "operator" and value in "([{":
            depth += 1
            if depth > MAX_BRACKET_DEPTH:
                raise ExpressionError(f"brackets nested more than {MAX_BRACKET_DEPTH} levels deep")
        elif kind == "operator" and value in ")]}":
            depth -= 1


def _check_tree(ast: Any) -> None:
    from jinja2 import nodes

    stack = [(ast, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SYNTAX_DEPTH:
            raise ExpressionError(f"nested too deeply (expected at most {MAX_SYNTAX_DEPTH} levels)")
        private = _private_attribute(node, nodes)
        if private is not None:
            raise ExpressionError(f"attribute '{private}' starts with '_' (private attributes are not "
                                  f"accessible; expected a public name)")
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())


def _private_attribute(node: Any, nodes: Any) -> str | None:
    """The `_`-prefixed attribute `node` reads, if any: `x._y`, `x|attr('_y')`, `'{0._y}'.format(x)`."""
    if isinstance(node, (nodes.Getattr, nodes.NSRef)) and node.attr.startswith("_"):
        return str(node.attr)
    if isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
        arg = node.args[0]
        if isinstance(arg, nodes.Const) and isinstance(arg.value, str) and arg.value.startswith("_"):
            return arg.value
    if isinstance(node, nodes.Getattr) and node.attr in ("format", "format_map") and \
            isinstance(node.node, nodes.Const) and isinstance(node.node.value, str):
        return _private_format_field(node.node.value)
    return None


def _private_format_field(fmt: str) -> str | None:
    import string

    try:
        fields = [f for _, f, spec, _ in string.Formatter().parse(fmt) for f in (f, spec) if f]
    except ValueError:
        return None
    for field in fields:
        for match in re.finditer(r"\.(\w+)", field):
            if match.group(1).startswith("_"):
                return match.group(1)
    return None


@lru_cache(maxsize=4096)
def _compiled_expression(expr: str) -> Any:
    from jinja2 import TemplateError

    try:
        _parse(expr, True)
        return environment().compile_expression(expr, undefined_to_none=False)
    except ExpressionError as exc:
        raise ExpressionError(f"{exc} in `{_short(expr)}`", expression=expr) from None
    except TemplateError as exc:
        raise ExpressionError(f"syntax error in `{_short(expr)}`: {exc}", expression=expr) from None
    except (RecursionError, SyntaxError):
        raise ExpressionError(f"nested too deeply in `{_short(expr)}`", expression=expr) from None


@lru_cache(maxsize=4096)
def _compiled_template(text: str) -> Any:
    from jinja2 import TemplateError

    try:
        _parse(text, False)
        return environment().from_string(text)
    except ExpressionError as exc:
        raise ExpressionError(f"{exc} in template {_short(text)!r}", expression=text) from None
    except TemplateError as exc:
        raise ExpressionError(f"syntax error in template {_short(text)!r}: {exc}", expression=text) from None
    except (RecursionError, SyntaxError):
        raise ExpressionError(f"nested too deeply in template {_short(text)!r}", expression=text) from None


def _explain(exc: BaseException) -> str:
    from jinja2.exceptions import SecurityError

    if isinstance(exc, SecurityError):
        return f"blocked by the sandbox: {exc}"
    if isinstance(exc, sandbox.LimitExceeded):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "nested too deeply (recursion)"
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, _jinja_errors()):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def evaluate(expr: str, scope: Mapping[str, Any]) -> Any:
    """The value of a bare expression; ExpressionError if it is invalid, undefined, blocked or over its limits."""
    from jinja2 import Undefined

    with sandbox.budget():
        compiled = _compiled_expression(expr)
        try:
            value = compiled(**scope)
            if isinstance(value, Undefined):
                value._fail_with_undefined_error()
            sandbox.check_result(value, f"the value of `{_short(expr)}`")
        except ExpressionError:
            raise
        except (Exception, RecursionError, MemoryError) as exc:  # noqa: BLE001 - user code: a step failure
            raise ExpressionError(f"{_explain(exc)} in `{_short(expr)}`", expression=expr) from None
    return value


def is_template(value: Any) -> bool:
    """True for a string with Jinja2 markup."""
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """Render every template string inside `value` (mappings and lists recursively), within one time budget."""
    with sandbox.budget():
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
    template = _compiled_template(text)
    try:
        return _bounded_render(template, scope)
    except ExpressionError:
        raise
    except (Exception, RecursionError, MemoryError) as exc:  # noqa: BLE001 - user code: a step failure
        raise ExpressionError(f"{_explain(exc)} in template {_short(text)!r}", expression=text) from None


def _bounded_render(template: Any, scope: Mapping[str, Any]) -> str:
    parts: list[str] = []
    total = 0
    for chunk in template.generate(**scope):
        total += len(chunk)
        if total > sandbox.LIMITS.max_bytes:
            raise sandbox.too_large("the rendered template")
        parts.append(chunk)
    text = "".join(parts)
    sandbox.check_result(text, "the rendered template")
    return text


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
    if dotted is None or len(dotted) > MAX_TEMPLATE_TAGS or len(source) > sandbox.LIMITS.max_bytes:
        return None
    if any(d.split(".")[0] in _KEYWORDS or "._" in d for d in dotted):
        return None
    paths = [tuple(d.split(".")) for d in dotted if d.split(".")[0] not in _LITERALS]
    return frozenset(p[0] for p in paths), tuple(p for p in paths if len(p) > 1)


@lru_cache(maxsize=8192)
def _references(source: str, is_expression: bool) -> tuple[frozenset[str], tuple[tuple[str, ...], ...]]:
    plain = _plain_references(source, is_expression)
    if plain is not None:
        return plain
    from jinja2 import nodes

    ast = _parse(source, is_expression)
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
