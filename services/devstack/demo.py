"""The demo `make run` seeds on its first start, through the public gRPC contracts only.

A person (password and an authenticator app, registered from their phone) with a
wallet funded from a sandbox card, and a merchant with two stores and a register
key. The phone is what a real one is to identity: a P-256 key that signs a proof
for every sign-in call, never a label. What a newcomer needs to use them (the
password, the authenticator's secret, the merchant key, the store ids) is kept in
``var/demo.json``, the phone's private key beside it in ``var/demo-device.pem``,
both readable only by their owner: it is what the person, their phone and the
store would hold themselves. ``demo.json`` is written once everything exists, so
a later start finds it and seeds nothing.

``mamoru demo`` reads it: ``mamoru demo totp`` prints the authenticator's current
code, ``mamoru demo show`` the whole file. The call tool's ``--demo-phone`` signs
proofs with the phone's key, and ``wallet_token`` signs in as the phone for the
partner gateway's sandbox, which acts for this merchant (``gateway.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pyotp
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2 as idp
from mamoru.identity.v1 import identity_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.devstack.smtp import LocalSmtpServer
from services.runtime.device_proof import DeviceKey
from services.runtime.tls import load_tls, secure_channel

if TYPE_CHECKING:
    from services.devstack.stack import LocalStack

DEMO_FILE = "demo.json"
DEVICE_KEY_FILE = "demo-device.pem"
TIMEOUT = 30.0
TOTP_STEP_SECONDS = 30
EMAIL = "hanako.demo@example.jp"
PASSWORD = "kumo tori kaze mamoru demo"  # noqa: S105 - the demo's, printed by make run
DEVICE = "demo-phone"
# TEST-NET-1, a documentation address: sign-ins from it count as the person's home.
IP = "192.0.2.80"
USER_AGENT = "MamoruApp/1.0 (demo)"
CARD_NUMBER = "4242424242424242"
# Under the first-top-up-from-a-new-card amount that risk asks to confirm.
TOP_UP_YEN = 9_000
MERCHANT_NAME = "Mamoru Demo Mart"
MERCHANT_CATEGORY = "5411"  # grocery stores and supermarkets (ISO 18245)
STORES = (("DEMO-SHIBUYA", "デモマート渋谷店"), ("DEMO-SHINJUKU", "デモマート新宿店"))
_CODE = re.compile(r"(?:コード|Code): (\d+)")


@dataclass
class DemoPerson:
    email: str
    password: str
    device_id: str
    ip_address: str
    account_id: str
    totp_secret: str
    # The last authenticator time step used; identity refuses a step twice.
    totp_last_step: int = 0
    card_funding_source_id: str = ""
    # The phone's private key, a file beside this one (under MAMORU_VAR).
    device_key_file: str = ""


@dataclass
class DemoStore:
    store_id: str
    store_code: str
    name: str


@dataclass
class DemoMerchant:
    merchant_id: str
    merchant_key: str
    stores: list[DemoStore] = field(default_factory=list)


@dataclass
class Demo:
    person: DemoPerson
    merchant: DemoMerchant
    wallet_top_up_yen: int

    @staticmethod
    def path(var_dir: Path) -> Path:
        return var_dir / DEMO_FILE

    @classmethod
    def load(cls, var_dir: Path) -> Demo | None:
        path = cls.path(var_dir)
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        merchant = raw["merchant"]
        return cls(
            person=DemoPerson(**raw["person"]),
            merchant=DemoMerchant(
                merchant_id=merchant["merchant_id"],
                merchant_key=merchant["merchant_key"],
                stores=[DemoStore(**store) for store in merchant["stores"]],
            ),
            wallet_top_up_yen=raw["wallet_top_up_yen"],
        )

    def save(self, var_dir: Path) -> None:
        path = self.path(var_dir)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(self), ensure_ascii=False, indent=2) + "\n")
        partial.chmod(0o600)
        partial.replace(path)


def device_key_path(var_dir: Path) -> Path:
    return var_dir / DEVICE_KEY_FILE


def load_device_key(var_dir: Path) -> DeviceKey:
    """The demo phone's key, as `make run` made it on its first start."""
    path = device_key_path(var_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"no demo phone key in {path}: start `make run` once first"
            " (a demo seeded before phones held keys needs `make clean`)"
        )
    return DeviceKey.from_private_pem(path.read_bytes())


def phone_key(var_dir: Path) -> DeviceKey:
    """The demo phone's key, made now (owner-only) unless an interrupted start made one:
    the phone keeps its key, as a real one does, until `make clean`."""
    path = device_key_path(var_dir)
    if path.exists():
        return DeviceKey.from_private_pem(path.read_bytes())
    key = DeviceKey()
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    # Created owner-only, never readable by others even for a moment.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_pem())
    partial.replace(path)
    return key


