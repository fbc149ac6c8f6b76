"""What every phase of the drill shares: the channels and stubs of each principal,
the people and registers made at launch, and how a check is recorded.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Callable
from typing import Any

import grpc
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2 as idp
from mamoru.identity.v1 import identity_pb2_grpc
from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2_grpc

from services.devstack.smtp import ReceivedMessage
from services.devstack.stack import LocalStack
from services.runtime.access import bearer_metadata
from tests.e2e.drill.cast import OPERATOR_METADATA, PROVIDER, Attacker, Member, Register
from tests.e2e.drill.report import Check, DrillReport, DrillSize, Timeline, control_of
from tests.support.identity_driver import IdentityDriver
from tests.support.oidc import LocalOidcProvider
from tests.support.people import TIMEOUT, client, stack_channel


class DrillBase:
    """The drill's state; each phase is a mixin on it."""

    def __init__(
        self,
        stack: LocalStack,
        provider: LocalOidcProvider,
        size: DrillSize,
        progress: Callable[[str], None],
    ) -> None:
        self.stack = stack
        self.provider = provider
        self.size = size
        self.rng = random.Random(size.seed)
        self.report = DrillReport(size=size)
        self.timeline = Timeline(self.report, progress)
        self.progress = progress
        assert stack.smtp is not None and stack.card_processor is not None
        self.mailbox = stack.smtp
        self.processor = stack.card_processor
        self.run_tag = secrets.token_hex(3)
        self.channels: list[grpc.aio.Channel] = []
        self.identity = identity_pb2_grpc.IdentityServiceStub(self._channel("identity", "gateway"))
        self.identity_channel = self.channels[-1]
        self.identity_operator = identity_pb2_grpc.IdentityServiceStub(
            self._channel("identity", "operator")
        )
        self.wallet = wallet_pb2_grpc.WalletServiceStub(self._channel("wallet", "gateway"))
        self.wallet_operator = wallet_pb2_grpc.WalletServiceStub(
            self._channel("wallet", "operator")
        )
        self.pos = wallet_pb2_grpc.WalletServiceStub(self._channel("wallet", "pos"))
        self.risk = risk_pb2_grpc.RiskServiceStub(self._channel("risk", "operator"))
        self.people = IdentityDriver(self.identity, self.mailbox, operator=self.identity_operator)
        self.members: list[Member] = []
        self.registers: list[Register] = []
        self.attacker = Attacker()
        self.attack_started_wall = 0.0
        self.alert_seen_at: float | None = None
        self.operator_actions: list[tuple[str, str]] = []  # (what, reason)
        self.facts: dict[str, Any] = {}

    def _channel(self, name: str, principal: str) -> grpc.aio.Channel:
        channel = stack_channel(self.stack, name, as_=principal)
        self.channels.append(channel)
        return channel

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    def checked(self, name: str, passed: bool, detail: str, broken: str) -> None:
        """Record a check; ``broken`` says what a failure means, kept only on failure."""
        failure = "" if passed else f"{broken} [{name}]: {detail}"
        self.report.checks.append(Check(name, bool(passed), detail, control_of(name), failure))

    async def _link_external(self, session: idp.SessionTokens, subject: str) -> None:
        begun = await self.identity.BeginExternalLogin(
            idp.BeginExternalLoginRequest(provider=PROVIDER, client=client()), timeout=TIMEOUT
        )
        await self.identity.LinkExternalIdentity(
            idp.LinkExternalIdentityRequest(
                provider=PROVIDER,
                id_token=self.provider.id_token(subject, begun.nonce),
                nonce=begun.nonce,
            ),
            metadata=bearer_metadata(session.access_token),
            timeout=TIMEOUT,
        )

    async def _external_login(self, subject: str, where: common_pb2.ClientContext) -> Any:
        begun = await self.identity.BeginExternalLogin(
            idp.BeginExternalLoginRequest(provider=PROVIDER, client=where), timeout=TIMEOUT
        )
        return await self.identity.ExternalLogin(
            idp.ExternalLoginRequest(
                provider=PROVIDER,
                id_token=self.provider.id_token(subject, begun.nonce),
                nonce=begun.nonce,
                client=where,
            ),
            timeout=TIMEOUT,
        )

    async def _next_mail(
        self, address: str, after: int, wanted: Callable[[ReceivedMessage], bool]
    ) -> ReceivedMessage:
        seen = after
        async with asyncio.timeout(TIMEOUT * 2):
            while True:
                arrived = await self.mailbox.wait_for(seen + 1, within=TIMEOUT * 2, to=address)
                for message in arrived[seen:]:
                    if wanted(message):
                        return message
                seen = len(arrived)

    async def _set_policy(self, reason: str, **change: Any) -> None:
        await self.risk.SetPolicy(
            risk_pb2.SetPolicyRequest(reason=reason, **change),
            metadata=OPERATOR_METADATA,
            timeout=TIMEOUT,
        )
        self.operator_actions.append((f"policy {next(iter(change))}", reason))
