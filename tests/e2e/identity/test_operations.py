"""Operators' RPCs: forced credential reset, lock and unlock, the security log."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2 as pb

from tests.e2e.identity.checks import reason_of
from tests.e2e.identity.conftest import IdentityOnCluster, start_identity
from tests.support.people import (
    TIMEOUT,
    Person,
    client,
    next_mail,
    reset_mail,
    reset_token_in,
    subject_is,
)

# Subjects of the notice a correct password with a failed check sends, in both languages.
SECOND_FACTOR_SUBJECTS = ("二段階認証が失敗しました", "correct password")

pytestmark = pytest.mark.asyncio


async def test_a_forced_reset_streams_progress_resumes_and_leaves_only_the_reset_link(cluster):
    await start_identity(cluster, env={"IDENTITY_FORCED_RESET_BATCH": "1"})
    identity = IdentityOnCluster(cluster)
    people = [await identity.register(f"person{n}@example.jp") for n in range(3)]
    old = (await identity.login(people[0])).session
    listed = [p.account_id for p in people[:2]]

    stream = identity.operator.ForceCredentialReset(
        pb.ForceCredentialResetRequest(account_ids=listed, reason="breach list"), timeout=TIMEOUT
    )
    first = [await stream.read(), await stream.read()]
    stream.cancel()  # the operator's terminal goes away after one batch
    assert (first[0].processed, first[0].total) == (0, 2)
    assert (first[1].processed, first[1].done) == (1, False)

    resumed = [
        reply
        async for reply in identity.operator.ForceCredentialReset(
            pb.ForceCredentialResetRequest(resume_job_id=first[0].job_id, reason="resume"),
            timeout=TIMEOUT,
        )
    ]
    assert resumed[-1].done
    assert (resumed[-1].processed, resumed[-1].total) == (2, 2)

    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await identity.stub.ListSessions(
            pb.ListSessionsRequest(), metadata=identity.bearer(old), timeout=TIMEOUT
        )
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await identity.login(people[0])
    assert expired.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await identity.login(people[2])).HasField("session")

    rows = await cluster.running["identity"].pool.fetch(
        "select payload from outbox where payload->>'kind' = 'NOTICE_KIND_FORCED_RESET'"
    )
    assert {row["payload"]["account_id"] for row in rows} == set(listed)
    (link,) = await reset_mail(identity.mailbox, people[0].email)
    await identity.stub.CompletePasswordReset(
        pb.CompletePasswordResetRequest(
            reset_token=reset_token_in(link),
            new_password="a fresh passphrase after the breach",
            client=client(),
        ),
        timeout=TIMEOUT,
    )
    people[0].password = "a fresh passphrase after the breach"
    assert (await identity.login(people[0])).WhichOneof("result") in ("session", "challenge")


async def test_an_expired_password_is_answered_like_a_wrong_one_and_its_use_reported(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    async for _ in identity.operator.ForceCredentialReset(
        pb.ForceCredentialResetRequest(account_ids=[person.account_id], reason="breach list"),
        timeout=TIMEOUT,
    ):
        pass
    before = len(identity.mailbox.to(person.email))

    # A stuffing run with the leaked pair must not learn that it was right.
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await identity.login(person, device="attacker-laptop")
    wrong = Person(**{**vars(person), "password": "not the password at all, really"})
    with pytest.raises(grpc.aio.AioRpcError) as mistaken:
        await identity.login(wrong, device="attacker-laptop")
    assert (expired.value.code(), expired.value.details()) == (
        mistaken.value.code(),
        mistaken.value.details(),
    )
    assert reason_of(expired.value) == reason_of(mistaken.value) == "INVALID_CREDENTIALS"

    # The owner hears that someone has the old password; risk hears it matched.
    told = await next_mail(
        identity.mailbox, person.email, subject_is(*SECOND_FACTOR_SUBJECTS), after=before
    )
    assert "expired" in told.text()
    risk = identity.cluster.running["risk"].pool
    async with asyncio.timeout(TIMEOUT):
        while True:
            if await risk.fetchval(
                "select count(*) from outcomes where outcome = 'password_ok' and account_id = $1",
                person.account_id,
            ):
                break
            await asyncio.sleep(0.05)
    log = await identity.operator.GetSecurityLog(
        pb.GetSecurityLogRequest(account_id=person.account_id), timeout=TIMEOUT
    )
    assert "login.expired_password_used" in [event.kind for event in log.events]


async def test_a_locked_account_cannot_sign_in_until_unlocked_and_the_log_shows_why(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    await identity.login(person, ip="203.0.113.9")
    await identity.operator.LockAccount(
        pb.LockAccountRequest(account_id=person.account_id, reason="case 42"), timeout=TIMEOUT
    )
    with pytest.raises(grpc.aio.AioRpcError) as locked:
        await identity.login(person)
    assert locked.value.details() == "invalid credentials"
    await identity.operator.UnlockAccount(
        pb.UnlockAccountRequest(account_id=person.account_id, reason="owner verified"),
        timeout=TIMEOUT,
    )
    assert (await identity.login(person)).HasField("session")

    first = await identity.operator.GetSecurityLog(
        pb.GetSecurityLogRequest(
            account_id=person.account_id, page=common_pb2.PageRequest(page_size=3)
        ),
        timeout=TIMEOUT,
    )
    assert len(first.events) == 3 and first.next_page_token
    rest = await identity.operator.GetSecurityLog(
        pb.GetSecurityLogRequest(
            account_id=person.account_id,
            page=common_pb2.PageRequest(page_size=100, page_token=first.next_page_token),
        ),
        timeout=TIMEOUT,
    )
    events = [*first.events, *rest.events]
    kinds = [event.kind for event in events]
    assert kinds[-1] == "account.registered"
    assert "account.locked" in kinds and "account.unlocked" in kinds
    locked_event = next(event for event in events if event.kind == "account.locked")
    assert locked_event.actor == "operator:operator"
    assert json.loads(locked_event.details_json) == {"reason": "case 42"}
    assert any(event.ip_address == "203.0.113.9" for event in events)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.stub.GetSecurityLog(
            pb.GetSecurityLogRequest(account_id=person.account_id), timeout=TIMEOUT
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
