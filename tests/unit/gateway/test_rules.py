"""The gateway's pure rules: webhook signatures, grants, scopes and idempotency."""

from __future__ import annotations

import uuid

import pytest

from services.gateway.domain.errors import Refusal
from services.gateway.domain.idempotency import KEY_PATTERN, body_hash
from services.gateway.domain.partners import MerchantGrant, Partner, require_scope, require_store
from services.gateway.domain.signing import sign, verify

MERCHANT = uuid.uuid4()
STORE = uuid.uuid4()


def partner(*grants: MerchantGrant, scopes: tuple[str, ...] = ("payments:capture",)) -> Partner:
    return Partner(
        partner_id=uuid.uuid4(),
        name="p",
        status="active",
        scopes=frozenset(scopes),
        requests_per_minute=10,
        grants=grants,
        credentials=(),
    )


def test_a_signature_verifies_only_with_its_secret_body_and_a_recent_timestamp() -> None:
    body = b'{"type":"payment.captured"}'
    header = sign("whsec_1", body, 1_800_000_000)
    assert verify("whsec_1", body, header, now=1_800_000_010)
    assert not verify("whsec_2", body, header, now=1_800_000_010)
    assert not verify("whsec_1", body + b" ", header, now=1_800_000_010)
    assert not verify("whsec_1", body, header, now=1_800_000_000 + 301)
    assert not verify("whsec_1", body, "v1=abc", now=1_800_000_000)


def test_a_store_outside_the_grant_and_an_unknown_store_get_the_same_refusal() -> None:
    only_one = partner(MerchantGrant(MERCHANT, frozenset({STORE})))
    assert require_store(only_one, MERCHANT, STORE) == MERCHANT
    for merchant, store in ((MERCHANT, uuid.uuid4()), (None, STORE), (uuid.uuid4(), STORE)):
        with pytest.raises(Refusal) as refused:
            require_store(only_one, merchant, store)
        assert (refused.value.status, refused.value.reason) == (403, "STORE_NOT_GRANTED")
    every_store = partner(MerchantGrant(MERCHANT, None))
    assert require_store(every_store, MERCHANT, uuid.uuid4()) == MERCHANT


def test_a_scope_needs_both_the_token_and_the_partner_to_hold_it() -> None:
    holder = partner(scopes=("payments:capture",))
    require_scope(frozenset({"payments:capture"}), holder, "payments:capture")
    with pytest.raises(Refusal):
        require_scope(frozenset({"payments:read"}), holder, "payments:capture")
    with pytest.raises(Refusal):
        require_scope(frozenset({"payments:refund"}), holder, "payments:refund")


def test_the_body_hash_ignores_key_order_but_not_values_or_operation() -> None:
    assert body_hash("capture", {"a": 1, "b": 2}) == body_hash("capture", {"b": 2, "a": 1})
    assert body_hash("capture", {"a": 1}) != body_hash("capture", {"a": 2})
    assert body_hash("capture", {"a": 1}) != body_hash("refund", {"a": 1})
    assert KEY_PATTERN.match("order-1")
    for bad in ("", "with space", "x" * 65, "é"):
        assert not KEY_PATTERN.match(bad)


def test_the_readme_verification_recipe_accepts_what_the_gateway_signs() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    recipe = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "def verify(" in recipe
    namespace: dict[str, object] = {}
    exec(recipe, namespace)  # noqa: S102 - the README's own snippet, run as a partner would
    readme_verify = namespace["verify"]
    assert callable(readme_verify)
    import time

    body = b'{"id":"e1","type":"payment.captured"}'
    header = sign("whsec_demo", body, int(time.time()))
    assert readme_verify("whsec_demo", body, header)
    assert not readme_verify("whsec_other", body, header)
    assert not readme_verify("whsec_demo", body + b"\n", header)


async def test_webhook_urls_must_reach_public_addresses_only() -> None:
    from services.gateway.clients.webhooks import SystemResolver, only_public

    resolver = SystemResolver()
    for internal in (
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "::1",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "localhost",
        "no-such-host.invalid",
    ):
        assert not only_public(await resolver.resolve(internal)), internal
    assert only_public(await resolver.resolve("93.184.215.14"))


def test_production_webhook_urls_are_https_on_port_443() -> None:
    from services.gateway.use_cases.webhooks import url_problem

    assert url_problem("https://hooks.example/in", allow_http=False) is None
    assert url_problem("https://hooks.example:443/in", allow_http=False) is None
    for refused in (
        "https://hooks.example:8443/in",
        "https://hooks.example:22/in",
        "http://hooks.example/in",
        "https:///in",
        "hooks.example/in",
        "https://hooks.example:99999/in",
    ):
        assert url_problem(refused, allow_http=False), refused
    assert url_problem("http://127.0.0.1:8080/in", allow_http=True) is None


def test_every_rpc_the_gateway_calls_admits_the_gateway_principal() -> None:
    from services.gateway.access import OUTBOUND
    from services.risk.access import ACCESS as RISK
    from services.wallet.access import ACCESS as WALLET

    policies = {"wallet": WALLET, "risk": RISK}
    for service, methods in OUTBOUND.items():
        for method in methods:
            assert "gateway" in policies[service][method].callers, (service, method)
    # And nothing that moves a person's own money without their token.
    assert "gateway" not in WALLET["CloseWallet"].callers
    assert WALLET["TopUpFromCard"].audiences


def test_an_access_token_that_names_no_credential_is_refused() -> None:
    import time

    from joserfc import jwt
    from joserfc.jwk import OctKey

    from services.gateway.use_cases.tokens import TokenInvalid, TokenService

    async def never(*_: object) -> None:
        raise AssertionError("not called")

    signing_key = b"k" * 32
    tokens = TokenService(
        issuer="https://gw.example",
        signing_key=signing_key,
        token_seconds=60,
        find_partner=never,
        remember_jti=never,  # type: ignore[arg-type]
        count_attempt=never,
    )
    partner_id, credential_id = uuid.uuid4(), uuid.uuid4()
    claims = {
        "iss": "https://gw.example",
        "aud": "https://gw.example",
        "sub": str(partner_id),
        "exp": int(time.time()) + 60,
        "scope": "merchants:read",
    }
    header = {"alg": "HS256", "typ": "at+jwt"}
    key = OctKey.import_key(signing_key)
    named = tokens.verify(jwt.encode(header, {**claims, "cid": str(credential_id)}, key))
    assert (named.partner_id, named.credential_id) == (partner_id, credential_id)
    for unbound in (claims, {**claims, "cid": "not-a-credential"}):
        with pytest.raises(TokenInvalid):
            tokens.verify(jwt.encode(header, unbound, key))
