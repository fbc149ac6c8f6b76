"""mTLS, per-RPC allow-lists and bearer tokens, over real grpc.aio servers on free ports.

Two servers run per test: an "identity" that publishes its JWKS over mTLS, and a
"wallet" whose guarded methods verify tokens against that JWKS.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jwt.utils import base64url_encode

from services.devstack.pki import ensure_local_pki
from services.runtime.access import (
    AccessInterceptor,
    allow,
    bearer_metadata,
    current_caller,
    current_claims,
)
from services.runtime.config import ConfigError
from services.runtime.tls import TlsMaterial, load_tls, secure_channel, server_credentials
from services.runtime.tokens import (
    JwksCache,
    RevocationList,
    SigningKey,
    TokenVerifier,
    generate_signing_key,
    jwks_document,
    sign_token,
)

PRINCIPALS = ("identity", "wallet", "risk", "notify", "operator", "gateway", "pos")
ISSUER = "https://identity.mamoru.test"
GUARDED = "mamoru.test.v1.GuardedService"
GET_JWKS = "/mamoru.identity.v1.IdentityService/GetJwks"
TIMEOUT = 10.0


def method(name: str) -> str:
    return f"/{GUARDED}/{name}"


POLICY = {
    method("WhoAmI"): allow("wallet", "operator"),
    method("Pay"): allow("gateway", audiences=["wallet"]),
    method("WatchBalance"): allow("gateway", audiences=["wallet"]),
    method("CountScans"): allow("pos"),
    method("EchoScans"): allow("pos"),
    method("TailLedger"): allow("operator"),
}


async def who_am_i(request: bytes, context: Any) -> bytes:
    return current_caller().encode()


async def pay(request: bytes, context: Any) -> bytes:
    claims = current_claims()
    assert claims is not None
    return f"{current_caller()} paid for {claims.subject}".encode()


async def watch_balance(request: bytes, context: Any) -> AsyncIterator[bytes]:
    claims = current_claims()
    assert claims is not None
    for update in (b"100", b"90"):
        yield claims.subject.encode() + b":" + update


async def count_scans(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return str(len([scan async for scan in requests])).encode()


async def echo_scans(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for scan in requests:
        yield scan.upper()


async def tail_ledger(request: bytes, context: Any) -> None:
    # The reader/writer style of server streaming, next to the async-generator style above.
    for entry in (b"entry-1", b"entry-2"):
        await context.write(entry)


async def not_in_policy(request: bytes, context: Any) -> bytes:
    return b"should never run"


GUARDED_HANDLERS = {
    "WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i),
    "Pay": grpc.unary_unary_rpc_method_handler(pay),
    "WatchBalance": grpc.unary_stream_rpc_method_handler(watch_balance),
    "CountScans": grpc.stream_unary_rpc_method_handler(count_scans),
    "EchoScans": grpc.stream_stream_rpc_method_handler(echo_scans),
    "TailLedger": grpc.unary_stream_rpc_method_handler(tail_ledger),
    "NotInPolicy": grpc.unary_unary_rpc_method_handler(not_in_policy),
}


class IdentityKeys:
    """Identity's signing keys as its GetJwks RPC publishes them, and how often it was asked."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = [generate_signing_key()]
        self.jwks_requests = 0

    async def get_jwks(self, request: bytes, context: Any) -> bytes:
        self.jwks_requests += 1
        return json.dumps(jwks_document(self.keys)).encode()


@dataclass
class Stack:
    tls_dir: Path
    wallet_port: int
    identity: IdentityKeys
    revocations: RevocationList
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def channel(self, principal: str) -> grpc.aio.Channel:
        tls = load_tls(self.tls_dir, principal)
        channel = secure_channel(f"127.0.0.1:{self.wallet_port}", tls, server_name="wallet")
        self.channels.append(channel)
        return channel

    def token(self, key: SigningKey | None = None, **overrides: Any) -> str:
        return sign_token(key or self.identity.keys[0], access_claims(**overrides))


def access_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "account-42",
        "aud": "wallet",
        "exp": now + 300,
        "iat": now,
        "auth_time": now,
        "jti": "token-1",
        "sid": "session-1",
        "cnf": {"jkt": "device-key-thumbprint"},
        "acr": 2,
        "amr": ["hwk"],
    }
    claims.update(overrides)
    return claims


