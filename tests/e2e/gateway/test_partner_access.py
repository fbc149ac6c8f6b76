"""Who gets a token and who keeps access: private_key_jwt assertions, revocation,
rate limits and risk's partner kill switch, against the running system."""

from __future__ import annotations

import functools
import json
import time
import uuid
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import ECKey
from mamoru.risk.v1 import risk_pb2

from tests.e2e.gateway.conftest import Gateway, eventually
from tests.support.people import TIMEOUT

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def assertion(client_id: str, audience: str, key: ECKey, **overrides: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return jwt.encode({"alg": "ES256", "kid": "partner-key-1"}, claims, key)


async def token_with(gateway: Gateway, signed: str) -> tuple[int, dict[str, object]]:
    reply = await gateway.http.post(
        f"{gateway.url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed,
        },
    )
    return reply.status_code, reply.json()


async def test_private_key_jwt_issues_a_token_and_refuses_a_forged_replayed_or_expired_assertion(
    gateway: Gateway, tmp_path: Path
) -> None:
    created = await gateway.admin(
        "partner", "create", "--name", "key holder", "--scope", "merchants:read"
    )
    client_id = created["client_id"]
    key = ECKey.generate_key("P-256")
    public = {**key.as_dict(private=False), "kid": "partner-key-1"}
    (tmp_path / "key.json").write_text(json.dumps(public))
    await gateway.admin("partner", "key", client_id, "--jwk", str(tmp_path / "key.json"))
    metadata = (
        await gateway.http.get(f"{gateway.url}/.well-known/oauth-authorization-server")
    ).json()
    audience = metadata["token_endpoint"]
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]

    good = assertion(client_id, audience, key)
    status, body = await token_with(gateway, good)
    assert status == 200, body
    merchants = await gateway.http.get(
        f"{gateway.url}/v1/merchants", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert merchants.status_code == 200

    # RFC 6749 §5.2: 400 with invalid_client when no Authorization header was sent.
    replayed_status, replayed = await token_with(gateway, good)
    assert (replayed_status, replayed["error"]) == (400, "invalid_client")

    forger = ECKey.generate_key("P-256")
    forged_status, forged = await token_with(gateway, assertion(client_id, audience, forger))
    assert (forged_status, forged["error"]) == (400, "invalid_client")

    past = int(time.time()) - 600
    expired_status, expired = await token_with(
        gateway, assertion(client_id, audience, key, iat=past, exp=past + 60)
    )
    assert (expired_status, expired["error"]) == (400, "invalid_client")

    now = int(time.time())
    lasting_status, lasting = await token_with(
        gateway, assertion(client_id, audience, key, iat=now, exp=now + 3600)
    )
    assert (lasting_status, lasting["error"]) == (400, "invalid_client")

    elsewhere_status, _ = await token_with(
        gateway, assertion(client_id, "https://elsewhere.example/token", key)
    )
    assert elsewhere_status == 400


async def test_revoking_a_partner_refuses_its_live_token_within_two_seconds(
    gateway: Gateway,
) -> None:
    client_id, secret = await gateway.partner("merchants:read")
    token = await gateway.token(client_id, secret)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await gateway.http.get(f"{gateway.url}/v1/merchants", headers=headers)).is_success

    await gateway.admin("partner", "revoke", client_id)
    revoked_at = time.monotonic()

    async def refused() -> bool:
        reply = await gateway.http.get(f"{gateway.url}/v1/merchants", headers=headers)
        return reply.status_code == 401

    await eventually(refused, within=60)
    assert time.monotonic() - revoked_at <= 2.0
    again = await gateway.http.post(
        f"{gateway.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
    )
    assert again.status_code == 401


async def test_removing_a_secret_refuses_its_tokens_within_two_seconds_but_not_the_others(
    gateway: Gateway,
) -> None:
    client_id, leaked = await gateway.partner("merchants:read")
    rotated = await gateway.admin("partner", "secret", client_id)
    shown = await gateway.admin("partner", "show", client_id)
    [leaked_id] = [
        c["credential_id"]
        for c in shown["credentials"]
        if c["kind"] == "secret" and c["credential_id"] != rotated["credential_id"]
    ]
    old = {"Authorization": f"Bearer {await gateway.token(client_id, leaked)}"}
    new = {"Authorization": f"Bearer {await gateway.token(client_id, rotated['client_secret'])}"}
    assert (await gateway.http.get(f"{gateway.url}/v1/merchants", headers=old)).is_success

    await gateway.admin("partner", "remove-credential", client_id, leaked_id)
    removed_at = time.monotonic()

    async def refused() -> bool:
        reply = await gateway.http.get(f"{gateway.url}/v1/merchants", headers=old)
        return reply.status_code == 401

    await eventually(refused, within=60)
    assert time.monotonic() - removed_at <= 2.0
    assert (await gateway.http.get(f"{gateway.url}/v1/merchants", headers=new)).is_success
    again = await gateway.http.post(
        f"{gateway.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, leaked),
    )
    assert again.status_code == 401


