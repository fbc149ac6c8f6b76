"""Top-up limits: what a wallet may still receive, and which limit a top-up breaks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Configured limits in JPY; the lower ones apply to new wallets and new cards."""

    per_top_up: int
    day_amount: int
    day_count: int
    month_amount: int
    balance_cap: int
    # A wallet younger than this many days gets new_wallet_day_amount per day.
    new_wallet_days: int
    new_wallet_day_amount: int
    # A card's first top-up may be at most this much.
    new_source_per_top_up: int


@dataclass(frozen=True)
class TopUpUsage:
    """What a wallet has already used: pending and completed top-ups, and its balance."""

    day_amount: int
    day_count: int
    month_amount: int
    balance: int
    # Top-ups reserved and not yet credited (a card charge in flight): they will
    # land on the balance, so they take room under the cap.
    pending: int = 0
    # The pending top-ups from the card in use: a new card's allowance covers all
    # of them together, not each request.
    source_pending: int = 0


@dataclass(frozen=True)
class Room:
    """What the limits still allow; every field is at least zero."""

    per_top_up: int
    day_amount: int
    day_count: int
    month_amount: int
    balance_room: int

    @property
    def largest_top_up(self) -> int:
        if self.day_count <= 0:
            return 0
        return min(self.per_top_up, self.day_amount, self.month_amount, self.balance_room)


def room(limits: Limits, usage: TopUpUsage, *, new_wallet: bool, new_source: bool) -> Room:
    day_amount = limits.new_wallet_day_amount if new_wallet else limits.day_amount
    per_top_up = limits.per_top_up
    if new_source:
        per_top_up = min(per_top_up, limits.new_source_per_top_up - usage.source_pending)
    return Room(
        per_top_up=max(per_top_up, 0),
        day_amount=max(day_amount - usage.day_amount, 0),
        day_count=max(limits.day_count - usage.day_count, 0),
        month_amount=max(limits.month_amount - usage.month_amount, 0),
        balance_room=max(limits.balance_cap - usage.balance - usage.pending, 0),
    )


def broken_limit(
    limits: Limits, usage: TopUpUsage, amount: int, *, new_wallet: bool, new_source: bool
) -> str | None:
    """The first limit ``amount`` would break (a stable name), or None when it fits."""
    left = room(limits, usage, new_wallet=new_wallet, new_source=new_source)
    if amount > left.per_top_up:
        return "new_source_per_top_up" if new_source else "per_top_up"
    if left.day_count < 1:
        return "day_count"
    if amount > left.day_amount:
        return "new_wallet_day_amount" if new_wallet else "day_amount"
    if amount > left.month_amount:
        return "month_amount"
    if amount > left.balance_room:
        return "balance_cap"
    return None
