"""What a session made dies with it: payment codes, the holds made with them and
cash top-up codes stop working once the session is revoked, whichever way it
ends (logout, password reset, an operator's lock or forced reset), on every
wallet replica, and even when the wallet was down while it happened."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from mamoru.identity.v1 import identity_pb2
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2

from services.runtime.server import RunningService
from tests.e2e.wallet.test_person_path import (
    Register,
    a_register,
    funded_payer,
    reason_of,
    refused,
)
from tests.harness import Cluster
from tests.support.identity_driver import IdentityDriver
from tests.support.payer import Payer
from tests.support.people import (
    IDENTITY_ENV,
    TIMEOUT,
    bearer,
    client,
    jpy,
    reset_mail,
    reset_token_in,
)

# Invariant 8: everything a session made stops working within 5 s of its revocation.
REVOCATION_REACHES_THE_WALLET = 5.0
NEW_PASSWORD = "an entirely fresh passphrase 2026"


async def log_out(identity: IdentityDriver, payer: Payer) -> None:
    assert payer.person.session is not None
    await identity.stub.Logout(
        identity_pb2.LogoutRequest(), metadata=bearer(payer.person.session), timeout=TIMEOUT
    )


async def reset_password(identity: IdentityDriver, payer: Payer) -> None:
    person = payer.person
    before = len(await reset_mail(identity.mailbox, person.email, count=0))
    await identity.stub.RequestPasswordReset(
        identity_pb2.RequestPasswordResetRequest(identifier=person.email), timeout=TIMEOUT
    )
    token = reset_token_in((await reset_mail(identity.mailbox, person.email, before + 1))[-1])
    await identity.stub.CompletePasswordReset(
        identity_pb2.CompletePasswordResetRequest(
            reset_token=token, new_password=NEW_PASSWORD, client=client(person.device)
        ),
        timeout=TIMEOUT,
    )


async def lock_account(identity: IdentityDriver, payer: Payer) -> None:
    await identity.operator.LockAccount(
        identity_pb2.LockAccountRequest(account_id=payer.person.account_id, reason="case 7"),
        timeout=TIMEOUT,
    )


async def force_reset(identity: IdentityDriver, payer: Payer) -> None:
    async for _ in identity.operator.ForceCredentialReset(
        identity_pb2.ForceCredentialResetRequest(
            account_ids=[payer.person.account_id], reason="breach list"
        ),
        timeout=TIMEOUT,
    ):
        pass


REVOCATIONS: dict[str, Callable[[IdentityDriver, Payer], Awaitable[None]]] = {
    "logout": log_out,
    "password reset": reset_password,
    "operator lock": lock_account,
    "forced reset": force_reset,
}


async def wait_until_the_wallet_refuses_the_token(payer: Payer) -> None:
    """The wallet has learned of the revocation once it refuses the session's token."""
    async with asyncio.timeout(REVOCATION_REACHES_THE_WALLET):
        while True:
            try:
                await payer.balance()
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                return
            await asyncio.sleep(0.05)


async def balance_of(wallet_service: RunningService, wallet_id: str) -> int:
    """Read from the wallet's ledger: the payer's own token is dead by now."""
    balance = await wallet_service.pool.fetchval(
        "select balance from ledger_accounts where id = $1", uuid.UUID(wallet_id)
    )
    return int(balance)


async def wait_for_rows(
    wallet_service: RunningService, query: str, session_id: str, status: str
) -> None:
    """Until every row of the session in ``query``'s table has ``status`` (durably voided)."""
    async with asyncio.timeout(REVOCATION_REACHES_THE_WALLET):
        while True:
            statuses = {row["status"] for row in await wallet_service.pool.fetch(query, session_id)}
            assert statuses, "the session made nothing"
            if statuses == {status}:
                return
            await asyncio.sleep(0.05)


def session_of(payer: Payer) -> str:
    assert payer.person.session is not None
    return str(payer.person.session.session_id)


