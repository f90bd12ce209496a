"""The library as a whole: listing, describing, validating every file, drawing graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import routing
from engine.errors import InvalidRunbook, Problem
from engine.library import Library
from engine.loader import load_file
from engine.model import (
    ActionStep,
    ApproveStep,
    CallStep,
    CheckStep,
    DecideStep,
    EndStep,
    Runbook,
    WaitStep,
)
from engine.validate import validate_document


def summaries(library: Library, tag: str | None = None) -> list[dict[str, Any]]:
    """Name, title, tags, source and path of every runbook (optionally with a tag)."""
    rows = []
    for entry in library.entries():
        try:
            data = load_file(entry.path).data or {}
        except InvalidRunbook:
            data = {}
        if not isinstance(data, dict):
            data = {}
        tags = [str(t) for t in data.get("tags") or []]
        if tag and tag not in tags:
            continue
        rows.append({"name": entry.name, "title": data.get("title", "(invalid file)"), "tags": tags,
                     "source": data.get("source", ""), "path": str(entry.path)})
    return rows


def validate_all(workspace: Any, targets: list[str]) -> tuple[int, list[Problem]]:
    """Validate the given files or names (all of the library by default): files checked, problems."""
    library: Library = workspace.library
    paths: list[Path] = []
    for target in targets:
        paths += Library([Path(target)]).files() if Path(target).is_dir() else [library.find(target)]
    if not targets:
        paths = library.files()
    problems: list[Problem] = []
    names: dict[str, Path] = {}
    for path in paths:
        try:
            doc = load_file(path)
        except InvalidRunbook as exc:
            problems += exc.problems
            continue
        runbook, found = validate_document(doc, workspace.registry, library)
        problems += found
        if runbook is not None:
            if runbook.name in names and names[runbook.name] != path:
                problems.append(doc.problem(("runbook",), f"runbook name '{runbook.name}' is also used by {names[runbook.name]} (expected unique names)"))
            names.setdefault(runbook.name, path)
            for field in ("description", "source"):
                if not getattr(runbook, field):
                    problems.append(doc.problem((), f"missing '{field}' (every library runbook documents its {field})"))
    return len(paths), problems


def _what(step: Any) -> str:
    if isinstance(step, (CheckStep, ActionStep)):
        return f"{step.kind} {step.plugin}"
    if isinstance(step, WaitStep):
        return f"wait {step.plugin} until {step.until}"
    if isinstance(step, CallStep):
        return f"call {step.runbook}"
    if isinstance(step, EndStep):
        return f"end {step.outcome.value}"
    if isinstance(step, ApproveStep):
        return f"approve ({', '.join(step.approvers) or 'anyone'}{', four eyes' if step.four_eyes else ''})"
    return str(step.kind)


def describe(runbook: Runbook) -> str:
    """A readable summary: title, source, params, steps with their routes."""
    lines = [f"{runbook.name} v{runbook.version}: {runbook.title}", f"file:   {runbook.path}"]
    if runbook.source:
        lines.append(f"source: {runbook.source}")
    if runbook.tags:
        lines.append(f"tags:   {', '.join(runbook.tags)}")
    if runbook.description:
        lines += ["", runbook.description.strip()]
    if runbook.params:
        lines += ["", "params:"]
        for name, schema in runbook.params.items():
            default = f" = {schema['default']!r}" if isinstance(schema, dict) and "default" in schema else " (required)"
            lines.append(f"  {name}: {schema.get('type', 'any') if isinstance(schema, dict) else 'any'}{default}")
    if runbook.lock:
        lines.append(f"lock:   {runbook.lock.name} (ttl {runbook.lock.ttl_s:g}s, wait {runbook.lock.wait_s:g}s, on_held {runbook.lock.on_held})")
    lines += ["", "steps:"]
    for step in runbook.steps:
        routes = []
        if isinstance(step, DecideStep):
            routes += [f"{b.condition or 'else'} -> {b.goto}" for b in step.branches]
        for field in ("goto", "on_fail", "rollback"):
            if getattr(step, field):
                routes.append(f"{field} {getattr(step, field)}")
        if step.when:
            routes.append(f"when {step.when}")
        title = f" - {step.title}" if step.title else ""
        lines.append(f"  {step.id:<28} {_what(step)}{title}")
        for route in routes:
            lines.append(f"  {'':<28}   {route}")
    return "\n".join(lines)


def graph(runbook: Runbook, fmt: str) -> str:
    """The step graph in mermaid or dot."""
    edges = [(e.source, e.target, _label(e)) for e in routing.edges(runbook)]
    if fmt == "dot":
        out = [f'digraph "{runbook.name}" {{', "  rankdir=TB;"]
        for step in runbook.steps:
            shape = {"decide": "diamond", "end": "doublecircle", "approve": "hexagon"}.get(step.kind, "box")
            out.append(f'  "{step.id}" [shape={shape}, label="{step.id}\\n{_what(step)}"];')
        for a, b, label in edges:
            style = ", style=dashed" if label in ("on_fail", "rollback") else ""
            out.append(f'  "{a}" -> "{b}" [label="{label.replace(chr(34), chr(39))}"{style}];')
        out.append("}")
        return "\n".join(out)
    out = ["flowchart TD"]
    for step in runbook.steps:
        text = f"{step.id}: {_what(step)}".replace('"', "'")
        opening, closing = {"decide": ('{"', '"}'), "end": ('(["', '"])')}.get(step.kind, ('["', '"]'))
        out.append(f"  {step.id}{opening}{text}{closing}")
    if any(b == routing.END for _, b, _ in edges):
        out.append(f'  {routing.END}(["end: SUCCESS"])')
    for a, b, label in edges:
        arrow = "-.->" if label in ("on_fail", "rollback") else "-->"
        text = label.replace('"', "'").replace("|", "/")
        out.append(f"  {a} {arrow}|{text}| {b}" if text else f"  {a} {arrow} {b}")
    return "\n".join(out)


def graph_document(runbook: Runbook) -> dict[str, Any]:
    """The step graph as data: nodes (id, kind, title) and edges (from, to, label) as in the mermaid/dot graph."""
    edges = [{"from": e.source, "to": e.target, "label": _label(e)} for e in routing.edges(runbook)]
    nodes = [{"id": step.id, "kind": step.kind, "title": step.title} for step in runbook.steps]
    return {"runbook": runbook.name, "nodes": nodes, "edges": edges}


def _label(edge: routing.Edge) -> str:
    """What an edge says in a drawn graph: a branch's condition, `on_fail`, `rollback`, or nothing."""
    if edge.route is routing.Route.BRANCH:
        return edge.label
    return str(edge.route) if edge.route in (routing.Route.ON_FAIL, routing.Route.ROLLBACK) else ""
