"""What identity tests look at from outside: refusals, sessions seen by another service, mail."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mamoru.identity.v1 import identity_pb2 as pb
from mamoru.notify.v1 import notify_pb2

from tests.e2e.identity.conftest import IdentityOnCluster
from tests.support.people import TIMEOUT, bearer, code_in, next_mail, subject_is

# Subjects of the security notices, in both languages notify writes.
FACTOR_CHANGED_SUBJECTS = ("認証方法が変更されました", "a sign-in method was changed")
CONTACT_CHANGED_SUBJECTS = ("連絡先が変更されようとしています", "a contact address is changing")
VERIFICATION_SUBJECTS = ("確認コード", "verification code")
_FREEZE_LINK = re.compile(r"freeze-contact\?token=([A-Za-z0-9_\-]+)")


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a refusal (empty when it carries none)."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no status details in {error.code()}: {error.details()}"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


async def ended(identity: IdentityOnCluster, session: pb.SessionTokens) -> bool:
    """True when identity refuses the session's access token."""
    try:
        await identity.stub.ListSessions(
            pb.ListSessionsRequest(), metadata=bearer(session), timeout=TIMEOUT
        )
    except grpc.aio.AioRpcError as error:
        return bool(error.code() == grpc.StatusCode.UNAUTHENTICATED)
    return False


async def notify_accepts(identity: IdentityOnCluster, session: pb.SessionTokens) -> None:
    """notify (another service, verifying tokens on its own) serves the session's token."""
    await identity.cluster.stub("notify", as_="gateway").ListInbox(
        notify_pb2.ListInboxRequest(), metadata=bearer(session), timeout=TIMEOUT
    )


async def notify_refuses_within(
    identity: IdentityOnCluster, session: pb.SessionTokens, seconds: float = 60.0
) -> grpc.StatusCode:
    """The status notify answers the session's token with, once it stops accepting it."""
    notify = identity.cluster.stub("notify", as_="gateway")
    async with asyncio.timeout(seconds):
        while True:
            try:
                await notify.ListInbox(
                    notify_pb2.ListInboxRequest(), metadata=bearer(session), timeout=TIMEOUT
                )
            except grpc.aio.AioRpcError as error:
                return error.code()
            await asyncio.sleep(0.05)


async def authenticated_long_ago(identity: IdentityOnCluster, session: pb.SessionTokens) -> None:
    """Let the session's last authentication fall outside the step-up window (10 minutes)."""
    await identity.cluster.running["identity"].pool.execute(
        "update sessions set auth_time = now() - interval '11 minutes' where id = $1::uuid",
        session.session_id,
    )


def mail_count(identity: IdentityOnCluster, address: str) -> int:
    return len(identity.mailbox.to(address))


async def mail_after(
    identity: IdentityOnCluster, address: str, subjects: tuple[str, ...], *, after: int
) -> str:
    """The text of the first mail to ``address`` with one of ``subjects`` after ``after`` mails."""
    message = await next_mail(identity.mailbox, address, subject_is(*subjects), after=after)
    return message.text()


async def add_verified_email(
    identity: IdentityOnCluster,
    session: pb.SessionTokens,
    address: str,
    *,
    make_primary: bool = False,
    device_proof: str = "",
) -> pb.Contact:
    """Add an email to the account and verify it with the code mailed to it
    (``device_proof``: the session's device proving its key, bound to its token)."""
    before = mail_count(identity, address)
    added = await identity.stub.AddContact(
        pb.AddContactRequest(
            kind=pb.CONTACT_KIND_EMAIL,
            address=address,
            make_primary=make_primary,
            device_proof=device_proof,
        ),
        metadata=bearer(session),
        timeout=TIMEOUT,
    )
    mail = await next_mail(
        identity.mailbox, address, subject_is(*VERIFICATION_SUBJECTS), after=before
    )
    verified = await identity.stub.VerifyContact(
        pb.VerifyContactRequest(contact_id=added.contact.contact_id, code=code_in(mail)),
        metadata=bearer(session),
        timeout=TIMEOUT,
    )
    contact: pb.Contact = verified.contact
    return contact


def freeze_token_in(text: str) -> str:
    match = _FREEZE_LINK.search(text)
    assert match, "no freeze link in the message"
    return match.group(1)
