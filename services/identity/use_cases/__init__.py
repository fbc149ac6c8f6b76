"""Identity's use cases, one module per group of RPCs; ``Identity`` is all of them at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.identity.clients.notices import FAILED_SIGN_IN_TOPIC, RESET_REQUEST_TOPIC
from services.identity.use_cases.contacts import Contacts
from services.identity.use_cases.external_ids import ExternalIds
from services.identity.use_cases.factors import Factors
from services.identity.use_cases.operators import Operators
from services.identity.use_cases.passwords import Passwords
from services.identity.use_cases.registration import Registration
from services.identity.use_cases.second_factor import SecondFactor
from services.identity.use_cases.sessions import Sessions
from services.identity.use_cases.sign_in import SignIn
from services.runtime.outbox import OutboxMessage


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

    def local_receivers(self) -> dict[str, Callable[[OutboxMessage], Awaitable[None]]]:
        """Outbox topics identity delivers to itself: work left until after an answer."""
        return {
            RESET_REQUEST_TOPIC: self.process_reset_request,
            FAILED_SIGN_IN_TOPIC: self.process_failed_sign_in,
        }


__all__ = ["Identity"]
