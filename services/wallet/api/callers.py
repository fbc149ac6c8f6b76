"""Who is calling: the person behind a wallet token, or the register behind a merchant key."""

from __future__ import annotations

from typing import Any

import grpc

from services.runtime.access import current_claims
from services.runtime.errors import PermissionDenied, Unauthenticated
from services.runtime.tokens import TokenClaims
from services.wallet.use_cases.merchants import MERCHANT_KEY_HEADER

WALLET_AUDIENCE = "wallet"


def payer_claims() -> TokenClaims:
    """The verified wallet token of the person calling.

    The access rule admits group tokens too, so that a valid group-ID session
    gets a clear PERMISSION_DENIED here rather than looking like a bad token.
    """
    claims = current_claims()
    if claims is None:
        raise Unauthenticated("TOKEN_REQUIRED", "a wallet access token is required")
    if claims.audience != WALLET_AUDIENCE:
        raise PermissionDenied(
            "WALLET_AUDIENCE_REQUIRED",
            "the group ID cannot move money; exchange it for a wallet token after step-up",
        )
    if claims.assurance_level < 2:
        raise PermissionDenied("ASSURANCE_LEVEL_TOO_LOW", "a second factor is required")
    # Identity names the device key in a wallet token only after the request for it
    # proved that key and the key was registered to the account.
    if not claims.device_key:
        raise PermissionDenied("REGISTERED_DEVICE_REQUIRED", "use a registered device")
    return claims


def merchant_keys(context: grpc.aio.ServicerContext[Any, Any]) -> list[str]:
    """Every merchant key the register sent (one is valid, several are refused)."""
    return [
        value.decode() if isinstance(value, bytes) else str(value)
        for key, value in (context.invocation_metadata() or ())
        if key.lower() == MERCHANT_KEY_HEADER
    ]
