"""Everything that can be proven about a runbook before it runs -> a list of located Problems.

Schema, structure (one kind per step, unique ids, durations), graph (dangling
targets, unreachable steps, no path to an end, cycles nothing can leave; call
cycles with networkx), plugin params against each plugin's own JSON Schema, and
the names used in expressions and templates. A valid file is proven with
compiled fastjsonschema checks and plain graph walks; jsonschema is imported
only to word the errors of a file that fails (or for param schemas beyond the
simple keywords).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from engine.builder import build_runbook, step_kind
from engine.errors import ExpressionError, InvalidRunbook, Problem
from engine.expressions import is_template, references, template_expressions
from engine.fastcheck import compiled_check, proves_valid, schema_walk
from engine.library import Library
from engine.loader import Document, Key, load_file
from engine.model import (
    ActionStep,
    ApproveStep,
    CallStep,
    CheckStep,
    DecideStep,
    EndStep,
    Runbook,
    Step,
    WaitStep,
)
from engine.plugins import Registry
from engine.routing import END, successors
from engine.schema import DURATION, DURATION_OR_TEMPLATE, KIND_KEYS, RUNBOOK_SCHEMA, templated

MAX_STEPS = 1000
ROOT_NAMES = {"params", "env", "run", "steps", "trigger", "now"}
RUN_FIELDS = {"id", "mode", "runbook", "started_at", "operator"}
STEP_VIEW_FIELDS = {"status", "ok", "result", "attempts", "duration_s", "error"}
JINJA_GLOBALS = {"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "true", "false", "none"}


def validate_document(
    doc: Document, registry: Registry, library: Library | None = None
) -> tuple[Runbook | None, list[Problem]]:
    """The Runbook of a loaded file and every problem found in it (empty list = valid)."""
    data = doc.data
    if data is None:
        return None, [Problem(doc.path, 1, 1, None, "file is empty (expected a mapping with runbook, title, version, steps)")]
    if not isinstance(data, dict):
        return None, [doc.problem((), f"expected a mapping with runbook, title, version, steps, got {_type_name(data)}")]
    steps = data.get("steps")
    if isinstance(steps, list) and len(steps) > MAX_STEPS:
        return None, [doc.problem(("steps", MAX_STEPS), f"{len(steps)} steps (expected at most {MAX_STEPS}; "
                                                         f"split the procedure into runbooks joined by call steps)")]
    problems = _schema_problems(doc)
    problems += _structure_problems(doc)
    problems += _param_schema_problems(doc)
    if problems:
        return None, _sorted(problems + _partial_problems(doc, registry))
    runbook = build_runbook(data, doc.path, doc.sha256, doc.positions)
    problems += _graph_problems(doc, runbook)
    problems += _plugin_problems(doc, runbook, registry)
    problems += _name_problems(doc, runbook)
    if library is not None:
        problems += _call_problems(doc, runbook, library)
    return (None if problems else runbook), _sorted(problems)


def _partial_problems(doc: Document, registry: Registry) -> list[Problem]:
    """Plugin and name problems of the well-formed steps of a file that has schema problems elsewhere."""
    from jsonschema import Draft202012Validator

    data = doc.data
    steps = data.get("steps")
    placeholder = {**data, "steps": [{"id": "placeholder", "end": "SUCCESS"}]}
    if not isinstance(steps, list) or not _runbook_validator().is_valid(placeholder):
        return []
    step_validator = Draft202012Validator(RUNBOOK_SCHEMA["properties"]["steps"]["items"])
    good = [i for i, raw in enumerate(steps)
            if isinstance(raw, dict) and step_validator.is_valid(raw) and len(step_kind(raw)) == 1]
    if not good:
        return []
    ids = {raw["id"] for raw in steps if isinstance(raw, dict) and isinstance(raw.get("id"), str)}
    partial = build_runbook({**data, "steps": [steps[i] for i in good]}, doc.path, doc.sha256)
    return _plugin_problems(doc, partial, registry, good) + _name_problems(doc, partial, good, ids)


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(set(problems), key=lambda p: (p.line or 0, p.col or 0, p.message))


def _type_name(value: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)


def _step_id(doc: Document, path: Iterable[Any]) -> str | None:
    path = list(path)
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        steps = doc.data.get("steps") or []
        if path[1] < len(steps) and isinstance(steps[path[1]], dict):
            sid = steps[path[1]].get("id")
            return sid if isinstance(sid, str) else f"#{path[1] + 1}"
    return None


# -- schema -----------------------------------------------------------------

_VALIDATOR: Any = None


def _runbook_validator() -> Any:
    global _VALIDATOR
    if _VALIDATOR is None:
        from jsonschema import Draft202012Validator

        _VALIDATOR = Draft202012Validator(RUNBOOK_SCHEMA)
    return _VALIDATOR


_FAST_CHECK: Any = None


def _fast_valid(data: Any) -> bool:
    """A compiled (fastjsonschema) yes/no answer; jsonschema explains only when the answer is no."""
    global _FAST_CHECK
    if _FAST_CHECK is None:
        draft07 = {k: v for k, v in RUNBOOK_SCHEMA.items() if k != "$schema"}
        _FAST_CHECK = compiled_check(draft07)
    try:
        _FAST_CHECK(data)
    except Exception:  # noqa: BLE001 - any refusal: let jsonschema find and word every error
        return False
    return True


def _schema_problems(doc: Document) -> list[Problem]:
    if _fast_valid(doc.data):
        return []
    return [_schema_problem(doc, error, ()) for error in _runbook_validator().iter_errors(doc.data)]


def _schema_problem(doc: Document, error: Any, prefix: Key, step: str | None = None) -> Problem:
    path: Key = prefix + tuple(error.absolute_path)
    step = step or _step_id(doc, path)
    relative = list(error.absolute_path)
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        relative = list(path[2:])
    what = "/".join(str(p) for p in relative) or ("step" if step else "top level")
    validator, instance, schema = error.validator, error.instance, error.schema
    if validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extras = [k for k in instance if k not in schema.get("properties", {})]
        key = path + (extras[0],)
        line, col = doc.positions.get(("__key__",) + key) or doc.where(key)
        return Problem(doc.path, line, col, step,
                       f"unknown key '{extras[0]}' in {what} (expected one of: {', '.join(allowed)})")
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return doc.problem(path, f"missing required key '{missing}' in {what}", step)
    if validator == "type":
        expected = schema["type"] if isinstance(schema["type"], str) else " or ".join(schema["type"])
        return doc.problem(path, f"{what}: expected {expected}, got {_type_name(instance)}", step)
    if validator == "pattern" and schema.get("pattern") in (DURATION["pattern"], DURATION_OR_TEMPLATE["pattern"]):
        return doc.problem(path, f"{what}: bad duration {instance!r} (expected a number and a unit: 500ms, 30s, 5m, 1h)", step)
    if validator == "pattern":
        hint = schema.get("description") or f"matching {schema['pattern']}"
        return doc.problem(path, f"{what}: {instance!r} is not valid (expected {hint})", step)
    if validator == "enum":
        return doc.problem(path, f"{what}: {instance!r} is not valid (expected one of: {', '.join(map(str, schema['enum']))})", step)
    if validator == "oneOf" and path[-2:-1] == ("decide",):
        return doc.problem(path, f"{what}: expected {{if: EXPR, goto: ID}} or {{else: ID}}", step)
    return doc.problem(path, f"{what}: {error.message}", step)


# -- param schemas ------------------------------------------------------------

_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)(?:[+*]|\{\d*,)")


def _param_schema_problems(doc: Document) -> list[Problem]:
    """Each param's JSON Schema must be usable when the run's values are checked against it."""
    params = doc.data.get("params")
    if not isinstance(params, dict):
        return []
    meta: Any = None
    problems = []
    for name, schema in params.items():
        if not isinstance(schema, dict):
            continue
        key: Key = ("params", name)
        if not _simple_schema(schema):
            if meta is None:
                from jsonschema import Draft202012Validator

                meta = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
            for error in meta.iter_errors(schema):
                where = "/".join(str(p) for p in error.absolute_path) or "schema"
                problems.append(doc.problem(key + tuple(error.absolute_path),
                                            f"param '{name}': {where}: {_short(error.message)} (expected a valid JSON Schema)"))
        for path, kind, value in schema_walk(schema):
            if kind in ("$ref", "$dynamicRef"):
                problems.append(doc.problem(key + path, f"param '{name}': {kind} is not supported in params "
                                                        f"(expected an inline schema)"))
            elif kind == "pattern" and isinstance(value, str) and _NESTED_QUANTIFIER.search(value):
                problems.append(doc.problem(key + path, f"param '{name}': pattern {value!r} repeats a repeated group, "
                                                        f"which can take exponential time (expected a simpler pattern)"))
    return problems


_JSON_TYPES = {"string", "integer", "number", "boolean", "array", "object", "null"}
_NUMBER_KEYS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_COUNT_KEYS = {"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"}


def _simple_schema(schema: Any) -> bool:
    """True for a schema of the common keywords, each well-formed: valid against the 2020-12
    meta-schema without loading jsonschema. Anything else (False) goes to the meta-schema."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        if key == "type":
            types = [value] if isinstance(value, str) else value
            if not (isinstance(types, list) and types and len(set(map(str, types))) == len(types)
                    and all(isinstance(t, str) and t in _JSON_TYPES for t in types)):
                return False
        elif key in ("description", "title", "format", "$comment"):
            if not isinstance(value, str):
                return False
        elif key in ("default", "const"):
            continue
        elif key in ("enum", "examples"):
            if not isinstance(value, list):
                return False
        elif key in _NUMBER_KEYS or key == "multipleOf":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (key == "multipleOf" and value <= 0):
                return False
        elif key in _COUNT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return False
        elif key == "uniqueItems":
            if not isinstance(value, bool):
                return False
        elif key == "pattern":
            if not isinstance(value, str):
                return False
            try:
                re.compile(value)
            except re.error:
                return False
        elif key in ("items", "additionalProperties"):
            if not _simple_schema(value):
                return False
        elif key == "properties":
            if not isinstance(value, dict) or not all(_simple_schema(v) for v in value.values()):
                return False
        elif key == "required":
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value) and len(set(value)) == len(value)):
                return False
        else:
            return False
    return True


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


