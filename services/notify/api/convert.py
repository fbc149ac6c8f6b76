"""Translation between notify's contract and its use cases, with the format
checks of each request (INVALID_ARGUMENT naming every bad field at once)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from mamoru.common.v1 import common_pb2
from mamoru.notify.v1 import notify_pb2

from services.notify.domain.kinds import (
    MOVEMENT_KINDS,
    MUTABLE_KINDS,
    NoticeKind,
    ParamsShape,
    params_shape,
)
from services.notify.domain.notices import (
    DeliveryRecord,
    DeliveryStatRow,
    InboxRecord,
    NewNotice,
)
from services.notify.domain.routing import Recipient
from services.runtime import convert, paging
from services.runtime.access import current_claims
from services.runtime.errors import InvalidArgument, Unauthenticated
from services.runtime.validation import Violations

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_KINDS = {int(kind) for kind in NoticeKind}


def notice_of(
    request: notify_pb2.SendNoticeRequest,
    caller: str,
    check_caller: Callable[[NoticeKind], None],
) -> NewNotice:
    """The notice a SendNotice request asks for, or INVALID_ARGUMENT.

    ``check_caller`` (the kind's permission) runs as soon as the kind is known,
    before any other field is judged.
    """
    check = Violations()
    kind = kind_of(check, "kind", request.kind)
    if kind is not None:
        check_caller(kind)
    recipient = recipient_of(check, request)
    if kind is NoticeKind.NEWS and recipient is not None and not recipient.account_id:
        check.add("account_id", "is required for NOTICE_KIND_NEWS")
    params = params_of(check, kind, request) if kind is not None else {}
    check.raise_if_any()
    assert kind is not None
    return NewNotice(
        kind=kind,
        caller=caller,
        idempotency_key=request.idempotency_key,
        recipient=recipient,
        params=params,
    )


def alert_of(request: notify_pb2.SendOperatorAlertRequest, caller: str) -> NewNotice:
    """The operator alert a SendOperatorAlert request carries, or INVALID_ARGUMENT."""
    # The proto's rules checked every field's format; that the evidence is JSON is ours.
    check = Violations()
    if request.evidence_json:
        try:
            json.loads(request.evidence_json)
        except ValueError:
            check.add("evidence_json", "must be JSON")
    check.raise_if_any()
    return NewNotice(
        kind=NoticeKind.OPERATOR_ALERT,
        caller=caller,
        idempotency_key=request.idempotency_key,
        recipient=None,
        params={
            "alert_id": request.alert_id,
            "severity": notify_pb2.Severity.Name(request.severity).removeprefix("SEVERITY_"),
            "summary": request.summary,
            "evidence_json": request.evidence_json,
        },
    )


def notice_ids_of(request: notify_pb2.MarkReadRequest) -> list[uuid.UUID]:
    # The proto's rules allow at most 500, each a UUID.
    return [uuid.UUID(value) for value in request.notice_ids]


def muted_kinds_of(request: notify_pb2.UpdatePreferencesRequest) -> list[NoticeKind]:
    check = Violations()
    kinds: list[NoticeKind] = []
    for i, value in enumerate(request.muted_kinds):
        field = f"muted_kinds[{i}]"
        if value not in _KINDS or int(value) == int(NoticeKind.OPERATOR_ALERT):
            check.add(field, "must be a notice kind")
        elif NoticeKind(value) not in MUTABLE_KINDS:
            check.add(field, "security and money notices cannot be muted")
        else:
            kinds.append(NoticeKind(value))
    check.raise_if_any()
    return kinds


def kinds_message(kinds: list[NoticeKind]) -> list[Any]:
    return [int(kind) for kind in kinds]


def account_page_of(
    request: notify_pb2.ListDeliveriesRequest,
) -> tuple[uuid.UUID, int | None, int]:
    # The proto's rules make account_id a UUID.
    before, size = page_of(request.page)
    return uuid.UUID(request.account_id), before, size


def stats_window_of(request: notify_pb2.GetDeliveryStatsRequest) -> tuple[datetime, datetime]:
    # The proto's rules require since.
    check = Violations()
    until = convert.moment(request.until) if request.HasField("until") else datetime.now(UTC)
    since = convert.moment(request.since)
    check.require(since < until, "until", "must be after since")
    check.raise_if_any()
    return since, until


def delivery_id_of(request: notify_pb2.RetryDeadLetterRequest) -> uuid.UUID:
    # The proto's rules make delivery_id a UUID.
    return uuid.UUID(request.delivery_id)


def inbox_message(records: list[InboxRecord], size: int) -> notify_pb2.ListInboxResponse:
    items = [
        notify_pb2.InboxItem(
            notice_id=str(record.notice_id),
            kind=int(record.kind),  # type: ignore[arg-type]
            subject=record.subject,
            body=record.body,
            created_at=convert.timestamp(record.created_at),
            read_at=convert.timestamp(record.read_at),
        )
        for record in records[:size]
    ]
    return notify_pb2.ListInboxResponse(
        items=items, next_page_token=next_token([r.seq for r in records], size)
    )


def stats_message(rows: list[DeliveryStatRow]) -> notify_pb2.GetDeliveryStatsResponse:
    return notify_pb2.GetDeliveryStatsResponse(
        stats=[
            notify_pb2.DeliveryStat(
                kind=int(row.kind),  # type: ignore[arg-type]
                channel=int(row.channel),  # type: ignore[arg-type]
                sent=row.sent,
                failed=row.failed,
                dead=row.dead,
                coalesced=row.coalesced,
            )
            for row in rows
        ]
    )


def deliveries_page(
    records: list[DeliveryRecord], size: int
) -> tuple[list[notify_pb2.Delivery], str]:
    return (
        [delivery_message(r) for r in records[:size]],
        next_token([r.seq for r in records], size),
    )


def params_of(
    check: Violations, kind: NoticeKind, request: notify_pb2.SendNoticeRequest
) -> dict[str, Any]:
    """The typed parameters of ``request`` as stored JSON, refusing a shape that
    does not match the kind."""
    shape = params_shape(kind)
    given = request.WhichOneof("params")
    if given != shape.value:
        check.add(shape.value, f"is required for NOTICE_KIND_{kind.name}")
        return {}
    if shape is ParamsShape.CODE:
        code = request.code
        params: dict[str, Any] = {
            "secret": check.text(
                "code.secret", code.secret, max_length=512, required=True, single_line=True
            ),
            "expires_at": _iso(code.expires_at) if code.HasField("expires_at") else None,
        }
        if kind is NoticeKind.CONTACT_VERIFICATION:
            pending = check.uuid("code.pending_contact_id", code.pending_contact_id)
            params["pending_contact_id"] = str(pending) if pending else ""
        return params
    if shape is ParamsShape.SECURITY_EVENT:
        event = request.security_event
        check.ip_address("security_event.ip_address", event.ip_address, required=False)
        if event.country_code:
            check.require(
                bool(_COUNTRY.match(event.country_code)),
                "security_event.country_code",
                "must be an ISO 3166 alpha-2 code",
            )
        check.text("security_event.device", event.device, max_length=512, single_line=True)
        check.text("security_event.detail", event.detail, max_length=200)
        check.text(
            "security_event.freeze_token", event.freeze_token, max_length=512, single_line=True
        )
        return {
            "occurred_at": _iso_or_now(event.occurred_at, event.HasField("occurred_at")),
            "ip_address": event.ip_address,
            "country_code": event.country_code,
            "device": event.device,
            "detail": event.detail,
            "freeze_token": event.freeze_token,
        }
    if shape is ParamsShape.MONEY:
        return _money_params(check, kind, request.money)
    news = request.news
    return {
        "title": check.text("news.title", news.title, max_length=200, required=True),
        "body": check.text("news.body", news.body, max_length=5000, required=True),
    }


def _money_params(
    check: Violations, kind: NoticeKind, money: notify_pb2.MoneyParams
) -> dict[str, Any]:
    movement = kind in MOVEMENT_KINDS
    params: dict[str, Any] = {
        "counterparty": check.text(
            "money.counterparty",
            money.counterparty,
            max_length=200,
            required=movement,
            single_line=True,
        ),
        "occurred_at": _iso_or_now(money.occurred_at, money.HasField("occurred_at")),
        "detail": check.text("money.detail", money.detail, max_length=200),
    }
    # The proto's rules check a Money given (currency, sign); a movement must give one.
    if money.HasField("amount"):
        params["amount_minor"] = int(money.amount.amount_minor)
        params["currency"] = money.amount.currency
    elif movement:
        check.add("money.amount.currency", "is required")
        params["amount_minor"] = 0
        params["currency"] = ""
    if money.HasField("balance_after"):
        params["balance_minor"] = int(money.balance_after.amount_minor)
        params["balance_currency"] = money.balance_after.currency
    # The proto's rules make it a UUID, required for a movement.
    params["movement_id"] = str(uuid.UUID(money.movement_id)) if money.movement_id else ""
    if not movement and not money.detail and not money.HasField("amount"):
        check.add("money.detail", f"is required for NOTICE_KIND_{kind.name}")
    return params


def delivery_message(record: DeliveryRecord) -> notify_pb2.Delivery:
    return notify_pb2.Delivery(
        delivery_id=str(record.delivery_id),
        notice_id=str(record.notice_id),
        kind=int(record.kind),  # type: ignore[arg-type]
        channel=int(record.channel),  # type: ignore[arg-type]
        address=record.address,
        status=int(record.status),  # type: ignore[arg-type]
        attempts=record.attempts,
        provider=record.provider,
        last_error=record.last_error,
        created_at=convert.timestamp(record.created_at),
        sent_at=convert.timestamp(record.sent_at),
    )


def kind_of(check: Violations, field: str, value: int) -> NoticeKind | None:
    # Operator alerts arrive only through SendOperatorAlert, addressed from settings.
    if value not in _KINDS or int(value) == int(NoticeKind.OPERATOR_ALERT):
        check.add(field, "must be a notice kind")
        return None
    return NoticeKind(value)


def recipient_of(check: Violations, request: notify_pb2.SendNoticeRequest) -> Recipient | None:
    which = request.WhichOneof("recipient")
    if which is None:
        check.add("account_id", "is required (or payer_id)")
        return None
    # The proto's rules make either a UUID.
    return Recipient(**{which: str(uuid.UUID(getattr(request, which)))})


def token_account() -> uuid.UUID:
    claims = current_claims()
    if claims is None:
        raise Unauthenticated("TOKEN_REQUIRED", "bearer token required")
    try:
        return uuid.UUID(claims.subject)
    except ValueError:
        raise Unauthenticated("TOKEN_SUBJECT_INVALID", "the token names no account") from None


def page_of(
    page: common_pb2.PageRequest, check: Violations | None = None
) -> tuple[int | None, int]:
    own = check is None
    check = check or Violations()
    size = page.page_size or DEFAULT_PAGE_SIZE
    check.require(
        0 < size <= MAX_PAGE_SIZE, "page.page_size", f"must be between 0 and {MAX_PAGE_SIZE}"
    )
    before = None
    if page.page_token:
        try:
            (seq,) = paging.decode(page.page_token, field="page.page_token", parts=1)
        except InvalidArgument as refused:
            for field, why in refused.violations:
                check.add(field, why)
        else:
            if seq.isdigit() and len(seq) < 19:
                before = int(seq)
            else:
                check.add("page.page_token", "is not a token from this list")
    if own:
        check.raise_if_any()
    return before, size


def next_token(seqs: list[int], size: int) -> str:
    return paging.encode(str(seqs[size - 1])) if len(seqs) > size else ""


def _iso(stamp: Timestamp) -> str:
    return convert.moment(stamp).isoformat()


def _iso_or_now(stamp: Timestamp, given: bool) -> str:
    return _iso(stamp) if given else datetime.now(UTC).isoformat()