def next_totp_step(last_step: int, now: float | None = None) -> int | None:
    """The earliest step after ``last_step`` identity accepts now (current or next), or
    None when both are used and the caller must wait for the clock."""
    current = int(time.time() if now is None else now) // TOTP_STEP_SECONDS
    step = max(current, last_step + 1)
    return step if step <= current + 1 else None


def take_totp_code(var_dir: Path) -> tuple[str, float]:
    """A code of the demo authenticator no one has used yet, and how many seconds it
    stays valid; marks its step as used in the demo file. Waits (at most one step)
    when the current and next steps are both taken."""
    demo = Demo.load(var_dir)
    if demo is None:
        raise FileNotFoundError(f"no demo in {var_dir}: start `make run` once first")
    while (step := next_totp_step(demo.person.totp_last_step)) is None:
        time.sleep(0.5)
    demo.person.totp_last_step = step
    demo.save(var_dir)
    # Identity accepts a step until one step after it has ended.
    valid_for = (step + 2) * TOTP_STEP_SECONDS - time.time()
    return pyotp.TOTP(demo.person.totp_secret).at(step * TOTP_STEP_SECONDS), valid_for


def phone_client() -> common_pb2.ClientContext:
    """What the demo phone's app says about itself on every call."""
    return common_pb2.ClientContext(ip_address=IP, device_id=DEVICE, user_agent=USER_AGENT)


class _Phone:
    """The demo person's phone as identity meets it: its key proves every sign-in call,
    the person types the password and the authenticator's codes.

    While seeding, the authenticator's last used step is kept here; once the demo is
    saved (``var_dir``), in the demo file, shared with `mamoru demo totp`.
    """

    def __init__(
        self,
        identity: Any,
        device: DeviceKey,
        *,
        mailbox: LocalSmtpServer | None = None,
        totp_secret: str = "",
        var_dir: Path | None = None,
    ) -> None:
        self.identity = identity
        self.device = device
        self.mailbox = mailbox
        self.client = phone_client()
        self.totp_secret = totp_secret
        self.totp_step = 0
        self.var_dir = var_dir

    async def _totp(self) -> str:
        if self.var_dir is not None:
            code, _ = await asyncio.to_thread(take_totp_code, self.var_dir)
            return code
        # Waiting on the clock, not on an event: the next step begins when it begins.
        while (step := next_totp_step(self.totp_step)) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        self.totp_step = step
        return pyotp.TOTP(self.totp_secret).at(step * TOTP_STEP_SECONDS)

    async def _code_mailed(self, before: int, *subjects: str) -> str:
        assert self.mailbox is not None
        async with asyncio.timeout(TIMEOUT):
            while True:
                arrived = await self.mailbox.wait_for(before + 1, within=TIMEOUT, to=EMAIL)
                for message in arrived[before:]:
                    if any(s in message.subject for s in subjects):
                        match = _CODE.search(message.text())
                        if match:
                            return match.group(1)
                before = len(arrived)

    async def sign_in(self) -> idp.SessionTokens:
        """Password, then whatever identity asks: the app's code, else a mailed code."""
        login = idp.LoginRequest(identifier=EMAIL, password=PASSWORD, client=self.client)
        login.device_proof = self.device.prove("Login", login)
        reply = await self.identity.Login(login, timeout=TIMEOUT)
        if reply.HasField("session"):
            session: idp.SessionTokens = reply.session
            return session
        challenge = reply.challenge
        answer: dict[str, str]
        if self.totp_secret and idp.CHALLENGE_METHOD_TOTP in challenge.methods:
            answer = {"totp_code": await self._totp()}
        else:
            if self.mailbox is None:
                # Only seeding reads the mail; the saved demo has its authenticator app.
                raise RuntimeError("identity asked the demo phone for a mailed sign-in code")
            before = len(self.mailbox.to(EMAIL))
            await self.identity.SendSignInCode(
                idp.SendSignInCodeRequest(challenge_id=challenge.challenge_id), timeout=TIMEOUT
            )
            answer = {
                "email_code": await self._code_mailed(before, "サインインコード", "sign-in code")
            }
        request = idp.VerifySecondFactorRequest(
            challenge_id=challenge.challenge_id, client=self.client, **answer
        )
        request.device_proof = self.device.prove("VerifySecondFactor", request)
        verified = await self.identity.VerifySecondFactor(request, timeout=TIMEOUT)
        session = verified.session
        return session

    async def enrol_totp(self, session: idp.SessionTokens) -> None:
        metadata = (("authorization", f"Bearer {session.access_token}"),)
        begun = await self.identity.BeginTotpEnrollment(
            idp.BeginTotpEnrollmentRequest(), metadata=metadata, timeout=TIMEOUT
        )
        self.totp_secret = begun.secret
        request = idp.ConfirmTotpEnrollmentRequest(
            enrollment_id=begun.enrollment_id, code=await self._totp()
        )
        # The phone the account was registered on proves its key, so its first factor
        # starts no cool-off and the wallet opens at once.
        request.device_proof = self.device.prove(
            "ConfirmTotpEnrollment", request, bearer_token=session.access_token
        )
        await self.identity.ConfirmTotpEnrollment(request, metadata=metadata, timeout=TIMEOUT)

    async def wallet_token(self) -> str:
        """A fresh session with password and the app's code, stepped up if needed."""
        session = await self.sign_in()
        bearer = session.access_token
        metadata = (("authorization", f"Bearer {bearer}"),)
        if session.assurance_level < 2:
            begun = await self.identity.BeginStepUp(
                idp.BeginStepUpRequest(client=self.client), metadata=metadata, timeout=TIMEOUT
            )
            raised = await self.identity.StepUp(
                idp.StepUpRequest(challenge_id=begun.challenge_id, totp_code=await self._totp()),
                metadata=metadata,
                timeout=TIMEOUT,
            )
            bearer = raised.session.access_token
            metadata = (("authorization", f"Bearer {bearer}"),)
        # Only the session's own key, proving it holds this very token, opens the wallet.
        exchange = idp.ExchangeTokenRequest(audience="wallet", client=self.client)
        exchange.device_proof = self.device.prove("ExchangeToken", exchange, bearer_token=bearer)
        reply = await self.identity.ExchangeToken(exchange, metadata=metadata, timeout=TIMEOUT)
        return str(reply.access_token)