# -- structure ----------------------------------------------------------------


def _structure_problems(doc: Document) -> list[Problem]:
    problems: list[Problem] = []
    steps = doc.data.get("steps")
    if not isinstance(steps, list):
        return problems
    seen: dict[str, int] = {}
    for i, raw in enumerate(steps):
        if not isinstance(raw, dict):
            continue
        sid = raw.get("id") if isinstance(raw.get("id"), str) else None
        kinds = step_kind(raw)
        if len(kinds) != 1:
            found = f"found {', '.join(kinds)}" if kinds else "found none"
            problems.append(doc.problem(("steps", i), f"a step needs exactly one of {', '.join(KIND_KEYS)} ({found})", sid))
        if sid is not None:
            if sid in seen:
                problems.append(doc.problem(("steps", i, "id"), f"duplicate step id '{sid}' (first used by step #{seen[sid] + 1})", sid))
            seen.setdefault(sid, i)
        if "for_each" in raw and kinds and kinds[0] not in ("check", "action"):
            problems.append(doc.problem(("steps", i, "for_each"), f"for_each is not supported on a {kinds[0]} step (expected a check or action step)", sid))
        if kinds == ["end"] and any(k in raw for k in ("goto", "on_fail", "rollback", "retry", "for_each")):
            problems.append(doc.problem(("steps", i), "an end step cannot route, retry or loop (expected only end and message)", sid))
    return problems


