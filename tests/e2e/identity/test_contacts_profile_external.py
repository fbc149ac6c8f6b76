"""Removing contacts, freeze links, clearing profile fields and unlinking external IDs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from mamoru.identity.v1 import identity_pb2 as pb

from tests.e2e.identity.checks import (
    CONTACT_CHANGED_SUBJECTS,
    FACTOR_CHANGED_SUBJECTS,
    add_verified_email,
    authenticated_long_ago,
    ended,
    freeze_token_in,
    mail_after,
    mail_count,
    reason_of,
    refused,
)
from tests.e2e.identity.conftest import IdentityOnCluster, start_identity
from tests.e2e.identity.test_external_ids import LocalProvider
from tests.support.people import TIMEOUT, bearer, client

pytestmark = pytest.mark.asyncio


async def contacts(identity: IdentityOnCluster, session: pb.SessionTokens) -> list[pb.Contact]:
    reply = await identity.stub.ListContacts(
        pb.ListContactsRequest(), metadata=bearer(session), timeout=TIMEOUT
    )
    return list(reply.contacts)


async def registered(identity: IdentityOnCluster, account_id: str) -> list[tuple[str, bool]]:
    """What notify is told: the verified addresses and which one is primary."""
    reply = await identity.cluster.stub("identity", as_="notify").GetRegisteredContacts(
        pb.GetRegisteredContactsRequest(account_id=account_id), timeout=TIMEOUT
    )
    return [(c.address, c.primary) for c in reply.contacts]


async def test_the_only_verified_email_cannot_be_removed(identity: IdentityOnCluster):
    person = await identity.register("hanako@example.jp")
    session = (await identity.login(person)).session
    (only,) = await contacts(identity, session)

    refusal = await refused(
        identity.stub.RemoveContact(
            pb.RemoveContactRequest(contact_id=only.contact_id),
            metadata=bearer(session),
            timeout=TIMEOUT,
        )
    )
    assert refusal.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await registered(identity, person.account_id) == [("hanako@example.jp", True)]
    assert (await identity.login(person)).HasField("session")


async def test_removing_a_contact_needs_step_up_ends_other_sessions_and_tells_the_rest(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    here = (await identity.login(person)).session
    work = await add_verified_email(identity, here, "hanako.work@example.jp")
    elsewhere = await identity.sign_in_with_email_code(person, device="tablet")

    await authenticated_long_ago(identity, here)
    stale = await refused(
        identity.stub.RemoveContact(
            pb.RemoveContactRequest(contact_id=work.contact_id),
            metadata=bearer(here),
            timeout=TIMEOUT,
        )
    )
    assert reason_of(stale) == "STEP_UP_REQUIRED"
    assert len(await registered(identity, person.account_id)) == 2

    stepped = await identity.step_up(person, here)
    before = mail_count(identity, person.email)
    await identity.stub.RemoveContact(
        pb.RemoveContactRequest(contact_id=work.contact_id),
        metadata=bearer(stepped),
        timeout=TIMEOUT,
    )
    assert await registered(identity, person.account_id) == [("hanako@example.jp", True)]
    assert [c.address for c in await contacts(identity, stepped)] == ["hanako@example.jp"]
    assert await ended(identity, elsewhere)
    assert not await ended(identity, stepped)
    assert await mail_after(identity, person.email, CONTACT_CHANGED_SUBJECTS, after=before)

    # What is left is the last verified email: it stays.
    (primary,) = await contacts(identity, stepped)
    last = await refused(
        identity.stub.RemoveContact(
            pb.RemoveContactRequest(contact_id=primary.contact_id),
            metadata=bearer(stepped),
            timeout=TIMEOUT,
        )
    )
    assert last.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await registered(identity, person.account_id) == [("hanako@example.jp", True)]


async def test_a_wrong_or_used_freeze_link_changes_nothing(identity: IdentityOnCluster):
    person = await identity.register("hanako@example.jp")
    here = (await identity.login(person)).session
    before = mail_count(identity, person.email)
    await add_verified_email(
        identity,
        here,
        "hanako.new@example.jp",
        make_primary=True,
        device_proof=person.session_proof("AddContact", here),
    )
    notice = await mail_after(identity, person.email, CONTACT_CHANGED_SUBJECTS, after=before)
    freeze_token = freeze_token_in(notice)

    empty = await refused(
        identity.stub.FreezeContactChange(
            pb.FreezeContactChangeRequest(freeze_token=""), timeout=TIMEOUT
        )
    )
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "freeze_token" in empty.details()
    for wrong in (freeze_token[:-1] + ("A" if freeze_token[-1] != "A" else "B"), "x" * 43):
        refusal = await refused(
            identity.stub.FreezeContactChange(
                pb.FreezeContactChangeRequest(freeze_token=wrong), timeout=TIMEOUT
            )
        )
        assert refusal.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(refusal) == "FREEZE_LINK_INVALID"
    assert await registered(identity, person.account_id) == [
        ("hanako.new@example.jp", True),
        ("hanako@example.jp", False),
    ]
    assert not await ended(identity, here)

    await identity.stub.FreezeContactChange(
        pb.FreezeContactChangeRequest(freeze_token=freeze_token), timeout=TIMEOUT
    )
    assert await registered(identity, person.account_id) == [("hanako@example.jp", True)]
    again = await refused(
        identity.stub.FreezeContactChange(
            pb.FreezeContactChangeRequest(freeze_token=freeze_token), timeout=TIMEOUT
        )
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(again) == "FREEZE_LINK_INVALID"
    assert await registered(identity, person.account_id) == [("hanako@example.jp", True)]


async def test_clearing_profile_fields_makes_them_unknown_again(identity: IdentityOnCluster):
    person = await identity.register(
        "hanako@example.jp", display_name="花子", language=pb.LANGUAGE_EN
    )
    session = (await identity.login(person)).session
    await identity.stub.UpdateProfile(
        pb.UpdateProfileRequest(family_name="山田", given_name="花子", birth_date="1990-04-01"),
        metadata=bearer(session),
        timeout=TIMEOUT,
    )

    for bad, why in (
        (pb.UpdateProfileRequest(clear_fields=["language"]), "clear_fields[0]"),
        (pb.UpdateProfileRequest(clear_fields=["email"]), "clear_fields[0]"),
        (
            pb.UpdateProfileRequest(given_name="花", clear_fields=["birth_date", "given_name"]),
            "clear_fields[1]",
        ),
    ):
        refusal = await refused(
            identity.stub.UpdateProfile(bad, metadata=bearer(session), timeout=TIMEOUT)
        )
        assert refusal.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert why in refusal.details()
    unchanged = (
        await identity.stub.GetProfile(pb.GetProfileRequest(), metadata=bearer(session))
    ).profile
    assert (unchanged.given_name, unchanged.birth_date) == ("花子", "1990-04-01")

    cleared = (
        await identity.stub.UpdateProfile(
            pb.UpdateProfileRequest(
                clear_fields=["display_name", "family_name", "given_name", "birth_date"]
            ),
            metadata=bearer(session),
            timeout=TIMEOUT,
        )
    ).profile
    read = (
        await identity.stub.GetProfile(
            pb.GetProfileRequest(), metadata=bearer(session), timeout=TIMEOUT
        )
    ).profile
    for profile in (cleared, read):
        for field in ("display_name", "family_name", "given_name", "birth_date"):
            assert not profile.HasField(field), field
        assert profile.language == pb.LANGUAGE_EN
        assert profile.account_id == person.account_id
    # Notify no longer has a name to greet the person with.
    notify_view = await identity.cluster.stub("identity", as_="notify").GetRegisteredContacts(
        pb.GetRegisteredContactsRequest(account_id=person.account_id), timeout=TIMEOUT
    )
    assert not notify_view.HasField("display_name")

    # A cleared field can be given again.
    again = (
        await identity.stub.UpdateProfile(
            pb.UpdateProfileRequest(family_name="山田"), metadata=bearer(session), timeout=TIMEOUT
        )
    ).profile
    assert again.family_name == "山田" and not again.HasField("given_name")


@pytest_asyncio.fixture
async def line(cluster) -> AsyncIterator[tuple[IdentityOnCluster, LocalProvider]]:
    provider = LocalProvider()
    await provider.start()
    try:
        await start_identity(cluster, env={"IDENTITY_OIDC_PROVIDERS": provider.config("line")})
        yield IdentityOnCluster(cluster), provider
    finally:
        await provider.stop()


async def external_login(
    identity: IdentityOnCluster, provider: LocalProvider, subject: str
) -> pb.ExternalLoginResponse:
    nonce = (
        await identity.stub.BeginExternalLogin(
            pb.BeginExternalLoginRequest(provider="line", client=client()), timeout=TIMEOUT
        )
    ).nonce
    reply: pb.ExternalLoginResponse = await identity.stub.ExternalLogin(
        pb.ExternalLoginRequest(
            provider="line",
            id_token=provider.id_token(subject, nonce),
            nonce=nonce,
            client=client(),
        ),
        timeout=TIMEOUT,
    )
    return reply


async def test_an_unlinked_external_id_no_longer_signs_in(
    line: tuple[IdentityOnCluster, LocalProvider],
):
    identity, provider = line
    person = await identity.register("hanako@example.jp")
    here = (await identity.login(person)).session
    nonce = (
        await identity.stub.BeginExternalLogin(
            pb.BeginExternalLoginRequest(provider="line", client=client()), timeout=TIMEOUT
        )
    ).nonce
    await identity.stub.LinkExternalIdentity(
        pb.LinkExternalIdentityRequest(
            provider="line", id_token=provider.id_token("line-user-1", nonce), nonce=nonce
        ),
        metadata=bearer(here),
        timeout=TIMEOUT,
    )
    external = (await external_login(identity, provider, "line-user-1")).session

    await authenticated_long_ago(identity, here)
    stale = await refused(
        identity.stub.UnlinkExternalIdentity(
            pb.UnlinkExternalIdentityRequest(provider="line"),
            metadata=bearer(here),
            timeout=TIMEOUT,
        )
    )
    assert reason_of(stale) == "STEP_UP_REQUIRED"
    assert (await external_login(identity, provider, "line-user-1")).session.access_token

    stepped = await identity.step_up(person, here)
    before = mail_count(identity, person.email)
    await identity.stub.UnlinkExternalIdentity(
        pb.UnlinkExternalIdentityRequest(provider="line"), metadata=bearer(stepped), timeout=TIMEOUT
    )
    gone = await refused(external_login(identity, provider, "line-user-1"))
    assert gone.code() == grpc.StatusCode.UNAUTHENTICATED
    assert gone.details() == "invalid credentials"
    assert await ended(identity, external)
    assert not await ended(identity, stepped)
    assert await mail_after(identity, person.email, FACTOR_CHANGED_SUBJECTS, after=before)

    twice = await refused(
        identity.stub.UnlinkExternalIdentity(
            pb.UnlinkExternalIdentityRequest(provider="line"),
            metadata=bearer(stepped),
            timeout=TIMEOUT,
        )
    )
    assert twice.code() == grpc.StatusCode.NOT_FOUND


async def test_a_fresh_external_id_session_must_step_up_before_removing_a_factor(
    line: tuple[IdentityOnCluster, LocalProvider],
):
    identity, provider = line
    person = await identity.register("hanako@example.jp")
    here = (await identity.login(person)).session
    await identity.enrol_totp(person, here)
    # Linking an ID is adding a way in: it takes the factor the account has.
    here = await identity.step_up(person, here)
    nonce = (
        await identity.stub.BeginExternalLogin(
            pb.BeginExternalLoginRequest(provider="line", client=client()), timeout=TIMEOUT
        )
    ).nonce
    await identity.stub.LinkExternalIdentity(
        pb.LinkExternalIdentityRequest(
            provider="line", id_token=provider.id_token("line-user-1", nonce), nonce=nonce
        ),
        metadata=bearer(here),
        timeout=TIMEOUT,
    )
    # Whoever holds the LINE account signs in: someone else's ID proves nothing about the
    # account's own second factor.
    external = (await external_login(identity, provider, "line-user-1")).session
    factors = (
        await identity.stub.ListFactors(
            pb.ListFactorsRequest(), metadata=bearer(external), timeout=TIMEOUT
        )
    ).factors
    refusal = await refused(
        identity.stub.RemoveFactor(
            pb.RemoveFactorRequest(factor_id=factors[0].factor_id),
            metadata=bearer(external),
            timeout=TIMEOUT,
        )
    )
    assert refusal.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(refusal) == "STEP_UP_REQUIRED"
    remaining = await identity.stub.ListFactors(
        pb.ListFactorsRequest(), metadata=bearer(external), timeout=TIMEOUT
    )
    assert len(remaining.factors) == 1


async def test_a_freeze_link_brings_back_the_old_address_even_after_it_was_removed(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    # Someone in the account moves it to their own address, then drops the owner's.
    intruder = (await identity.login(person)).session
    before = mail_count(identity, person.email)
    await add_verified_email(
        identity,
        intruder,
        "intruder@evil.example",
        make_primary=True,
        device_proof=person.session_proof("AddContact", intruder),
    )
    notice = await mail_after(identity, person.email, CONTACT_CHANGED_SUBJECTS, after=before)
    owners = next(c for c in await contacts(identity, intruder) if c.address == person.email)
    await identity.stub.RemoveContact(
        pb.RemoveContactRequest(contact_id=owners.contact_id),
        metadata=bearer(intruder),
        timeout=TIMEOUT,
    )
    assert await registered(identity, person.account_id) == [("intruder@evil.example", True)]

    await identity.stub.FreezeContactChange(
        pb.FreezeContactChangeRequest(freeze_token=freeze_token_in(notice)), timeout=TIMEOUT
    )
    assert await registered(identity, person.account_id) == [("hanako@example.jp", True)]
    assert await ended(identity, intruder)
    # The address signs in and receives reset links again.
    assert (await identity.login(person)).WhichOneof("result") in ("session", "challenge")
