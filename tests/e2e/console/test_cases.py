"""Cases in the console: a person's report becomes a case, an operator confirms
fraud with the attacker's indicators, sees the victims with their amounts, and
compensates them, all in the browser against real services."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from mamoru.risk.v1 import risk_pb2
from playwright.async_api import expect

from tests.e2e.console.conftest import CARD_NUMBER, OPERATOR, Console, screenshot, signed_in
from tests.support.people import TIMEOUT

ATTACKER_IP = "198.51.100.23"


async def test_an_operator_confirms_a_case_sees_its_victims_and_compensates_them(
    console: Console,
) -> None:
    cluster = console.cluster
    wallet = cluster.stub("wallet", as_="gateway")
    since = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    victim = await console.identity.new_payer(wallet)
    # The money moves in a session signed in from the attacker's address.
    victim.person.session = await console.identity.sign_in(victim.person, ip=ATTACKER_IP)
    victim = await console.identity.payer(victim.person, wallet)
    await victim.enroll()
    token, three_ds = cluster.card_processor.tokenise(CARD_NUMBER)
    card = await victim.register_card(token, three_ds)
    top_up = await victim.top_up_from_card(card.funding_source_id, 3_000)
    report = await victim.report_unauthorized(description="a top-up I never made")

    async with console.page() as page:
        await signed_in(page)
        await page.get_by_role("link", name="Cases").click()
        await page.get_by_role("link", name=report.case_id).click()
        await expect(page.locator("#case-status")).to_have_text("open")
        await page.get_by_label("IP addresses (one a line)").fill(ATTACKER_IP)
        await page.get_by_label("From (ISO 8601)").fill(since)
        await page.get_by_label("Reason").fill("sessions from a stuffing proxy")
        await page.get_by_role("button", name="Confirm fraud").click()
        await expect(page.get_by_role("status")).to_have_text("Fraud confirmed for the case.")
        await expect(page.locator("#case-status")).to_have_text("confirmed fraud")

        # The top-up reaches risk through the wallet's outbox: wait until risk knows it.
        risk = cluster.stub("risk")
        async with asyncio.timeout(TIMEOUT):
            while True:
                found = await risk.FindAffectedAccounts(
                    risk_pb2.FindAffectedAccountsRequest(case_id=report.case_id),
                    timeout=TIMEOUT,
                )
                if any(m.movement_id == top_up.movement_id for a in found.accounts
                       for m in a.movements):  # fmt: skip
                    break
                await asyncio.sleep(0.1)
        await page.reload()
        victims = page.locator("#victims")
        await expect(victims).to_contain_text(victim.person.account_id)
        await expect(victims).to_contain_text("top up 3,000 JPY")
        await expect(page.locator("#victims-total")).to_have_text("3,000 JPY")

        await page.get_by_label("Reason").fill("confirmed fraud, pay back")
        await page.get_by_role("button", name="Compensate").click()
        paid = page.locator("#compensation")
        await expect(paid).to_contain_text("3,000 JPY in all; 1 line(s) paid by this run.")
        await expect(paid).to_contain_text(top_up.movement_id)
        await screenshot(page, "case")

        # The victim query by indicators alone finds the same account and amount.
        await page.get_by_role("link", name="Cases").click()
        await page.get_by_label("IP addresses (one a line)").fill(ATTACKER_IP)
        await page.get_by_label("From (ISO 8601)").fill(since)
        await page.get_by_role("button", name="Find victims").click()
        await expect(page.locator("#victims")).to_contain_text(victim.person.account_id)
        await expect(page.locator("#victims-total")).to_have_text("3,000 JPY")
        await screenshot(page, "victims")

        changes = page.get_by_role("table", name="Operators' changes through the console")
        await expect(changes).to_contain_text("case.compensate")
        await expect(changes).to_contain_text(OPERATOR)
    assert [r["amount"] for r in cluster.card_processor.refunds.values()] == [3_000]
