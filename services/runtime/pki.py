"""A local certificate authority for `make run` and tests, and gRPC TLS credentials.

Every process holds a certificate whose common name is its principal (``identity``,
``wallet``, ``operator``, ``pos``...). Servers require a client certificate from the
same CA, so the access policy can trust the peer's common name as the caller.
In Kubernetes the same files come from a mounted secret; only the local CA is made here.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.runtime.config import ConfigError

CA_COMMON_NAME = "Mamoru local CA"
CERTIFICATE_LIFETIME = timedelta(days=365)
# Renew well before expiry so a long-running dev stack never meets an expired certificate.
RENEWAL_MARGIN = timedelta(days=30)
# Tolerates small clock differences between the machine that issued and the one verifying.
BACKDATE = timedelta(minutes=5)

_PRINCIPAL_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes a process needs for mutual TLS; the private key never shows in repr."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)


def ensure_local_pki(folder: Path, principals: Sequence[str]) -> None:
    """Create, or reuse while still valid, the CA and one certificate per principal.

    Writes ``ca.pem``/``ca-key.pem`` and ``<name>.pem``/``<name>-key.pem`` into
    ``folder``. A new CA re-issues every principal's certificate.
    """
    for name in principals:
        if not _PRINCIPAL_NAME.fullmatch(name) or name == "ca":
            raise ValueError(
                f"principal {name!r} must be lowercase letters, digits and dashes, not 'ca'"
            )
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _exclusive(folder / ".lock"):
        now = datetime.now(UTC)
        authority = _reusable_ca(folder, now)
        reissue_all = authority is None
        if authority is None:
            authority = _issue_ca(now)
            _write_pair(folder, "ca", *authority)
        ca_key, ca_cert = authority
        for name in principals:
            if reissue_all or not _reusable_leaf(folder, name, ca_cert, now):
                _write_pair(folder, name, *_issue_leaf(name, ca_key, ca_cert, now))


def load_tls(folder: Path, principal: str) -> TlsMaterial:
    """Read the CA and ``principal``'s certificate and key, failing fast on a bad file."""
    ca_path = folder / "ca.pem"
    cert_path = folder / f"{principal}.pem"
    key_path = folder / f"{principal}-key.pem"
    ca_pem, cert_pem, key_pem = (_read(path) for path in (ca_path, cert_path, key_path))
    _parse_certificate(ca_path, ca_pem)
    certificate = _parse_certificate(cert_path, cert_pem)
    key = _parse_private_key(key_path, key_pem)
    if key.public_key() != certificate.public_key():
        raise ConfigError(f"{key_path} is not the key of the certificate in {cert_path}")
    return TlsMaterial(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem)


def server_credentials(tls: TlsMaterial) -> grpc.ServerCredentials:
    """Server TLS that refuses any client without a certificate from our CA."""
    return grpc.ssl_server_credentials(
        [(tls.key_pem, tls.cert_pem)],
        root_certificates=tls.ca_pem,
        require_client_auth=True,
    )


def channel_credentials(tls: TlsMaterial) -> grpc.ChannelCredentials:
    """Client TLS that presents our certificate and trusts only our CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem,
        private_key=tls.key_pem,
        certificate_chain=tls.cert_pem,
    )


def secure_channel(
    target: str,
    tls: TlsMaterial,
    *,
    server_name: str,
    interceptors: Sequence[Any] | None = None,
) -> grpc.aio.Channel:
    """An mTLS channel that expects the server's certificate to be for ``server_name``.

    The override lets ``127.0.0.1:port`` reach a server whose certificate names
    ``identity`` rather than the address dialled. ``target`` may name several
    replicas (see ``grpc_target``); calls are spread over them round robin.
    """
    resolved = grpc_target(target)
    options: list[tuple[str, Any]] = [
        ("grpc.ssl_target_name_override", server_name),
        *RECONNECT_OPTIONS,
    ]
    if _may_name_several(resolved):
        # Every address the name resolves to gets a connection and a share of the
        # calls, instead of all calls on the first address. One address keeps
        # pick_first, whose call after a dropped connection waits for the new one
        # instead of failing at once as round robin's does while it reconnects.
        options.append(("grpc.lb_policy_name", "round_robin"))
    return grpc.aio.secure_channel(
        resolved, channel_credentials(tls), options=options, interceptors=interceptors
    )


def _may_name_several(target: str) -> bool:
    """A list of addresses, or a name that may resolve to several (dns:///...)."""
    if target.startswith(("ipv4:", "ipv6:")):
        return "," in target
    return "://" in target or not target.replace(".", "").replace(":", "").isdigit()


# gRPC's default reconnect backoff grows to 120 s, so a peer back after a minute's
# outage could wait two more minutes for its callers (and a stream follower keep a
# stale kill switch that long). Peers are in the same cluster: retry a refused
# connection at least every second, so callers are back within about a second of
# the peer. The minimum is how long one attempt (TCP and TLS) may take.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.min_reconnect_backoff_ms", 5000),
)


def grpc_target(address: str) -> str:
    """A gRPC target for ``address``: ``host:port``, a comma-separated list of them
    (``127.0.0.1:50052,127.0.0.1:50072``, several local replicas), or any target
    with a scheme, such as ``dns:///wallet.mamoru.svc:50052`` for a headless
    Kubernetes Service, which resolves to every ready pod."""
    address = address.strip()
    if "," not in address or ":///" in address or address.startswith(("ipv4:", "ipv6:")):
        return address
    parts = [part.strip() for part in address.split(",") if part.strip()]
    scheme = "ipv6" if all(part.startswith("[") for part in parts) else "ipv4"
    return f"{scheme}:{','.join(parts)}"


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    # Services started together may all try to create the PKI at once.
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _reusable_ca(
    folder: Path, now: datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    loaded = _load_pair(folder, "ca")
    if loaded is None:
        return None
    key, cert = loaded
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
    if not constraints.ca or not _fresh(cert, now):
        return None
    return key, cert


def _reusable_leaf(folder: Path, name: str, ca_cert: x509.Certificate, now: datetime) -> bool:
    loaded = _load_pair(folder, name)
    if loaded is None:
        return False
    _, cert = loaded
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return [attribute.value for attribute in common_names] == [name] and _fresh(cert, now)


def _fresh(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now and now + RENEWAL_MARGIN < cert.not_valid_after_utc


def _load_pair(
    folder: Path, name: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    try:
        cert = x509.load_pem_x509_certificate((folder / f"{name}.pem").read_bytes())
        key = serialization.load_pem_private_key(
            (folder / f"{name}-key.pem").read_bytes(), password=None
        )
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    return key, cert


def _issue_ca(now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        # The CA outlives the certificates it issues, so leaves get their full year.
        .not_valid_after(now + CERTIFICATE_LIFETIME + RENEWAL_MARGIN * 2)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue_leaf(
    name: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, now: datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + CERTIFICATE_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(name),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write_pair(
    folder: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first: a crash in between leaves a mismatched pair, which the next run re-issues.
    _write_atomically(folder / f"{name}-key.pem", key_pem, mode=0o600)
    _write_atomically(
        folder / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), mode=0o644
    )


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    # The file is born with its final mode, so a key is never readable by others, even briefly.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing (MAMORU_TLS_DIR points at the TLS folder)") from None
    except OSError as error:
        raise ConfigError(f"{path} cannot be read: {error.strerror}") from None


def _parse_certificate(path: Path, pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ConfigError(f"{path} is not a PEM certificate") from None


def _parse_private_key(path: Path, pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path} must hold an EC private key")
    return key
