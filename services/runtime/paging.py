"""Opaque page tokens, one scheme for every list.

A token is the sort key of the last row a page returned, so the next page
starts after it whatever was inserted meanwhile (keyset paging). It is opaque to
clients: they pass back what they were given.
"""

from __future__ import annotations

import base64
import binascii

from services.runtime.errors import InvalidArgument

_SEPARATOR = "\x1f"


def encode(*parts: str) -> str:
    """The token for a page that ended at the row whose sort key is ``parts``."""
    return base64.urlsafe_b64encode(_SEPARATOR.join(parts).encode()).decode()


def decode(token: str, *, field: str, parts: int) -> list[str]:
    """The sort key inside ``token``, or INVALID_ARGUMENT naming ``field``."""
    try:
        decoded = base64.urlsafe_b64decode(token.encode()).decode().split(_SEPARATOR)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = []
    if len(decoded) != parts or not all(decoded):
        raise InvalidArgument([(field, "is not a token from this list")])
    return decoded
