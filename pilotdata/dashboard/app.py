"""The dashboard's web application (Starlette): the page, its assets and its JSON API, behind a token.

Every address lives under the access token: ``/<token>/`` is the page, ``/<token>/static/...`` its
assets (all shipped in this package: no CDN, no font or script from anywhere else) and
``/<token>/api/...`` the JSON it reads. :class:`TokenGuard` compares the first path segment with the
token in constant time (:func:`hmac.compare_digest`) before anything else runs and answers 403 to a
wrong or missing one, for pages, API and assets alike. A token in the path, not a cookie, keeps the
printed URL the only thing a user needs (also through an SSH port forward) and lets relative URLs carry
it. Every response says ``Referrer-Policy: no-referrer`` (the token never leaves in a Referer) and has a
Content-Security-Policy that allows this origin only.

API (``GET``; JSON; ``run`` is a run id, ``*`` for every run, absent for the current run):

=====================  =========================================================================
``api/meta``           generation, last refresh and its error, current run, runs, settings
``api/pilots``         pilots: state, site, slots busy / idle, claimed, queued, walltime left
``api/counts``         ComputeUnits by state per place (pilot, shared queue, unbound) and in total
``api/throughput``     ComputeUnits ended per time bucket and final state
``api/bytes``          bytes by category: total, per pilot, per site (moved vs not moved)
``api/transfers``      DataUnit replicas being copied; ComputeUnits staging per place
``api/failures``       failed ComputeUnits grouped by reason, with example ids
``api/cus``            a page of ComputeUnits: ``state`` (repeatable), ``pilot`` (``shared``), ``site``,
                       ``name`` (glob), ``limit`` (1-500), ``offset`` or ``after`` (a cursor), ``newest``
``api/cu/{id}``        one ComputeUnit in full, with the ends of its stderr and stdout
=====================  =========================================================================

Bad parameters get 400 with ``{"error", "field"}``; an unknown run or ComputeUnit 404; coordination or
history unreachable 503. Responses are cached per refresh generation (:class:`~.live.LiveState`).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pilotdata.dashboard import panels
from pilotdata.dashboard.live import LiveState
from pilotdata.errors import DescriptionError, NotFoundError, PilotDataError
from pilotdata.inspect import SHARED, CUFilter
from pilotdata.runs import list_runs

ALL_RUNS = "*"
"""The ``run`` parameter meaning every run."""
MAX_LIMIT = 500
"""The largest page of the ComputeUnit table."""
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
                                 b"form-action 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
"""Sent with every response."""
FORBIDDEN = b"403 forbidden: this address needs the access token that 'pdata dashboard' printed in its URL\n"


def static_dir() -> Path:
    """The directory of the page's assets (package data of :mod:`pilotdata.dashboard`)."""
    return Path(str(resources.files("pilotdata.dashboard") / "static"))


class TokenGuard:
    """ASGI middleware: only requests whose first path segment is the token reach the application (with
    that segment taken off the path); every other one gets 403. Adds :data:`SECURITY_HEADERS`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the access token must have at least 16 characters")
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the token, then hand the request on (lifespan events pass through)."""
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *[(k, v) for k, v in SECURITY_HEADERS if k not in names]]
            await send(message)

        path: str = scope["path"]
        first, sep, rest = path[1:].partition("/")
        if not hmac.compare_digest(first.encode(), self._token):
            await Response(FORBIDDEN, status_code=403, media_type="text/plain")(scope, receive, send_with_headers)
            return
        if not sep:  # /<token> -> /<token>/ so that relative URLs keep the token
            await RedirectResponse(f"/{first}/", status_code=307)(scope, receive, send_with_headers)
            return
        child = dict(scope)
        child["path"] = "/" + rest
        raw = scope.get("raw_path")
        if isinstance(raw, bytes):
            child["raw_path"] = raw[len(first) + 1:] if raw.startswith(b"/" + first.encode()) else raw
        await self.app(child, receive, send_with_headers)


class BadParameter(DescriptionError):
    """A query parameter of the API is malformed (400)."""


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(f"{name} must be a whole number, not {text!r}", field=name, value=text) from None
    if not low <= value <= high:
        raise BadParameter(f"{name} must be between {low} and {high}, not {value}", field=name, value=value)
    return value


def _error(status: int, message: str, field: str | None = None) -> Response:
    return Response(panels.encode({"error": message, "field": field}), status_code=status,
                    media_type="application/json", headers={"cache-control": "no-store"})


