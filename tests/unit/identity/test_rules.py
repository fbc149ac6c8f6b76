"""Identity's pure rules: passwords, assurance levels, when a sign-in needs a second factor."""

from __future__ import annotations

import base64
import uuid

import pytest
from cryptography.exceptions import InvalidTag

from services.identity.clients.hashing import common_passwords
from services.identity.domain import credentials as cred
from services.identity.domain.login import (
    RiskVerdict,
    challenge_methods,
    refuse_before_hashing,
    second_factor_need,
)
from services.identity.domain.sealing import Pseudonyms, SecretBox
from services.identity.settings import IdentitySettings
from services.runtime.config import ConfigError, load_settings

COMMON = frozenset({"1qaz2wsx3edc4rfv"})


def problems(password: str, *, second_factor: bool = False) -> list[str]:
    return cred.password_problems(
        password, email="hanako@example.jp", has_second_factor=second_factor,
        common_passwords=COMMON,
    )  # fmt: skip


def test_a_password_alone_needs_fifteen_characters_and_eight_with_a_second_factor():
    assert problems("a" * 14 + "z") == []
    assert problems("twelve chars") == ["must be at least 15 characters"]
    assert problems("eightchr", second_factor=True) == []
    assert problems("seven77", second_factor=True) == ["must be at least 8 characters"]


def test_long_passwords_up_to_128_characters_of_any_script_are_accepted():
    assert problems("パスワード" * 25 + "🌸🌸🌸") == []
    assert problems("x" * 129) == ["must be at most 128 characters"]


def test_common_passwords_and_the_email_local_part_are_refused_whatever_the_case():
    assert problems("1QAZ2WSX3EDC4RFV") == ["is a common or breached password"]
    assert problems("my name is HANAKO, hi") == ["must not contain the email address"]


def test_the_bundled_list_holds_tens_of_thousands_of_leaked_passwords():
    assert len(common_passwords()) >= 30_000
    assert "password1" in common_passwords()


def test_identifiers_fold_case_and_unicode_forms_to_one_key():
    assert cred.identifier_key("Hanako@Example.JP ") == cred.identifier_key("hanako@example.jp")
    # Full-width letters are another Unicode form of the same address.
    full_width = "".join(chr(ord(ch) + 0xFEE0) for ch in "hanako")
    assert cred.identifier_key(f"{full_width}@example.jp") == "hanako@example.jp"


def test_only_a_passkey_or_password_with_totp_reaches_assurance_level_two():
    assert cred.assurance_level(["passkey"]) == 2
    assert cred.assurance_level(["password", "totp"]) == 2
    assert cred.assurance_level(["password", "email_code"]) == 1
    assert cred.assurance_level(["password", "recovery_code"]) == 1
    assert cred.assurance_level(["external"]) == 1


def test_email_code_recovery_and_external_sessions_never_open_the_wallet():
    assert cred.may_open_wallet(["password", "totp"])
    assert not cred.may_open_wallet(["password", "totp", "recovery_code"])
    assert not cred.may_open_wallet(["external", "passkey"])
    assert not cred.may_open_wallet(["password", "email_code"])


def test_deny_and_throttle_end_the_attempt_before_hashing():
    assert refuse_before_hashing(RiskVerdict.DENY)
    assert refuse_before_hashing(RiskVerdict.THROTTLE)
    assert not refuse_before_hashing(RiskVerdict.CHALLENGE)
    assert not refuse_before_hashing(RiskVerdict.UNAVAILABLE)


def test_a_new_device_a_risk_challenge_or_risk_being_away_require_a_second_factor():
    def need(verdict: RiskVerdict, known: bool, failures: int = 0) -> bool:
        return second_factor_need(
            verdict=verdict, known_device=known, recent_failures=failures
        ).required

    assert not need(RiskVerdict.ALLOW, known=True)
    assert need(RiskVerdict.ALLOW, known=False)
    assert need(RiskVerdict.CHALLENGE, known=True)
    assert need(RiskVerdict.UNAVAILABLE, known=True)
    assert need(RiskVerdict.ALLOW, known=True, failures=3)


def test_sealed_secrets_open_only_for_their_purpose():
    box = SecretBox(bytes(32))
    sealed = box.seal(b"seed", purpose="totp")
    assert b"seed" not in sealed
    assert box.open(sealed, purpose="totp") == b"seed"
    with pytest.raises(InvalidTag):
        box.open(sealed, purpose="signing-key")


