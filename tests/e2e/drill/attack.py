"""2. The leak: a credential-stuffing wave from many IPs and fresh devices, while
every legitimate person signs in and pays.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2 as idp
from mamoru.risk.v1 import risk_pb2

from tests.e2e.drill.cast import (
    ALERT_GRACE_SECONDS,
    DOMESTIC_PREFIXES,
    FOREIGN_PREFIXES,
    OPERATOR_METADATA,
    Found,
    Member,
    Pair,
    describe,
    each,
    why,
)
from tests.e2e.drill.exploit import Exploit
from tests.support.people import TIMEOUT, client


class Attack(Exploit):
    """The wave, what risk made of it, and the checks on it."""

    def _leaked_list(self) -> list[Pair]:
        size = self.size
        reused = self.rng.sample(self.members, min(size.reused_pairs, len(self.members)))
        pairs = [Pair(m.person.email, m.person.password, m) for m in reused]
        unknown = round(size.attack_pairs * size.unknown_share)
        for number in range(unknown):
            pairs.append(
                Pair(f"gone{number:05d}-{self.run_tag}@example.jp", "hunter2hunter2", None)
            )
        while len(pairs) < size.attack_pairs:
            member = self.rng.choice(self.members)
            # Passwords these people used elsewhere, never here.
            wrong = f"{self.rng.choice(['Summer', 'Tokyo', 'Sakura'])}{self.rng.randrange(9999)}!"
            pairs.append(Pair(member.person.email, wrong, member))
        self.rng.shuffle(pairs)
        return pairs

    def _attacker_ips(self) -> None:
        size = self.size
        domestic = round(size.attacker_ips * size.domestic_share)
        countries = list(FOREIGN_PREFIXES.values())
        for number in range(size.attacker_ips + size.noisy_ips):
            if number < domestic:
                prefix = DOMESTIC_PREFIXES[number % len(DOMESTIC_PREFIXES)]
            else:
                prefix = countries[number % len(countries)]
            ip = f"{prefix}.{(number * 7) % 250 + 1}.{self.rng.randrange(2, 250)}"
            (self.attacker.ips if number < size.attacker_ips else self.attacker.noisy).append(ip)

    async def leak(self) -> None:
        size = self.size
        attacker = self.attacker
        self._attacker_ips()
        pairs = self._leaked_list()
        # Most of the list goes through many IPs a few at a time; the noisy proxies
        # take a large share each.
        plan: list[tuple[Pair, str]] = []
        noisy_share = min(len(pairs), size.noisy_ips * size.noisy_attempts)
        for number, pair in enumerate(pairs):
            if number < noisy_share and attacker.noisy:
                ip = attacker.noisy[number % len(attacker.noisy)]
            else:
                ip = attacker.ips[number % len(attacker.ips)]
            plan.append((pair, ip))
        self.rng.shuffle(plan)
        # The pairs another breach already confirmed are checked first, one at a time,
        # before the flood: too few and too slow to be a wave, as a careful attacker
        # does. The rest of the list is the wave, which identity stops hashing for new
        # devices once risk reports it; the drill's later phases need what the quiet
        # check found.
        confirmed = [
            item
            for item in plan
            if item[0].member is not None and item[0].password == item[0].member.person.password
        ]
        flood = [item for item in plan if item not in confirmed]
        async with self.timeline.phase("leak", "2. The leak: the list is replayed") as phase:
            self.attack_started_wall = time.time() - 5
            legit = asyncio.create_task(self._legitimate_use_during_attack())

            async def attempt(item: tuple[Pair, str]) -> None:
                pair, ip = item
                device = attacker.device()
                attacker.counts["sign-in attempts"] += 1
                try:
                    reply = await self.identity.Login(
                        idp.LoginRequest(
                            identifier=pair.email,
                            password=pair.password,
                            client=client(device, ip),
                            device_proof=attacker.proof(device, "Login", pair.email),
                        ),
                        timeout=TIMEOUT,
                    )
                except grpc.aio.AioRpcError as error:
                    attacker.counts[f"refused: {describe(error)}"] += 1
                    return
                if reply.HasField("session"):
                    attacker.counts["group sessions without a second factor"] += 1
                    attacker.sessions.append(reply.session)
                    if pair.member is not None:
                        attacker.reached.add(pair.member.person.account_id)
                    return
                attacker.counts["challenged for a second factor"] += 1
                attacker.discovered.append(
                    Found(pair, reply.challenge.challenge_id, device, ip,
                          tuple(reply.challenge.methods))
                )  # fmt: skip

            await each(confirmed, attempt, 1)
            wave_started = self.timeline.now()
            watcher = asyncio.create_task(self._watch_alerts(wave_started))
            await each(flood, attempt, size.attack_concurrency)
            replay_ips = len(attacker.ips) + len(attacker.noisy)
            replay_seconds = self.timeline.now() - wave_started
            legit_result = await legit
            await self._exploit()
            # Alerts are evaluated every second; a few more after the wave is plenty.
            try:
                alert = await asyncio.wait_for(watcher, timeout=ALERT_GRACE_SECONDS)
            except TimeoutError:
                alert = None
            decisions = await self._risk_verdicts_for_attacker()
            phase.counts.update(
                leaked_pairs=len(pairs),
                attacker_ips_in_replay=replay_ips,
                # Fresh addresses the attacker took for the accounts it broke into.
                attacker_ips_after_the_replay=len(attacker.ips) + len(attacker.noisy) - replay_ips,
                attempts=attacker.counts["sign-in attempts"],
                throttled_or_denied_by_risk=decisions["throttle"] + decisions["deny"],
                challenged_by_risk=decisions["challenge"],
                passwords_found=len(attacker.discovered),
                second_factor_prompts_reached=attacker.counts["challenged for a second factor"],
                group_id_takeovers=len(attacker.reached),
                wallet_takeovers=len(attacker.wallet_tokens),
                yen_moved_by_attacker=attacker.yen_moved,
                legitimate_sign_ins=legit_result["signed_in"],
                legitimate_payments=legit_result["paid"],
            )
            phase.notes.append(f"replay of the list took {replay_seconds:.1f} s")
            for what, count in sorted(attacker.counts.items()):
                phase.notes.append(f"attacker: {what}: {count}")
            if alert is not None:
                phase.notes.append(f"risk raised {alert} by itself, no call needed")
        self.facts["decisions"] = decisions
        self._leak_checks(decisions, legit_result)

    def _leak_checks(self, decisions: Counter[str], legit: dict[str, Any]) -> None:
        attacker = self.attacker
        mailbox = self.facts["mailbox_victims"]
        # An open inbox only helps where identity offers a code to it.
        inbox_useful = any(found.email_code_offered for found in attacker.discovered)
        self.checked(
            "the_attack_was_real",
            bool(attacker.discovered)
            and (not self.size.mailbox_compromised or not inbox_useful or bool(mailbox)),
            f"{len(attacker.discovered)} right passwords found, {len(mailbox)} inboxes open",
            "the drill's attacker found no right password, so the drill proved nothing",
        )
        self.checked(
            "stuffing_throttled_by_risk",
            decisions["throttle"] + decisions["deny"] > 0,
            f"risk verdicts on the attacker's IPs: {dict(decisions)}",
            "risk did not throttle the replay: per-IP and per-subnet sign-in limits are off",
        )
        self.checked(
            "new_device_needs_second_factor",
            attacker.counts["group sessions without a second factor"] == 0,
            f"{attacker.counts['group sessions without a second factor']} sessions from a "
            "password alone on a fresh device",
            "a new device signed in with the password alone: the second factor is not asked",
        )
        posed = {what: n for what, n in attacker.counts.items() if what.startswith("posing as")}
        self.checked(
            "a_copied_device_is_a_new_device",
            bool(posed) and not any(what.endswith(": session") for what in posed),
            f"the victim's phone copied: {posed}",
            "a copied device id or replayed device proof signed in with the password alone: "
            "a known device is only a string",
        )
        self.checked(
            "attacker_got_no_wallet_token",
            not attacker.wallet_tokens,
            f"{len(attacker.wallet_tokens)} wallet-audience tokens in the attacker's hands",
            "wallet token issued to the attacker's session (email code, external ID, or inside "
            "the cool-off): the group ID moved money",
        )
        self.checked(
            "attacker_moved_no_money",
            attacker.yen_moved == 0,
            f"{attacker.yen_moved} yen moved by the attacker",
            "the attacker moved money: the wallet accepted a stolen session",
        )
        self.checked(
            "legitimate_people_signed_in_during_attack",
            not legit["sign_in_failures"],
            f"{legit['signed_in']} of {legit['tried']} signed in; failures: "
            f"{legit['sign_in_failures'][:3]}",
            "legitimate people could not sign in during the attack: the defence locked out "
            "the people it protects",
        )
        self.checked(
            "legitimate_people_paid_during_attack",
            not legit["payment_failures"],
            f"{legit['paid']} of {legit['wallets']} paid; "
            f"failures: {legit['payment_failures'][:3]}",
            "legitimate people could not pay during the attack: the defence stopped real payments",
        )

    async def _watch_alerts(self, wave_started: float) -> str | None:
        """The operator's screen: alerts risk raises by itself during the wave."""
        while True:
            reply = await self.risk.ListAlerts(
                risk_pb2.ListAlertsRequest(), metadata=OPERATOR_METADATA, timeout=TIMEOUT
            )
            for alert in reply.alerts:
                if alert.rule_id == "alert.stuffing_wave":
                    self.alert_seen_at = self.timeline.now() - wave_started
                    return f"{alert.rule_id} at +{self.alert_seen_at:.1f} s into the wave"
            await asyncio.sleep(0.5)

    async def _risk_verdicts_for_attacker(self) -> Counter[str]:
        """What risk decided on the attacker's attempts, from its stored decisions."""
        verdicts: Counter[str] = Counter()
        since = Timestamp(seconds=int(self.attack_started_wall))
        for ip in [*self.attacker.ips, *self.attacker.noisy]:
            token = ""
            while True:
                reply = await self.risk.ListDecisions(
                    risk_pb2.ListDecisionsRequest(
                        ip_address=ip,
                        since=since,
                        page=common_pb2.PageRequest(page_size=500, page_token=token),
                    ),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
                for record in reply.decisions:
                    if record.kind == "login":
                        name = risk_pb2.Verdict.Name(record.decision.verdict)
                        verdicts[name.removeprefix("VERDICT_").lower()] += 1
                token = reply.next_page_token
                if not token:
                    break
        return verdicts

    async def _legitimate_use_during_attack(self) -> dict[str, Any]:
        """Every person signs in as usual while the wave runs; wallet holders pay."""
        result: dict[str, Any] = {
            "tried": 0,
            "signed_in": 0,
            "paid": 0,
            "wallets": 0,
            "sign_in_failures": [],
            "payment_failures": [],
        }

        async def go_shopping(member: Member) -> None:
            person = member.person
            result["tried"] += 1
            try:
                session = await self.people.sign_in(person)
                member.sessions.append(session)
                if member.external_subject:
                    external = await self._external_login(
                        member.external_subject, client(person.device, person.ip)
                    )
                    member.sessions.append(external.session)
            except (grpc.aio.AioRpcError, TimeoutError, AssertionError) as error:
                result["sign_in_failures"].append(f"{person.email}: {why(error)}")
                return
            result["signed_in"] += 1
            if not member.has_wallet:
                return
            result["wallets"] += 1
            try:
                payer = await self.people.payer(person, self.wallet)
                member.payer = payer
                member.wallet_tokens.append(payer.token)
                amount = self.rng.randrange(300, 1_501, 100)
                register = self.rng.choice(self.registers)
                await register.capture(
                    await payer.payment_code(), amount, [risk_pb2.GOODS_CATEGORY_FOOD]
                )
                member.balance -= amount
                result["paid"] += 1
            except (grpc.aio.AioRpcError, TimeoutError, AssertionError) as error:
                result["payment_failures"].append(f"{person.email}: {why(error)}")

        await each(list(self.members), go_shopping, self.size.people_concurrency)
        return result
