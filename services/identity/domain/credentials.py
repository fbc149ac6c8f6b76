"""Rules about who someone is: identifiers, passwords, factors and assurance levels."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Iterable

# NIST SP 800-63B rev. 4: 15 characters when the password is the only factor,
# 8 once a second factor is enrolled; no composition rules.
MIN_PASSWORD_ALONE = 15
MIN_PASSWORD_WITH_SECOND_FACTOR = 8
MAX_PASSWORD = 128

PASSWORD = "password"  # noqa: S105 - a method name
PASSKEY = "passkey"
TOTP = "totp"
EMAIL_CODE = "email_code"
RECOVERY_CODE = "recovery_code"
EXTERNAL = "external"

# Methods that can never open the wallet: the same inbox as a reset, a lost-device
# flow, or someone else's ID.
NEVER_FOR_MONEY = frozenset({EMAIL_CODE, RECOVERY_CODE, EXTERNAL})


def identifier_key(identifier: str) -> str:
    """The look-up form of a login identifier: one Unicode form, case folded, trimmed.

    Different spellings of the same address find the same account; delivery
    still goes to the address as registered, never to the spelling given.
    """
    return unicodedata.normalize("NFKC", identifier).casefold().strip()


def password_problems(
    password: str,
    *,
    email: str,
    has_second_factor: bool,
    common_passwords: Collection[str],
) -> list[str]:
    """Why a new password is refused; empty when it is acceptable."""
    problems: list[str] = []
    minimum = MIN_PASSWORD_WITH_SECOND_FACTOR if has_second_factor else MIN_PASSWORD_ALONE
    length = len(password)
    if length < minimum:
        problems.append(f"must be at least {minimum} characters")
    if length > MAX_PASSWORD:
        problems.append(f"must be at most {MAX_PASSWORD} characters")
    folded = identifier_key(password)
    if folded in common_passwords:
        problems.append("is a common or breached password")
    local_part = identifier_key(email).partition("@")[0]
    if len(local_part) >= 3 and local_part in folded:
        problems.append("must not contain the email address")
    return problems


def assurance_level(methods: Iterable[str]) -> int:
    """2 for a passkey, or a password with TOTP; 1 otherwise.

    An email code does not raise the level: the inbox that receives it is the
    one that receives password resets, so it is the same factor twice.
    """
    used = set(methods)
    if PASSKEY in used or {PASSWORD, TOTP} <= used:
        return 2
    return 1


def may_open_wallet(methods: Iterable[str]) -> bool:
    """Whether a session's methods could ever back a wallet token."""
    used = set(methods)
    return assurance_level(used) == 2 and not (used & NEVER_FOR_MONEY)


def may_change_factors(methods: Iterable[str], *, has_usable_factor: bool) -> bool:
    """Whether a recently authenticated session may change the account's factors.

    Once the account has a factor, the session must have shown it and nothing weaker
    (what could also open the wallet): a password with the inbox, a recovery code or
    someone else's ID must not add the attacker's own passkey, which would open the
    wallet alone after the cool-off. An account without a usable factor has only its
    password to ask for, so the password adds or removes one: on the device the
    account was registered from, before it ever had a factor, that is how a new
    account becomes safe; anywhere else the change ends every other session, tells
    the owner and starts the cool-off, so the password and the inbox cannot enrol a
    passkey and pay at once (and a person on a new phone is never locked out).
    """
    used = set(methods)
    if has_usable_factor:
        return may_open_wallet(used)
    return PASSWORD in used and not used & {EXTERNAL, RECOVERY_CODE}
