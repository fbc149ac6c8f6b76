"""The operators' console in a real browser against real services: sign-in, kill
switches with reasons and their audit, live alerts, forced resets, charts, and the
refusals that keep the pages to signed-in operators."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2
from playwright.async_api import expect

from tests.e2e.console.conftest import OPERATOR, PASSWORD, Console, screenshot, signed_in
from tests.e2e.identity.checks import reason_of
from tests.support.people import TIMEOUT

PAGES = ("/alerts", "/policy", "/cases", "/resets", "/charts", "/activity", "/charts/attempts.svg")


async def test_pages_without_a_session_send_the_browser_to_sign_in(console: Console) -> None:
    async with httpx.AsyncClient(base_url=console.url, follow_redirects=False) as http:
        for path in PAGES:
            answer = await http.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == f"/sign-in?next={path}", path
        # The live parts of a page hear "signed out" rather than a sign-in page.
        fragment = await http.get("/alerts/rows", headers={"x-console-fragment": "1"})
        assert fragment.status_code == 401
        http.cookies.set("console-session", "made-up")
        forged = await http.get("/alerts")
        assert forged.status_code == 303
        # Every answer, redirects included, carries the strict policy and is counted.
        assert "script-src 'self'" in forged.headers["content-security-policy"]
        assert "'unsafe-inline'" not in forged.headers["content-security-policy"]
        metrics = (await http.get(console.cluster.metrics_url("console"))).text
        series = (
            'mamoru_http_requests_total{code="303",method="GET",route="/alerts",service="console"}'
        )
        assert series in metrics

    async with console.page() as page:
        await page.goto("/policy")
        await expect(page).to_have_url(re.compile(r"/sign-in\?next=/policy$"))
        await page.get_by_label("Operator name").fill(OPERATOR)
        await page.get_by_label("Password").fill("not the password at all")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_have_text("Wrong name or password.")
        await screenshot(page, "sign-in")


async def test_a_post_without_the_csrf_token_or_a_reason_is_refused_and_changes_nothing(
    console: Console,
) -> None:
    async with console.page() as page:
        await signed_in(page)
        before = await console.cluster.stub("risk").GetPolicies(
            risk_pb2.GetPoliciesRequest(), timeout=TIMEOUT
        )
        form: dict[str, str | float | bool] = {
            "switch": "registration_suspended",
            "value": "on",
            "reason": "forged",
        }
        # The browser's own cookies (the session), but a form made elsewhere.
        for sent in (form, {**form, "csrf_token": "guessed"}):
            answer = await page.request.post("/policy", form=sent, max_redirects=0)
            assert answer.status == 403
            assert "CSRF" in await answer.text()
        # The right token but no reason: refused before risk is asked.
        await page.goto("/policy")
        token = await page.locator("input[name=csrf_token]").first.get_attribute("value")
        assert token
        blank = await page.request.post(
            "/policy", form={**form, "reason": "  ", "csrf_token": token}, max_redirects=0
        )
        assert blank.status == 400
        assert "reason: a reason is required" in await blank.text()
        after = await console.cluster.stub("risk").GetPolicies(
            risk_pb2.GetPoliciesRequest(), timeout=TIMEOUT
        )
        assert after.policy.version == before.policy.version
        assert not after.policy.registration_suspended


async def test_an_operator_suspends_card_top_ups_with_a_reason_and_the_next_top_up_is_refused(
    console: Console,
) -> None:
    payer = console.payer
    async with console.page() as page:
        await signed_in(page)
        await page.get_by_role("link", name="Kill switches").click()
        row = page.locator("#switch-top_up_channel-card")
        await expect(row.locator(".state")).to_have_text("open")
        await row.get_by_label("Reason").fill("card testing wave from one BIN")
        await row.get_by_role("button", name="Suspend").click()
        await expect(page.get_by_role("status")).to_have_text("The policy changed.")
        flipped = time.monotonic()
        await expect(row.locator(".state")).to_have_text("suspended")

        newest = page.locator("#policy-history tbody tr").first
        await expect(newest).to_contain_text(f"operator:{OPERATOR}")
        await expect(newest).to_contain_text("card testing wave from one BIN")
        await expect(newest).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"))
        await screenshot(page, "kill-switches")

        # Probe with a top-up over the per-top-up cap: refused either way, so no money
        # moves while the wallet has not yet applied the switch.
        async with asyncio.timeout(max(0.1, 2.0 - (time.monotonic() - flipped))):
            while True:
                try:
                    await payer.top_up_from_card(console.card_id, 10_000_000)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
                    if reason_of(error) == "CHANNEL_SUSPENDED":
                        break
                await asyncio.sleep(0.05)
        balance = (await payer.balance()).wallet.balance.amount_minor

        # Undone the same way, so the person may top up again.
        await row.get_by_label("Reason").fill("wave over")
        await row.get_by_role("button", name="Resume").click()
        await expect(row.locator(".state")).to_have_text("open")
    assert balance == 2_000


async def fail_logins(console: Console, count: int) -> None:
    risk = console.cluster.stub("risk", as_="identity")
    for n in range(count):
        client = common_pb2.ClientContext(ip_address=f"100.71.{n}.1", device_id="d")
        await risk.RecordOutcome(
            risk_pb2.RecordOutcomeRequest(
                outcome=risk_pb2.OUTCOME_PASSWORD_WRONG, identifier_hash=f"h{n}", client=client
            ),
            timeout=TIMEOUT,
        )


async def test_an_alert_raised_in_risk_appears_on_the_open_alerts_page_without_a_reload(
    console: Console,
) -> None:
    async with console.page() as page:
        await signed_in(page)
        await expect(page.locator("#alert-rows")).to_contain_text("No alerts.")
        # Set in this very document: a reload would lose it.
        await page.evaluate("window.mamoruMark = 'same page'")

        await console.cluster.stub("risk").UpdateRule(
            risk_pb2.UpdateRuleRequest(
                rule_id="alert.stuffing_wave", thresholds={"min_failures": 5}, reason="drill"
            ),
            timeout=TIMEOUT,
        )
        await fail_logins(console, 6)

        row = page.locator("#alert-rows tr[data-alert-id]").first
        await expect(row).to_contain_text("alert.stuffing_wave", timeout=15_000)
        await expect(row).to_contain_text("failed_sign_ins")
        assert await page.evaluate("window.mamoruMark") == "same page"
        await screenshot(page, "alerts")

        await row.get_by_label("Note").fill("looking into it")
        await row.get_by_role("button", name="Update").click()
        await expect(page.get_by_role("status")).to_have_text("The alert was updated.")
        await expect(page.locator("#alert-rows tr[data-alert-id]").first).to_contain_text(
            "acknowledged"
        )


async def test_a_forced_reset_started_from_the_console_shows_its_progress(
    console: Console,
) -> None:
    person = await console.identity.register(f"reset-{time.time_ns()}@example.jp")
    async with console.page() as page:
        await signed_in(page)
        await page.get_by_role("link", name="Forced resets").click()
        await page.get_by_label("Account IDs (one a line)").fill(person.account_id)
        await page.get_by_label("Reason").fill("password list leaked")
        await page.get_by_role("button", name="Start the reset").click()
        await expect(page.get_by_role("status")).to_contain_text("The forced reset started")
        row = page.locator("#reset-rows tr[data-job-id]").first
        await expect(row).to_contain_text(person.account_id)
        await expect(row).to_contain_text(OPERATOR)
        await expect(row.locator(".progress")).to_have_text("1 of 1, done", timeout=15_000)
        await expect(row.locator("progress")).to_have_attribute("value", "1")
        await screenshot(page, "resets")

        await page.get_by_role("link", name="Activity").click()
        await expect(page.locator("tbody tr").first).to_contain_text("reset.start")


async def test_the_charts_show_attempts_refusals_and_decisions_by_outcome(
    console: Console,
) -> None:
    since = Timestamp()
    since.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    decisions = (
        await console.cluster.stub("risk").ListDecisions(
            risk_pb2.ListDecisionsRequest(since=since), timeout=TIMEOUT
        )
    ).decisions
    verdicts = Counter(
        risk_pb2.Verdict.Name(d.decision.verdict).removeprefix("VERDICT_").lower()
        for d in decisions
    )
    assert verdicts["allow"] > 0
    async with console.page() as page:
        await signed_in(page)
        await page.get_by_role("link", name="Charts").click()
        await page.get_by_role("link", name="last 1 hour").click()
        await expect(page.get_by_text(f"({len(decisions)} in all)")).to_be_visible()
        rows = page.locator("#outcomes tbody tr")
        for verdict in ("allow", "challenge", "throttle", "deny"):
            row = rows.filter(has=page.get_by_role("cell", name=verdict, exact=True))
            await expect(row.locator("td").nth(1)).to_have_text(str(verdicts[verdict]))
        for image in await page.get_by_role("img").all():
            await expect(image).to_have_js_property("complete", True)
            assert await image.evaluate("i => i.naturalWidth") > 0
        await screenshot(page, "charts")


AXE = Path(__file__).resolve().parents[2] / "support" / "axe" / "axe.min.js"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


async def test_every_page_passes_the_axe_core_wcag_aa_rules(console: Console) -> None:
    # Only this test's browser lets the vendored checker in past the console's CSP.
    context = await console.browser.new_context(base_url=console.url, bypass_csp=True)
    try:
        page = await context.new_page()
        found = {}
        for path in ("/sign-in", *PAGES[:-1]):
            if path == "/sign-in":
                await page.goto(path)
            elif page.url.endswith("/sign-in") or "/sign-in?" in page.url:
                await signed_in(page)
            await page.goto(path)
            assert page.url == f"{console.url}{path}"
            await page.add_script_tag(path=AXE)
            result = await page.evaluate(
                "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG
            )
            found[path] = [
                (v["id"], [node["target"] for node in v["nodes"]]) for v in result["violations"]
            ]
        assert found == {path: [] for path in found}
    finally:
        await context.close()


async def test_signing_in_again_ends_the_session_the_browser_carried(console: Console) -> None:
    async def sign_in(carried: str) -> str:
        async with httpx.AsyncClient(base_url=console.url, follow_redirects=False) as http:
            form = await http.get("/sign-in")
            found = re.search(r'name="sign_in_token" value="([^"]+)"', form.text)
            assert found, form.text
            cookie = f"console-sign-in={found[1]}; console-session={carried}"
            answer = await http.post(
                "/sign-in",
                data={"sign_in_token": found[1], "name": OPERATOR, "password": PASSWORD},
                headers={"cookie": cookie},
            )
            assert answer.status_code == 303 and answer.headers["location"] == "/alerts"
            return str(answer.cookies["console-session"])

    first_session = await sign_in("")
    second_session = await sign_in(first_session)
    assert second_session != first_session
    async with httpx.AsyncClient(base_url=console.url, follow_redirects=False) as http:
        for session, status in ((first_session, 303), (second_session, 200)):
            answer = await http.get("/activity", headers={"cookie": f"console-session={session}"})
            assert answer.status_code == status
