"""The console's browser-facing protections: the session cookie, CSRF tokens on every
POST, and the headers every answer carries (a strict Content-Security-Policy)."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console.domain.records import Session
from services.console.use_cases.sign_in import SignIn

# No inline script or style, nothing from elsewhere; forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# An SVG chart opened on its own: its inline styles, nothing else; never framed (the
# pages show it through <img>, which frame-ancestors does not govern), and sandboxed
# so that even markup slipped into a label could not run or reach the console's origin.
IMAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; sandbox"
MAX_FORM_BYTES = 64 * 1024
SIGN_IN_FIELD = "sign_in_token"
CSRF_FIELD = "csrf_token"


class SecurityHeaders:
    """Adds the headers to every answer, pages, fragments and errors alike."""

    def __init__(self, app: ASGIApp, *, strict_transport: bool = False) -> None:
        self._app = app
        # Only a console served over TLS says so: HSTS on plain HTTP would be ignored
        # at best, and would break a local console at worst.
        self._always = [
            (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if strict_transport:
            self._always.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in self._always:
                    if name not in present:
                        headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self._app(scope, receive, with_headers)


@dataclass
class Cookies:
    secure: bool
    session_seconds: int

    @property
    def session_name(self) -> str:
        # __Host- pins the cookie to this host and path, which browsers allow only when Secure.
        return "__Host-console-session" if self.secure else "console-session"

    @property
    def sign_in_name(self) -> str:
        return "__Host-console-sign-in" if self.secure else "console-sign-in"

    def _set(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def start_session(self, response: Response, token: str) -> None:
        self._set(response, self.session_name, token, self.session_seconds)
        # Browsers ignore a __Host- cookie set without Secure, its removal included.
        response.delete_cookie(self.sign_in_name, path="/", secure=self.secure, httponly=True)

    def end_session(self, response: Response) -> None:
        response.delete_cookie(self.session_name, path="/", secure=self.secure, httponly=True)

    def sign_in_token(self, request: Request) -> str:
        """The sign-in form's own CSRF token (double submit: cookie and field must match)."""
        given = request.cookies.get(self.sign_in_name, "")
        return given if 20 <= len(given) <= 64 else secrets.token_urlsafe(24)

    def keep_sign_in_token(self, response: Response, token: str) -> None:
        self._set(response, self.sign_in_name, token, 3600)


async def read_form(request: Request) -> dict[str, list[str]]:
    """An urlencoded form, bounded in size; anything else reads as empty."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        return {}
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)


def first(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0]


def same(expected: str, given: str) -> bool:
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


async def current_session(request: Request, cookies: Cookies, sign_in: SignIn) -> Session | None:
    return await sign_in.session(request.cookies.get(cookies.session_name, ""))
