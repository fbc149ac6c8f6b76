"""What every service follows from its peers: identity's signing keys and
revoked sessions, and risk's policy (kill switches, country policy).

Each follower is a background job that keeps a stream open, reconnects with
backoff when the peer goes away, and keeps the last known state meanwhile: a
service never stops enforcing a policy because risk restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import structlog
from mamoru.identity.v1 import identity_pb2, identity_pb2_grpc
from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc

from services.runtime.server import Background
from services.runtime.tokens import JwksCache, RevocationList, TokenVerifier

log = structlog.get_logger("mamoru.peers")

TOKEN_ISSUER = "mamoru-identity"  # noqa: S105 - an issuer name, not a secret


def identity_jwks(channel: grpc.aio.Channel) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A JWKS fetcher backed by identity's GetJwks."""
    stub = identity_pb2_grpc.IdentityServiceStub(channel)

    async def fetch() -> dict[str, Any]:
        # wait_for_ready: a service that starts before identity waits for it
        # instead of failing at once and holding the refetch limit.
        reply = await stub.GetJwks(identity_pb2.GetJwksRequest(), timeout=5, wait_for_ready=True)
        document: dict[str, Any] = json.loads(reply.jwks_json)
        return document

    return fetch


def identity_token_verifier(channel: grpc.aio.Channel) -> tuple[TokenVerifier, RevocationList]:
    """A verifier of identity's tokens, checked locally, with a revocation list to feed."""
    revocations = RevocationList()
    verifier = TokenVerifier(
        JwksCache(identity_jwks(channel)), issuer=TOKEN_ISSUER, revocations=revocations
    )
    return verifier, revocations


async def _with_reconnect(
    what: str, stop: asyncio.Event, follow: Callable[[], Awaitable[None]]
) -> None:
    """Run ``follow`` until ``stop``; on any failure wait (with jittered backoff) and retry."""
    delay = 0.2
    while not stop.is_set():
        try:
            await follow()
            delay = 0.2
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning(f"{what}.disconnected", error=str(error), retry_in=round(delay, 2))
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay * random.uniform(0.8, 1.2))  # noqa: S311
        delay = min(delay * 2, 5.0)


async def _until_stopped(
    stream: Any, stop: asyncio.Event, handle: Callable[[Any], Awaitable[None]]
) -> None:
    """Consume ``stream`` until it ends or ``stop`` is set (then cancel it)."""
    stopper = asyncio.create_task(stop.wait())
    try:
        iterator = stream.__aiter__()
        while True:
            nxt = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                nxt.cancel()
                stream.cancel()
                return
            try:
                item = nxt.result()
            except StopAsyncIteration:
                return
            await handle(item)
    finally:
        stopper.cancel()


def follow_revocations(
    channel: grpc.aio.Channel,
    revocations: RevocationList,
    *,
    on_revoked: Callable[[str], None] | None = None,
) -> Background:
    """Background job: apply identity's WatchRevocations to ``revocations``.

    ``on_revoked`` hears of every revoked session too (once the list refuses its
    tokens), for a service that must also end what the session made; it must not
    block. A restarted follower starts from the beginning, so it hears again of
    every revocation whose tokens could still be alive.
    """
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    last_sequence = 0

    async def apply(item: identity_pb2.WatchRevocationsResponse) -> None:
        nonlocal last_sequence
        until = item.expires_at.ToDatetime(tzinfo=UTC)
        if until > datetime.now(UTC):
            revocations.revoke(item.session_id, until)
            if on_revoked is not None:
                on_revoked(item.session_id)
        last_sequence = max(last_sequence, item.sequence)

    async def run(stop: asyncio.Event) -> None:
        async def follow() -> None:
            stream = stub.WatchRevocations(
                identity_pb2.WatchRevocationsRequest(after_sequence=last_sequence)
            )
            await _until_stopped(stream, stop, apply)

        await _with_reconnect("revocations", stop, follow)

    return run


class PolicyView:
    """The last policy received from risk; ``None`` until the first one arrives."""

    def __init__(self) -> None:
        self.policy: risk_pb2.Policy | None = None
        self.received_at: datetime | None = None
        self._changed = asyncio.Condition()

    async def apply(self, policy: risk_pb2.Policy) -> None:
        async with self._changed:
            if self.policy is None or policy.version >= self.policy.version:
                self.policy = policy
                self.received_at = datetime.now(UTC)
            self._changed.notify_all()

    async def wait_for_version(self, version: int, timeout: float) -> risk_pb2.Policy:  # noqa: ASYNC109 - a condition wait bounded by the caller
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(
                lambda: self.policy is not None and self.policy.version >= version
            )
        assert self.policy is not None
        return self.policy


def follow_policies(channel: grpc.aio.Channel, view: PolicyView, *, subscriber: str) -> Background:
    """Background job: keep ``view`` equal to risk's policy via WatchPolicies."""
    stub = risk_pb2_grpc.RiskServiceStub(channel)

    async def apply(item: risk_pb2.WatchPoliciesResponse) -> None:
        await view.apply(item.policy)

    async def run(stop: asyncio.Event) -> None:
        async def follow() -> None:
            stream = stub.WatchPolicies(risk_pb2.WatchPoliciesRequest(subscriber=subscriber))
            await _until_stopped(stream, stop, apply)

        await _with_reconnect("policies", stop, follow)

    return run
