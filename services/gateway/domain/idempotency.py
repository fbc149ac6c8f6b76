"""Idempotency keys: what makes two requests "the same"."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from services.gateway.domain.errors import Refusal

KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,64}$")
HEADER = "Idempotency-Key"


def body_hash(operation: str, body: dict[str, Any]) -> str:
    canonical = json.dumps([operation, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    body: dict[str, Any]


def key_reused() -> Refusal:
    return Refusal(
        409,
        "IDEMPOTENCY_KEY_REUSED",
        "this Idempotency-Key was used with a different request",
        field=HEADER,
    )


def wallet_key(partner_id: str, key: str) -> str:
    """The wallet scopes keys by merchant; partners of one merchant must not collide."""
    return f"gw:{partner_id}:{key}"
