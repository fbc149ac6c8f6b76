"""Operators manage partners: ``python -m services.gateway.admin --help``.

It works on the gateway's own database (``DATABASE_URL``, ``GATEWAY_SECRETS_KEY``
as the gateway reads them), which is an operator's privilege; every running
replica sees a change within GATEWAY_PARTNER_CACHE_SECONDS. Answers are JSON.

    [--actor NAME] (default: $USER; recorded with every change in admin_log)
    partner create --name "Register vendor" --scope payments:capture --scope payments:refund
    partner show PARTNER              scopes, grants, credential IDs (never secrets)
    partner secret PARTNER            a new client secret (shown once); the old one stays
    partner key PARTNER --jwk FILE    a public key for private_key_jwt
    partner remove-credential PARTNER CREDENTIAL
    partner revoke PARTNER | partner restore PARTNER
    partner update PARTNER [--scope S ...] [--requests-per-minute N]
    partner grant PARTNER MERCHANT [--store STORE ...]
    merchant add MERCHANT --name NAME --key=MERCHANT_KEY   (keys may begin with "-")
    store add STORE --merchant MERCHANT --code CODE --name NAME
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.gateway.bootstrap import MIGRATIONS
from services.gateway.domain.errors import Refusal
from services.gateway.domain.partners import SCOPES
from services.gateway.domain.sealing import SecretBox
from services.gateway.settings import GatewaySettings
from services.gateway.use_cases.partners import PartnerAdmin
from services.runtime.config import ConfigError, load_settings
from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import migrate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.gateway.admin")
    parser.add_argument(
        "--actor", default=os.environ.get("USER") or "operator", help="who makes the change"
    )
    kinds = parser.add_subparsers(dest="kind", required=True)

    partner = kinds.add_parser("partner").add_subparsers(dest="action", required=True)
    create = partner.add_parser("create")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", choices=SCOPES, required=True)
    create.add_argument("--requests-per-minute", type=int, default=600)
    partner.add_parser("show").add_argument("partner", type=uuid.UUID)
    partner.add_parser("secret").add_argument("partner", type=uuid.UUID)
    key = partner.add_parser("key")
    key.add_argument("partner", type=uuid.UUID)
    key.add_argument("--jwk", type=Path, required=True, help="file with the public JWK")
    remove = partner.add_parser("remove-credential")
    remove.add_argument("partner", type=uuid.UUID)
    remove.add_argument("credential", type=uuid.UUID)
    partner.add_parser("revoke").add_argument("partner", type=uuid.UUID)
    partner.add_parser("restore").add_argument("partner", type=uuid.UUID)
    update = partner.add_parser("update")
    update.add_argument("partner", type=uuid.UUID)
    update.add_argument("--scope", action="append", choices=SCOPES)
    update.add_argument("--requests-per-minute", type=int)
    grant = partner.add_parser("grant")
    grant.add_argument("partner", type=uuid.UUID)
    grant.add_argument("merchant", type=uuid.UUID)
    grant.add_argument("--store", action="append", type=uuid.UUID)

    merchant = kinds.add_parser("merchant").add_subparsers(dest="action", required=True)
    add_merchant = merchant.add_parser("add")
    add_merchant.add_argument("merchant", type=uuid.UUID)
    add_merchant.add_argument("--name", required=True)
    add_merchant.add_argument("--key", required=True, help="the wallet's merchant key")

    store = kinds.add_parser("store").add_subparsers(dest="action", required=True)
    add_store = store.add_parser("add")
    add_store.add_argument("store", type=uuid.UUID)
    add_store.add_argument("--merchant", type=uuid.UUID, required=True)
    add_store.add_argument("--code", required=True)
    add_store.add_argument("--name", required=True)
    return parser


async def _apply(admin: PartnerAdmin, args: argparse.Namespace) -> dict[str, Any]:
    if args.kind == "merchant":
        await admin.add_merchant(args.merchant, args.name, args.key)
        return {"merchant_id": str(args.merchant)}
    if args.kind == "store":
        await admin.add_store(args.store, args.merchant, args.code, args.name)
        return {"store_id": str(args.store)}
    action = args.action
    if action == "create":
        partner_id = await admin.create(args.name, args.scope, args.requests_per_minute)
        return {"partner_id": str(partner_id), "client_id": str(partner_id)}
    if action == "show":
        return await admin.show(args.partner)
    if action == "secret":
        credential_id, secret = await admin.add_secret(args.partner)
        return {"credential_id": str(credential_id), "client_secret": secret}
    if action == "key":
        credential_id = await admin.add_key(args.partner, json.loads(args.jwk.read_text()))
        return {"credential_id": str(credential_id)}
    if action == "remove-credential":
        await admin.remove_credential(args.partner, args.credential)
    elif action in ("revoke", "restore"):
        await admin.set_status(args.partner, "revoked" if action == "revoke" else "active")
    elif action == "update":
        await admin.update(
            args.partner, scopes=args.scope, requests_per_minute=args.requests_per_minute
        )
    elif action == "grant":
        await admin.grant(args.partner, args.merchant, args.store)
    return {"partner_id": str(args.partner), "done": action}


async def run(argv: Sequence[str], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Carry out one command; raises ValueError, LookupError or Refusal when refused."""
    args = _parser().parse_args(argv)
    settings = load_settings(GatewaySettings, environ)
    pool = await create_pool(settings.database_url.reveal(), max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "gateway", MIGRATIONS)
        admin = PartnerAdmin(pool, SecretBox(settings.sealing_key()), actor=args.actor)
        return await _apply(admin, args)
    finally:
        await close_pool(pool)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        answer = asyncio.run(run(sys.argv[1:] if argv is None else argv))
    except (ConfigError, ValueError, LookupError, Refusal) as error:
        print(f"refused: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
