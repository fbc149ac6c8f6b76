"""WatchContactChanges: notify's signal to forget the contacts it kept for an account."""

from __future__ import annotations

from collections.abc import AsyncIterator

from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.api.base import Handlers
from services.identity.api.convert import Context


class ContactChangeRpcs(Handlers):
    async def WatchContactChanges(
        self, request: pb.WatchContactChangesRequest, context: Context
    ) -> AsyncIterator[pb.WatchContactChangesResponse]:
        async with self.contact_changes.subscribe(self.stopping) as subscription:
            # Headers only once subscribed: from then on no change is missed, so the
            # follower may start keeping answers when they arrive.
            await context.send_initial_metadata(())
            async for account_ids in subscription.batches(self.stopping):
                yield pb.WatchContactChangesResponse(account_ids=account_ids)
