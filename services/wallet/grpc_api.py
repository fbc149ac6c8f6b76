"""The wallet's gRPC handlers: validate, call the ledger or a use case, answer in proto."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeAlias, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.runtime.access import current_caller, current_claims
from services.runtime.errors import (
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from services.runtime.tokens import TokenClaims
from services.runtime.validation import Violations
from services.wallet.app import card_top_up, compensate_movements, points_top_up
from services.wallet.domain.codes import fingerprint, is_numeric_code
from services.wallet.points import PointsProgram
from services.wallet.processor import CardProcessor, ProcessorDeclined, ProcessorUnavailable
from services.wallet.risk_gate import CHANNEL_NAMES, CHANNELS_BY_NAME, RiskGate, jpy
from services.wallet.settings import WalletSettings
from services.wallet.storage import (
    Merchant,
    StoreRow,
    WalletRow,
    WalletStore,
    decode_page_token,
    encode_page_token,
)

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

WALLET_AUDIENCE = "wallet"
MERCHANT_KEY_HEADER = "x-merchant-key"
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
_MCC = re.compile(r"^[0-9]{4}$")
_KATAKANA_NAME = re.compile(r"^[\u30A0-\u30FF\u3000 ]{1,100}$")
# Merchants and stores are never re-keyed, renamed or removed, and every store RPC
# looks both up: remembering them takes two database round trips off each capture
# (the hot merchant's path). A chain's stores each see a sale only every few minutes,
# so they are kept for an hour. Unknown keys and stores are never remembered.
LOOKUP_SECONDS = 3600.0
LOOKUP_ENTRIES = 100_000

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


def payer_claims() -> TokenClaims:
    """The verified wallet token of the person calling.

    The access rule admits group tokens too, so that a valid group-ID session
    gets a clear PERMISSION_DENIED here rather than looking like a bad token.
    """
    claims = current_claims()
    if claims is None:
        raise Unauthenticated("TOKEN_REQUIRED", "a wallet access token is required")
    if claims.audience != WALLET_AUDIENCE:
        raise PermissionDenied(
            "WALLET_AUDIENCE_REQUIRED",
            "the group ID cannot move money; exchange it for a wallet token after step-up",
        )
    if claims.assurance_level < 2:
        raise PermissionDenied("ASSURANCE_LEVEL_TOO_LOW", "a second factor is required")
    # Identity names the device key in a wallet token only after the request for it
    # proved that key and the key was registered to the account.
    if not claims.device_key:
        raise PermissionDenied("REGISTERED_DEVICE_REQUIRED", "use a registered device")
    return claims


def require_recent_auth(claims: TokenClaims, max_age_seconds: int) -> None:
    if datetime.now(UTC) - claims.auth_time > timedelta(seconds=max_age_seconds):
        raise FailedPrecondition(
            "STEP_UP_REQUIRED",
            "confirm it is you, then try again",
            metadata={"max_auth_age_seconds": str(max_age_seconds)},
        )


def _ts(value: datetime | str | None) -> Timestamp | None:
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _wallet_pb(row: WalletRow) -> wallet_pb2.Wallet:
    return wallet_pb2.Wallet(
        wallet_id=str(row.id),
        status=_STATUS[row.status],
        balance=jpy(row.balance),
        created_at=_ts(row.created_at),
        frozen_reason=row.frozen_reason,
    )


def _top_up_pb(result: dict[str, Any]) -> wallet_pb2.TopUp:
    return wallet_pb2.TopUp(
        movement_id=result["movement_id"],
        amount=jpy(int(result["amount"])),
        balance_after=jpy(int(result["balance_after"])),
        channel=CHANNELS_BY_NAME[result["channel"]],
        occurred_at=_ts(result["occurred_at"]),
    )


def _payment_pb(result: dict[str, Any]) -> wallet_pb2.Payment:
    return wallet_pb2.Payment(
        movement_id=result["movement_id"],
        authorization_id=result["authorization_id"],
        amount=jpy(int(result["amount"])),
        merchant_id=result["merchant_id"],
        store_id=result["store_id"],
        occurred_at=_ts(result["occurred_at"]),
        hold_expires_at=_ts(result["hold_expires_at"]),
        refunded=jpy(int(result["refunded"])),
    )


def _page_size(check: Violations, page: common_pb2.PageRequest) -> int:
    size = page.page_size or 50
    check.require(0 < size <= 500, "page.page_size", "must be between 0 and 500")
    return min(max(size, 1), 500)


def _money(check: Violations, request: Any, field: str) -> int:
    return check.money(field, getattr(request, field) if request.HasField(field) else None)


class WalletServicer(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(
        self,
        store: WalletStore,
        processor: CardProcessor,
        points: PointsProgram,
        risk: RiskGate,
        settings: WalletSettings,
    ) -> None:
        self._store = store
        self._processor = processor
        self._points = points
        self._risk = risk
        self._settings = settings
        self._merchants: RecentLookups[bytes, Merchant] = RecentLookups()
        self._stores: RecentLookups[tuple[uuid.UUID, uuid.UUID], StoreRow] = RecentLookups()

    async def _store_of(self, merchant: Merchant, store_id: uuid.UUID) -> StoreRow:
        shop = self._stores.get((merchant.id, store_id))
        if shop is None:
            shop = await self._store.store_of(merchant.id, store_id)
            self._stores.put((merchant.id, store_id), shop)
        return shop

    async def _merchant(self, context: Context) -> Merchant:
        keys = [
            value
            for key, value in (context.invocation_metadata() or ())
            if key.lower() == MERCHANT_KEY_HEADER
        ]
        merchant = None
        if len(keys) == 1:
            key = keys[0].decode() if isinstance(keys[0], bytes) else str(keys[0])
            # Kept under a digest of the key, so the secret itself is not held on to.
            digest = hashlib.sha256(key.encode()).digest()
            merchant = self._merchants.get(digest)
            if merchant is None:
                merchant = await self._store.merchant_by_key(key)
                if merchant is not None:
                    self._merchants.put(digest, merchant)
        if merchant is None:
            raise Unauthenticated("MERCHANT_KEY_INVALID", f"send a valid {MERCHANT_KEY_HEADER}")
        return merchant

    # ---- the payer's wallet -------------------------------------------------------

    async def Enroll(
        self, request: wallet_pb2.EnrollRequest, context: Context
    ) -> wallet_pb2.EnrollResponse:
        claims = payer_claims()
        check = Violations()
        if request.HasField("client"):
            check.client("client", request.client, required=False)
        check.raise_if_any()
        require_recent_auth(claims, self._settings.enroll_max_auth_age_seconds)
        wallet = await self._store.enroll(claims.subject)
        return wallet_pb2.EnrollResponse(wallet=_wallet_pb(wallet))

    async def GetBalance(
        self, request: wallet_pb2.GetBalanceRequest, context: Context
    ) -> wallet_pb2.GetBalanceResponse:
        wallet = await self._store.wallet_of(payer_claims().subject)
        room = await self._store.room(wallet.id)
        return wallet_pb2.GetBalanceResponse(
            wallet=_wallet_pb(wallet),
            limits=wallet_pb2.LimitsRemaining(
                per_top_up=jpy(room.per_top_up),
                day_amount=jpy(room.day_amount),
                day_count=room.day_count,
                month_amount=jpy(room.month_amount),
                balance_room=jpy(room.balance_room),
            ),
        )

    async def ListTransactions(
        self, request: wallet_pb2.ListTransactionsRequest, context: Context
    ) -> wallet_pb2.ListTransactionsResponse:
        claims = payer_claims()
        check = Violations()
        size = _page_size(check, request.page)
        after = None
        if request.page.page_token:
            (raw,) = decode_page_token(request.page.page_token, "page.page_token", 1)
            check.require(raw.isdigit(), "page.page_token", "is not a token from a previous page")
            after = int(raw) if raw.isdigit() else None
        check.raise_if_any()
        wallet = await self._store.wallet_of(claims.subject)
        lines, more = await self._store.statement(wallet.id, limit=size, after=after)
        return wallet_pb2.ListTransactionsResponse(
            transactions=[
                wallet_pb2.Transaction(
                    movement_id=str(line.movement_id),
                    kind=_KIND[line.kind],
                    amount=jpy(line.amount),
                    balance_after=jpy(line.balance_after),
                    counterparty=line.counterparty,
                    occurred_at=_ts(line.occurred_at),
                    related_movement_id=str(line.related_movement_id or ""),
                )
                for line in lines
            ],
            next_page_token="" if more is None else encode_page_token(str(more)),
        )

    # ---- funding sources and top-ups ----------------------------------------------

    async def RegisterFundingSource(
        self, request: wallet_pb2.RegisterFundingSourceRequest, context: Context
    ) -> wallet_pb2.RegisterFundingSourceResponse:
        claims = payer_claims()
        check = Violations()
        check.text(
            "processor_token",
            request.processor_token,
            max_length=256,
            required=True,
            single_line=True,
        )
        check.text(
            "three_ds_transaction_id",
            request.three_ds_transaction_id,
            max_length=256,
            required=True,
            single_line=True,
        )
        check.raise_if_any()
        wallet = await self._store.wallet_of(claims.subject)
        try:
            card = await self._processor.verify_card(
                request.processor_token, request.three_ds_transaction_id
            )
        except ProcessorDeclined as declined:
            raise FailedPrecondition(
                "CARD_NOT_VERIFIED",
                "the card did not pass 3-D Secure",
                metadata={"processor": declined.reason},
            ) from None
        except ProcessorUnavailable:
            raise Unavailable("PROCESSOR_UNAVAILABLE", "retry later") from None
        source = await self._store.add_funding_source(
            wallet.id, request.processor_token, card.brand, card.last4
        )
        return wallet_pb2.RegisterFundingSourceResponse(funding_source=_source_pb(source))

    async def ListFundingSources(
        self, request: wallet_pb2.ListFundingSourcesRequest, context: Context
    ) -> wallet_pb2.ListFundingSourcesResponse:
        wallet = await self._store.wallet_of(payer_claims().subject)
        sources = await self._store.funding_sources(wallet.id)
        return wallet_pb2.ListFundingSourcesResponse(
            funding_sources=[_source_pb(source) for source in sources]
        )

    async def RemoveFundingSource(
        self, request: wallet_pb2.RemoveFundingSourceRequest, context: Context
    ) -> wallet_pb2.RemoveFundingSourceResponse:
        claims = payer_claims()
        check = Violations()
        source_id = check.uuid("funding_source_id", request.funding_source_id)
        check.raise_if_any()
        assert source_id is not None
        wallet = await self._store.wallet_of(claims.subject)
        await self._store.remove_funding_source(wallet.id, source_id)
        return wallet_pb2.RemoveFundingSourceResponse()

    async def TopUpFromCard(
        self, request: wallet_pb2.TopUpFromCardRequest, context: Context
    ) -> wallet_pb2.TopUpFromCardResponse:
        claims = payer_claims()
        check = Violations()
        source_id = check.uuid("funding_source_id", request.funding_source_id)
        amount = _money(check, request, "amount")
        check.idempotency_key("idempotency_key", request.idempotency_key)
        if request.HasField("client"):
            check.client("client", request.client, required=False)
        check.raise_if_any()
        assert source_id is not None
        wallet = await self._store.wallet_of(claims.subject)
        request_hash = fingerprint({"funding_source_id": str(source_id), "amount": amount})
        replayed = await self._store.replay(
            f"top_up:{wallet.id}", request.idempotency_key, request_hash
        )
        if replayed is not None:
            return wallet_pb2.TopUpFromCardResponse(top_up=_top_up_pb(replayed))
        source = await self._store.funding_source(wallet.id, source_id)
        if source.new_source:
            require_recent_auth(claims, self._settings.new_source_max_auth_age_seconds)
        self._risk.require_top_ups_open(risk_pb2.TOP_UP_CHANNEL_CARD)
        decision_id = await self._risk.assess_top_up(
            risk_pb2.AssessTopUpRequest(
                wallet_id=str(wallet.id),
                payer_id=claims.subject,
                amount=jpy(amount),
                channel=risk_pb2.TOP_UP_CHANNEL_CARD,
                funding_source_id=str(source.id),
                new_funding_source=source.new_source,
                session_id=claims.session_id,
                client=request.client,
            )
        )
        result = await card_top_up(
            self._store,
            self._processor,
            wallet_id=wallet.id,
            funding_source_id=source.id,
            amount=amount,
            session_id=claims.session_id,
            idempotency_key=request.idempotency_key,
            request_hash=request_hash,
            decision_id=decision_id,
        )
        return wallet_pb2.TopUpFromCardResponse(top_up=_top_up_pb(result))

    async def TopUpFromPoints(
        self, request: wallet_pb2.TopUpFromPointsRequest, context: Context
    ) -> wallet_pb2.TopUpFromPointsResponse:
        claims = payer_claims()
        check = Violations()
        amount = _money(check, request, "amount")
        check.idempotency_key("idempotency_key", request.idempotency_key)
        if request.HasField("client"):
            check.client("client", request.client, required=False)
        check.raise_if_any()
        wallet = await self._store.wallet_of(claims.subject)
        request_hash = fingerprint({"points": amount})
        replayed = await self._store.replay(
            f"top_up:{wallet.id}", request.idempotency_key, request_hash
        )
        if replayed is not None:
            return wallet_pb2.TopUpFromPointsResponse(top_up=_top_up_pb(replayed))
        self._risk.require_top_ups_open(risk_pb2.TOP_UP_CHANNEL_POINTS)
        decision_id = await self._risk.assess_top_up(
            risk_pb2.AssessTopUpRequest(
                wallet_id=str(wallet.id),
                payer_id=claims.subject,
                amount=jpy(amount),
                channel=risk_pb2.TOP_UP_CHANNEL_POINTS,
                session_id=claims.session_id,
                client=request.client,
            )
        )
        result = await points_top_up(
            self._store,
            self._points,
            wallet_id=wallet.id,
            amount=amount,
            session_id=claims.session_id,
            idempotency_key=request.idempotency_key,
            request_hash=request_hash,
            decision_id=decision_id,
        )
        return wallet_pb2.TopUpFromPointsResponse(top_up=_top_up_pb(result))

    async def IssueCashTopUpCode(
        self, request: wallet_pb2.IssueCashTopUpCodeRequest, context: Context
    ) -> wallet_pb2.IssueCashTopUpCodeResponse:
        claims = payer_claims()
        check = Violations()
        check.require(
            request.channel in (risk_pb2.TOP_UP_CHANNEL_CASH_REGISTER, risk_pb2.TOP_UP_CHANNEL_ATM),
            "channel",
            "must be TOP_UP_CHANNEL_CASH_REGISTER or TOP_UP_CHANNEL_ATM",
        )
        if request.HasField("client"):
            check.client("client", request.client, required=False)
        check.raise_if_any()
        wallet = await self._store.wallet_of(claims.subject)
        self._risk.require_top_ups_open(request.channel)
        code, expires_at = await self._store.issue_code(
            wallet_id=wallet.id,
            purpose="cash_top_up",
            device_id=claims.device_key or "",
            session_id=claims.session_id,
            lifetime=timedelta(seconds=self._settings.cash_code_seconds),
            channel=CHANNEL_NAMES[request.channel],
        )
        return wallet_pb2.IssueCashTopUpCodeResponse(code=code, expires_at=_ts(expires_at))

    async def AcceptCashTopUp(
        self, request: wallet_pb2.AcceptCashTopUpRequest, context: Context
    ) -> wallet_pb2.AcceptCashTopUpResponse:
        check = Violations()
        check.require(is_numeric_code(request.code), "code", "must be a 20-digit code")
        amount = _money(check, request, "amount")
        store_id = check.uuid("store_id", request.store_id)
        check.idempotency_key("idempotency_key", request.idempotency_key)
        check.raise_if_any()
        assert store_id is not None
        merchant = await self._merchant(context)
        shop = await self._store_of(merchant, store_id)
        request_hash = fingerprint({"code": request.code, "amount": amount, "store": str(shop.id)})
        replayed = await self._store.replay(
            f"cash:{merchant.id}", request.idempotency_key, request_hash
        )
        if replayed is not None:
            return wallet_pb2.AcceptCashTopUpResponse(top_up=_top_up_pb(replayed))
        holder = await self._store.code_holder(request.code, "cash_top_up")
        if holder is None:
            raise FailedPrecondition("CODE_INVALID", "the code is unknown, used or expired")
        channel = CHANNELS_BY_NAME[holder.channel or "cash_register"]
        self._risk.require_top_ups_open(channel)
        decision_id = await self._risk.assess_top_up(
            risk_pb2.AssessTopUpRequest(
                wallet_id=str(holder.wallet_id),
                payer_id=holder.payer_id,
                amount=jpy(amount),
                channel=channel,
                session_id=holder.session_id,
            )
        )
        result = await self._store.accept_cash_top_up(
            code=request.code,
            amount=amount,
            store=shop,
            idempotency_key=request.idempotency_key,
            request_hash=request_hash,
            decision_id=decision_id,
        )
        return wallet_pb2.AcceptCashTopUpResponse(top_up=_top_up_pb(result))

    # ---- paying in a store --------------------------------------------------------

    async def IssuePaymentCode(
        self, request: wallet_pb2.IssuePaymentCodeRequest, context: Context
    ) -> wallet_pb2.IssuePaymentCodeResponse:
        claims = payer_claims()
        check = Violations()
        check.client("client", request.client if request.HasField("client") else None)
        check.raise_if_any()
        wallet = await self._store.wallet_of(claims.subject)
        self._risk.require_payments_open()
        # Bound to the token's device key: a device id the client sends proves nothing.
        code, expires_at = await self._store.issue_code(
            wallet_id=wallet.id,
            purpose="payment",
            device_id=claims.device_key or "",
            session_id=claims.session_id,
            lifetime=timedelta(seconds=self._settings.payment_code_seconds),
        )
        return wallet_pb2.IssuePaymentCodeResponse(code=code, expires_at=_ts(expires_at))

    async def _assess_code_payment(
        self,
        code: str,
        amount: int,
        merchant: Merchant,
        store_id: uuid.UUID,
        basket: Any,
    ) -> str:
        holder = await self._store.code_holder(code, "payment")
        if holder is None:
            raise FailedPrecondition("CODE_INVALID", "the code is unknown, used or expired")
        self._risk.require_payments_open()
        return await self._risk.assess_payment(
            risk_pb2.AssessPaymentRequest(
                wallet_id=str(holder.wallet_id),
                payer_id=holder.payer_id,
                amount=jpy(amount),
                merchant_id=str(merchant.id),
                merchant_category=merchant.category,
                store_id=str(store_id),
                basket_categories=list(basket),
                device_id=holder.device_id,
                session_id=holder.session_id,
            )
        )

    @staticmethod
    def _check_basket(check: Violations, basket: Any) -> None:
        for index, category in enumerate(basket):
            check.require(
                category in risk_pb2.GoodsCategory.values()
                and category != risk_pb2.GOODS_CATEGORY_UNSPECIFIED,
                f"basket_categories[{index}]",
                "must be a goods category",
            )

    async def AuthorizePayment(
        self, request: wallet_pb2.AuthorizePaymentRequest, context: Context
    ) -> wallet_pb2.AuthorizePaymentResponse:
        check = Violations()
        check.require(is_numeric_code(request.code), "code", "must be a 20-digit code")
        amount = _money(check, request, "amount")
        store_id = check.uuid("store_id", request.store_id)
        self._check_basket(check, request.basket_categories)
        check.idempotency_key("idempotency_key", request.idempotency_key)
        check.raise_if_any()
        assert store_id is not None
        merchant = await self._merchant(context)
        shop = await self._store_of(merchant, store_id)
        request_hash = fingerprint({"code": request.code, "amount": amount, "store": str(shop.id)})
        replayed = await self._store.replay(
            f"authorize:{merchant.id}", request.idempotency_key, request_hash
        )
        if replayed is not None:
            return wallet_pb2.AuthorizePaymentResponse(payment=_payment_pb(replayed))
        await self._assess_code_payment(
            request.code, amount, merchant, shop.id, request.basket_categories
        )
        result = await self._store.authorize(
            code=request.code,
            amount=amount,
            store=shop,
            hold=timedelta(seconds=self._settings.hold_seconds),
            idempotency_key=request.idempotency_key,
            request_hash=request_hash,
        )
        return wallet_pb2.AuthorizePaymentResponse(payment=_payment_pb(result))

    async def CapturePayment(
        self, request: wallet_pb2.CapturePaymentRequest, context: Context
    ) -> wallet_pb2.CapturePaymentResponse:
        check = Violations()
        source = request.WhichOneof("source")
        authorization_id = None
        if source == "code":
            check.require(is_numeric_code(request.code), "code", "must be a 20-digit code")
        elif source == "authorization_id":
            authorization_id = check.uuid("authorization_id", request.authorization_id)
        else:
            check.add("source", "give a code or an authorization_id")
        amount = _money(check, request, "amount")
        store_id = check.uuid("store_id", request.store_id)
        self._check_basket(check, request.basket_categories)
        check.idempotency_key("idempotency_key", request.idempotency_key)
        check.raise_if_any()
        assert store_id is not None
        merchant = await self._merchant(context)
        shop = await self._store_of(merchant, store_id)
        request_hash = fingerprint(
            {
                "code": request.code,
                "authorization_id": request.authorization_id,
                "amount": amount,
                "store": str(shop.id),
            }
        )
        replayed = await self._store.replay(
            f"capture:{merchant.id}", request.idempotency_key, request_hash
        )
        if replayed is not None:
            return wallet_pb2.CapturePaymentResponse(payment=_payment_pb(replayed))
        if authorization_id is not None:
            # Risk assessed the payment when the money was authorized.
            result = await self._store.capture_authorization(
                authorization_id=authorization_id,
                amount=amount,
                store=shop,
                merchant_name=merchant.name,
                idempotency_key=request.idempotency_key,
                request_hash=request_hash,
            )
        else:
            decision_id = await self._assess_code_payment(
                request.code, amount, merchant, shop.id, request.basket_categories
            )
            result = await self._store.capture_by_code(
                code=request.code,
                amount=amount,
                store=shop,
                merchant_name=merchant.name,
                idempotency_key=request.idempotency_key,
                request_hash=request_hash,
                decision_id=decision_id,
            )
        return wallet_pb2.CapturePaymentResponse(payment=_payment_pb(result))

    async def VoidAuthorization(
        self, request: wallet_pb2.VoidAuthorizationRequest, context: Context
    ) -> wallet_pb2.VoidAuthorizationResponse:
        check = Violations()
        authorization_id = check.uuid("authorization_id", request.authorization_id)
        check.idempotency_key("idempotency_key", request.idempotency_key)
        check.raise_if_any()
        assert authorization_id is not None
        merchant = await self._merchant(context)
        await self._store.void_authorization(authorization_id, merchant.id)
        return wallet_pb2.VoidAuthorizationResponse()

    async def RefundPayment(
        self, request: wallet_pb2.RefundPaymentRequest, context: Context
    ) -> wallet_pb2.RefundPaymentResponse:
        check = Violations()
        payment_id = check.uuid("payment_movement_id", request.payment_movement_id)
        amount = _money(check, request, "amount")
        check.text("reason", request.reason, max_length=1000)
        check.idempotency_key("idempotency_key", request.idempotency_key)
        check.raise_if_any()
        assert payment_id is not None
        # Only an operator refunds across merchants; a store system refunds its own payments.
        merchant_id = None if current_caller() == "operator" else (await self._merchant(context)).id
        result = await self._store.refund(
            payment_id=payment_id,
            amount=amount,
            merchant_id=merchant_id,
            idempotency_key=request.idempotency_key,
            request_hash=fingerprint({"amount": amount}),
        )
        return wallet_pb2.RefundPaymentResponse(
            movement_id=result["movement_id"], payment=_payment_pb(result["payment"])
        )

    # ---- merchants ----------------------------------------------------------------

    async def RegisterMerchant(
        self, request: wallet_pb2.RegisterMerchantRequest, context: Context
    ) -> wallet_pb2.RegisterMerchantResponse:
        check = Violations()
        check.text("name", request.name, max_length=200, required=True, single_line=True)
        check.require(
            bool(_MCC.match(request.category)), "category", "must be a 4-digit ISO 18245 code"
        )
        check.raise_if_any()
        merchant, key = await self._store.register_merchant(request.name, request.category)
        return wallet_pb2.RegisterMerchantResponse(
            merchant=wallet_pb2.Merchant(
                merchant_id=str(merchant.id), name=merchant.name, category=merchant.category
            ),
            merchant_key=key,
        )

    async def RegisterStore(
        self, request: wallet_pb2.RegisterStoreRequest, context: Context
    ) -> wallet_pb2.RegisterStoreResponse:
        check = Violations()
        merchant_id = check.uuid("merchant_id", request.merchant_id)
        check.text("store_code", request.store_code, max_length=64, required=True, single_line=True)
        check.text("name", request.name, max_length=200, required=True, single_line=True)
        check.raise_if_any()
        assert merchant_id is not None
        store_id = await self._store.register_store(merchant_id, request.store_code, request.name)
        return wallet_pb2.RegisterStoreResponse(store_id=str(store_id))

    # ---- protecting the person ----------------------------------------------------

    async def ReportUnauthorized(
        self, request: wallet_pb2.ReportUnauthorizedRequest, context: Context
    ) -> wallet_pb2.ReportUnauthorizedResponse:
        claims = payer_claims()
        check = Violations()
        check.uuid("movement_id", request.movement_id, required=False)
        check.text("description", request.description, max_length=10_000)
        check.idempotency_key("idempotency_key", request.idempotency_key)
        check.raise_if_any()
        wallet = await self._store.wallet_of(claims.subject)
        # Freeze first and on its own: whatever happens to the case, money stops now.
        if wallet.status == "active":
            wallet = await self._store.set_status(
                wallet.id, "frozen", "reported as unauthorized by the holder"
            )
        case_id = await self._risk.open_case(
            wallet_id=str(wallet.id),
            movement_id=request.movement_id,
            description=request.description,
            idempotency_key=f"{wallet.id}:{request.idempotency_key}",
        )
        return wallet_pb2.ReportUnauthorizedResponse(case_id=case_id, wallet=_wallet_pb(wallet))

    async def _set_status(self, wallet_id: str, reason: str, status: str) -> wallet_pb2.Wallet:
        check = Violations()
        parsed = check.uuid("wallet_id", wallet_id)
        check.text("reason", reason, max_length=1000, required=True)
        check.raise_if_any()
        assert parsed is not None
        return _wallet_pb(await self._store.set_status(parsed, status, reason))

    async def FreezeWallet(
        self, request: wallet_pb2.FreezeWalletRequest, context: Context
    ) -> wallet_pb2.FreezeWalletResponse:
        wallet = await self._set_status(request.wallet_id, request.reason, "frozen")
        return wallet_pb2.FreezeWalletResponse(wallet=wallet)

    async def UnfreezeWallet(
        self, request: wallet_pb2.UnfreezeWalletRequest, context: Context
    ) -> wallet_pb2.UnfreezeWalletResponse:
        wallet = await self._set_status(request.wallet_id, request.reason, "active")
        return wallet_pb2.UnfreezeWalletResponse(wallet=wallet)

    async def CompensateCase(
        self, request: wallet_pb2.CompensateCaseRequest, context: Context
    ) -> wallet_pb2.CompensateCaseResponse:
        check = Violations()
        case_id = check.uuid("case_id", request.case_id)
        check.text("reason", request.reason, max_length=1000, required=True)
        check.raise_if_any()
        assert case_id is not None
        movement_ids = []
        for raw in await self._risk.confirmed_movements(str(case_id)):
            try:
                movement_ids.append(uuid.UUID(raw))
            except ValueError:
                continue
        run = await compensate_movements(
            self._store,
            self._processor,
            case_id=case_id,
            movement_ids=movement_ids,
            reason=request.reason,
        )
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

    async def Reconcile(
        self, request: wallet_pb2.ReconcileRequest, context: Context
    ) -> wallet_pb2.ReconcileResponse:
        report = await self._store.reconcile()
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

    # ---- wind-down ----------------------------------------------------------------

    async def NotifyBalanceHolders(
        self, request: wallet_pb2.NotifyBalanceHoldersRequest, context: Context
    ) -> wallet_pb2.NotifyBalanceHoldersResponse:
        check = Violations()
        check.require(request.HasField("claim_deadline"), "claim_deadline", "is required")
        check.raise_if_any()
        if not self._risk.wind_down:
            raise FailedPrecondition("NOT_IN_WIND_DOWN", "risk's policy is not in wind-down")
        deadline = request.claim_deadline.ToDatetime(tzinfo=UTC).date().isoformat()
        notified = await self._store.mark_balance_holders_notified(deadline)
        return wallet_pb2.NotifyBalanceHoldersResponse(notified=notified)

    async def RegisterPayoutAccount(
        self, request: wallet_pb2.RegisterPayoutAccountRequest, context: Context
    ) -> wallet_pb2.RegisterPayoutAccountResponse:
        claims = payer_claims()
        check = Violations()
        for field, digits in (("bank_code", 4), ("branch_code", 3), ("account_number", 7)):
            value = getattr(request, field)
            check.require(
                len(value) == digits and value.isascii() and value.isdigit(),
                field,
                f"must be {digits} digits",
            )
        check.require(
            bool(_KATAKANA_NAME.match(request.holder_name)),
            "holder_name",
            "must be the account holder's name in katakana (at most 100 characters)",
        )
        check.raise_if_any()
        # Where the balance goes is as sensitive as spending it: a stolen session
        # must not redirect the payout.
        require_recent_auth(claims, self._settings.payout_max_auth_age_seconds)
        wallet = await self._store.wallet_of(claims.subject)
        await self._store.register_payout_account(
            wallet.id,
            bank_code=request.bank_code,
            branch_code=request.branch_code,
            account_number=request.account_number,
            holder_name=request.holder_name,
            session_id=claims.session_id,
        )
        return wallet_pb2.RegisterPayoutAccountResponse()

    async def ClaimPayout(
        self, request: wallet_pb2.ClaimPayoutRequest, context: Context
    ) -> wallet_pb2.ClaimPayoutResponse:
        claims = payer_claims()
        check = Violations()
        check.idempotency_key("idempotency_key", request.idempotency_key)
        check.raise_if_any()
        require_recent_auth(claims, self._settings.payout_max_auth_age_seconds)
        wallet = await self._store.wallet_of(claims.subject)
        if not self._risk.wind_down and wallet.status != "closed":
            raise FailedPrecondition(
                "PAYOUTS_NOT_OPEN", "payouts open at wind-down or when the wallet is closed"
            )
        result = await self._store.claim_payout(
            wallet.id, idempotency_key=request.idempotency_key, request_hash="whole-balance"
        )
        return wallet_pb2.ClaimPayoutResponse(
            movement_id=result["movement_id"], amount=jpy(int(result["amount"]))
        )

    async def ListUnclaimedBalances(
        self, request: wallet_pb2.ListUnclaimedBalancesRequest, context: Context
    ) -> wallet_pb2.ListUnclaimedBalancesResponse:
        check = Violations()
        size = _page_size(check, request.page)
        after = None
        if request.page.page_token:
            (raw,) = decode_page_token(request.page.page_token, "page.page_token", 1)
            after = check.uuid("page.page_token", raw)
        check.raise_if_any()
        page, total, count, more = await self._store.unclaimed(limit=size, after=after)
        return wallet_pb2.ListUnclaimedBalancesResponse(
            balances=[
                wallet_pb2.UnclaimedBalance(
                    wallet_id=str(row.wallet_id),
                    balance=jpy(row.balance),
                    notified_at=_ts(row.notified_at),
                )
                for row in page
            ],
            total=jpy(total),
            wallet_count=count,
            next_page_token="" if more is None else encode_page_token(str(more)),
        )

    async def CloseWallet(
        self, request: wallet_pb2.CloseWalletRequest, context: Context
    ) -> wallet_pb2.CloseWalletResponse:
        check = Violations()
        check.text("payer_id", request.payer_id, max_length=128, required=True, single_line=True)
        check.raise_if_any()
        await self._store.close(request.payer_id)
        return wallet_pb2.CloseWalletResponse()


def _source_pb(source: Any) -> wallet_pb2.FundingSource:
    return wallet_pb2.FundingSource(
        funding_source_id=str(source.id),
        brand=source.brand,
        last4=source.last4,
        created_at=_ts(source.created_at),
        new_source=source.new_source,
    )
