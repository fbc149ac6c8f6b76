"""Between the wallet's protos and its domain: the only module besides the handlers
that knows wallet_pb2. Checks of a request's format live here too."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mamoru.common.v1 import common_pb2
from mamoru.wallet.v1 import wallet_pb2

from services.runtime import paging
from services.runtime.convert import timestamp
from services.runtime.validation import Violations
from services.wallet.clients.money import jpy
from services.wallet.clients.risk import CHANNEL_NAMES, CHANNELS_BY_NAME
from services.wallet.domain.compensation import CompensationRun
from services.wallet.domain.ledger import Reconciliation, StatementLine
from services.wallet.domain.limits import Room
from services.wallet.domain.merchants import Merchant
from services.wallet.domain.payouts import UnclaimedRow
from services.wallet.domain.wallets import FundingSourceRow, WalletRow

_STATUS = {
    "active": wallet_pb2.WALLET_STATUS_ACTIVE,
    "frozen": wallet_pb2.WALLET_STATUS_FROZEN,
    "closed": wallet_pb2.WALLET_STATUS_CLOSED,
}
_KIND = {
    "top_up": wallet_pb2.MOVEMENT_KIND_TOP_UP,
    "payment": wallet_pb2.MOVEMENT_KIND_PAYMENT,
    "refund": wallet_pb2.MOVEMENT_KIND_REFUND,
    "compensation": wallet_pb2.MOVEMENT_KIND_COMPENSATION,
    "payout": wallet_pb2.MOVEMENT_KIND_PAYOUT,
    "top_up_reversal": wallet_pb2.MOVEMENT_KIND_TOP_UP_REVERSAL,
}


# ---- requests ---------------------------------------------------------------------


def amount(check: Violations, request: Any, field: str = "amount") -> int:
    """The amount in minor units. The proto's rules check an amount that is given;
    one that is missing is refused here."""
    if not request.HasField(field):
        check.add(f"{field}.currency", "is required")
        return 0
    return int(getattr(request, field).amount_minor)


def not_blank(check: Violations, request: Any, *fields: str) -> None:
    """Required text that is only spaces, which the proto's length rules let through."""
    for field in fields:
        if not str(getattr(request, field)).strip():
            check.add(field, "is required")


def page_size(page: common_pb2.PageRequest) -> int:
    """The proto's rules keep it between 0 and 500; 0 asks for the default."""
    return page.page_size or 50


def page_after(token: str) -> str | None:
    """The sort key a previous page ended at; None on the first page."""
    if not token:
        return None
    (after,) = paging.decode(token, field="page.page_token", parts=1)
    return after


def next_page(after: object | None) -> str:
    return "" if after is None else paging.encode(str(after))


def channel_name(channel: int) -> str:
    return CHANNEL_NAMES[channel]  # type: ignore[index]


# ---- answers ----------------------------------------------------------------------


def _stamp(iso: str) -> Any:
    return timestamp(datetime.fromisoformat(iso)) if iso else None


def wallet_pb(row: WalletRow) -> wallet_pb2.Wallet:
    return wallet_pb2.Wallet(
        wallet_id=str(row.id),
        status=_STATUS[row.status],
        balance=jpy(row.balance),
        created_at=timestamp(row.created_at),
        frozen_reason=row.frozen_reason,
    )


def limits_pb(room: Room) -> wallet_pb2.LimitsRemaining:
    return wallet_pb2.LimitsRemaining(
        per_top_up=jpy(room.per_top_up),
        day_amount=jpy(room.day_amount),
        day_count=room.day_count,
        month_amount=jpy(room.month_amount),
        balance_room=jpy(room.balance_room),
    )


def transaction_pb(line: StatementLine) -> wallet_pb2.Transaction:
    return wallet_pb2.Transaction(
        movement_id=str(line.movement_id),
        kind=_KIND[line.kind],
        amount=jpy(line.amount),
        balance_after=jpy(line.balance_after),
        counterparty=line.counterparty,
        occurred_at=timestamp(line.occurred_at),
        related_movement_id=str(line.related_movement_id or ""),
    )


def top_up_pb(result: dict[str, Any]) -> wallet_pb2.TopUp:
    return wallet_pb2.TopUp(
        movement_id=result["movement_id"],
        amount=jpy(int(result["amount"])),
        balance_after=jpy(int(result["balance_after"])),
        channel=CHANNELS_BY_NAME[result["channel"]],
        occurred_at=_stamp(result["occurred_at"]),
    )


def payment_pb(result: dict[str, Any]) -> wallet_pb2.Payment:
    return wallet_pb2.Payment(
        movement_id=result["movement_id"],
        authorization_id=result["authorization_id"],
        amount=jpy(int(result["amount"])),
        merchant_id=result["merchant_id"],
        store_id=result["store_id"],
        occurred_at=_stamp(result["occurred_at"]),
        hold_expires_at=_stamp(result["hold_expires_at"]),
        refunded=jpy(int(result["refunded"])),
    )


def source_pb(source: FundingSourceRow) -> wallet_pb2.FundingSource:
    return wallet_pb2.FundingSource(
        funding_source_id=str(source.id),
        brand=source.brand,
        last4=source.last4,
        created_at=timestamp(source.created_at),
        new_source=source.new_source,
    )


def merchant_pb(merchant: Merchant) -> wallet_pb2.Merchant:
    return wallet_pb2.Merchant(
        merchant_id=str(merchant.id), name=merchant.name, category=merchant.category
    )


def compensation_pb(run: CompensationRun) -> wallet_pb2.CompensateCaseResponse:
    return wallet_pb2.CompensateCaseResponse(
        lines=[
            wallet_pb2.CompensationLine(
                movement_id=str(line.movement_id),
                wallet_id=str(line.wallet_id),
                amount=jpy(line.amount),
                method=line.method,
                compensation_movement_id=str(line.compensation_entry_id or ""),
            )
            for line in run.lines
        ],
        total=jpy(sum(line.amount for line in run.lines)),
        newly_paid=run.newly_paid,
    )


def reconcile_pb(report: Reconciliation) -> wallet_pb2.ReconcileResponse:
    return wallet_pb2.ReconcileResponse(
        balanced=report.balanced,
        differences=[
            wallet_pb2.ReconcileDifference(
                ledger_account_id=str(account),
                stored_balance_minor=stored,
                postings_sum_minor=posted,
            )
            for account, stored, posted in report.differences
        ],
        ledger_sum_minor=report.ledger_sum,
        unbalanced_entries=[str(entry) for entry in report.unbalanced_entries],
        accounts_checked=report.accounts_checked,
    )


def unclaimed_pb(row: UnclaimedRow) -> wallet_pb2.UnclaimedBalance:
    return wallet_pb2.UnclaimedBalance(
        wallet_id=str(row.wallet_id),
        balance=jpy(row.balance),
        notified_at=timestamp(row.notified_at),
    )
