"""Mutual TLS for gRPC: the files a process is given, and the credentials made of them.

Every process holds a certificate whose common name is its principal (``identity``,
``wallet``, ``operator``, ``pos``...). Servers require a client certificate from the
same CA, so the access policy can trust the peer's common name as the caller.
In Kubernetes the files come from a mounted secret (``MAMORU_TLS_DIR``): ``ca.pem``,
``<principal>.pem`` and ``<principal>-key.pem``. ``make run`` and the tests mint
them with the local CA of ``services/devstack/pki.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.runtime.config import ConfigError


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes a process needs for mutual TLS; the private key never shows in repr."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)


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
