"""The partner gateway in the local stack, and its sandbox: a demo partner acting
for the demo merchant's stores, paid by the demo person (both from ``demo.py``).

``LocalStack`` calls ``start_gateway`` after the four services, as one more
process; ``make run`` then calls ``seed_partner`` and prints the curl session.
``python -m services.devstack.gateway code`` signs the demo person in from their
phone (its key, the password and the authenticator app) and prints a fresh
payment code, as the phone would show.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
from mamoru.identity.v1 import identity_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.devstack import demo, devdb
from services.gateway import admin
from services.runtime.tls import load_tls, secure_channel

if TYPE_CHECKING:
    from services.devstack.stack import LocalStack, ServiceProcess

GATEWAY_PORTS = (50055, 50065)
GATEWAY_HTTP_PORT = 8088
SANDBOX_FILE = "gateway-demo.json"
PARTNER_NAME = "Demo register vendor"
TIMEOUT = 15.0


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
    """The gateway process on its ports (`make run`: the documented ones, each
    overridable like the other services'), and its HTTP port."""
    from services.devstack.stack import (
        DEFAULT_METRICS_PORTS,
        ServiceProcess,
        configured_port,
        free_port,
    )

    if stack.fixed_ports:
        grpc_port = configured_port("GATEWAY_GRPC_PORT", GATEWAY_PORTS[0])
        health_port = configured_port("GATEWAY_HEALTH_PORT", GATEWAY_PORTS[1])
        http_port = configured_port("GATEWAY_HTTP_PORT", GATEWAY_HTTP_PORT)
        metrics_port = configured_port("GATEWAY_METRICS_PORT", DEFAULT_METRICS_PORTS["gateway"])
    else:
        grpc_port, health_port, http_port, metrics_port = (free_port() for _ in range(4))
    process = ServiceProcess("gateway", grpc_port, health_port, metrics_port=metrics_port)
    return process, http_port


async def start_gateway(stack: LocalStack) -> str:
    """Start the gateway like the other services; returns its base URL once ready."""
    process, http_port = plan_gateway(stack)
    # Kept with the process, so that a restart by make run's supervisor has them too.
    process.env = gateway_env(stack, http_port)
    stack.processes["gateway"] = process
    await stack._spawn(process, await stack._environment())
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


@dataclass(frozen=True)
class Sandbox:
    """What the partner quickstart needs: the gateway, the partner's credentials, the stores."""

    url: str
    client_id: str
    client_secret: str
    merchant_name: str
    store_ids: list[str]


async def seed_partner(stack: LocalStack, url: str, seeded: demo.Demo) -> Sandbox:
    """The demo's merchant and stores registered with the gateway and a demo partner
    granted that merchant, made once and kept in var/gateway-demo.json across runs."""
    path = stack.var_dir / SANDBOX_FILE
    kept: dict[str, Any] | None = json.loads(path.read_text()) if path.exists() else None
    merchant = seeded.merchant
    if (
        kept is not None
        and kept.get("merchant_id") == merchant.merchant_id
        and await _still_valid(url, kept)
    ):
        sandbox = dict(kept)
    else:
        sandbox = await _register_partner(stack, merchant)
    # The code command reaches the services where this start put them.
    sandbox.update(_addresses(stack))
    if sandbox != kept:
        _save(path, sandbox)
    return Sandbox(
        url=url,
        client_id=sandbox["client_id"],
        client_secret=sandbox["client_secret"],
        merchant_name=demo.MERCHANT_NAME,
        store_ids=[store.store_id for store in merchant.stores],
    )


async def _register_partner(stack: LocalStack, merchant: demo.DemoMerchant) -> dict[str, Any]:
    env = await _admin_env(stack)
    # Adding a merchant or store the gateway knows updates it: safe after a half-done start.
    await admin.run(
        [
            "merchant",
            "add",
            merchant.merchant_id,
            "--name",
            demo.MERCHANT_NAME,
            f"--key={merchant.merchant_key}",
        ],
        env,
    )
    for store in merchant.stores:
        await admin.run(
            [
                "store",
                "add",
                store.store_id,
                "--merchant",
                merchant.merchant_id,
                "--code",
                store.store_code,
                "--name",
                store.name,
            ],
            env,
        )
    scopes = [arg for scope in _all_scopes() for arg in ("--scope", scope)]
    partner = await admin.run(["partner", "create", "--name", PARTNER_NAME, *scopes], env)
    client_id = partner["client_id"]
    await admin.run(["partner", "grant", client_id, merchant.merchant_id], env)
    secret = await admin.run(["partner", "secret", client_id], env)
    return {
        "client_id": client_id,
        "client_secret": secret["client_secret"],
        "merchant_id": merchant.merchant_id,
    }


def _save(path: Path, sandbox: dict[str, Any]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(sandbox, indent=2) + "\n")
    partial.chmod(0o600)
    partial.replace(path)


def _addresses(stack: LocalStack) -> dict[str, str]:
    return {
        "identity_address": stack.processes["identity"].address,
        "wallet_address": stack.processes["wallet"].address,
    }


async def _still_valid(url: str, sandbox: dict[str, Any]) -> bool:
    """The kept partner matches this database (var/ may have been partly cleaned)."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        reply = await http.post(
            f"{url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(sandbox["client_id"], sandbox["client_secret"]),
        )
    return reply.status_code == 200


def _all_scopes() -> tuple[str, ...]:
    from services.gateway.domain.partners import SCOPES

    return SCOPES


async def payment_code(var_dir: Path) -> str:
    """A fresh payment code of the demo person, from the running local stack."""
    sandbox = json.loads((var_dir / SANDBOX_FILE).read_text())
    tls = var_dir / "tls"
    async with (
        _channel(tls, sandbox["identity_address"], "identity", "gateway") as identity_channel,
        _channel(tls, sandbox["wallet_address"], "wallet", "gateway") as wallet_channel,
    ):
        token = await demo.wallet_token(
            var_dir, identity_pb2_grpc.IdentityServiceStub(identity_channel)
        )
        reply = await wallet_pb2_grpc.WalletServiceStub(wallet_channel).IssuePaymentCode(
            wallet_pb2.IssuePaymentCodeRequest(client=demo.phone_client()),
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


def curl_session(sandbox: Sandbox) -> str:
    """What a partner's developer types first, with the sandbox's own values."""
    url = sandbox.url
    header = (
        f"Partner gateway  {url}  (OpenAPI {url}/openapi.json, browsable {url}/docs)\n"
        f"  demo partner {sandbox.client_id} acts for {sandbox.merchant_name}'s"
        f" {len(sandbox.store_ids)} stores (var/{SANDBOX_FILE})\n\n"
    )
    return header + _SESSION.format(
        url=url,
        store=sandbox.store_ids[0],
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
    )


def main(argv: list[str]) -> None:
    if argv[:1] != ["code"] or len(argv) not in (1, 3) or argv[1:2] not in ([], ["--var"]):
        print("usage: python -m services.devstack.gateway code [--var DIR]", file=sys.stderr)
        raise SystemExit(2)
    var_dir = Path(argv[2] if len(argv) == 3 else "var")
    try:
        print(asyncio.run(payment_code(var_dir)))
    except FileNotFoundError as error:
        print(f"{error} (no demo or partner sandbox: start `make run` once first)", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main(sys.argv[1:])
