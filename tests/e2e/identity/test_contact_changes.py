"""WatchContactChanges over real servers: notify hears which accounts changed."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from mamoru.identity.v1 import identity_pb2 as pb

from tests.e2e.identity.conftest import IdentityOnCluster
from tests.support.people import TIMEOUT, bearer


async def test_notify_hears_of_a_changed_display_name_once_subscribed(
    identity: IdentityOnCluster,
) -> None:
    person = await identity.register("watch@example.jp")
    session = await identity.sign_in(person)
    stream = identity.cluster.stub("identity", as_="notify").WatchContactChanges(
        pb.WatchContactChangesRequest()
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            # Headers mean subscribed: every change committed from now on is announced.
            await stream.initial_metadata()
        await identity.stub.UpdateProfile(
            pb.UpdateProfileRequest(display_name="花子"), metadata=bearer(session), timeout=TIMEOUT
        )
        heard: list[str] = []
        async with asyncio.timeout(TIMEOUT):
            async for message in stream:
                heard.extend(message.account_ids)
                if person.account_id in heard:
                    break
    finally:
        stream.cancel()
    assert heard == [person.account_id]


async def test_only_notify_may_watch_contact_changes(identity: IdentityOnCluster) -> None:
    for caller in ("wallet", "gateway", "operator"):
        stream = identity.cluster.stub("identity", as_=caller).WatchContactChanges(
            pb.WatchContactChangesRequest()
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async with asyncio.timeout(TIMEOUT):
                await stream.read()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