class _Seeder(_Phone):
    """The phone that registers the person, and the operator who adds the merchant."""

    def __init__(
        self,
        identity: Any,
        wallet: Any,
        wallet_operator: Any,
        mailbox: LocalSmtpServer,
        card_token: tuple[str, str],
        device: DeviceKey,
    ) -> None:
        super().__init__(identity, device, mailbox=mailbox)
        self.wallet = wallet
        self.wallet_operator = wallet_operator
        self.card_token = card_token

    async def register(self) -> str:
        assert self.mailbox is not None
        before = len(self.mailbox.to(EMAIL))
        register = idp.RegisterRequest(email=EMAIL, password=PASSWORD, client=self.client)
        register.device_proof = self.device.prove("Register", register)
        await self.identity.Register(register, timeout=TIMEOUT)
        code = await self._code_mailed(before, "確認コード", "verification code")
        # The phone's key becomes the account's first device.
        verify = idp.VerifyEmailRequest(email=EMAIL, code=code, client=self.client)
        verify.device_proof = self.device.prove("VerifyEmail", verify)
        reply = await self.identity.VerifyEmail(verify, timeout=TIMEOUT)
        return str(reply.account_id)

    async def fund_wallet(self, token: str) -> str:
        metadata = (("authorization", f"Bearer {token}"),)
        await self.wallet.Enroll(
            wallet_pb2.EnrollRequest(client=self.client), metadata=metadata, timeout=TIMEOUT
        )
        processor_token, three_ds = self.card_token
        source = await self.wallet.RegisterFundingSource(
            wallet_pb2.RegisterFundingSourceRequest(
                processor_token=processor_token, three_ds_transaction_id=three_ds
            ),
            metadata=metadata,
            timeout=TIMEOUT,
        )
        source_id = str(source.funding_source.funding_source_id)
        request = wallet_pb2.TopUpFromCardRequest(
            funding_source_id=source_id,
            amount=common_pb2.Money(amount_minor=TOP_UP_YEN, currency="JPY"),
            idempotency_key=str(uuid.uuid4()),
            client=self.client,
        )
        # The wallet refuses a top-up risk could not assess in time (a busy first start);
        # the same idempotency key makes a retry safe.
        for pause in (1.0, 2.0, 4.0, 8.0, 0.0):
            try:
                await self.wallet.TopUpFromCard(request, metadata=metadata, timeout=TIMEOUT)
                return source_id
            except grpc.aio.AioRpcError as error:
                if "unavailable" not in (error.details() or "") or not pause:
                    raise
            await asyncio.sleep(pause)
        return source_id

    async def merchant(self) -> DemoMerchant:
        made = await self.wallet_operator.RegisterMerchant(
            wallet_pb2.RegisterMerchantRequest(name=MERCHANT_NAME, category=MERCHANT_CATEGORY),
            timeout=TIMEOUT,
        )
        merchant = DemoMerchant(
            merchant_id=str(made.merchant.merchant_id), merchant_key=str(made.merchant_key)
        )
        for code, name in STORES:
            store = await self.wallet_operator.RegisterStore(
                wallet_pb2.RegisterStoreRequest(
                    merchant_id=merchant.merchant_id, store_code=code, name=name
                ),
                timeout=TIMEOUT,
            )
            merchant.stores.append(DemoStore(str(store.store_id), code, name))
        return merchant


