"""The console as one ASGI application: sign-in, the pages, health and static files."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from services.console.api import pages
from services.console.api.security import (
    CSRF_FIELD,
    SIGN_IN_FIELD,
    Cookies,
    SecurityHeaders,
    current_session,
    first,
    read_form,
    same,
)
from services.console.clients.peers import Peers
from services.console.use_cases.operations import Operations
from services.console.use_cases.sign_in import SignIn, SignInRefused
from services.runtime.http_metrics import HttpMetricsMiddleware

HERE = Path(__file__).resolve().parent.parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
# Where a signed-in operator may be sent back to: the console's own pages only.
_PAGES = ("/alerts", "/policy", "/cases", "/resets", "/charts", "/activity")


def _safe_next(value: str) -> str:
    return value if value.startswith(_PAGES) and "//" not in value else "/alerts"


def create_app(
    *,
    sign_in: SignIn,
    operations: Operations,
    peers: Peers,
    cookies: Cookies,
    poll_seconds: float,
    ready: Callable[[], Awaitable[bool]],
) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/health/ready", include_in_schema=False)
    async def health_ready() -> Response:
        ok = await ready()
        return JSONResponse({"status": "ok" if ok else "starting"}, status_code=200 if ok else 503)

    def sign_in_page(request: Request, *, error: str = "", status: int = 200) -> Response:
        token = cookies.sign_in_token(request)
        response = TEMPLATES.TemplateResponse(
            request,
            "sign_in.html",
            {
                "error": error,
                "next": _safe_next(request.query_params.get("next", "")),
                "sign_in_token": token,
            },
            status_code=status,
        )
        cookies.keep_sign_in_token(response, token)
        return response

    @app.get("/sign-in", include_in_schema=False)
    async def sign_in_form(request: Request) -> Response:
        if await current_session(request, cookies, sign_in) is not None:
            return RedirectResponse("/alerts", status_code=303)
        return sign_in_page(request)

    @app.post("/sign-in", include_in_schema=False)
    async def sign_in_submit(request: Request) -> Response:
        form = await read_form(request)
        if not same(request.cookies.get(cookies.sign_in_name, ""), first(form, SIGN_IN_FIELD)):
            return sign_in_page(request, error="The form expired: sign in again.", status=403)
        client = request.client.host if request.client else ""
        try:
            token, _ = await sign_in.sign_in(first(form, "name"), first(form, "password"), client)
        except SignInRefused:
            return sign_in_page(request, error="Wrong name or password.", status=401)
        # A session the browser already carried ends: only the new cookie value is valid.
        await sign_in.end(request.cookies.get(cookies.session_name, ""))
        response = RedirectResponse(_safe_next(first(form, "next")), status_code=303)
        cookies.start_session(response, token)
        return response

    @app.post("/sign-out", include_in_schema=False)
    async def sign_out(request: Request) -> Response:
        session = await current_session(request, cookies, sign_in)
        form = await read_form(request)
        if session is None or not same(session.csrf_token, first(form, CSRF_FIELD)):
            return HTMLResponse("Refused: missing or wrong CSRF token.", status_code=403)
        await sign_in.sign_out(request.cookies.get(cookies.session_name, ""), session.operator)
        response = RedirectResponse("/sign-in", status_code=303)
        cookies.end_session(response)
        return response

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/alerts", status_code=303)

    context: dict[str, Any] = {"poll_ms": int(poll_seconds * 1000)}
    app.include_router(
        pages.router(
            templates=TEMPLATES,
            operations=operations,
            peers=peers,
            session_of=lambda request: current_session(request, cookies, sign_in),
            context=context,
        )
    )

    @app.exception_handler(pages.SignInNeeded)
    async def to_sign_in(request: Request, _: Exception) -> Response:
        if request.headers.get("x-console-fragment"):
            return HTMLResponse("signed out", status_code=401)
        target = quote(request.url.path, safe="/")
        return RedirectResponse(f"/sign-in?next={target}", status_code=303)

    @app.exception_handler(pages.CsrfRefused)
    async def csrf_refused(request: Request, _: Exception) -> Response:
        return HTMLResponse("Refused: missing or wrong CSRF token.", status_code=403)

    app.add_middleware(SecurityHeaders, strict_transport=cookies.secure)
    # Outermost, so refusals and redirects are counted too.
    app.add_middleware(HttpMetricsMiddleware, service="console")
    return app
