"""Fraud cases and the indicators an investigation confirms."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Indicators:
    """An attacker's traces: IPs in one spelling, subnets as networks, one time window."""

    ip_addresses: tuple[str, ...]
    subnets: tuple[str, ...]
    device_ids: tuple[str, ...]
    window_start: datetime
    window_end: datetime | None

    def to_document(self) -> dict[str, Any]:
        return {
            "ip_addresses": list(self.ip_addresses),
            "subnets": list(self.subnets),
            "device_ids": list(self.device_ids),
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat() if self.window_end is not None else None,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Indicators:
        return cls(
            ip_addresses=tuple(document["ip_addresses"]),
            subnets=tuple(document["subnets"]),
            device_ids=tuple(document["device_ids"]),
            window_start=datetime.fromisoformat(document["window_start"]),
            window_end=datetime.fromisoformat(document["window_end"])
            if document["window_end"]
            else None,
        )


@dataclass(frozen=True)
class Case:
    case_id: uuid.UUID
    status: str
    source: str
    account_id: str
    wallet_id: str
    alert_id: str
    movement_id: str
    assignee: str
    notes: tuple[str, ...]
    indicators: Indicators | None
    opened_at: datetime
    updated_at: datetime
