"""The account use cases against an in-memory identity: which proofs each call
carries, when tokens are refreshed, and what ends a browser's sign-in."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import jwt
import pytest
from mamoru.identity.v1 import identity_pb2 as pb

from services.runtime.device_proof import verify_proof
from services.web.clients.calls import Refused
from services.web.domain.sessions import BrowserSession
from services.web.use_cases.accounts import Accounts, Where

WHERE = Where(ip="192.0.2.7", user_agent="Chromium")


def token(amr: list[str], lifetime: float = 300.0) -> str:
    claims = {"amr": amr, "exp": int(time.time() + lifetime)}
    return jwt.encode(claims, "a key the web service never checks, 32+ bytes", algorithm="HS256")


def tokens(amr: list[str], level: int = 2, lifetime: float = 300.0) -> pb.SessionTokens:
    reply = pb.SessionTokens(
        access_token=token(amr, lifetime),
        refresh_token=f"refresh-{time.monotonic_ns()}",
        session_id="s-1",
        assurance_level=level,
    )
    reply.access_token_expires_at.FromSeconds(int(time.time() + lifetime))
    return reply


class Unauthenticated(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(
            grpc.StatusCode.UNAUTHENTICATED, grpc.aio.Metadata(), grpc.aio.Metadata(), "ended"
        )


@dataclass
class Identity:
    """What the use cases call, recording each request."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    session: pb.SessionTokens = field(default_factory=lambda: tokens(["passkey"]))
    refresh_fails: bool = False

    def __getattr__(self, rpc: str) -> Any:
        async def call(request: Any, **_: Any) -> Any:
            self.calls.append((rpc, request))
            if rpc == "Login":
                return pb.LoginResponse(session=self.session)
            if rpc == "RefreshSession":
                if self.refresh_fails:
                    raise Unauthenticated()
                return pb.RefreshSessionResponse(session=self.session)
            if rpc == "ExchangeToken":
                reply = pb.ExchangeTokenResponse(access_token="wallet-token")
                reply.expires_at.FromSeconds(int(time.time() + 300))
                return reply
            return getattr(pb, f"{rpc}Response")()

        return call


async def test_every_device_proof_is_signed_by_the_browsers_own_key() -> None:
    identity = Identity()
    accounts = Accounts(identity, timeout=1.0)
    browser = BrowserSession()
    assert await accounts.login(browser, WHERE, "a@example.jp", "pw")
    [(rpc, request)] = identity.calls
    assert rpc == "Login"
    proven = verify_proof(request.device_proof, rpc="Login", bound="a@example.jp")
    assert proven is not None and proven.thumbprint == browser.device_key().thumbprint
    assert request.client.ip_address == WHERE.ip
    assert browser.signed_in and browser.session_id == "s-1"


async def test_an_access_token_about_to_expire_is_refreshed_with_a_bound_proof() -> None:
    identity = Identity(session=tokens(["passkey"], lifetime=10))
    accounts = Accounts(identity, timeout=1.0)
    browser = BrowserSession()
    await accounts.login(browser, WHERE, "a@example.jp", "pw")
    spent = browser.refresh_token
    identity.session = tokens(["passkey"])
    await accounts.factors(browser, WHERE)
    rpc, request = identity.calls[1]
    assert rpc == "RefreshSession"
    assert verify_proof(request.device_proof, rpc="RefreshSession", bound=spent) is not None
    assert browser.refresh_token == identity.session.refresh_token
    assert identity.calls[2][0] == "ListFactors"


async def test_a_refused_refresh_signs_the_browser_out() -> None:
    identity = Identity(session=tokens(["passkey"], lifetime=10))
    accounts = Accounts(identity, timeout=1.0)
    browser = BrowserSession()
    await accounts.login(browser, WHERE, "a@example.jp", "pw")
    identity.refresh_fails = True
    with pytest.raises(Refused) as refused:
        await accounts.factors(browser, WHERE)
    assert refused.value.reason == "signed_out"
    assert not browser.signed_in and browser.access_token == ""


async def test_an_emailed_code_never_asks_identity_for_a_wallet_token() -> None:
    identity = Identity(session=tokens(["pwd", "email_code"]))
    accounts = Accounts(identity, timeout=1.0)
    browser = BrowserSession()
    await accounts.login(browser, WHERE, "a@example.jp", "pw")
    with pytest.raises(Refused) as refused:
        await accounts.wallet_token(browser, WHERE)
    assert refused.value.reason == "fresh_sign_in_needed"
    assert [rpc for rpc, _ in identity.calls] == ["Login"]


async def test_a_wallet_token_is_exchanged_once_and_kept_while_it_lives() -> None:
    identity = Identity()
    accounts = Accounts(identity, timeout=1.0)
    browser = BrowserSession()
    await accounts.login(browser, WHERE, "a@example.jp", "pw")
    assert await accounts.wallet_token(browser, WHERE) == "wallet-token"
    assert await accounts.wallet_token(browser, WHERE) == "wallet-token"
    exchanges = [request for rpc, request in identity.calls if rpc == "ExchangeToken"]
    assert len(exchanges) == 1
    bound = browser.access_token
    assert verify_proof(exchanges[0].device_proof, rpc="ExchangeToken", bound=bound)
