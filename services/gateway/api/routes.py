"""The /v1 resources: thin handlers from JSON to a use case and back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from services.gateway.api import schemas
from services.gateway.api.problems import stored_problem
from services.gateway.api.security import require, uuid_or_404
from services.gateway.domain.errors import invalid
from services.gateway.domain.idempotency import KEY_PATTERN
from services.gateway.domain.partners import Partner
from services.gateway.use_cases.payments import Outcome, Payments
from services.gateway.use_cases.webhooks import Webhooks

router = APIRouter(prefix="/v1")

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN.pattern,
        description="Same key and body: the first answer again. Same key, other body: 409.",
        examples=["order-4711-capture"],
    ),
]
_COMMON = (400, 401, 403, 411, 413, 422, 429, 503)
_MUTATING = (*_COMMON, 404, 409)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": schemas.Problem} for status in statuses}


def _payments(request: Request) -> Payments:
    payments: Payments = request.app.state.payments
    return payments


def _webhooks(request: Request) -> Webhooks:
    webhooks: Webhooks = request.app.state.webhooks
    return webhooks


def _answer(outcome: Outcome) -> Response:
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    if outcome.status >= 400:
        response = stored_problem(outcome.status, outcome.body)
        response.headers.update(headers)
        return response
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)


@router.post(
    "/authorizations",
    status_code=201,
    response_model=schemas.Payment,
    responses=problems(*_MUTATING),
    summary="Hold an amount against a person's payment code",
    tags=["payments"],
)
async def authorize(
    body: schemas.AuthorizeRequest,
    key: IdempotencyKey,
    request: Request,
    partner: Partner = Depends(require("payments:authorize")),  # noqa: B008
) -> Response:
    outcome = await _payments(request).authorize(partner, key, body.model_dump(mode="json"))
    return _answer(outcome)


@router.post(
    "/payments",
    status_code=201,
    response_model=schemas.Payment,
    responses=problems(*_MUTATING),
    summary="Capture a payment by the person's one-time code or an authorization",
    tags=["payments"],
)
async def capture(
    body: schemas.CaptureRequest,
    key: IdempotencyKey,
    request: Request,
    partner: Partner = Depends(require("payments:capture")),  # noqa: B008
) -> Response:
    if (body.code is None) == (body.authorization_id is None):
        raise invalid("code", "give exactly one of code and authorization_id")
    outcome = await _payments(request).capture(
        partner, key, body.model_dump(mode="json", exclude_none=True)
    )
    return _answer(outcome)


@router.get(
    "/payments/{payment_id}",
    response_model=schemas.Payment,
    responses=problems(*_COMMON, 404),
    summary="Read a payment made through the gateway",
    tags=["payments"],
)
async def read_payment(
    payment_id: str,
    request: Request,
    partner: Partner = Depends(require("payments:read")),  # noqa: B008
) -> dict[str, Any]:
    return await _payments(request).get(partner, payment_id)


@router.post(
    "/payments/{payment_id}/void",
    response_model=schemas.Payment,
    responses=problems(*_MUTATING),
    summary="Release an authorization",
    tags=["payments"],
)
async def void(
    payment_id: str,
    key: IdempotencyKey,
    request: Request,
    partner: Partner = Depends(require("payments:void")),  # noqa: B008
) -> Response:
    return _answer(await _payments(request).void(partner, key, payment_id))


@router.post(
    "/payments/{payment_id}/refunds",
    status_code=201,
    response_model=schemas.Refund,
    responses=problems(*_MUTATING),
    summary="Refund part or all of a captured payment",
    tags=["payments"],
)
async def refund(
    payment_id: str,
    body: schemas.RefundRequest,
    key: IdempotencyKey,
    request: Request,
    partner: Partner = Depends(require("payments:refund")),  # noqa: B008
) -> Response:
    outcome = await _payments(request).refund(
        partner, key, payment_id, body.model_dump(mode="json")
    )
    return _answer(outcome)


@router.post(
    "/cash-top-ups",
    status_code=201,
    response_model=schemas.CashTopUp,
    responses=problems(*_MUTATING),
    summary="Accept cash at a register against a person's cash top-up code",
    tags=["top-ups"],
)
async def cash_top_up(
    body: schemas.CashTopUpRequest,
    key: IdempotencyKey,
    request: Request,
    partner: Partner = Depends(require("topups:cash")),  # noqa: B008
) -> Response:
    outcome = await _payments(request).accept_cash(partner, key, body.model_dump(mode="json"))
    return _answer(outcome)


@router.get(
    "/merchants",
    response_model=schemas.MerchantList,
    responses=problems(*_COMMON),
    summary="The merchants this partner acts for",
    tags=["merchants"],
)
async def merchants(
    request: Request,
    partner: Partner = Depends(require("merchants:read")),  # noqa: B008
) -> dict[str, Any]:
    return {"merchants": await _payments(request).merchants(partner)}


@router.get(
    "/merchants/{merchant_id}/stores",
    response_model=schemas.StoreList,
    responses=problems(*_COMMON, 404),
    summary="The stores of a merchant that this partner acts for",
    tags=["merchants"],
)
async def stores(
    merchant_id: str,
    request: Request,
    partner: Partner = Depends(require("merchants:read")),  # noqa: B008
) -> dict[str, Any]:
    return {"stores": await _payments(request).stores(partner, uuid_or_404(merchant_id))}


@router.get(
    "/stores/{store_id}/payments",
    response_model=schemas.PaymentPage,
    responses=problems(*_COMMON, 404),
    summary="A store's payments this partner made through the gateway, newest first",
    tags=["payments"],
)
async def store_payments(
    store_id: str,
    request: Request,
    partner: Partner = Depends(require("payments:read")),  # noqa: B008
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    page, next_cursor = await _payments(request).list_for_store(
        partner, uuid_or_404(store_id), limit, cursor
    )
    return {"payments": page, "next_cursor": next_cursor}


@router.post(
    "/webhook-subscriptions",
    status_code=201,
    response_model=schemas.SubscriptionCreated,
    responses=problems(*_COMMON, 409),
    summary="Subscribe a URL to events; the signing secret is shown once",
    tags=["webhooks"],
)
async def subscribe(
    body: schemas.SubscriptionRequest,
    request: Request,
    partner: Partner = Depends(require("webhooks:manage")),  # noqa: B008
) -> dict[str, Any]:
    events = [e.value for e in body.events]
    return await _webhooks(request).subscribe(partner, body.url, events)


@router.get(
    "/webhook-subscriptions",
    response_model=schemas.SubscriptionList,
    responses=problems(*_COMMON),
    summary="This partner's subscriptions",
    tags=["webhooks"],
)
async def subscriptions(
    request: Request,
    partner: Partner = Depends(require("webhooks:manage")),  # noqa: B008
) -> dict[str, Any]:
    return {"subscriptions": await _webhooks(request).subscriptions(partner)}


@router.delete(
    "/webhook-subscriptions/{subscription_id}",
    status_code=204,
    responses=problems(*_COMMON, 404),
    summary="Stop a subscription",
    tags=["webhooks"],
)
async def unsubscribe(
    subscription_id: str,
    request: Request,
    partner: Partner = Depends(require("webhooks:manage")),  # noqa: B008
) -> Response:
    await _webhooks(request).unsubscribe(partner, uuid_or_404(subscription_id))
    return Response(status_code=204)


@router.get(
    "/webhook-deliveries",
    response_model=schemas.DeliveryList,
    responses=problems(*_COMMON),
    summary="The delivery log, newest first",
    tags=["webhooks"],
)
async def deliveries(
    request: Request,
    partner: Partner = Depends(require("webhooks:manage")),  # noqa: B008
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    return {"deliveries": await _webhooks(request).deliveries(partner, limit)}


@router.post(
    "/webhook-deliveries/{delivery_id}/replay",
    status_code=202,
    response_model=schemas.Delivery,
    responses=problems(*_COMMON, 404),
    summary="Send a delivery again",
    tags=["webhooks"],
)
async def replay(
    delivery_id: str,
    request: Request,
    partner: Partner = Depends(require("webhooks:manage")),  # noqa: B008
) -> dict[str, Any]:
    return await _webhooks(request).replay(partner, uuid_or_404(delivery_id))
