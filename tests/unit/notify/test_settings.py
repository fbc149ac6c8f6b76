"""notify's settings fail fast, naming the variable."""

from __future__ import annotations

import pytest

from services.notify.settings import NotifySettings
from services.runtime.config import ConfigError, load_settings

BASE = {"DATABASE_URL": "postgresql://localhost/notify"}


def test_defaults_run_locally() -> None:
    settings = load_settings(NotifySettings, BASE)
    assert (settings.smtp_port, settings.grpc_port) == (2525, 50054)
    assert settings.operator_emails == ("operators@mamoru.local",)


def test_lists_are_read_from_comma_separated_values() -> None:
    settings = load_settings(
        NotifySettings,
        {
            **BASE,
            "NOTIFY_OPERATOR_EMAILS": "a@mamoru.jp, b@mamoru.jp",
            "NOTIFY_SMS_ENDPOINTS": "https://sms-a.example/send,https://sms-b.example/send",
            "NOTIFY_SMS_API_KEY": "sms-key-value",
        },
    )
    assert settings.operator_emails == ("a@mamoru.jp", "b@mamoru.jp")
    assert len(settings.sms_endpoints) == 2
    assert "sms-key-value" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"NOTIFY_SMS_ENDPOINTS": "https://sms.example/send"}, "NOTIFY_SMS_API_KEY"),
        ({"NOTIFY_PUSH_ENDPOINTS": "ftp://push.example"}, "NOTIFY_PUSH_ENDPOINTS"),
        ({"NOTIFY_SMTP_FALLBACK_RELAYS": "relay.example"}, "NOTIFY_SMTP_FALLBACK_RELAYS"),
        ({"SMTP_PASSWORD": "p"}, "SMTP_USERNAME"),
        ({"NOTIFY_OPERATOR_EMAILS": "not-an-address"}, "NOTIFY_OPERATOR_EMAILS"),
        ({"NOTIFY_LINK_BASE_URL": "mamoru.test"}, "NOTIFY_LINK_BASE_URL"),
        ({"NOTIFY_MAX_ATTEMPTS": "0"}, "NOTIFY_MAX_ATTEMPTS"),
        ({"NOTIFY_COALESCE_LIMIT": "0"}, "NOTIFY_COALESCE_LIMIT"),
        ({"NOTIFY_BATCH_LINGER_SECONDS": "-0.1"}, "NOTIFY_BATCH_LINGER_SECONDS"),
        ({"NOTIFY_KEPT_CONTACTS": "0"}, "NOTIFY_KEPT_CONTACTS"),
        ({"SMTP_PORT": "70000"}, "SMTP_PORT"),
    ],
)
def test_a_bad_variable_stops_start_up_naming_it(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(NotifySettings, {**BASE, **env})
