"""The JSON bodies of the partner API, with the examples the OpenAPI document shows."""

from __future__ import annotations

from enum import Enum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from services.gateway.clients.wallet import BASKET
from services.gateway.domain.payments import EVENT_TYPES

CODE_PATTERN = r"^[0-9]{20}$"
STORE_EXAMPLE = "6f1c2a4e-8b1d-4c3e-9a57-2d1f0e9b7c11"
CODE_EXAMPLE = "12345678901234567890"

GoodsCategory = Enum(  # type: ignore[misc]
    "GoodsCategory", {name.upper(): name for name in BASKET}, type=str
)
EventType = Enum(  # type: ignore[misc]
    "EventType", {name.replace(".", "_").upper(): name for name in EVENT_TYPES}, type=str
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Money(Strict):
    """An amount in integer minor units (yen have none: 1 = ¥1)."""

    amount_minor: int = Field(gt=0, le=10_000_000, examples=[1200])
    currency: Literal["JPY"] = Field(examples=["JPY"])


class AuthorizeRequest(Strict):
    """Hold an amount against the payment code a person shows at the register."""

    code: str = Field(pattern=CODE_PATTERN, examples=[CODE_EXAMPLE])
    amount: Money
    store_id: UUID = Field(examples=[STORE_EXAMPLE])
    basket_categories: list[GoodsCategory] = Field(
        default_factory=list, max_length=50, examples=[["food"]]
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "code": CODE_EXAMPLE,
                    "amount": {"amount_minor": 1200, "currency": "JPY"},
                    "store_id": STORE_EXAMPLE,
                    "basket_categories": ["food"],
                }
            ]
        },
    )


class CaptureRequest(Strict):
    """Capture by the person's one-time ``code``, or an earlier ``authorization_id``."""

    code: str | None = Field(default=None, pattern=CODE_PATTERN, examples=[CODE_EXAMPLE])
    authorization_id: UUID | None = None
    amount: Money
    store_id: UUID = Field(examples=[STORE_EXAMPLE])
    basket_categories: list[GoodsCategory] = Field(default_factory=list, max_length=50)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "code": CODE_EXAMPLE,
                    "amount": {"amount_minor": 1200, "currency": "JPY"},
                    "store_id": STORE_EXAMPLE,
                    "basket_categories": ["food"],
                }
            ]
        },
    )


class RefundRequest(Strict):
    """Refund part or all of a captured payment."""

    amount: Money
    reason: str = Field(default="", max_length=1000, examples=["returned item"])


class CashTopUpRequest(Strict):
    """Cash received at a register against the person's cash top-up code."""

    code: str = Field(pattern=CODE_PATTERN, examples=[CODE_EXAMPLE])
    amount: Money
    store_id: UUID = Field(examples=[STORE_EXAMPLE])


class Payment(BaseModel):
    """A payment or authorization made through the gateway."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0c5f7d0e-3b8a-4d6e-9f21-6a7b8c9d0e1f",
                    "status": "captured",
                    "merchant_id": "a3e1b2c4-5d6f-4a7b-8c9d-0e1f2a3b4c5d",
                    "store_id": STORE_EXAMPLE,
                    "authorization_id": None,
                    "movement_id": "0c5f7d0e-3b8a-4d6e-9f21-6a7b8c9d0e1f",
                    "amount": {"amount_minor": 1200, "currency": "JPY"},
                    "refunded": {"amount_minor": 0, "currency": "JPY"},
                    "occurred_at": "2026-11-28T09:15:00+00:00",
                    "hold_expires_at": None,
                }
            ]
        }
    )

    id: str = Field(description="the capture's movement ID, or the authorization's ID")
    status: Literal["authorized", "captured", "voided"]
    merchant_id: str
    store_id: str
    authorization_id: str | None
    movement_id: str | None
    amount: Money
    refunded: MoneyOrZero
    occurred_at: str = Field(description="RFC 3339 time")
    hold_expires_at: str | None


class MoneyOrZero(BaseModel):
    """An amount that may be zero."""

    amount_minor: int = Field(ge=0)
    currency: Literal["JPY"]


class Refund(BaseModel):
    id: str = Field(description="the refund's movement ID")
    amount: Money
    payment: Payment


class CashTopUp(BaseModel):
    id: str = Field(description="the top-up's movement ID")
    store_id: str
    amount: Money
    occurred_at: str


class PaymentPage(BaseModel):
    payments: list[Payment]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class Merchant(BaseModel):
    id: str
    name: str


class MerchantList(BaseModel):
    merchants: list[Merchant]


class Store(BaseModel):
    id: str
    merchant_id: str
    store_code: str
    name: str


class StoreList(BaseModel):
    stores: list[Store]


class SubscriptionRequest(Strict):
    """Where to post which events."""

    url: str = Field(
        max_length=2000,
        description="https on port 443, at a name that resolves to public addresses only",
        examples=["https://partner.example/hooks/mamoru"],
    )
    events: list[EventType] = Field(
        min_length=1, max_length=len(EVENT_TYPES), examples=[["payment.captured"]]
    )


class Subscription(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: str


class SubscriptionCreated(Subscription):
    secret: str = Field(description="the signing secret; shown only once")


class SubscriptionList(BaseModel):
    subscriptions: list[Subscription]


class Delivery(BaseModel):
    """One event sent to one subscription, with the outcome of its last attempt."""

    id: str
    subscription_id: str
    event_id: str
    event_type: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None
    last_error: str
    created_at: str | None
    last_attempt_at: str | None
    delivered_at: str | None


class DeliveryList(BaseModel):
    deliveries: list[Delivery]


class Problem(BaseModel):
    """An RFC 9457 problem: ``reason`` is stable for programs, ``detail`` is for people."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Unprocessable Content",
                    "status": 422,
                    "detail": "the code is unknown, used or expired",
                    "reason": "CODE_INVALID",
                    "field": "code",
                    "instance": "/v1/payments",
                }
            ]
        }
    )

    type: str = Field(default="about:blank")
    title: str
    status: int
    detail: str
    reason: str = Field(examples=["SCOPE_REQUIRED"])
    field: str | None = Field(default=None, description="the offending input, when one is")
    instance: str | None = None


class TokenResponse(BaseModel):
    """RFC 6749 §5.1; the token is a JWT to send as ``Authorization: Bearer``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9...",
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "scope": "payments:capture payments:refund",
                }
            ]
        }
    )

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str | None = None


class OAuthError(BaseModel):
    """RFC 6749 §5.2."""

    error: str = Field(examples=["invalid_client"])
    error_description: str | None = None


class ServerMetadata(BaseModel):
    """RFC 8414 authorization server metadata."""

    issuer: str
    token_endpoint: str
    grant_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    token_endpoint_auth_signing_alg_values_supported: list[str]
    scopes_supported: list[str]
    response_types_supported: list[str]
    service_documentation: str


Payment.model_rebuild()
