"""What every group of handlers holds."""

from __future__ import annotations

import asyncio

from mamoru.identity.v1 import identity_pb2_grpc

from services.identity.clients.contact_changes import ContactChangeFeed
from services.identity.clients.revocations import RevocationFeed
from services.identity.use_cases import Identity


class Handlers(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(
        self,
        identity: Identity,
        feed: RevocationFeed,
        stopping: asyncio.Event,
        contact_changes: ContactChangeFeed,
    ) -> None:
        self.identity = identity
        self.feed = feed
        self.stopping = stopping
        self.contact_changes = contact_changes
