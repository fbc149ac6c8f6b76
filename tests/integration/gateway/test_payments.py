"""The gateway's idempotent payment skeleton on real PostgreSQL, with a stand-in
for the wallet port: one answer and one event per key however the calls race,
final refusals replayed, an unreachable wallet leaving the key free."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import pytest
import pytest_asyncio

from services.gateway.bootstrap import MIGRATIONS
from services.gateway.domain.errors import Refusal
from services.gateway.domain.partners import Partner
from services.gateway.domain.payments import Sale, WalletPayment, WalletTopUp
from services.gateway.domain.sealing import SecretBox
from services.gateway.storage import partners as partner_store
from services.gateway.storage import webhooks as webhook_store
from services.gateway.use_cases.partners import PartnerAdmin
from services.gateway.use_cases.payments import Payments
from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import migrate

MERCHANT = uuid.uuid4()
STORE = uuid.uuid4()


@dataclass
class StandInWallet:
    """Answers captures like the wallet; ``refuse`` or ``unavailable`` make it fail."""

    calls: list[Sale] = field(default_factory=list)
    refuse: bool = False
    unavailable: bool = False
    delay: float = 0.0

    async def capture(self, merchant_key: str, sale: Sale) -> WalletPayment:
        assert merchant_key == "merchant-key-1"
        self.calls.append(sale)
        await asyncio.sleep(self.delay)
        if self.unavailable:
            raise Refusal(503, "WALLET_UNAVAILABLE", "down")
        if self.refuse:
            raise Refusal(422, "CODE_INVALID", "the code is unknown, used or expired", "code")
        return WalletPayment(
            movement_id=str(uuid.uuid5(MERCHANT, sale.idempotency_key)),
            authorization_id="",
            merchant_id=MERCHANT,
            store_id=sale.store_id,
            amount_minor=sale.amount_minor,
            currency=sale.currency,
            refunded_minor=0,
            occurred_at=datetime.now(UTC),
            hold_expires_at=None,
        )

    async def authorize(self, merchant_key: str, sale: Sale) -> WalletPayment:
        raise AssertionError("these tests only capture")

    async def void(self, merchant_key: str, authorization_id: str, idempotency_key: str) -> None:
        raise AssertionError("these tests only capture")

    async def refund(
        self,
        merchant_key: str,
        movement_id: str,
        amount_minor: int,
        currency: str,
        reason: str,
        idempotency_key: str,
    ) -> tuple[str, WalletPayment]:
        raise AssertionError("these tests only capture")

    async def accept_cash(
        self,
        merchant_key: str,
        code: str,
        amount_minor: int,
        currency: str,
        store_id: uuid.UUID,
        idempotency_key: str,
    ) -> WalletTopUp:
        raise AssertionError("these tests only capture")


@pytest_asyncio.fixture
async def pool(new_database: Callable[..., Awaitable[str]]) -> AsyncIterator[asyncpg.Pool]:
    url = await new_database("gateway")
    opened = await create_pool(url, max_size=12)
    async with opened.acquire() as conn:
        await migrate(conn, "gateway", MIGRATIONS)
    try:
        yield opened
    finally:
        await close_pool(opened)


async def setup(pool: asyncpg.Pool, wallet: StandInWallet) -> tuple[Payments, Partner]:
    box = SecretBox(secrets.token_bytes(32))
    admin = PartnerAdmin(pool, box)
    await admin.add_merchant(MERCHANT, "Mart", "merchant-key-1")
    await admin.add_store(STORE, MERCHANT, "s-1", "Shop")
    partner_id = await admin.create("vendor", ["payments:capture"], 100)
    await admin.grant(partner_id, MERCHANT, None)
    await webhook_store.add_subscription(
        pool, partner_id, "https://hooks.example/x", ["payment.captured"], b"sealed", limit=10
    )
    partner = await partner_store.load_partner(pool, partner_id)
    assert partner is not None
    return Payments(pool, wallet, box), partner


def sale_body(amount: int = 500) -> dict[str, object]:
    return {
        "code": "1" * 20,
        "amount": {"amount_minor": amount, "currency": "JPY"},
        "store_id": str(STORE),
    }


async def test_racing_twins_of_one_key_get_one_answer_one_payment_and_one_event(
    pool: asyncpg.Pool,
) -> None:
    wallet = StandInWallet(delay=0.05)
    payments, partner = await setup(pool, wallet)
    outcomes = await asyncio.gather(
        *(payments.capture(partner, "k-1", sale_body()) for _ in range(5))
    )
    assert len({outcome.body["id"] for outcome in outcomes}) == 1
    assert {call.idempotency_key for call in wallet.calls} == {f"gw:{partner.client_id}:k-1"}
    assert await pool.fetchval("select count(*) from payments") == 1
    assert await pool.fetchval("select count(*) from webhook_deliveries") == 1
    assert await pool.fetchval("select count(*) from outbox") == 1


async def test_a_final_refusal_is_replayed_but_an_unreachable_wallet_leaves_the_key_free(
    pool: asyncpg.Pool,
) -> None:
    wallet = StandInWallet(refuse=True)
    payments, partner = await setup(pool, wallet)
    with pytest.raises(Refusal) as refused:
        await payments.capture(partner, "k-2", sale_body())
    assert refused.value.reason == "CODE_INVALID"
    replayed = await payments.capture(partner, "k-2", sale_body())
    assert replayed.replayed and replayed.status == 422
    assert replayed.body["reason"] == "CODE_INVALID" and replayed.body["field"] == "code"
    assert len(wallet.calls) == 1

    wallet.refuse, wallet.unavailable = False, True
    with pytest.raises(Refusal) as down:
        await payments.capture(partner, "k-3", sale_body())
    assert down.value.status == 503
    wallet.unavailable = False
    done = await payments.capture(partner, "k-3", sale_body())
    assert done.status == 201 and not done.replayed

    with pytest.raises(Refusal) as reused:
        await payments.capture(partner, "k-3", sale_body(amount=501))
    assert (reused.value.status, reused.value.reason) == (409, "IDEMPOTENCY_KEY_REUSED")