async def capture(register: Register, **source: str) -> Any:
    return await register.stub.CapturePayment(
        wallet_pb2.CapturePaymentRequest(
            amount=jpy(3_000),
            store_id=register.store_id,
            basket_categories=[risk_pb2.GOODS_CATEGORY_FOOD],
            idempotency_key=str(uuid.uuid4()),
            **source,
        ),
        metadata=register.metadata,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize("revoke", list(REVOCATIONS))
async def test_a_payment_code_dies_with_its_session(
    running: Cluster, identity: IdentityDriver, wallet: Any, revoke: str
) -> None:
    register = await a_register(running)
    payer, _ = await funded_payer(running, identity, wallet, 5_000)
    wallet_id = (await payer.balance()).wallet.wallet_id
    code = await payer.payment_code()

    await REVOCATIONS[revoke](identity, payer)
    await wait_until_the_wallet_refuses_the_token(payer)

    stolen = await refused(capture(register, code=code))
    assert stolen.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(stolen) == "CODE_INVALID"
    assert await balance_of(running.running["wallet"], wallet_id) == 5_000
    # Not only refused by the replica that learned of it: voided for every replica.
    await wait_for_rows(
        running.running["wallet"],
        "select status from one_time_codes where session_id = $1",
        session_of(payer),
        "voided",
    )


async def test_a_hold_made_with_a_code_is_released_when_its_session_ends(
    running: Cluster, identity: IdentityDriver, wallet: Any
) -> None:
    register = await a_register(running)
    payer, _ = await funded_payer(running, identity, wallet, 4_000)
    held = await register.authorize(await payer.payment_code(), 3_000)
    old_session = session_of(payer)

    await log_out(identity, payer)
    await wait_until_the_wallet_refuses_the_token(payer)

    stolen = await refused(capture(register, authorization_id=held.authorization_id))
    assert stolen.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(stolen) == "AUTHORIZATION_INVALID"
    await wait_for_rows(
        running.running["wallet"],
        "select status from authorizations where session_id = $1",
        old_session,
        "voided",
    )
    # The hold no longer keeps the owner from the money: signed in again, the whole
    # balance can be held.
    payer.person.session = None
    again = await identity.payer(payer.person, wallet)
    whole = await register.authorize(await again.payment_code(), 4_000)
    assert whole.amount.amount_minor == 4_000


async def test_a_cash_top_up_code_dies_with_its_session(
    running: Cluster, identity: IdentityDriver, wallet: Any
) -> None:
    register = await a_register(running)
    payer, _ = await funded_payer(running, identity, wallet, 1_000)
    wallet_id = (await payer.balance()).wallet.wallet_id
    issued = await wallet.IssueCashTopUpCode(
        wallet_pb2.IssueCashTopUpCodeRequest(
            channel=risk_pb2.TOP_UP_CHANNEL_CASH_REGISTER, client=payer.client
        ),
        metadata=payer.metadata,
        timeout=TIMEOUT,
    )

    await log_out(identity, payer)
    await wait_until_the_wallet_refuses_the_token(payer)

    late = await refused(
        register.stub.AcceptCashTopUp(
            wallet_pb2.AcceptCashTopUpRequest(
                code=issued.code,
                amount=jpy(2_000),
                store_id=register.store_id,
                idempotency_key=str(uuid.uuid4()),
            ),
            metadata=register.metadata,
            timeout=TIMEOUT,
        )
    )
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(late) == "CODE_INVALID"
    assert await balance_of(running.running["wallet"], wallet_id) == 1_000


async def test_a_revocation_while_the_wallet_is_down_voids_the_sessions_codes_when_it_returns(
    running: Cluster, identity: IdentityDriver, wallet: Any
) -> None:
    register = await a_register(running)
    payer, _ = await funded_payer(running, identity, wallet, 5_000)
    wallet_id = (await payer.balance()).wallet.wallet_id
    held = await register.authorize(await payer.payment_code(), 1_000)
    code = await payer.payment_code()

    await running.stop("wallet")
    await reset_password(identity, payer)
    await running.start("wallet", env=IDENTITY_ENV)

    await wait_for_rows(
        running.running["wallet"],
        "select status from one_time_codes where session_id = $1 and status <> 'used'",
        session_of(payer),
        "voided",
    )
    stolen = await refused(capture(register, code=code))
    assert reason_of(stolen) == "CODE_INVALID"
    hold = await refused(capture(register, authorization_id=held.authorization_id))
    assert reason_of(hold) == "AUTHORIZATION_INVALID"
    assert await balance_of(running.running["wallet"], wallet_id) == 5_000


async def test_a_payment_code_dies_on_every_wallet_replica(
    running: Cluster, identity: IdentityDriver, wallet: Any
) -> None:
    register = await a_register(running)
    payer, _ = await funded_payer(running, identity, wallet, 5_000)
    wallet_id = (await payer.balance()).wallet.wallet_id
    _, other_replica = await running.start_replica("wallet", env=IDENTITY_ENV)
    # The code comes from the first replica; the register reaches the other one.
    code = await payer.payment_code()
    elsewhere = Register(other_replica(as_="pos"), register.metadata[0][1], register.store_id)
    payer_elsewhere = Payer(
        wallet=other_replica(as_="gateway"), person=payer.person, token=payer.token
    )
    assert (await payer_elsewhere.balance()).wallet.wallet_id == wallet_id

    await lock_account(identity, payer)
    await wait_until_the_wallet_refuses_the_token(payer)
    await wait_until_the_wallet_refuses_the_token(payer_elsewhere)

    stolen = await refused(capture(elsewhere, code=code))
    assert reason_of(stolen) == "CODE_INVALID"
    assert await balance_of(running.running["wallet"], wallet_id) == 5_000


SHORT_TOKENS = {**IDENTITY_ENV, "IDENTITY_ACCESS_TOKEN_SECONDS": "30"}
# How long identity used to announce a revocation: the last token's life and a minute.
TOKEN_WINDOW_SECONDS = 30 + 60


async def test_a_hold_dies_with_a_session_revoked_while_the_wallet_was_down_for_long(
    cluster: Cluster,
) -> None:
    await cluster.start("risk", "identity", "notify", "wallet", env=SHORT_TOKENS)
    identity = IdentityDriver(
        cluster.stub("identity", as_="gateway"),
        cluster.smtp,
        operator=cluster.stub("identity", as_="operator"),
    )
    wallet = cluster.stub("wallet", as_="gateway")
    register = await a_register(cluster)
    payer, _ = await funded_payer(cluster, identity, wallet, 5_000)
    wallet_id = (await payer.balance()).wallet.wallet_id
    held = await register.authorize(await payer.payment_code(), 1_000)
    old_session = session_of(payer)

    await cluster.stop("wallet")
    await log_out(identity, payer)
    # The wallet stays away longer than the session's last token lives (and the
    # minute after): identity's record of the revocation is aged by that much
    # rather than the test waiting it out. The hold itself lives 15 minutes.
    aged = await cluster.running["identity"].pool.execute(
        "update revocations set expires_at = expires_at - make_interval(secs => $2)"
        " where session_id = $1::uuid",
        old_session,
        TOKEN_WINDOW_SECONDS,
    )
    assert aged == "UPDATE 1"
    await cluster.start("wallet", env=SHORT_TOKENS)

    await wait_for_rows(
        cluster.running["wallet"],
        "select status from authorizations where session_id = $1",
        old_session,
        "voided",
    )
    assert await cluster.running["wallet"].pool.fetchval(
        "select count(*) from revoked_sessions where session_id = $1", old_session
    )
    stolen = await refused(capture(register, authorization_id=held.authorization_id))
    assert reason_of(stolen) == "AUTHORIZATION_INVALID"
    assert await balance_of(cluster.running["wallet"], wallet_id) == 5_000