class Dashboard:
    """The endpoints over one :class:`LiveState` (see the module docstring)."""

    def __init__(self, state: LiveState, *, title: str = "pilot-data", coordination: str = "",
                 namespace: str = "", history: str = "", fixed_run: str | None = None) -> None:
        self.state = state
        self.ins = state.inspector
        self.title = title
        self.coordination = coordination
        self.namespace = namespace
        self.history = history
        self.fixed_run = fixed_run
        self._index = (static_dir() / "index.html").read_bytes()

    # ------------------------------------------------------------------ plumbing
    def _counts(self, run: str | None) -> dict[str, Any]:
        """The counts panel's value (shared by the counts and the transfers panels)."""
        return self.state.cached(("counts-value", run), lambda: panels.counts(self.ins, run))

    def _respond(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Response:
        try:
            body = self.state.cached(("body", *key), lambda: panels.encode(compute()))
        except DescriptionError as exc:
            return _error(400, str(exc), exc.field)
        except NotFoundError as exc:
            return _error(404, str(exc.args[0]) if exc.args else str(exc))
        except PilotDataError as exc:  # coordination or history unreachable, ...
            return _error(503, str(exc))
        return Response(body, media_type="application/json", headers={"cache-control": "no-store"})

    def _run(self, request: Request) -> str | None:
        """The run the request names: ``None`` for every run; the current run when absent."""
        text = request.query_params.get("run")
        if text == ALL_RUNS:
            return None
        if not text:
            return self.state.snapshot.current_run
        return text

    def _checked_run(self, request: Request) -> str | None:
        run = self._run(request)
        if (run is not None and run != self.state.snapshot.current_run
                and run not in {r["id"] for r in self._runs()}):
            self.ins.run(run)  # a run whose records were removed: the history knows it, or NotFoundError
        return run

    def _panel(self, name: str, fn: Callable[[str | None], Any]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                run = self._checked_run(request)
            except NotFoundError as exc:
                return _error(404, str(exc.args[0]) if exc.args else str(exc), "run")
            except PilotDataError as exc:
                return _error(503, str(exc))
            return self._respond((name, run), lambda: fn(run))

        return endpoint

    # ------------------------------------------------------------------ endpoints
    def index(self, request: Request) -> Response:
        """The page."""
        return Response(self._index, media_type="text/html; charset=utf-8", headers={"cache-control": "no-store"})

    def _runs(self) -> list[dict[str, Any]]:
        return self.state.cached(("runs",), lambda: [
            {"id": r.id, "origin": r.origin, "created": r.created, "closed": r.closed, "parent": r.parent}
            for r in list_runs(self.ins.coord)])

    def meta(self, request: Request) -> Response:
        """The refresh state and the runs (the page polls it; it changes with every refresh)."""
        snap = self.state.snapshot
        body: dict[str, Any] = {
            "generation": snap.generation, "refreshed": snap.refreshed, "changed": snap.changed,
            "error": snap.error, "error_since": snap.error_since, "current_run": snap.current_run,
            "fixed_run": self.fixed_run, "drained": snap.drained, "time": time.time(),
            "interval": self.state.interval, "title": self.title, "coordination": self.coordination,
            "namespace": self.namespace, "history": self.history, "runs": [], "runs_error": None}
        try:
            body["runs"] = self._runs()
        except PilotDataError as exc:
            body["runs_error"] = str(exc)
        return Response(panels.encode(body), media_type="application/json", headers={"cache-control": "no-store"})

    def cus(self, request: Request) -> Response:
        """A page of the ComputeUnit table."""
        try:
            run = self._checked_run(request)
            q = request.query_params
            states = tuple(s for s in q.getlist("state") if s)
            pilot = q.get("pilot") or None
            if pilot == "shared":
                pilot = SHARED
            flt = CUFilter(run=run, states=states, pilot=pilot, site=q.get("site") or None,
                           name=q.get("name") or None)
            limit = _int(request, "limit", 50, 1, MAX_LIMIT)
            offset = _int(request, "offset", 0, 0, 10**9)
            after = q.get("after") or None
            newest = q.get("newest", "") in ("1", "true", "yes")
        except DescriptionError as exc:
            return _error(400, str(exc), exc.field)
        except NotFoundError as exc:
            return _error(404, str(exc.args[0]) if exc.args else str(exc), "run")
        except PilotDataError as exc:
            return _error(503, str(exc))
        key = ("cus", flt, offset, limit, after, newest)
        return self._respond(key, lambda: panels.cus(self.ins, flt, offset=offset, limit=limit, after=after,
                                                     newest=newest))

    def cu(self, request: Request) -> Response:
        """One ComputeUnit in full."""
        cu_id = str(request.path_params["cu_id"])
        return self._respond(("cu", cu_id), lambda: panels.cu(self.ins, cu_id))

    def transfers(self, run: str | None) -> dict[str, Any]:
        """Transfers in flight (from the refresh's DataUnit scan) and ComputeUnits staging."""
        snap = self.state.snapshot
        return panels.transfers(snap.in_flight, snap.scanned, snap.scan_seconds, self._counts(run), run)

    def routes(self) -> list[Route | Mount]:
        """The routes under the token."""
        return [
            Route("/", self.index),
            Route("/api/meta", self.meta),
            Route("/api/pilots", self._panel("pilots", lambda run: panels.pilots(self.ins, run))),
            Route("/api/counts", self._panel("counts", self._counts)),
            Route("/api/throughput", self._panel("throughput", lambda run: panels.throughput(self.ins, run))),
            Route("/api/bytes", self._panel("bytes", lambda run: panels.bytes_panel(self.ins, run))),
            Route("/api/transfers", self._panel("transfers", self.transfers)),
            Route("/api/failures", self._panel("failures", lambda run: panels.failures(self.ins, run))),
            Route("/api/cus", self.cus),
            Route("/api/cu/{cu_id:str}", self.cu),
            Mount("/static", StaticFiles(directory=static_dir()), name="static"),
        ]


def create_app(dashboard: Dashboard, token: str) -> ASGIApp:
    """The ASGI application: :class:`Dashboard`'s routes behind :class:`TokenGuard`."""
    return TokenGuard(Starlette(routes=dashboard.routes()), token)
