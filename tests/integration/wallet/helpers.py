"""Small set-ups shared by the wallet's integration tests (real database, real store)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from services.wallet.domain.codes import fingerprint
from services.wallet.domain.merchants import StoreRow
from services.wallet.domain.payments import capture_scope, code_invalid
from services.wallet.domain.wallets import WalletRow
from services.wallet.storage import Storage


async def funded_wallet(store: Storage, amount: int, payer: str | None = None) -> WalletRow:
    wallet = await store.wallets.enroll(payer or f"payer-{uuid.uuid4()}")
    if amount:
        await points_top_up(store, wallet.id, amount)
    return await store.wallets.wallet_by_id(wallet.id)


async def points_top_up(
    store: Storage, wallet_id: uuid.UUID, amount: int, key: str | None = None
) -> dict[str, Any]:
    """A points top-up through the real reservation and posting, the loyalty
    program having redeemed the points (its side is tested in test_points.py)."""
    key = key or str(uuid.uuid4())
    started = await store.top_ups.reserve(
        wallet_id=wallet_id,
        amount=amount,
        session_id="",
        idempotency_key=key,
        request_hash=fingerprint({"amount": amount}),
    )
    if isinstance(started, dict):
        return started
    return await store.top_ups.finish(started.top_up_id, f"rd_{started.top_up_id.hex}")


async def a_store(store: Storage, name: str = "Lawson") -> StoreRow:
    merchant, _ = await store.merchants.register_merchant(name, "5411")
    store_id = await store.merchants.register_store(
        merchant.id, f"s-{uuid.uuid4().hex[:8]}", f"{name} 1"
    )
    return await store.merchants.store_of(merchant.id, store_id)


async def payment_code(store: Storage, wallet_id: uuid.UUID) -> str:
    code, _ = await store.codes.issue_code(
        wallet_id=wallet_id,
        purpose="payment",
        device_id="device-1",
        session_id="session-1",
        lifetime=timedelta(minutes=2),
    )
    return code


async def capture(
    store: Storage, shop: StoreRow, code: str, amount: int, key: str | None = None
) -> dict[str, Any]:
    """A capture by code as the use case runs it: the key and the code's holder read
    first (risk would be asked then), the code spent and the payment posted after."""
    key = key or str(uuid.uuid4())
    request_hash = fingerprint({"code": code, "amount": amount, "store": str(shop.id)})
    presented = await store.payments.presented(
        capture_scope(shop.merchant_id), key, request_hash, code
    )
    if presented.replayed is not None:
        return presented.replayed
    if presented.holder is None:
        raise code_invalid()
    return await store.payments.capture_by_code(
        holder=presented.holder,
        amount=amount,
        store=shop,
        merchant_name="Lawson",
        idempotency_key=key,
        request_hash=request_hash,
    )
