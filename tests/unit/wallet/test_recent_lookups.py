"""The wallet's short memory of merchants and stores on the capture path."""

from __future__ import annotations

from services.wallet.use_cases.merchants import RecentLookups


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
