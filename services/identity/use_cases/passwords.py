"""Changing a password, and resetting a forgotten one through a link."""

from __future__ import annotations

import uuid

from mamoru.common.v1 import common_pb2

from services.identity.clients.notices import (
    RESET_REQUEST,
    Kind,
    send_code_notice,
    send_event_notice,
    struct,
)
from services.identity.domain import credentials as cred
from services.identity.domain.admission import Lane
from services.identity.domain.sealing import (
    new_link_token,
    token_hash,
)
from services.identity.domain.sessions import (
    RESET_LIFETIME,
    RESET_REISSUE_AFTER,
    IssuedSession,
)
from services.identity.storage import accounts as account_store
from services.identity.storage import contacts as contact_store
from services.identity.storage import factors as factor_store
from services.identity.storage import resets as reset_store
from services.identity.storage import security_log as log_store
from services.identity.storage import sessions as session_store
from services.identity.use_cases.base import (
    IdentityBase,
)
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
)
from services.runtime.outbox import OutboxMessage
from services.runtime.tokens import TokenClaims


class Passwords(IdentityBase):
    async def change_password(
        self,
        claims: TokenClaims,
        *,
        current_password: str,
        new_password: str,
        client: common_pb2.ClientContext,
    ) -> IssuedSession:
        session = await self.live_session(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn:
            account = await account_store.account(conn, account_id)
            primary = await contact_store.primary_email(conn, account_id)
            has_factor = bool(await factor_store.factors(conn, account_id))
        # A session is not a proven device, and anyone may hold one of an account of
        # their own: the slots kept for known devices' sign-ins are not for this.
        if account is None or not await self.hasher.verify(
            account["password_hash"], current_password, lane=Lane.NEW_DEVICE
        ):
            raise InvalidArgument([("current_password", "is not the current password")])
        await self._check_new_password(
            "new_password",
            new_password,
            email=primary["address"] if primary is not None else "",
            has_second_factor=has_factor,
        )
        new_hash = await self.hasher.hash(new_password, lane=Lane.NEW_DEVICE)
        refresh = new_link_token()
        async with self.pool.acquire() as conn, conn.transaction():
            await account_store.set_password(conn, account_id, new_hash)
            await self._credential_changed(
                conn, account_id, keep=session["id"], detail="password changed", client=client
            )
            await session_store.add_refresh_token(
                conn, session_id=session["id"], token_hash=token_hash(refresh)
            )
            current = await session_store.session(conn, session["id"])
        return self._issue(current, refresh)

    async def request_password_reset(
        self, *, identifier: str, client: common_pb2.ClientContext
    ) -> None:
        """Queue the request whatever the identifier: the same single write before the
        answer for a known and an unknown one. ``process_reset_request`` does the rest."""
        request_key = f"identity:reset-request:{uuid.uuid4()}"
        async with self.pool.acquire() as conn, conn.transaction():
            await RESET_REQUEST.enqueue(
                conn,
                struct(
                    {
                        "identifier_key": cred.identifier_key(identifier),
                        "ip_address": client.ip_address,
                        "device_id": client.device_id,
                        "user_agent": client.user_agent,
                    }
                ),
                idempotency_key=request_key,
                # What someone typed, possibly no one's address, is not kept.
                scrub=[("identifier_key",)],
            )

    async def process_reset_request(self, message: OutboxMessage) -> None:
        """Make and send the reset link for a queued request, if the account exists.

        At least once: a repeat finds the link it made (and mints no other), and its
        notices carry keys derived from the request, so none is sent twice.
        """
        payload = message.payload
        client = common_pb2.ClientContext(
            ip_address=payload["ip_address"],
            device_id=payload["device_id"],
            user_agent=payload["user_agent"],
        )
        token = new_link_token()
        async with self.pool.acquire() as conn, conn.transaction():
            account = await account_store.account_by_login(conn, payload["identifier_key"])
            if account is None or account["status"] not in ("active",):
                return
            account_id = account["id"]
            # One request at a time per account, so two cannot both find no fresh link.
            await account_store.account_for_update(conn, account_id)
            if await reset_store.has_fresh_reset(conn, account_id, within=RESET_REISSUE_AFTER):
                # Anyone can ask; a new link would replace the one the owner may be
                # opening right now, so a flood of requests could keep them from ever
                # resetting. Their link stands, and the attempt is kept.
                await log_store.log_event(
                    conn,
                    account_id=account_id,
                    kind="password.reset_repeated",
                    ip=client.ip_address,
                    device_id=client.device_id,
                )
                return
            expires_at = await reset_store.create_reset(
                conn, account_id=account_id, token_hash=token_hash(token), lifetime=RESET_LIFETIME
            )
            # Addressed to the account, not to anything in the request: notify sends
            # the link to the registered primary email and tells the other channels.
            await send_code_notice(
                conn,
                account_id=account_id,
                kind=Kind.NOTICE_KIND_PASSWORD_RESET,
                secret=token,
                expires_at=expires_at,
                key=f"{message.idempotency_key}:link",
            )
            await send_event_notice(
                conn,
                account_id=account_id,
                kind=Kind.NOTICE_KIND_RESET_REQUESTED,
                occurred_at=message.created_at,
                ip_address=client.ip_address,
                device=client.user_agent,
                key=f"{message.idempotency_key}:told",
            )
            await log_store.log_event(
                conn,
                account_id=account_id,
                kind="password.reset_requested",
                ip=client.ip_address,
                device_id=client.device_id,
            )

    async def complete_password_reset(
        self, *, reset_token: str, new_password: str, client: common_pb2.ClientContext
    ) -> None:
        async with self.pool.acquire() as conn:
            account_id = await reset_store.usable_reset(conn, token_hash(reset_token))
            if account_id is None:
                raise FailedPrecondition(
                    "RESET_LINK_INVALID", "the reset link is invalid or has expired"
                )
            primary = await contact_store.primary_email(conn, account_id)
            has_factor = bool(await factor_store.factors(conn, account_id))
        await self._check_new_password(
            "new_password",
            new_password,
            email=primary["address"] if primary is not None else "",
            has_second_factor=has_factor,
        )
        new_hash = await self.hasher.hash(new_password, lane=Lane.NEW_DEVICE)
        async with self.pool.acquire() as conn, conn.transaction():
            if await reset_store.use_reset(conn, token_hash(reset_token)) != account_id:
                raise FailedPrecondition(
                    "RESET_LINK_INVALID", "the reset link is invalid or has expired"
                )
            await account_store.set_password(conn, account_id, new_hash)
            await account_store.clear_failures(conn, account_id)
            await self._credential_changed(
                conn, account_id, keep=None, detail="password reset", client=client
            )
