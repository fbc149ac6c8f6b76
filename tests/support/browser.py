"""A real Chromium for the page tests: Debian's, driven by Playwright, never downloaded.

Chromium runs headless with its background networking off (this machine's
network is closed, and a test must not wait on Google's hosts). A WebAuthn
virtual authenticator, added through the DevTools protocol, stands in for a
person's security key or phone, so passkey ceremonies run for real in the
browser against Mamoru's relying party.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, async_playwright

CHROMIUM = os.environ.get("MAMORU_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = CHROMIUM if os.path.isabs(CHROMIUM) else shutil.which(CHROMIUM)
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"Chromium is not at {CHROMIUM}: `make chromium` installs Debian's package"
            " (or set MAMORU_CHROMIUM to another Chromium)"
        )
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium for one test module or test."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


class VirtualAuthenticator:
    """A platform authenticator with user verification, inside one page's browser context."""

    def __init__(self, session: Any, authenticator_id: str) -> None:
        self._session = session
        self.authenticator_id = authenticator_id

    @classmethod
    async def attach(cls, page: Page, *, resident_keys: bool = True) -> VirtualAuthenticator:
        session = await page.context.new_cdp_session(page)
        await session.send("WebAuthn.enable", {"enableUI": False})
        added = await session.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": resident_keys,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )
        return cls(session, added["authenticatorId"])

    async def credentials(self) -> list[dict[str, Any]]:
        answer = await self._session.send(
            "WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id}
        )
        return list(answer["credentials"])

    async def set_sign_count(self, credential: dict[str, Any], sign_count: int) -> None:
        """Rewind (or advance) a credential's counter, as a cloned authenticator would."""
        await self._session.send(
            "WebAuthn.removeCredential",
            {"authenticatorId": self.authenticator_id, "credentialId": credential["credentialId"]},
        )
        await self._session.send(
            "WebAuthn.addCredential",
            {
                "authenticatorId": self.authenticator_id,
                "credential": {**credential, "signCount": sign_count},
            },
        )


@asynccontextmanager
async def page_in(browser: Browser, base_url: str, *, locale: str = "ja-JP") -> AsyncIterator[Page]:
    """A fresh browser context (its own cookies) and page, for one person or operator."""
    context: BrowserContext = await browser.new_context(base_url=base_url, locale=locale)
    try:
        yield await context.new_page()
    finally:
        await context.close()
