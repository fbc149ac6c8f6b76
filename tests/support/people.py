"""The people of the tests: who they are, what they hold, and what they read.

``Person`` is what someone knows and holds (password, phone key, authenticator
app, passkey); the helpers here read what a person would read in their inbox
(codes and reset links, from the mail the local SMTP server received) and make
the call context and channels their app uses. ``tests.support.identity_driver``
signs them up and in over identity's gRPC contract, ``tests.support.payer``
makes their wallet calls.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import jwt
import pyotp
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2 as pb

from services.devstack.smtp import LocalSmtpServer, ReceivedMessage
from services.devstack.stack import LocalStack
from services.runtime.access import bearer_metadata
from services.runtime.device_proof import DeviceKey
from services.runtime.tls import load_tls, secure_channel
from tests.support.authenticator import SoftwareAuthenticator

TIMEOUT = 15.0
PASSWORD = "correct horse battery staple mamoru"
# Identity's passkey settings that match the software authenticator's origin.
IDENTITY_ENV = {
    "IDENTITY_WEBAUTHN_RP_ID": "localhost",
    "IDENTITY_WEBAUTHN_ORIGINS": "https://localhost",
}
WALLET_AUDIENCE = "wallet"

# Subjects of the code mails, in both languages notify writes.
VERIFICATION_SUBJECTS = ("確認コード", "verification code")
SIGN_IN_SUBJECTS = ("サインインコード", "sign-in code")
_CODE_ROW = re.compile(r"(?:コード|Code): (\d+)")
_RESET_LINK = re.compile(r"reset-password\?token=([A-Za-z0-9_\-]+)")


def client(device: str = "phone-1", ip: str = "192.0.2.10") -> common_pb2.ClientContext:
    return common_pb2.ClientContext(ip_address=ip, device_id=device, user_agent="MamoruApp/1.0")


_home_networks = itertools.count(1)


def home_address() -> str:
    """A documentation-range IPv6 address in a /48 of its own (65,536 of them), so
    people made by the driver do not share risk's per-IP and per-subnet counters
    (five registrations per IP per hour) unless a test says so."""
    network = next(_home_networks) % 0x10000
    return f"2001:db8:{network:x}::1"


def stack_channel(stack: LocalStack, name: str, *, as_: str = "gateway") -> grpc.aio.Channel:
    """An mTLS channel to a ``LocalStack`` service presenting ``as_``'s certificate."""
    address = stack.processes[name].address
    return secure_channel(address, load_tls(stack.tls_dir, as_), server_name=name)


# Mail ----------------------------------------------------------------------------


def subject_is(*markers: str) -> Callable[[ReceivedMessage], bool]:
    return lambda message: any(marker in message.subject for marker in markers)


def mentioning(text: str) -> Callable[[ReceivedMessage], bool]:
    return lambda message: text in message.text()


def has_reset_link(message: ReceivedMessage) -> bool:
    return _RESET_LINK.search(message.text()) is not None


def code_in(message: ReceivedMessage) -> str:
    match = _CODE_ROW.search(message.text())
    assert match, f"no code in the mail {message.subject!r}"
    return match.group(1)


def reset_token_in(text: str) -> str:
    match = _RESET_LINK.search(text)
    assert match, "no reset link in the message"
    return match.group(1)


async def next_mail(
    mailbox: LocalSmtpServer,
    address: str,
    wanted: Callable[[ReceivedMessage], bool],
    *,
    after: int,
    within: float = TIMEOUT,
) -> ReceivedMessage:
    """The first mail to ``address`` that ``wanted`` accepts among those after the
    first ``after`` (count them before the action that sends it)."""
    seen = after
    async with asyncio.timeout(within):
        while True:
            arrived = await mailbox.wait_for(seen + 1, within=within, to=address)
            for message in arrived[seen:]:
                if wanted(message):
                    return message
            seen = len(arrived)


