"""axe-core, run in the same Chromium, finds no serious or critical violation on
the person's pages, in Japanese and in English."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from tests.e2e.web.conftest import WebStack
from tests.e2e.web.people import (
    enrol_passkey,
    register,
    sign_in_with_passkey,
    sign_in_with_password,
    sign_out,
    visitor,
)

AXE = Path(__file__).resolve().parents[2] / "support" / "axe" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
SERIOUS = ("serious", "critical")


async def violations(page: Page) -> list[str]:
    """The serious and critical violations on the page as it is now."""
    result: dict[str, Any] = await page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", TAGS
    )
    return [
        f"{page.url} {v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in SERIOUS
    ]


async def test_the_persons_pages_have_no_serious_accessibility_violations(
    web: WebStack,
) -> None:
    found: list[str] = []
    async with visitor(web) as who:
        page = who.page
        # Injected by the browser itself, so the pages' CSP (script-src 'self') stays as served.
        await page.add_init_script(path=str(AXE))

        async def check(path: str | None = None) -> None:
            if path is not None:
                await page.goto(path)
            await expect(page.locator("main h1")).to_be_visible()
            found.extend(await violations(page))

        for path in ("/sign-in", "/register", "/forgot-password", "/security/not-me"):
            await check(path)
        await page.goto("/reset-password?token=made-up-for-the-check")
        await check()
        await register(web, who)
        await sign_in_with_password(web, who)
        # A password alone does not open the wallet: the page says what to do next.
        await check("/wallet")
        await expect(page).to_have_url(re.compile(r"/(step-up|wallet/sign-in-again)$"))
        await check("/account")
        await check("/authenticator")
        await enrol_passkey(who)
        await sign_out(who)
        await sign_in_with_passkey(who)
        await check()
        await page.locator("form[action='/wallet/open'] button").click()
        await expect(page.locator("#balance")).to_be_visible()
        await check()
        await check("/wallet/top-up")
        await page.locator("#card_number").fill("4242424242424242")
        await page.locator("#amount").fill("500")
        await page.locator("form.card button[type=submit]").click()
        await expect(page.locator("#history")).to_be_visible()
        await check()
        await page.goto("/wallet/pay")
        await expect(page.locator("#payment-code")).to_have_text(re.compile(r"\d+"))
        await check()
        await check("/account")
        # And in English.
        await page.goto("/account")
        await page.locator("header form[action='/language'] button").click()
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await check()
        await check("/wallet")
        # The check itself sees a violation when there is one (an image with no text).
        await page.evaluate("document.querySelector('main').append(new Image(8, 8))")
        assert any("image-alt" in v for v in await violations(page))
    assert not found, "\n".join(found)
