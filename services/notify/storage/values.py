"""Conversions between stored columns and domain values shared by the storage modules."""

from __future__ import annotations

import uuid

from services.notify.domain.routing import Recipient


def as_uuid(value: str | None) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(value)


def recipient(account_id: uuid.UUID | None, payer_id: uuid.UUID | None) -> Recipient | None:
    if account_id is not None:
        return Recipient(account_id=str(account_id))
    if payer_id is not None:
        return Recipient(payer_id=str(payer_id))
    return None
