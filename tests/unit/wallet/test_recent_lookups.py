"""The wallet's short memory of merchants and stores on the capture path."""

from __future__ import annotations

import uuid

import pytest

from services.runtime.errors import NotFound
from services.wallet.domain.merchants import Merchant, StoreRow
from services.wallet.use_cases.merchants import MerchantDirectory, RecentLookups


def test_a_remembered_value_is_found_while_it_is_fresh() -> None:
    lookups: RecentLookups[str, int] = RecentLookups(seconds=60)
    lookups.put("store", 7)
    assert lookups.get("store") == 7


def test_a_value_whose_time_ran_out_is_looked_up_again() -> None:
    lookups: RecentLookups[str, int] = RecentLookups(seconds=-1)
    lookups.put("store", 7)
    assert lookups.get("store") is None


def test_a_value_never_put_is_not_found() -> None:
    assert RecentLookups[str, int]().get("unknown merchant key") is None


def test_a_full_memory_starts_over_instead_of_growing() -> None:
    lookups: RecentLookups[int, int] = RecentLookups(entries=3)
    for key in range(3):
        lookups.put(key, key)
    lookups.put(99, 99)
    assert [lookups.get(key) for key in (0, 1, 2, 99)] == [None, None, None, 99]


class CountingBook:
    """A merchant's stores, counting how often each kind of look-up reaches it."""

    def __init__(self, merchant: Merchant, stores: int) -> None:
        self.merchant = merchant
        made = [StoreRow(uuid.uuid4(), merchant.id, f"store {n}") for n in range(stores)]
        self.stores = {shop.id: shop for shop in made}
        self.chain_reads = 0
        self.single_reads = 0

    def open_store(self) -> StoreRow:
        shop = StoreRow(uuid.uuid4(), self.merchant.id, "new store")
        self.stores[shop.id] = shop
        return shop

    async def stores_of(self, merchant_id: uuid.UUID, *, limit: int) -> list[StoreRow]:
        self.chain_reads += 1
        return [s for s in self.stores.values() if s.merchant_id == merchant_id][:limit]

    async def store_of(self, merchant_id: uuid.UUID, store_id: uuid.UUID) -> StoreRow:
        self.single_reads += 1
        shop = self.stores.get(store_id)
        if shop is None or shop.merchant_id != merchant_id:
            raise NotFound("STORE_NOT_FOUND", "no such store for this merchant")
        return shop


def a_directory(stores: int) -> tuple[MerchantDirectory, CountingBook]:
    book = CountingBook(Merchant(uuid.uuid4(), "Lawson", "5411"), stores)
    return MerchantDirectory(book), book  # type: ignore[arg-type]


async def test_the_first_sale_of_a_chain_reads_all_its_stores_once() -> None:
    directory, book = a_directory(50)

    found = [await directory.store_of(book.merchant, store_id) for store_id in book.stores]

    assert found == list(book.stores.values())
    assert (book.chain_reads, book.single_reads) == (1, 0)


async def test_a_store_opened_after_its_chain_was_read_is_still_found() -> None:
    directory, book = a_directory(3)
    await directory.store_of(book.merchant, next(iter(book.stores)))
    opened = book.open_store()

    assert await directory.store_of(book.merchant, opened.id) == opened
    assert (book.chain_reads, book.single_reads) == (1, 1)


async def test_another_merchants_store_is_not_found_through_the_memory() -> None:
    directory, book = a_directory(3)
    await directory.store_of(book.merchant, next(iter(book.stores)))

    with pytest.raises(NotFound):
        await directory.store_of(Merchant(uuid.uuid4(), "Other", "5411"), next(iter(book.stores)))
