"""Password and contact changes end other sessions; revocations stream; breached passwords."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from mamoru.identity.v1 import identity_pb2 as pb

from services.devstack.stack import free_port
from tests.e2e.identity.conftest import IdentityOnCluster, start_identity
from tests.support.people import (
    TIMEOUT,
    VERIFICATION_SUBJECTS,
    client,
    code_in,
    next_mail,
    subject_is,
)

pytestmark = pytest.mark.asyncio


async def session_ended(identity: IdentityOnCluster, session: pb.SessionTokens) -> bool:
    try:
        await identity.stub.ListSessions(
            pb.ListSessionsRequest(), metadata=identity.bearer(session), timeout=TIMEOUT
        )
    except grpc.aio.AioRpcError as error:
        return bool(error.code() == grpc.StatusCode.UNAUTHENTICATED)
    return False


async def queued(identity: IdentityOnCluster, kind: str) -> list[dict[str, Any]]:
    rows = await identity.cluster.running["identity"].pool.fetch(
        "select payload from outbox where payload->>'kind' = $1 order by id", kind
    )
    return [row["payload"] for row in rows]


async def test_changing_the_password_ends_every_other_session_and_tells_the_owner(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    here = (await identity.login(person)).session
    elsewhere = await identity.sign_in_with_email_code(person, device="tablet")

    with pytest.raises(grpc.aio.AioRpcError) as short:
        await identity.stub.ChangePassword(
            pb.ChangePasswordRequest(current_password=person.password, new_password="8 chars!"),
            metadata=identity.bearer(here),
            timeout=TIMEOUT,
        )
    assert short.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "new_password" in short.value.details()

    changed = await identity.stub.ChangePassword(
        pb.ChangePasswordRequest(
            current_password=person.password, new_password="a new and longer passphrase"
        ),
        metadata=identity.bearer(here),
        timeout=TIMEOUT,
    )
    assert changed.session.session_id == here.session_id
    assert await session_ended(identity, elsewhere)
    assert not await session_ended(identity, changed.session)
    notices = await queued(identity, "NOTICE_KIND_PASSWORD_CHANGED")
    assert [n["account_id"] for n in notices] == [person.account_id]


async def test_a_new_primary_email_takes_effect_once_verified_and_the_old_one_can_freeze_it(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    here = (await identity.login(person)).session
    elsewhere = await identity.sign_in_with_email_code(person, device="tablet")
    added = (
        await identity.stub.AddContact(
            pb.AddContactRequest(
                kind=pb.CONTACT_KIND_EMAIL,
                address="hanako.new@example.jp",
                make_primary=True,
                device_proof=person.session_proof("AddContact", here),
            ),
            metadata=identity.bearer(here),
            timeout=TIMEOUT,
        )
    ).contact
    assert not added.verified and not added.primary
    notify_view = identity.cluster.stub("identity", as_="notify")
    contacts = await notify_view.GetRegisteredContacts(
        pb.GetRegisteredContactsRequest(account_id=person.account_id), timeout=TIMEOUT
    )
    assert [c.address for c in contacts.contacts] == ["hanako@example.jp"]

    mail = await next_mail(
        identity.mailbox, "hanako.new@example.jp", subject_is(*VERIFICATION_SUBJECTS), after=0
    )
    code = code_in(mail)
    verified = await identity.stub.VerifyContact(
        pb.VerifyContactRequest(contact_id=added.contact_id, code=code),
        metadata=identity.bearer(here),
        timeout=TIMEOUT,
    )
    assert verified.contact.verified and verified.contact.primary
    assert await session_ended(identity, elsewhere)

    changed = await queued(identity, "NOTICE_KIND_CONTACT_CHANGED")
    freeze_token = changed[-1]["security_event"]["freeze_token"]
    await identity.stub.FreezeContactChange(
        pb.FreezeContactChangeRequest(freeze_token=freeze_token), timeout=TIMEOUT
    )
    contacts = await notify_view.GetRegisteredContacts(
        pb.GetRegisteredContactsRequest(account_id=person.account_id), timeout=TIMEOUT
    )
    assert [(c.address, c.primary) for c in contacts.contacts] == [("hanako@example.jp", True)]
    assert await session_ended(identity, here)


async def test_revocations_stream_to_other_services_and_resume_from_the_cursor(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    first = (await identity.login(person)).session
    second = await identity.sign_in_with_email_code(person, device="tablet")
    watcher = identity.cluster.stub("identity", as_="wallet")
    stream = watcher.WatchRevocations(pb.WatchRevocationsRequest(after_sequence=0))
    await identity.stub.Logout(pb.LogoutRequest(), metadata=identity.bearer(first), timeout=TIMEOUT)
    async with asyncio.timeout(TIMEOUT):
        seen = await stream.read()
    assert seen.session_id == first.session_id
    await identity.stub.Logout(
        pb.LogoutRequest(), metadata=identity.bearer(second), timeout=TIMEOUT
    )
    async with asyncio.timeout(TIMEOUT):
        nxt = await stream.read()
    stream.cancel()
    assert (nxt.session_id, nxt.sequence > seen.sequence) == (second.session_id, True)

    # A resumed stream looks again a little below its cursor (a revocation may have
    # committed late there), so it may repeat what was seen; revoking twice is harmless.
    resumed = watcher.WatchRevocations(pb.WatchRevocationsRequest(after_sequence=seen.sequence))
    again: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        while second.session_id not in again:
            again.append((await resumed.read()).session_id)
    resumed.cancel()
    assert set(again) <= {first.session_id, second.session_id}


class PwnedRangeServer:
    """A local server speaking the Pwned Passwords range protocol."""

    def __init__(self, breached: list[str]) -> None:
        self.port = free_port()
        self.prefixes: list[str] = []
        self._hashes = [
            hashlib.sha1(p.encode(), usedforsecurity=False).hexdigest().upper() for p in breached
        ]
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def range_(request: web.Request) -> web.Response:
            prefix = request.match_info["prefix"].upper()
            self.prefixes.append(prefix)
            lines = [f"{h[5:]}:42" for h in self._hashes if h.startswith(prefix)]
            lines.append("0000000000000000000000000000000000A:0")  # padding entry
            return web.Response(text="\r\n".join(lines))

        app = web.Application()
        app.router.add_get("/range/{prefix}", range_)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture
async def pwned() -> AsyncIterator[PwnedRangeServer]:
    server = PwnedRangeServer(["a breached but long passphrase"])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_a_password_in_the_breach_range_api_is_refused_and_only_a_prefix_leaves(
    cluster, pwned: PwnedRangeServer
):
    await start_identity(
        cluster, env={"IDENTITY_PWNED_RANGE_URL": f"http://127.0.0.1:{pwned.port}/range/"}
    )
    identity = IdentityOnCluster(cluster)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.stub.Register(
            pb.RegisterRequest(
                email="hanako@example.jp",
                password="a breached but long passphrase",
                client=client(),
            ),
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "breach" in refused.value.details()
    await identity.register("taro@example.jp")
    assert len(pwned.prefixes) == 2
    assert all(len(prefix) == 5 for prefix in pwned.prefixes)
