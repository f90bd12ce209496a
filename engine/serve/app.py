"""The HTTP surface of `runbook serve` (starlette on uvicorn): hooks, runs, approvals, metrics, health."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.config import Config
from engine.console import make_console
from engine.errors import RunbookError, UnknownRun
from engine.evidence import read_events
from engine.library import Library
from engine.runs import effective_status
from engine.serve import scheduler
from engine.serve.inbox import Inbox, inbox_path
from engine.serve.intake import GroupCommit, Intake, IntakeError
from engine.serve.metrics import Metrics
from engine.serve.rules import ServeSettings, load_settings
from engine.serve.supervisor import Supervisor
from engine.session import Workspace
from engine.vocabulary import Outcome, RunStatus

MAX_BODY = 1024 * 1024
log = logging.getLogger("runbook.serve")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Server:
    """Everything one serve process holds: settings, inbox, intake, supervisor, metrics."""

    def __init__(self, config: Config, settings: ServeSettings) -> None:
        self.config = config
        self.settings = settings
        self.inbox = Inbox(inbox_path(config.state_dir))
        self.workspace = Workspace(config, make_console("json", False))
        self.metrics = Metrics(self._approvals_waiting, self._breakers)
        self.intake = Intake(settings, self.inbox, config.kill_switch.exists,
                             lambda rule, decision: self.metrics.alerts.labels(rule, decision).inc())
        self.supervisor = Supervisor(config, self.inbox, self.metrics, settings.max_concurrent_runs)
        self.schedules = [r for r in settings.rules if r.source == "schedule"]

    def _approvals_waiting(self) -> int:
        return sum(1 for r in self.workspace.store.all()
                   if r.status == RunStatus.PAUSED and (r.waiting_for or {}).get("type") == "approval")

    def _breakers(self) -> dict[str, bool]:
        return {r.name: self.inbox.breaker_open(r) for r in self.settings.rules if r.breaker is not None}

    async def schedule_loop(self) -> None:
        """Fire due schedule rules about every quarter second."""
        while not self.supervisor.stopping:
            if scheduler.tick(self.schedules, self.inbox, self.intake):
                self.supervisor.wake.set()
            await asyncio.sleep(0.25)

    # -- requests --------------------------------------------------------------------

    def identity(self, request: Request) -> str:
        """The identity of the request's bearer token; 401 without a valid one."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        identity = self.settings.identify(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if identity is None:
            raise _HttpError(401, "a valid `Authorization: Bearer TOKEN` is required")
        return identity

    async def json_body(self, request: Request) -> Any:
        """The request body as JSON; 413 past 1 MB, 400 when it is not JSON."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            raise _HttpError(413, f"body of {declared} bytes exceeds the limit of {MAX_BODY} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise _HttpError(413, f"body exceeds the limit of {MAX_BODY} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks) or b"null")
        except ValueError as exc:
            raise _HttpError(400, f"body is not JSON: {exc}") from None

    async def alertmanager(self, request: Request) -> Response:
        """POST /hooks/alertmanager: one decision per alert and matching rule."""
        identity = self.identity(request)
        payload = await self.json_body(request)
        decisions = await self.intake.alertmanager(payload, identity)
        self._wake(decisions)
        return JSONResponse({"decisions": decisions}, status_code=202)

    async def generic(self, request: Request) -> Response:
        """POST /hooks/generic/RULE: the event is the JSON object posted."""
        identity = self.identity(request)
        payload = await self.json_body(request)
        decisions = await self.intake.generic(request.path_params["rule"], payload, identity,
                                              request.headers.get("idempotency-key"))
        self._wake(decisions)
        return JSONResponse({"decisions": decisions}, status_code=202)

    def _wake(self, decisions: list[dict[str, Any]]) -> None:
        for d in decisions:
            log.info("%s rule=%s alert=%s run=%s", d["decision"], d["rule"] or "-", d["alert"] or "-",
                     d["run_id"] or "-")
        if any(d["decision"] == "started" for d in decisions):
            self.supervisor.wake.set()

    async def runs(self, request: Request) -> Response:
        """GET /runs: a JSON list of run records (as `runbook runs --output json`), filtered by ?status= ..."""
        self.identity(request)
        wanted = {k: request.query_params.get(k) for k in ("status", "runbook", "outcome")}
        out = []
        for record in self.workspace.store.all():
            row = {**asdict(record), "status": effective_status(record)}
            if all(not v or str(row.get(k)) == v for k, v in wanted.items()):
                out.append(row)
        return JSONResponse(out)

    def _known_run(self, run_id: str) -> Any:
        if not _RUN_ID.match(run_id):
            raise _HttpError(404, f"no run '{run_id}'")
        try:
            return self.workspace.store.load(run_id)
        except UnknownRun:
            raise _HttpError(404, f"no run '{run_id}'") from None

    async def run(self, request: Request) -> Response:
        """GET /runs/RUN_ID: the run record's fields, `events` (its evidence log) and `serve` (rule, state)."""
        self.identity(request)
        record = self._known_run(request.path_params["run_id"])
        events_path = Path(record.evidence_dir) / "events.jsonl"
        events = read_events(events_path) if events_path.exists() else []
        row = self.inbox.by_run(record.run_id)
        serve = None if row is None else {"rule": row.rule, "state": row.state, "identity": row.identity}
        return JSONResponse({**asdict(record), "status": effective_status(record), "events": events, "serve": serve})

    async def approve(self, request: Request) -> Response:
        """POST /runs/RUN_ID/approve: the approver is the token's identity (approvers, four_eyes apply)."""
        identity = self.identity(request)
        record = self._known_run(request.path_params["run_id"])
        body = await self.json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("step"), str) \
                or body.get("decision") not in ("approve", "deny"):
            raise _HttpError(400, 'expected {"step": STEP, "decision": "approve" | "deny", "note": TEXT}')
        note = body.get("note")
        if record.operator == f"serve:{identity}" and self._four_eyes(record.runbook_path, body["step"]):
            raise _HttpError(403, f"approval refused: four-eyes: '{identity}' started this run (through serve) "
                             "and cannot approve it")
        kwargs: dict[str, Any] = {}
        if "via" in inspect.signature(self.workspace.approve).parameters:
            kwargs["via"] = "serve"
        try:
            decision = self.workspace.approve(record.run_id, body["step"], identity,
                                              None if note is None else str(note), body["decision"] == "deny",
                                              **kwargs)
        except RunbookError as exc:  # ApprovalRefused: 403 when the approver is refused, 409 when nothing waits
            refused = str(exc).startswith("approval refused")
            raise _HttpError(403 if refused else 409, str(exc)) from None
        resumed = self.supervisor.resume_after_approval(record.run_id)
        return JSONResponse({"run_id": record.run_id, "step": body["step"], **decision, "resumed_by_serve": resumed})

    def _four_eyes(self, runbook_path: str, step_id: str) -> bool:
        try:
            step = self.workspace.load(runbook_path).step(step_id)
        except (KeyError, RunbookError):
            return False
        return bool(getattr(step, "four_eyes", False))

    async def metrics_text(self, request: Request) -> Response:
        """GET /metrics in the Prometheus text format."""
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(self, request: Request) -> Response:
        """GET /healthz: 200 while serving."""
        return JSONResponse({"status": "ok", "running": len(self.supervisor.procs)})


