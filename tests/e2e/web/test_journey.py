"""A person's whole way through the pages in a real browser, against the real system."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import expect

from tests.e2e.web.conftest import WebStack
from tests.e2e.web.people import (
    enrol_passkey,
    register,
    sign_in_with_passkey,
    sign_in_with_password,
    sign_out,
    visitor,
)
from tests.support.people import mentioning, next_mail

CARD = "4242 4242 4242 4242"


async def test_a_person_registers_pays_with_a_code_and_sees_the_payment(web: WebStack) -> None:
    async with visitor(web) as who:
        page = who.page
        await register(web, who)
        await web.screenshot(page, "sign-in")
        await sign_in_with_password(web, who)
        await enrol_passkey(who)
        await web.screenshot(page, "account")
        await sign_out(who)

        # The passkey alone signs the person in: no email, no password.
        await sign_in_with_passkey(who)
        await page.locator("form[action='/wallet/open'] button").click()
        await expect(page.locator("#balance")).to_have_text("¥0")

        await page.goto("/wallet/top-up")
        await page.locator("#card_number").fill(CARD)
        await page.locator("#amount").fill("3000")
        await web.screenshot(page, "top-up")
        await page.locator("form.card button[type=submit]").click()
        await expect(page).to_have_url(re.compile(r"/wallet$"))
        await expect(page.locator("#balance")).to_have_text("¥3,000")

        await page.goto("/wallet/pay")
        shown = page.locator("#payment-code")
        await expect(shown).to_have_text(re.compile(r"^\d{6,}$"))
        await expect(page.locator("#payment-qr")).to_have_attribute(
            "src", re.compile(r"^data:image/svg\+xml;base64,")
        )
        await expect(page.locator("#payment-barcode")).to_have_attribute(
            "src", re.compile(r"^data:image/svg\+xml;base64,")
        )
        await web.screenshot(page, "payment-code")
        payment = await web.register.capture(await shown.inner_text(), 1_200)
        assert payment.amount.amount_minor == 1_200

        await page.goto("/wallet")
        await expect(page.locator("#balance")).to_have_text("¥1,800")
        await expect(page.locator("#history")).to_contain_text("\u2212¥1,200")  # a minus sign
        await web.screenshot(page, "wallet")

        # The payment's mail links to a page that reports it as not the person's own.
        mail = await next_mail(web.mailbox, who.email, mentioning(payment.movement_id), after=0)
        link = re.search(r"https?://\S+/wallet/not-me\?movement=[\w-]+", mail.text())
        assert link, mail.text()
        await page.goto(link.group(0))
        await expect(page.locator("main code")).to_have_text(payment.movement_id)
        await page.locator("#details").fill("カードを落としました")
        await page.locator("form.card button[type=submit]").click()
        await expect(page.locator("#message")).to_contain_text(re.compile(r"\S{8,}"))

    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(web.cluster.metrics_url("web"))).text
    assert 'mamoru_http_requests_total{code="200",method="GET",route="/wallet",service="web"}' in (
        metrics
    )
