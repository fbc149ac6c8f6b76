"""A revoked session's codes and holds: refused from memory at once, voided in the
database under the wallet's lock, and a capture racing the voiding either commits
first or is refused, never both and never a deadlock."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from services.runtime.errors import FailedPrecondition
from services.wallet.domain.codes import code_hash, fingerprint
from services.wallet.domain.merchants import StoreRow
from services.wallet.storage import Storage
from tests.integration.wallet.helpers import a_store, capture, funded_wallet

HOLD = 2_000
PAYMENT = 3_000


async def code_of(store: Storage, wallet_id: uuid.UUID, session_id: str) -> str:
    code, _ = await store.codes.issue_code(
        wallet_id=wallet_id,
        purpose="payment",
        device_id="device-1",
        session_id=session_id,
        lifetime=timedelta(minutes=2),
    )
    return code


async def authorize(store: Storage, shop: StoreRow, code: str) -> str:
    result = await store.payments.authorize(
        code=code,
        amount=HOLD,
        store=shop,
        hold=timedelta(minutes=15),
        idempotency_key=str(uuid.uuid4()),
        request_hash=fingerprint({"code": code}),
    )
    return str(result["authorization_id"])


async def capture_hold(store: Storage, shop: StoreRow, authorization_id: str) -> Any:
    return await store.payments.capture_authorization(
        authorization_id=uuid.UUID(authorization_id),
        amount=HOLD,
        store=shop,
        merchant_name="Lawson",
        idempotency_key=str(uuid.uuid4()),
        request_hash=fingerprint({"authorization_id": authorization_id}),
    )


async def test_a_code_and_a_hold_of_a_session_this_replica_knows_is_revoked_are_refused(
    wallet_store: Storage,
) -> None:
    shop = await a_store(wallet_store)
    wallet = await funded_wallet(wallet_store, 10_000)
    held = await authorize(wallet_store, shop, await code_of(wallet_store, wallet.id, "gone"))
    code = await code_of(wallet_store, wallet.id, "gone")
    # Another replica's view: it heard of the revocation, the database not yet voided.
    replica = Storage(
        wallet_store.pool, wallet_store.limits, session_revoked=lambda sid: sid == "gone"
    )

    assert await replica.codes.code_holder(code, "payment") is None
    for attempt in (capture(replica, shop, code, PAYMENT), capture_hold(replica, shop, held)):
        try:
            await attempt
        except FailedPrecondition as refused:
            assert refused.reason in ("CODE_INVALID", "AUTHORIZATION_INVALID")
        else:
            raise AssertionError("a revoked session's code or hold moved money")
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 10_000
    # Refused, not spent: voiding still finds both live and ends them for every replica.
    assert await wallet_store.revoked_sessions.void_sessions(["gone"]) == (1, 1, 0)
    assert await wallet_store.revoked_sessions.void_sessions(["gone"]) == (0, 0, 0)


async def test_captures_racing_the_voiding_of_their_session_finish_first_or_are_refused(
    wallet_store: Storage,
) -> None:
    shop = await a_store(wallet_store)
    plays = []
    for index in range(12):
        wallet = await funded_wallet(wallet_store, 10_000)
        session = f"session-{index}"
        held = await authorize(wallet_store, shop, await code_of(wallet_store, wallet.id, session))
        code = await code_of(wallet_store, wallet.id, session)
        plays.append((wallet.id, session, held, code))

    outcomes = await asyncio.gather(
        *(
            call
            for _, session, held, code in plays
            for call in (
                capture(wallet_store, shop, code, PAYMENT),
                capture_hold(wallet_store, shop, held),
                wallet_store.revoked_sessions.void_sessions([session]),
            )
        ),
        wallet_store.revoked_sessions.void_sessions([session for _, session, _, _ in plays]),
        return_exceptions=True,
    )

    unexpected = [
        outcome
        for outcome in outcomes
        if isinstance(outcome, BaseException)
        and not (
            isinstance(outcome, FailedPrecondition)
            and outcome.reason in ("CODE_INVALID", "AUTHORIZATION_INVALID")
        )
    ]
    assert unexpected == []
    for wallet_id, _, held, code in plays:
        code_status = await wallet_store.pool.fetchval(
            "select status from one_time_codes where code_hash = $1", code_hash(code)
        )
        spent = await wallet_store.pool.fetchval(
            "select coalesce(sum(amount), 0) from payments where wallet_id = $1", wallet_id
        )
        hold_status = await wallet_store.pool.fetchval(
            "select status from authorizations where id = $1", uuid.UUID(held)
        )
        captured_by_code = int(spent) - (HOLD if hold_status == "captured" else 0)
        # Each code and hold ended exactly one way, and the money says the same.
        assert hold_status in ("captured", "voided")
        assert captured_by_code in (0, PAYMENT)
        assert (code_status == "voided") == (captured_by_code == 0)
        balance = (await wallet_store.wallets.wallet_by_id(wallet_id)).balance
        assert balance == 10_000 - int(spent)
    assert (await wallet_store.ledger.reconcile()).balanced


async def test_a_payout_account_set_in_a_revoked_session_no_longer_receives_the_balance(
    wallet_store: Storage,
) -> None:
    wallet = await funded_wallet(wallet_store, 10_000)
    for session_id, account in (("owners", "1111111"), ("thiefs", "6666666")):
        await wallet_store.payouts.register_payout_account(
            wallet.id,
            bank_code="0001",
            branch_code="123",
            account_number=account,
            holder_name="ヤマダ タロウ",
            session_id=session_id,
        )

    # A replica that has heard of the revocation, before anything is voided.
    replica = Storage(
        wallet_store.pool, wallet_store.limits, session_revoked=lambda sid: sid == "thiefs"
    )
    for store in (replica, wallet_store):
        if store is wallet_store:
            assert await wallet_store.revoked_sessions.void_sessions(["thiefs"]) == (0, 0, 1)
        try:
            await store.payouts.claim_payout(
                wallet.id, idempotency_key="payout", request_hash="all"
            )
        except FailedPrecondition as refused:
            assert refused.reason == "PAYOUT_ACCOUNT_REQUIRED"
        else:
            raise AssertionError("the balance was paid to an account set in a revoked session")
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 10_000


async def test_a_session_recorded_as_revoked_stays_dead_for_a_wallet_that_forgot_it(
    wallet_store: Storage,
) -> None:
    # ``wallet_store`` is a fresh process: its memory of revocations is empty.
    shop = await a_store(wallet_store)
    wallet = await funded_wallet(wallet_store, 10_000)
    held = await authorize(wallet_store, shop, await code_of(wallet_store, wallet.id, "stolen"))
    code = await code_of(wallet_store, wallet.id, "stolen")
    cash_code, _ = await wallet_store.codes.issue_code(
        wallet_id=wallet.id,
        purpose="cash_top_up",
        device_id="device-1",
        session_id="stolen",
        lifetime=timedelta(minutes=10),
    )
    await wallet_store.payouts.register_payout_account(
        wallet.id,
        bank_code="0001",
        branch_code="123",
        account_number="6666666",
        holder_name="ヤマダ タロウ",
        session_id="stolen",
    )
    # Recorded by a replica that heard of the revocation but could not void yet.
    await wallet_store.pool.execute("insert into revoked_sessions (session_id) values ('stolen')")

    assert await wallet_store.codes.code_holder(code, "payment") is None
    assert await wallet_store.codes.code_holder(cash_code, "cash_top_up") is None
    attempts = {
        "code": capture(wallet_store, shop, code, PAYMENT),
        "hold": capture_hold(wallet_store, shop, held),
        "cash code": wallet_store.top_ups.accept_cash_top_up(
            code=cash_code,
            amount=1_000,
            store=shop,
            idempotency_key=str(uuid.uuid4()),
            request_hash=fingerprint({"code": cash_code}),
        ),
        "payout": wallet_store.payouts.claim_payout(
            wallet.id, idempotency_key="payout", request_hash="all"
        ),
    }
    for made, attempt in attempts.items():
        try:
            await attempt
        except FailedPrecondition as refused:
            assert refused.reason in (
                "CODE_INVALID",
                "AUTHORIZATION_INVALID",
                "PAYOUT_ACCOUNT_REQUIRED",
            ), made
        else:
            raise AssertionError(f"the {made} of a revoked session moved money")
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 10_000


async def test_voiding_a_session_records_it_so_what_its_tokens_make_later_is_refused(
    wallet_store: Storage,
) -> None:
    wallet = await funded_wallet(wallet_store, 10_000)
    assert await wallet_store.revoked_sessions.void_sessions(["stolen", "stolen"]) == (0, 0, 0)
    assert await wallet_store.revoked_sessions.void_sessions(["stolen"]) == (0, 0, 0)
    # A replica restarted and forgot the revocation, and still honours the
    # session's last token: the payout account it sets never receives money.
    await wallet_store.payouts.register_payout_account(
        wallet.id,
        bank_code="0001",
        branch_code="123",
        account_number="6666666",
        holder_name="ヤマダ タロウ",
        session_id="stolen",
    )
    code = await code_of(wallet_store, wallet.id, "stolen")

    assert await wallet_store.codes.code_holder(code, "payment") is None
    try:
        await wallet_store.payouts.claim_payout(
            wallet.id, idempotency_key="payout", request_hash="all"
        )
    except FailedPrecondition as refused:
        assert refused.reason == "PAYOUT_ACCOUNT_REQUIRED"
    else:
        raise AssertionError("the balance was paid to an account set in a revoked session")
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 10_000
