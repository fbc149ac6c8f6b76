"""A local SMTP server that keeps every message it accepts, for `make run` and tests.

It is a real SMTP server (aiosmtpd): notify talks to it exactly as it would to a
relay. Messages are kept in memory and, when a folder is given, in a Maildir so
that another process (a test, a person) can read what was "sent".
"""

from __future__ import annotations

import asyncio
import email
import email.parser
import email.policy
import functools
import mailbox
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class ReceivedMessage:
    """One accepted message: who it was addressed to (envelope) and its content.

    The content is parsed when first read, not when it arrives: most messages are
    only counted, and parsing each one at arrival cost more CPU than sending it.
    """

    mail_from: str
    recipients: list[str]
    raw: bytes

    @functools.cached_property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @functools.cached_property
    def subject(self) -> str:
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(self.raw)
        return str(headers["Subject"] or "")

    def text(self) -> str:
        """The plain-text body (or the only body)."""
        part = self.message.get_body(preferencelist=("plain", "html"))
        return part.get_content() if part is not None else ""

    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content() if part is not None else ""


@dataclass
class _Handler:
    store: list[ReceivedMessage]
    maildir: mailbox.Maildir | None
    refuse_next: int = 0
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return "451 4.3.0 Temporary failure, try again later"
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        received = ReceivedMessage(
            mail_from=str(envelope.mail_from), recipients=list(envelope.rcpt_tos), raw=raw
        )
        async with self.arrived:
            self.store.append(received)
            if self.maildir is not None:
                self.maildir.add(raw)
            self.arrived.notify_all()
        return "250 2.0.0 OK"


class LocalSmtpServer:
    """``await start()``, read ``port``, inspect ``messages``, ``await stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, maildir: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.messages: list[ReceivedMessage] = []
        box = mailbox.Maildir(maildir, create=True) if maildir is not None else None
        self._handler = _Handler(store=self.messages, maildir=box)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self._handler, hostname="mamoru-local-smtp"), self.host, self.port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def refuse_next(self, count: int) -> None:
        """Answer the next ``count`` messages with a temporary failure (451)."""
        self._handler.refuse_next = count

    def to(self, address: str) -> list[ReceivedMessage]:
        """Messages whose envelope recipients include ``address`` (case-insensitive)."""
        wanted = address.lower()
        return [m for m in self.messages if wanted in (r.lower() for r in m.recipients)]

    async def wait_for(
        self, count: int, within: float = 60.0, **match: Any
    ) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages (to ``match['to']`` when given) arrived."""

        def found() -> list[ReceivedMessage]:
            return self.to(match["to"]) if "to" in match else list(self.messages)

        async with asyncio.timeout(within), self._handler.arrived:
            await self._handler.arrived.wait_for(lambda: len(found()) >= count)
        return found()

    async def wait_for_matching(
        self, count: int, where: Callable[[ReceivedMessage], bool], within: float
    ) -> int:
        """Wait until ``count`` messages satisfy ``where`` or ``within`` seconds passed;
        how many do. Each message is looked at once, however many arrive meanwhile."""
        seen = 0
        matched = 0

        def matching() -> int:
            nonlocal seen, matched
            fresh = self.messages[seen:]
            seen += len(fresh)
            matched += sum(1 for m in fresh if where(m))
            return matched

        try:
            async with asyncio.timeout(within), self._handler.arrived:
                await self._handler.arrived.wait_for(lambda: matching() >= count)
        except TimeoutError:
            pass
        return matching()
