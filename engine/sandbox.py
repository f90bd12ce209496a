"""The bounded Jinja2 sandbox: every render has a time budget and a size budget (SPEC 4.2).

Sizes are checked before anything large is allocated: every operation that can
make a string or a list much larger than its operands (`*`, `+`, `%`, `~`,
`str.format`, `ljust`, `join`, `replace`, the `center`/`indent`/`format`/`join`
filters, converting a container to text ...) first computes the size of its
result and refuses it when it would exceed the limit. Time is checked in every
call, attribute access, operator, filter and loop iteration, so a template that
loops without producing anything still stops at its deadline. The time is the render's CPU time
(its thread's), so a render that waits for a core on a loaded machine is not cut short.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

DEFAULT_TIMEOUT_S = 1.0
DEFAULT_MAX_BYTES = 1_048_576
MAX_POWER_EXPONENT = 1000
MAX_INT_BITS = 100_000


class LimitExceeded(Exception):
    """A render ran out of time or would have produced too large a value."""


@dataclass
class _Limits:
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_bytes: int = DEFAULT_MAX_BYTES


LIMITS = _Limits()


def configure_limits(timeout_s: float, max_bytes: int) -> None:
    """Set the time and size budget of every later render (runbook.yaml `templates:`)."""
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ValueError(f"templates.timeout must be a positive duration, got {timeout_s!r}")
    if not (isinstance(max_bytes, int) and max_bytes > 0):
        raise ValueError(f"templates.max_bytes must be a positive integer, got {max_bytes!r}")
    LIMITS.timeout_s = float(timeout_s)
    LIMITS.max_bytes = max_bytes


class _Budget(threading.local):
    deadline: float = math.inf
    started_cpu: float = 0.0
    depth: int = 0


_BUDGET = _Budget()


@contextmanager
def budget() -> Iterator[None]:
    """One render: the outermost entry starts the clock, nested entries share it."""
    if _BUDGET.depth == 0:
        _BUDGET.started_cpu = time.thread_time()
        _BUDGET.deadline = time.monotonic() + LIMITS.timeout_s
    _BUDGET.depth += 1
    try:
        yield
    finally:
        _BUDGET.depth -= 1
        if _BUDGET.depth == 0:
            _BUDGET.deadline = math.inf


def tick() -> None:
    """LimitExceeded once the current render has used its time: the CPU time of its thread, so that a loaded
    machine, where a render waits for a core, does not fail a template that does little (a wall-clock
    deadline is the cheap first test; the CPU clock is read only once it has passed)."""
    if time.monotonic() > _BUDGET.deadline:
        left = LIMITS.timeout_s - (time.thread_time() - _BUDGET.started_cpu)
        if left > 0:
            _BUDGET.deadline = time.monotonic() + left
            return
        raise LimitExceeded(f"render took longer than {_seconds(LIMITS.timeout_s)} "
                            f"(the limit is templates.timeout in runbook.yaml)")


def _seconds(value: float) -> str:
    return f"{value:g}s"


def too_large(what: str) -> LimitExceeded:
    """The error for a value over the size limit."""
    return LimitExceeded(f"{what} would exceed {LIMITS.max_bytes} bytes (the limit is templates.max_bytes in runbook.yaml)")


def _text_size(text: str | bytes | bytearray) -> int:
    if not isinstance(text, str) or text.isascii() or len(text) * 4 <= LIMITS.max_bytes:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def weight(value: Any, limit: int | None = None) -> int:
    """An upper bound of the size of `value` as text, counting shared items every time they appear.

    Stops counting once `limit` (default: the size limit) is passed, so it costs at most
    that many steps whatever the value.
    """
    limit = LIMITS.max_bytes if limit is None else limit
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes, bytearray)):
            total += _text_size(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, Mapping):
            total += 2 + len(item)
            for key, inner in item.items():
                stack.append(key)
                stack.append(inner)
                if total + len(stack) > limit:
                    return limit + 1
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + len(item)
            if total + len(item) > limit:
                return limit + 1
            stack.extend(item)
        else:
            total += 24
        if total > limit:
            return total
    return total


def _check(size: int, what: str) -> None:
    if size > LIMITS.max_bytes:
        raise too_large(what)


def check_result(value: Any, what: str = "the result") -> None:
    """LimitExceeded when `value` is larger than the size limit."""
    _check(_text_size(value) if isinstance(value, (str, bytes, bytearray)) else weight(value), what)


def _shallow(value: Any) -> int:
    if isinstance(value, (str, bytes, bytearray)):
        return _text_size(value)
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise LimitExceeded(f"integer of {value.bit_length()} bits is too large (at most {MAX_INT_BITS})")
    return 0


def checked(value: Any, what: str) -> Any:
    """`value`, after a deadline check and a check of its own size (not of what it contains)."""
    tick()
    _check(_shallow(value), what)
    return value


def _as_text_size(value: Any) -> int:
    """Size of str(value), without building it."""
    return _text_size(value) if isinstance(value, (str, bytes, bytearray)) else weight(value)


# -- operators -------------------------------------------------------------------------------


def _sized(value: Any) -> int:
    if isinstance(value, (str, bytes, bytearray)):
        return _text_size(value)
    if isinstance(value, (list, tuple)):
        return len(value)
    return 0


def _mul(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, (str, bytes, bytearray, list, tuple)) and isinstance(count, int):
            if count > 0 and _sized(seq) * count > LIMITS.max_bytes:
                raise too_large("the result of *")
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise LimitExceeded(f"the result of * would have more than {MAX_INT_BITS} bits")
    return left * right


def _pow(left: Any, right: Any) -> Any:
    if isinstance(right, (int, float)) and abs(right) > MAX_POWER_EXPONENT:
        raise LimitExceeded(f"exponent {right} is too large (at most {MAX_POWER_EXPONENT})")
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() * right > MAX_INT_BITS:
        raise LimitExceeded(f"the result of ** would have more than {MAX_INT_BITS} bits")
    return left**right


def _add(left: Any, right: Any) -> Any:
    if isinstance(left, (str, bytes, bytearray, list, tuple)) and _sized(left) + _sized(right) > LIMITS.max_bytes:
        raise too_large("the result of +")
    return left + right


def _mod(left: Any, right: Any) -> Any:
    if isinstance(left, (str, bytes, bytearray)):
        _check(percent_format_size(left, right), "the result of %")
    return left % right


_SIMPLE_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "-": lambda a, b: a - b,
    "/": lambda a, b: a / b,
    "//": lambda a, b: a // b,
}
BINOPS: dict[str, Callable[[Any, Any], Any]] = {"*": _mul, "**": _pow, "+": _add, "%": _mod, **_SIMPLE_BINOPS}

_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d*))?[hlL]?(?P<conv>.)", re.DOTALL)


def percent_format_size(fmt: str | bytes | bytearray, args: Any) -> int:
    """An upper bound of the size of `fmt % args` (printf-style formatting)."""
    text = fmt.decode("latin-1") if isinstance(fmt, (bytes, bytearray)) else fmt
    positional = list(args) if isinstance(args, tuple) else [args]
    mapping = args if isinstance(args, Mapping) else None
    total = _text_size(text)
    index = 0

    def take() -> Any:
        nonlocal index
        value = positional[index] if index < len(positional) else ""
        index += 1
        return value

    for match in _PERCENT_SPEC.finditer(text):
        if match.group("conv") == "%":
            continue
        width = match.group("width")
        prec = match.group("prec")
        width_n = _as_int(take()) if width == "*" else int(width or 0)
        prec_n = _as_int(take()) if prec == "*" else int(prec or 0)
        key = match.group("key")
        value = mapping.get(key, "") if mapping is not None and key is not None else take()
        conv = match.group("conv")
        if conv in "sra":
            size = _as_text_size(value) * (4 if conv in "ra" else 1)
        else:
            size = _number_size(value) + prec_n
        total += max(width_n, size) + 2
        if total > LIMITS.max_bytes:
            return total
    return total


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _number_size(value: Any) -> int:
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    return 400


_FORMAT_SPEC = re.compile(r"^(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<prec>\d+))?[a-zA-Z%]?$", re.DOTALL)


def format_field_size(value: Any, spec: str) -> int:
    """An upper bound of the size of `format(value, spec)`."""
    match = _FORMAT_SPEC.match(spec)
    width = int(match.group("width") or 0) if match else 0
    prec = int(match.group("prec") or 0) if match else 0
    size = _as_text_size(value) if isinstance(value, (str, bytes, list, tuple, dict, set)) else _number_size(value) + prec
    if match is None and len(spec) > 32:
        size = LIMITS.max_bytes + 1
    return max(width, size)


# -- methods and filters that can make large values from small ones -------------------------


def _kw(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _int_arg(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _replace_size(text: Any, old: Any, new: Any, count: Any) -> int:
    if not isinstance(text, (str, bytes, bytearray)) or not isinstance(old, type(text)) or not isinstance(new, (str, bytes, bytearray)):
        return 0
    found = len(text) + 1 if not old else text.count(old)  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return _text_size(text) + found * max(0, len(new) - len(old))


def _join_size(sep: Any, items: list[Any]) -> int:
    total = _sized(sep) * max(0, len(items) - 1)
    for item in items:
        total += _as_text_size(item)
        if total > LIMITS.max_bytes:
            break
    return total


def _materialize(items: Iterable[Any]) -> list[Any]:
    out = []
    for item in items:
        out.append(item)
        if len(out) % 256 == 0:
            tick()
        if len(out) > LIMITS.max_bytes:
            raise too_large("the sequence")
    return out


def _translate_size(text: Any, table: Any) -> int:
    longest = 1
    if isinstance(table, Mapping):
        longest = max([1, *(_sized(v) for v in table.values() if isinstance(v, (str, bytes)))])
    return _sized(text) * longest


def checked_method_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call a str/bytes/int method after checking the size of what it would return."""
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__name__", "")
    what = f"the result of {name}()"
    if isinstance(owner, (str, bytes, bytearray)):
        if name in ("ljust", "rjust", "center", "zfill"):
            _check(max(_int_arg(_kw(args, kwargs, 0, "width", 0)), _sized(owner)), what)
        elif name == "expandtabs":
            tabsize = _int_arg(_kw(args, kwargs, 0, "tabsize", 8))
            tab = "\t" if isinstance(owner, str) else b"\t"
            _check(_sized(owner) + owner.count(tab) * max(tabsize, 0), what)  # type: ignore[arg-type]
        elif name == "replace":
            _check(_replace_size(owner, _kw(args, kwargs, 0, "old", ""), _kw(args, kwargs, 1, "new", ""),
                                 _kw(args, kwargs, 2, "count", -1)), what)
        elif name == "join" and args:
            items = _materialize(args[0])
            _check(_join_size(owner, items), what)
            args = (items, *args[1:])
        elif name == "translate" and args:
            _check(_translate_size(owner, args[0]), what)
    elif isinstance(owner, int) and name == "to_bytes":
        _check(_int_arg(_kw(args, kwargs, 0, "length", 1)), what)
    return func(*args, **kwargs)


