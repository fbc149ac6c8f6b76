"""The person's wallet from a browser: balance, history, cards, top-ups, payment codes.

Each call carries the session's wallet-audience token (``Accounts.wallet_token``).
A card number typed into the top-up page goes to the sandbox processor to be
tokenised, as a processor's SDK would do in an app; the wallet sees only the token.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from mamoru.common.v1 import common_pb2
from mamoru.wallet.v1 import wallet_pb2 as pb

from services.runtime.access import bearer_metadata
from services.web.clients.calls import Refused, call

KINDS = {
    pb.MOVEMENT_KIND_TOP_UP: "top_up",
    pb.MOVEMENT_KIND_PAYMENT: "payment",
    pb.MOVEMENT_KIND_REFUND: "refund",
    pb.MOVEMENT_KIND_COMPENSATION: "compensation",
    pb.MOVEMENT_KIND_PAYOUT: "payout",
    pb.MOVEMENT_KIND_TOP_UP_REVERSAL: "top_up_reversal",
}


@dataclass(frozen=True)
class Entry:
    movement_id: str
    kind: str
    amount_minor: int
    balance_minor: int
    currency: str
    counterparty: str
    occurred_at: datetime | None


@dataclass(frozen=True)
class PaymentCode:
    code: str
    expires_at: float


def _when(stamp: Any) -> datetime | None:
    if not stamp.seconds:
        return None
    return datetime.fromtimestamp(stamp.seconds, tz=UTC)


class Money:
    """``stub`` is the wallet's (``WalletServiceStub`` on the channel as ``web``)."""

    def __init__(self, stub: Any, timeout: float, processor_url: str) -> None:
        self._stub = stub
        self._timeout = timeout
        self._processor_url = processor_url.rstrip("/")

    @property
    def takes_new_cards(self) -> bool:
        return bool(self._processor_url)

    async def _call(self, token: str, rpc: str, request: Any) -> Any:
        return await call(
            getattr(self._stub, rpc)(
                request, metadata=bearer_metadata(token), timeout=self._timeout
            )
        )

    async def balance(self, token: str) -> pb.GetBalanceResponse | None:
        """The wallet, or None when the person has none yet."""
        try:
            reply: pb.GetBalanceResponse = await self._call(
                token, "GetBalance", pb.GetBalanceRequest()
            )
        except Refused as refused:
            if refused.code == "NOT_FOUND":
                return None
            raise
        return reply

    async def enroll(self, token: str, client: common_pb2.ClientContext) -> None:
        await self._call(token, "Enroll", pb.EnrollRequest(client=client))

    async def history(self, token: str) -> list[Entry]:
        reply = await self._call(token, "ListTransactions", pb.ListTransactionsRequest())
        return [
            Entry(
                movement_id=t.movement_id,
                kind=KINDS.get(t.kind, "other"),
                amount_minor=t.amount.amount_minor,
                balance_minor=t.balance_after.amount_minor,
                currency=t.amount.currency or "JPY",
                counterparty=t.counterparty,
                occurred_at=_when(t.occurred_at),
            )
            for t in reply.transactions
        ]

    async def cards(self, token: str) -> list[pb.FundingSource]:
        reply = await self._call(token, "ListFundingSources", pb.ListFundingSourcesRequest())
        return list(reply.funding_sources)

    async def add_card(self, token: str, number: str) -> str:
        digits = "".join(ch for ch in number if ch.isdigit())
        if not self._processor_url:
            raise Refused("no_new_cards", "card_number")
        async with httpx.AsyncClient(timeout=self._timeout) as http:
            try:
                reply = await http.post(f"{self._processor_url}/v1/cards", json={"number": digits})
            except httpx.HTTPError:
                raise Refused("unavailable") from None
        if reply.status_code != 200:
            raise Refused("invalid", "card_number")
        body = reply.json()
        source = await self._call(
            token,
            "RegisterFundingSource",
            pb.RegisterFundingSourceRequest(
                processor_token=str(body["token"]),
                three_ds_transaction_id=str(body["three_ds_transaction_id"]),
            ),
        )
        return str(source.funding_source.funding_source_id)

    async def top_up(
        self,
        token: str,
        client: common_pb2.ClientContext,
        funding_source_id: str,
        amount_minor: int,
        idempotency_key: str,
    ) -> None:
        await self._call(
            token,
            "TopUpFromCard",
            pb.TopUpFromCardRequest(
                funding_source_id=funding_source_id,
                amount=common_pb2.Money(amount_minor=amount_minor, currency="JPY"),
                idempotency_key=idempotency_key,
                client=client,
            ),
        )

    async def payment_code(self, token: str, client: common_pb2.ClientContext) -> PaymentCode:
        reply = await self._call(
            token, "IssuePaymentCode", pb.IssuePaymentCodeRequest(client=client)
        )
        return PaymentCode(code=str(reply.code), expires_at=float(reply.expires_at.seconds))

    async def report(self, token: str, movement_id: str, description: str) -> str:
        reply = await self._call(
            token,
            "ReportUnauthorized",
            pb.ReportUnauthorizedRequest(
                movement_id=movement_id,
                description=description,
                idempotency_key=str(uuid.uuid5(uuid.NAMESPACE_URL, f"not-me:{movement_id}")),
            ),
        )
        return str(reply.case_id)
