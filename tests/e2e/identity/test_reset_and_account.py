"""Password reset reaches only the registered address; credential changes end every session."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from mamoru.identity.v1 import identity_pb2 as pb
from mamoru.notify.v1 import notify_pb2

from tests.e2e.identity.conftest import IdentityOnCluster
from tests.support.people import TIMEOUT, client, reset_mail, reset_token_in

pytestmark = pytest.mark.asyncio

RESET = "/mamoru.identity.v1.IdentityService/RequestPasswordReset"


def with_unknown_fields(request: pb.RequestPasswordResetRequest, **fields: str) -> bytes:
    """The request plus fields the contract does not have (a destination, a birth date...)."""
    raw = request.SerializeToString()
    for number, value in enumerate(fields.values(), start=3):
        data = value.encode()
        raw += bytes([(number << 3) | 2, len(data)]) + data
    return raw


async def test_a_reset_request_with_extra_or_altered_fields_only_reaches_the_registered_address(
    identity: IdentityOnCluster,
):
    await identity.register("hanako@example.jp")
    smtp = identity.cluster.smtp

    raw_call = identity.cluster.channel("identity", as_="gateway").unary_unary(
        RESET,
        request_serializer=lambda raw: raw,
        response_deserializer=pb.RequestPasswordResetResponse.FromString,
    )
    attempts = [
        # Extra fields the contract does not have: a second address, a phone, a birth date.
        with_unknown_fields(
            pb.RequestPasswordResetRequest(identifier="hanako@example.jp", client=client()),
            email="attacker@evil.example",
            phone="+819012345678",
            birth_date="1990-01-01",
        ),
        # Another case and another Unicode form of the registered address.
        pb.RequestPasswordResetRequest(identifier="HANAKO@EXAMPLE.JP").SerializeToString(),
        pb.RequestPasswordResetRequest(
            identifier="".join(chr(ord(ch) + 0xFEE0) for ch in "hanako") + "@example.jp"
        ).SerializeToString(),
        # Two addresses in one identifier find no account at all.
        pb.RequestPasswordResetRequest(
            identifier="hanako@example.jp,attacker@evil.example"
        ).SerializeToString(),
    ]
    pool = identity.cluster.running["identity"].pool
    for number, raw in enumerate(attempts[:3], start=1):
        await raw_call(raw, timeout=TIMEOUT)
        # Each request finds the account and mails it a link.
        await reset_mail(smtp, "hanako@example.jp", count=number)
        # A fresh unused link is not replaced (a flood must not kill it): let it age.
        await pool.execute("update password_resets set created_at = now() - interval '16 min'")
    await raw_call(attempts[3], timeout=TIMEOUT)

    # Three links, each only to the registered address.
    await asyncio.sleep(1)
    assert len(await reset_mail(smtp, "hanako@example.jp")) == 3
    assert all(
        recipients == ["hanako@example.jp"] for recipients in (m.recipients for m in smtp.messages)
    )
    assert smtp.to("attacker@evil.example") == []


async def test_after_a_reset_old_tokens_are_refused_by_another_service_within_seconds(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    old = await identity.sign_in_with_email_code(person)
    notify = identity.cluster.stub("notify", as_="gateway")
    await notify.ListInbox(
        notify_pb2.ListInboxRequest(), metadata=identity.bearer(old), timeout=TIMEOUT
    )

    await identity.stub.RequestPasswordReset(
        pb.RequestPasswordResetRequest(identifier=person.email), timeout=TIMEOUT
    )
    token = reset_token_in((await reset_mail(identity.cluster.smtp, person.email))[-1])
    await identity.stub.CompletePasswordReset(
        pb.CompletePasswordResetRequest(
            reset_token=token, new_password="a brand new passphrase 2026", client=client()
        ),
        timeout=TIMEOUT,
    )

    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                await notify.ListInbox(
                    notify_pb2.ListInboxRequest(), metadata=identity.bearer(old), timeout=TIMEOUT
                )
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                break
            await asyncio.sleep(0.05)

    # The link is single-use, and the new password works (with a second factor: cool-off).
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await identity.stub.CompletePasswordReset(
            pb.CompletePasswordResetRequest(
                reset_token=token, new_password="yet another passphrase 2026", client=client()
            ),
            timeout=TIMEOUT,
        )
    assert reused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    person.password = "a brand new passphrase 2026"
    assert (await identity.login(person)).WhichOneof("result") in ("session", "challenge")


async def test_an_account_with_a_line_break_in_every_text_field_can_be_edited_and_closed(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp", display_name="花子\n🌸")
    session = (await identity.login(person)).session
    bearer = identity.bearer(session)
    updated = await identity.stub.UpdateProfile(
        pb.UpdateProfileRequest(
            family_name="山田\r\n", given_name="\n花\t子\n", display_name="x" * 199 + "\n"
        ),
        metadata=bearer,
        timeout=TIMEOUT,
    )
    assert updated.profile.family_name == "山田\r\n"
    assert updated.profile.given_name == "\n花\t子\n"
    assert not updated.profile.HasField("birth_date")

    # Text that cannot be stored safely is refused naming the field, and changes nothing.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.stub.UpdateProfile(
            pb.UpdateProfileRequest(family_name="a\x00b", given_name="y" * 10_000),
            metadata=bearer,
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "family_name" in refused.value.details()
    assert "given_name" in refused.value.details()
    profile = (
        await identity.stub.GetProfile(pb.GetProfileRequest(), metadata=bearer, timeout=TIMEOUT)
    ).profile
    assert profile.given_name == "\n花\t子\n"

    cleared = await identity.stub.UpdateProfile(
        pb.UpdateProfileRequest(clear_fields=["family_name"], given_name="花子"),
        metadata=bearer,
        timeout=TIMEOUT,
    )
    assert not cleared.profile.HasField("family_name")

    await identity.stub.CloseAccount(
        pb.CloseAccountRequest(reason="引っ越し\nします"), metadata=bearer, timeout=TIMEOUT
    )
    with pytest.raises(grpc.aio.AioRpcError) as closed:
        await identity.stub.GetProfile(pb.GetProfileRequest(), metadata=bearer, timeout=TIMEOUT)
    assert closed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await identity.login(person)
    assert gone.value.details() == "invalid credentials"
    rows = await identity.cluster.running["identity"].pool.fetch(
        "select topic, payload from outbox where topic = 'wallet.close_wallet'"
    )
    assert len(rows) == 1


async def test_an_account_with_a_second_factor_is_closed_only_after_a_step_up_with_it(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    await identity.enrol_totp(person, (await identity.login(person)).session)
    # The wallet may hold money only this account can claim: a level-1 session (the
    # password on a known phone, or the password and the inbox) must not close it.
    password_only = (await identity.login(person)).session
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.stub.CloseAccount(
            pb.CloseAccountRequest(reason="bye"),
            metadata=identity.bearer(password_only),
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    pool = identity.cluster.running["identity"].pool
    assert (
        await pool.fetchval("select status from accounts where id = $1::uuid", person.account_id)
        == "active"
    )

    stepped = await identity.step_up(person, password_only)
    await identity.stub.CloseAccount(
        pb.CloseAccountRequest(reason="bye"), metadata=identity.bearer(stepped), timeout=TIMEOUT
    )
    assert (
        await pool.fetchval("select status from accounts where id = $1::uuid", person.account_id)
        == "closed"
    )
    assert (
        await pool.fetchval("select count(*) from outbox where topic = 'wallet.close_wallet'") == 1
    )


async def test_codes_and_reset_links_do_not_stay_in_the_outbox_once_delivered(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    await identity.stub.RequestPasswordReset(
        pb.RequestPasswordResetRequest(identifier=person.email, client=client()), timeout=TIMEOUT
    )
    async for _ in identity.operator.ForceCredentialReset(
        pb.ForceCredentialResetRequest(account_ids=[person.account_id], reason="breach list"),
        timeout=TIMEOUT,
    ):
        pass
    await reset_mail(identity.mailbox, person.email, count=2)

    pool = identity.cluster.running["identity"].pool
    async with asyncio.timeout(TIMEOUT):
        while True:
            rows = await pool.fetch(
                "select state, payload->'code'->>'secret' as secret from outbox"
                " where payload ? 'code'"
            )
            if len(rows) == 3 and all(row["state"] == "delivered" for row in rows):
                break
            await asyncio.sleep(0.05)
    assert [row["secret"] for row in rows] == ["", "", ""]


async def test_a_flood_of_reset_requests_leaves_the_first_link_working(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    request = pb.RequestPasswordResetRequest(identifier=person.email, client=client())
    for _ in range(4):
        await identity.stub.RequestPasswordReset(request, timeout=TIMEOUT)
    (first,) = await reset_mail(identity.mailbox, person.email)

    # Someone else's requests, while the owner's link is fresh, mint nothing new...
    log = identity.operator.GetSecurityLog
    async with asyncio.timeout(TIMEOUT):
        while True:
            events = (
                await log(pb.GetSecurityLogRequest(account_id=person.account_id), timeout=TIMEOUT)
            ).events
            kinds = [event.kind for event in events]
            answered = ("password.reset_requested", "password.reset_repeated")
            if sum(kind in answered for kind in kinds) == 4:
                break
            await asyncio.sleep(0.05)
    assert kinds.count("password.reset_repeated") == 3
    pool = identity.cluster.running["identity"].pool
    assert await pool.fetchval("select count(*) from password_resets") == 1
    # ...so they cannot spend the link the owner received.
    await identity.stub.CompletePasswordReset(
        pb.CompletePasswordResetRequest(
            reset_token=reset_token_in(first),
            new_password="the owner's new passphrase",
            client=client(),
        ),
        timeout=TIMEOUT,
    )
