"""3 and 4. Detection and response, then the victims: the operator's kill switches,
a thief at the register while the owner resets, reports, the victim query and
compensation.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from mamoru.identity.v1 import identity_pb2 as idp
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2

from tests.e2e.drill.base import DrillBase
from tests.e2e.drill.cast import (
    FOREIGN_PREFIXES,
    FREEZE_LINK,
    OPERATOR_ALERT_SUBJECTS,
    OPERATOR_INBOX,
    OPERATOR_METADATA,
    OWNERS_OWN_RESET_PASSWORD,
    PROVIDER,
    REVOCATION_DEADLINE_SECONDS,
    TOBACCO_CARTON,
    describe,
    reason_of,
    refusal,
    until,
    why,
)
from tests.e2e.drill.report import Phase, SwitchFlip
from tests.support.people import (
    PASSWORD,
    TIMEOUT,
    client,
    has_reset_link,
    home_address,
    reset_token_in,
    subject_is,
)


class Response(DrillBase):
    """The operator's answer to the wave, and what it does for the victims."""

    async def response(self) -> None:
        async with self.timeline.phase(
            "response", "3. Detection and response: the operator flips the switches"
        ) as phase:
            alerts = await self.risk.ListAlerts(
                risk_pb2.ListAlertsRequest(), metadata=OPERATOR_METADATA, timeout=TIMEOUT
            )
            raised = sorted({alert.rule_id for alert in alerts.alerts})
            phase.counts["alerts_raised"] = len(alerts.alerts)
            phase.notes.append(f"alerts: {', '.join(raised) or 'none'}")
            operator_mail = [
                m
                for m in self.mailbox.to(OPERATOR_INBOX)
                if subject_is(*OPERATOR_ALERT_SUBJECTS)(m)
            ]
            phase.counts["operator_alert_mails"] = len(operator_mail)
            for alert in alerts.alerts:
                await self.risk.UpdateAlert(
                    risk_pb2.UpdateAlertRequest(
                        alert_id=alert.alert_id,
                        status=risk_pb2.ALERT_STATUS_ACKNOWLEDGED,
                        note="on it: blocking the attacking countries and stopping card top-ups",
                    ),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
            self.checked(
                "stuffing_alert_raised_without_a_call",
                "alert.stuffing_wave" in raised and self.alert_seen_at is not None,
                f"alerts raised: {raised or 'none'}"
                + (
                    f", stuffing alert at +{self.alert_seen_at:.1f} s" if self.alert_seen_at else ""
                ),
                "no stuffing alert: the credential-stuffing wave went unnoticed by risk's alert "
                "rules",
            )
            self.checked(
                "operators_told_by_mail",
                bool(operator_mail),
                f"{len(operator_mail)} alert mails to {OPERATOR_INBOX}",
                "the stuffing alert never reached the operators' inbox",
            )
            await self._flip_switches()
            # The attacker comes back after the switches.
            await self._second_wave(phase)
        for flip in self.report.switch_flips:
            self.checked(
                f"switch_effective:{flip.switch}",
                flip.effective_after_seconds is not None,
                f"effective after {flip.effective_after_seconds:.2f} s ({flip.probe})"
                if flip.effective_after_seconds is not None
                else f"not effective within {self.size.switch_deadline_seconds:.0f} s "
                f"({flip.probe})",
                f"kill switch {flip.switch} not applied within seconds",
            )

    async def _flip(
        self,
        switch: str,
        reason: str,
        probe: Callable[[], Awaitable[bool]],
        what: str,
        **change: Any,
    ) -> None:
        await self._set_policy(reason, **change)
        latency = await until(probe, self.size.switch_deadline_seconds)
        self.report.switch_flips.append(
            SwitchFlip(switch, reason, None if latency is None else round(latency, 3), what)
        )

    async def _flip_switches(self) -> None:
        attacker = self.attacker
        victims = {found.pair.email for found in attacker.discovered}
        canary = next(
            m
            for m in self.members
            if m.kind == "totp" and m.payer is not None and m.person.email not in victims
        )
        # Blocking a country: a right password from there must not reach a second factor.
        blocked_ip = f"{FOREIGN_PREFIXES['CN']}.251.{self.rng.randrange(2, 250)}"

        async def sign_in_from_china_refused() -> bool:
            error = await refusal(
                self.identity.Login(
                    idp.LoginRequest(
                        identifier=canary.person.email,
                        password=canary.person.password,
                        client=client(f"probe-{secrets.token_hex(4)}", blocked_ip),
                    ),
                    timeout=TIMEOUT,
                )
            )
            return error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED

        for country in FOREIGN_PREFIXES:
            reason = f"credential stuffing from {country} (alert.stuffing_wave)"
            if country == "CN":
                await self._flip(
                    f"country:{country}", reason, sign_in_from_china_refused,
                    "right password from a CN address refused before a second factor",
                    country=risk_pb2.CountryChange(country_code=country, blocked=True),
                )  # fmt: skip
            else:
                await self._set_policy(
                    reason, country=risk_pb2.CountryChange(country_code=country, blocked=True)
                )
        # Card top-ups: probe over the per-top-up cap, so no money moves while waiting.
        assert canary.payer is not None
        payer = await self.people.payer(canary.person, self.wallet)
        canary.wallet_tokens.append(payer.token)

        async def card_top_up_suspended() -> bool:
            error = await refusal(payer.top_up_from_card(canary.card_id, 10_000_000))
            return error is not None and reason_of(error) == "CHANNEL_SUSPENDED"

        await self._flip(
            "top_up_channel:card", "card top-ups from stolen sessions", card_top_up_suspended,
            "card top-up refused with CHANNEL_SUSPENDED",
            top_up_channel=risk_pb2.TopUpChannelChange(
                channel=risk_pb2.TOP_UP_CHANNEL_CARD, suspended=True),
        )  # fmt: skip

        async def sign_up_suspended() -> bool:
            email = f"probe-{secrets.token_hex(4)}@example.jp"
            error = await refusal(
                self.identity.Register(
                    idp.RegisterRequest(
                        email=email, password=PASSWORD, client=client("probe", home_address())
                    ),
                    timeout=TIMEOUT,
                )
            )
            return error is not None and reason_of(error) in (
                "REGISTRATION_SUSPENDED",
                "REGISTRATION_REFUSED",
            )

        await self._flip(
            "registration_suspended", "no sign-ups while the wave lasts", sign_up_suspended,
            "Register refused", registration_suspended=True,
        )  # fmt: skip

        async def external_login_suspended() -> bool:
            error = await refusal(
                self.identity.BeginExternalLogin(
                    idp.BeginExternalLoginRequest(provider=PROVIDER, client=client()),
                    timeout=TIMEOUT,
                )
            )
            return error is not None and reason_of(error) == "PROVIDER_SUSPENDED"

        await self._flip(
            f"external_login:{PROVIDER}", "external IDs linked by attackers",
            external_login_suspended, "BeginExternalLogin refused with PROVIDER_SUSPENDED",
            external_login=risk_pb2.ExternalLoginChange(provider=PROVIDER, suspended=True),
        )  # fmt: skip

    async def _second_wave(self, phase: Phase) -> None:
        """After the switches: the right pairs again from the blocked countries, external IDs,
        and sign-ups from everywhere."""
        attacker = self.attacker
        outcomes: Counter[str] = Counter()
        for pair in (found.pair for found in attacker.discovered):
            for country in FOREIGN_PREFIXES:
                ip = f"{FOREIGN_PREFIXES[country]}.252.{self.rng.randrange(2, 250)}"
                try:
                    reply = await self.identity.Login(
                        idp.LoginRequest(
                            identifier=pair.email,
                            password=pair.password,
                            client=client(attacker.device(), ip),
                        ),
                        timeout=TIMEOUT,
                    )
                except grpc.aio.AioRpcError as refused:
                    outcomes[f"refused ({describe(refused)})"] += 1
                    continue
                outcomes[
                    "reached a second factor" if reply.HasField("challenge") else "session"
                ] += 1
        for ip in attacker.ips[:4]:
            mule = await refusal(
                self.identity.Register(
                    idp.RegisterRequest(
                        email=attacker.address("mule"),
                        password=PASSWORD,
                        client=client(attacker.device(), ip),
                    ),
                    timeout=TIMEOUT,
                )
            )
            outcomes[f"mule sign-up: {describe(mule)}"] += 1
        phase.counts["second_wave_attempts"] = sum(outcomes.values())
        for what, count in sorted(outcomes.items()):
            phase.notes.append(f"attacker, after the switches: {what}: {count}")
        through = outcomes["reached a second factor"] + outcomes["session"]
        self.checked(
            "blocked_countries_refused",
            through == 0,
            f"{through} right passwords from blocked countries reached a second factor or more",
            "the country block is not applied to sign-ins",
        )
        mules = sum(n for what, n in outcomes.items() if what.startswith("mule sign-up: accepted"))
        self.checked(
            "sign_ups_suspended",
            mules == 0,
            f"{mules} sign-ups accepted while suspended",
            "the sign-up kill switch is not applied",
        )

    async def victims(self) -> None:
        attacker = self.attacker
        size = self.size
        async with self.timeline.phase(
            "victims", "4. Victims: reports, the victim query, compensation"
        ) as phase:
            await self._reset_while_a_thief_holds_a_code(phase)
            # Victims whose inbox was open stop the attacker's address change by its link.
            frozen = 0
            for email in sorted({email for email, _ in self.facts.get("attacker_contacts", [])}):
                for message in self.mailbox.to(email):
                    match = FREEZE_LINK.search(message.text())
                    if match is None:
                        continue
                    error = await refusal(
                        self.identity.FreezeContactChange(
                            idp.FreezeContactChangeRequest(freeze_token=match.group(1)),
                            timeout=TIMEOUT,
                        )
                    )
                    frozen += error is None
            phase.counts["address_changes_stopped_by_their_freeze_link"] = frozen
            victims = [f.pair.member for f in attacker.discovered if f.pair.member is not None]
            candidates = sorted(
                (m for m in victims if m.has_wallet),
                key=lambda m: (m.kind != "passkey", m.person.account_id in attacker.reached),
            )
            reports: list[wallet_pb2.ReportUnauthorizedResponse] = []
            for member in candidates[: size.reporters]:
                member.person.session = None  # a fresh sign-in, as after reading the notices
                try:
                    payer = await self.people.payer(member.person, self.wallet)
                except grpc.aio.AioRpcError as error:
                    phase.notes.append(
                        f"{member.person.email} could not open the wallet: {why(error)}"
                    )
                    continue
                member.wallet_tokens.append(payer.token)
                reports.append(
                    await payer.report_unauthorized(
                        description="mails about a sign-in I did not make"
                    )
                )
            phase.counts["reports_this_was_not_me"] = len(reports)
            if not reports:
                self.checked(
                    "victims_found_exactly", False, "nobody could report",
                    "victims could not report: the wallet refused its own holders",
                )  # fmt: skip
                return
            window_start = Timestamp(seconds=int(self.attack_started_wall))
            indicators = risk_pb2.Indicators(
                ip_addresses=[*attacker.ips, *attacker.noisy],
                device_ids=sorted(attacker.devices),
                window_start=window_start,
            )
            main_case = reports[0].case_id
            await self.risk.ConfirmFraud(
                risk_pb2.ConfirmFraudRequest(
                    case_id=main_case,
                    indicators=indicators,
                    reason="credential stuffing wave from the alerted IPs and devices",
                ),
                metadata=OPERATOR_METADATA,
                timeout=TIMEOUT,
            )
            self.operator_actions.append(
                ("case confirmed", "credential stuffing wave from the alerted IPs and devices")
            )
            for report in reports[1:]:
                await self.risk.UpdateCase(
                    risk_pb2.UpdateCaseRequest(
                        case_id=report.case_id,
                        status=risk_pb2.CASE_STATUS_CLOSED,
                        note=f"same wave as case {main_case}",
                    ),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
            expected_total = attacker.yen_moved
            found: risk_pb2.FindAffectedAccountsResponse | None = None

            async def settled() -> bool:
                nonlocal found
                found = await self.risk.FindAffectedAccounts(
                    risk_pb2.FindAffectedAccountsRequest(case_id=main_case),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
                accounts = {a.account_id for a in found.accounts}
                return accounts >= attacker.reached and found.total.amount_minor >= expected_total

            # Outcomes reach risk through the services' outboxes; give them a moment.
            await until(settled, TIMEOUT, every=0.5)
            assert found is not None
            again = await self.risk.FindAffectedAccounts(
                risk_pb2.FindAffectedAccountsRequest(case_id=main_case),
                metadata=OPERATOR_METADATA,
                timeout=TIMEOUT,
            )
            accounts = {a.account_id for a in found.accounts}
            phase.counts.update(
                accounts_the_attacker_reached=len(attacker.reached),
                victims_found=len(accounts),
                yen_lost_per_victim_query=found.total.amount_minor,
            )
            self.checked(
                "victims_found_exactly",
                accounts == attacker.reached
                and found.total.amount_minor == expected_total
                and again == found,
                f"query: {len(accounts)} accounts, {found.total.amount_minor} yen; attacker "
                f"reached {len(attacker.reached)} accounts and moved {expected_total} yen; "
                f"missed {len(attacker.reached - accounts)}, "
                f"extra {len(accounts - attacker.reached)}, same answer twice: {again == found}",
                "the victim query is not exact: victims and amounts are an estimate again",
            )
            request = wallet_pb2.CompensateCaseRequest(
                case_id=main_case, reason="credential stuffing wave, confirmed"
            )
            first = await self.wallet_operator.CompensateCase(
                request, metadata=OPERATOR_METADATA, timeout=TIMEOUT
            )
            second = await self.wallet_operator.CompensateCase(
                request, metadata=OPERATOR_METADATA, timeout=TIMEOUT
            )
            self.operator_actions.append(("compensation", request.reason))
            for line in first.lines:
                owner = next((m for m in self.members if m.wallet_id == line.wallet_id), None)
                if owner is not None:
                    # A stolen top-up goes back to the card (and leaves the wallet); a
                    # stolen payment is credited back to the wallet.
                    sign = 1 if line.method == "wallet_credit" else -1
                    owner.balance += sign * line.amount.amount_minor
            phase.counts.update(
                compensation_paid_yen=first.total.amount_minor,
                compensation_lines=len(first.lines),
                paid_again_on_rerun=second.newly_paid,
            )
            self.checked(
                "compensation_settles_and_reruns_change_nothing",
                first.total.amount_minor == expected_total
                and second.newly_paid == 0
                and list(second.lines) == list(first.lines),
                f"paid {first.total.amount_minor} yen for {expected_total} taken; "
                f"re-run paid {second.newly_paid} more lines",
                "CompensateCase is not exact or not idempotent: a re-run moved money again",
            )
            # The reporters' wallets were frozen by their report; the case is settled.
            for report in reports:
                await self.wallet_operator.UnfreezeWallet(
                    wallet_pb2.UnfreezeWalletRequest(
                        wallet_id=report.wallet.wallet_id, reason=f"case {main_case} settled"
                    ),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
                self.operator_actions.append(("wallet unfrozen", f"case {main_case} settled"))

    async def _reset_while_a_thief_holds_a_code(self, phase: Phase) -> None:
        """A phone is taken with the wallet open: the thief has a fresh payment code on
        its screen and walks to a register, while the owner resets the password from
        a laptop with the link from the inbox. The reset must reach the code: once the
        wallet refuses the phone's token, the register is refused too."""
        name = "payment_code_dies_with_the_owners_reset"
        control = (
            "a payment code outlived the owner's password reset: money moved after the "
            "owner took the account back"
        )
        victims = {f.pair.email for f in self.attacker.discovered}
        owner = next(
            (
                m
                for m in self.members
                if m.kind == "passkey"
                and m.balance >= TOBACCO_CARTON
                and m.person.email not in victims
            ),
            None,
        )
        if owner is None:
            self.checked(name, False, "no passkey holder with money to steal", control)
            return
        person = owner.person
        person.session = None
        phone = await self.people.payer(person, self.wallet)
        owner.wallet_tokens.append(phone.token)
        code = await phone.payment_code()

        laptop = client("owners-laptop", person.ip)
        before = len(self.mailbox.to(person.email))
        await self.identity.RequestPasswordReset(
            idp.RequestPasswordResetRequest(identifier=person.email, client=laptop),
            timeout=TIMEOUT,
        )
        link = await self._next_mail(person.email, before, has_reset_link)
        await self.identity.CompletePasswordReset(
            idp.CompletePasswordResetRequest(
                reset_token=reset_token_in(link.text()),
                new_password=OWNERS_OWN_RESET_PASSWORD,
                client=laptop,
            ),
            timeout=TIMEOUT,
        )
        person.password = OWNERS_OWN_RESET_PASSWORD

        async def phone_refused() -> bool:
            error = await refusal(phone.balance())
            return error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED

        learned = await until(phone_refused, REVOCATION_DEADLINE_SECONDS, every=0.05)
        at_register = await refusal(
            self.registers[-1].capture(code, TOBACCO_CARTON, [risk_pb2.GOODS_CATEGORY_TOBACCO])
        )
        if at_register is None:
            # Money left the wallet, though not through the stuffing wave's IPs and
            # devices: it stays out of the victim query's count.
            owner.balance -= TOBACCO_CARTON
        # The owner opens the wallet again (the passkey passes the cool-off): all there.
        person.session = None
        again = await self.people.payer(person, self.wallet)
        owner.wallet_tokens.append(again.token)
        if person.session is not None:
            owner.sessions.append(person.session)
        balance = (await again.balance()).wallet.balance.amount_minor
        phase.counts["payment_codes_captured_after_the_owners_reset"] = int(at_register is None)
        phase.notes.append(
            "owner's reset reached the wallet after "
            + (
                f"{learned:.2f} s"
                if learned is not None
                else f"more than {REVOCATION_DEADLINE_SECONDS:.0f} s"
            )
            + f"; the thief's capture: {describe(at_register)}"
        )
        self.checked(
            name,
            learned is not None
            and at_register is not None
            and reason_of(at_register) == "CODE_INVALID"
            and balance == owner.balance,
            "wallet refused the phone's token after "
            + (
                f"{learned:.2f} s"
                if learned is not None
                else f"never ({REVOCATION_DEADLINE_SECONDS:.0f} s)"
            )
            + f"; capture at the register: {describe(at_register)}; balance {balance} yen, "
            f"{owner.balance} expected",
            control,
        )
