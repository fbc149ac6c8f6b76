"""The pages that mail links open: the password reset, end to end from the mail."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.e2e.web.conftest import WebStack
from tests.e2e.web.people import register, sign_in_with_password, visitor
from tests.support.people import reset_mail

NEW_PASSWORD = "a brand new passphrase for mamoru"
_LINK = re.compile(r"https?://[^\s\"'<>]+/reset-password\?token=[A-Za-z0-9_\-]+")


async def test_a_reset_from_the_mail_link_ends_every_other_session(web: WebStack) -> None:
    async with visitor(web) as phone, visitor(web) as laptop:
        await register(web, phone)
        await sign_in_with_password(web, phone)
        await phone.page.goto("/account")
        await expect(phone.page.locator("#session-list")).to_be_visible()

        laptop.email = phone.email
        await laptop.page.goto("/forgot-password")
        await laptop.page.locator("#email").fill(phone.email)
        await laptop.page.locator("form.card button[type=submit]").click()
        await expect(laptop.page.locator("p.notice")).to_be_visible()
        mail = (await reset_mail(web.mailbox, phone.email))[-1]
        link = _LINK.search(mail)
        assert link, "no reset link in the mail"
        # make run's mail links name 127.0.0.1; the pages answer on their one origin.
        await laptop.page.goto(link.group(0).replace("localhost", "127.0.0.1"))
        await expect(laptop.page).to_have_url(f"{web.url}/reset-password")
        await web.screenshot(laptop.page, "reset-password")
        await laptop.page.locator("#password").fill(NEW_PASSWORD)
        await laptop.page.locator("form.card button[type=submit]").click()
        await expect(laptop.page).to_have_url(re.compile(r"/sign-in$"))
        await expect(laptop.page.locator("p.notice")).to_be_visible()

        # The phone's session ended with the reset: its next page asks it to sign in.
        await phone.page.goto("/account")
        await expect(phone.page).to_have_url(re.compile(r"/sign-in$"))

        laptop.password = NEW_PASSWORD
        await sign_in_with_password(web, laptop)


async def test_a_used_or_made_up_reset_link_opens_no_form(web: WebStack) -> None:
    async with visitor(web) as who:
        await who.page.goto("/reset-password")
        await expect(who.page.locator("#message")).to_be_visible()
        await expect(who.page.locator("#password")).to_have_count(0)
        await who.page.goto("/reset-password?token=made-up")
        await who.page.locator("#password").fill(NEW_PASSWORD)
        await who.page.locator("form.card button[type=submit]").click()
        await expect(who.page.locator("#error")).to_be_visible()


async def test_the_other_links_notify_writes_open_working_pages(web: WebStack) -> None:
    async with visitor(web) as who:
        page = who.page
        await page.goto("/security/not-me?notice=00000000-0000-0000-0000-000000000000")
        await expect(page.locator("main a[href='/forgot-password']")).to_be_visible()
        await page.goto("/freeze-contact?token=made-up")
        await expect(page).to_have_url(f"{web.url}/freeze-contact")
        await page.locator("form.card button[type=submit]").click()
        await expect(page.locator("main [role=status], main [role=alert]")).not_to_have_count(0)
        # A payment's report needs the person: the link asks them to sign in first.
        await page.goto("/wallet/not-me?movement=m-1")
        await expect(page).to_have_url(re.compile(r"/sign-in$"))


async def test_a_page_that_asked_for_a_sign_in_opens_after_it(web: WebStack) -> None:
    async with visitor(web) as who:
        await register(web, who)
        await who.page.goto("/account?from=mail")
        await expect(who.page).to_have_url(re.compile(r"/sign-in$"))
        await sign_in_with_password(web, who, then=r"/account\?from=mail$")
        await expect(who.page.locator("#session-list")).to_be_visible()
