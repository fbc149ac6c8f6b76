"""A person using the pages in a real browser: each step as they would take it,
reading codes and links from the mail the local SMTP server received."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from playwright.async_api import Page, expect

from tests.e2e.web.conftest import WebStack
from tests.support.browser import VirtualAuthenticator, page_in
from tests.support.people import (
    PASSWORD,
    SIGN_IN_SUBJECTS,
    VERIFICATION_SUBJECTS,
    code_in,
    home_address,
    next_mail,
    subject_is,
)

# A busy machine runs the services, the browser and other test runs at once.
WAIT_MS = 30_000
expect.set_options(timeout=WAIT_MS)


@dataclass
class Visitor:
    """One browser (its own cookies, so its own device) of one person."""

    page: Page
    authenticator: VirtualAuthenticator
    email: str = ""
    password: str = PASSWORD


@asynccontextmanager
async def visitor(
    web: WebStack, *, ip: str | None = None, conditional_ui: bool = False
) -> AsyncIterator[Visitor]:
    """A browser of its own. Chromium's virtual authenticator answers a conditional
    (autofill) passkey request at once, which would sign the person in behind a
    test's back whenever the sign-in page opens; only tests of that ask for it."""
    async with page_in(web.browser, web.url) as page:
        page.set_default_timeout(WAIT_MS)
        if not conditional_ui:
            await page.add_init_script(
                "window.PublicKeyCredential && (PublicKeyCredential."
                "isConditionalMediationAvailable = async () => false);"
            )
        await page.context.set_extra_http_headers({"X-Forwarded-For": ip or home_address()})
        yield Visitor(page, await VirtualAuthenticator.attach(page))


def new_email() -> str:
    return f"hanako-{uuid.uuid4().hex[:10]}@example.jp"


async def register(web: WebStack, who: Visitor, email: str | None = None) -> None:
    """Register, then verify the address with the code from the mail."""
    who.email = email or new_email()
    before = len(web.mailbox.to(who.email))
    page = who.page
    await page.goto("/register")
    await page.locator("#email").fill(who.email)
    await page.locator("#password").fill(who.password)
    await page.locator("form.card button[type=submit]").click()
    await expect(page).to_have_url(re.compile(r"/verify$"))
    mail = await next_mail(web.mailbox, who.email, subject_is(*VERIFICATION_SUBJECTS), after=before)
    await page.locator("#code").fill(code_in(mail))
    await page.locator("form.card button[type=submit]").click()
    await expect(page).to_have_url(re.compile(r"/sign-in$"))


async def sign_in_with_password(
    web: WebStack, who: Visitor, then: str = r"/(wallet|step-up|wallet/sign-in-again)$"
) -> None:
    """Password, then the code mailed to the address when identity asks for one;
    ``then`` is where the person lands."""
    page = who.page
    await page.goto("/sign-in")
    await page.locator("#email").fill(who.email)
    await page.locator("#password").fill(who.password)
    await page.locator("form.card button[type=submit]").click()
    second_step = re.compile(r"/sign-in/second-factor$")
    away = re.compile(then)
    await expect(page).to_have_url(re.compile(f"{second_step.pattern}|{away.pattern}"))
    if not second_step.search(page.url):
        return
    before = len(web.mailbox.to(who.email))
    await page.locator("button[name=send][value=email_code]").click()
    await expect(page.locator("p.notice")).to_be_visible()
    mail = await next_mail(web.mailbox, who.email, subject_is(*SIGN_IN_SUBJECTS), after=before)
    await page.locator("#email_code").fill(code_in(mail))
    await page.locator("#email_code").press("Enter")
    await expect(page).to_have_url(away)


async def enrol_passkey(who: Visitor, name: str = "Chromium") -> None:
    page = who.page
    await page.goto("/account")
    await page.locator("#passkey-name").fill(name)
    await page.locator("#passkey-register").click()
    await expect(page.locator("#passkey-list")).to_contain_text(name)


async def sign_out(who: Visitor) -> None:
    await who.page.locator("header form[action='/sign-out'] button").click()
    await expect(who.page).to_have_url(re.compile(r"/sign-in$"))


async def sign_in_with_passkey(who: Visitor) -> None:
    page = who.page
    await page.goto("/sign-in")
    await page.locator("#passkey-sign-in").click()
    await expect(page).to_have_url(re.compile(r"/wallet$"))
