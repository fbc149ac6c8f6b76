"""Prometheus series of an HTTP API: requests by route and status, and their time.

The partner gateway and the operators' console count their requests here. The
series live in the service's registry (``services/runtime/metrics.py``), so the
runtime's ``/metrics`` endpoint serves them beside the pool, outbox and
kill-switch gauges. Routes are labelled by their template
(``/v1/payments/{payment_id}``), never by the path a caller sent, so made-up
paths cannot grow the series; requests that match no route share one label.

- ``mamoru_http_requests_total{service,method,route,code}``
- ``mamoru_http_request_duration_seconds{service,method,route}`` (histogram)
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.runtime import metrics

UNMATCHED_ROUTE = "unmatched"
# Token requests may wait for an argon2 verification; payments wait for the wallet.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Only the methods the API serves get their own label; the rest cannot grow the series.
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class HttpMetrics:
    """The HTTP series of one service, registered once per process."""

    def __init__(self, service: str) -> None:
        self.service = service
        registry = metrics.registry(service)
        self.requests = Counter(
            "mamoru_http_requests",
            "HTTP requests served, by method, route template and status code",
            ["service", "method", "route", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "mamoru_http_request_duration_seconds",
            "Time to answer an HTTP request, until the response has been sent",
            ["service", "method", "route"],
            buckets=_BUCKETS,
            registry=registry,
        )

    def count(self, method: str, route: str, code: int, seconds: float) -> None:
        method = method if method in _METHODS else "other"
        self.requests.labels(self.service, method, route, str(code)).inc()
        self.duration.labels(self.service, method, route).observe(seconds)


_services: dict[str, HttpMetrics] = {}


def for_service(service: str) -> HttpMetrics:
    """The one ``HttpMetrics`` of ``service`` in this process (restarts reuse it)."""
    found = _services.get(service)
    if found is None:
        found = _services[service] = HttpMetrics(service)
    return found


class HttpMetricsMiddleware:
    """Counts and times every HTTP request; outermost, so refusals count as well."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self._app = app
        self._metrics = for_service(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        # An exception that escapes the app becomes a 500 from the server error handler.
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, remember_status)
        finally:
            # The router puts the matched route into the (shared) scope.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            self._metrics.count(scope["method"], route, status, time.perf_counter() - started)
