"""Identity's use cases, one module per group of RPCs; ``Identity`` is all of them at once."""

from __future__ import annotations

from services.identity.use_cases.contacts import Contacts
from services.identity.use_cases.external_ids import ExternalIds
from services.identity.use_cases.factors import Factors
from services.identity.use_cases.operators import Operators
from services.identity.use_cases.passwords import Passwords
from services.identity.use_cases.registration import Registration
from services.identity.use_cases.second_factor import SecondFactor
from services.identity.use_cases.sessions import Sessions
from services.identity.use_cases.sign_in import SignIn


class Identity(
    Registration,
    SignIn,
    SecondFactor,
    Factors,
    Sessions,
    Passwords,
    Contacts,
    ExternalIds,
    Operators,
):
    """The use cases behind IdentityService."""


__all__ = ["Identity"]
