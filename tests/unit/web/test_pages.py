"""The web service's pure parts: settings, the browser session, redirects, words, codes."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from services.runtime.config import ConfigError, load_settings
from services.runtime.device_proof import verify_proof
from services.web.api.i18n import _CATALOGUE, error_key, translator
from services.web.api.web import local_path
from services.web.domain.codes import barcode_svg, qr_svg
from services.web.domain.sessions import BrowserSession
from services.web.settings import WebSettings
from services.web.use_cases.money import KINDS

TEMPLATES = Path(__file__).resolve().parents[3] / "services" / "web" / "templates"
KEY = base64.b64encode(bytes(32)).decode()
BASE = {"DATABASE_URL": "postgresql://localhost/web", "WEB_SECRETS_KEY": KEY}


def test_the_public_url_must_be_a_bare_origin() -> None:
    with pytest.raises(ConfigError, match="WEB_PUBLIC_URL"):
        load_settings(WebSettings, {**BASE, "WEB_PUBLIC_URL": "https://pay.example/app"})
    with pytest.raises(ConfigError, match="WEB_SECRETS_KEY"):
        load_settings(WebSettings, {**BASE, "WEB_SECRETS_KEY": "c2hvcnQ="})
    served = load_settings(WebSettings, {**BASE, "WEB_PUBLIC_URL": "https://pay.example/"})
    assert served.origin() == "https://pay.example"
    assert served.secure_cookies()
    assert not load_settings(WebSettings, BASE).secure_cookies()


def test_a_stored_session_keeps_its_device_key_and_signs_proofs_identity_accepts() -> None:
    session = BrowserSession(refresh_token="r", pending={"verify_email": "a@example.jp"})
    again = BrowserSession.loads(session.dumps())
    assert again == session
    assert again.device_key().thumbprint == session.device_key().thumbprint
    proof = again.proof("Login", "a@example.jp")
    proven = verify_proof(proof, rpc="Login", bound="a@example.jp")
    assert proven is not None and proven.thumbprint == session.device_key().thumbprint


def test_signing_out_forgets_the_tokens_but_the_browser_stays_the_same_device() -> None:
    session = BrowserSession(access_token="a", refresh_token="r", wallet_token="w", lang="en")
    key, csrf = session.device_key_pem, session.csrf
    session.sign_out()
    assert not session.signed_in
    assert (session.access_token, session.wallet_token) == ("", "")
    assert session.device_key_pem == key and session.lang == "en"
    assert session.csrf != csrf


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "wallet", "javascript:alert(1)"]
)
def test_a_redirect_never_leaves_the_site(target: str) -> None:
    assert local_path(target) == "/"


def test_a_path_on_the_site_is_kept() -> None:
    assert local_path("/wallet/pay?x=1") == "/wallet/pay?x=1"


def test_every_word_the_templates_use_exists_in_both_languages() -> None:
    used = {
        key
        for path in TEMPLATES.glob("*.html")
        for key in re.findall(r"t\('([a-z_]+)'[,)]", path.read_text())
    }
    assert used <= set(_CATALOGUE), sorted(used - set(_CATALOGUE))
    # The history names each kind of movement.
    assert {f"kind_{kind}" for kind in KINDS.values()} | {"kind_other"} <= set(_CATALOGUE)
    for key, (japanese, english) in _CATALOGUE.items():
        assert japanese and english, key
    assert translator("en")("verify_lead", email="x@example.jp").endswith("x@example.jp.")
    assert translator("ja")("sign_in") == "サインイン"


def test_refusals_are_told_in_the_persons_words_never_the_services() -> None:
    assert error_key("UNAUTHENTICATED") == "err_unauthenticated"
    assert error_key("too_many") == "err_too_many"
    assert error_key("CHANNEL_SUSPENDED") == "err_channel_suspended"
    assert error_key("RESET_TOKEN_INVALID") == "err_link"
    assert error_key("SOMETHING_NEW") == "err_other"


def test_the_payment_code_is_drawn_as_svg() -> None:
    for uri in (qr_svg("12345678901234567890"), barcode_svg("12345678901234567890")):
        prefix = "data:image/svg+xml;base64,"
        assert uri.startswith(prefix)
        assert b"<svg" in base64.b64decode(uri[len(prefix) :])
