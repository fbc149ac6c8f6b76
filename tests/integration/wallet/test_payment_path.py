"""What a payment costs the wallet's database, and the races that cheapness must survive.

Statements are counted as the wallet's own connection sends them (asyncpg's query
logger), on a pool of one connection, so nothing else that runs meanwhile counts.
A transaction is a BEGIN ... COMMIT, or one statement sent outside of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from services.runtime.db import close_pool, create_pool
from services.runtime.errors import FailedPrecondition
from services.runtime.migrations import migrate
from services.runtime.tokens import TokenClaims
from services.wallet.bootstrap import MIGRATIONS
from services.wallet.domain.merchants import Merchant
from services.wallet.domain.risk import PaymentCheck
from services.wallet.storage import Storage
from services.wallet.use_cases.payments import Sale, StorePayments
from tests.integration.wallet.conftest import GENEROUS
from tests.integration.wallet.helpers import a_store, capture, funded_wallet, payment_code
from tests.unit.wallet.fakes import FakeRisk

RISK = "<risk asked>"


@dataclass
class Sent:
    """What the wallet sent its database, in order, with the moments risk was asked."""

    events: list[str] = field(default_factory=list)

    def log(self, query: Any) -> None:
        self.events.append(" ".join(str(query.query).split()))

    def transactions(self) -> list[list[str] | str]:
        """The events grouped into transactions (BEGIN and COMMIT left out) and risk calls."""
        grouped: list[list[str] | str] = []
        current: list[str] | None = None
        for event in self.events:
            if event == RISK:
                assert current is None, "risk was asked inside a transaction"
                grouped.append(RISK)
            elif event.upper().startswith("BEGIN"):
                current = []
            elif event.upper().startswith(("COMMIT", "ROLLBACK")):
                assert current is not None
                grouped.append(current)
                current = None
            elif current is not None:
                current.append(event)
            else:
                grouped.append([event])
        assert current is None, "a transaction was left open"
        return grouped


class CountingRisk(FakeRisk):
    """Risk that allows every payment and marks, among the statements, when it was asked."""

    def __init__(self, sent: Sent) -> None:
        super().__init__()
        self.sent = sent

    async def assess_payment(self, check: PaymentCheck) -> str:
        self.sent.events.append(RISK)
        return await super().assess_payment(check)


@dataclass
class OneConnection:
    store: Storage
    sent: Sent
    risk: CountingRisk
    payments: StorePayments


@pytest_asyncio.fixture
async def one_connection(
    new_database: Callable[..., Awaitable[str]],
) -> AsyncIterator[OneConnection]:
    url = await new_database("wallet")
    pool = await create_pool(url, max_size=1)
    sent = Sent()
    async with pool.acquire() as conn:
        await migrate(conn, "wallet", MIGRATIONS)
        conn.add_query_logger(sent.log)
    risk = CountingRisk(sent)
    store = Storage(pool, GENEROUS)
    payments = StorePayments(
        store.codes, store.payments, risk, payment_code_seconds=120, hold_seconds=900
    )
    try:
        yield OneConnection(store, sent, risk, payments)
    finally:
        await close_pool(pool)


def claims_of(payer_id: str) -> TokenClaims:
    now = datetime.now(UTC)
    return TokenClaims(
        subject=payer_id,
        audience="wallet",
        issuer="identity",
        session_id="session-1",
        device_key="device-key-1",
        methods=("pwd", "otp"),
        assurance_level=2,
        auth_time=now,
        issued_at=now,
        expires_at=now + timedelta(minutes=5),
        token_id="token-1",
        raw={},
    )


async def a_sale(wallet: OneConnection, code: str, amount: int, key: str) -> Sale:
    shop = await a_store(wallet.store)
    merchant = Merchant(shop.merchant_id, "Lawson", "5411")
    return Sale(merchant=merchant, store=shop, amount=amount, idempotency_key=key, code=code)


async def test_a_capture_by_code_is_one_read_before_risk_and_one_transaction_after(
    one_connection: OneConnection,
) -> None:
    wallet = one_connection
    funded = await funded_wallet(wallet.store, 5_000)
    code = await payment_code(wallet.store, funded.id)
    sale = await a_sale(wallet, code, 1_200, "receipt-1")
    wallet.sent.events.clear()

    paid = await wallet.payments.capture(sale)

    shape = [g if g == RISK else len(g) for g in wallet.sent.transactions()]
    assert shape == [1, RISK, 2]
    assert len(wallet.sent.events) == 1 + 1 + 4  # the read, risk, BEGIN, two, COMMIT
    assert (await wallet.store.wallets.wallet_by_id(funded.id)).balance == 3_800
    assert [check.payer_id for check in wallet.risk.payments] == [funded.payer_id]
    queued = await wallet.store.pool.fetch(
        "select topic from outbox where idempotency_key = any($1::text[]) order by id",
        [f"notice:{paid['movement_id']}", f"outcome:{paid['movement_id']}"],
    )
    assert [r["topic"] for r in queued] == ["wallet.notice.v2", "wallet.outcome.v2"]

    wallet.sent.events.clear()
    again = await wallet.payments.capture(sale)

    assert again == paid
    assert wallet.sent.transactions() == [wallet.sent.events]  # one read, risk not asked


async def test_a_payment_code_is_issued_in_one_statement(one_connection: OneConnection) -> None:
    wallet = one_connection
    funded = await funded_wallet(wallet.store, 1_000)
    first = await payment_code(wallet.store, funded.id)
    wallet.sent.events.clear()

    code, _ = await wallet.payments.issue_code(claims_of(funded.payer_id))

    assert len(wallet.sent.events) == 1
    live = await wallet.store.pool.fetch(
        "select code_hash from one_time_codes where wallet_id = $1 and status = 'active'",
        funded.id,
    )
    assert len(live) == 1
    assert await wallet.store.codes.code_holder(first, "payment") is None
    assert await wallet.store.codes.code_holder(code, "payment") is not None


async def test_codes_issued_at_once_for_one_wallet_leave_exactly_one_live(
    wallet_store: Storage,
) -> None:
    wallet = await funded_wallet(wallet_store, 1_000)

    codes = await asyncio.gather(
        *(
            wallet_store.codes.issue_payer_code(
                payer_id=wallet.payer_id,
                purpose="payment",
                device_id="device-1",
                session_id="session-1",
                lifetime=timedelta(minutes=2),
            )
            for _ in range(20)
        )
    )

    live = [c for c, _ in codes if await wallet_store.codes.code_holder(c, "payment")]
    assert len(live) == 1
    assert (
        await wallet_store.pool.fetchval(
            "select count(*) from one_time_codes where wallet_id = $1 and status = 'active'",
            wallet.id,
        )
        == 1
    )


async def test_retries_racing_the_first_capture_all_get_its_answer_and_pay_once(
    wallet_store: Storage,
) -> None:
    wallet = await funded_wallet(wallet_store, 5_000)
    shop = await a_store(wallet_store)
    code = await payment_code(wallet_store, wallet.id)

    answers = await asyncio.gather(
        *(capture(wallet_store, shop, code, 700, key="register-3-receipt-9") for _ in range(20))
    )

    assert all(answer == answers[0] for answer in answers)
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 4_300
    assert (
        await wallet_store.pool.fetchval(
            "select count(*) from payments where wallet_id = $1", wallet.id
        )
        == 1
    )


async def test_a_capture_spends_only_the_code_risk_assessed(wallet_store: Storage) -> None:
    wallet = await funded_wallet(wallet_store, 5_000)
    shop = await a_store(wallet_store)
    assessed = await payment_code(wallet_store, wallet.id)
    presented = await wallet_store.payments.presented("capture:x", "k", "h", assessed)
    assert presented.holder is not None
    # The payer shows a new code while risk is looking at the old one.
    await payment_code(wallet_store, wallet.id)

    with pytest.raises(FailedPrecondition) as refused:
        await wallet_store.payments.capture_by_code(
            holder=presented.holder,
            amount=100,
            store=shop,
            merchant_name="Lawson",
            idempotency_key="k",
            request_hash="h",
        )

    assert refused.value.reason == "CODE_INVALID"
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 5_000