def may_change(methods: set[str], *, has_usable_factor: bool) -> bool:
    return cred.may_change_factors(methods, has_usable_factor=has_usable_factor)


def test_without_a_usable_factor_the_password_changes_factors_but_no_weaker_proof_does():
    # The cool-off, not a refusal, guards a change away from the registration
    # device: a person on a new phone must still be able to add a factor.
    assert may_change({"password"}, has_usable_factor=False)
    assert may_change({"password", "email_code"}, has_usable_factor=False)
    assert not may_change({"external"}, has_usable_factor=False)
    assert not may_change({"password", "external"}, has_usable_factor=False)
    assert not may_change({"password", "recovery_code"}, has_usable_factor=False)


def test_with_a_factor_only_a_session_that_showed_it_and_nothing_weaker_changes_factors():
    assert may_change({"password", "totp"}, has_usable_factor=True)
    assert may_change({"passkey"}, has_usable_factor=True)
    for weaker in (
        {"password"},
        {"password", "email_code"},
        {"password", "recovery_code"},
        {"external"},
        {"password", "totp", "email_code"},
        {"passkey", "external"},
    ):
        assert not may_change(weaker, has_usable_factor=True), weaker


def test_an_inbox_code_is_offered_only_to_accounts_without_a_passkey_or_totp():
    def offered(**factors: bool) -> list[str]:
        facts = {"has_passkey": False, "has_totp": False, "has_recovery_codes": False}
        return challenge_methods(has_primary_email=True, **{**facts, **factors})

    assert offered() == ["email_code"]
    assert offered(has_totp=True, has_recovery_codes=True) == ["totp", "recovery_code"]
    assert offered(has_passkey=True) == ["passkey"]


def test_payer_ids_are_stable_and_differ_from_the_account_id():
    account = uuid.uuid4()
    pseudonyms = Pseudonyms(bytes(32))
    assert pseudonyms.payer_id(account) == pseudonyms.payer_id(account)
    assert pseudonyms.payer_id(account) != account
    assert Pseudonyms(bytes([1] * 32)).payer_id(account) != pseudonyms.payer_id(account)


BASE_ENV = {"DATABASE_URL": "postgresql://localhost/identity"}


def test_startup_stops_without_a_secrets_key_naming_the_variable():
    with pytest.raises(ConfigError, match="IDENTITY_SECRETS_KEY"):
        load_settings(IdentitySettings, BASE_ENV)


def test_a_secrets_key_that_is_not_32_bytes_stops_startup():
    short = base64.b64encode(b"too short").decode()
    with pytest.raises(ConfigError, match="IDENTITY_SECRETS_KEY must be 32 random bytes"):
        load_settings(IdentitySettings, {**BASE_ENV, "IDENTITY_SECRETS_KEY": short})


def test_access_tokens_may_not_live_longer_than_ten_minutes():
    key = base64.b64encode(bytes(32)).decode()
    with pytest.raises(ConfigError, match="IDENTITY_ACCESS_TOKEN_SECONDS"):
        load_settings(
            IdentitySettings,
            {**BASE_ENV, "IDENTITY_SECRETS_KEY": key, "IDENTITY_ACCESS_TOKEN_SECONDS": "601"},
        )
    settings = load_settings(IdentitySettings, {**BASE_ENV, "IDENTITY_SECRETS_KEY": key})
    assert "0x00" not in repr(settings) and settings.access_token_seconds == 600


async def test_hashes_made_with_weaker_parameters_are_marked_for_rehash():
    from services.identity.clients.hashing import HashBudget, PasswordHasher
    from services.identity.domain.admission import HashSlots

    budget = HashBudget(
        HashSlots(total=1, for_known_devices=0), queue=1, new_wait=30, known_wait=30
    )
    weak = PasswordHasher(budget, memory_kib=8 * 1024, time_cost=1)
    current = PasswordHasher(budget)
    stored = await weak.hash("a long enough passphrase")
    assert current.needs_rehash(stored)
    assert await current.verify(stored, "a long enough passphrase")
    assert not current.needs_rehash(await current.hash("a long enough passphrase"))
    assert not await current.verify(None, "anything at all")
    assert current.computed == 3