# -- graph ------------------------------------------------------------------


def _graph_problems(doc: Document, runbook: Runbook) -> list[Problem]:
    """Dangling targets, unreachable steps, steps with no way to an end, cycles nothing can leave.

    Plain reachability and Tarjan's algorithm over a dict of successors: a valid file does not
    need networkx loaded (it stays for call cycles and `runbook graph`)."""
    problems: list[Problem] = []
    ids = {s.id for s in runbook.steps}
    index = {s.id: i for i, s in enumerate(runbook.steps)}
    graph: dict[str, list[str]] = {END: []}
    rollback_targets: set[str] = set()
    for step in runbook.steps:
        edges = graph.setdefault(step.id, [])
        targets: list[tuple[str, str]] = [("goto", step.goto or ""), ("on_fail", step.on_fail or ""), ("rollback", step.rollback or "")]
        if isinstance(step, DecideStep):
            targets += [("decide", b.goto) for b in step.branches]
        for field, target in targets:
            if target and target not in ids:
                key: Key = ("steps", index[step.id], field)
                problems.append(doc.problem(key, f"{field} target '{target}' is not a step id (expected one of: {', '.join(sorted(ids))})", step.id))
        if isinstance(step, ApproveStep):
            problems += _binds_problems(doc, runbook, step, index[step.id])
        if step.rollback:
            rollback_targets.add(step.rollback)
        for target in successors(runbook, step):
            if (target in ids or target == END) and target not in edges:
                edges.append(target)
    if problems:
        return problems
    first = runbook.steps[0].id
    reachable = _reach(graph, first)
    for step in runbook.steps:
        if step.id not in reachable and step.id not in rollback_targets:
            problems.append(doc.problem(("steps", index[step.id]), "unreachable step (no route leads here from the first step)", step.id))
    ends = {s.id for s in runbook.steps if isinstance(s, EndStep)} | {END}
    reverse: dict[str, list[str]] = {node: [] for node in graph}
    for node, targets_of in graph.items():
        for target in targets_of:
            reverse[target].append(node)
    can_end: set[str] = set()
    for end in ends:
        can_end |= _reach(reverse, end)
    for step in runbook.steps:
        if step.id in reachable and step.id not in can_end:
            problems.append(doc.problem(("steps", index[step.id]), "no end can be reached from this step (expected a route to an end step or past the last step)", step.id))
    for component in _strongly_connected(graph):
        if len(component) == 1 and next(iter(component)) not in graph[next(iter(component))]:
            continue
        if not _cycle_can_exit(runbook, component):
            members = sorted(component, key=index.__getitem__)
            problems.append(doc.problem(("steps", index[members[0]]),
                f"cycle {' -> '.join(members)} -> {members[0]} has no exit (expected a decide branch leaving it or a wait step in it)", members[0]))
    return problems


