"""The Pwned Passwords range service: is a new password known from a breach?"""

from __future__ import annotations

import hashlib

import aiohttp
import structlog

log = structlog.get_logger(__name__)


class PwnedRange:
    """Pwned Passwords k-anonymity range look-ups: only 5 hex digits of the SHA-1 leave us.

    The check is an extra layer: when the service cannot be reached, the offline
    list still applies and the password is not refused for that reason.
    """

    def __init__(self, base_url: str, *, timeout_seconds: float = 2.0) -> None:
        self._base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def is_breached(self, password: str) -> bool:
        digest = hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()
        prefix, suffix = digest[:5], digest[5:]
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.get(self._base_url + prefix, headers={"Add-Padding": "true"}) as reply,
            ):
                reply.raise_for_status()
                body = await reply.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("pwned_range.unavailable", error=type(error).__name__)
            return False
        for line in body.splitlines():
            candidate, _, count = line.strip().partition(":")
            if candidate.upper() == suffix and count.strip() not in ("", "0"):
                return True
        return False
