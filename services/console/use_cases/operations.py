"""What an operator does through the console: each change needs a reason and is
kept in the console's action log with the operator's name, whatever the outcome."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import structlog
from mamoru.identity.v1 import identity_pb2
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2

from services.console.clients.peers import PeerRefused, Peers
from services.console.domain.records import ResetJob
from services.console.storage import actions as action_store
from services.ops.cli import UsageError, set_policy_request

_log = structlog.get_logger("mamoru.console")
STOPPED_FOLLOWING = "the console stopped following it"
MAX_REASON = 1000
T = TypeVar("T")


class Invalid(ValueError):
    """A form the console refuses before calling anyone; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def reason_of(text: str) -> str:
    reason = text.strip()
    if not reason:
        raise Invalid("reason", "a reason is required")
    if len(reason) > MAX_REASON:
        raise Invalid("reason", f"at most {MAX_REASON} characters")
    return reason


def indicators(
    ips: Sequence[str], subnets: Sequence[str], devices: Sequence[str], since: str
) -> risk_pb2.Indicators:
    try:
        start = datetime.fromisoformat(since.strip())
    except ValueError:
        raise Invalid("since", "an ISO 8601 time, for example 2026-11-28T00:00Z") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    found = risk_pb2.Indicators(
        ip_addresses=list(ips), subnets=list(subnets), device_ids=list(devices)
    )
    found.window_start.FromDatetime(start)
    return found


async def _first(stream: Any) -> identity_pb2.ForceCredentialResetResponse:
    try:
        first: identity_pb2.ForceCredentialResetResponse = await anext(stream)
    except StopAsyncIteration:
        raise PeerRefused("identity", "UNAVAILABLE", "the reset sent no progress") from None
    return first


