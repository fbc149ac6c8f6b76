"""Edge validation: collect every field violation of a request, then refuse once.

    check = Violations()
    account_id = check.uuid("account_id", request.account_id)
    check.text("display_name", request.display_name, max_length=200)
    check.raise_if_any()   # INVALID_ARGUMENT naming each bad field

Text rules are the same everywhere: any Unicode text (line breaks, emoji, any
script) round-trips exactly; NUL and other control characters that are not
line breaks or tabs are refused, because they cannot be stored or displayed
safely. Nothing is silently trimmed or replaced.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Any

from services.runtime.errors import InvalidArgument

_ALLOWED_CONTROLS = {"\n", "\r", "\t"}
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,252}\.[^@\s.]{1,63}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
SUPPORTED_CURRENCIES = frozenset({"JPY"})


class Violations:
    """Accumulates (field, description) pairs for one request."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self.items.append((field, description))

    def require(self, condition: bool, field: str, description: str) -> bool:
        if not condition:
            self.add(field, description)
        return condition

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)

    def text(
        self,
        field: str,
        value: str,
        *,
        max_length: int,
        required: bool = False,
        single_line: bool = False,
    ) -> str:
        if required and not value.strip():
            self.add(field, "is required")
            return value
        if len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters")
        bad = next((ch for ch in value if _is_forbidden_control(ch, single_line)), None)
        if bad is not None:
            self.add(field, f"must not contain the control character U+{ord(bad):04X}")
        return value

    def uuid(self, field: str, value: str, *, required: bool = True) -> uuid.UUID | None:
        if not value:
            if required:
                self.add(field, "is required")
            return None
        try:
            return uuid.UUID(value)
        except ValueError:
            self.add(field, "must be a UUID")
            return None

    def email(self, field: str, value: str) -> str:
        if not value:
            self.add(field, "is required")
        elif len(value) > 254 or not _EMAIL.match(value):
            self.add(field, "must be an email address")
        return value

    def ip_address(self, field: str, value: str, *, required: bool = True) -> str:
        if not value:
            if required:
                self.add(field, "is required")
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            self.add(field, "must be an IPv4 or IPv6 address")
        return value

    def idempotency_key(self, field: str, value: str) -> str:
        if not _IDEMPOTENCY_KEY.match(value):
            self.add(field, "must be 1 to 128 printable ASCII characters")
        return value

    def money(self, field: str, money: Any, *, positive: bool = True) -> int:
        """Validate a mamoru.common.v1.Money; return its amount in minor units."""
        if money is None or not money.currency:
            self.add(f"{field}.currency", "is required")
            return 0
        if not _CURRENCY.match(money.currency) or money.currency not in SUPPORTED_CURRENCIES:
            self.add(
                f"{field}.currency", f"must be one of {', '.join(sorted(SUPPORTED_CURRENCIES))}"
            )
        amount = int(money.amount_minor)
        if positive and amount <= 0:
            self.add(f"{field}.amount_minor", "must be greater than 0")
        elif amount < 0:
            self.add(f"{field}.amount_minor", "must not be negative")
        return amount

    def client(self, field: str, client: Any, *, required: bool = True) -> None:
        """Validate a mamoru.common.v1.ClientContext."""
        if client is None:
            if required:
                self.add(field, "is required")
            return
        self.ip_address(f"{field}.ip_address", client.ip_address, required=required)
        self.text(f"{field}.device_id", client.device_id, max_length=128, single_line=True)
        if required and not client.device_id:
            self.add(f"{field}.device_id", "is required")
        self.text(f"{field}.user_agent", client.user_agent, max_length=512, single_line=True)


def _is_forbidden_control(ch: str, single_line: bool) -> bool:
    code = ord(ch)
    is_control = code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0
    if not is_control:
        return False
    return single_line or ch not in _ALLOWED_CONTROLS
