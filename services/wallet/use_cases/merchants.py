"""Merchants and stores: registering them, and knowing a register by its key."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Generic, TypeVar

from services.runtime.errors import Unauthenticated
from services.wallet.domain.merchants import Merchant, StoreRow
from services.wallet.use_cases.ports import MerchantBook

MERCHANT_KEY_HEADER = "x-merchant-key"
# Merchants and stores are never re-keyed, renamed or removed, and every store RPC
# looks both up: remembering them takes two database round trips off each capture
# (the hot merchant's path). A chain's stores each see a sale only every few minutes,
# so they are kept for an hour, and the first miss of a merchant reads all its
# stores at once rather than one store per first sale. Unknown keys and stores are
# never remembered; a store opened since is looked up on its own.
LOOKUP_SECONDS = 3600.0
LOOKUP_ENTRIES = 100_000
# A chain larger than this is remembered store by store, as it sells.
STORES_READ_AT_ONCE = LOOKUP_ENTRIES // 4

_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


class RecentLookups(Generic[_Key, _Value]):
    """Values found in the last ``seconds``, at most ``entries`` of them."""

    def __init__(self, seconds: float = LOOKUP_SECONDS, entries: int = LOOKUP_ENTRIES) -> None:
        self._seconds = seconds
        self._entries = entries
        self._found: dict[_Key, tuple[float, _Value]] = {}

    def get(self, key: _Key) -> _Value | None:
        found = self._found.get(key)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, key: _Key, value: _Value) -> None:
        if len(self._found) >= self._entries:
            self._found.clear()
        self._found[key] = (time.monotonic() + self._seconds, value)


class MerchantDirectory:
    def __init__(self, book: MerchantBook) -> None:
        self._book = book
        self._merchants: RecentLookups[bytes, Merchant] = RecentLookups()
        self._stores: RecentLookups[tuple[uuid.UUID, uuid.UUID], StoreRow] = RecentLookups()
        self._chains_read: RecentLookups[uuid.UUID, bool] = RecentLookups()

    async def register_merchant(self, name: str, category: str) -> tuple[Merchant, str]:
        """The new merchant and the key its registers send (shown once)."""
        return await self._book.register_merchant(name, category)

    async def register_store(self, merchant_id: uuid.UUID, store_code: str, name: str) -> uuid.UUID:
        return await self._book.register_store(merchant_id, store_code, name)

    async def by_keys(self, keys: list[str]) -> Merchant:
        """The merchant whose register sent exactly one valid key."""
        merchant = None
        if len(keys) == 1:
            # Kept under a digest of the key, so the secret itself is not held on to.
            digest = hashlib.sha256(keys[0].encode()).digest()
            merchant = self._merchants.get(digest)
            if merchant is None:
                merchant = await self._book.merchant_by_key(keys[0])
                if merchant is not None:
                    self._merchants.put(digest, merchant)
        if merchant is None:
            raise Unauthenticated("MERCHANT_KEY_INVALID", f"send a valid {MERCHANT_KEY_HEADER}")
        return merchant

    async def store_of(self, merchant: Merchant, store_id: uuid.UUID) -> StoreRow:
        shop = self._stores.get((merchant.id, store_id))
        if shop is None and self._chains_read.get(merchant.id) is None:
            self._chains_read.put(merchant.id, True)
            for found in await self._book.stores_of(merchant.id, limit=STORES_READ_AT_ONCE):
                self._stores.put((merchant.id, found.id), found)
            shop = self._stores.get((merchant.id, store_id))
        if shop is None:
            shop = await self._book.store_of(merchant.id, store_id)
            self._stores.put((merchant.id, store_id), shop)
        return shop
