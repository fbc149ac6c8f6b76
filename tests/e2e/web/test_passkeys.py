"""Passkeys in the browser: a cloned authenticator's counter going back suspends it."""

from __future__ import annotations

import re

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


async def test_a_sign_count_that_goes_back_suspends_the_passkey(web: WebStack) -> None:
    async with visitor(web) as who:
        await register(web, who)
        await sign_in_with_password(web, who)
        await enrol_passkey(who)
        await sign_out(who)
        await sign_in_with_passkey(who)
        await sign_out(who)

        [credential] = await who.authenticator.credentials()
        assert credential["signCount"] >= 1
        await who.authenticator.set_sign_count(credential, 0)
        await who.page.locator("#passkey-sign-in").click()
        await expect(who.page.locator("#passkey-error")).to_be_visible()
        await expect(who.page).to_have_url(re.compile(r"/sign-in$"))

        await sign_in_with_password(web, who)
        await who.page.goto("/account")
        await expect(who.page.locator("#passkey-list .badge")).to_have_count(1)


async def test_the_sign_in_page_offers_the_passkey_in_autofill(web: WebStack) -> None:
    """Conditional UI: the browser offers the passkey from the email field's autofill;
    the virtual authenticator picks it as a person would, with no button pressed."""
    async with visitor(web, conditional_ui=True) as who:
        await register(web, who)
        await sign_in_with_password(web, who)
        await enrol_passkey(who)
        await who.page.locator("header form[action='/sign-out'] button").click()
        await expect(who.page).to_have_url(re.compile(r"/wallet$"))
        await expect(who.page.locator("header form[action='/sign-out'] button")).to_be_visible()