async def start_server(
    tls: TlsMaterial, interceptor: AccessInterceptor, service: str, handlers: dict[str, Any]
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=[interceptor])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, handlers)])
    health_pb2_grpc.add_HealthServicer_to_server(grpc_health.aio.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls))
    await server.start()
    return server, port


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    ensure_local_pki(folder, PRINCIPALS)
    return folder


@pytest.fixture
async def stack(tls_dir: Path) -> AsyncIterator[Stack]:
    identity = IdentityKeys()
    identity_server, identity_port = await start_server(
        load_tls(tls_dir, "identity"),
        AccessInterceptor({GET_JWKS: allow("wallet")}),
        "mamoru.identity.v1.IdentityService",
        {"GetJwks": grpc.unary_unary_rpc_method_handler(identity.get_jwks)},
    )
    jwks_channel = secure_channel(
        f"127.0.0.1:{identity_port}", load_tls(tls_dir, "wallet"), server_name="identity"
    )

    async def fetch_jwks() -> dict[str, Any]:
        answer = await jwks_channel.unary_unary(GET_JWKS)(b"", timeout=TIMEOUT)
        document: dict[str, Any] = json.loads(answer)
        return document

    revocations = RevocationList()
    verifier = TokenVerifier(JwksCache(fetch_jwks), issuer=ISSUER, revocations=revocations)
    wallet_server, wallet_port = await start_server(
        load_tls(tls_dir, "wallet"), AccessInterceptor(POLICY, verifier), GUARDED, GUARDED_HANDLERS
    )
    running = Stack(tls_dir, wallet_port, identity, revocations)
    yield running
    for channel in [*running.channels, jwks_channel]:
        await channel.close()
    await wallet_server.stop(None)
    await identity_server.stop(None)


async def call(channel: grpc.aio.Channel, name: str, token: str | None = None) -> bytes:
    metadata = bearer_metadata(token) if token is not None else None
    answer: bytes = await channel.unary_unary(method(name))(b"", metadata=metadata, timeout=TIMEOUT)
    return answer


