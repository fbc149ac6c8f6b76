"""All of identity's SQL. Each function takes a connection; callers own the transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.identity.device_proof import ProvenDevice
from services.runtime.outbox import SCRUB_FIELD

Record = Any
EMAIL = 1
REVOCATIONS_CHANNEL = "identity_revocations"
# Where a code notice carries its link (as in notices.CODE_SECRET).
CODE_SECRET = ("code", "secret")


# Accounts and registration --------------------------------------------------


async def account(conn: asyncpg.Connection, account_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("select * from accounts where id = $1", account_id)


async def account_for_update(conn: asyncpg.Connection, account_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("select * from accounts where id = $1 for update", account_id)


async def account_by_login(conn: asyncpg.Connection, login_key: str) -> Record | None:
    """The account whose verified email has this look-up form, if any."""
    return await conn.fetchrow(
        "select a.* from contacts c join accounts a on a.id = c.account_id where c.login_key = $1",
        login_key,
    )


async def login_candidate(
    conn: asyncpg.Connection | asyncpg.Pool,
    login_key: str,
    proof: ProvenDevice | None,
) -> Record | None:
    """The account signing in with this identifier, whether the request's proof was
    fresh (``proof_fresh``) and its key registered to the account (``known_device``),
    in one statement.

    The proof is spent in the same statement, whether or not the account exists (the
    same work either way): a proof seen before makes the device unknown.
    """
    return await conn.fetchrow(
        "with spent as (insert into device_proofs (thumbprint, jti, expires_at)"
        " select $2, $3, to_timestamp($4) where $2::text is not null"
        " on conflict do nothing returning thumbprint)"
        " select a.*, exists (select 1 from spent) as proof_fresh,"
        " exists (select 1 from spent) and exists (select 1 from devices d"
        " where d.account_id = a.id and d.device_id = $2 and d.removed_at is null)"
        " as known_device"
        " from contacts c join accounts a on a.id = c.account_id where c.login_key = $1",
        login_key,
        proof.thumbprint if proof is not None else None,
        proof.jti if proof is not None else None,
        proof.remember_until if proof is not None else 0.0,
    )


async def spend_device_proof(conn: asyncpg.Connection | asyncpg.Pool, proof: ProvenDevice) -> bool:
    """Remember a proof's ``jti``; False when it was used before (a replay)."""
    spent = await conn.fetchval(
        "insert into device_proofs (thumbprint, jti, expires_at)"
        " values ($1, $2, to_timestamp($3)) on conflict do nothing returning true",
        proof.thumbprint,
        proof.jti,
        proof.remember_until,
    )
    return bool(spent)


