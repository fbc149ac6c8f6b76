"""What every service follows from its peers: identity's signing keys and
revoked sessions, and risk's policy (kill switches, country policy).

Each follower is a background job that keeps a stream open, resubscribes within
about a second of the peer's return, and keeps the last known state meanwhile: a
service never stops enforcing a policy because risk restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import structlog
from mamoru.identity.v1 import identity_pb2, identity_pb2_grpc
from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc

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


# Seconds a subscription may take before the follower says it is waiting for its peer.
WAITING_NOTICE_SECONDS = 2.0
# Pause between attempts when the peer answers but refuses or ends the stream; an
# unreachable peer needs none, as the call itself waits for the channel.
_RETRY_FIRST_SECONDS = 0.1
_RETRY_MAX_SECONDS = 1.0


class Follower:
    """A background job that keeps one stream of a peer open and applies what it sends.

    The stream is opened with ``wait_for_ready``: while the peer is away the call
    waits on the channel, whose reconnect backoff is capped (``tls.RECONNECT_OPTIONS``),
    so the follower is subscribed again within about a second of the peer's return
    instead of after gRPC's default backoff of up to two minutes. The peer sends
    the stream's headers at once, which is when the follower counts itself
    subscribed (``subscribed``, ``subscribed_at`` on the monotonic clock).

    An outage is logged once, as one line without a traceback (``<what>.waiting``
    or ``<what>.disconnected``), and its end once (``<what>.reconnected``).
    """

    def __init__(
        self,
        what: str,
        peer: str,
        subscribe: Callable[[], Any],
        handle: Callable[[Any], Awaitable[None]],
    ) -> None:
        self.what = what
        self.peer = peer
        self.subscribed = False
        self.subscribed_at: float | None = None
        self._subscribe = subscribe
        self._handle = handle
        self._down_since: float | None = time.monotonic()
        self._outage_logged = False

    async def __call__(self, stop: asyncio.Event) -> None:
        delay = _RETRY_FIRST_SECONDS
        while not stop.is_set():
            subscribed_before = self.subscribed_at
            try:
                await self._follow(stop)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._lost(_reason(error))
            else:
                if not stop.is_set():
                    self._lost("the stream ended")
            if stop.is_set():
                return
            if self.subscribed_at != subscribed_before:
                delay = _RETRY_FIRST_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay * random.uniform(0.8, 1.2))  # noqa: S311
            delay = min(delay * 2, _RETRY_MAX_SECONDS)

    async def _follow(self, stop: asyncio.Event) -> None:
        stream = self._subscribe()
        headers = asyncio.ensure_future(stream.initial_metadata())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {headers, stopper},
                timeout=WAITING_NOTICE_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:
                self._waiting()
                done, _ = await asyncio.wait(
                    {headers, stopper}, return_when=asyncio.FIRST_COMPLETED
                )
            if stopper in done:
                stream.cancel()
                return
            headers.result()
        finally:
            headers.cancel()
            stopper.cancel()
        # A call that failed also "receives" (empty) headers; it is not a subscription.
        if not stream.done():
            self._connected()
        await _until_stopped(stream, stop, self._handle)

    def _waiting(self) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            log.warning(f"{self.what}.waiting", peer=self.peer)

    def _connected(self) -> None:
        self.subscribed = True
        self.subscribed_at = time.monotonic()
        if self._outage_logged and self._down_since is not None:
            down = round(self.subscribed_at - self._down_since, 2)
            log.info(f"{self.what}.reconnected", peer=self.peer, down_seconds=down)
        self._down_since = None
        self._outage_logged = False

    def _lost(self, reason: str) -> None:
        self.subscribed = False
        if self._down_since is None:
            self._down_since = time.monotonic()
        if self._outage_logged:
            log.debug(f"{self.what}.still_disconnected", peer=self.peer, reason=reason)
            return
        self._outage_logged = True
        log.warning(f"{self.what}.disconnected", peer=self.peer, reason=reason)


def _reason(error: BaseException) -> str:
    """One short line: a status code and its first line of details, never a traceback."""
    if isinstance(error, grpc.aio.AioRpcError):
        details = (error.details() or "").splitlines()
        text = f"{error.code().name}: {details[0]}" if details else error.code().name
    else:
        lines = str(error).splitlines()
        text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text[:200]


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
) -> Follower:
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

    def subscribe() -> Any:
        return stub.WatchRevocations(
            identity_pb2.WatchRevocationsRequest(after_sequence=last_sequence),
            wait_for_ready=True,
        )

    return Follower("revocations", "identity", subscribe, apply)


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


def follow_policies(channel: grpc.aio.Channel, view: PolicyView, *, subscriber: str) -> Follower:
    """Background job: keep ``view`` equal to risk's policy via WatchPolicies."""
    stub = risk_pb2_grpc.RiskServiceStub(channel)

    async def apply(item: risk_pb2.WatchPoliciesResponse) -> None:
        await view.apply(item.policy)

    def subscribe() -> Any:
        return stub.WatchPolicies(
            risk_pb2.WatchPoliciesRequest(subscriber=subscriber), wait_for_ready=True
        )

    return Follower("policies", "risk", subscribe, apply)
