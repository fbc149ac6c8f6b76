"""Whoever proves the address owns the account: a registration, external ID or contact that
was never verified gives its maker nothing, over real servers and the local mailbox."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from mamoru.identity.v1 import identity_pb2 as pb

from services.runtime.device_proof import DeviceKey
from tests.e2e.identity.checks import reason_of, refused
from tests.e2e.identity.conftest import IdentityOnCluster, start_identity
from tests.harness import Cluster
from tests.support.oidc import LocalOidcProvider
from tests.support.people import (
    PASSWORD,
    TIMEOUT,
    VERIFICATION_SUBJECTS,
    client,
    code_in,
    home_address,
    next_mail,
    subject_is,
)

pytestmark = pytest.mark.asyncio

VICTIM = "hanako@example.jp"
OWNER_PASSWORD = "the owner's own long passphrase"
ATTACKER_PASSWORD = "an attacker's planted passphrase"
# Each device label stands for one device holding its own key, which proves it.
_KEYS: dict[str, DeviceKey] = {}


def key_of(device: str) -> DeviceKey:
    return _KEYS.setdefault(device, DeviceKey())


def label_of(thumbprint: str | None) -> str | None:
    """The label of the device whose key has ``thumbprint``, as the tests name it."""
    return next((label for label, key in _KEYS.items() if key.thumbprint == thumbprint), None)


async def register(
    identity: IdentityOnCluster,
    password: str,
    device: str,
    *,
    email: str = VICTIM,
    ip: str | None = None,
    display_name: str | None = None,
) -> str:
    """Register ``email`` from ``device`` and return the code mailed for this registration."""
    before = len(identity.mailbox.to(email))
    request = pb.RegisterRequest(
        email=email,
        password=password,
        client=client(device, ip or home_address()),
        device_proof=key_of(device).proof("Register", email),
    )
    if display_name is not None:
        request.display_name = display_name
    await identity.stub.Register(request, timeout=TIMEOUT)
    wanted = subject_is(*VERIFICATION_SUBJECTS)
    return code_in(await next_mail(identity.mailbox, email, wanted, after=before))


async def verify(
    identity: IdentityOnCluster, code: str, device: str, *, email: str = VICTIM
) -> pb.VerifyEmailResponse:
    reply: pb.VerifyEmailResponse = await identity.stub.VerifyEmail(
        pb.VerifyEmailRequest(
            email=email,
            code=code,
            client=client(device),
            device_proof=key_of(device).proof("VerifyEmail", email),
        ),
        timeout=TIMEOUT,
    )
    return reply


async def login(
    identity: IdentityOnCluster, password: str, device: str, *, email: str = VICTIM
) -> pb.LoginResponse:
    reply: pb.LoginResponse = await identity.stub.Login(
        pb.LoginRequest(
            identifier=email,
            password=password,
            client=client(device),
            device_proof=key_of(device).proof("Login", email),
        ),
        timeout=TIMEOUT,
    )
    return reply


async def login_refusal(
    identity: IdentityOnCluster, password: str, device: str, *, email: str = VICTIM
) -> tuple[grpc.StatusCode, str]:
    error = await refused(login(identity, password, device, email=email))
    return error.code(), error.details() or ""


async def registered(
    identity: IdentityOnCluster, email: str = VICTIM
) -> list[tuple[str, str | None]]:
    """Accounts holding ``email`` as a verified address: (status, registration device's
    label)."""
    rows = await identity.cluster.running["identity"].pool.fetch(
        "select a.status, a.registration_device_id from contacts c"
        " join accounts a on a.id = c.account_id where c.login_key = $1",
        email,
    )
    return [(row["status"], label_of(row["registration_device_id"])) for row in rows]


def other_code(*codes: str) -> str:
    """A well-formed code that is none of ``codes``."""
    guess = int(codes[0])
    while f"{guess:06d}" in codes:
        guess = (guess + 1) % 1_000_000
    return f"{guess:06d}"


async def test_the_owner_who_verifies_gets_their_own_password_device_and_profile(
    identity: IdentityOnCluster,
):
    await register(identity, ATTACKER_PASSWORD, "attacker-laptop", display_name="attacker")
    owner_code = await register(identity, OWNER_PASSWORD, "phone-1", display_name="花子")
    account_id = (await verify(identity, owner_code, "phone-1")).account_id

    assert (await login(identity, OWNER_PASSWORD, "phone-1")).WhichOneof("result") in (
        "session",
        "challenge",
    )
    wrong = await login_refusal(identity, "a password nobody ever chose", "attacker-laptop")
    assert wrong == (grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")
    assert await login_refusal(identity, ATTACKER_PASSWORD, "attacker-laptop") == wrong
    assert await registered(identity) == [("active", "phone-1")]
    devices = await identity.cluster.running["identity"].pool.fetch(
        "select device_id from devices where account_id = $1", uuid.UUID(account_id)
    )
    assert [label_of(row["device_id"]) for row in devices] == ["phone-1"]
    contacts = await identity.cluster.stub("identity", as_="notify").GetRegisteredContacts(
        pb.GetRegisteredContactsRequest(account_id=account_id), timeout=TIMEOUT
    )
    assert contacts.display_name == "花子"
    assert [(c.address, c.verified) for c in contacts.contacts] == [(VICTIM, True)]


async def test_a_pre_registration_dies_when_the_owner_verifies_and_never_signs_in(
    identity: IdentityOnCluster,
):
    attacker_code = await register(identity, ATTACKER_PASSWORD, "attacker-laptop")
    # Alone, the pending registration opens nothing.
    assert await login_refusal(identity, ATTACKER_PASSWORD, "attacker-laptop") == (
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid credentials",
    )
    owner_code = await register(identity, OWNER_PASSWORD, "phone-1")
    await verify(identity, owner_code, "phone-1")

    late = await refused(verify(identity, attacker_code, "attacker-laptop"))
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(late) == "CODE_INVALID"
    assert await registered(identity) == [("active", "phone-1")]
    assert await login_refusal(identity, ATTACKER_PASSWORD, "attacker-laptop") == (
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid credentials",
    )


async def test_a_code_sent_for_someone_elses_registration_does_not_activate_it(
    identity: IdentityOnCluster,
):
    owner_code = await register(identity, OWNER_PASSWORD, "phone-1")
    # Someone registers the same, still unverified, address after the owner did.
    attacker_code = await register(identity, ATTACKER_PASSWORD, "attacker-laptop")
    # The owner, seeing the newest mail, types its code into their app: it was not
    # sent for their registration and activates nothing.
    if attacker_code != owner_code:
        mixed_up = await refused(verify(identity, attacker_code, "phone-1"))
        assert reason_of(mixed_up) == "CODE_INVALID"
        assert await registered(identity) == []
    await verify(identity, owner_code, "phone-1")
    assert (await login(identity, OWNER_PASSWORD, "phone-1")).WhichOneof("result") is not None
    assert await login_refusal(identity, ATTACKER_PASSWORD, "phone-1") == (
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid credentials",
    )
    assert await registered(identity) == [("active", "phone-1")]


async def test_wrong_codes_from_another_device_do_not_use_up_the_owners_attempts(
    identity: IdentityOnCluster,
):
    owner_code = await register(identity, OWNER_PASSWORD, "phone-1")
    attacker_code = await register(identity, ATTACKER_PASSWORD, "attacker-laptop")
    guess = other_code(owner_code, attacker_code)
    for _ in range(8):
        wrong = await refused(verify(identity, guess, "attacker-laptop"))
        assert reason_of(wrong) == "CODE_INVALID"
    await verify(identity, owner_code, "phone-1")
    assert await registered(identity) == [("active", "phone-1")]


async def test_a_flood_of_registrations_of_the_address_does_not_keep_the_owners_code_away(
    identity: IdentityOnCluster,
):
    # As many as notify lets through per recipient in its window, each from its own network.
    for n in range(3):
        await register(identity, ATTACKER_PASSWORD, f"attacker-{n}")
    owner_code = await register(identity, OWNER_PASSWORD, "phone-1")
    await verify(identity, owner_code, "phone-1")
    assert (await login(identity, OWNER_PASSWORD, "phone-1")).WhichOneof("result") is not None


async def test_registering_again_from_the_same_device_replaces_only_its_own_registration(
    identity: IdentityOnCluster,
):
    elsewhere = await register(identity, ATTACKER_PASSWORD, "attacker-laptop")
    first_code = await register(identity, "a passphrase typed wrongly at first", "phone-1")
    second_code = await register(identity, OWNER_PASSWORD, "phone-1")
    if first_code != second_code:
        replaced = await refused(verify(identity, first_code, "phone-1"))
        assert reason_of(replaced) == "CODE_INVALID"
    await verify(identity, second_code, "phone-1")
    assert (await login(identity, OWNER_PASSWORD, "phone-1")).WhichOneof("result") is not None
    wrong = await login_refusal(identity, "a passphrase typed wrongly at first", "phone-1")
    assert wrong == (grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")
    assert reason_of(await refused(verify(identity, elsewhere, "attacker-laptop"))) == (
        "CODE_INVALID"
    )


async def test_two_registrations_verified_at_once_make_exactly_one_account(
    identity: IdentityOnCluster,
):
    phone_code = await register(identity, OWNER_PASSWORD, "phone-1")
    laptop_code = await register(identity, "the same person's other passphrase", "laptop-1")
    outcomes = await asyncio.gather(
        verify(identity, phone_code, "phone-1"),
        verify(identity, laptop_code, "laptop-1"),
        return_exceptions=True,
    )
    accepted = [o for o in outcomes if isinstance(o, pb.VerifyEmailResponse)]
    losers = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(accepted) == 1
    assert [reason_of(loser) for loser in losers] == ["CODE_INVALID"]
    assert len(await registered(identity)) == 1


async def test_registering_a_free_pending_or_taken_address_answers_alike_and_mails_only_it(
    identity: IdentityOnCluster,
):
    taken = await identity.register("taro@example.jp")
    answers = []
    # A free address, the same address now pending, and a registered one.
    tries = (("free@example.jp", "laptop"), ("free@example.jp", "tablet"), (taken.email, "pc"))
    for email, device in tries:
        reply = await identity.stub.Register(
            pb.RegisterRequest(email=email, password=ATTACKER_PASSWORD,
                               client=client(device, home_address())),
            timeout=TIMEOUT,
        )  # fmt: skip
        answers.append(sorted(field.name for field, _ in reply.ListFields()))
    assert answers == [["code_expires_at"]] * 3
    await next_mail(identity.mailbox, "free@example.jp", subject_is(*VERIFICATION_SUBJECTS),
                    after=1)  # fmt: skip
    assert {
        recipient for message in identity.mailbox.messages for recipient in message.recipients
    } <= {"free@example.jp", taken.email}


# External IDs and contacts ---------------------------------------------------------------


@pytest_asyncio.fixture
async def provider() -> AsyncIterator[LocalOidcProvider]:
    running = LocalOidcProvider()
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def external_login(
    identity: IdentityOnCluster, provider: LocalOidcProvider, subject: str, email: str
) -> grpc.aio.AioRpcError:
    begun = await identity.stub.BeginExternalLogin(
        pb.BeginExternalLoginRequest(provider="line", client=client()), timeout=TIMEOUT
    )
    token = provider.id_token(subject, begun.nonce, claims={"email": email, "email_verified": True})
    return await refused(
        identity.stub.ExternalLogin(
            pb.ExternalLoginRequest(provider="line", id_token=token, nonce=begun.nonce,
                                    client=client("attacker-laptop")),
            timeout=TIMEOUT,
        )
    )  # fmt: skip


async def test_an_external_id_claiming_the_address_of_a_pending_or_registered_account_gets_nothing(
    cluster: Cluster, provider: LocalOidcProvider
):
    await start_identity(cluster, env={"IDENTITY_OIDC_PROVIDERS": provider.config("line")})
    identity = IdentityOnCluster(cluster)
    owner_code = await register(identity, OWNER_PASSWORD, "phone-1")
    pending = await external_login(identity, provider, "attacker-sub", VICTIM)
    assert (pending.code(), pending.details()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid credentials",
    )
    await verify(identity, owner_code, "phone-1")
    taken = await external_login(identity, provider, "attacker-sub", VICTIM)
    assert (taken.code(), taken.details()) == (pending.code(), pending.details())
    linked = await identity.cluster.running["identity"].pool.fetchval(
        "select count(*) from external_identities"
    )
    assert linked == 0


async def test_an_unverified_contact_of_someone_elses_address_neither_blocks_nor_takes_it(
    identity: IdentityOnCluster,
):
    attacker = await identity.register("mallory@example.jp", device="attacker-laptop")
    session = await identity.sign_in(attacker)
    await identity.stub.AddContact(
        pb.AddContactRequest(
            kind=pb.CONTACT_KIND_EMAIL,
            address=VICTIM,
            make_primary=True,
            device_proof=attacker.session_proof("AddContact", session),
        ),
        metadata=identity.bearer(session),
        timeout=TIMEOUT,
    )
    await next_mail(identity.mailbox, VICTIM, subject_is(*VERIFICATION_SUBJECTS), after=0)
    # The owner registers the address as if nobody had claimed it.
    owner_code = await register(identity, OWNER_PASSWORD, "phone-1")
    await verify(identity, owner_code, "phone-1")
    assert await registered(identity) == [("active", "phone-1")]
    assert (await login(identity, OWNER_PASSWORD, "phone-1")).WhichOneof("result") is not None
    assert await login_refusal(identity, PASSWORD, "attacker-laptop") == (
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid credentials",
    )


async def test_verifying_an_address_another_account_holds_leaves_it_with_that_account(
    identity: IdentityOnCluster,
):
    owner = await identity.register(VICTIM, device="phone-1")
    _KEYS["phone-1"] = owner.key("phone-1")
    other = await identity.register("mallory@example.jp", device="attacker-laptop")
    session = await identity.sign_in(other)
    before = len(identity.mailbox.to(VICTIM))
    added = await identity.stub.AddContact(
        pb.AddContactRequest(
            kind=pb.CONTACT_KIND_EMAIL,
            address=VICTIM,
            make_primary=True,
            device_proof=other.session_proof("AddContact", session),
        ),
        metadata=identity.bearer(session),
        timeout=TIMEOUT,
    )
    # Even with the code from the owner's inbox, the address stays the owner's.
    mail = await next_mail(identity.mailbox, VICTIM, subject_is(*VERIFICATION_SUBJECTS),
                           after=before)  # fmt: skip
    taken = await refused(
        identity.stub.VerifyContact(
            pb.VerifyContactRequest(contact_id=added.contact.contact_id, code=code_in(mail)),
            metadata=identity.bearer(session),
            timeout=TIMEOUT,
        )
    )
    assert reason_of(taken) == "ADDRESS_UNAVAILABLE"
    assert await registered(identity) == [("active", "phone-1")]
    assert (await identity.login(owner)).WhichOneof("result") is not None


async def test_verifying_an_address_as_a_contact_ends_its_pending_registrations(
    identity: IdentityOnCluster,
):
    attacker_code = await register(identity, ATTACKER_PASSWORD, "attacker-laptop")
    # The address's owner, who already has an account, adds it there and verifies it.
    owner = await identity.register("hanako.old@example.jp", device="phone-1")
    _KEYS["phone-1"] = owner.key("phone-1")
    session = await identity.sign_in(owner)
    before = len(identity.mailbox.to(VICTIM))
    added = await identity.stub.AddContact(
        pb.AddContactRequest(kind=pb.CONTACT_KIND_EMAIL, address=VICTIM),
        metadata=identity.bearer(session),
        timeout=TIMEOUT,
    )
    mail = await next_mail(identity.mailbox, VICTIM, subject_is(*VERIFICATION_SUBJECTS),
                           after=before)  # fmt: skip
    await identity.stub.VerifyContact(
        pb.VerifyContactRequest(contact_id=added.contact.contact_id, code=code_in(mail)),
        metadata=identity.bearer(session),
        timeout=TIMEOUT,
    )
    late = await refused(verify(identity, attacker_code, "attacker-laptop"))
    assert reason_of(late) == "CODE_INVALID"
    assert await registered(identity) == [("active", "phone-1")]
    pending = await identity.cluster.running["identity"].pool.fetchval(
        "select count(*) from contacts c join accounts a on a.id = c.account_id"
        " where c.address_key = $1 and a.status = 'pending' and c.removed_at is null",
        VICTIM,
    )
    assert pending == 0
