"""The partner API end to end: OAuth2 client credentials, payments by code,
idempotency, scopes and grants, against the real wallet, risk and identity."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2

from services.gateway.domain.errors import Refusal
from tests.e2e.gateway.conftest import Gateway, eventually
from tests.e2e.runtime.test_metrics import scrape, value
from tests.support.people import TIMEOUT


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
    shown = await gateway.admin("partner", "show", client_id)
    assert [c["credential_id"] for c in shown["credentials"]] == [
        first["credential_id"],
        second["credential_id"],
    ]
    assert first["client_secret"] not in str(shown)
    with pytest.raises(Refusal) as crowded:
        await gateway.admin("partner", "secret", client_id)
    assert crowded.value.reason == "TOO_MANY_CREDENTIALS"
    await gateway.admin("partner", "remove-credential", client_id, first["credential_id"])

    async def first_refused() -> bool:
        reply = await gateway.http.post(
            f"{gateway.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, first["client_secret"]),
        )
        return reply.status_code == 401

    await eventually(first_refused, within=60)
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


async def test_an_authorization_is_captured_or_voided_once_and_reads_follow_it(
    gateway: Gateway,
) -> None:
    client_id, secret = await gateway.partner()
    token = await gateway.token(client_id, secret)
    http, url = gateway.http, gateway.url

    held = await http.post(
        f"{url}/v1/authorizations",
        json=sale(gateway, await gateway.code(), 250),
        headers=bearer(token, str(uuid.uuid4())),
    )
    assert held.status_code == 201, held.text
    authorization = held.json()
    assert authorization["status"] == "authorized" and authorization["hold_expires_at"]
    voided = await http.post(
        f"{url}/v1/payments/{authorization['id']}/void", headers=bearer(token, str(uuid.uuid4()))
    )
    assert voided.status_code == 200, voided.text
    assert voided.json()["status"] == "voided"
    again = await http.post(
        f"{url}/v1/payments/{authorization['id']}/void", headers=bearer(token, str(uuid.uuid4()))
    )
    assert again.status_code == 422 and again.json()["reason"] == "NOT_AN_AUTHORIZATION"

    second = await http.post(
        f"{url}/v1/authorizations",
        json=sale(gateway, await gateway.code(), 260),
        headers=bearer(token, str(uuid.uuid4())),
    )
    assert second.status_code == 201, second.text
    capture = await http.post(
        f"{url}/v1/payments",
        json={
            "authorization_id": second.json()["id"],
            "amount": {"amount_minor": 200, "currency": "JPY"},
            "store_id": gateway.merchant.store_ids[0],
        },
        headers=bearer(token, str(uuid.uuid4())),
    )
    assert capture.status_code == 201, capture.text
    payment = capture.json()
    assert payment["status"] == "captured" and payment["authorization_id"] == second.json()["id"]
    held_now = await http.get(f"{url}/v1/payments/{second.json()['id']}", headers=bearer(token))
    assert held_now.json()["status"] == "captured"
    assert held_now.json()["movement_id"] == payment["movement_id"]

    stranger_id, stranger_secret = await gateway.partner()
    stranger = await gateway.token(stranger_id, stranger_secret)
    hidden = await http.get(f"{url}/v1/payments/{payment['id']}", headers=bearer(stranger))
    assert hidden.status_code == 404
    listed = await http.get(
        f"{url}/v1/stores/{gateway.merchant.store_ids[0]}/payments", headers=bearer(stranger)
    )
    assert listed.status_code == 200 and listed.json()["payments"] == []


async def test_cash_handed_over_at_a_register_tops_up_the_persons_wallet(
    gateway: Gateway,
) -> None:
    client_id, secret = await gateway.partner("topups:cash")
    token = await gateway.token(client_id, secret)
    payer = gateway.payer
    issued = await payer.wallet.IssueCashTopUpCode(
        wallet_pb2.IssueCashTopUpCodeRequest(
            channel=risk_pb2.TOP_UP_CHANNEL_CASH_REGISTER, client=payer.client
        ),
        metadata=payer.metadata,
        timeout=TIMEOUT,
    )
    before = (await payer.balance()).wallet.balance.amount_minor
    body = {
        "code": issued.code,
        "amount": {"amount_minor": 1000, "currency": "JPY"},
        "store_id": gateway.merchant.store_ids[1],
    }
    accepted = await gateway.http.post(
        f"{gateway.url}/v1/cash-top-ups", json=body, headers=bearer(token, "cash-1")
    )
    assert accepted.status_code == 201, accepted.text
    assert "balance_after" not in accepted.json()
    assert (await payer.balance()).wallet.balance.amount_minor == before + 1000
    replayed = await gateway.http.post(
        f"{gateway.url}/v1/cash-top-ups", json=body, headers=bearer(token, "cash-1")
    )
    assert replayed.json() == accepted.json()
    assert (await payer.balance()).wallet.balance.amount_minor == before + 1000


async def test_the_wallet_refunds_for_the_gateway_only_payments_of_the_merchant_it_names(
    gateway: Gateway,
) -> None:
    client_id, secret = await gateway.partner()
    token = await gateway.token(client_id, secret)
    captured = await gateway.http.post(
        f"{gateway.url}/v1/payments",
        json=sale(gateway, await gateway.code(), 350),
        headers=bearer(token, str(uuid.uuid4())),
    )
    assert captured.status_code == 201, captured.text
    # Straight to the wallet as principal gateway, with another merchant's key.
    other = await gateway.cluster.stub("wallet", as_="operator").RegisterMerchant(
        wallet_pb2.RegisterMerchantRequest(name="Elsewhere", category="5411"), timeout=TIMEOUT
    )
    wallet = gateway.cluster.stub("wallet", as_="gateway")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await wallet.RefundPayment(
            wallet_pb2.RefundPaymentRequest(
                payment_movement_id=captured.json()["movement_id"],
                amount=common_pb2.Money(amount_minor=100, currency="JPY"),
                reason="not ours",
                idempotency_key=str(uuid.uuid4()),
            ),
            metadata=(("x-merchant-key", other.merchant_key),),
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND, refused.value.details()


async def test_the_gateway_counts_api_requests_by_route_template_and_status_on_metrics(
    gateway: Gateway,
) -> None:
    metrics_url = gateway.cluster.metrics_url("gateway")
    before = await scrape(metrics_url)
    client_id, secret = await gateway.partner("payments:read")
    token = await gateway.token(client_id, secret)
    http, url = gateway.http, gateway.url
    for _ in range(2):
        unknown = await http.get(f"{url}/v1/payments/{uuid.uuid4()}", headers=bearer(token))
        assert unknown.status_code == 404
    unauthenticated = await http.get(f"{url}/v1/payments/{uuid.uuid4()}")
    assert unauthenticated.status_code == 401
    nowhere = await http.get(f"{url}/no/such/{uuid.uuid4()}")
    assert nowhere.status_code == 404
    after = await scrape(metrics_url)

    def grew(name: str, **labels: str) -> float:
        labels = {"service": "gateway", **labels}
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    payment = {"method": "GET", "route": "/v1/payments/{payment_id}"}
    assert grew("mamoru_http_requests_total", **payment, code="404") == 2
    assert grew("mamoru_http_requests_total", **payment, code="401") == 1
    assert grew("mamoru_http_requests_total", route="/oauth/token", code="200") == 1
    # Made-up paths share one series instead of one each.
    assert grew("mamoru_http_requests_total", route="unmatched", code="404") == 1
    routes = {label for (_, labels) in after for key, label in labels if key == "route"}
    assert not [route for route in routes if route.startswith("/no/such")]
    assert grew("mamoru_http_request_duration_seconds_count", **payment) == 3
    # The runtime's series are on the same endpoint.
    assert value(after, "mamoru_db_pool_connections", service="gateway", state="max")
    assert value(after, "mamoru_outbox_backlog", service="gateway") is not None
    assert value(after, "mamoru_kill_switch", switch="payments") is not None
