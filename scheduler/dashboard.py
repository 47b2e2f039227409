"""The status page: a Tornado web application in the scheduler's process and event loop.

Pages (``/``, ``/status``, ``/workers``, ``/tasks``, ``/objects``, ``/actors``,
``/graph``) are small HTML shells; ``static/dashboard.js`` fills them from the JSON API
under ``/api/`` and polls it, so they update without a reload. ``/metrics`` serves
Prometheus text (``prometheus.py``). The live views of ``/status`` come from
``status_live.py``.

It never slows the scheduler: every response has a size bound (``limit`` parameters with
maxima; long texts cut), views come from ``status.py`` on a shared, rate-limited scan of
the live state (``snapshots.py``), and Graphviz runs as an asynchronous subprocess, one at
a time, with a timeout, its pictures cached by content. It changes nothing: every route is
a GET. Bound to loopback, it only answers requests addressed to a loopback name, so a web
page elsewhere cannot read it through DNS rebinding.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import html
import json
import logging
import os
import socket
from collections import OrderedDict
from typing import TYPE_CHECKING

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from graphstore.exceptions import GraphvizNotFoundError
from graphstore.core.graph_export import find_dot, graphviz_missing_message, to_dot
from graphstore.scheduler import prometheus, status, status_live
from graphstore.scheduler.critical_path import mark_path
from graphstore.core.tls import is_loopback

if TYPE_CHECKING:
    from graphstore.scheduler.server import Scheduler

logger = logging.getLogger("graphstore.scheduler.dashboard")

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
#: Seconds Graphviz may take for one picture.
RENDER_TIMEOUT = 10.0
#: Pictures kept, by the digest of their DOT text.
SVG_CACHE_SIZE = 8
#: Largest SVG a render may produce (bytes).
MAX_SVG_BYTES = 20 * 1024 * 1024
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

#: page path -> (name, title, API route it reads)
PAGES = {
    "/": ("overview", "Overview", "/api/overview"),
    "/status": ("status", "Status", "/api/progress"),
    "/workers": ("workers", "Workers", "/api/workers"),
    "/tasks": ("tasks", "Tasks", "/api/tasks"),
    "/objects": ("objects", "Objects", "/api/objects"),
    "/actors": ("actors", "Actors", "/api/actors"),
    "/graph": ("graph", "Task graph", "/api/graph"),
}


class Param:
    """A query parameter: an integer in [low, high], or one of ``choices``."""

    def __init__(self, default=None, low: int | None = None, high: int | None = None,
                 choices: tuple | None = None):
        self.default, self.low, self.high, self.choices = default, low, high, choices

    def parse(self, name: str, text: str):
        if self.choices is not None:
            if text not in self.choices:
                raise ValueError(f"{name} must be one of {', '.join(self.choices)}; "
                                 f"got {text[:100]!r}")
            return text
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or not self.low <= value <= self.high:
            raise ValueError(f"{name} must be an integer from {self.low} to {self.high}; "
                             f"got {text[:100]!r}")
        return value


LIMIT = {"limit": Param(100, 1, 1000)}
QUERY = {
    "/api/overview": {},
    "/api/workers": {"limit": Param(1000, 1, 10_000)},
    "/api/tasks": {"limit": Param(100, 1, 1000), "failures": Param(10, 0, 100),
                   "state": Param(None, choices=status.TASK_STATES)},
    "/api/objects": LIMIT,
    "/api/actors": LIMIT,
    # critical=<object id>: that object's ancestry, its critical path marked.
    "/api/graph": {"limit": Param(100, 1, 2000), "critical": Param(None)},
    "/api/graph.dot": {"limit": Param(100, 1, 2000), "critical": Param(None)},
    "/api/graph.svg": {"limit": Param(100, 1, 500), "digest": Param(None, choices=None),
                       "critical": Param(None)},
    "/api/progress": {"limit": Param(200, 1, 1000)},
    "/api/workers/load": {"limit": Param(32, 1, 1000), "seconds": Param(300, 1, 300)},
    "/api/task-stream": {"since": Param(0, 0, 2**53), "limit": Param(2000, 1, 10_000)},
    "/metrics": {},
}

#: The status page's own parameters: its progress pane's limit, the stream's window (s).
STATUS_PAGE = {"limit": Param(200, 1, 1000), "window": Param(30, 5, 300)}


class BaseHandler(tornado.web.RequestHandler):
    """Shared by every route: host check, safe headers, 400/404 texts, query parsing."""

    def initialize(self, dashboard: "Dashboard") -> None:
        self.dashboard = dashboard

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy",
                        "default-src 'none'; script-src 'self'; style-src 'self'; "
                        "img-src 'self'; connect-src 'self'; base-uri 'none'; "
                        "form-action 'none'; frame-ancestors 'none'")

    def prepare(self) -> None:
        if self.dashboard.loopback_only:
            host = self.request.host_name.strip("[]").lower()
            if host not in LOOPBACK_HOSTS:
                raise tornado.web.HTTPError(
                    403, reason="Forbidden host",
                    log_message=f"request for host {host!r} refused: the status page is "
                                f"bound to loopback")

    def query(self, spec: dict[str, Param]) -> dict:
        """The query parameters of ``spec``, checked; 400 for anything else."""
        arguments = self.request.query_arguments
        values = {}
        for name in arguments:
            if name not in spec:
                allowed = ", ".join(spec) or "none"
                raise tornado.web.HTTPError(
                    400, reason="Bad Request",
                    log_message=f"unknown query parameter {name[:100]!r}; this route takes "
                                f"{allowed}")
        for name, param in spec.items():
            texts = arguments.get(name)
            if not texts:
                values[name] = param.default
                continue
            if len(texts) > 1:
                raise tornado.web.HTTPError(400, reason="Bad Request",
                                            log_message=f"{name} is given more than once")
            text = texts[0].decode("utf-8", errors="replace")
            if param.choices is None and param.low is None:
                values[name] = text[:100]
                continue
            try:
                values[name] = param.parse(name, text)
            except ValueError as exc:
                raise tornado.web.HTTPError(400, reason="Bad Request",
                                            log_message=str(exc)) from None
        return values

    def write_error(self, status_code: int, **kwargs) -> None:
        message = self._reason
        exc_info = kwargs.get("exc_info")
        if exc_info is not None and isinstance(exc_info[1], tornado.web.HTTPError) \
                and exc_info[1].log_message:
            message = exc_info[1].log_message
        elif status_code == 404:
            message = (f"nothing at {self.request.path[:200]}; pages: "
                       f"{', '.join(PAGES)}; JSON under /api/ (see /api); metrics at /metrics")
        elif status_code == 405:
            message = "the status page is read-only: only GET requests are answered"
        self.clear_header("Content-Security-Policy")
        self.set_header("Content-Security-Policy", "default-src 'none'")
        if self.request.path.startswith("/api") or self.request.path == "/metrics":
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish(json.dumps({"error": message, "status": status_code}))
        else:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(f"{status_code} {self._reason}: {message}\n")

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, tornado.web.HTTPError):
            return  # a bad request is the client's business, not the scheduler log's
        super().log_exception(typ, value, tb)

    def send_json(self, data: dict) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data, separators=(",", ":"), allow_nan=False,
                               default=str))


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        super().prepare()
        raise tornado.web.HTTPError(404)


class GuardedStaticFileHandler(tornado.web.StaticFileHandler):
    """The page's script and style sheet, with the same host check."""

    def initialize(self, path: str, default_filename: str | None = None,  # type: ignore
                   dashboard: "Dashboard | None" = None) -> None:
        super().initialize(path, default_filename)
        self.dashboard = dashboard

    def prepare(self) -> None:
        BaseHandler.prepare(self)  # type: ignore[arg-type]

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")


