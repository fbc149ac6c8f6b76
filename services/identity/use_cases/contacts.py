"""The account's profile and verified contacts, and closing the account."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import asyncpg

from services.identity.clients.notices import (
    Kind,
    close_wallet,
    send_code_notice,
    send_event_notice,
)
from services.identity.domain import credentials as cred
from services.identity.domain.errors import invalid_code, session_ended
from services.identity.domain.sealing import (
    new_code,
    new_link_token,
    token_hash,
)
from services.identity.domain.sessions import (
    CODE_ATTEMPTS,
    CODE_LIFETIME,
    FREEZE_LIFETIME,
)
from services.identity.storage import accounts as account_store
from services.identity.storage import contacts as contact_store
from services.identity.storage import security_log as log_store
from services.identity.storage import sessions as session_store
from services.identity.use_cases.base import (
    IdentityBase,
)
from services.runtime.device_proof import ProvenDevice
from services.runtime.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
)
from services.runtime.tokens import TokenClaims


class Contacts(IdentityBase):
    async def profile(self, claims: TokenClaims) -> Any:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn:
            return await account_store.account(conn, session["account_id"])

    async def update_profile(self, claims: TokenClaims, changes: dict[str, Any]) -> Any:
        session = await self.live_session(claims)
        if "birth_date" in changes and isinstance(changes["birth_date"], str):
            changes["birth_date"] = date.fromisoformat(changes["birth_date"])
        async with self.pool.acquire() as conn, conn.transaction():
            await account_store.update_profile(conn, session["account_id"], changes)
            await log_store.log_event(
                conn,
                account_id=session["account_id"],
                kind="profile.updated",
                session_id=session["id"],
                details={"fields": sorted(changes)},
            )
            return await account_store.account(conn, session["account_id"])

    async def list_contacts(self, claims: TokenClaims) -> list[Any]:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn:
            return await contact_store.contacts(conn, session["account_id"], verified_only=False)

    async def add_contact(
        self,
        claims: TokenClaims,
        *,
        kind: int,
        address: str,
        make_primary: bool,
        access_token: str = "",
        device_proof: str = "",
    ) -> Any:
        session = await self.require_recent_auth(claims)
        moves_links = make_primary and kind == contact_store.EMAIL
        proven = (
            await self._proven(device_proof, "AddContact", access_token) if moves_links else None
        )
        code = new_code()
        expires_at = self.now() + CODE_LIFETIME
        async with self.pool.acquire() as conn, conn.transaction():
            if moves_links:
                await self._may_move_credential_links(conn, session, proven)
            contact = await contact_store.add_contact(
                conn,
                account_id=session["account_id"],
                kind=kind,
                address=address,
                address_key=cred.identifier_key(address),
                make_primary=moves_links,
                code_hash=self.box.code_hash(code, purpose="contact"),
                code_expires_at=expires_at,
            )
            await send_code_notice(
                conn,
                account_id=session["account_id"],
                kind=Kind.NOTICE_KIND_CONTACT_VERIFICATION,
                secret=code,
                expires_at=expires_at,
                pending_contact_id=contact["id"],
                key=f"identity:contact-code:{uuid.uuid4()}",
            )
            await log_store.log_event(
                conn,
                account_id=session["account_id"],
                kind="contact.added",
                session_id=session["id"],
                details={"contact_id": str(contact["id"]), "kind": kind},
            )
        return contact

    async def _may_move_credential_links(
        self, conn: asyncpg.Connection, session: Any, proven: ProvenDevice | None
    ) -> None:
        """The primary email is where reset links and sign-in codes go, so it moves only
        from the device the account was registered on (its key ``proven`` on this very
        call: a copy of a session's token is not the device), or in a session that could open
        the wallet, outside a cool-off: the password with one code from the inbox, or a
        factor enrolled in such a session, must not point the account's resets elsewhere."""
        account = await account_store.account(conn, session["account_id"])
        if account is None:
            raise session_ended()
        if await self._on_registration_device(conn, account, session, proven):
            return
        if not cred.may_open_wallet(session["methods"]):
            raise PermissionDenied(
                "ASSURANCE_TOO_LOW",
                "a new primary email needs the device the account was registered on, "
                "or a session from a passkey or a password with TOTP",
            )
        if account["cooloff_until"] is not None and account["cooloff_until"] > self.now():
            raise FailedPrecondition(
                "COOLOFF",
                "credentials changed recently; change the primary email from the device "
                "the account was registered on, or after the cool-off",
                metadata={"until": account["cooloff_until"].isoformat()},
            )

    async def verify_contact(self, claims: TokenClaims, *, contact_id: uuid.UUID, code: str) -> Any:
        session = await self.live_session(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            contact = await contact_store.contact(conn, contact_id)
            if contact is None or contact["account_id"] != account_id or contact["verified"]:
                raise NotFound("CONTACT_NOT_FOUND", "no such pending contact")
            if (
                contact["code_hash"] is None
                or contact["code_attempts"] >= CODE_ATTEMPTS
                or contact["code_expires_at"] < self.now()
            ):
                raise invalid_code()
            if contact["code_hash"] != self.box.code_hash(code, purpose="contact"):
                await account_store.count_code_attempt(conn, contact_id)
                wrong = True
            else:
                wrong = False
                is_email = contact["kind"] == contact_store.EMAIL
                if is_email:
                    await account_store.lock_address(conn, contact["address_key"])
                old_primary = await contact_store.primary_email(conn, account_id)
                # An address another account has verified stays with that account: proving
                # the inbox again from elsewhere does not move it (the refusal comes only
                # after the right code, so it tells nothing to whoever lacks the inbox).
                verified = await contact_store.verify_contact(conn, contact)
                if verified is None:
                    raise FailedPrecondition(
                        "ADDRESS_UNAVAILABLE", "this address cannot be added to the account"
                    )
                if is_email:
                    # The address is now this account's: registrations of it end.
                    await account_store.end_pending_registrations(conn, contact["address_key"])
                freeze = new_link_token()
                await contact_store.create_freeze(
                    conn,
                    token_hash=token_hash(freeze),
                    account_id=account_id,
                    contact_id=contact_id,
                    expires_at=self.now() + FREEZE_LIFETIME,
                )
                if old_primary is not None and verified["is_primary"]:
                    # The old address keeps getting this one notice, with the way to stop it.
                    await log_store.log_event(
                        conn,
                        account_id=account_id,
                        kind="contact.primary_changed",
                        details={"from": str(old_primary["id"]), "to": str(contact_id)},
                    )
                await send_event_notice(
                    conn,
                    account_id=account_id,
                    kind=Kind.NOTICE_KIND_CONTACT_CHANGED,
                    occurred_at=self.now(),
                    detail="contact added",
                    freeze_token=freeze,
                )
                await self._revoke_others(
                    conn, account_id, keep=session["id"], reason="contact changed"
                )
                await account_store.start_cooloff(conn, account_id, self.cooloff)
                await log_store.log_event(
                    conn,
                    account_id=account_id,
                    kind="contact.verified",
                    session_id=session["id"],
                    details={"contact_id": str(contact_id)},
                )
        if wrong:
            raise invalid_code()
        return verified

    async def remove_contact(self, claims: TokenClaims, contact_id: uuid.UUID) -> None:
        session = await self.require_recent_auth(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            contact = await contact_store.contact(conn, contact_id)
            if contact is None or contact["account_id"] != account_id:
                raise NotFound("CONTACT_NOT_FOUND", "no such contact")
            if contact["is_primary"]:
                raise FailedPrecondition(
                    "PRIMARY_EMAIL", "make another verified email primary before removing this one"
                )
            await send_event_notice(
                conn,
                account_id=account_id,
                kind=Kind.NOTICE_KIND_CONTACT_CHANGED,
                occurred_at=self.now(),
                detail="contact removed",
            )
            await contact_store.remove_contact(conn, contact_id)
            if contact["verified"]:
                await self._revoke_others(
                    conn, account_id, keep=session["id"], reason="contact removed"
                )
                await account_store.start_cooloff(conn, account_id, self.cooloff)
            await log_store.log_event(
                conn,
                account_id=account_id,
                kind="contact.removed",
                session_id=session["id"],
                details={"contact_id": str(contact_id)},
            )

    async def freeze_contact_change(self, freeze_token: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            freeze = await contact_store.use_freeze(conn, token_hash(freeze_token))
            if freeze is None:
                raise FailedPrecondition("FREEZE_LINK_INVALID", "the link is invalid or expired")
            account_id = freeze["account_id"]
            contact = await contact_store.contact(conn, freeze["contact_id"])
            if contact is not None:
                await contact_store.remove_contact(conn, contact["id"])
            await contact_store.restore_contacts_removed_after(
                conn, account_id=account_id, changed_contact_id=freeze["contact_id"]
            )
            if await contact_store.primary_email(conn, account_id) is None:
                # The previous primary email takes its place again.
                await contact_store.restore_earliest_primary_email(conn, account_id)
            await session_store.end_begun_with_old_credentials(conn, account_id, keep=None)
            await session_store.revoke_sessions(
                conn,
                account_id=account_id,
                reason="contact change frozen",
                token_lifetime=self.revocation_lifetime,
            )
            await log_store.log_event(
                conn,
                account_id=account_id,
                kind="contact.change_frozen",
                actor="self",
                details={"contact_id": str(freeze["contact_id"])},
            )

    async def close_account(self, claims: TokenClaims, reason: str) -> None:
        # The wallet closes with the account, and a closed account can never claim its
        # balance again: only a session that could open the wallet may close it.
        session = await self.require_factor_change(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            account = await account_store.account_for_update(conn, account_id)
            if account is None:
                raise session_ended()
            await session_store.end_begun_with_old_credentials(conn, account_id, keep=None)
            await session_store.revoke_sessions(
                conn,
                account_id=account_id,
                reason="account closed",
                token_lifetime=self.revocation_lifetime,
            )
            await account_store.set_status(conn, account_id, "closed")
            await log_store.log_event(
                conn,
                account_id=account_id,
                kind="account.closed",
                session_id=session["id"],
                details={"reason": reason},
            )
            await send_event_notice(
                conn,
                account_id=account_id,
                kind=Kind.NOTICE_KIND_ACCOUNT_STATUS,
                occurred_at=self.now(),
                detail="account closed",
            )
            await account_store.release_logins(conn, account_id)
            await close_wallet(conn, payer_id=account["payer_id"])
