"""The partner gateway in the local stack, and its sandbox: a demo partner acting
for a demo merchant's stores, and a demo person with a funded wallet.

``LocalStack`` calls ``start_gateway`` after the four services, as one more
process; ``make run`` then calls ``seed_demo`` and prints the curl session.
``python -m services.devstack.gateway code`` signs the demo person in (password
and authenticator app) and prints a fresh payment code, as their phone would show.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pyotp
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2 as idp
from mamoru.identity.v1 import identity_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.gateway import admin
from services.runtime import devdb
from services.runtime.pki import load_tls, secure_channel

if TYPE_CHECKING:
    from services.devstack.stack import LocalStack, ServiceProcess

GATEWAY_PORTS = (50055, 50065)
GATEWAY_HTTP_PORT = 8088
DEMO_FILE = "gateway-demo.json"
TIMEOUT = 15.0
_CODE = re.compile(r"(?:コード|Code): (\d+)")
_DEVICE = "demo-phone"
_IP = "2001:db8:feed::1"


def _client() -> common_pb2.ClientContext:
    return common_pb2.ClientContext(ip_address=_IP, device_id=_DEVICE, user_agent="MamoruApp/1.0")


def gateway_env(stack: LocalStack, http_port: int) -> dict[str, str]:
    """What the gateway process reads beyond the stack's shared environment."""
    key_file = stack.var_dir / "gateway.key"
    if not key_file.exists():
        key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        key_file.chmod(0o600)
    return {
        "GATEWAY_SECRETS_KEY": key_file.read_text().strip(),
        "GATEWAY_HTTP_PORT": str(http_port),
        # Local receivers (a terminal's `nc -l`, a test server) are plain HTTP.
        "GATEWAY_ALLOW_HTTP_WEBHOOKS": "true",
    }


def plan_gateway(stack: LocalStack) -> tuple[ServiceProcess, int]:
    """The gateway process on its ports (`make run`: the documented ones), and its HTTP port."""
    from services.devstack.stack import (
        DEFAULT_METRICS_PORTS,
        ServiceProcess,
        configured_port,
        free_port,
    )

    if not stack.fixed_ports:
        return ServiceProcess(
            "gateway", free_port(), free_port(), metrics_port=free_port()
        ), free_port()
    metrics_port = configured_port("GATEWAY_METRICS_PORT", DEFAULT_METRICS_PORTS["gateway"])
    process = ServiceProcess("gateway", *GATEWAY_PORTS, metrics_port=metrics_port)
    return process, GATEWAY_HTTP_PORT


async def start_gateway(stack: LocalStack) -> str:
    """Start the gateway like the other services; returns its base URL once ready."""
    process, http_port = plan_gateway(stack)
    stack.processes["gateway"] = process
    env = {**await stack._environment(), **gateway_env(stack, http_port)}
    await stack._spawn(process, env)
    await stack.wait_serving("gateway")
    url = f"http://127.0.0.1:{http_port}"
    async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(60):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/health/ready")).status_code == 200:
                    return url
            await asyncio.sleep(0.1)


def _channel(stack_tls: Path, address: str, service: str, as_: str) -> grpc.aio.Channel:
    return secure_channel(address, load_tls(stack_tls, as_), server_name=service)


async def _admin_env(stack: LocalStack) -> dict[str, str]:
    database = await devdb.ensure_database(stack.server_url, "mamoru_gateway")
    env = {**await stack._environment(), **gateway_env(stack, GATEWAY_HTTP_PORT)}
    env["DATABASE_URL"] = database
    return env


async def seed_demo(stack: LocalStack, url: str) -> dict[str, Any]:
    """The sandbox, made once and kept in var/gateway-demo.json across runs."""
    path = stack.var_dir / DEMO_FILE
    if path.exists():
        demo: dict[str, Any] = json.loads(path.read_text())
        if await _still_valid(url, demo):
            return {**demo, **_addresses(stack), "url": url}
    env = await _admin_env(stack)
    wallet_address = stack.processes["wallet"].address
    identity_address = stack.processes["identity"].address
    async with (
        _channel(stack.tls_dir, wallet_address, "wallet", "operator") as operator_channel,
        _channel(stack.tls_dir, wallet_address, "wallet", "gateway") as wallet_channel,
        _channel(stack.tls_dir, identity_address, "identity", "gateway") as identity_channel,
    ):
        operator = wallet_pb2_grpc.WalletServiceStub(operator_channel)
        merchant = await operator.RegisterMerchant(
            wallet_pb2.RegisterMerchantRequest(name="Mamoru Mart", category="5411"),
            timeout=TIMEOUT,
        )
        merchant_id = merchant.merchant.merchant_id
        await admin.run(
            [
                "merchant",
                "add",
                merchant_id,
                "--name",
                "Mamoru Mart",
                f"--key={merchant.merchant_key}",
            ],
            env,
        )
        stores = []
        for code, name in (("shibuya", "Shibuya"), ("shinjuku", "Shinjuku")):
            shop = await operator.RegisterStore(
                wallet_pb2.RegisterStoreRequest(
                    merchant_id=merchant_id, store_code=code, name=name
                ),
                timeout=TIMEOUT,
            )
            await admin.run(
                [
                    "store",
                    "add",
                    shop.store_id,
                    "--merchant",
                    merchant_id,
                    "--code",
                    code,
                    "--name",
                    name,
                ],
                env,
            )
            stores.append(shop.store_id)
        scopes = [arg for scope in _all_scopes() for arg in ("--scope", scope)]
        partner = await admin.run(
            ["partner", "create", "--name", "Demo register vendor", *scopes], env
        )
        client_id = partner["client_id"]
        await admin.run(["partner", "grant", client_id, merchant_id], env)
        secret = await admin.run(["partner", "secret", client_id], env)
        person = await _demo_person(
            stack,
            identity_pb2_grpc.IdentityServiceStub(identity_channel),
            wallet_pb2_grpc.WalletServiceStub(wallet_channel),
        )
    # Identity takes each authenticator step once; the next process must know the last.
    person["totp_step"] = _steps.get(person["totp_secret"], 0)
    demo = {
        **_addresses(stack),
        "client_id": client_id,
        "client_secret": secret["client_secret"],
        "merchant_id": merchant_id,
        "store_ids": stores,
        "person": person,
    }
    path.write_text(json.dumps(demo, indent=2))
    path.chmod(0o600)
    return {**demo, "url": url}


