"""What every page shares: the browser session, CSRF, templates, security headers."""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.web.api.i18n import error_key, translator
from services.web.clients.calls import Refused
from services.web.domain.sessions import BrowserSession, new_id
from services.web.storage.sessions import SessionStore
from services.web.use_cases.accounts import Where

HERE = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
# Japan keeps no daylight saving time: a fixed offset needs no time zone database.
JST = timezone(timedelta(hours=9), "JST")


def _when(moment: datetime | None) -> str:
    return moment.astimezone(JST).strftime("%Y-%m-%d %H:%M JST") if moment else ""


templates.env.filters["when"] = _when
templates.env.globals["utc"] = UTC

# No inline script or style anywhere: scripts and styles come from /static only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Reset and freeze links carry secrets in the query: never pass them on.
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class SecurityHeaders:
    """Adds the headers above to every response, and no-store to every page."""

    def __init__(self, app: ASGIApp, *, secure: bool) -> None:
        self._app = app
        self._headers = list(SECURITY_HEADERS)
        if secure:
            self._headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += self._headers
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self._app(scope, receive, with_headers)


class Browser:
    """The browser session of one request, saved after the page when it changed."""

    def __init__(self, store: SessionStore, cookie: str, secure: bool) -> None:
        self.store = store
        self.cookie = cookie
        self.secure = secure

    async def load(self, request: Request) -> BrowserSession:
        found = getattr(request.state, "browser", None)
        if isinstance(found, BrowserSession):
            return found
        session_id = request.cookies.get(self.cookie, "")
        session = await self.store.load(session_id) if session_id else None
        # A new session (no cookie, or one whose session expired) is always saved.
        request.state.browser_before = session.dumps() if session is not None else ""
        if session is None:
            session_id, session = new_id(), BrowserSession()
            if request.headers.get("accept-language", "").lower().startswith("en"):
                session.lang = "en"
        request.state.browser = session
        request.state.browser_id = session_id
        request.state.browser_signed_in = session.signed_in
        return session

    async def save(self, request: Request, response: Response) -> Response:
        session = getattr(request.state, "browser", None)
        if not isinstance(session, BrowserSession):
            return response
        session_id: str = request.state.browser_id
        if session.signed_in and not request.state.browser_signed_in:
            # A new id and CSRF token on sign-in: what was planted in the browser
            # before (a fixed session id) never gets the person's session.
            await self.store.drop(session_id)
            session_id = request.state.browser_id = new_id()
            session.csrf = secrets.token_urlsafe(32)
            request.state.browser_before = ""
        if session.dumps() != request.state.browser_before:
            await self.store.save(session_id, session)
        if request.cookies.get(self.cookie) != session_id:
            response.set_cookie(
                self.cookie,
                session_id,
                httponly=True,
                secure=self.secure,
                samesite="lax",
                path="/",
            )
        return response


def where(request: Request, trust_forwarded_for: bool) -> Where:
    ip = request.client.host if request.client else ""
    forwarded = request.headers.get("x-forwarded-for", "")
    if trust_forwarded_for and forwarded:
        ip = forwarded.split(",")[0].strip()
    return Where(ip=ip, user_agent=request.headers.get("user-agent", ""))


async def check_csrf(request: Request, session: BrowserSession) -> None:
    """The synchronizer token: every POST carries the session's token (form or header)."""
    sent = request.headers.get("x-csrf-token", "")
    if not sent and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        sent = str((await request.form()).get("csrf_token", ""))
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise HTTPException(status_code=403, detail="csrf")


def local_path(target: str, default: str = "/") -> str:
    """Only paths on this site: a redirect never leaves it."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


def render(
    request: Request, session: BrowserSession, name: str, status: int = 200, **context: Any
) -> HTMLResponse:
    t = translator(session.lang)
    error = context.pop("error", None)
    if isinstance(error, Refused):
        context["error_text"] = t(error_key(error.reason))
        context["error_field"] = error.field
    flash = dict(session.flash)
    session.flash = {}
    return templates.TemplateResponse(
        request,
        name,
        {
            "t": t,
            "lang": session.lang,
            "csrf": session.csrf,
            "signed_in": session.signed_in,
            "flash": flash,
            "path": request.url.path,
            **context,
        },
        status_code=status,
    )


def go(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def to_sign_in(request: Request, session: BrowserSession) -> RedirectResponse:
    """Sign in first; a page that was asked for (GET) opens once that is done."""
    if request.method == "GET":
        query = f"?{request.url.query}" if request.url.query else ""
        session.return_to = local_path(request.url.path + query, "")
    return go("/sign-in")


def after_sign_in(session: BrowserSession) -> str:
    target, session.return_to = session.return_to or "/wallet", ""
    return target
