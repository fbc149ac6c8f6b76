"""Conversions between Python values and the well-known protobuf types, once."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(moment: datetime | None) -> Timestamp | None:
    """A Timestamp for ``moment``; None stays None, so an unset field stays unset."""
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def moment(stamp: Timestamp) -> datetime:
    """The timezone-aware UTC datetime of ``stamp``."""
    return stamp.ToDatetime(tzinfo=UTC)


def moment_or_none(message: object, field: str) -> datetime | None:
    """The datetime of an optional Timestamp field of ``message``, None when unset."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    return moment(getattr(message, field))
