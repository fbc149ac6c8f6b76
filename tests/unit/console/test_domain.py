"""The console's pure rules: who may sign in, and how decisions become charts."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.responses import PlainTextResponse, Response
from starlette.applications import Starlette
from starlette.routing import Route

from services.console.api.security import IMAGE_POLICY, Cookies, SecurityHeaders
from services.console.domain import charts
from services.console.domain.operators import entry, hash_entry, parse_operators
from services.console.settings import ConsoleSettings
from services.runtime.config import ConfigError, load_settings

PASSWORD = "a long operator password"


def test_an_operator_signs_in_with_their_own_password_only() -> None:
    book = parse_operators(f"{entry('aiko', PASSWORD)};\n{entry('ken', 'another long one')}")
    assert book.names() == ["aiko", "ken"]
    assert book.verify("aiko", PASSWORD)
    assert not book.verify("aiko", "another long one")
    assert not book.verify("nobody", PASSWORD)


@pytest.mark.parametrize(
    "text",
    ["aiko", "aiko:plain", "a iko:$argon2id$x", "bad/name:$argon2id$x", "x" * 65 + ":$argon2id"],
)
def test_an_operator_list_that_is_not_name_and_argon2id_hash_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_operators(text)


def test_the_same_operator_listed_twice_is_refused() -> None:
    line = entry("aiko", PASSWORD)
    with pytest.raises(ValueError, match="twice"):
        parse_operators(f"{line};{line}")


def test_hash_password_prints_an_entry_the_console_accepts() -> None:
    out = io.StringIO()
    assert hash_entry(["aiko"], io.StringIO(PASSWORD + "\n"), out) == 0
    assert parse_operators(out.getvalue()).verify("aiko", PASSWORD)
    short = io.StringIO()
    assert hash_entry(["aiko"], io.StringIO("short\n"), short) == 2
    assert "12 characters" in short.getvalue()


def test_settings_without_an_operator_stop_the_start() -> None:
    environ = {"DATABASE_URL": "postgresql://localhost/console", "CONSOLE_OPERATORS": " ; "}
    with pytest.raises(ConfigError, match="CONSOLE_OPERATORS names no operator"):
        load_settings(ConsoleSettings, environ)
    environ["CONSOLE_OPERATORS"] = entry("aiko", PASSWORD)
    settings = load_settings(ConsoleSettings, environ)
    assert "argon2" not in repr(settings)
    assert settings.operator_tls() == settings.tls_dir


def test_attempts_and_refusals_are_counted_in_their_time_buckets() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    points = [
        charts.Point(now - timedelta(minutes=5), "login", "DENY"),
        charts.Point(now - timedelta(minutes=6), "login", "ALLOW"),
        charts.Point(now - timedelta(minutes=7), "top_up", "THROTTLE"),
        charts.Point(now - timedelta(hours=2), "login", "DENY"),  # outside the window
    ]
    series = charts.over_time(points, now, timedelta(hours=1))
    assert len(series.starts) == charts.BUCKETS
    assert sum(series.attempts) == 3
    assert sum(series.refusals) == 2
    # 2.5-minute buckets: 7 and 6 minutes ago share one, 5 minutes ago is the next.
    assert series.attempts[21:] == [2, 1, 0]
    assert series.refusals[21:] == [1, 1, 0]
    assert charts.by_outcome(points) == {"ALLOW": 1, "CHALLENGE": 0, "THROTTLE": 1, "DENY": 2}


def test_the_charts_are_svg_that_load_nothing_from_elsewhere() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    series = charts.over_time([charts.Point(now, "login", "ALLOW")], now, timedelta(hours=1))
    for svg in (charts.attempts_svg(series), charts.outcomes_svg({"ALLOW": 3, "DENY": 1})):
        assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg
        # pygal's tooltip script would come from its site; only its inert settings remain.
        assert svg.count(b"<script") == 1 and b"window.pygal.config" in svg
        assert b"src=" not in svg and b'href="http' not in svg


def test_signing_in_removes_the_secure_sign_in_cookie_in_a_form_browsers_accept() -> None:
    response = Response()
    Cookies(secure=True, session_seconds=60).start_session(response, "token")
    removal = [
        value
        for value in response.headers.getlist("set-cookie")
        if value.startswith("__Host-console-sign-in=")
    ]
    assert len(removal) == 1 and "Secure" in removal[0] and "Max-Age=0" in removal[0]


def test_a_chart_opened_on_its_own_runs_nothing_and_cannot_be_framed() -> None:
    rules = dict(part.strip().partition(" ")[::2] for part in IMAGE_POLICY.split(";"))
    assert rules["default-src"] == "'none'"
    assert rules["frame-ancestors"] == "'none'"
    assert "sandbox" in rules
    assert "script-src" not in rules


@pytest.mark.parametrize("secure", [True, False])
async def test_a_console_served_over_tls_tells_browsers_to_stay_on_tls(secure: bool) -> None:
    inner = Starlette(routes=[Route("/", lambda _: PlainTextResponse("ok"))])
    transport = httpx.ASGITransport(app=SecurityHeaders(inner, strict_transport=secure))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        headers = (await client.get("/")).headers
    assert headers["x-frame-options"] == "DENY"
    assert ("strict-transport-security" in headers) is secure
