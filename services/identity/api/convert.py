"""Between identity's protobuf messages and its use cases: input checks, and rows as messages."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, TypeAlias

import grpc
from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.domain import credentials as cred
from services.identity.domain.factors import Factor
from services.identity.domain.listings import Device, SecurityEvent, SessionSummary
from services.identity.domain.sessions import IssuedSession
from services.runtime import paging
from services.runtime.access import current_claims
from services.runtime.convert import timestamp
from services.runtime.errors import InvalidArgument, Unauthenticated
from services.runtime.tokens import TokenClaims
from services.runtime.validation import Violations

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


CHALLENGE_METHODS = {
    cred.PASSKEY: pb.CHALLENGE_METHOD_PASSKEY,
    cred.TOTP: pb.CHALLENGE_METHOD_TOTP,
    cred.EMAIL_CODE: pb.CHALLENGE_METHOD_EMAIL_CODE,
    cred.RECOVERY_CODE: pb.CHALLENGE_METHOD_RECOVERY_CODE,
}


AUTH_METHODS = {
    cred.PASSWORD: pb.AUTH_METHOD_PASSWORD,
    cred.PASSKEY: pb.AUTH_METHOD_PASSKEY,
    cred.TOTP: pb.AUTH_METHOD_TOTP,
    cred.EMAIL_CODE: pb.AUTH_METHOD_EMAIL_CODE,
    cred.RECOVERY_CODE: pb.AUTH_METHOD_RECOVERY_CODE,
    cred.EXTERNAL: pb.AUTH_METHOD_EXTERNAL,
}


PROFILE_TEXT = ("display_name", "family_name", "given_name")


CLEARABLE = frozenset({*PROFILE_TEXT, "birth_date"})


def bearer(context: Context) -> str:
    """The bearer token of the call, already verified by the access interceptor."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization" and isinstance(value, str):
            return value.partition(" ")[2].strip()
    return ""


def session_tokens(issued: IssuedSession) -> pb.SessionTokens:
    return pb.SessionTokens(
        access_token=issued.access_token,
        access_token_expires_at=timestamp(issued.access_expires_at),
        refresh_token=issued.refresh_token,
        session_id=str(issued.session_id),
        assurance_level=issued.assurance_level,
    )


def caller_claims() -> TokenClaims:
    claims = current_claims()
    if claims is None:
        raise Unauthenticated("TOKEN_REQUIRED", "bearer token required")
    return claims


def check_password(check: Violations, field: str, value: str) -> None:
    """Bound a password the contract leaves unchecked (the policy judges new ones)."""
    check.require(bool(value), field, "is required")
    check.require(len(value) <= 1024, field, "is too long")


def refuse_blank(check: Violations, **fields: str) -> None:
    """The contract's rules count characters; a required text of spaces alone is still
    missing."""
    for field, value in fields.items():
        check.require(not value or bool(value.strip()), field, "is required")


def uuid_of(value: str) -> uuid.UUID:
    """A UUID field the contract's rules already checked."""
    return uuid.UUID(value)


def uuid_or_none(value: str) -> uuid.UUID | None:
    """An optional UUID field the contract's rules already checked when set."""
    return uuid.UUID(value) if value else None


def factor_message(factor: Factor) -> pb.Factor:
    return pb.Factor(
        factor_id=str(factor.factor_id),
        method=CHALLENGE_METHODS[factor.kind],
        name=factor.name,
        created_at=timestamp(factor.created_at),
        last_used_at=timestamp(factor.last_used_at),
        suspended=factor.suspended,
    )


def contact_message(row: Any) -> pb.Contact:
    return pb.Contact(
        contact_id=str(row["id"]),
        kind=row["kind"],
        address=row["address"],
        verified=row["verified"],
        primary=row["is_primary"],
        created_at=timestamp(row["created_at"]),
    )


def profile_message(row: Any) -> pb.Profile:
    profile = pb.Profile(
        account_id=str(row["id"]),
        language=row["language"],
        created_at=timestamp(row["created_at"]),
    )
    for field in PROFILE_TEXT:
        if row[field] is not None:
            setattr(profile, field, row[field])
    if row["birth_date"] is not None:
        profile.birth_date = row["birth_date"].isoformat()
    return profile


def client_from_claims(claims: TokenClaims) -> Any:
    """Person RPCs without a ClientContext field: the session's device key stands for the client."""
    from mamoru.common.v1 import common_pb2

    return common_pb2.ClientContext(device_id=claims.device_key or "")


def security_log_after(token: str) -> tuple[datetime, uuid.UUID] | None:
    """Where a page of the security log starts: after the event ``token`` names."""
    if not token:
        return None
    stamp, event_id = paging.decode(token, field="page.page_token", parts=2)
    try:
        return datetime.fromisoformat(stamp), uuid.UUID(event_id)
    except ValueError:
        raise InvalidArgument([("page.page_token", "is not a token from this list")]) from None


def security_log_token(last: tuple[datetime, uuid.UUID] | None) -> str:
    return "" if last is None else paging.encode(last[0].isoformat(), str(last[1]))


def session_message(session: SessionSummary, *, current: str) -> pb.Session:
    return pb.Session(
        session_id=str(session.session_id),
        device_id=session.device_id,
        methods=[AUTH_METHODS[m] for m in session.methods if m in AUTH_METHODS],
        assurance_level=session.assurance_level,
        created_at=timestamp(session.created_at),
        last_seen_at=timestamp(session.last_seen_at),
        ip_address=session.ip_address,
        current=str(session.session_id) == current,
    )


def device_message(device: Device) -> pb.Device:
    return pb.Device(
        device_id=device.device_id,
        user_agent=device.user_agent,
        first_seen_at=timestamp(device.first_seen_at),
        last_seen_at=timestamp(device.last_seen_at),
        last_ip_address=device.last_ip,
        last_country_code=device.last_country,
    )


def security_event_message(event: SecurityEvent) -> pb.SecurityEvent:
    return pb.SecurityEvent(
        event_id=str(event.event_id),
        kind=event.kind,
        occurred_at=timestamp(event.occurred_at),
        ip_address=event.ip_address,
        device_id=event.device_id,
        session_id=event.session_id,
        actor=event.actor,
        details_json=json.dumps(event.details, ensure_ascii=False),
    )
