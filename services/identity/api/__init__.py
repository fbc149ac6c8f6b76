"""IdentityService's gRPC handlers: check and read the request, call the use case, answer
in protobuf. One mixin per group of RPCs; ``IdentityApi`` is all of them."""

from __future__ import annotations

from services.identity.api.contact_changes import ContactChangeRpcs
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
    ContactChangeRpcs,
):
    """Every RPC of IdentityService."""


__all__ = ["IdentityApi"]
