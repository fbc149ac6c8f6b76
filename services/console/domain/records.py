"""What the console keeps: operators' sessions, their actions and forced resets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Session:
    operator: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class Action:
    """One change an operator made through the console, kept whatever its outcome."""

    operator: str
    action: str
    target: str
    reason: str
    outcome: str
    acted_at: datetime


@dataclass(frozen=True)
class ResetJob:
    """A forced credential reset started from the console, and how far identity got."""

    job_id: str
    operator: str
    reason: str
    scope: str
    processed: int
    total: int
    done: bool
    failure: str
    started_at: datetime
    updated_at: datetime

    @property
    def percent(self) -> int:
        if self.done and not self.failure:
            return 100
        return 0 if self.total <= 0 else min(100, self.processed * 100 // self.total)