def _filter_check(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Pre-check the arguments of filter `name` (without its context argument); may materialize them."""
    value = args[0] if args else None
    what = f"the result of the {name} filter"
    if name == "center":
        _check(max(_int_arg(_kw(args, kwargs, 1, "width", 80)), _sized(value)), what)
    elif name == "indent":
        width = _kw(args, kwargs, 1, "width", 4)
        pad = _sized(width) if isinstance(width, str) else _int_arg(width)
        lines = value.count("\n") + 1 if isinstance(value, str) else 1
        _check(_as_text_size(value) + lines * pad, what)
    elif name == "wordwrap":
        width = max(_int_arg(_kw(args, kwargs, 1, "width", 79)), 1)
        wrap = _kw(args, kwargs, 3, "wrapstring", None)
        size = _as_text_size(value)
        _check(size + (size // width + (value.count("\n") if isinstance(value, str) else 0) + 1) * (_sized(wrap) or 1), what)
    elif name == "format":
        fmt_args = kwargs or tuple(args[1:])
        if isinstance(value, str):
            _check(percent_format_size(value, fmt_args), what)
    elif name == "replace":
        _check(_replace_size(value, _kw(args, kwargs, 1, "old", ""), _kw(args, kwargs, 2, "new", ""),
                             _kw(args, kwargs, 3, "count", None)), what)
    elif name == "join" and value is not None and not isinstance(value, str):
        items = _materialize(value)
        _check(_join_size(_kw(args, kwargs, 1, "d", ""), items), what)
        args = (items, *args[1:])
    elif name == "sum" and value is not None:
        items = _materialize(value)
        start = _kw(args, kwargs, 2, "start", 0)
        _check(_sized(start) + sum(_sized(i) for i in items), what)
        args = (items, *args[1:])
    elif name in ("batch", "slice"):
        count = _int_arg(_kw(args, kwargs, 1, "linecount" if name == "batch" else "slices", 1))
        if name == "slice" or _kw(args, kwargs, 2, "fill_with", None) is not None:
            _check(count, what)
    elif name == "urlize" and isinstance(value, str):
        extra = sum(_sized(kwargs.get(k) or "") for k in ("target", "rel")) + 64
        _check(_sized(value) + (value.count(" ") + value.count("\n") + 1) * extra, what)
    elif name in _STRINGIFYING and value is not None and not isinstance(value, (str, int, float)):
        _check(weight(value) * (6 if name in ("tojson", "pprint", "urlencode", "xmlattr") else 1), what)
    return args


_STRINGIFYING = {"string", "tojson", "pprint", "urlencode", "xmlattr", "escape", "e", "forceescape", "safe",
                 "title", "upper", "lower", "capitalize", "trim", "striptags", "wordcount", "truncate", "list"}


def bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` with a deadline check, argument pre-checks and a size check of its result."""
    from jinja2.utils import _PassArg

    passes_context = _PassArg.from_obj(func) is not None

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tick()
        head, rest = (args[:1], args[1:]) if passes_context else ((), args)
        rest = _filter_check(name, rest, kwargs)
        return checked(func(*head, *rest, **kwargs), f"the result of the {name} filter")

    return wrapper


def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:  # noqa: A002
    """Jinja2's lipsum, refused when it could exceed the size limit."""
    from jinja2.utils import generate_lorem_ipsum

    _check(_int_arg(n) * _int_arg(max) * 16, "the result of lipsum()")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def bounded_iter(iterable: Any) -> Iterator[Any]:
    """Iterate with a deadline check per item (the loops of `{% for %}`)."""
    tick()
    for item in iterable:
        tick()
        yield item


def bounded_concat(parts: Iterable[Any]) -> str:
    """`~` and buffered template output: the joined text, refused before joining when too large."""
    items = parts if isinstance(parts, (list, tuple)) else _materialize(parts)
    _check(_join_size("", list(items)), "the joined text")
    return "".join(map(str, items))


def bounded_finalize(value: Any) -> Any:
    """Every `{{ value }}` written into a template: refused before it is turned into text if too large."""
    tick()
    if not isinstance(value, str):
        _check(weight(value), "the value written into the template")
    return value
