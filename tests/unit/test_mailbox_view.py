"""`mamoru mail` reads the local Maildir as a person would: decoded Japanese,
newest first, with the latest codes and links pulled out on top."""

from __future__ import annotations

import io
import mailbox
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from services.devstack.mailbox_view import read_mailbox, render
from services.ops import cli


def _deliver(folder: Path, subject: str, body: str, at: float) -> None:
    message = EmailMessage()
    message["To"] = "hanako@example.jp"
    message["From"] = "Mamoru <no-reply@mamoru.local>"
    message["Subject"] = subject
    # As notify sends it: UTF-8 in base64, unreadable in the raw file.
    message.set_content(body, charset="utf-8", cte="base64")
    kept = mailbox.MaildirMessage(message)
    kept.set_date(at)
    mailbox.Maildir(folder, create=True).add(kept)


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    folder = tmp_path / "mail"
    now = time.time()
    _deliver(
        folder, "【Mamoru】確認コード", "次のコードを入力してください。\nコード: 123456\n", now - 60
    )
    _deliver(
        folder,
        "【Mamoru】パスワードの再設定",
        "こちらから再設定してください:\nhttp://127.0.0.1:8080/reset-password?token=abc_DEF-1\n",
        now - 30,
    )
    _deliver(folder, "【Mamoru】サインインコード", "コード: 654321\n", now)
    return folder


def test_the_mailbox_is_decoded_and_listed_newest_first(maildir: Path) -> None:
    assert b"\xe3\x82\xb3" not in b"".join(p.read_bytes() for p in maildir.glob("new/*"))
    mails = read_mailbox(maildir)
    assert [m.subject for m in mails] == [
        "【Mamoru】サインインコード", "【Mamoru】パスワードの再設定", "【Mamoru】確認コード"
    ]  # fmt: skip
    assert "次のコードを入力してください。" in mails[2].body


def test_the_latest_codes_and_links_come_first(maildir: Path) -> None:
    shown = render(read_mailbox(maildir), limit=10, full=False)
    codes_part, links_part = shown.split("Latest links")
    assert codes_part.index("654321") < codes_part.index("123456")
    assert "http://127.0.0.1:8080/reset-password?token=abc_DEF-1" in links_part.split("\n\n")[0]


async def test_mamoru_mail_prints_the_local_mailbox(
    maildir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAMORU_VAR", str(maildir.parent))
    out = io.StringIO()
    code = await cli.run(["mail", "--limit", "1"], address="", tls_dir=Path(), out=out)
    assert code == 0
    assert "654321" in out.getvalue()
    assert "3 messages; the newest 1:" in out.getvalue()


async def test_mamoru_mail_says_so_when_the_mailbox_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAMORU_VAR", str(tmp_path))
    out = io.StringIO()
    assert await cli.run(["mail"], address="", tls_dir=Path(), out=out) == 0
    assert out.getvalue().strip() == "The mailbox is empty."
