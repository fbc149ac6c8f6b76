"""The account page: the authenticator app with its recovery codes, and other
browsers' sessions signed out from here."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.e2e.web.conftest import WebStack
from tests.e2e.web.people import (
    enrol_passkey,
    register,
    sign_in_with_password,
    sign_out,
    visitor,
)
from tests.support.people import next_totp


async def test_recovery_codes_are_shown_once_when_the_authenticator_app_is_set_up(
    web: WebStack,
) -> None:
    async with visitor(web) as who:
        page = who.page
        await register(web, who)
        await sign_in_with_password(web, who)
        await page.goto("/authenticator")
        secret = await page.locator("#totp-secret").inner_text()
        await expect(page.locator("img[src^='data:image/svg+xml']")).to_be_visible()
        await page.locator("#code").fill(await next_totp(secret))
        await page.locator("form.card button[type=submit]").click()
        await expect(page).to_have_url(re.compile(r"/account$"))
        await expect(page.locator("#recovery-codes li")).not_to_have_count(0)
        await page.reload()
        await expect(page.locator("#apps-title")).to_be_visible()
        await expect(page.locator("#recovery-codes")).to_have_count(0)

        # The app's code raises this session before the wallet opens.
        await page.goto("/wallet")
        await expect(page).to_have_url(re.compile(r"/step-up$"))
        await page.locator("#totp_code").fill(await next_totp(secret))
        await page.locator("#totp_code").press("Enter")
        await expect(page.locator("form[action='/wallet/open'] button")).to_be_visible()


async def test_a_person_signs_another_browser_out_from_the_sessions_list(web: WebStack) -> None:
    async with visitor(web) as phone, visitor(web) as laptop:
        await register(web, phone)
        await sign_in_with_password(web, phone)
        laptop.email = phone.email
        await sign_in_with_password(web, laptop)

        await laptop.page.goto("/account")
        others = laptop.page.locator("#session-list form button")
        await expect(others).to_have_count(1)
        await others.click()
        await expect(laptop.page).to_have_url(re.compile(r"/account$"))
        await expect(laptop.page.locator("#session-list form button")).to_have_count(0)

        await phone.page.goto("/account")
        await expect(phone.page).to_have_url(re.compile(r"/sign-in$"))


async def test_a_removed_passkey_no_longer_signs_the_person_in(web: WebStack) -> None:
    async with visitor(web) as who:
        page = who.page
        await register(web, who)
        await sign_in_with_password(web, who)
        await enrol_passkey(who, "Laptop")
        # Changing factors asks for one the account has: the passkey confirms it first.
        await page.locator("#passkey-list button").click()
        await expect(page).to_have_url(re.compile(r"/step-up$"))
        await page.locator("#passkey-step-up").click()
        await expect(page).to_have_url(re.compile(r"/account$"))
        await page.locator("#passkey-list button").click()
        await expect(page).to_have_url(re.compile(r"/account$"))
        await expect(page.locator("#passkey-list")).to_have_count(0)
        await sign_out(who)
        await page.locator("#passkey-sign-in").click()
        await expect(page.locator("#passkey-error")).to_be_visible()
        await expect(page).to_have_url(re.compile(r"/sign-in$"))


async def test_a_browser_whose_session_expired_signs_in_again(web: WebStack) -> None:
    async with visitor(web) as who:
        await register(web, who)
        # The cookie names a session the service no longer keeps (expired, or sealed
        # under a replaced key): the next form still works.
        await who.page.context.add_cookies(
            [{"name": "mamoru-session", "value": "gone-" * 8, "url": web.url}]
        )
        await sign_in_with_password(web, who)
