"""What identity's handlers still check beyond the contract's rules, and its page tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.identity.api.convert import (
    refuse_blank,
    security_log_after,
    security_log_token,
)
from services.runtime.errors import InvalidArgument
from services.runtime.validation import Violations


def test_a_required_text_of_spaces_alone_is_refused_naming_its_field():
    check = Violations()
    refuse_blank(check, reason="  \t", provider="google", nonce="")
    # An empty value is the contract's to refuse; spaces alone are not counted by it.
    assert check.items == [("reason", "is required")]


def test_a_security_log_page_token_names_the_event_the_page_ended_at():
    last = (datetime(2026, 4, 1, 9, 30, 15, 123456, tzinfo=UTC), uuid.uuid4())
    assert security_log_after(security_log_token(last)) == last
    assert security_log_token(None) == ""
    assert security_log_after("") is None


@pytest.mark.parametrize("token", ["not-a-token", "Zm9vfGJhcg"])
def test_a_foreign_security_log_token_is_refused_naming_the_field(token: str):
    with pytest.raises(InvalidArgument) as refused:
        security_log_after(token)
    assert [field for field, _ in refused.value.violations] == ["page.page_token"]
