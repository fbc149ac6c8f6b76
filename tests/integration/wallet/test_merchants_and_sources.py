"""Merchants, stores, their keys, and funding sources, on real PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from services.runtime.errors import AlreadyExists, NotFound
from services.wallet.storage import Storage


async def test_a_merchant_is_found_by_its_key_and_never_by_another(wallet_store: Storage) -> None:
    merchant, key = await wallet_store.merchants.register_merchant("Lawson", "5411")

    assert await wallet_store.merchants.merchant_by_key(key) == merchant
    assert await wallet_store.merchants.merchant_by_key(key + "x") is None


async def test_a_store_code_is_unique_per_merchant_and_a_store_belongs_to_one(
    wallet_store: Storage,
) -> None:
    merchants = wallet_store.merchants
    lawson, _ = await merchants.register_merchant("Lawson", "5411")
    other, _ = await merchants.register_merchant("FamilyMart", "5411")
    store_id = await merchants.register_store(lawson.id, "tokyo-001", "Shibuya")
    await merchants.register_store(other.id, "tokyo-001", "Shibuya")

    with pytest.raises(AlreadyExists):
        await merchants.register_store(lawson.id, "tokyo-001", "Again")
    with pytest.raises(NotFound):
        await merchants.store_of(other.id, store_id)
    with pytest.raises(NotFound):
        await merchants.register_store(uuid.uuid4(), "tokyo-002", "Nowhere")
    assert (await merchants.store_of(lawson.id, store_id)).name == "Shibuya"


async def test_a_chains_stores_are_read_at_once_and_only_its_own(wallet_store: Storage) -> None:
    merchants = wallet_store.merchants
    lawson, _ = await merchants.register_merchant("Lawson", "5411")
    other, _ = await merchants.register_merchant("FamilyMart", "5411")
    mine = {await merchants.register_store(lawson.id, f"s{n}", f"Store {n}") for n in range(3)}
    await merchants.register_store(other.id, "s0", "Elsewhere")

    chain = await merchants.stores_of(lawson.id, limit=10)

    assert {shop.id for shop in chain} == mine
    assert {shop.merchant_id for shop in chain} == {lawson.id}
    assert len(await merchants.stores_of(lawson.id, limit=2)) == 2


async def test_a_card_registered_twice_is_one_source_until_it_is_removed(
    wallet_store: Storage,
) -> None:
    wallet = await wallet_store.wallets.enroll("payer-cards")
    sources = wallet_store.funding_sources
    first = await sources.add_funding_source(wallet.id, "tok_1", "visa", "4242")
    again = await sources.add_funding_source(wallet.id, "tok_1", "visa", "4242")
    assert again.id == first.id and first.new_source

    await sources.remove_funding_source(wallet.id, first.id)

    assert await sources.funding_sources(wallet.id) == []
    with pytest.raises(NotFound):
        await sources.funding_source(wallet.id, first.id)
    with pytest.raises(NotFound):
        await sources.remove_funding_source(wallet.id, first.id)
