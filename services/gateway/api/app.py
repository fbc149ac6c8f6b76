"""The partner API as one ASGI application, and its OpenAPI 3.1 document."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from services.gateway.api import docs, oauth, problems, routes
from services.gateway.api.security import Guard
from services.gateway.domain.partners import SCOPE_HELP
from services.gateway.use_cases.payments import Payments
from services.gateway.use_cases.tokens import TokenService
from services.gateway.use_cases.webhooks import Webhooks
from services.runtime.http_metrics import HttpMetricsMiddleware

TITLE = "Mamoru partner API"
VERSION = "1.0.0"
DESCRIPTION = (
    "Registers and partner apps authorize, capture, void and refund payments made with a "
    "person's one-time code, accept cash top-ups, and receive signed webhooks. Get a token "
    "with OAuth2 client credentials at /oauth/token; send every mutating call with an "
    "Idempotency-Key. Money is integer minor units with a currency. Errors are RFC 9457 "
    "problems whose `reason` is stable and whose `field` names the offending input."
)
_log = structlog.get_logger("mamoru.gateway.http")
# Far above any real request; a larger body is refused before it is read into memory.
MAX_BODY_BYTES = 64 * 1024
_tracer = trace.get_tracer("mamoru.gateway")


def _scope_of(route: Any) -> str | None:
    dependant = getattr(route, "dependant", None)
    for dependency in dependant.dependencies if dependant is not None else []:
        scope = getattr(dependency.call, "mamoru_scope", None)
        if scope:
            return str(scope)
    return None


def build_openapi(app: FastAPI, issuer: str) -> dict[str, Any]:
    document = get_openapi(
        title=TITLE,
        version=VERSION,
        openapi_version="3.1.0",
        description=DESCRIPTION,
        routes=app.routes,
        servers=[{"url": issuer}],
    )
    scopes = {
        (route.path, method.lower()): _scope_of(route)
        # The partner resources live on one router (FastAPI wraps included routers).
        for route in routes.router.routes
        if isinstance(route, APIRoute)
        for method in (route.methods or ())
    }
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    components["securitySchemes"] = {
        "partnerOAuth": {
            "type": "oauth2",
            "description": "Client credentials; send the token as `Authorization: Bearer`.",
            "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": SCOPE_HELP}},
        }
    }
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            scope = scopes.get((path, method))
            if scope:
                operation["security"] = [{"partnerOAuth": [scope]}]
            responses = operation.get("responses", {})
            for status, response in responses.items():
                code = int(status) if str(status).isdigit() else 0
                content = response.get("content", {})
                schema = content.get("application/json", {}).get("schema", {})
                if code >= 400 and "OAuthError" not in str(schema):
                    response["content"] = {"application/problem+json": {"schema": problem_ref}}
                    response["description"] = problems.describe(code)
    return document


def create_app(
    *,
    issuer: str,
    guard: Guard,
    tokens: TokenService,
    payments: Payments,
    webhooks: Webhooks,
    ready: Callable[[], Awaitable[bool]],
) -> FastAPI:
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.guard = guard
    app.state.tokens = tokens
    app.state.payments = payments
    app.state.webhooks = webhooks
    problems.install(app)
    app.include_router(oauth.router)
    app.include_router(routes.router)
    document: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not document:
            document.update(build_openapi(app, issuer))
        return document

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json() -> JSONResponse:
        return JSONResponse(openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        return HTMLResponse(
            docs.render(openapi()),
            headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
        )

    @app.get("/health/live", include_in_schema=False)
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", include_in_schema=False)
    async def is_ready() -> Response:
        if await ready():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "starting"}, status_code=503)

    @app.middleware("http")
    async def bounded_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            return problems.problem_response(
                413, "BODY_TOO_LARGE", f"bodies are limited to {MAX_BODY_BYTES} bytes"
            )
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            return problems.problem_response(
                411, "LENGTH_REQUIRED", "send the body with a Content-Length"
            )
        return await call_next(request)

    @app.middleware("http")
    async def one_line_per_request(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(service="gateway", request_id=request_id)
        # One server span per request; the wallet and risk calls inside it are its children.
        with _tracer.start_as_current_span(
            f"{request.method} {request.url.path}", kind=SpanKind.SERVER
        ) as span:
            response = await call_next(request)
            span.set_attribute("http.response.status_code", response.status_code)
        response.headers["X-Request-Id"] = request_id
        _log.info(
            "http",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response

    # Added last, so it wraps the others: refused bodies are counted too.
    app.add_middleware(HttpMetricsMiddleware, service="gateway")
    return app