async def reset_mail(
    mailbox: LocalSmtpServer, address: str, count: int = 1, within: float = TIMEOUT
) -> list[str]:
    """Texts of the reset mails delivered to ``address``, once ``count`` have arrived."""

    def resets() -> list[str]:
        return [m.text() for m in mailbox.to(address) if has_reset_link(m)]

    async with asyncio.timeout(within):
        while len(resets()) < count:
            await mailbox.wait_for(len(mailbox.to(address)) + 1, within=within, to=address)
    return resets()


# TOTP ----------------------------------------------------------------------------

_last_totp_step: dict[str, int] = {}


def last_totp_step(secret: str) -> int:
    """The time step of the last code ``next_totp`` gave for ``secret`` (0: none yet)."""
    return _last_totp_step.get(secret, 0)


async def next_totp(secret: str) -> str:
    """A TOTP code of a later time step than the last one used with ``secret``.

    Identity accepts the previous, current and next step (clock drift), so two
    uses need no waiting: the current step, then the next. The previous step is
    never used: on a busy machine the call can reach identity after the step has
    moved on twice, and the code would be refused.
    """
    totp = pyotp.TOTP(secret)
    async with asyncio.timeout(70):
        while True:
            current = int(time.time()) // 30
            step = max(current, _last_totp_step.get(secret, current - 1) + 1)
            if step <= current + 1:
                _last_totp_step[secret] = step
                return totp.at(step * 30)
            await asyncio.sleep(0.5)


# People --------------------------------------------------------------------------


@dataclass
class Person:
    """What a person knows and holds: password, phone, authenticator app, passkey.

    Each of their devices (named by the label it sends, ``device`` being their
    phone) holds a key of its own, made on first use, and signs proofs with it.
    """

    email: str
    account_id: str
    device: str
    password: str = PASSWORD
    totp_secret: str = ""
    recovery_codes: tuple[str, ...] = ()
    authenticator: SoftwareAuthenticator | None = None
    session: pb.SessionTokens | None = None
    ip: str = "192.0.2.10"
    keys: dict[str, DeviceKey] = field(default_factory=dict)

    def key(self, device: str | None = None) -> DeviceKey:
        """The key held by the person's ``device`` (their phone when not given)."""
        label = device or self.device
        if label not in self.keys:
            self.keys[label] = DeviceKey()
        return self.keys[label]

    def proof(self, rpc: str, bound: str, device: str | None = None) -> str:
        """A fresh proof by ``device``'s key for one call of ``rpc`` about ``bound``."""
        return self.key(device).proof(rpc, bound)

    def session_proof(self, rpc: str, session: pb.SessionTokens) -> str:
        """A fresh proof for ``rpc`` bound to the session's access token, signed by the
        key the session is bound to (its ``cnf.jkt``), as the app on that device does;
        empty when the person holds no such key (a session of an unproven device)."""
        claims = jwt.decode(session.access_token, options={"verify_signature": False})
        bound_key = claims.get("cnf", {}).get("jkt")
        for key in self.keys.values():
            if key.thumbprint == bound_key:
                return key.proof(rpc, session.access_token)
        return ""


# Methods identity never lets open the wallet (the same inbox as a reset, a lost
# device, someone else's ID).
NEVER_FOR_MONEY = frozenset({"email_code", "recovery_code", "external"})


def session_methods(session: pb.SessionTokens) -> set[str]:
    """The ``amr`` of the session's access token (read, not verified: it is our own)."""
    claims = jwt.decode(session.access_token, options={"verify_signature": False})
    return set(claims.get("amr", []))


def may_back_a_wallet_token(session: pb.SessionTokens) -> bool:
    return not (session_methods(session) & NEVER_FOR_MONEY)


def bearer(session: pb.SessionTokens | str) -> tuple[tuple[str, str], ...]:
    token = session if isinstance(session, str) else session.access_token
    return bearer_metadata(token)


def jpy(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="JPY")