def _addresses(stack: LocalStack) -> dict[str, str]:
    return {
        "identity_address": stack.processes["identity"].address,
        "wallet_address": stack.processes["wallet"].address,
    }


async def _still_valid(url: str, demo: dict[str, Any]) -> bool:
    """The kept sandbox matches this database (var/ may have been partly cleaned)."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        reply = await http.post(
            f"{url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(demo["client_id"], demo["client_secret"]),
        )
    return reply.status_code == 200


def _all_scopes() -> tuple[str, ...]:
    from services.gateway.domain.partners import SCOPES

    return SCOPES


_steps: dict[str, int] = {}


async def _totp(secret: str) -> str:
    """A code of a step not used before: identity refuses a step twice."""
    totp = pyotp.TOTP(secret)
    async with asyncio.timeout(70):
        while True:
            current = int(time.time()) // 30
            step = max(current, _steps.get(secret, current - 1) + 1)
            if step <= current + 1:
                _steps[secret] = step
                return totp.at(step * 30)
            await asyncio.sleep(0.5)


async def _mail_code(stack: LocalStack, email: str, before: int) -> str:
    assert stack.smtp is not None
    arrived = await stack.smtp.wait_for(before + 1, within=TIMEOUT, to=email)
    for message in reversed(arrived):
        match = _CODE.search(message.text())
        if match:
            return match.group(1)
    raise RuntimeError(f"no code mailed to {email}")


async def _demo_person(stack: LocalStack, identity: Any, wallet: Any) -> dict[str, Any]:
    email = f"demo-{uuid.uuid4().hex[:8]}@example.jp"
    password = secrets.token_urlsafe(16)
    assert stack.smtp is not None
    before = len(stack.smtp.to(email))
    await identity.Register(
        idp.RegisterRequest(email=email, password=password, client=_client()), timeout=TIMEOUT
    )
    await identity.VerifyEmail(
        idp.VerifyEmailRequest(
            email=email, code=await _mail_code(stack, email, before), client=_client()
        ),
        timeout=TIMEOUT,
    )
    login = await identity.Login(
        idp.LoginRequest(identifier=email, password=password, client=_client()), timeout=TIMEOUT
    )
    if login.HasField("session"):
        session = login.session
    else:
        before = len(stack.smtp.to(email))
        await identity.SendSignInCode(
            idp.SendSignInCodeRequest(challenge_id=login.challenge.challenge_id), timeout=TIMEOUT
        )
        answered = await identity.VerifySecondFactor(
            idp.VerifySecondFactorRequest(
                challenge_id=login.challenge.challenge_id,
                client=_client(),
                email_code=await _mail_code(stack, email, before),
            ),
            timeout=TIMEOUT,
        )
        session = answered.session
    bearer = (("authorization", f"Bearer {session.access_token}"),)
    begun = await identity.BeginTotpEnrollment(
        idp.BeginTotpEnrollmentRequest(), metadata=bearer, timeout=TIMEOUT
    )
    await identity.ConfirmTotpEnrollment(
        idp.ConfirmTotpEnrollmentRequest(
            enrollment_id=begun.enrollment_id, code=await _totp(begun.secret)
        ),
        metadata=bearer,
        timeout=TIMEOUT,
    )
    person: dict[str, Any] = {"email": email, "password": password, "totp_secret": begun.secret}
    token = await _wallet_token(identity, person)
    metadata = (("authorization", f"Bearer {token}"),)
    await wallet.Enroll(
        wallet_pb2.EnrollRequest(client=_client()), metadata=metadata, timeout=TIMEOUT
    )
    assert stack.card_processor is not None
    card_token, three_ds = stack.card_processor.tokenise("4242424242424242")
    card = await wallet.RegisterFundingSource(
        wallet_pb2.RegisterFundingSourceRequest(
            processor_token=card_token, three_ds_transaction_id=three_ds
        ),
        metadata=metadata,
        timeout=TIMEOUT,
    )
    await wallet.TopUpFromCard(
        wallet_pb2.TopUpFromCardRequest(
            funding_source_id=card.funding_source.funding_source_id,
            amount=common_pb2.Money(amount_minor=5_000, currency="JPY"),
            idempotency_key=str(uuid.uuid4()),
            client=_client(),
        ),
        metadata=metadata,
        timeout=TIMEOUT,
    )
    return person


async def _wallet_token(identity: Any, person: dict[str, Any]) -> str:
    """Sign in with password and authenticator app, then exchange for a wallet token."""
    login = await identity.Login(
        idp.LoginRequest(identifier=person["email"], password=person["password"], client=_client()),
        timeout=TIMEOUT,
    )
    if login.HasField("session"):
        session = login.session
    else:
        answered = await identity.VerifySecondFactor(
            idp.VerifySecondFactorRequest(
                challenge_id=login.challenge.challenge_id,
                client=_client(),
                totp_code=await _totp(person["totp_secret"]),
            ),
            timeout=TIMEOUT,
        )
        session = answered.session
    bearer = (("authorization", f"Bearer {session.access_token}"),)
    if session.assurance_level < 2:
        begun = await identity.BeginStepUp(
            idp.BeginStepUpRequest(client=_client()), metadata=bearer, timeout=TIMEOUT
        )
        raised = await identity.StepUp(
            idp.StepUpRequest(
                challenge_id=begun.challenge_id, totp_code=await _totp(person["totp_secret"])
            ),
            metadata=bearer,
            timeout=TIMEOUT,
        )
        bearer = (("authorization", f"Bearer {raised.session.access_token}"),)
    exchanged = await identity.ExchangeToken(
        idp.ExchangeTokenRequest(audience="wallet", client=_client()),
        metadata=bearer,
        timeout=TIMEOUT,
    )
    return str(exchanged.access_token)


async def payment_code(var_dir: Path) -> str:
    """A fresh payment code of the demo person, from the running local stack."""
    path = var_dir / DEMO_FILE
    demo = json.loads(path.read_text())
    person = demo["person"]
    _steps[person["totp_secret"]] = int(person.get("totp_step", 0))
    tls = var_dir / "tls"
    async with (
        _channel(tls, demo["identity_address"], "identity", "gateway") as identity_channel,
        _channel(tls, demo["wallet_address"], "wallet", "gateway") as wallet_channel,
    ):
        try:
            token = await _wallet_token(
                identity_pb2_grpc.IdentityServiceStub(identity_channel), person
            )
        finally:
            person["totp_step"] = _steps[person["totp_secret"]]
            path.write_text(json.dumps(demo, indent=2))
        reply = await wallet_pb2_grpc.WalletServiceStub(wallet_channel).IssuePaymentCode(
            wallet_pb2.IssuePaymentCodeRequest(client=_client()),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=TIMEOUT,
        )
    return str(reply.code)


_SESSION = """\
Partner quickstart (paste into another terminal):
  export GW={url} STORE={store}
  export CLIENT_ID={client_id} CLIENT_SECRET={client_secret}
  TOKEN=$(curl -s -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials \\
    "$GW/oauth/token" | .venv/bin/python -m json.tool | grep access_token | cut -d'"' -f4)
  CODE=$(.venv/bin/python -m services.devstack.gateway code)  # what the demo person's phone shows
  SALE='"amount": {{"amount_minor": 480, "currency": "JPY"}}'
  curl -s "$GW/v1/payments" -H "Authorization: Bearer $TOKEN" \\
    -H "Idempotency-Key: first-sale-$(date +%s)" -H "Content-Type: application/json" \\
    -d "{{$SALE, \\"store_id\\": \\"$STORE\\", \\"code\\": \\"$CODE\\"}}"
"""


def curl_session(demo: dict[str, Any]) -> str:
    """What a partner's developer types first, with the sandbox's own values."""
    url = demo["url"]
    header = (
        f"Partner gateway  {url}  (OpenAPI {url}/openapi.json, browsable {url}/docs)\n"
        f"  demo partner {demo['client_id']} acts for Mamoru Mart's two stores\n\n"
    )
    return header + _SESSION.format(
        url=url,
        store=demo["store_ids"][0],
        client_id=demo["client_id"],
        client_secret=demo["client_secret"],
    )


def main(argv: list[str]) -> None:
    if argv[:1] != ["code"] or len(argv) not in (1, 3) or argv[1:2] not in ([], ["--var"]):
        print("usage: python -m services.devstack.gateway code [--var DIR]", file=sys.stderr)
        raise SystemExit(2)
    print(asyncio.run(payment_code(Path(argv[2] if len(argv) == 3 else "var"))))


if __name__ == "__main__":
    main(sys.argv[1:])
