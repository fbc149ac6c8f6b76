"""Providers that hand a message to a channel: SMTP for email, HTTP for SMS and push.

Each channel has an ordered list of providers; ``ProviderChain`` tries them in
order within one attempt, so a broken primary relay fails over to the next. A
batch of messages goes to a provider together (SMTP sends them over one kept
connection); each message still succeeds or fails on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Sequence
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import make_msgid
from typing import Protocol

import aiohttp
import aiosmtplib

from services.notify.use_cases.ports import DeliveryFailed, OutgoingMessage, SendWindow, Taken
from services.runtime.config import Secret

__all__ = [
    "DeliveryFailed",
    "HttpProvider",
    "OutgoingMessage",
    "Provider",
    "ProviderChain",
    "SmtpProvider",
]


class Provider(Protocol):
    name: str

    async def send_many(
        self, messages: Sequence[OutgoingMessage], *, window: SendWindow | None = None
    ) -> list[Refused | DeliveryFailed]:
        """Hand each message on within ``window``; per message the recipients the
        provider refused (none: every one took it) or why it was not taken."""
        ...

    async def close(self) -> None: ...


# The recipients a provider refused of a message it took for the others.
Refused = tuple[str, ...]
NOT_BEGUN = "not tried, the batch was out of time"

# Errors after which an SMTP connection is no longer usable (the server went away,
# or a reply never came); a refusal of one message leaves it usable.
_CONNECTION_LOST = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError)


class SmtpProvider:
    """An SMTP relay; STARTTLS and AUTH as configured.

    One connection carries many messages: it is opened when a message is to be
    sent, kept while messages follow, and opened again once it was idle for
    ``IDLE_SECONDS`` (a relay drops idle clients) or lost. A message that finds a
    kept connection dead is sent once more on a fresh one; any other failure is
    that message's alone.
    """

    IDLE_SECONDS = 30.0

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        mail_from: str,
        starttls: bool = False,
        username: str = "",
        password: Secret | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.name = name
        self._host = host
        self._port = port
        self._mail_from = mail_from
        self._starttls = starttls
        self._username = username
        self._password = password
        self._timeout = timeout_seconds
        self._local_hostname: str | None = None
        self._client: aiosmtplib.SMTP | None = None
        self._used_at = 0.0
        self._lock = asyncio.Lock()

    async def _hostname(self) -> str:
        # aiosmtplib otherwise resolves this machine's FQDN in a worker thread for every
        # connection (a DNS look-up each); it does not change while the process runs.
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        return self._local_hostname

    def _email(self, message: OutgoingMessage) -> Message:
        # The legacy (compat32) MIME classes build the same message for a fraction
        # of the CPU of ``EmailMessage``'s header parsing and folding.
        email = MIMEMultipart("alternative")
        email["From"] = self._mail_from
        email["To"] = ", ".join(message.recipients)
        # compat32 takes a Header (encoded words, folded) where typeshed says str.
        email["Subject"] = Header(message.subject, "utf-8")  # type: ignore[assignment]
        email["Message-ID"] = make_msgid(idstring=message.idempotency_key, domain="mamoru")
        email.attach(MIMEText(message.text, "plain", "utf-8"))
        email.attach(MIMEText(message.html, "html", "utf-8"))
        return email

    async def _connection(self) -> tuple[aiosmtplib.SMTP, bool]:
        """An open connection, and whether it is a kept one (it may have died unseen)."""
        client = self._client
        idle = time.monotonic() - self._used_at
        if client is not None and client.is_connected and idle < self.IDLE_SECONDS:
            return client, True
        self._drop()
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            start_tls=self._starttls,
            username=self._username or None,
            password=self._password.reveal() if self._password else None,
            timeout=self._timeout,
            local_hostname=await self._hostname(),
        )
        await client.connect()
        self._client = client
        return client, False

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _send_one(self, email: Message) -> dict[str, aiosmtplib.SMTPResponse]:
        for _ in range(2):
            client, kept = await self._connection()
            try:
                refused, _ = await client.send_message(email)
            except _CONNECTION_LOST:
                self._drop()
                if kept:
                    continue
                raise
            except BaseException:
                # Cut off mid-conversation (a deadline, a refusal, a bug): its replies
                # may still be on the wire, so the next message starts a new connection.
                self._drop()
                raise
            self._used_at = time.monotonic()
            return refused
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def send_many(
        self, messages: Sequence[OutgoingMessage], *, window: SendWindow | None = None
    ) -> list[Refused | DeliveryFailed]:
        outcomes: list[Refused | DeliveryFailed] = []
        async with self._lock:
            for message in messages:
                if window is not None and window.closed_to_new_messages():
                    outcomes.append(DeliveryFailed(f"{self.name}: {NOT_BEGUN}"))
                    continue
                cut = asyncio.timeout(None if window is None else window.seconds_left())
                try:
                    async with cut:
                        refused = await self._send_one(self._email(message))
                    # Taken for the others: sending it again would repeat it to them,
                    # on every retry while a refusal for now (4xx) lasts. A message
                    # every recipient refused raises instead, and is tried again.
                    outcomes.append(tuple(refused))
                except (aiosmtplib.SMTPException, OSError) as error:
                    why = (
                        "cut off at the end of the batch's time"
                        if cut.expired()
                        else f"{type(error).__name__}: {error}"
                    )
                    outcomes.append(DeliveryFailed(f"{self.name}: {why}"))
        return outcomes

    async def close(self) -> None:
        async with self._lock:
            client, self._client = self._client, None
            if client is not None and client.is_connected:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await client.quit()
            if client is not None:
                client.close()


class HttpProvider:
    """An SMS or push provider behind an HTTP endpoint taking JSON and a bearer key.

    The body is ``{"to", "subject", "text", "idempotency_key"}``; any 2xx answer
    means the provider took the message.
    """

    def __init__(
        self, name: str, *, endpoint: str, api_key: Secret, timeout_seconds: float = 10.0
    ) -> None:
        self.name = name
        self._endpoint = endpoint
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, message: OutgoingMessage) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Authorization": f"Bearer {self._api_key.reveal()}"}
        for recipient in message.recipients:
            body = {
                "to": recipient,
                "subject": message.subject,
                "text": message.text,
                "idempotency_key": f"{message.idempotency_key}:{recipient}",
            }
            try:
                async with self._session.post(self._endpoint, json=body, headers=headers) as reply:
                    if not 200 <= reply.status < 300:
                        raise DeliveryFailed(f"{self.name}: HTTP {reply.status}")
            except (aiohttp.ClientError, TimeoutError) as error:
                raise DeliveryFailed(f"{self.name}: {type(error).__name__}: {error}") from error

    async def send_many(
        self, messages: Sequence[OutgoingMessage], *, window: SendWindow | None = None
    ) -> list[Refused | DeliveryFailed]:
        async def one(message: OutgoingMessage) -> Refused | DeliveryFailed:
            if window is not None and window.closed_to_new_messages():
                return DeliveryFailed(f"{self.name}: {NOT_BEGUN}")
            try:
                async with asyncio.timeout(None if window is None else window.seconds_left()):
                    await self.send(message)
            except DeliveryFailed as failed:
                return failed
            except TimeoutError:
                return DeliveryFailed(f"{self.name}: cut off at the end of the batch's time")
            return ()

        return list(await asyncio.gather(*(one(message) for message in messages)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ProviderChain:
    """The providers of one channel, tried in order until one takes a message."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        self.providers = tuple(providers)

    @property
    def configured(self) -> bool:
        return bool(self.providers)

    async def send_many(
        self, messages: Sequence[OutgoingMessage], *, window: SendWindow | None = None
    ) -> list[Taken | DeliveryFailed]:
        """Per message, the provider that took it or why none did: each provider
        gets, together, the messages those before it failed to hand on."""
        if not self.providers:
            failed = DeliveryFailed("no provider is configured for this channel")
            return [failed for _ in messages]
        outcomes: list[Taken | DeliveryFailed] = [DeliveryFailed("") for _ in messages]
        errors: list[list[str]] = [[] for _ in messages]
        waiting = list(range(len(messages)))
        for provider in self.providers:
            if not waiting:
                break
            answers = await provider.send_many([messages[i] for i in waiting], window=window)
            still: list[int] = []
            for index, answer in zip(waiting, answers, strict=True):
                if not isinstance(answer, DeliveryFailed):
                    outcomes[index] = Taken(provider.name, refused=answer)
                else:
                    errors[index].append(str(answer) or type(answer).__name__)
                    still.append(index)
            waiting = still
        for index in waiting:
            outcomes[index] = DeliveryFailed("; ".join(errors[index]))
        return outcomes

    async def send(self, message: OutgoingMessage) -> Taken:
        """Send through the first provider that accepts; says which took it."""
        (outcome,) = await self.send_many([message])
        if isinstance(outcome, DeliveryFailed):
            raise outcome
        return outcome

    async def close(self) -> None:
        for provider in self.providers:
            await provider.close()
