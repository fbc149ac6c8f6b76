"""5 and 6. Forced reset of every password, the wind-down, and the audit of what
the operator did.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import grpc
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2 as idp
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2

from services.devstack.smtp import ReceivedMessage
from services.runtime.access import bearer_metadata
from tests.e2e.drill.base import DrillBase
from tests.e2e.drill.cast import (
    ATTACKER_DOMAIN,
    FORCED_RESET_SUBJECTS,
    NEW_PASSWORD,
    OPERATOR_ACTOR,
    OPERATOR_METADATA,
    WIND_DOWN_SUBJECTS,
    Member,
    describe,
    each,
    now_timestamp,
    refusal,
    to_domain,
    until,
    why,
)
from tests.e2e.drill.report import Phase
from tests.support.people import TIMEOUT, client, has_reset_link, reset_token_in, subject_is


class Recovery(DrillBase):
    """The system is closed cleanly and every action is accounted for."""

    async def forced_reset(self) -> None:
        attacker = self.attacker
        async with self.timeline.phase(
            "forced_reset", "5. Forced reset of every password"
        ) as phase:
            reason = "credential stuffing wave: every password is reset"
            total = processed = 0
            async for progress in self.identity_operator.ForceCredentialReset(
                idp.ForceCredentialResetRequest(all_accounts=True, reason=reason),
                metadata=OPERATOR_METADATA,
                timeout=120,
            ):
                total, processed = progress.total, progress.processed
            self.operator_actions.append(("forced reset", reason))
            addresses = {m.person.email for m in self.members}

            def forced(message: ReceivedMessage) -> bool:
                return subject_is(*FORCED_RESET_SUBJECTS)(message)

            async def all_told() -> bool:
                told = Counter(
                    r.lower() for m in self.mailbox.messages if forced(m) for r in m.recipients
                )
                return all(told[a.lower()] >= 1 for a in addresses)

            await until(all_told, 60, every=0.5)
            await asyncio.sleep(1.5)  # any duplicate would be on its way by now
            told = Counter(
                r.lower() for m in self.mailbox.messages if forced(m) for r in m.recipients
            )
            wrong_count = sorted(a for a in addresses if told[a.lower()] != 1)
            elsewhere = sorted(r for r in told if r not in {a.lower() for a in addresses})
            phase.counts.update(
                accounts_reset=processed,
                accounts_in_job=total,
                forced_reset_notices=sum(told.values()),
            )
            self.checked(
                "forced_reset_one_notice_each_at_the_registered_address",
                not wrong_count and not elsewhere and processed >= len(self.members),
                f"{processed} reset; {len(wrong_count)} holders without exactly one notice "
                f"{wrong_count[:3]}; notices elsewhere: {elsewhere[:3]}",
                "the forced reset did not reach every holder once, at the registered address",
            )
            # Every session from before the reset is dead, the attacker's included.
            old_sessions = [s for m in self.members for s in m.sessions] + attacker.sessions
            old_wallet_tokens = [t for m in self.members for t in m.wallet_tokens]
            old_wallet_tokens += attacker.wallet_tokens
            alive: list[str] = []

            async def dead(session: idp.SessionTokens) -> None:
                listing = await refusal(
                    self.identity.ListSessions(
                        idp.ListSessionsRequest(),
                        metadata=bearer_metadata(session.access_token),
                        timeout=TIMEOUT,
                    )
                )
                refresh = await refusal(
                    self.identity.RefreshSession(
                        idp.RefreshSessionRequest(refresh_token=session.refresh_token),
                        timeout=TIMEOUT,
                    )
                )
                if listing is None or refresh is None:
                    alive.append(f"session {session.session_id}")

            async def dead_token(token: str) -> None:
                async def refused() -> bool:
                    error = await refusal(
                        self.wallet.GetBalance(
                            wallet_pb2.GetBalanceRequest(),
                            metadata=bearer_metadata(token),
                            timeout=TIMEOUT,
                        )
                    )
                    return error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED

                # The wallet learns of revocations from identity's stream.
                if await until(refused, 60, every=0.2) is None:
                    alive.append("wallet token")

            await each(old_sessions, dead, 8)
            await each(old_wallet_tokens, dead_token, 8)
            phase.counts.update(
                old_sessions_checked=len(old_sessions),
                old_wallet_tokens_checked=len(old_wallet_tokens),
                still_alive=len(alive),
            )
            self.checked(
                "every_old_session_is_dead",
                not alive,
                f"{len(alive)} of {len(old_sessions) + len(old_wallet_tokens)} still accepted: "
                f"{alive[:3]}",
                "sessions survived the forced reset: a stolen session outlives the password",
            )
            # The old password no longer signs anyone in.
            sample = self.members[0].person
            error = await refusal(self.people.login(sample))
            phase.notes.append(f"old password after the reset: {describe(error)}")

    async def wind_down(self) -> None:
        async with self.timeline.phase(
            "wind_down", "6. Wind-down: balances paid out or listed"
        ) as phase:
            reason = "service end: balances are paid out"
            await self._set_policy(reason, wind_down=True)
            before: wallet_pb2.ListUnclaimedBalancesResponse | None = None

            async def notified() -> bool:
                nonlocal before
                error = await refusal(
                    self.wallet_operator.NotifyBalanceHolders(
                        wallet_pb2.NotifyBalanceHoldersRequest(
                            claim_deadline=now_timestamp(90 * 86_400)
                        ),
                        metadata=OPERATOR_METADATA,
                        timeout=TIMEOUT,
                    )
                )
                return error is None

            wind_down_applied = await until(notified, 60, every=0.2)
            self.operator_actions.append(("balance holders notified", reason))
            before = await self.wallet_operator.ListUnclaimedBalances(
                wallet_pb2.ListUnclaimedBalancesRequest(),
                metadata=OPERATOR_METADATA,
                timeout=TIMEOUT,
            )
            expected = sum(m.balance for m in self.members if m.balance > 0)
            holders = [m for m in self.members if m.balance > 0]

            def told(member: Member) -> bool:
                return any(
                    subject_is(*WIND_DOWN_SUBJECTS)(m) for m in self.mailbox.to(member.person.email)
                )

            async def every_holder_told() -> bool:
                return all(told(member) for member in holders)

            await until(every_holder_told, 30, every=0.5)
            untold = [m.person.email for m in holders if not told(m)]
            self.checked(
                "every_holder_told_of_wind_down",
                not untold,
                f"{len(holders) - len(untold)} of {len(holders)} holders got the wind-down notice "
                f"at their registered address; not told: {untold[:3]}",
                "balance holders were not told how to claim their money at wind-down",
            )
            # Passkey holders can still open their wallet after the forced reset: they
            # choose a new password from the notice, sign in with the passkey, claim.
            claimed = 0
            claims: list[str] = []
            for member in holders:
                if member.kind != "passkey":
                    continue
                try:
                    await self._complete_forced_reset(member)
                    person = member.person
                    await self.people.sign_in_with_passkey(person)
                    payer = await self.people.payer(person, self.wallet)
                    await self.wallet.RegisterPayoutAccount(
                        wallet_pb2.RegisterPayoutAccountRequest(
                            bank_code="0001", branch_code="100", account_number="1234567",
                            holder_name="ヤマダ タロウ",
                        ),
                        metadata=payer.metadata,
                        timeout=TIMEOUT,
                    )  # fmt: skip
                    payout = await self.wallet.ClaimPayout(
                        wallet_pb2.ClaimPayoutRequest(idempotency_key=str(uuid.uuid4())),
                        metadata=payer.metadata,
                        timeout=TIMEOUT,
                    )
                except (grpc.aio.AioRpcError, TimeoutError, AssertionError) as error:
                    claims.append(f"{member.person.email}: {why(error)}")
                    continue
                claimed += payout.amount.amount_minor
                member.balance -= payout.amount.amount_minor
            after = await self.wallet_operator.ListUnclaimedBalances(
                wallet_pb2.ListUnclaimedBalancesRequest(),
                metadata=OPERATOR_METADATA,
                timeout=TIMEOUT,
            )
            reconciled = await self.wallet_operator.Reconcile(
                wallet_pb2.ReconcileRequest(), metadata=OPERATOR_METADATA, timeout=TIMEOUT
            )
            phase.counts.update(
                balance_holders=len(holders),
                yen_held=before.total.amount_minor,
                payouts=sum(1 for m in holders if m.kind == "passkey") - len(claims),
                yen_paid_out=claimed,
                unclaimed_wallets=after.wallet_count,
                yen_unclaimed=after.total.amount_minor,
                ledger_accounts_checked=reconciled.accounts_checked,
            )
            if claims:
                phase.notes.append(f"claims refused: {claims[:3]}")
            phase.notes.append(
                "holders in the cool-off after their reset (no passkey) are listed as unclaimed"
            )
            self.checked(
                "every_balance_paid_out_or_listed",
                wind_down_applied is not None
                and before.total.amount_minor == expected
                and claimed + after.total.amount_minor == before.total.amount_minor
                and after.total.amount_minor == sum(m.balance for m in holders),
                f"held {before.total.amount_minor} yen (the drill counted {expected}); paid out "
                f"{claimed}, unclaimed {after.total.amount_minor} in {after.wallet_count} wallets",
                "wind-down lost track of money: balances are neither paid out nor listed",
            )
            self.checked(
                "ledger_balances",
                reconciled.balanced
                and reconciled.ledger_sum_minor == 0
                and not reconciled.differences
                and not reconciled.unbalanced_entries,
                f"balanced={reconciled.balanced}, sum={reconciled.ledger_sum_minor}, "
                f"{len(reconciled.differences)} differences, "
                f"{len(reconciled.unbalanced_entries)} unbalanced entries",
                "the ledger does not balance: double entry broke",
            )

    async def _complete_forced_reset(self, member: Member) -> None:
        person = member.person
        notices = [
            m for m in self.mailbox.to(person.email) if subject_is(*FORCED_RESET_SUBJECTS)(m)
        ]
        assert notices, f"no forced-reset notice reached {person.email}"
        mail = notices[-1]
        await self.identity.CompletePasswordReset(
            idp.CompletePasswordResetRequest(
                reset_token=reset_token_in(mail.text()),
                new_password=NEW_PASSWORD,
                client=client(person.device, person.ip),
            ),
            timeout=TIMEOUT,
        )
        person.password = NEW_PASSWORD

    async def audit(self) -> None:
        async with self.timeline.phase(
            "audit", "Audit: who did what, and where mail went"
        ) as phase:
            changes: list[risk_pb2.PolicyChange] = []
            token = ""
            while True:
                reply = await self.risk.ListPolicyChanges(
                    risk_pb2.ListPolicyChangesRequest(
                        page=common_pb2.PageRequest(page_size=500, page_token=token)
                    ),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
                changes.extend(reply.changes)
                token = reply.next_page_token
                if not token:
                    break
            recorded = Counter((c.actor, c.reason) for c in changes)
            wanted = Counter(
                (OPERATOR_ACTOR, reason)
                for what, reason in self.operator_actions
                if what.startswith(("policy ", "rule "))
            )
            missing = sorted(
                reason for (actor, reason), n in wanted.items() if recorded[actor, reason] < n
            )
            case_notes_ok = await self._case_notes_name_the_operator()
            security_log_ok = await self._forced_reset_in_security_log()
            phase.counts.update(
                operator_actions=len(self.operator_actions),
                policy_and_rule_changes_recorded=len(changes),
            )
            self.checked(
                "operator_actions_audited",
                not missing and case_notes_ok and security_log_ok,
                f"{sum(wanted.values())} switch and rule changes, {len(missing)} missing "
                f"{missing[:3]}; case notes name the operator: {case_notes_ok}; forced reset in "
                f"each account's security log with who and why: {security_log_ok}",
                "operator actions are missing from the audit log (who and why)",
            )
            self._mail_checks(phase)

    async def _case_notes_name_the_operator(self) -> bool:
        cases = await self.risk.ListCases(
            risk_pb2.ListCasesRequest(), metadata=OPERATOR_METADATA, timeout=TIMEOUT
        )
        confirmed = [
            c for c in cases.cases if c.status in (
                risk_pb2.CASE_STATUS_CONFIRMED_FRAUD, risk_pb2.CASE_STATUS_CLOSED)
        ]  # fmt: skip
        return bool(confirmed) and any(
            note.startswith(OPERATOR_ACTOR) for case in confirmed for note in case.notes
        )

    async def _forced_reset_in_security_log(self) -> bool:
        for member in self.members[:3]:
            log = await self.identity_operator.GetSecurityLog(
                idp.GetSecurityLogRequest(account_id=member.person.account_id),
                metadata=OPERATOR_METADATA,
                timeout=TIMEOUT,
            )
            if not any(
                event.kind == "password.forced_reset"
                and event.actor.startswith("operator")
                and "reason" in json.loads(event.details_json or "{}")
                for event in log.events
            ):
                return False
        return True

    def _mail_checks(self, phase: Phase) -> None:
        registered = {m.person.email.lower() for m in self.members}
        links = [m for m in self.mailbox.messages if has_reset_link(m)]
        stray = sorted({r for m in links for r in m.recipients if r.lower() not in registered})
        to_attacker = [m for m in self.mailbox.messages if to_domain(m, ATTACKER_DOMAIN)]
        phase.counts.update(
            mails_delivered=len(self.mailbox.messages),
            reset_link_mails=len(links),
            mails_to_attacker_addresses=len(to_attacker),
        )
        kinds = Counter(m.subject for m in to_attacker)
        for subject, count in sorted(kinds.items()):
            phase.notes.append(f"to the attacker's addresses: {subject!r} x{count}")
        self.checked(
            "reset_links_only_to_registered_addresses",
            not stray,
            f"{len(links)} reset-link mails, to addresses outside the registered ones: "
            f"{stray[:3] or 'none'}",
            "a reset link reached an address other than the registered one: the reset path "
            "can be steered",
        )