async def purge_device_proofs(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """Forget proofs too old to be accepted anyway."""
    done = await conn.execute("delete from device_proofs where expires_at < now()")
    return int(done.split()[-1])


async def set_registration_device(
    conn: asyncpg.Connection, account_id: uuid.UUID, thumbprint: str | None
) -> None:
    await conn.execute(
        "update accounts set registration_device_id = $2 where id = $1", account_id, thumbprint
    )


async def account_by_payer(conn: asyncpg.Connection, payer_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("select * from accounts where payer_id = $1", payer_id)


async def lock_address(conn: asyncpg.Connection, login_key: str) -> None:
    """Serialise, until the transaction ends, everything that registers, verifies or
    takes this address, so two verifications cannot both claim it."""
    await conn.execute(
        "select pg_advisory_xact_lock(hashtextextended($1, 0))", f"identity-address:{login_key}"
    )


async def pending_registration(
    conn: asyncpg.Connection, login_key: str, device_id: str
) -> Record | None:
    """The live registration of this address made from this device (a pending account
    with its own password, profile and code); registrations from other devices are
    other people's and never answer for this one."""
    return await conn.fetchrow(
        "select c.id as contact_id, c.account_id, c.code_hash, c.code_expires_at,"
        " c.code_attempts from contacts c join accounts a on a.id = c.account_id"
        " where c.address_key = $1 and a.status = 'pending' and c.removed_at is null"
        " and a.registration_device_id = $2 order by c.created_at desc limit 1",
        login_key,
        device_id,
    )


async def end_pending_registrations(
    conn: asyncpg.Connection, login_key: str, *, device_id: str | None = None
) -> None:
    """End the address's live registrations (only those from ``device_id`` when given):
    their codes stop working and their pending accounts can never become active."""
    await conn.execute(
        "update contacts c set removed_at = now(), code_hash = null from accounts a"
        " where a.id = c.account_id and a.status = 'pending' and c.address_key = $1"
        " and c.removed_at is null and ($2::text is null or a.registration_device_id = $2)",
        login_key,
        device_id,
    )


async def create_pending_account(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    payer_id: uuid.UUID,
    password_hash: str,
    display_name: str | None,
    language: int,
    device_id: str | None,
    email: str,
    login_key: str,
    code_hash: bytes,
    code_expires_at: datetime,
) -> uuid.UUID:
    await conn.execute(
        "insert into accounts (id, status, payer_id, password_hash, display_name, language,"
        " registration_device_id) values ($1, 'pending', $2, $3, $4, $5, $6)",
        account_id,
        payer_id,
        password_hash,
        display_name,
        language,
        device_id,
    )
    contact_id = uuid.uuid4()
    await conn.execute(
        "insert into contacts (id, account_id, kind, address, address_key, is_primary,"
        " make_primary, code_hash, code_expires_at)"
        " values ($1, $2, $3, $4, $5, false, true, $6, $7)",
        contact_id,
        account_id,
        EMAIL,
        email,
        login_key,
        code_hash,
        code_expires_at,
    )
    return contact_id


async def count_code_attempt(conn: asyncpg.Connection, contact_id: uuid.UUID) -> None:
    await conn.execute(
        "update contacts set code_attempts = code_attempts + 1 where id = $1", contact_id
    )


async def activate_account(
    conn: asyncpg.Connection, *, account_id: uuid.UUID, contact_id: uuid.UUID, login_key: str
) -> bool:
    """Verify the registration address; False when another account took it meanwhile."""
    taken = await conn.fetchval("select 1 from contacts where login_key = $1", login_key)
    if taken:
        return False
    await conn.execute(
        "update contacts set verified = true, is_primary = true, make_primary = false,"
        " verified_at = now(), code_hash = null, login_key = $2 where id = $1",
        contact_id,
        login_key,
    )
    await conn.execute("update accounts set status = 'active' where id = $1", account_id)
    return True


async def set_password(conn: asyncpg.Connection, account_id: uuid.UUID, password_hash: str) -> None:
    await conn.execute(
        "update accounts set password_hash = $2, password_expired = false where id = $1",
        account_id,
        password_hash,
    )


async def record_failure(conn: asyncpg.Connection, account_id: uuid.UUID) -> None:
    await conn.execute(
        "update accounts set recent_failures = recent_failures + 1 where id = $1", account_id
    )


async def clear_failures(conn: asyncpg.Connection, account_id: uuid.UUID) -> None:
    await conn.execute(
        "update accounts set recent_failures = 0 where id = $1 and recent_failures <> 0",
        account_id,
    )


async def start_cooloff(conn: asyncpg.Connection, account_id: uuid.UUID, length: timedelta) -> None:
    await conn.execute(
        # A change during a cool-off extends it but keeps its start, so a passkey enrolled
        # inside it never counts as "enrolled before the change".
        "update accounts set cooloff_started_at = case when cooloff_until > now()"
        " then cooloff_started_at else now() end,"
        " cooloff_until = greatest(coalesce(cooloff_until, now()), now() + $2) where id = $1",
        account_id,
        length,
    )


async def set_status(conn: asyncpg.Connection, account_id: uuid.UUID, status: str) -> None:
    await conn.execute(
        "update accounts set status = $2,"
        " closed_at = case when $2 = 'closed' then now() else closed_at end where id = $1",
        account_id,
        status,
    )


async def release_logins(conn: asyncpg.Connection, account_id: uuid.UUID) -> None:
    """A closed account no longer holds its addresses."""
    await conn.execute("update contacts set login_key = null where account_id = $1", account_id)


async def update_profile(
    conn: asyncpg.Connection, account_id: uuid.UUID, changes: dict[str, Any]
) -> None:
    columns = ("display_name", "family_name", "given_name", "birth_date", "language")
    assignments = []
    values: list[Any] = [account_id]
    for column in columns:
        if column in changes:
            values.append(changes[column])
            assignments.append(f"{column} = ${len(values)}")
    if assignments:
        # Column names come from the fixed tuple above; values are bound.
        await conn.execute(
            f"update accounts set {', '.join(assignments)} where id = $1",  # noqa: S608
            *values,
        )


# Contacts -------------------------------------------------------------------


async def contacts(
    conn: asyncpg.Connection, account_id: uuid.UUID, *, verified_only: bool
) -> list[Record]:
    return list(
        await conn.fetch(
            "select * from contacts where account_id = $1 and removed_at is null"
            " and (verified or not $2) order by is_primary desc, created_at",
            account_id,
            verified_only,
        )
    )


async def contact(conn: asyncpg.Connection, contact_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow(
        "select * from contacts where id = $1 and removed_at is null", contact_id
    )


async def primary_email(conn: asyncpg.Connection, account_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow(
        "select * from contacts where account_id = $1 and kind = $2 and verified"
        " and is_primary and removed_at is null",
        account_id,
        EMAIL,
    )


async def add_contact(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    kind: int,
    address: str,
    address_key: str,
    make_primary: bool,
    code_hash: bytes,
    code_expires_at: datetime,
) -> Record:
    return await conn.fetchrow(
        "insert into contacts (id, account_id, kind, address, address_key, make_primary,"
        " code_hash, code_expires_at) values ($1, $2, $3, $4, $5, $6, $7, $8) returning *",
        uuid.uuid4(),
        account_id,
        kind,
        address,
        address_key,
        make_primary,
        code_hash,
        code_expires_at,
    )


async def verify_contact(conn: asyncpg.Connection, contact: Record) -> Record | None:
    """Mark verified; becomes primary if asked. None when the address belongs elsewhere."""
    login_key = contact["address_key"] if contact["kind"] == EMAIL else None
    if login_key is not None and await conn.fetchval(
        "select 1 from contacts where login_key = $1", login_key
    ):
        return None
    if contact["make_primary"] and contact["kind"] == EMAIL:
        await conn.execute(
            "update contacts set is_primary = false where account_id = $1 and kind = $2",
            contact["account_id"],
            EMAIL,
        )
    return await conn.fetchrow(
        "update contacts set verified = true, verified_at = now(), code_hash = null,"
        " is_primary = make_primary and kind = $3, make_primary = false, login_key = $2"
        " where id = $1 returning *",
        contact["id"],
        login_key,
        EMAIL,
    )


async def remove_contact(conn: asyncpg.Connection, contact_id: uuid.UUID) -> None:
    await conn.execute(
        "update contacts set removed_at = now(), login_key = null, is_primary = false"
        " where id = $1",
        contact_id,
    )


async def restore_contacts_removed_after(
    conn: asyncpg.Connection, *, account_id: uuid.UUID, changed_contact_id: uuid.UUID
) -> None:
    """Bring back the verified contacts removed since ``changed_contact_id`` was verified.

    Freezing a contact change undoes what followed it too: an intruder who moved the
    account to their address and then dropped the owner's must not leave it with none.
    An address another account has taken since stays with that account.
    """
    await conn.execute(
        "update contacts c set removed_at = null,"
        " login_key = case when c.kind = $3 then c.address_key end"
        " from contacts changed where changed.id = $2 and c.account_id = $1 and c.id <> $2"
        " and c.verified and c.removed_at >= changed.verified_at"
        " and not (c.kind = $3 and exists ("
        "  select 1 from contacts other where other.login_key = c.address_key))",
        account_id,
        changed_contact_id,
        EMAIL,
    )


async def restore_earliest_primary_email(conn: asyncpg.Connection, account_id: uuid.UUID) -> None:
    """Make the longest-verified remaining email primary (for an account left without one)."""
    await conn.execute(
        "update contacts set is_primary = true where id = ("
        " select id from contacts where account_id = $1 and kind = $2"
        " and verified and removed_at is null order by verified_at limit 1)",
        account_id,
        EMAIL,
    )


async def create_freeze(
    conn: asyncpg.Connection,
    *,
    token_hash: bytes,
    account_id: uuid.UUID,
    contact_id: uuid.UUID,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "insert into contact_freezes (token_hash, account_id, contact_id, expires_at)"
        " values ($1, $2, $3, $4)",
        token_hash,
        account_id,
        contact_id,
        expires_at,
    )


async def use_freeze(conn: asyncpg.Connection, token_hash: bytes) -> Record | None:
    return await conn.fetchrow(
        "update contact_freezes set used_at = now() where token_hash = $1 and used_at is null"
        " and expires_at > now() returning account_id, contact_id",
        token_hash,
    )


# Devices --------------------------------------------------------------------


async def device(conn: asyncpg.Connection, account_id: uuid.UUID, device_id: str) -> Record | None:
    return await conn.fetchrow(
        "select * from devices where account_id = $1 and device_id = $2 and removed_at is null",
        account_id,
        device_id,
    )


async def remember_device(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    device: ProvenDevice,
    user_agent: str,
    ip: str,
    country: str,
) -> bool:
    """Register or refresh a device by its proven key; True when it was not registered before."""
    previous = await conn.fetchval(
        "select removed_at is null from devices where account_id = $1 and device_id = $2",
        account_id,
        device.thumbprint,
    )
    await conn.execute(
        "insert into devices (account_id, device_id, public_jwk, user_agent, last_ip,"
        " last_country) values ($1, $2, $3, $4, $5, $6)"
        " on conflict (account_id, device_id) do update set"
        " user_agent = excluded.user_agent, last_ip = excluded.last_ip,"
        " last_country = excluded.last_country, last_seen_at = now(), removed_at = null,"
        " public_jwk = excluded.public_jwk,"
        " first_seen_at = case when devices.removed_at is null then devices.first_seen_at"
        " else now() end",
        account_id,
        device.thumbprint,
        device.public_jwk,
        user_agent,
        ip,
        country,
    )
    return previous is not True


async def devices(conn: asyncpg.Connection, account_id: uuid.UUID) -> list[Record]:
    return list(
        await conn.fetch(
            "select * from devices where account_id = $1 and removed_at is null"
            " order by last_seen_at desc",
            account_id,
        )
    )


async def remove_device(conn: asyncpg.Connection, account_id: uuid.UUID, device_id: str) -> bool:
    """Remove a device; when it is the one the account was registered on, its privileges
    go with it for good: the same key signing in again is just another device."""
    done = await conn.fetchval(
        "with removed as (update devices set removed_at = now()"
        " where account_id = $1 and device_id = $2 and removed_at is null returning device_id),"
        " unregistered as (update accounts set registration_device_id = null"
        " where id = $1 and registration_device_id in (select device_id from removed))"
        " select exists (select 1 from removed)",
        account_id,
        device_id,
    )
    return bool(done)


# Sessions -------------------------------------------------------------------


async def open_session(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    device_id: str,
    methods: Sequence[str],
    assurance_level: int,
    ip: str,
    lifetime: timedelta,
    refresh_hash: bytes,
) -> Record:
    row = await conn.fetchrow(
        "insert into sessions (id, account_id, device_id, methods, assurance_level, auth_time,"
        " ip_address, expires_at) values ($1, $2, $3, $4, $5, now(), $6, now() + $7)"
        " returning *",
        uuid.uuid4(),
        account_id,
        device_id,
        list(methods),
        assurance_level,
        ip,
        lifetime,
    )
    await conn.execute(
        "insert into refresh_tokens (token_hash, session_id) values ($1, $2)",
        refresh_hash,
        row["id"],
    )
    return row


async def session(conn: asyncpg.Connection, session_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("select * from sessions where id = $1", session_id)


async def live_sessions(conn: asyncpg.Connection, account_id: uuid.UUID) -> list[Record]:
    return list(
        await conn.fetch(
            "select * from sessions where account_id = $1 and revoked_at is null"
            " and expires_at > now() order by created_at desc",
            account_id,
        )
    )


async def spend_refresh_token(conn: asyncpg.Connection, token_hash: bytes) -> Record | None:
    """Lock the token row and its session; the caller decides what a spent token means."""
    return await conn.fetchrow(
        "select r.spent_at, s.* from refresh_tokens r join sessions s on s.id = r.session_id"
        " where r.token_hash = $1 for update of r, s",
        token_hash,
    )


async def rotate_refresh_token(
    conn: asyncpg.Connection, *, old_hash: bytes, new_hash: bytes, session_id: uuid.UUID
) -> None:
    await conn.execute("update refresh_tokens set spent_at = now() where token_hash = $1", old_hash)
    await conn.execute(
        "insert into refresh_tokens (token_hash, session_id) values ($1, $2)", new_hash, session_id
    )
    await conn.execute("update sessions set last_seen_at = now() where id = $1", session_id)


async def add_refresh_token(
    conn: asyncpg.Connection, *, session_id: uuid.UUID, token_hash: bytes
) -> None:
    # Earlier refresh tokens of the session are spent: only the newest one is valid.
    await conn.execute(
        "update refresh_tokens set spent_at = now() where session_id = $1 and spent_at is null",
        session_id,
    )
    await conn.execute(
        "insert into refresh_tokens (token_hash, session_id) values ($1, $2)",
        token_hash,
        session_id,
    )


async def raise_session(
    conn: asyncpg.Connection, session_id: uuid.UUID, methods: Sequence[str], level: int
) -> Record:
    """A step-up: new methods are added and auth_time becomes now."""
    return await conn.fetchrow(
        "update sessions set methods = (select array_agg(distinct m) from"
        " unnest(methods || $2::text[]) m), assurance_level = greatest(assurance_level, $3),"
        " auth_time = now(), last_seen_at = now() where id = $1 returning *",
        session_id,
        list(methods),
        level,
    )


async def revoke_sessions(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    reason: str,
    token_lifetime: timedelta,
    only: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
    device_id: str | None = None,
) -> list[uuid.UUID]:
    """Revoke live sessions of an account (one, all but one, or one device's) and announce them."""
    ids = await conn.fetchval(
        """
        with revoked as (
            update sessions set revoked_at = now(), revoke_reason = $2
            where account_id = $1 and revoked_at is null
              and ($3::uuid is null or id = $3)
              and ($4::uuid is null or id <> $4)
              and ($5::text is null or device_id = $5)
            returning id
        ), announced as (
            insert into revocations (session_id, expires_at)
            select id, now() + $6 from revoked
        )
        select coalesce(array_agg(id), '{}') from revoked
        """,
        account_id,
        reason,
        only,
        keep,
        device_id,
        token_lifetime,
    )
    if ids:
        await end_begun_in_sessions(conn, account_id, ids)
        await conn.execute(f"notify {REVOCATIONS_CHANNEL}")
    return list(ids)


async def end_begun_in_sessions(
    conn: asyncpg.Connection, account_id: uuid.UUID, session_ids: Sequence[uuid.UUID]
) -> None:
    """What revoked sessions began and never finished ends with them: step-ups,
    passkey registrations and authenticator app enrolments. An enrolment does not
    record its session, so every pending one of the account ends (it is begun
    again in a minute; one left behind could be confirmed by another session)."""
    await conn.execute(
        "update challenges set completed_at = now()"
        " where session_id = any($1::uuid[]) and completed_at is null",
        list(session_ids),
    )
    await conn.execute(
        "update ceremonies set completed_at = now()"
        " where session_id = any($1::uuid[]) and completed_at is null",
        list(session_ids),
    )
    await conn.execute(
        "update factors set removed_at = now()"
        " where account_id = $1 and confirmed_at is null and removed_at is null",
        account_id,
    )


async def end_begun_with_old_credentials(
    conn: asyncpg.Connection, account_id: uuid.UUID, *, keep: uuid.UUID | None
) -> None:
    """A credential change ends everything begun before it that could still change
    the account or sign in to it: sign-in challenges (an email code begun with the
    old password), other sessions' step-ups, unused reset links, pending enrolments
    and the codes of contacts not yet verified.

    Run before the sessions are revoked: closing a challenge waits for an answer
    being checked under its row lock, so a sign-in finishing at this moment opens
    its session first and is then revoked with the others."""
    await conn.execute(
        "update challenges set completed_at = now() where account_id = $1"
        " and completed_at is null"
        " and (session_id is null or session_id is distinct from $2::uuid)",
        account_id,
        keep,
    )
    await conn.execute(
        "update password_resets set used_at = now() where account_id = $1 and used_at is null",
        account_id,
    )
    await conn.execute(
        "update factors set removed_at = now()"
        " where account_id = $1 and confirmed_at is null and removed_at is null",
        account_id,
    )
    await conn.execute(
        "update contacts set code_hash = null where account_id = $1 and not verified"
        " and removed_at is null and code_hash is not null",
        account_id,
    )


async def revocations_after(
    conn: asyncpg.Connection | asyncpg.Pool, sequence: int, limit: int = 1000
) -> list[Record]:
    return list(
        await conn.fetch(
            "select sequence, session_id, expires_at from revocations"
            " where sequence > $1 and expires_at > now() order by sequence limit $2",
            sequence,
            limit,
        )
    )


async def revocations_among(
    conn: asyncpg.Connection | asyncpg.Pool, sequences: Sequence[int]
) -> list[Record]:
    """The rows, expired ones too (``live`` false), that now exist among ``sequences``."""
    return list(
        await conn.fetch(
            "select sequence, session_id, expires_at, expires_at > now() as live"
            " from revocations where sequence = any($1::bigint[]) order by sequence",
            list(sequences),
        )
    )


# Challenges and ceremonies --------------------------------------------------


async def create_challenge(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    purpose: str,
    session_id: uuid.UUID | None,
    device_id: str,
    ip: str,
    user_agent: str,
    methods: Sequence[str],
    risk_decision_id: str,
    known_device: bool,
    lifetime: timedelta,
) -> Record:
    return await conn.fetchrow(
        "insert into challenges (id, account_id, purpose, session_id, device_id, ip_address,"
        " user_agent, methods, risk_decision_id, known_device, expires_at)"
        " values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + $11) returning *",
        uuid.uuid4(),
        account_id,
        purpose,
        session_id,
        device_id,
        ip,
        user_agent,
        list(methods),
        risk_decision_id,
        known_device,
        lifetime,
    )


async def open_challenge(conn: asyncpg.Connection, challenge_id: uuid.UUID) -> Record | None:
    """A challenge that can still be answered, locked for this answer."""
    return await conn.fetchrow(
        "select * from challenges where id = $1 and completed_at is null and expires_at > now()"
        " for update",
        challenge_id,
    )


async def set_challenge_email_code(
    conn: asyncpg.Connection, challenge_id: uuid.UUID, code_hash: bytes, expires_at: datetime
) -> None:
    await conn.execute(
        "update challenges set email_code_hash = $2, email_code_expires_at = $3 where id = $1",
        challenge_id,
        code_hash,
        expires_at,
    )


async def set_challenge_webauthn(
    conn: asyncpg.Connection, challenge_id: uuid.UUID, webauthn_challenge: bytes
) -> None:
    await conn.execute(
        "update challenges set webauthn_challenge = $2 where id = $1",
        challenge_id,
        webauthn_challenge,
    )


async def fail_challenge(conn: asyncpg.Connection, challenge_id: uuid.UUID, limit: int) -> None:
    await conn.execute(
        "update challenges set attempts = attempts + 1,"
        " completed_at = case when attempts + 1 >= $2 then now() end where id = $1",
        challenge_id,
        limit,
    )


async def complete_challenge(conn: asyncpg.Connection, challenge_id: uuid.UUID) -> None:
    await conn.execute("update challenges set completed_at = now() where id = $1", challenge_id)


async def create_ceremony(
    conn: asyncpg.Connection,
    *,
    purpose: str,
    account_id: uuid.UUID | None,
    session_id: uuid.UUID | None,
    device_id: str,
    webauthn_challenge: bytes,
    lifetime: timedelta,
) -> uuid.UUID:
    ceremony_id = uuid.uuid4()
    await conn.execute(
        "insert into ceremonies (id, purpose, account_id, session_id, device_id,"
        " webauthn_challenge, expires_at) values ($1, $2, $3, $4, $5, $6, now() + $7)",
        ceremony_id,
        purpose,
        account_id,
        session_id,
        device_id,
        webauthn_challenge,
        lifetime,
    )
    return ceremony_id


async def take_ceremony(
    conn: asyncpg.Connection, ceremony_id: uuid.UUID, purpose: str
) -> Record | None:
    """Spend a ceremony: each WebAuthn challenge is answered at most once."""
    return await conn.fetchrow(
        "update ceremonies set completed_at = now() where id = $1 and purpose = $2"
        " and completed_at is null and expires_at > now() returning *",
        ceremony_id,
        purpose,
    )


# Factors --------------------------------------------------------------------


async def factors(conn: asyncpg.Connection, account_id: uuid.UUID) -> list[Record]:
    return list(
        await conn.fetch(
            "select * from factors where account_id = $1 and removed_at is null"
            " and confirmed_at is not null order by created_at",
            account_id,
        )
    )


async def ever_had_factor(conn: asyncpg.Connection, account_id: uuid.UUID) -> bool:
    """Whether the account has ever confirmed a factor, removed since or not."""
    return bool(
        await conn.fetchval(
            "select exists (select 1 from factors where account_id = $1"
            " and confirmed_at is not null)",
            account_id,
        )
    )


async def factor(conn: asyncpg.Connection, factor_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow(
        "select * from factors where id = $1 and removed_at is null", factor_id
    )


async def has_recovery_codes(conn: asyncpg.Connection, account_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            "select exists (select 1 from recovery_codes where account_id = $1"
            " and used_at is null)",
            account_id,
        )
    )


async def create_pending_totp(
    conn: asyncpg.Connection, account_id: uuid.UUID, sealed_secret: bytes
) -> uuid.UUID:
    factor_id = uuid.uuid4()
    await conn.execute(
        "insert into factors (id, account_id, kind, name, sealed_totp_secret)"
        " values ($1, $2, 'totp', 'Authenticator app', $3)",
        factor_id,
        account_id,
        sealed_secret,
    )
    return factor_id


async def pending_totp(
    conn: asyncpg.Connection, factor_id: uuid.UUID, account_id: uuid.UUID
) -> Record | None:
    return await conn.fetchrow(
        "select * from factors where id = $1 and account_id = $2 and kind = 'totp'"
        " and confirmed_at is null and removed_at is null"
        " and created_at > now() - interval '1 hour'"
        " for update",
        factor_id,
        account_id,
    )


async def confirm_factor(conn: asyncpg.Connection, factor_id: uuid.UUID, step: int) -> Record:
    return await conn.fetchrow(
        "update factors set confirmed_at = now(), last_totp_step = $2, last_used_at = now()"
        " where id = $1 returning *",
        factor_id,
        step,
    )


async def accept_totp_step(conn: asyncpg.Connection, factor_id: uuid.UUID, step: int) -> bool:
    """Accept a TOTP time step once: a replayed code (same or older step) is refused."""
    done = await conn.fetchval(
        "update factors set last_totp_step = $2, last_used_at = now() where id = $1"
        " and (last_totp_step is null or last_totp_step < $2) returning true",
        factor_id,
        step,
    )
    return bool(done)


async def add_passkey(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    name: str,
    credential_id: bytes,
    public_key: bytes,
    sign_count: int,
) -> Record:
    return await conn.fetchrow(
        "insert into factors (id, account_id, kind, name, credential_id, public_key, sign_count,"
        " confirmed_at) values ($1, $2, 'passkey', $3, $4, $5, $6, now()) returning *",
        uuid.uuid4(),
        account_id,
        name,
        credential_id,
        public_key,
        sign_count,
    )


async def passkey_by_credential(conn: asyncpg.Connection, credential_id: bytes) -> Record | None:
    return await conn.fetchrow(
        "select * from factors where credential_id = $1 and removed_at is null for update",
        credential_id,
    )


async def record_passkey_use(conn: asyncpg.Connection, factor_id: uuid.UUID, count: int) -> None:
    await conn.execute(
        "update factors set sign_count = $2, last_used_at = now() where id = $1", factor_id, count
    )


async def suspend_factor(conn: asyncpg.Connection, factor_id: uuid.UUID) -> None:
    await conn.execute("update factors set suspended = true where id = $1", factor_id)


async def remove_factor(conn: asyncpg.Connection, factor_id: uuid.UUID) -> None:
    await conn.execute("update factors set removed_at = now() where id = $1", factor_id)


async def replace_recovery_codes(
    conn: asyncpg.Connection, account_id: uuid.UUID, hashes: Sequence[bytes]
) -> None:
    await conn.execute("delete from recovery_codes where account_id = $1", account_id)
    await conn.executemany(
        "insert into recovery_codes (account_id, code_hash) values ($1, $2)",
        [(account_id, code_hash) for code_hash in hashes],
    )


async def use_recovery_code(
    conn: asyncpg.Connection, account_id: uuid.UUID, code_hash: bytes
) -> bool:
    done = await conn.fetchval(
        "update recovery_codes set used_at = now() where account_id = $1 and code_hash = $2"
        " and used_at is null returning true",
        account_id,
        code_hash,
    )
    return bool(done)


# Password resets ------------------------------------------------------------


async def create_reset(
    conn: asyncpg.Connection, *, account_id: uuid.UUID, token_hash: bytes, lifetime: timedelta
) -> datetime:
    # A new link replaces any earlier one still unused.
    await conn.execute(
        "update password_resets set used_at = now() where account_id = $1 and used_at is null",
        account_id,
    )
    expires_at: datetime = await conn.fetchval(
        "insert into password_resets (token_hash, account_id, expires_at)"
        " values ($1, $2, now() + $3) returning expires_at",
        token_hash,
        account_id,
        lifetime,
    )
    return expires_at


async def has_fresh_reset(
    conn: asyncpg.Connection, account_id: uuid.UUID, *, within: timedelta
) -> bool:
    """Whether an unused, unexpired reset link was made for the account within ``within``."""
    return bool(
        await conn.fetchval(
            "select exists (select 1 from password_resets where account_id = $1"
            " and used_at is null and expires_at > now() and created_at > now() - $2::interval)",
            account_id,
            within,
        )
    )


async def use_reset(conn: asyncpg.Connection, token_hash: bytes) -> uuid.UUID | None:
    account_id: uuid.UUID | None = await conn.fetchval(
        "update password_resets set used_at = now() where token_hash = $1 and used_at is null"
        " and expires_at > now() returning account_id",
        token_hash,
    )
    return account_id


# Audit ----------------------------------------------------------------------


async def log_event(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    kind: str,
    actor: str = "self",
    ip: str = "",
    device_id: str = "",
    session_id: uuid.UUID | str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "insert into security_events (id, account_id, kind, ip_address, device_id, session_id,"
        " actor, details) values ($1, $2, $3, $4, $5, $6, $7, $8)",
        uuid.uuid4(),
        account_id,
        kind,
        ip,
        device_id,
        str(session_id or ""),
        actor,
        details or {},
    )


async def security_events(
    conn: asyncpg.Connection,
    account_id: uuid.UUID,
    *,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Record]:
    return list(
        await conn.fetch(
            "select * from security_events where account_id = $1"
            " and ($2::timestamptz is null or (occurred_at, id) < ($2, $3::uuid))"
            " order by occurred_at desc, id desc limit $4",
            account_id,
            before[0] if before else None,
            before[1] if before else None,
            limit,
        )
    )


# Forced credential resets ---------------------------------------------------

_RESETTABLE = "status in ('active', 'locked')"


async def create_reset_job(
    conn: asyncpg.Connection,
    *,
    reason: str,
    all_accounts: bool,
    account_ids: Sequence[uuid.UUID],
    created_by: str,
) -> Record:
    total = await conn.fetchval(
        f"select count(*) from accounts where {_RESETTABLE}"  # noqa: S608 - a constant
        " and ($1 or id = any($2::uuid[]))",
        all_accounts,
        list(account_ids),
    )
    return await conn.fetchrow(
        "insert into reset_jobs (id, reason, all_accounts, account_ids, total, created_by)"
        " values ($1, $2, $3, $4, $5, $6) returning *",
        uuid.uuid4(),
        reason,
        all_accounts,
        list(account_ids),
        total,
        created_by,
    )


async def reset_job(conn: asyncpg.Connection, job_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("select * from reset_jobs where id = $1", job_id)


async def run_reset_batch(
    conn: asyncpg.Connection,
    job: Record,
    *,
    batch_size: int,
    token_lifetime: timedelta,
    link_lifetime: timedelta,
    notify_channel: str,
) -> Record:
    """Reset the next batch of a job in one statement; returns the job as it now stands.

    Everything a batch does (expire passwords, end sessions, announce revocations,
    store reset links, queue the notices, audit) commits together with the job's
    cursor, so a crash repeats at most the batch that was running. Reset links are
    made in SQL (two random UUIDs, 244 random bits) so that no row leaves the database.
    """
    row = await conn.fetchrow(
        f"""
        with batch as (
            select id from accounts
            where {_RESETTABLE}
              and ($2::uuid is null or id > $2)
              and ($3 or id = any($4::uuid[]))
              and created_at <= $10
            order by id
            limit $5
            for update
        ), expired as (
            update accounts set password_expired = true, recent_failures = 0
            from batch where accounts.id = batch.id
            returning accounts.id
        ), revoked as (
            update sessions set revoked_at = now(), revoke_reason = 'forced credential reset'
            where account_id in (select id from batch) and revoked_at is null
            returning id
        ), announced as (
            insert into revocations (session_id, expires_at)
            select id, now() + $6 from revoked
        ), challenges_closed as (
            -- What was begun with the expired password or in the revoked sessions
            -- ends with them (as end_begun_with_old_credentials does one by one).
            update challenges set completed_at = now()
            where account_id in (select id from batch) and completed_at is null
        ), ceremonies_closed as (
            update ceremonies set completed_at = now()
            where session_id in (select id from revoked) and completed_at is null
        ), enrolments_ended as (
            update factors set removed_at = now()
            where account_id in (select id from batch)
              and confirmed_at is null and removed_at is null
        ), contact_codes_ended as (
            update contacts set code_hash = null
            where account_id in (select id from batch) and not verified
              and removed_at is null and code_hash is not null
        ), old_links_used as (
            -- Sees the table as it was before this statement: the new links stay unused.
            update password_resets set used_at = now()
            where account_id in (select id from batch) and used_at is null
        ), links as materialized (
            select id as account_id,
                   replace(gen_random_uuid()::text, '-', '')
                   || replace(gen_random_uuid()::text, '-', '') as token
            from expired
        ), stored_links as (
            insert into password_resets (token_hash, account_id, expires_at)
            select sha256(convert_to(token, 'UTF8')), account_id, now() + $7 from links
        ), keyed as (
            select account_id, token,
                   'identity:forced-reset:' || $1::uuid::text || ':' || account_id as notice_key
            from links
        ), notices as (
            insert into outbox (topic, idempotency_key, payload)
            select 'notify.send_notice', notice_key,
                   jsonb_build_object(
                       'account_id', account_id::text,
                       'kind', 'NOTICE_KIND_FORCED_RESET',
                       'idempotency_key', notice_key,
                       'code', jsonb_build_object(
                           'secret', token,
                           'expires_at', to_char((now() + $7) at time zone 'UTC',
                                                 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                       $11::text, $12::text::jsonb)
            from keyed
            on conflict (idempotency_key) do nothing
        ), audited as (
            insert into security_events (id, account_id, kind, actor, details)
            select gen_random_uuid(), id, 'password.forced_reset', $8,
                   jsonb_build_object('job_id', $1::uuid::text, 'reason', $9::text)
            from expired
        )
        update reset_jobs set
            processed = processed + (select count(*) from expired),
            cursor_id = coalesce((select max(id::text)::uuid from expired), cursor_id),
            finished_at = case when (select count(*) from batch) < $5 then now() end
        where id = $1::uuid
        returning *
        """,  # noqa: S608 - the only interpolation is a constant
        job["id"],
        job["cursor_id"],
        job["all_accounts"],
        list(job["account_ids"]),
        batch_size,
        token_lifetime,
        link_lifetime,
        f"operator:{job['created_by']}",
        job["reason"],
        job["created_at"],
        # The link is blanked in the outbox once notify has it, as enqueue(scrub=...) does.
        SCRUB_FIELD,
        json.dumps([list(CODE_SECRET)]),
    )
    await conn.execute(f"notify {REVOCATIONS_CHANNEL}")
    await conn.execute("select pg_notify($1, '')", notify_channel)
    return row


# External identities --------------------------------------------------------


async def create_external_nonce(
    conn: asyncpg.Connection, *, nonce: str, provider: str, lifetime: timedelta
) -> None:
    await conn.execute(
        "insert into external_nonces (nonce, provider, expires_at) values ($1, $2, now() + $3)",
        nonce,
        provider,
        lifetime,
    )


async def use_external_nonce(conn: asyncpg.Connection, nonce: str, provider: str) -> bool:
    done = await conn.fetchval(
        "update external_nonces set used_at = now() where nonce = $1 and provider = $2"
        " and used_at is null and expires_at > now() returning true",
        nonce,
        provider,
    )
    return bool(done)


async def external_account(
    conn: asyncpg.Connection, provider: str, subject: str
) -> uuid.UUID | None:
    account_id: uuid.UUID | None = await conn.fetchval(
        "select account_id from external_identities where provider = $1 and subject = $2",
        provider,
        subject,
    )
    return account_id


async def link_external(
    conn: asyncpg.Connection, *, provider: str, subject: str, account_id: uuid.UUID
) -> bool:
    """Link; False when the external ID already belongs to an account or the account has one."""
    taken = await conn.fetchval(
        "select 1 from external_identities where (provider = $1 and subject = $2)"
        " or (provider = $1 and account_id = $3)",
        provider,
        subject,
        account_id,
    )
    if taken:
        return False
    await conn.execute(
        "insert into external_identities (provider, subject, account_id) values ($1, $2, $3)",
        provider,
        subject,
        account_id,
    )
    return True


async def unlink_external(
    conn: asyncpg.Connection, *, provider: str, account_id: uuid.UUID
) -> bool:
    done = await conn.fetchval(
        "delete from external_identities where provider = $1 and account_id = $2 returning true",
        provider,
        account_id,
    )
    return bool(done)