async def refusal(
    channel: grpc.aio.Channel, name: str, token: str | None = None
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(channel, name, token)
    return refused.value


# Local PKI


def test_private_keys_are_readable_by_their_owner_only(tls_dir: Path) -> None:
    for key_file in [tls_dir / "ca-key.pem", *(tls_dir / f"{name}-key.pem" for name in PRINCIPALS)]:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, key_file


def test_principal_certificate_names_the_principal_and_localhost(tls_dir: Path) -> None:
    cert = x509.load_pem_x509_certificate((tls_dir / "risk.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tls_dir / "ca.pem").read_bytes())

    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "risk"
    assert names.get_values_for_type(x509.DNSName) == ["risk", "localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert timedelta(days=360) < cert.not_valid_after_utc - cert.not_valid_before_utc
    cert.verify_directly_issued_by(ca)


def test_local_pki_is_reused_while_valid(tmp_path: Path) -> None:
    ensure_local_pki(tmp_path, ["wallet"])
    before = {path.name: path.read_bytes() for path in tmp_path.glob("*.pem")}

    ensure_local_pki(tmp_path, ["wallet", "pos"])

    after = {path.name: path.read_bytes() for path in tmp_path.glob("*.pem")}
    assert {name: after[name] for name in before} == before
    assert {"pos.pem", "pos-key.pem"} <= after.keys()


def test_certificate_from_a_previous_ca_is_reissued(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    ensure_local_pki(elsewhere, ["wallet"])
    here = tmp_path / "here"
    ensure_local_pki(here, ["wallet"])
    for name in ("wallet.pem", "wallet-key.pem"):
        shutil.copy(elsewhere / name, here / name)

    ensure_local_pki(here, ["wallet"])

    ca = x509.load_pem_x509_certificate((here / "ca.pem").read_bytes())
    x509.load_pem_x509_certificate((here / "wallet.pem").read_bytes()).verify_directly_issued_by(ca)


def test_new_ca_reissues_every_principal(tmp_path: Path) -> None:
    ensure_local_pki(tmp_path, ["wallet"])
    old_wallet = (tmp_path / "wallet.pem").read_bytes()
    os.remove(tmp_path / "ca-key.pem")

    ensure_local_pki(tmp_path, ["wallet"])

    assert (tmp_path / "wallet.pem").read_bytes() != old_wallet


def test_missing_tls_file_is_named_in_the_error(tmp_path: Path) -> None:
    ensure_local_pki(tmp_path, ["wallet"])

    with pytest.raises(ConfigError, match=r"pos\.pem"):
        load_tls(tmp_path, "pos")


def test_key_that_does_not_match_its_certificate_stops_loading(tmp_path: Path) -> None:
    ensure_local_pki(tmp_path, ["wallet", "pos"])
    shutil.copy(tmp_path / "pos-key.pem", tmp_path / "wallet-key.pem")

    with pytest.raises(ConfigError, match=r"wallet-key\.pem"):
        load_tls(tmp_path, "wallet")


def test_principal_name_that_is_not_a_plain_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="principal"):
        ensure_local_pki(tmp_path, ["../wallet"])


def test_tls_material_repr_hides_the_private_key(tls_dir: Path) -> None:
    tls = load_tls(tls_dir, "wallet")

    assert "PRIVATE KEY" not in repr(tls)
    assert b"PRIVATE KEY" in tls.key_pem


# Callers and allow-lists


async def test_call_without_a_client_certificate_fails(tls_dir: Path, stack: Stack) -> None:
    trust_only = grpc.ssl_channel_credentials(root_certificates=(tls_dir / "ca.pem").read_bytes())
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{stack.wallet_port}",
        trust_only,
        options=[("grpc.ssl_target_name_override", "wallet")],
    ) as anonymous:
        refused = await refusal(anonymous, "WhoAmI")

    assert refused.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_certificate_from_another_ca_fails(tmp_path: Path, stack: Stack) -> None:
    ensure_local_pki(tmp_path, ["wallet"])
    impostor = load_tls(tmp_path, "wallet")
    genuine_ca = load_tls(stack.tls_dir, "wallet").ca_pem
    tls = TlsMaterial(ca_pem=genuine_ca, cert_pem=impostor.cert_pem, key_pem=impostor.key_pem)
    async with secure_channel(
        f"127.0.0.1:{stack.wallet_port}", tls, server_name="wallet"
    ) as channel:
        refused = await refusal(channel, "WhoAmI")

    assert refused.code() == grpc.StatusCode.UNAVAILABLE


async def test_allowed_caller_succeeds_and_the_handler_sees_its_name(stack: Stack) -> None:
    assert await call(stack.channel("operator"), "WhoAmI") == b"operator"
    assert await call(stack.channel("wallet"), "WhoAmI") == b"wallet"


async def test_caller_off_the_allow_list_is_denied_without_learning_who_is_on_it(
    stack: Stack,
) -> None:
    refused = await refusal(stack.channel("pos"), "WhoAmI")

    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "wallet" not in (refused.details() or "")
    assert "operator" not in (refused.details() or "")


async def test_method_absent_from_the_policy_is_denied(stack: Stack) -> None:
    refused = await refusal(stack.channel("operator"), "NotInPolicy")

    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_health_check_is_open_to_every_principal(stack: Stack) -> None:
    health = health_pb2_grpc.HealthStub(stack.channel("pos"))

    answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)

    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_client_streaming_rpc_is_guarded(stack: Stack) -> None:
    count_scans = "CountScans"

    allowed = await stack.channel("pos").stream_unary(method(count_scans))(
        iter([b"a", b"b", b"c"]), timeout=TIMEOUT
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.channel("gateway").stream_unary(method(count_scans))(
            iter([b"a"]), timeout=TIMEOUT
        )

    assert allowed == b"3"
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_bidirectional_streaming_rpc_is_guarded(stack: Stack) -> None:
    echo = method("EchoScans")

    allowed = [
        answer async for answer in stack.channel("pos").stream_stream(echo)(iter([b"a", b"b"]))
    ]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        _ = [answer async for answer in stack.channel("wallet").stream_stream(echo)(iter([b"a"]))]

    assert allowed == [b"A", b"B"]
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_server_streaming_rpc_written_through_the_context_is_guarded(stack: Stack) -> None:
    tail = method("TailLedger")

    allowed = [entry async for entry in stack.channel("operator").unary_stream(tail)(b"")]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        _ = [entry async for entry in stack.channel("pos").unary_stream(tail)(b"")]

    assert allowed == [b"entry-1", b"entry-2"]
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


# End-user tokens


async def test_valid_token_reaches_the_handler_as_claims(stack: Stack) -> None:
    answer = await call(stack.channel("gateway"), "Pay", stack.token())

    assert answer == b"gateway paid for account-42"


async def test_valid_token_reaches_a_streaming_handler(stack: Stack) -> None:
    watch = stack.channel("gateway").unary_stream(method("WatchBalance"))

    updates = [u async for u in watch(b"", metadata=bearer_metadata(stack.token()))]

    assert updates == [b"account-42:100", b"account-42:90"]


async def test_streaming_call_with_a_bad_token_is_unauthenticated(stack: Stack) -> None:
    watch = stack.channel("gateway").unary_stream(method("WatchBalance"))
    expired = stack.token(exp=int(time.time()) - 600, iat=int(time.time()) - 900)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        _ = [u async for u in watch(b"", metadata=bearer_metadata(expired))]

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_call_without_a_bearer_token_is_unauthenticated(stack: Stack) -> None:
    refused = await refusal(stack.channel("gateway"), "Pay")

    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.details() == "bearer token required"


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization", "Basic b3BlcmF0b3I6aHVudGVyMg=="),),
        (("authorization", "Bearer "),),
        (("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")),
    ],
)
async def test_authorization_that_is_not_one_bearer_token_is_unauthenticated(
    stack: Stack, metadata: tuple[tuple[str, str], ...]
) -> None:
    pay = stack.channel("gateway").unary_unary(method("Pay"))

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await pay(b"", metadata=metadata, timeout=TIMEOUT)

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_caller_off_the_allow_list_is_denied_even_with_a_valid_token(stack: Stack) -> None:
    refused = await refusal(stack.channel("pos"), "Pay", stack.token())

    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED


def wrong_signature(stack: Stack) -> str:
    genuine = stack.identity.keys[0]
    forger = SigningKey(kid=genuine.kid, private_key=generate_signing_key().private_key)
    return stack.token(forger)


def unknown_kid(stack: Stack) -> str:
    return stack.token(generate_signing_key())


def alg_none(stack: Stack) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": stack.identity.keys[0].kid}
    segments = [json.dumps(header).encode(), json.dumps(access_claims()).encode()]
    return ".".join(base64url_encode(segment).decode() for segment in segments) + "."


def expired(stack: Stack) -> str:
    now = int(time.time())
    return stack.token(iat=now - 900, auth_time=now - 900, exp=now - 600)


def wrong_audience(stack: Stack) -> str:
    return stack.token(aud="identity")


def revoked_session(stack: Stack) -> str:
    stack.revocations.revoke("session-7", datetime.now(UTC) + timedelta(minutes=10))
    return stack.token(sid="session-7")


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (wrong_signature, "bad signature"),
        (unknown_kid, "unknown signing key"),
        (alg_none, "algorithm not accepted"),
        (expired, "token expired"),
        (wrong_audience, "wrong audience"),
        (revoked_session, "session revoked"),
    ],
)
async def test_refused_token_is_unauthenticated(stack: Stack, forge: Any, reason: str) -> None:
    refused = await refusal(stack.channel("gateway"), "Pay", forge(stack))

    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.details() == reason