class PageHandler(BaseHandler):
    def get(self) -> None:
        path = self.request.path
        name, title, api = PAGES[path]
        q = self.query({"/graph": QUERY["/api/graph"], "/tasks": QUERY["/api/tasks"],
                        "/objects": LIMIT, "/status": STATUS_PAGE}.get(path, {}))
        critical_root(q.get("critical"))
        nav = "".join(
            f'<a href="{p}"{" aria-current=page" if p == path else ""}>{html.escape(t)}</a>'
            for p, (_, t, _) in PAGES.items())
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(PAGE_TEMPLATE.format(
            title=html.escape(title), page=name, api=api, nav=nav,
            css=html.escape(self.static_url("dashboard.css")),
            icon=html.escape(self.static_url("favicon.svg")),
            js=html.escape(self.static_url("dashboard.js")),
            address=html.escape(self.dashboard.scheduler.address)))


PAGE_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>graphstore · {title}</title>
<link rel="icon" href="{icon}" type="image/svg+xml">
<link rel="stylesheet" href="{css}">
<script src="{js}" defer></script>
</head>
<body data-page="{page}" data-api="{api}">
<header>
<span class="brand">graphstore</span>
<nav>{nav}</nav>
<span class="scheduler" title="scheduler address">{address}</span>
<span id="status" role="status">loading…</span>
</header>
<main>
<h1>{title}</h1>
<div id="content"></div>
<noscript>This page needs JavaScript; the same data is at <a href="{api}">{api}</a>.</noscript>
</main>
</body>
</html>
"""


class ApiIndexHandler(BaseHandler):
    def get(self) -> None:
        self.query({})
        self.send_json({"routes": {
            "/api/overview": "workers, CPUs, tasks by state, objects, store use, spilling",
            "/api/workers?limit=": "one row per worker (limit 1..10000)",
            "/api/progress?limit=": "tasks by function name: waiting, queued, running, "
                                    "done, failed (limit 1..1000)",
            "/api/workers/load?limit=&seconds=": "each worker's CPU, memory and store use "
                                                 "over the last seconds (1..300)",
            "/api/task-stream?since=&limit=": "task runs, transfers, spills recorded after "
                                              "sequence number since (limit 1..10000)",
            "/api/tasks?limit=&state=&failures=": "newest tasks, failures with tracebacks",
            "/api/objects?limit=": "largest live objects (limit 1..1000)",
            "/api/actors?limit=": "actors (limit 1..1000)",
            "/api/graph?limit=": "task graph, node-link JSON (limit 1..2000)",
            "/api/graph?critical=": "an object's ancestry, its critical path marked",
            "/api/graph.dot?limit=": "task graph, Graphviz DOT (limit 1..2000)",
            "/api/graph.svg?limit=": "task graph, rendered (limit 1..500)",
            "/metrics": "Prometheus text format",
        }})


class OverviewHandler(BaseHandler):
    async def get(self) -> None:
        self.query(QUERY["/api/overview"])
        d = self.dashboard
        scan = await d.scans.get()
        self.send_json(status.overview(d.state, scan, address=d.scheduler.address,
                                       dashboard_url=d.url))


class WorkersHandler(BaseHandler):
    def get(self) -> None:
        q = self.query(QUERY["/api/workers"])
        self.send_json(status.workers(self.dashboard.state, q["limit"]))


class ProgressHandler(BaseHandler):
    def get(self) -> None:
        q = self.query(QUERY["/api/progress"])
        self.send_json(status_live.progress(self.dashboard.state, q["limit"]))


class WorkerLoadHandler(BaseHandler):
    def get(self) -> None:
        q = self.query(QUERY["/api/workers/load"])
        self.send_json(status_live.worker_load(self.dashboard.state, q["limit"],
                                               q["seconds"]))


class TaskStreamHandler(BaseHandler):
    def get(self) -> None:
        q = self.query(QUERY["/api/task-stream"])
        self.send_json(status_live.task_stream(self.dashboard.state, q["since"],
                                               q["limit"]))


class TasksHandler(BaseHandler):
    async def get(self) -> None:
        q = self.query(QUERY["/api/tasks"])
        scan = await self.dashboard.scans.get()
        self.send_json(status.tasks(self.dashboard.state, scan, q["limit"], q["state"],
                                    q["failures"]))


class ObjectsHandler(BaseHandler):
    async def get(self) -> None:
        q = self.query(QUERY["/api/objects"])
        scan = await self.dashboard.scans.get()
        self.send_json(status.objects(self.dashboard.state, scan, q["limit"]))


class ActorsHandler(BaseHandler):
    def get(self) -> None:
        q = self.query(QUERY["/api/actors"])
        data = status.actors(self.dashboard.state, q["limit"])
        if not data["actors"]:
            data["note"] = "no actors in this cluster"
        self.send_json(data)


def critical_root(text: str | None) -> bytes | None:
    """The object id of ``?critical=`` (32 hex digits); 400 for anything else."""
    if text is None:
        return None
    try:
        object_id = bytes.fromhex(text)
    except ValueError:
        object_id = b""
    if len(object_id) != 16:
        raise tornado.web.HTTPError(
            400, reason="Bad Request",
            log_message=f"critical must be an object id (32 hex digits, as "
                        f"ObjectRef.hex() gives); got {text[:100]!r}")
    return object_id


class GraphHandler(BaseHandler):
    def get(self) -> None:
        q = self.query(QUERY["/api/graph"])
        data = self.dashboard.graph(q["limit"], critical_root(q["critical"]))
        data["graph"]["digest"] = digest(to_dot(data))
        data["graph"]["renderable"] = find_dot() is not None
        self.send_json(data)


class GraphDotHandler(BaseHandler):
    def get(self) -> None:
        q = self.query(QUERY["/api/graph.dot"])
        self.set_header("Content-Type", "text/vnd.graphviz; charset=utf-8")
        self.finish(to_dot(self.dashboard.graph(q["limit"], critical_root(q["critical"]))))


class GraphSvgHandler(BaseHandler):
    async def get(self) -> None:
        q = self.query(QUERY["/api/graph.svg"])
        data = self.dashboard.graph(q["limit"], critical_root(q["critical"]))
        info = data["graph"]
        self.set_header("X-Graph-Nodes", str(len(data["nodes"])))
        self.set_header("X-Graph-Total-Nodes", str(info["total_nodes"]))
        self.set_header("X-Graph-Truncated", "true" if info["truncated"] else "false")
        try:
            svg = await self.dashboard.render_svg(to_dot(data))
        except GraphvizNotFoundError as exc:
            raise tornado.web.HTTPError(503, reason="Graphviz missing",
                                        log_message=str(exc)) from None
        except (TimeoutError, RuntimeError) as exc:
            raise tornado.web.HTTPError(503, reason="Rendering failed",
                                        log_message=str(exc)) from None
        self.set_header("Content-Type", "image/svg+xml")
        # Shown through <img>, which runs no script; this also holds when opened alone.
        self.set_header("Content-Security-Policy", "default-src 'none'; style-src "
                                                   "'unsafe-inline'")
        self.finish(svg)


class MetricsHandler(BaseHandler):
    async def get(self) -> None:
        self.query(QUERY["/metrics"])
        scan = await self.dashboard.scans.get()
        self.set_header("Content-Type", prometheus.CONTENT_TYPE)
        self.finish(prometheus.exposition(self.dashboard.state, scan))


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class Dashboard:
    """The status page's web server, attached to a running ``Scheduler``."""

    def __init__(self, scheduler: "Scheduler"):
        self.scheduler = scheduler
        self.state = scheduler.state
        self.scans = scheduler.scans
        self.url: str | None = None
        self.loopback_only = True
        self.server: HTTPServer | None = None
        self._svg_cache: OrderedDict[str, bytes] = OrderedDict()
        #: ((object id, task stream seq, tasks done), the path or why there is none).
        self._critical_cache: tuple | None = None
        self._render_lock = asyncio.Lock()
        self._renders: set = set()
        args = {"dashboard": self}
        routes = [(path, PageHandler, args) for path in PAGES]
        routes += [
            (r"/api/?", ApiIndexHandler, args),
            (r"/api/overview", OverviewHandler, args),
            (r"/api/workers", WorkersHandler, args),
            (r"/api/workers/load", WorkerLoadHandler, args),
            (r"/api/progress", ProgressHandler, args),
            (r"/api/task-stream", TaskStreamHandler, args),
            (r"/api/tasks", TasksHandler, args),
            (r"/api/objects", ObjectsHandler, args),
            (r"/api/actors", ActorsHandler, args),
            (r"/api/graph", GraphHandler, args),
            (r"/api/graph\.dot", GraphDotHandler, args),
            (r"/api/graph\.svg", GraphSvgHandler, args),
            (r"/metrics", MetricsHandler, args),
        ]
        self.app = tornado.web.Application(
            routes, default_handler_class=NotFoundHandler, default_handler_args=args,
            static_path=STATIC_DIR, static_handler_class=GuardedStaticFileHandler,
            static_handler_args={"dashboard": self}, compress_response=True,
            log_function=self._log_request)

    @staticmethod
    def _log_request(handler: tornado.web.RequestHandler) -> None:
        if handler.get_status() >= 500:
            logger.warning("%d %s %s", handler.get_status(), handler.request.method,
                           handler.request.uri[:200])

    def listen(self, host: str, port: int) -> str | None:
        """Serve on ``host:port``; if that port is taken, on a free one (warning). Returns
        the page's URL, or None if the page could not be served at all."""
        try:
            sockets = bind_sockets(port, address=host)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or port == 0:
                logger.error("status page disabled: cannot listen on %s:%s: %s", host, port,
                             exc)
                return None
            sockets = bind_sockets(0, address=host)
            logger.warning("port %s is already in use (another cluster's status page, or "
                           "Ray's?); the status page uses port %s instead", port,
                           sockets[0].getsockname()[1])
        self.server = HTTPServer(self.app, idle_connection_timeout=60, body_timeout=10,
                                 max_body_size=64 * 1024, max_header_size=64 * 1024)
        self.server.add_sockets(sockets)
        bound_port = sockets[0].getsockname()[1]
        self.loopback_only = host in LOOPBACK_HOSTS
        exposed = [s.getsockname()[0] for s in sockets if not is_loopback(s.getsockname()[0])]
        if exposed:
            logger.warning(
                "the status page listens on %s port %s, beyond loopback: anyone who can "
                "reach it can read the cluster's state (task and function names, errors, "
                "hosts, object sizes). It is read-only but has no login and no TLS; bind "
                "127.0.0.1 (dashboard_host) and use an SSH tunnel, or firewall the port",
                ", ".join(exposed), bound_port)
        shown = host
        if host in ("", "0.0.0.0", "::"):
            shown = socket.gethostname()
        if ":" in shown:
            shown = f"[{shown}]"
        self.url = f"http://{shown}:{bound_port}"
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        for proc in list(self._renders):
            try:
                proc.kill()
            except ProcessLookupError:
                pass

    def graph(self, limit: int, critical: bytes | None = None) -> dict:
        """The task graph's newest ``limit`` nodes; with ``critical`` (an object id),
        that object's ancestry with its critical path marked (``critical_path.mark_path``),
        or the reason it has none in ``graph["critical_problem"]``."""
        if critical is None:
            return self.state.graph.snapshot(self.state.workers, limit)
        data = self.state.graph.snapshot(self.state.workers, limit, [critical])
        # A page polls every few seconds: compute the path again only once new events
        # arrived (it scans every event kept).
        key = (critical, self.state.task_stream.seq, self.state.counts["done"])
        if self._critical_cache is None or self._critical_cache[0] != key:
            try:
                found = self.state.critical_path(critical)
            except ValueError as exc:
                found = str(exc)
            self._critical_cache = (key, found)
        found = self._critical_cache[1]
        if isinstance(found, str):
            data["graph"]["critical_problem"] = found
        else:
            mark_path(data, found)
        return data

    async def render_svg(self, dot_text: str) -> bytes:
        """``dot -Tsvg`` off the loop, one at a time, within ``RENDER_TIMEOUT``; cached."""
        key = digest(dot_text)
        cached = self._svg_cache.get(key)
        if cached is not None:
            self._svg_cache.move_to_end(key)
            return cached
        async with self._render_lock:
            cached = self._svg_cache.get(key)
            if cached is not None:
                return cached
            dot = find_dot()
            if dot is None:
                raise GraphvizNotFoundError(graphviz_missing_message("svg"))
            proc = await asyncio.create_subprocess_exec(
                dot, "-Tsvg", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            self._renders.add(proc)
            try:
                out, err = await asyncio.wait_for(proc.communicate(dot_text.encode()),
                                                  RENDER_TIMEOUT)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                raise TimeoutError(f"Graphviz took more than {RENDER_TIMEOUT:g} s; show "
                                   f"fewer nodes (limit=)") from None
            finally:
                self._renders.discard(proc)
            if proc.returncode != 0:
                raise RuntimeError(f"Graphviz failed (exit code {proc.returncode}): "
                                   f"{err.decode(errors='replace')[:1000]}")
            if len(out) > MAX_SVG_BYTES:
                raise RuntimeError(f"the picture is larger than {MAX_SVG_BYTES:,} bytes; "
                                   f"show fewer nodes (limit=)")
            self._svg_cache[key] = out
            while len(self._svg_cache) > SVG_CACHE_SIZE:
                self._svg_cache.popitem(last=False)
            return out
