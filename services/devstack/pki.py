"""The local certificate authority of `make run` and the tests.

It mints, into one folder, a CA and one certificate per principal in the file
layout ``services/runtime/tls.py`` reads (``ca.pem``, ``<name>.pem``,
``<name>-key.pem``). In Kubernetes the same files come from a mounted secret
(cert-manager, ``deploy/k8s/components/cert-manager``); nothing here runs there.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_COMMON_NAME = "Mamoru local CA"
CERTIFICATE_LIFETIME = timedelta(days=365)
# Renew well before expiry so a long-running dev stack never meets an expired certificate.
RENEWAL_MARGIN = timedelta(days=30)
# Tolerates small clock differences between the machine that issued and the one verifying.
BACKDATE = timedelta(minutes=5)

_PRINCIPAL_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")


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
