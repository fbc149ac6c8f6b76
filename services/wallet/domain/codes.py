"""One-time numeric codes (payment and cash top-up barcodes) and request fingerprints."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any

# 20 digits carry about 66 bits: guessing a live code among the few alive at
# any moment is hopeless within its few minutes of life.
CODE_DIGITS = 20
MAX_PAYMENT_CODE_SECONDS = 300


def new_numeric_code(digits: int = CODE_DIGITS) -> str:
    return "".join(str(secrets.randbelow(10)) for _ in range(digits))


def is_numeric_code(value: str, digits: int = CODE_DIGITS) -> bool:
    return len(value) == digits and value.isascii() and value.isdigit()


def code_hash(code: str) -> bytes:
    """What is stored for a code: a reader of the database cannot spend it."""
    return hashlib.sha256(code.encode()).digest()


def fingerprint(fields: Mapping[str, Any]) -> str:
    """A stable hash of what a request asks for, to tell a retry from a different request."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
