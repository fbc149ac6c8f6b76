"""Providers that hand a message to a channel: SMTP for email, HTTP for SMS and push.

Each channel has an ordered list of providers; ``ProviderChain`` tries them in
order within one attempt, so a broken primary relay fails over to the next.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol

import aiohttp
import aiosmtplib

from services.notify.use_cases.ports import DeliveryFailed, OutgoingMessage
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

    async def send(self, message: OutgoingMessage) -> None: ...


class SmtpProvider:
    """An SMTP relay; STARTTLS and AUTH as configured."""

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

    async def _hostname(self) -> str:
        # aiosmtplib otherwise resolves this machine's FQDN in a worker thread for every
        # message (a DNS look-up per notice); it does not change while the process runs.
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        return self._local_hostname

    async def send(self, message: OutgoingMessage) -> None:
        email = EmailMessage()
        email["From"] = self._mail_from
        email["To"] = ", ".join(message.recipients)
        email["Subject"] = message.subject
        email["Message-ID"] = make_msgid(idstring=message.idempotency_key, domain="mamoru")
        email.set_content(message.text)
        email.add_alternative(message.html, subtype="html")
        try:
            await aiosmtplib.send(
                email,
                hostname=self._host,
                port=self._port,
                start_tls=self._starttls,
                username=self._username or None,
                password=self._password.reveal() if self._password else None,
                timeout=self._timeout,
                local_hostname=await self._hostname(),
            )
        except aiosmtplib.SMTPException as error:
            raise DeliveryFailed(f"{self.name}: {type(error).__name__}: {error}") from error
        except OSError as error:
            raise DeliveryFailed(f"{self.name}: {type(error).__name__}: {error}") from error


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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ProviderChain:
    """The providers of one channel, tried in order until one takes the message."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        self.providers = tuple(providers)

    @property
    def configured(self) -> bool:
        return bool(self.providers)

    async def send(self, message: OutgoingMessage) -> str:
        """Send through the first provider that accepts; returns its name."""
        if not self.providers:
            raise DeliveryFailed("no provider is configured for this channel")
        errors: list[str] = []
        for provider in self.providers:
            try:
                await provider.send(message)
            except (TimeoutError, DeliveryFailed) as error:
                errors.append(str(error) or type(error).__name__)
                continue
            return provider.name
        raise DeliveryFailed("; ".join(errors))