async def test_key_rotated_in_at_identity_is_picked_up_by_refetching_the_jwks(
    stack: Stack,
) -> None:
    gateway = stack.channel("gateway")
    await call(gateway, "Pay", stack.token())
    assert stack.identity.jwks_requests == 1
    rotated = generate_signing_key()
    stack.identity.keys.append(rotated)

    answer = await call(gateway, "Pay", stack.token(rotated, jti="token-2"))

    assert answer == b"gateway paid for account-42"
    assert stack.identity.jwks_requests == 2


async def test_flood_of_unknown_kids_reaches_identity_once_per_interval(stack: Stack) -> None:
    gateway = stack.channel("gateway")
    await call(gateway, "Pay", stack.token())

    for _ in range(20):
        refused = await refusal(gateway, "Pay", stack.token(generate_signing_key()))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED

    assert stack.identity.jwks_requests == 2


def test_policy_requiring_tokens_needs_a_verifier() -> None:
    with pytest.raises(ValueError, match="TokenVerifier"):
        AccessInterceptor({method("Pay"): allow("gateway", audiences=["wallet"])})


def test_policy_entry_without_callers_is_refused() -> None:
    with pytest.raises(ValueError, match="no caller"):
        AccessInterceptor({method("WhoAmI"): allow()})


async def test_caller_is_unknown_outside_an_admitted_rpc(stack: Stack) -> None:
    await call(stack.channel("operator"), "WhoAmI")

    with pytest.raises(RuntimeError, match="no caller"):
        current_caller()
    assert current_claims() is None
