"""The local SMTP server behind `make run` and the tests: a real SMTP conversation
in, each message kept as it arrived and read back decoded."""

from __future__ import annotations

from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import aiosmtplib

from services.devstack.smtp import LocalSmtpServer


async def test_a_japanese_message_is_kept_as_sent_and_reads_back_decoded(tmp_path) -> None:
    server = LocalSmtpServer(maildir=tmp_path / "mail")
    await server.start()
    sent = MIMEMultipart("alternative")
    sent["From"] = "no-reply@mamoru.test"
    sent["To"] = "hanako@example.jp"
    sent["Subject"] = Header("Mamoru: お支払い 1,200円", "utf-8")  # type: ignore[assignment]
    sent.attach(MIMEText("ローソン渋谷店でお支払いがありました。", "plain", "utf-8"))
    sent.attach(MIMEText("<p>ローソン渋谷店</p>", "html", "utf-8"))
    try:
        await aiosmtplib.send(sent, hostname="127.0.0.1", port=server.port)
        (received,) = await server.wait_for(1, within=30, to="hanako@example.jp")
    finally:
        await server.stop()

    assert received.subject == "Mamoru: お支払い 1,200円"
    assert received.text().strip() == "ローソン渋谷店でお支払いがありました。"
    assert received.html().strip() == "<p>ローソン渋谷店</p>"
    assert len(list((tmp_path / "mail" / "new").iterdir())) == 1