def _reach(graph: dict[str, list[str]], start: str) -> set[str]:
    """`start` and every node a path from it leads to."""
    seen = {start}
    stack = [start]
    while stack:
        for target in graph[stack.pop()]:
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def _strongly_connected(graph: dict[str, list[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively (a 1000-step chain must not recurse 1000 deep)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = graph[node]
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                out.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def _binds_problems(doc: Document, runbook: Runbook, step: ApproveStep, i: int) -> list[Problem]:
    """`approve.binds`: every id an action step of this runbook (its plan is what the approver sees)."""
    out = []
    actions = sorted(s.id for s in runbook.steps if isinstance(s, ActionStep))
    for n, target in enumerate(step.binds):
        if not any(s.id == target and isinstance(s, ActionStep) for s in runbook.steps):
            what = "is not a step id" if all(s.id != target for s in runbook.steps) else \
                f"is a {runbook.step(target).kind} step, not an action"
            out.append(doc.problem(("steps", i, "approve", "binds", n),
                                   f"approve.binds: '{target}' {what} (expected one of the actions: "
                                   f"{', '.join(actions) or 'none'})", step.id))
    return out


def _cycle_can_exit(runbook: Runbook, component: set[str]) -> bool:
    for sid in component:
        step = runbook.step(sid)
        if isinstance(step, WaitStep):
            return True
        if isinstance(step, DecideStep) and any(b.goto not in component for b in step.branches):
            return True
    return False


# -- plugins ----------------------------------------------------------------


def _plugin_problems(doc: Document, runbook: Runbook, registry: Registry,
                     indices: list[int] | None = None) -> list[Problem]:
    problems: list[Problem] = []
    unapproved: set[str] | None = None
    for n, step in enumerate(runbook.steps):
        i = indices[n] if indices else n
        if isinstance(step, (CheckStep, ActionStep, WaitStep)):
            kind = "action" if isinstance(step, ActionStep) else "check"
            key: Key = ("steps", i, "wait", "check") if isinstance(step, WaitStep) else ("steps", i, kind)
            params = step.plugin_with if isinstance(step, WaitStep) else step.with_
            with_key: Key = ("steps", i, "wait", "with") if isinstance(step, WaitStep) else ("steps", i, "with")
            if not registry.has(kind, step.plugin):
                other = "check" if kind == "action" else "action"
                hint = (f"'{step.plugin}' is {'an' if other == 'action' else 'a'} {other}: use `{other}: {step.plugin}`"
                        if registry.has(other, step.plugin) else f"expected one of: {', '.join(registry.names(kind))}")
                problems.append(doc.problem(key, f"unknown {kind} plugin '{step.plugin}' ({hint})", step.id))
                continue
            if not isinstance(params, dict):
                problems.append(doc.problem(with_key, f"with: expected a mapping, got {_type_name(params)}", step.id))
                continue
            problems += _params_problems(doc, registry.get(kind, step.plugin), params, with_key, step.id)
            releases = step.plugin == "killswitch.release" or (step.plugin == "core.kill_switch" and params.get("engage") is False)
            if kind == "action" and releases and indices is None:
                unapproved = _unapproved_reach(runbook) if unapproved is None else unapproved
            if kind == "action" and releases and indices is None and step.id in (unapproved or ()):
                problems.append(doc.problem(key, "killswitch.release must follow an approve step (expected an approve step on every route to it)", step.id))
    return problems


_PARAM_VALIDATORS: dict[str, Any] = {}


_SCHEMA_KEYS: dict[int, tuple[Any, Any, str]] = {}


def _schema_key(plugin: Any) -> str:
    """What the compiled checks of a plugin are cached under: its schema itself (an object's id is reused
    once the object is gone, so a new plugin could otherwise get another plugin's check). Worked out once
    per plugin and schema object: the entry holds both, so neither id can be reused while it is kept."""
    schema = getattr(plugin, "params_schema", {}) or {}
    known = _SCHEMA_KEYS.get(id(plugin))
    if known is not None and known[0] is plugin and known[1] is schema:
        return known[2]
    key = json.dumps(_plain(schema), sort_keys=True, default=repr)
    _SCHEMA_KEYS[id(plugin)] = (plugin, schema, key)
    return key


def _params_validator(plugin: Any) -> Any:
    key = _schema_key(plugin)
    if key not in _PARAM_VALIDATORS:
        from jsonschema import Draft202012Validator

        _PARAM_VALIDATORS[key] = Draft202012Validator(getattr(plugin, "params_schema", {}) or {})
    return _PARAM_VALIDATORS[key]


def _params_fast_valid(plugin: Any, params: dict[str, Any]) -> bool:
    """True when a compiled check proves `params` valid; False means: ask jsonschema (it words the errors)."""
    return proves_valid(_schema_key(plugin), lambda: _plain(getattr(plugin, "params_schema", {}) or {}), params)


def _templated_fast_valid(plugin: Any, params: dict[str, Any]) -> bool:
    """True when a compiled check proves `params` valid with each `{{ template }}` standing for whatever it
    renders to: every error jsonschema could find would touch a template, and those are not problems."""
    if not template_expressions(params):
        return False
    return proves_valid(f"templated {_schema_key(plugin)}",
                        lambda: templated(_plain(getattr(plugin, "params_schema", {}) or {})), params)


def _plain(value: Any) -> Any:
    """Mappings and sequences of a plugin's schema as dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _params_problems(doc: Document, plugin: Any, params: dict[str, Any], with_key: Key, step_id: str) -> list[Problem]:
    if _params_fast_valid(plugin, params) or _templated_fast_valid(plugin, params):
        return []
    validator = _params_validator(plugin)
    out = []
    for error in validator.iter_errors(params):
        if _touches_template(params, list(error.absolute_path), error):
            continue
        out.append(_schema_problem(doc, error, with_key, step_id))
    return out


def _touches_template(params: Any, path: list[Any], error: Any) -> bool:
    value = params
    for part in path:
        if is_template(value):
            return True
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return False
    return bool(template_expressions(value)) and error.validator not in ("additionalProperties", "required")


def _unapproved_reach(runbook: Runbook) -> set[str]:
    """The steps some route from the first step reaches without passing an approve step."""
    seen: set[str] = set()
    stack = [runbook.steps[0].id]
    while stack:
        sid = stack.pop()
        if sid in seen or sid == END:
            continue
        seen.add(sid)
        step = runbook.step(sid)
        if not isinstance(step, ApproveStep):
            stack.extend(successors(runbook, step))
    return seen


# -- names in expressions and templates ---------------------------------------


def _name_problems(doc: Document, runbook: Runbook, indices: list[int] | None = None,
                   all_ids: set[str] | None = None) -> list[Problem]:
    problems: list[Problem] = []
    ids = all_ids if all_ids is not None else {s.id for s in runbook.steps}
    for n, step in enumerate(runbook.steps):
        i = indices[n] if indices else n
        for key, source, is_expr, extra in _sources(step, runbook):
            try:
                free, paths = references(source, is_expression=is_expr)
            except ExpressionError as exc:
                problems.append(doc.problem(("steps", i) + key, f"{'/'.join(map(str, key))}: {exc}", step.id))
                continue
            allowed = ROOT_NAMES | JINJA_GLOBALS | extra
            for name in sorted(free - allowed):
                problems.append(doc.problem(("steps", i) + key,
                    f"{'/'.join(map(str, key))}: unknown name '{name}' (expected one of: {', '.join(sorted(ROOT_NAMES | extra))})", step.id))
            for path in paths:
                message = _path_problem(path, runbook, ids)
                if message:
                    problems.append(doc.problem(("steps", i) + key, f"{'/'.join(map(str, key))}: {message}", step.id))
    if runbook.idempotency_key:
        try:
            free, paths = references(runbook.idempotency_key, is_expression=False)
            for name in sorted(free - {"params", "run", "env", "trigger", "now"} - JINJA_GLOBALS):
                problems.append(doc.problem(("idempotency_key",), f"idempotency_key: unknown name '{name}' (expected params, run, env, trigger)"))
            for path in paths:
                message = _path_problem(path, runbook, ids)
                if message:
                    problems.append(doc.problem(("idempotency_key",), f"idempotency_key: {message}"))
        except ExpressionError as exc:
            problems.append(doc.problem(("idempotency_key",), f"idempotency_key: {exc}"))
    return problems


def _sources(step: Step, runbook: Runbook) -> list[tuple[Key, str, bool, set[str]]]:
    item = {"item"} if step.for_each else set()
    out: list[tuple[Key, str, bool, set[str]]] = []
    if step.when:
        out.append((("when",), step.when, True, set()))
    if step.for_each:
        out.append((("for_each",), step.for_each, True, set()))
    if step.expect:
        out.append((("expect",), step.expect, True, {"result"} | item))
    if step.message:
        out.append((("message",), step.message, False, {"result"} | item))
    params = step.plugin_with if isinstance(step, WaitStep) else step.with_
    key: Key = ("wait", "with") if isinstance(step, WaitStep) else ("with",)
    for source in template_expressions(params):
        out.append((key, source, False, item))
    if isinstance(step, DecideStep):
        for n, branch in enumerate(step.branches):
            if branch.condition:
                out.append((("decide", n, "if"), branch.condition, True, set()))
    if isinstance(step, WaitStep):
        out.append((("wait", "until"), step.until, True, {"result"}))
    if isinstance(step, ApproveStep):
        out.append((("approve", "prompt"), step.prompt, False, set()))
    keys = {"timeout_s": ("timeout",), "every_s": ("wait", "every"), "wait_timeout_s": ("wait", "timeout")}
    for field, template in step.durations:
        out.append((keys[field], template, False, set()))
    return out


_VIEW_WITHOUT_RESULT = STEP_VIEW_FIELDS - {"result"}
_STEPS_WORD = re.compile(r"(?<![\w.])steps\b")
_CHAIN_PART = re.compile(r"""\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*(?:'([^'\\]*)'|"([^"\\]*)")\s*\])""")
_TEMPLATE_PARTS = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


def result_readers(runbook: Runbook) -> frozenset[str] | None:
    """The ids of the steps whose result some expression or template of `runbook` can read.

    Read from the text of every source validation knows (`_sources`, the idempotency key):
    `steps.ID.ok` (status, attempts, duration_s, error) does not reach the result; `steps.ID`,
    `steps.ID.result...` or anything else after the id does. A use of `steps` this cannot
    follow (`steps[name]`, a loop over steps, a filter) answers None: every result may be read.
    """
    texts = [runbook.idempotency_key] if runbook.idempotency_key else []
    for step in runbook.steps:
        for _, source, is_expr, _ in _sources(step, runbook):
            texts.append(source if is_expr else " ".join(_TEMPLATE_PARTS.findall(source)))
    keep: set[str] = set()
    for text in texts:
        if "steps" not in text:
            continue
        for word in _STEPS_WORD.finditer(text):
            parts: list[str] = []
            pos = word.end()
            while (part := _CHAIN_PART.match(text, pos)) is not None:
                parts.append(next(g for g in part.groups() if g is not None))
                pos = part.end()
            if not parts:
                return None
            if len(parts) < 2 or parts[1] not in _VIEW_WITHOUT_RESULT:
                keep.add(parts[0])
    return frozenset(keep)


def _path_problem(path: tuple[str, ...], runbook: Runbook, ids: set[str]) -> str | None:
    root = path[0]
    if len(path) < 2:
        return None
    if root == "params" and path[1] not in runbook.params:
        return f"unknown param '{path[1]}' (expected one of: {', '.join(sorted(runbook.params)) or 'no params declared'})"
    if root == "env" and path[1] not in runbook.env:
        return f"env '{path[1]}' is not declared in env: (expected one of: {', '.join(runbook.env) or 'none declared'})"
    if root == "run" and path[1] not in RUN_FIELDS:
        return f"unknown run field '{path[1]}' (expected one of: {', '.join(sorted(RUN_FIELDS))})"
    if root == "steps":
        if path[1] not in ids:
            return f"unknown step '{path[1]}' in steps.{path[1]} (expected one of: {', '.join(sorted(ids))})"
        if len(path) >= 3 and path[2] not in STEP_VIEW_FIELDS:
            return f"unknown field '{path[2]}' of steps.{path[1]} (expected one of: {', '.join(sorted(STEP_VIEW_FIELDS))})"
    return None


# -- calls ------------------------------------------------------------------


def _call_problems(doc: Document, runbook: Runbook, library: Library) -> list[Problem]:
    problems: list[Problem] = []
    names = library.names()
    for i, step in enumerate(runbook.steps):
        if isinstance(step, CallStep) and step.runbook not in names:
            problems.append(doc.problem(("steps", i, "call"),
                f"call of unknown runbook '{step.runbook}' (expected one of: {', '.join(sorted(names)) or 'an empty library'})", step.id))
    for i, step in enumerate(runbook.steps):
        if isinstance(step, CallStep) and step.runbook in names and isinstance(step.with_, dict):
            declared = _declared_params(library, step.runbook)
            unknown = sorted(set(step.with_) - declared) if declared is not None else []
            for key in unknown:
                problems.append(doc.problem(("steps", i, "with", key),
                    f"runbook '{step.runbook}' has no param '{key}' (expected one of: {', '.join(sorted(declared or ())) or 'none declared'})", step.id))
    if not problems and any(isinstance(s, CallStep) for s in runbook.steps):
        cycle = _call_cycle(runbook, library)
        if cycle:
            i = next(n for n, s in enumerate(runbook.steps) if isinstance(s, CallStep))
            problems.append(doc.problem(("steps", i, "call"), f"call cycle: {' -> '.join(cycle)}", runbook.steps[i].id))
    return problems


def _declared_params(library: Library, name: str) -> set[str] | None:
    try:
        data = load_file(library.find(name)).data
    except InvalidRunbook:
        return None
    params = data.get("params") if isinstance(data, dict) else None
    return set(params) if isinstance(params, dict) else set()


def _call_cycle(runbook: Runbook, library: Library) -> list[str] | None:
    import networkx as nx


    graph = nx.DiGraph()
    todo = [(runbook.name, runbook)]
    seen: set[str] = set()
    while todo:
        name, rb = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for step in rb.steps:
            if isinstance(step, CallStep):
                graph.add_edge(name, step.runbook)
                if step.runbook not in seen:
                    try:
                        child_doc = load_file(library.find(step.runbook))
                        data = child_doc.data
                        if isinstance(data, dict) and isinstance(data.get("steps"), list):
                            calls = [s for s in data["steps"] if isinstance(s, dict) and isinstance(s.get("call"), str)]
                            child = _CallsOnly(step.runbook, calls)
                            todo.append((step.runbook, child))  # type: ignore[arg-type]
                    except InvalidRunbook:
                        continue
    try:
        edges = nx.find_cycle(graph, source=runbook.name)
    except nx.NetworkXNoCycle:
        return None
    return [u for u, _ in edges] + [edges[-1][1]]


class _CallsOnly:
    """Just enough of a runbook to follow its calls."""

    def __init__(self, name: str, calls: list[dict[str, Any]]) -> None:
        self.name = name
        self.steps = [CallStep(id=str(c.get("id", "?")), runbook=c["call"]) for c in calls]


def check(doc: Document, registry: Registry, library: Library | None = None) -> Runbook:
    """The Runbook, or InvalidRunbook (exit 20) listing every problem."""
    runbook, problems = validate_document(doc, registry, library)
    if problems or runbook is None:
        raise InvalidRunbook(problems)
    return runbook
