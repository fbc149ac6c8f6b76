"""Signing keys rotate through the database, always published before they sign."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from cryptography.exceptions import InvalidTag

from services.identity.bootstrap import MIGRATIONS
from services.identity.domain.sealing import SecretBox
from services.identity.use_cases.keys import KeyRing
from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import migrate
from services.runtime.tokens import JwksCache, TokenVerifier, sign_token


def claims() -> dict[str, object]:
    now = int(time.time())
    return {
        "sub": "a", "aud": "group", "iss": "mamoru-identity", "sid": "s", "amr": ["password"],
        "acr": "1", "auth_time": now, "iat": now, "exp": now + 60, "jti": "j",
    }  # fmt: skip


async def test_a_rotation_signs_with_the_announced_key_and_old_tokens_still_verify(new_database):
    pool = await create_pool(await new_database("identity"))
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "identity", MIGRATIONS)
        ring = KeyRing(pool, SecretBox(bytes(32)), rotate_every=timedelta(days=30))
        await ring.start()
        first = ring.current
        announced = {key["kid"] for key in ring.jwks()["keys"]} - {first.kid}
        old_token = sign_token(first, claims())

        # Another replica shares the database and sees the same keys.
        replica = KeyRing(pool, SecretBox(bytes(32)), rotate_every=timedelta(days=30))
        await replica.start()
        assert replica.current.kid == first.kid

        assert await ring.rotate_if_due(force=True)
        await ring.load()
        assert {ring.current.kid} == announced
        published = {key["kid"] for key in ring.jwks()["keys"]}
        assert first.kid in published and len(published) == 3

        verifier = TokenVerifier(JwksCache(ring.jwks_fresh), issuer="mamoru-identity")
        assert (await verifier.verify(old_token, ["group"])).subject == "a"
        new_token = sign_token(ring.current, claims())
        assert (await verifier.verify(new_token, ["group"])).subject == "a"

        # A key sealed under another secrets key does not open.
        stranger = KeyRing(pool, SecretBox(bytes([7] * 32)), rotate_every=timedelta(days=30))
        with pytest.raises(InvalidTag):
            await stranger.load()
    finally:
        await close_pool(pool)
