"""Outbox topics and the router that hands each message to its handler.

One convention for every service. A ``Topic`` names a message and its protobuf
type; the payload is that message in protobuf's JSON mapping with the proto's
field names (``json_format.MessageToDict(..., preserving_proto_field_name=True)``),
so the sender writes it with ``Topic.enqueue`` and the handler receives it
parsed back into the type, the idempotency key beside it. A payload without a
proto of its own uses ``google.protobuf.Struct`` (a plain JSON object).

``OutboxRouter`` is an ``OutboxRelay``'s ``deliver``: it finds the topic's handler
and calls it. A message whose topic has no handler, or whose payload does not
parse as the topic's type, is an error: it is logged and raised, so the relay
retries it with backoff (a newer replica may know the topic) and it ends dead,
kept for operators, rather than being dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import asyncpg
import structlog
from google.protobuf import json_format
from google.protobuf.message import Message

from services.runtime.outbox import OutboxMessage, enqueue

M = TypeVar("M", bound=Message)

_log = structlog.get_logger(__name__)


class UnknownTopic(ValueError):
    """No handler is registered for the message's topic."""


@dataclasses.dataclass(frozen=True)
class Topic(Generic[M]):
    """An outbox topic carrying messages of one protobuf type."""

    name: str
    message_type: type[M]

    async def enqueue(
        self,
        conn: asyncpg.Connection,
        message: M,
        *,
        idempotency_key: str,
        scrub: Sequence[Sequence[str]] = (),
    ) -> None:
        """Store ``message`` in the caller's transaction (see ``outbox.enqueue``)."""
        payload: dict[str, Any] = json_format.MessageToDict(
            message, preserving_proto_field_name=True
        )
        await enqueue(
            conn, topic=self.name, idempotency_key=idempotency_key, payload=payload, scrub=scrub
        )

    def parse(self, payload: dict[str, Any]) -> M:
        """The message a payload of this topic carries."""
        return json_format.ParseDict(payload, self.message_type())


Handler = Callable[[M, OutboxMessage], Awaitable[None]]


class OutboxRouter:
    """Topic name -> handler; call it with an ``OutboxMessage`` to deliver it."""

    def __init__(self) -> None:
        self._routes: dict[str, Callable[[OutboxMessage], Awaitable[None]]] = {}

    def on(self, topic: Topic[M], handle: Handler[M]) -> OutboxRouter:
        """Route ``topic`` to ``handle(message, envelope)``; returns the router."""
        if topic.name in self._routes:
            raise ValueError(f"topic {topic.name!r} already has a handler")

        async def route(envelope: OutboxMessage) -> None:
            await handle(topic.parse(envelope.payload), envelope)

        self._routes[topic.name] = route
        return self

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._routes)

    async def __call__(self, envelope: OutboxMessage) -> None:
        route = self._routes.get(envelope.topic)
        if route is None:
            _log.error("outbox.unknown_topic", topic=envelope.topic, message_id=envelope.id)
            raise UnknownTopic(f"no handler for topic {envelope.topic!r}")
        await route(envelope)
