"""Every error as application/problem+json (RFC 9457), with a reason code and field."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from services.gateway.domain.errors import Refusal

MEDIA_TYPE = "application/problem+json"
_log = structlog.get_logger("mamoru.gateway")


def problem_response(
    status: int,
    reason: str,
    detail: str,
    *,
    field: str = "",
    headers: dict[str, str] | None = None,
    instance: str = "",
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "reason": reason,
    }
    if field:
        body["field"] = field
    if instance:
        body["instance"] = instance
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def stored_problem(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(
        {**body, "title": HTTPStatus(status).phrase}, status_code=status, media_type=MEDIA_TYPE
    )


_DESCRIPTIONS = {
    400: "the body is not JSON (reason MALFORMED_REQUEST)",
    401: "no valid access token (reason TOKEN_INVALID)",
    403: "scope missing, merchant or store not granted, or partner suspended",
    404: "no such resource for this partner",
    409: "the Idempotency-Key was used with another body, or a limit is reached (reason names it)",
    411: "send the body with a Content-Length",
    413: "the body is larger than 64 KiB",
    422: "invalid input (field names it) or a business refusal (reason names it)",
    429: "over the partner's rate limit; see Retry-After",
    503: "a service behind the gateway did not answer; retry with the same key",
}


def describe(status: int) -> str:
    return _DESCRIPTIONS.get(status, HTTPStatus(status).phrase)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(Refusal)
    async def refused(request: Request, refusal: Refusal) -> JSONResponse:
        return problem_response(
            refusal.status,
            refusal.reason,
            refusal.detail,
            field=refusal.field,
            headers=refusal.headers,
            instance=request.url.path,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        return problem_response(
            422,
            "INVALID_ARGUMENT",
            str(first.get("msg", "invalid request")),
            field=_field(tuple(first.get("loc", ()))),
            instance=request.url.path,
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        reason = {
            400: "MALFORMED_REQUEST",
            404: "NOT_FOUND",
            405: "METHOD_NOT_ALLOWED",
        }.get(error.status_code, "HTTP_ERROR")
        return problem_response(
            error.status_code,
            reason,
            str(error.detail),
            headers=dict(error.headers or {}),
            instance=request.url.path,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        _log.exception("http.unexpected_error", path=request.url.path)
        return problem_response(500, "INTERNAL", "something failed on our side")
