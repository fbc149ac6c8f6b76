"""The people's pages as one ASGI application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from services.runtime.http_metrics import HttpMetricsMiddleware
from services.web.api import pages_account, pages_wallet
from services.web.api.web import HERE, Browser, SecurityHeaders, render, where
from services.web.clients.calls import Refused
from services.web.use_cases.accounts import Accounts, Where
from services.web.use_cases.money import Money

# Far above any form a person sends; a larger body is refused before it is read.
MAX_BODY_BYTES = 64 * 1024


@dataclass
class Deps:
    browser: Browser
    accounts: Accounts
    money: Money
    trust_forwarded_for: bool

    def where(self, request: Request) -> Where:
        return where(request, self.trust_forwarded_for)


def create_app(*, deps: Deps, origin: str, ready: Callable[[], Awaitable[bool]]) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.deps = deps
    public = urlsplit(origin)
    public_host = public.netloc.lower()

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/health/ready", include_in_schema=False)
    async def health_ready() -> Response:
        ok = await ready()
        return PlainTextResponse("ok" if ok else "starting", status_code=200 if ok else 503)

    @app.middleware("http")
    async def browser_session(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if path in ("/healthz", "/health/ready") or path.startswith("/static/"):
            response: Response = await call_next(request)
            return response
        if request.headers.get("host", "").lower() != public_host:
            # One origin for cookies and passkeys: a mail link to another name of this host
            # (127.0.0.1 for localhost) lands on the public origin.
            if request.method in ("GET", "HEAD"):
                query = f"?{request.url.query}" if request.url.query else ""
                return RedirectResponse(f"{origin}{path}{query}", status_code=308)
            return PlainTextResponse("wrong origin", status_code=403)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return PlainTextResponse("too large", status_code=413)
        try:
            response = await call_next(request)
        except Refused as refused:
            session = await deps.browser.load(request)
            response = render(
                request, session, "message.html", 503, title="error_title", error=refused
            )
        return await deps.browser.save(request, response)

    @app.exception_handler(HTTPException)
    async def refused_request(request: Request, error: HTTPException) -> Response:
        return PlainTextResponse(str(error.detail), status_code=error.status_code)

    app.include_router(pages_account.router)
    app.include_router(pages_wallet.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    wrapped: Any = HttpMetricsMiddleware(
        SecurityHeaders(app, secure=public.scheme == "https"), service="web"
    )
    return wrapped  # type: ignore[no-any-return]
