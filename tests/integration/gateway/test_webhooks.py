"""Webhook subscriptions and deliveries on real PostgreSQL, with the partner's DNS
played by a resolver the test controls: a delivery connects to the address it
checked, never to one the name answers later; ports and counts are limited."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.devstack.stack import free_port
from services.gateway.bootstrap import MIGRATIONS
from services.gateway.clients.webhooks import UNREACHABLE, DeliveryFailed, WebhookSender
from services.gateway.domain.errors import Refusal
from services.gateway.domain.partners import Partner
from services.gateway.domain.sealing import SecretBox
from services.gateway.storage import partners as partner_store
from services.gateway.storage import webhooks as webhook_store
from services.gateway.use_cases.partners import PartnerAdmin
from services.gateway.use_cases.ports import Address
from services.gateway.use_cases.webhooks import Webhooks
from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import migrate
from services.runtime.outbox import OutboxMessage

PUBLIC = "93.184.215.14"
HOOK_HOST = "hooks.partner.example"


@dataclass
class PartnerDns:
    """The partner's name server: answers whatever the partner set last."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def resolve(self, host: str) -> list[Address]:
        self.asked.append(host)
        return [ipaddress.ip_address(a) for a in self.answers.get(host, [])]


@dataclass
class Wire:
    """The network as the sender sees it: records each request, answers 200."""

    requests: list[httpx.Request] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return httpx.Response(200)

        return httpx.MockTransport(handle)


@pytest_asyncio.fixture
async def pool(new_database: Callable[..., Awaitable[str]]) -> AsyncIterator[asyncpg.Pool]:
    url = await new_database("gateway")
    opened = await create_pool(url, max_size=8)
    async with opened.acquire() as conn:
        await migrate(conn, "gateway", MIGRATIONS)
    try:
        yield opened
    finally:
        await close_pool(opened)


async def new_partner(pool: asyncpg.Pool, box: SecretBox) -> Partner:
    partner_id = await PartnerAdmin(pool, box).create("vendor", ["webhooks:manage"], 100)
    partner = await partner_store.load_partner(pool, partner_id)
    assert partner is not None
    return partner


async def emit_one(pool: asyncpg.Pool, partner: Partner) -> OutboxMessage:
    async with pool.acquire() as conn, conn.transaction():
        await webhook_store.emit(conn, partner.partner_id, "payment.captured", {"id": "p-1"})
    row = await pool.fetchrow(
        "select id, topic, idempotency_key, payload from outbox order by id desc limit 1"
    )
    assert row is not None
    return OutboxMessage(
        id=row["id"],
        topic=row["topic"],
        idempotency_key=row["idempotency_key"],
        payload=dict(row["payload"]),
        attempts=1,
        created_at=datetime.now(UTC),
    )


async def test_a_name_that_turns_private_after_subscribing_gets_no_delivery_there(
    pool: asyncpg.Pool,
) -> None:
    box = SecretBox(secrets.token_bytes(32))
    dns, wire = PartnerDns({HOOK_HOST: [PUBLIC]}), Wire()
    sender = WebhookSender(5, resolver=dns, allow_private=False, transport=wire.transport())
    webhooks = Webhooks(pool, box, sender, dns, allow_http=False, max_subscriptions=10)
    partner = await new_partner(pool, box)
    await webhooks.subscribe(partner, f"https://{HOOK_HOST}/in", ["payment.captured"])
    message = await emit_one(pool, partner)

    # Rebound: the name now answers an internal address (and a public one beside it).
    dns.answers[HOOK_HOST] = ["10.0.0.7", PUBLIC]
    with pytest.raises(DeliveryFailed):
        await webhooks.deliver(message)
    assert wire.requests == []
    logged = (await webhooks.deliveries(partner, 10))[0]
    assert (logged["state"], logged["last_status"], logged["last_error"]) == (
        "failed",
        None,
        UNREACHABLE,
    )

    dns.answers[HOOK_HOST] = [PUBLIC]
    await webhooks.deliver(message)
    [sent] = wire.requests
    # Sent to the address that was checked, named as the partner registered it.
    assert (sent.url.host, sent.url.port, sent.url.path) == (PUBLIC, None, "/in")
    assert sent.headers["Host"] == HOOK_HOST
    assert sent.extensions["sni_hostname"] == HOOK_HOST
    assert dns.asked.count(HOOK_HOST) == 3  # once at subscription, once a delivery
    await sender.close()