def create_app(config: Config, settings: ServeSettings) -> Starlette:
    """The ASGI application; its lifespan runs the supervisor and the scheduler and stops them gracefully."""
    server = Server(config, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.intake.group = GroupCommit(server.inbox)
        tasks = [asyncio.create_task(server.supervisor.run()), asyncio.create_task(server.schedule_loop()),
                 asyncio.create_task(server.intake.group.run())]
        try:
            yield
        finally:
            await server.supervisor.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            server.inbox.close()

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                response: Response = await handler(request)
                return response
            except (_HttpError, IntakeError) as exc:
                headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
                return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)
        return endpoint

    routes = [
        Route("/hooks/alertmanager", guarded(server.alertmanager), methods=["POST"]),
        Route("/hooks/generic/{rule}", guarded(server.generic), methods=["POST"]),
        Route("/runs", guarded(server.runs), methods=["GET"]),
        Route("/runs/{run_id}", guarded(server.run), methods=["GET"]),
        Route("/runs/{run_id}/approve", guarded(server.approve), methods=["POST"]),
        Route("/metrics", server.metrics_text, methods=["GET"]),
        Route("/healthz", server.healthz, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.server = server
    return app


def serve(config: Config, listen: str | None = None) -> int:
    """Run the server until SIGTERM or Ctrl-C; runs it drives are left resumable. Exit 0."""
    import signal

    import uvicorn


    settings = load_settings(config, Library(config.runbook_paths).names())
    host, _, port = (listen or settings.listen).rpartition(":")
    host = host.strip("[]")
    guard = _one_serve(config)

    class _Uvicorn(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    app = create_app(config, settings)
    uv_config = uvicorn.Config(app, host=host, port=int(port), loop="asyncio", http="h11", lifespan="on",
                               log_level="warning", access_log=False, timeout_keep_alive=5,
                               timeout_graceful_shutdown=10, limit_concurrency=256)
    server = _Uvicorn(uv_config)
    print(f"runbook serve: listening on http://{host}:{port} ({len(settings.rules)} rules, "
          f"max_concurrent_runs {settings.max_concurrent_runs})", flush=True)
    try:
        server.run()
    finally:
        os.close(guard)
    return 0 if server.started else 50


class ServeRunning(RunbookError):
    """Another `runbook serve` already drives this state directory."""

    outcome = Outcome.LOCK_TIMEOUT


def _one_serve(config: Config) -> int:
    """Hold `<state_dir>/serve/serve.lock` for serve's life: one serve per state directory (its inbox)."""
    import fcntl

    path = config.state_dir / "serve" / "serve.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
        os.close(fd)
        raise ServeRunning(f"another runbook serve drives {config.state_dir} ({holder or 'pid unknown'}); "
                           "one serve per state directory") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
    return fd
