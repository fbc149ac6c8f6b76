"""A person's wallet, called the way their app calls it: with their wallet token and device."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from mamoru.common.v1 import common_pb2
from mamoru.wallet.v1 import wallet_pb2

from services.runtime.access import bearer_metadata
from tests.support.people import TIMEOUT, Person, client, jpy


@dataclass
class Payer:
    """A person's wallet calls, each carrying their wallet token and device."""

    wallet: Any
    person: Person
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.token)

    @property
    def client(self) -> common_pb2.ClientContext:
        return client(self.person.device, self.person.ip)

    async def enroll(self) -> wallet_pb2.Wallet:
        reply = await self.wallet.Enroll(
            wallet_pb2.EnrollRequest(client=self.client), metadata=self.metadata, timeout=TIMEOUT
        )
        enrolled: wallet_pb2.Wallet = reply.wallet
        return enrolled

    async def balance(self) -> wallet_pb2.GetBalanceResponse:
        reply: wallet_pb2.GetBalanceResponse = await self.wallet.GetBalance(
            wallet_pb2.GetBalanceRequest(), metadata=self.metadata, timeout=TIMEOUT
        )
        return reply

    async def transactions(self) -> list[wallet_pb2.Transaction]:
        reply = await self.wallet.ListTransactions(
            wallet_pb2.ListTransactionsRequest(), metadata=self.metadata, timeout=TIMEOUT
        )
        return list(reply.transactions)

    async def register_card(
        self, processor_token: str, three_ds_transaction_id: str
    ) -> wallet_pb2.FundingSource:
        reply = await self.wallet.RegisterFundingSource(
            wallet_pb2.RegisterFundingSourceRequest(
                processor_token=processor_token, three_ds_transaction_id=three_ds_transaction_id
            ),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        source: wallet_pb2.FundingSource = reply.funding_source
        return source

    async def top_up_from_card(
        self, funding_source_id: str, amount: int, idempotency_key: str | None = None
    ) -> wallet_pb2.TopUp:
        reply = await self.wallet.TopUpFromCard(
            wallet_pb2.TopUpFromCardRequest(
                funding_source_id=funding_source_id,
                amount=jpy(amount),
                idempotency_key=idempotency_key or str(uuid.uuid4()),
                client=self.client,
            ),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        top_up: wallet_pb2.TopUp = reply.top_up
        return top_up

    async def payment_code(self) -> str:
        reply = await self.wallet.IssuePaymentCode(
            wallet_pb2.IssuePaymentCodeRequest(client=self.client),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        return str(reply.code)

    async def report_unauthorized(
        self, movement_id: str = "", description: str = "this wasn't me"
    ) -> wallet_pb2.ReportUnauthorizedResponse:
        reply: wallet_pb2.ReportUnauthorizedResponse = await self.wallet.ReportUnauthorized(
            wallet_pb2.ReportUnauthorizedRequest(
                movement_id=movement_id,
                description=description,
                idempotency_key=str(uuid.uuid4()),
            ),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        return reply