async def test_a_delivery_connects_to_the_resolved_address_not_to_the_name_again(
    pool: asyncpg.Pool,
) -> None:
    received: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(request.headers["Host"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/in", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    # A name the machine's own resolver cannot know: only the checked address reaches it.
    dns = PartnerDns({"hooks.partner.test": ["127.0.0.1"]})
    sender = WebhookSender(5, resolver=dns, allow_private=True)
    try:
        status = await sender.post(
            f"http://hooks.partner.test:{port}/in", "whsec_x", str(uuid.uuid4()), {"id": "e1"}
        )
        assert status == 204
        assert received == [f"hooks.partner.test:{port}"]
        with pytest.raises(DeliveryFailed) as unknown:
            await sender.post("http://unknown.partner.test/in", "whsec_x", "d", {"id": "e1"})
        assert str(unknown.value) == UNREACHABLE
        # Nothing listens there: the log says no more than for a name that is unknown.
        dns.answers["closed.partner.test"] = ["127.0.0.1"]
        with pytest.raises(DeliveryFailed) as closed:
            await sender.post(f"http://closed.partner.test:{free_port()}/in", "s", "d", {})
        assert str(closed.value) == UNREACHABLE
    finally:
        await sender.close()
        await runner.cleanup()


def certificate_for(name: str, folder: Path) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) files: a CA and a server certificate for ``name`` only,
    no address, so only a check against the name can pass."""
    now = datetime.now(UTC)

    def issue(
        subject: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        issue("test CA", ca_key, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        issue(name, key, ca_key)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "leaf.pem", folder / "leaf-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_tls_to_the_checked_address_still_verifies_the_certificate_for_the_name(
    tmp_path: Path,
) -> None:
    ca, leaf, key = certificate_for("hooks.partner.test", tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(leaf, key)

    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/in", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_tls).start()
    dns = PartnerDns({"hooks.partner.test": ["127.0.0.1"], "other.partner.test": ["127.0.0.1"]})
    sender = WebhookSender(
        5, resolver=dns, allow_private=True, verify=ssl.create_default_context(cafile=ca)
    )
    try:
        # Connected to 127.0.0.1, which the certificate does not name: it verifies
        # only because the name went along for SNI and the hostname check.
        assert await sender.post(f"https://hooks.partner.test:{port}/in", "s", "d", {}) == 200
        with pytest.raises(DeliveryFailed) as mismatched:
            await sender.post(f"https://other.partner.test:{port}/in", "s", "d", {})
        assert str(mismatched.value) == UNREACHABLE
    finally:
        await sender.close()
        await runner.cleanup()


async def test_an_https_url_on_another_port_than_443_is_refused_naming_the_url(
    pool: asyncpg.Pool,
) -> None:
    box = SecretBox(secrets.token_bytes(32))
    dns, wire = PartnerDns({HOOK_HOST: [PUBLIC]}), Wire()
    sender = WebhookSender(5, resolver=dns, allow_private=False, transport=wire.transport())
    webhooks = Webhooks(pool, box, sender, dns, allow_http=False, max_subscriptions=10)
    partner = await new_partner(pool, box)
    for url in (f"https://{HOOK_HOST}:8443/in", f"https://{HOOK_HOST}:22/in"):
        with pytest.raises(Refusal) as refused:
            await webhooks.subscribe(partner, url, ["payment.captured"])
        assert (refused.value.status, refused.value.field) == (422, "url")
        assert "443" in refused.value.detail
    dns.answers[HOOK_HOST] = ["192.168.1.10"]
    with pytest.raises(Refusal) as private:
        await webhooks.subscribe(partner, f"https://{HOOK_HOST}/in", ["payment.captured"])
    assert (private.value.status, private.value.field) == (422, "url")
    assert await webhooks.subscriptions(partner) == []
    await sender.close()


async def test_a_partner_holds_at_most_its_cap_of_subscriptions_even_when_racing(
    pool: asyncpg.Pool,
) -> None:
    box = SecretBox(secrets.token_bytes(32))
    dns, wire = PartnerDns({HOOK_HOST: [PUBLIC]}), Wire()
    sender = WebhookSender(5, resolver=dns, allow_private=False, transport=wire.transport())
    webhooks = Webhooks(pool, box, sender, dns, allow_http=False, max_subscriptions=3)
    partner = await new_partner(pool, box)
    other = await new_partner(pool, box)
    url = f"https://{HOOK_HOST}/in"
    outcomes = await asyncio.gather(
        *(webhooks.subscribe(partner, url, ["payment.captured"]) for _ in range(6)),
        return_exceptions=True,
    )
    refusals = [o for o in outcomes if isinstance(o, Refusal)]
    assert len(refusals) == 3 and len(outcomes) - len(refusals) == 3
    assert {(r.status, r.reason) for r in refusals} == {(409, "TOO_MANY_SUBSCRIPTIONS")}
    # Another partner's subscriptions are its own count.
    await webhooks.subscribe(other, url, ["payment.captured"])
    # Removing one frees its place.
    first = (await webhooks.subscriptions(partner))[0]
    await webhooks.unsubscribe(partner, uuid.UUID(first["id"]))
    await webhooks.subscribe(partner, url, ["payment.captured"])
    assert len(await webhooks.subscriptions(partner)) == 3
    await sender.close()