@dataclass
class Operations:
    pool: asyncpg.Pool
    peers: Peers
    _resets: set[asyncio.Task[None]] = field(default_factory=set)

    async def _audited(
        self,
        operator: str,
        action: str,
        target: str,
        reason: str,
        call: Callable[[], Awaitable[T]],
        outcome: Callable[[T], str] = lambda _: "done",
    ) -> T:
        try:
            result = await call()
        except PeerRefused as refused:
            await action_store.record(
                self.pool,
                operator=operator,
                action=action,
                target=target,
                reason=reason,
                outcome=f"refused: {refused.code}",
            )
            raise
        await action_store.record(
            self.pool,
            operator=operator,
            action=action,
            target=target,
            reason=reason,
            outcome=outcome(result),
        )
        return result

    async def set_policy(
        self, operator: str, switch: str, key: str, value: str, reason_text: str
    ) -> risk_pb2.Policy:
        reason = reason_of(reason_text)
        values = [v for v in (key.strip(), value.strip()) if v]
        try:
            request = set_policy_request(switch, values, reason)
        except UsageError as error:
            raise Invalid("switch", str(error)) from None
        except ValueError:
            raise Invalid("switch", "unknown switch") from None
        target = " ".join([switch, *values])
        return await self._audited(
            operator,
            "policy.set",
            target,
            reason,
            lambda: self.peers.set_policy(request, operator),
        )

    async def update_alert(self, operator: str, alert_id: str, status: str, note: str) -> None:
        statuses = {"acknowledged": risk_pb2.ALERT_STATUS_ACKNOWLEDGED,
                    "resolved": risk_pb2.ALERT_STATUS_RESOLVED}  # fmt: skip
        if status not in statuses:
            raise Invalid("status", "acknowledged or resolved")
        reason = reason_of(note)
        await self._audited(
            operator,
            f"alert.{status}",
            alert_id,
            reason,
            lambda: self.peers.update_alert(alert_id, statuses[status], reason, operator),
        )

    async def victims(
        self,
        operator: str,
        *,
        ips: Sequence[str],
        subnets: Sequence[str],
        devices: Sequence[str],
        since: str,
    ) -> risk_pb2.FindAffectedAccountsResponse:
        """The victim query by indicators: read-only, so not in the action log."""
        if not (ips or subnets or devices):
            raise Invalid("ips", "give at least one IP address, subnet or device")
        return await self.peers.victims(indicators(ips, subnets, devices, since), operator)

    async def confirm_fraud(
        self,
        operator: str,
        case_id: str,
        *,
        ips: Sequence[str],
        subnets: Sequence[str],
        devices: Sequence[str],
        since: str,
        reason_text: str,
    ) -> risk_pb2.Case:
        reason = reason_of(reason_text)
        found = indicators(ips, subnets, devices, since)
        return await self._audited(
            operator,
            "case.confirm_fraud",
            case_id,
            reason,
            lambda: self.peers.confirm_fraud(case_id, found, reason, operator),
        )

    async def compensate(
        self, operator: str, case_id: str, reason_text: str
    ) -> wallet_pb2.CompensateCaseResponse:
        reason = reason_of(reason_text)
        return await self._audited(
            operator,
            "case.compensate",
            case_id,
            reason,
            lambda: self.peers.compensate(case_id, reason, operator),
        )

    async def start_reset(
        self, operator: str, account_ids: Sequence[str], all_accounts: bool, reason_text: str
    ) -> str:
        """Starts a forced credential reset; its progress is followed in the background
        and kept in the console's database. Returns identity's job ID."""
        reason = reason_of(reason_text)
        if all_accounts == bool(account_ids):
            raise Invalid("account_ids", "list accounts, or tick every account (not both)")
        request = identity_pb2.ForceCredentialResetRequest(
            account_ids=list(account_ids), all_accounts=all_accounts, reason=reason
        )
        scope = "every account" if all_accounts else ", ".join(account_ids)
        stream = self.peers.force_reset(request, operator)
        first = await self._audited(
            operator,
            "reset.start",
            scope,
            reason,
            lambda: _first(stream),
            lambda f: f"started {f.job_id}",
        )
        now = datetime.now(UTC)
        job = ResetJob(
            job_id=first.job_id,
            operator=operator,
            reason=reason,
            scope=scope,
            processed=first.processed,
            total=first.total,
            done=first.done,
            failure="",
            started_at=now,
            updated_at=now,
        )
        await action_store.start_reset(self.pool, job)
        self._follow(job.job_id, stream)
        return job.job_id

    async def resume_reset(self, operator: str, job_id: str, reason_text: str) -> None:
        """Continues a reset whose progress the console stopped following (it restarted,
        or identity went away): identity picks the job up where it stopped."""
        reason = reason_of(reason_text)
        request = identity_pb2.ForceCredentialResetRequest(resume_job_id=job_id, reason=reason)
        stream = self.peers.force_reset(request, operator)
        first = await self._audited(
            operator, "reset.resume", job_id, reason, lambda: _first(stream)
        )
        await action_store.update_reset(
            self.pool, job_id, processed=first.processed, total=first.total, done=first.done
        )
        self._follow(job_id, stream)

    def _follow(self, job_id: str, stream: Any) -> None:
        task = asyncio.create_task(self._record_progress(job_id, stream))
        self._resets.add(task)
        task.add_done_callback(self._resets.discard)

    async def _record_progress(self, job_id: str, stream: Any) -> None:
        try:
            async for progress in stream:
                await action_store.update_reset(
                    self.pool,
                    job_id,
                    processed=progress.processed,
                    total=progress.total,
                    done=progress.done,
                )
        except PeerRefused as refused:
            await action_store.fail_reset(self.pool, job_id, f"{refused.code}: {refused.details}")
        except asyncio.CancelledError:
            # The console is stopping; identity keeps the job, which can be resumed.
            await action_store.fail_reset(self.pool, job_id, STOPPED_FOLLOWING)
            raise
        except Exception:
            _log.exception("console.reset_follow_failed", job_id=job_id)

    async def close(self) -> None:
        for task in list(self._resets):
            task.cancel()
        for task in list(self._resets):
            with contextlib.suppress(BaseException):
                await task
