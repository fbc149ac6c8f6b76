"""Refusals the gateway answers with, whatever layer finds them.

Each becomes an RFC 9457 problem: ``reason`` is the stable code a partner's
program branches on (the wallet's own reason where the wallet refused), and
``field`` names the offending input when there is one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class Refusal(Exception):
    """A request the gateway will not carry out, with the HTTP status to answer."""

    status: int
    reason: str
    detail: str
    field: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.detail}"


def forbidden(reason: str, detail: str) -> Refusal:
    return Refusal(403, reason, detail)


def not_found(detail: str = "no such resource for this partner") -> Refusal:
    # The same answer whether the thing does not exist or belongs to someone else.
    return Refusal(404, "NOT_FOUND", detail)


def invalid(field_name: str, detail: str, reason: str = "INVALID_ARGUMENT") -> Refusal:
    return Refusal(422, reason, detail, field=field_name)
