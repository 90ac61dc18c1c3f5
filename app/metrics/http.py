"""HTTP request counts and latency by route template (``/models/{name}/accuracy``, never the raw
path, so a label value per model or job id cannot blow up the series), method and status."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

from app.metrics.registry import PROCESS

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of requests no route answered (404s of unknown paths)

REQUESTS = Counter(
    "retain_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
    registry=PROCESS,
)
LATENCY = Histogram(
    "retain_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method, route template and status",
    ["method", "route", "status"],
    registry=PROCESS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def route_template(scope) -> str:
    """The path template of the route that handled the request (FastAPI puts it in the scope)."""
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED


class HttpMetricsMiddleware:
    """Pure ASGI middleware (no body buffering): times each HTTP request and counts its status.
    A handler that raises counts as 500, the answer the error middleware outside it sends."""

    def __init__(self, app):
        self.app = app
        # (method, route, status) -> its counter and histogram: `labels()` takes a lock and builds
        # the key on every call, three times the cost of the updates themselves on a busy route
        self._series: dict[tuple[str, str, str], tuple] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            labels = (method, route_template(scope), str(status))
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = (REQUESTS.labels(*labels), LATENCY.labels(*labels))
            series[0].inc()
            series[1].observe(time.perf_counter() - started)
