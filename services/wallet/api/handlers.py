"""The wallet's gRPC handlers: check the request's format, call a use case, answer."""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any, TypeAlias

import grpc
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.runtime.access import current_caller
from services.runtime.convert import timestamp
from services.runtime.validation import Violations
from services.wallet.api import convert
from services.wallet.api.callers import merchant_keys, payer_claims
from services.wallet.clients.money import jpy
from services.wallet.domain.merchants import Merchant
from services.wallet.use_cases.merchants import MerchantDirectory
from services.wallet.use_cases.payments import Sale, StorePayments
from services.wallet.use_cases.payouts import Payouts
from services.wallet.use_cases.refunds import Refunds
from services.wallet.use_cases.top_ups import TopUpRequest, TopUps
from services.wallet.use_cases.wallets import Wallets

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class WalletServicer(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(
        self,
        *,
        wallets: Wallets,
        top_ups: TopUps,
        payments: StorePayments,
        refunds: Refunds,
        payouts: Payouts,
        merchants: MerchantDirectory,
    ) -> None:
        self._wallets = wallets
        self._top_ups = top_ups
        self._payments = payments
        self._refunds = refunds
        self._payouts = payouts
        self._merchants = merchants

    async def _merchant(self, context: Context) -> Merchant:
        return await self._merchants.by_keys(merchant_keys(context))

    async def _sale(
        self,
        request: wallet_pb2.AuthorizePaymentRequest | wallet_pb2.CapturePaymentRequest,
        context: Context,
        check: Violations,
        *,
        authorization_id: uuid.UUID | None = None,
    ) -> Sale:
        """A register's request and the merchant that sent it."""
        amount = convert.amount(check, request)
        check.raise_if_any()
        merchant = await self._merchant(context)
        return Sale(
            merchant=merchant,
            store=await self._merchants.store_of(merchant, uuid.UUID(request.store_id)),
            amount=amount,
            idempotency_key=request.idempotency_key,
            code=request.code,
            authorization_id=authorization_id,
            authorization_field=getattr(request, "authorization_id", ""),
            basket=tuple(request.basket_categories),
        )

    # ---- the payer's wallet -------------------------------------------------------

    async def Enroll(
        self, request: wallet_pb2.EnrollRequest, context: Context
    ) -> wallet_pb2.EnrollResponse:
        claims = payer_claims()
        check = Violations()
        if request.HasField("client"):
            check.client("client", request.client, required=False)
        check.raise_if_any()
        wallet = await self._wallets.enroll(claims)
        return wallet_pb2.EnrollResponse(wallet=convert.wallet_pb(wallet))

    async def GetBalance(
        self, request: wallet_pb2.GetBalanceRequest, context: Context
    ) -> wallet_pb2.GetBalanceResponse:
        wallet, room = await self._wallets.balance(payer_claims())
        return wallet_pb2.GetBalanceResponse(
            wallet=convert.wallet_pb(wallet), limits=convert.limits_pb(room)
        )

    async def ListTransactions(
        self, request: wallet_pb2.ListTransactionsRequest, context: Context
    ) -> wallet_pb2.ListTransactionsResponse:
        claims = payer_claims()
        check = Violations()
        size = convert.page_size(request.page)
        raw = convert.page_after(request.page.page_token)
        after = None
        if raw is not None:
            check.require(raw.isdigit(), "page.page_token", "is not a token from a previous page")
            after = int(raw) if raw.isdigit() else None
        check.raise_if_any()
        lines, more = await self._wallets.history(claims, limit=size, after=after)
        return wallet_pb2.ListTransactionsResponse(
            transactions=[convert.transaction_pb(line) for line in lines],
            next_page_token=convert.next_page(more),
        )

    # ---- funding sources and top-ups ----------------------------------------------

    async def RegisterFundingSource(
        self, request: wallet_pb2.RegisterFundingSourceRequest, context: Context
    ) -> wallet_pb2.RegisterFundingSourceResponse:
        claims = payer_claims()
        check = Violations()
        convert.not_blank(check, request, "processor_token", "three_ds_transaction_id")
        check.raise_if_any()
        source = await self._top_ups.register_source(
            claims, request.processor_token, request.three_ds_transaction_id
        )
        return wallet_pb2.RegisterFundingSourceResponse(funding_source=convert.source_pb(source))

    async def ListFundingSources(
        self, request: wallet_pb2.ListFundingSourcesRequest, context: Context
    ) -> wallet_pb2.ListFundingSourcesResponse:
        sources = await self._top_ups.sources(payer_claims())
        return wallet_pb2.ListFundingSourcesResponse(
            funding_sources=[convert.source_pb(source) for source in sources]
        )

    async def RemoveFundingSource(
        self, request: wallet_pb2.RemoveFundingSourceRequest, context: Context
    ) -> wallet_pb2.RemoveFundingSourceResponse:
        claims = payer_claims()
        await self._top_ups.remove_source(claims, uuid.UUID(request.funding_source_id))
        return wallet_pb2.RemoveFundingSourceResponse()

    async def TopUpFromCard(
        self, request: wallet_pb2.TopUpFromCardRequest, context: Context
    ) -> wallet_pb2.TopUpFromCardResponse:
        result = await self._top_ups.from_card(
            _top_up_request(request, uuid.UUID(request.funding_source_id))
        )
        return wallet_pb2.TopUpFromCardResponse(top_up=convert.top_up_pb(result))

    async def TopUpFromPoints(
        self, request: wallet_pb2.TopUpFromPointsRequest, context: Context
    ) -> wallet_pb2.TopUpFromPointsResponse:
        result = await self._top_ups.from_points(_top_up_request(request))
        return wallet_pb2.TopUpFromPointsResponse(top_up=convert.top_up_pb(result))

    async def IssueCashTopUpCode(
        self, request: wallet_pb2.IssueCashTopUpCodeRequest, context: Context
    ) -> wallet_pb2.IssueCashTopUpCodeResponse:
        claims = payer_claims()
        check = Violations()
        if request.HasField("client"):
            check.client("client", request.client, required=False)
        check.raise_if_any()
        code, expires_at = await self._top_ups.issue_cash_code(
            claims, convert.channel_name(request.channel)
        )
        return wallet_pb2.IssueCashTopUpCodeResponse(code=code, expires_at=timestamp(expires_at))

    async def AcceptCashTopUp(
        self, request: wallet_pb2.AcceptCashTopUpRequest, context: Context
    ) -> wallet_pb2.AcceptCashTopUpResponse:
        check = Violations()
        amount = convert.amount(check, request)
        check.raise_if_any()
        merchant = await self._merchant(context)
        shop = await self._merchants.store_of(merchant, uuid.UUID(request.store_id))
        result = await self._top_ups.accept_cash(
            code=request.code, amount=amount, store=shop, idempotency_key=request.idempotency_key
        )
        return wallet_pb2.AcceptCashTopUpResponse(top_up=convert.top_up_pb(result))

    # ---- paying in a store --------------------------------------------------------

    async def IssuePaymentCode(
        self, request: wallet_pb2.IssuePaymentCodeRequest, context: Context
    ) -> wallet_pb2.IssuePaymentCodeResponse:
        claims = payer_claims()
        check = Violations()
        check.client("client", request.client if request.HasField("client") else None)
        check.raise_if_any()
        code, expires_at = await self._payments.issue_code(claims)
        return wallet_pb2.IssuePaymentCodeResponse(code=code, expires_at=timestamp(expires_at))

    async def AuthorizePayment(
        self, request: wallet_pb2.AuthorizePaymentRequest, context: Context
    ) -> wallet_pb2.AuthorizePaymentResponse:
        sale = await self._sale(request, context, Violations())
        result = await self._payments.authorize(sale)
        return wallet_pb2.AuthorizePaymentResponse(payment=convert.payment_pb(result))

    async def CapturePayment(
        self, request: wallet_pb2.CapturePaymentRequest, context: Context
    ) -> wallet_pb2.CapturePaymentResponse:
        authorization_id = None
        if request.WhichOneof("source") == "authorization_id":
            authorization_id = uuid.UUID(request.authorization_id)
        sale = await self._sale(request, context, Violations(), authorization_id=authorization_id)
        result = await self._payments.capture(sale)
        return wallet_pb2.CapturePaymentResponse(payment=convert.payment_pb(result))

    async def VoidAuthorization(
        self, request: wallet_pb2.VoidAuthorizationRequest, context: Context
    ) -> wallet_pb2.VoidAuthorizationResponse:
        await self._payments.void(
            await self._merchant(context), uuid.UUID(request.authorization_id)
        )
        return wallet_pb2.VoidAuthorizationResponse()

    async def RefundPayment(
        self, request: wallet_pb2.RefundPaymentRequest, context: Context
    ) -> wallet_pb2.RefundPaymentResponse:
        check = Violations()
        amount = convert.amount(check, request)
        check.raise_if_any()
        # Only an operator refunds across merchants; a store system refunds its own payments.
        merchant_id = None if current_caller() == "operator" else (await self._merchant(context)).id
        result = await self._refunds.refund(
            payment_id=uuid.UUID(request.payment_movement_id),
            amount=amount,
            merchant_id=merchant_id,
            idempotency_key=request.idempotency_key,
        )
        return wallet_pb2.RefundPaymentResponse(
            movement_id=result["movement_id"], payment=convert.payment_pb(result["payment"])
        )

    # ---- merchants ----------------------------------------------------------------

    async def RegisterMerchant(
        self, request: wallet_pb2.RegisterMerchantRequest, context: Context
    ) -> wallet_pb2.RegisterMerchantResponse:
        check = Violations()
        convert.not_blank(check, request, "name")
        check.raise_if_any()
        merchant, key = await self._merchants.register_merchant(request.name, request.category)
        return wallet_pb2.RegisterMerchantResponse(
            merchant=convert.merchant_pb(merchant), merchant_key=key
        )

    async def RegisterStore(
        self, request: wallet_pb2.RegisterStoreRequest, context: Context
    ) -> wallet_pb2.RegisterStoreResponse:
        check = Violations()
        convert.not_blank(check, request, "store_code", "name")
        check.raise_if_any()
        store_id = await self._merchants.register_store(
            uuid.UUID(request.merchant_id), request.store_code, request.name
        )
        return wallet_pb2.RegisterStoreResponse(store_id=str(store_id))

    # ---- protecting the person ----------------------------------------------------

    async def ReportUnauthorized(
        self, request: wallet_pb2.ReportUnauthorizedRequest, context: Context
    ) -> wallet_pb2.ReportUnauthorizedResponse:
        claims = payer_claims()
        case_id, wallet = await self._wallets.report_unauthorized(
            claims,
            movement_id=request.movement_id,
            description=request.description,
            idempotency_key=request.idempotency_key,
        )
        return wallet_pb2.ReportUnauthorizedResponse(
            case_id=case_id, wallet=convert.wallet_pb(wallet)
        )

    async def _set_status(
        self,
        request: wallet_pb2.FreezeWalletRequest | wallet_pb2.UnfreezeWalletRequest,
        status: str,
    ) -> wallet_pb2.Wallet:
        check = Violations()
        convert.not_blank(check, request, "reason")
        check.raise_if_any()
        wallet_id = uuid.UUID(request.wallet_id)
        return convert.wallet_pb(await self._wallets.set_status(wallet_id, status, request.reason))

    async def FreezeWallet(
        self, request: wallet_pb2.FreezeWalletRequest, context: Context
    ) -> wallet_pb2.FreezeWalletResponse:
        wallet = await self._set_status(request, "frozen")
        return wallet_pb2.FreezeWalletResponse(wallet=wallet)

    async def UnfreezeWallet(
        self, request: wallet_pb2.UnfreezeWalletRequest, context: Context
    ) -> wallet_pb2.UnfreezeWalletResponse:
        wallet = await self._set_status(request, "active")
        return wallet_pb2.UnfreezeWalletResponse(wallet=wallet)

    async def CompensateCase(
        self, request: wallet_pb2.CompensateCaseRequest, context: Context
    ) -> wallet_pb2.CompensateCaseResponse:
        check = Violations()
        convert.not_blank(check, request, "reason")
        check.raise_if_any()
        run = await self._refunds.compensate_case(uuid.UUID(request.case_id), request.reason)
        return convert.compensation_pb(run)

    async def Reconcile(
        self, request: wallet_pb2.ReconcileRequest, context: Context
    ) -> wallet_pb2.ReconcileResponse:
        return convert.reconcile_pb(await self._wallets.reconcile())

    # ---- wind-down ----------------------------------------------------------------

    async def NotifyBalanceHolders(
        self, request: wallet_pb2.NotifyBalanceHoldersRequest, context: Context
    ) -> wallet_pb2.NotifyBalanceHoldersResponse:
        deadline = request.claim_deadline.ToDatetime(tzinfo=UTC).date()
        notified = await self._payouts.notify_balance_holders(deadline)
        return wallet_pb2.NotifyBalanceHoldersResponse(notified=notified)

    async def RegisterPayoutAccount(
        self, request: wallet_pb2.RegisterPayoutAccountRequest, context: Context
    ) -> wallet_pb2.RegisterPayoutAccountResponse:
        claims = payer_claims()
        await self._payouts.register_account(
            claims,
            bank_code=request.bank_code,
            branch_code=request.branch_code,
            account_number=request.account_number,
            holder_name=request.holder_name,
        )
        return wallet_pb2.RegisterPayoutAccountResponse()

    async def ClaimPayout(
        self, request: wallet_pb2.ClaimPayoutRequest, context: Context
    ) -> wallet_pb2.ClaimPayoutResponse:
        claims = payer_claims()
        result = await self._payouts.claim(claims, request.idempotency_key)
        return wallet_pb2.ClaimPayoutResponse(
            movement_id=result["movement_id"], amount=jpy(int(result["amount"]))
        )

    async def ListUnclaimedBalances(
        self, request: wallet_pb2.ListUnclaimedBalancesRequest, context: Context
    ) -> wallet_pb2.ListUnclaimedBalancesResponse:
        check = Violations()
        size = convert.page_size(request.page)
        raw = convert.page_after(request.page.page_token)
        after = None if raw is None else check.uuid("page.page_token", raw)
        check.raise_if_any()
        page, total, count, more = await self._payouts.unclaimed(limit=size, after=after)
        return wallet_pb2.ListUnclaimedBalancesResponse(
            balances=[convert.unclaimed_pb(row) for row in page],
            total=jpy(total),
            wallet_count=count,
            next_page_token=convert.next_page(more),
        )

    async def CloseWallet(
        self, request: wallet_pb2.CloseWalletRequest, context: Context
    ) -> wallet_pb2.CloseWalletResponse:
        check = Violations()
        convert.not_blank(check, request, "payer_id")
        check.raise_if_any()
        await self._wallets.close(request.payer_id)
        return wallet_pb2.CloseWalletResponse()


def _top_up_request(
    request: wallet_pb2.TopUpFromCardRequest | wallet_pb2.TopUpFromPointsRequest,
    funding_source_id: uuid.UUID | None = None,
) -> TopUpRequest:
    claims = payer_claims()
    check = Violations()
    amount = convert.amount(check, request)
    if request.HasField("client"):
        check.client("client", request.client, required=False)
    check.raise_if_any()
    return TopUpRequest(
        payer=claims,
        amount=amount,
        idempotency_key=request.idempotency_key,
        funding_source_id=funding_source_id,
        client=request.client,
    )
