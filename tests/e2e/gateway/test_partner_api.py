"""The partner API end to end: OAuth2 client credentials, payments by code,
idempotency, scopes and grants, against the real wallet, risk and identity."""

from __future__ import annotations

import uuid
from typing import Any

from tests.e2e.gateway.conftest import Gateway, eventually


def bearer(token: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def sale(gateway: Gateway, code: str, amount: int = 500, store: int = 0) -> dict[str, Any]:
    return {
        "code": code,
        "amount": {"amount_minor": amount, "currency": "JPY"},
        "store_id": gateway.merchant.store_ids[store],
        "basket_categories": ["food"],
    }


async def test_a_partner_with_a_secret_captures_reads_lists_and_refunds_a_payment(
    gateway: Gateway,
) -> None:
    client_id, secret = await gateway.partner()
    token = await gateway.token(client_id, secret)
    http, url = gateway.http, gateway.url

    captured = await http.post(
        f"{url}/v1/payments",
        json=sale(gateway, await gateway.code(), 700),
        headers=bearer(token, str(uuid.uuid4())),
    )
    assert captured.status_code == 201, captured.text
    payment = captured.json()
    assert payment["status"] == "captured"
    assert payment["amount"] == {"amount_minor": 700, "currency": "JPY"}
    assert payment["merchant_id"] == gateway.merchant.merchant_id

    read = await http.get(f"{url}/v1/payments/{payment['id']}", headers=bearer(token))
    assert read.status_code == 200 and read.json() == payment
    listed = await http.get(
        f"{url}/v1/stores/{gateway.merchant.store_ids[0]}/payments", headers=bearer(token)
    )
    assert payment["id"] in [p["id"] for p in listed.json()["payments"]]

    refund = await http.post(
        f"{url}/v1/payments/{payment['id']}/refunds",
        json={"amount": {"amount_minor": 200, "currency": "JPY"}, "reason": "returned"},
        headers=bearer(token, str(uuid.uuid4())),
    )
    assert refund.status_code == 201, refund.text
    assert refund.json()["payment"]["refunded"] == {"amount_minor": 200, "currency": "JPY"}
    too_much = await http.post(
        f"{url}/v1/payments/{payment['id']}/refunds",
        json={"amount": {"amount_minor": 600, "currency": "JPY"}},
        headers=bearer(token, str(uuid.uuid4())),
    )
    assert too_much.status_code == 422
    assert too_much.headers["content-type"] == "application/problem+json"


async def test_the_token_endpoint_refuses_a_wrong_secret_and_an_unknown_client(
    gateway: Gateway,
) -> None:
    client_id, secret = await gateway.partner()
    for who, what in ((client_id, secret + "x"), (str(uuid.uuid4()), secret)):
        reply = await gateway.http.post(
            f"{gateway.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(who, what),
        )
        assert reply.status_code == 401
        assert reply.json()["error"] == "invalid_client"


async def test_a_second_secret_works_beside_the_first_until_the_first_is_removed(
    gateway: Gateway,
) -> None:
    created = await gateway.admin(
        "partner", "create", "--name", "rotating", "--scope", "payments:read"
    )
    client_id = created["client_id"]
    first = await gateway.admin("partner", "secret", client_id)
    second = await gateway.admin("partner", "secret", client_id)
    await gateway.token(client_id, first["client_secret"])
    await gateway.token(client_id, second["client_secret"])
    await gateway.admin("partner", "remove-credential", client_id, first["credential_id"])

    async def first_refused() -> bool:
        reply = await gateway.http.post(
            f"{gateway.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, first["client_secret"]),
        )
        return reply.status_code == 401

    await eventually(first_refused, within=5)
    await gateway.token(client_id, second["client_secret"])


async def test_a_token_without_the_scope_or_for_a_foreign_store_is_refused_with_403(
    gateway: Gateway,
) -> None:
    client_id, secret = await gateway.partner(
        "payments:capture", "payments:read", stores=[gateway.merchant.store_ids[0]]
    )
    token = await gateway.token(client_id, secret, scope="payments:read")
    refused = await gateway.http.post(
        f"{gateway.url}/v1/payments",
        json=sale(gateway, "1" * 20),
        headers=bearer(token, str(uuid.uuid4())),
    )
    assert refused.status_code == 403
    assert refused.json()["reason"] == "SCOPE_REQUIRED"

    capturing = await gateway.token(client_id, secret)
    for store_id in (gateway.merchant.store_ids[1], gateway.other_merchant.store_ids[0]):
        body = {**sale(gateway, "1" * 20), "store_id": store_id}
        foreign = await gateway.http.post(
            f"{gateway.url}/v1/payments", json=body, headers=bearer(capturing, str(uuid.uuid4()))
        )
        assert foreign.status_code == 403
        assert foreign.json()["reason"] == "STORE_NOT_GRANTED"
    other = await gateway.http.get(
        f"{gateway.url}/v1/stores/{gateway.other_merchant.store_ids[0]}/payments",
        headers=bearer(capturing),
    )
    assert other.status_code == 403


async def test_a_capture_replayed_with_its_key_returns_the_first_payment_and_another_body_gets_409(
    gateway: Gateway,
) -> None:
    client_id, secret = await gateway.partner()
    token = await gateway.token(client_id, secret)
    key = str(uuid.uuid4())
    body = sale(gateway, await gateway.code(), 300)
    first = await gateway.http.post(
        f"{gateway.url}/v1/payments", json=body, headers=bearer(token, key)
    )
    assert first.status_code == 201, first.text
    again = await gateway.http.post(
        f"{gateway.url}/v1/payments", json=body, headers=bearer(token, key)
    )
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"

    changed = {**body, "amount": {"amount_minor": 301, "currency": "JPY"}}
    conflict = await gateway.http.post(
        f"{gateway.url}/v1/payments", json=changed, headers=bearer(token, key)
    )
    assert conflict.status_code == 409
    assert conflict.json()["reason"] == "IDEMPOTENCY_KEY_REUSED"
    assert conflict.headers["content-type"] == "application/problem+json"

    listed = await gateway.http.get(
        f"{gateway.url}/v1/stores/{gateway.merchant.store_ids[0]}/payments",
        headers=bearer(token),
    )
    assert [p["id"] for p in listed.json()["payments"]].count(first.json()["id"]) == 1


async def test_a_bad_code_is_a_problem_naming_the_field(gateway: Gateway) -> None:
    client_id, secret = await gateway.partner()
    token = await gateway.token(client_id, secret)
    reply = await gateway.http.post(
        f"{gateway.url}/v1/payments",
        json=sale(gateway, "12ab"),
        headers=bearer(token, str(uuid.uuid4())),
    )
    assert reply.status_code == 422
    problem = reply.json()
    assert problem["field"] == "code" and problem["reason"] == "INVALID_ARGUMENT"
    unknown = await gateway.http.post(
        f"{gateway.url}/v1/payments",
        json=sale(gateway, "9" * 20),
        headers=bearer(token, str(uuid.uuid4())),
    )
    assert unknown.status_code == 422
    assert unknown.json()["reason"] == "CODE_INVALID"