async def test_removing_a_key_refuses_the_tokens_it_signed_for_but_not_the_other_keys(
    gateway: Gateway, tmp_path: Path
) -> None:
    created = await gateway.admin(
        "partner", "create", "--name", "two keys", "--scope", "merchants:read"
    )
    client_id = created["client_id"]
    audience = f"{gateway.url}/oauth/token"
    keys = {name: ECKey.generate_key("P-256") for name in ("old", "new")}
    key_ids = {}
    for name, key in keys.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(key.as_dict(private=False)))
        added = await gateway.admin(
            "partner", "key", client_id, "--jwk", str(tmp_path / f"{name}.json")
        )
        key_ids[name] = added["credential_id"]
    headers: dict[str, dict[str, str]] = {}

    async def token_signed_by(name: str) -> bool:
        # No kid in the assertion: the gateway finds the key that signed it. Polled, as
        # a replica may still hold its copy of the partner from before the key was added.
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "exp": int(time.time()) + 60,
            "jti": str(uuid.uuid4()),
        }
        status, body = await token_with(gateway, jwt.encode({"alg": "ES256"}, claims, keys[name]))
        headers[name] = {"Authorization": f"Bearer {body.get('access_token')}"}
        return status == 200

    for name in keys:
        await eventually(functools.partial(token_signed_by, name), within=60)

    await gateway.admin("partner", "remove-credential", client_id, key_ids["old"])

    async def refused() -> bool:
        reply = await gateway.http.get(f"{gateway.url}/v1/merchants", headers=headers["old"])
        return reply.status_code == 401

    await eventually(refused, within=60)
    reply = await gateway.http.get(f"{gateway.url}/v1/merchants", headers=headers["new"])
    assert reply.status_code == 200


async def test_past_its_rate_limit_a_partner_gets_429_with_retry_after(gateway: Gateway) -> None:
    client_id, secret = await gateway.partner("merchants:read", requests_per_minute=3)
    token = await gateway.token(client_id, secret)
    headers = {"Authorization": f"Bearer {token}"}
    statuses = []
    for _ in range(4):
        reply = await gateway.http.get(f"{gateway.url}/v1/merchants", headers=headers)
        statuses.append(reply.status_code)
    # A minute boundary may fall inside the loop; then the next window also fills.
    if 429 not in statuses:
        for _ in range(4):
            reply = await gateway.http.get(f"{gateway.url}/v1/merchants", headers=headers)
            if reply.status_code == 429:
                break
    assert reply.status_code == 429
    assert 1 <= int(reply.headers["Retry-After"]) <= 60
    assert reply.json()["reason"] == "RATE_LIMITED"


async def test_risks_partner_kill_switch_refuses_the_partner_within_two_seconds(
    gateway: Gateway,
) -> None:
    client_id, secret = await gateway.partner("merchants:read")
    other_id, other_secret = await gateway.partner("merchants:read")
    token = await gateway.token(client_id, secret)
    headers = {"Authorization": f"Bearer {token}"}
    risk = gateway.cluster.stub("risk", as_="operator")

    async def switch(suspended: bool) -> None:
        await risk.SetPolicy(
            risk_pb2.SetPolicyRequest(
                partner=risk_pb2.PartnerChange(partner_id=client_id, suspended=suspended),
                reason="partner leaking requests",
            ),
            timeout=TIMEOUT,
        )

    await switch(True)
    flipped_at = time.monotonic()
    try:

        async def refused() -> bool:
            reply = await gateway.http.get(f"{gateway.url}/v1/merchants", headers=headers)
            return reply.status_code == 403 and reply.json()["reason"] == "PARTNER_SUSPENDED"

        await eventually(refused, within=60)
        assert time.monotonic() - flipped_at <= 2.0
        token_reply = await gateway.http.post(
            f"{gateway.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        )
        assert token_reply.status_code == 401
        await gateway.token(other_id, other_secret)
    finally:
        await switch(False)

    async def back() -> bool:
        reply = await gateway.http.get(f"{gateway.url}/v1/merchants", headers=headers)
        return reply.status_code == 200

    await eventually(back, within=60)


async def test_guessing_a_clients_secret_is_cut_off_with_429_before_it_costs_more_hashes(
    gateway: Gateway,
) -> None:
    client_id, secret = await gateway.partner("merchants:read")
    token = await gateway.token(client_id, secret)
    statuses = []
    # Up to two windows: a minute boundary may fall inside the loop.
    for attempt in range(45):
        reply = await gateway.http.post(
            f"{gateway.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, f"guess-{attempt}"),
        )
        statuses.append(reply.status_code)
        if reply.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert 1 <= int(reply.headers["Retry-After"]) <= 60
    # The partner's API calls have a bucket of their own.
    merchants = await gateway.http.get(
        f"{gateway.url}/v1/merchants", headers={"Authorization": f"Bearer {token}"}
    )
    assert merchants.status_code == 200