async def seed(
    var_dir: Path,
    *,
    tls_dir: Path,
    identity_address: str,
    wallet_address: str,
    mailbox: LocalSmtpServer,
    card_token: tuple[str, str],
) -> tuple[Demo, bool]:
    """The demo, seeded now unless a previous start already did; (demo, seeded now)."""
    existing = Demo.load(var_dir)
    if existing is not None:
        if not existing.person.device_key_file or not device_key_path(var_dir).exists():
            raise RuntimeError(
                f"the demo in {var_dir} was seeded before its phone held a key,"
                " so it can no longer open its wallet"
            )
        return existing, False
    channels = [
        secure_channel(identity_address, load_tls(tls_dir, "gateway"), server_name="identity"),
        secure_channel(wallet_address, load_tls(tls_dir, "gateway"), server_name="wallet"),
        secure_channel(wallet_address, load_tls(tls_dir, "operator"), server_name="wallet"),
    ]
    try:
        seeder = _Seeder(
            identity_pb2_grpc.IdentityServiceStub(channels[0]),
            wallet_pb2_grpc.WalletServiceStub(channels[1]),
            wallet_pb2_grpc.WalletServiceStub(channels[2]),
            mailbox,
            card_token,
            phone_key(var_dir),
        )
        account_id = await _register_once(seeder)
        await seeder.enrol_totp(await seeder.sign_in())
        source_id = await seeder.fund_wallet(await seeder.wallet_token())
        merchant = await seeder.merchant()
    finally:
        for channel in channels:
            await channel.close()
    demo = Demo(
        person=DemoPerson(
            email=EMAIL,
            password=PASSWORD,
            device_id=DEVICE,
            ip_address=IP,
            account_id=account_id,
            totp_secret=seeder.totp_secret,
            totp_last_step=seeder.totp_step,
            card_funding_source_id=source_id,
            device_key_file=DEVICE_KEY_FILE,
        ),
        merchant=merchant,
        wallet_top_up_yen=TOP_UP_YEN,
    )
    demo.save(var_dir)
    return demo, True


async def seed_stack(stack: LocalStack) -> tuple[Demo, bool]:
    """``seed`` on a running local stack, as `make run` does it."""
    assert stack.smtp is not None and stack.card_processor is not None
    return await seed(
        stack.var_dir,
        tls_dir=stack.tls_dir,
        identity_address=stack.processes["identity"].address,
        wallet_address=stack.processes["wallet"].address,
        mailbox=stack.smtp,
        card_token=stack.card_processor.tokenise(CARD_NUMBER),
    )


async def wallet_token(var_dir: Path, identity: Any) -> str:
    """A wallet token of the demo person, as their phone's app gets one: the password
    from the phone that proves its key, the authenticator's next unused code, and the
    exchange proven by that key. ``identity`` is a stub on a `gateway` channel."""
    demo = Demo.load(var_dir)
    if demo is None:
        raise FileNotFoundError(f"no demo in {var_dir}: start `make run` once first")
    phone = _Phone(
        identity, load_device_key(var_dir), totp_secret=demo.person.totp_secret, var_dir=var_dir
    )
    return await phone.wallet_token()


async def _register_once(seeder: _Seeder) -> str:
    try:
        return await seeder.register()
    except grpc.aio.AioRpcError as error:
        # A start that died half-way left the person behind: seeding again from a
        # clean database (`make clean`) is the way out, and saying so beats a traceback.
        raise RuntimeError(
            f"the demo person could not be registered ({error.code().name}: {error.details()});"
            " a previous start may have stopped half-way: `make clean` starts afresh"
        ) from None


def usage(demo: Demo, *, identity: str, wallet: str) -> str:
    """How to use the demo, as `make run` prints it."""
    person, merchant = demo.person, demo.merchant
    store = merchant.stores[0]
    return "\n".join(
        [
            "Demo (var/demo.json):",
            f"  person      {person.email}  password {person.password!r}",
            f"              phone {person.device_id} at {person.ip_address}, its key in"
            f" var/{person.device_key_file} (the call tool's --demo-phone signs with it)",
            "              authenticator app: `.venv/bin/mamoru demo totp` prints its current code",
            f"              wallet funded with {demo.wallet_top_up_yen:,} yen from a sandbox card",
            f"  merchant    {MERCHANT_NAME} {merchant.merchant_id}",
            f"              register key {merchant.merchant_key}",
            "              stores "
            + ", ".join(f"{s.store_code} {s.store_id}" for s in merchant.stores),
            "",
            "  A payment at the demo register, step by step: README, 'Walkthrough'.",
            f"  identity {identity}, wallet {wallet}; the first store's id: {store.store_id}",
        ]
    )
