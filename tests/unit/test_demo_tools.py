"""The newcomer's tools: the demo's authenticator never hands out a used code,
and `mamoru policy set --help` lists every switch and how to undo one."""

from __future__ import annotations

import time
from pathlib import Path

import pyotp
import pytest

from services.devstack.demo import (
    Demo,
    DemoMerchant,
    DemoPerson,
    load_device_key,
    next_totp_step,
    phone_key,
    take_totp_code,
)
from services.ops import cli


def test_a_totp_step_is_handed_out_once_and_never_beyond_what_identity_accepts() -> None:
    now = 1_800_000_000.0
    current = int(now) // 30
    assert next_totp_step(current - 5, now) == current
    assert next_totp_step(current, now) == current + 1
    assert next_totp_step(current + 1, now) is None  # wait for the clock


def test_mamoru_demo_totp_gives_a_fresh_code_and_remembers_its_step(tmp_path: Path) -> None:
    secret = pyotp.random_base32()
    current = int(time.time()) // 30
    Demo(
        person=DemoPerson("a@example.jp", "pw", "phone", "192.0.2.1", "id", secret, current - 1),
        merchant=DemoMerchant("m", "k"),
        wallet_top_up_yen=1,
    ).save(tmp_path)
    first, valid_for = take_totp_code(tmp_path)
    second, _ = take_totp_code(tmp_path)
    kept = Demo.load(tmp_path)
    assert kept is not None
    last = kept.person.totp_last_step
    # Two consecutive steps, neither of them the one already used.
    assert last - 1 >= current
    totp = pyotp.TOTP(secret)
    assert (first, second) == (totp.at((last - 1) * 30), totp.at(last * 30))
    assert valid_for > 0
    assert (tmp_path / "demo.json").stat().st_mode & 0o077 == 0


def test_the_demo_phone_keeps_one_owner_only_key_across_starts(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make run"):
        load_device_key(tmp_path)
    made = phone_key(tmp_path)
    assert (tmp_path / "demo-device.pem").stat().st_mode & 0o077 == 0
    assert phone_key(tmp_path).thumbprint == made.thumbprint
    assert load_device_key(tmp_path).thumbprint == made.thumbprint


def test_policy_set_help_lists_every_switch_and_how_to_undo_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        cli._parser().parse_args(["policy", "set", "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    for switch in cli.SWITCHES:
        assert f"\n  {switch} " in shown
    assert "top_up_channel card off" in shown and "(undo)" in shown
