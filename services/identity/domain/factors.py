"""A factor as identity keeps it: a TOTP app or a passkey."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Factor:
    factor_id: uuid.UUID
    account_id: uuid.UUID
    kind: str
    name: str
    suspended: bool
    created_at: datetime
    last_used_at: datetime | None
    # A TOTP enrolment is pending until confirmed with a code.
    confirmed_at: datetime | None
    # TOTP: the sealed secret and the last accepted time step (replay protection).
    sealed_totp_secret: bytes | None = None
    last_totp_step: int | None = None
    # Passkey.
    credential_id: bytes | None = None
    public_key: bytes | None = None
    sign_count: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> Factor:
        return cls(
            factor_id=row["id"],
            account_id=row["account_id"],
            kind=row["kind"],
            name=row["name"],
            suspended=row["suspended"],
            created_at=row["created_at"],
            last_used_at=row["last_used_at"],
            confirmed_at=row["confirmed_at"],
            sealed_totp_secret=row["sealed_totp_secret"],
            last_totp_step=row["last_totp_step"],
            credential_id=row["credential_id"],
            public_key=row["public_key"],
            sign_count=row["sign_count"],
        )

    @property
    def usable_passkey(self) -> bool:
        """A passkey that can still answer: a cloned (suspended) one cannot."""
        return self.kind == "passkey" and not self.suspended
