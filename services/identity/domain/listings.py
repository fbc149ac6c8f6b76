"""What an owner or an operator is shown: devices, sessions and the security log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Device:
    device_id: str
    user_agent: str
    first_seen_at: datetime
    last_seen_at: datetime
    last_ip: str
    last_country: str


@dataclass(frozen=True)
class SessionSummary:
    session_id: uuid.UUID
    device_id: str
    methods: tuple[str, ...]
    assurance_level: int
    created_at: datetime
    last_seen_at: datetime
    ip_address: str


@dataclass(frozen=True)
class SecurityEvent:
    event_id: uuid.UUID
    kind: str
    occurred_at: datetime
    ip_address: str
    device_id: str
    session_id: str
    actor: str
    details: dict[str, Any]

    @property
    def position(self) -> tuple[datetime, uuid.UUID]:
        """Where the event sits in its account's log, newest first."""
        return self.occurred_at, self.event_id
