"""Password hashing (argon2id) behind the Hasher port, and the offline list of
common and breached passwords."""

from __future__ import annotations

import asyncio
import functools

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from services.identity.domain.credentials import identifier_key
from services.runtime import metrics

# OWASP's minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
OWASP_MEMORY_KIB = 19 * 1024
OWASP_TIME_COST = 2
OWASP_PARALLELISM = 1


class PasswordHasher:
    """argon2id in a worker thread, counting every hash so tests can prove when none ran."""

    def __init__(
        self,
        *,
        memory_kib: int = OWASP_MEMORY_KIB,
        time_cost: int = OWASP_TIME_COST,
        parallelism: int = OWASP_PARALLELISM,
    ) -> None:
        self._argon = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self.computed = 0
        # Unknown identifiers are checked against this, so they cost what a real account costs.
        self._dummy = self._argon.hash("mamoru dummy password for unknown identifiers")

    async def hash(self, password: str) -> str:
        self.computed += 1
        metrics.IDENTITY_PASSWORD_HASHES.inc()
        with metrics.IDENTITY_HASHES_IN_FLIGHT.track_inprogress():
            return await asyncio.to_thread(self._argon.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when ``password`` matches; an absent hash still costs one verification."""
        self.computed += 1
        metrics.IDENTITY_PASSWORD_HASHES.inc()
        with metrics.IDENTITY_HASHES_IN_FLIGHT.track_inprogress():
            matches = await asyncio.to_thread(self._verify, stored or self._dummy, password)
        return matches and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._argon.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._argon.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False


@functools.cache
def common_passwords() -> frozenset[str]:
    """zxcvbn's list of the 30,000 most common leaked passwords, folded like identifiers."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(identifier_key(word) for word in FREQUENCY_LISTS["passwords"])
