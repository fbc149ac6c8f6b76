"""Posting a signed event to a partner's URL, at an address checked before connecting."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import time
from typing import Any

import httpx
import structlog

from services.gateway.domain.signing import SIGNATURE_HEADER, sign
from services.gateway.use_cases.ports import Address, AddressResolver

_log = structlog.get_logger("mamoru.gateway.webhooks")

# What a partner reads in its delivery log. Deliberately the same whatever went wrong
# on the way (refused, reset, timed out, bad certificate, unknown name, private
# address): anything finer would let a partner map networks through the gateway.
UNREACHABLE = "could not reach the URL"


class DeliveryFailed(Exception):
    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


def is_public(address: Address) -> bool:
    # An IPv4-mapped IPv6 address reaches the IPv4 host it embeds.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_global
    return address.is_global


def only_public(addresses: list[Address]) -> bool:
    return bool(addresses) and all(is_public(address) for address in addresses)


class SystemResolver:
    """The host's own resolver; an unknown name has no addresses."""

    async def resolve(self, host: str) -> list[Address]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError):
            return []
        addresses: list[Address] = []
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if address not in addresses:
                addresses.append(address)
        return addresses


class WebhookSender:
    """Resolves the URL's host once per delivery, checks every address, and connects
    to a checked one: resolving again to connect would let a name answer a public
    address to the check and a private one to the connection (DNS rebinding)."""

    def __init__(
        self,
        timeout: float,
        *,
        resolver: AddressResolver,
        allow_private: bool,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout = timeout
        self._resolver = resolver
        self._allow_private = allow_private
        # Redirects are not followed: a delivery goes to the registered URL only.
        # No proxy from the environment: it would resolve the name again itself.
        # No kept-alive connections: a pool is keyed by address, so a connection
        # verified for one partner's hostname could carry another partner's delivery.
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            verify=verify,
            limits=httpx.Limits(max_keepalive_connections=0),
            transport=transport,
        )

    async def _address(self, host: str) -> Address:
        try:
            addresses = await asyncio.wait_for(self._resolver.resolve(host), self._timeout)
        except TimeoutError:
            addresses = []
        if not addresses or not (self._allow_private or only_public(addresses)):
            _log.info("webhook.address_refused", host=host, addresses=[str(a) for a in addresses])
            raise DeliveryFailed(None, UNREACHABLE)
        return addresses[0]

    async def post(self, url: str, secret: str, delivery_id: str, payload: dict[str, Any]) -> int:
        target = httpx.URL(url)
        host = target.raw_host.decode("ascii")
        address = await self._address(host)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            # The name the partner registered, while the connection goes to the
            # address checked above; TLS verifies the certificate for the name too.
            "Host": target.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": "Mamoru-Webhooks/1",
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
            "Mamoru-Event-Id": str(payload.get("id", "")),
            "Mamoru-Delivery-Id": delivery_id,
        }
        try:
            response = await self._client.post(
                target.copy_with(host=str(address)),
                content=body,
                headers=headers,
                extensions={"sni_hostname": host},
            )
        except httpx.HTTPError as error:
            _log.info(
                "webhook.post_failed",
                delivery_id=delivery_id,
                address=str(address),
                error=f"{type(error).__name__}: {error}",
            )
            raise DeliveryFailed(None, UNREACHABLE) from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(response.status_code, f"answered {response.status_code}")
        return response.status_code

    async def close(self) -> None:
        await self._client.aclose()
