"""IdentityService's gRPC handlers: proto to command, the use case, and back to proto."""

from __future__ import annotations

from services.identity.api.contacts import ContactRpcs
from services.identity.api.external_ids import ExternalIdRpcs
from services.identity.api.factors import FactorRpcs
from services.identity.api.operators import OperatorRpcs
from services.identity.api.passwords import PasswordRpcs
from services.identity.api.registration import RegistrationRpcs
from services.identity.api.sessions import SessionRpcs
from services.identity.api.sign_in import SignInRpcs


class IdentityApi(
    RegistrationRpcs,
    SignInRpcs,
    SessionRpcs,
    FactorRpcs,
    PasswordRpcs,
    ContactRpcs,
    ExternalIdRpcs,
    OperatorRpcs,
):
    """Every RPC of IdentityService."""


__all__ = ["IdentityApi"]
