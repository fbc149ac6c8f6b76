-- The group ID: accounts, credentials, factors, devices, sessions, contacts, audit.

-- Token signing keys. `next` is published in the JWKS before it ever signs, so
-- every verifier already knows it when it becomes `current`.
create table signing_keys (
    kid text primary key,
    state text not null check (state in ('next', 'current', 'previous', 'retired')),
    -- PKCS#8 PEM sealed with IDENTITY_SECRETS_KEY (AES-GCM).
    sealed_private_key bytea not null,
    created_at timestamptz not null default now(),
    activated_at timestamptz,
    retired_at timestamptz
);
create unique index signing_keys_one_current on signing_keys (state) where state = 'current';
create unique index signing_keys_one_next on signing_keys (state) where state = 'next';

create table accounts (
    id uuid primary key,
    -- pending: registered, address not yet verified; active; locked by an operator; closed.
    status text not null check (status in ('pending', 'active', 'locked', 'closed')),
    -- Pairwise ID the wallet knows instead of the account ID.
    payer_id uuid not null unique,
    password_hash text,
    -- Set by a forced reset: the password no longer signs in.
    password_expired boolean not null default false,
    -- NULL means "never given"; nothing is defaulted.
    display_name text,
    family_name text,
    given_name text,
    birth_date date,
    language smallint not null default 0,
    -- The device the account was registered from; it may enrol the first factor
    -- without a cool-off.
    registration_device_id text,
    -- Money movement waits out this cool-off after a credential or contact change.
    cooloff_started_at timestamptz,
    cooloff_until timestamptz,
    -- Raised by wrong passwords, so the next sign-in needs a second factor;
    -- never a lockout an attacker could use against the owner.
    recent_failures int not null default 0,
    created_at timestamptz not null default now(),
    closed_at timestamptz
);

create table contacts (
    id uuid primary key,
    account_id uuid not null references accounts (id),
    kind smallint not null,
    -- Exactly as the person gave it; notices go here.
    address text not null,
    -- Case- and Unicode-folded form, for look-up only.
    address_key text not null,
    verified boolean not null default false,
    is_primary boolean not null default false,
    -- Becomes primary once verified (a contact change).
    make_primary boolean not null default false,
    code_hash bytea,
    code_expires_at timestamptz,
    code_attempts int not null default 0,
    -- Set for verified emails of accounts that are not closed: one account per address.
    login_key text unique,
    created_at timestamptz not null default now(),
    verified_at timestamptz,
    removed_at timestamptz
);
create index contacts_by_account on contacts (account_id);
create index contacts_pending_by_key on contacts (address_key) where not verified and removed_at is null;

-- A contact change can be stopped from the old address within its window.
create table contact_freezes (
    token_hash bytea primary key,
    account_id uuid not null references accounts (id),
    contact_id uuid not null references contacts (id),
    expires_at timestamptz not null,
    used_at timestamptz
);

create table devices (
    account_id uuid not null references accounts (id),
    device_id text not null,
    user_agent text not null default '',
    first_seen_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    last_ip text not null default '',
    last_country text not null default '',
    removed_at timestamptz,
    primary key (account_id, device_id)
);

create table sessions (
    id uuid primary key,
    account_id uuid not null references accounts (id),
    device_id text not null,
    methods text[] not null,
    assurance_level int not null,
    auth_time timestamptz not null,
    ip_address text not null default '',
    created_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    expires_at timestamptz not null,
    revoked_at timestamptz,
    revoke_reason text
);
create index sessions_live_by_account on sessions (account_id) where revoked_at is null;

-- Rotating refresh tokens: each is spent once; a spent one shown again revokes its session.
create table refresh_tokens (
    token_hash bytea primary key,
    session_id uuid not null references sessions (id),
    created_at timestamptz not null default now(),
    spent_at timestamptz
);
create index refresh_tokens_by_session on refresh_tokens (session_id);

-- Revoked sessions, streamed to every service by WatchRevocations.
create table revocations (
    sequence bigint generated always as identity primary key,
    session_id uuid not null,
    -- No access token of the session outlives this.
    expires_at timestamptz not null
);
create index revocations_live on revocations (expires_at);

-- A sign-in or step-up waiting for a second factor.
create table challenges (
    id uuid primary key,
    account_id uuid not null references accounts (id),
    purpose text not null check (purpose in ('login', 'step_up')),
    session_id uuid,
    device_id text not null,
    ip_address text not null default '',
    user_agent text not null default '',
    methods text[] not null,
    risk_decision_id text not null default '',
    known_device boolean not null default false,
    email_code_hash bytea,
    email_code_expires_at timestamptz,
    webauthn_challenge bytea,
    attempts int not null default 0,
    expires_at timestamptz not null,
    completed_at timestamptz
);

-- WebAuthn ceremonies not tied to a challenge (passkey sign-in and registration).
create table ceremonies (
    id uuid primary key,
    purpose text not null check (purpose in ('register', 'login')),
    account_id uuid references accounts (id),
    session_id uuid,
    device_id text not null default '',
    webauthn_challenge bytea not null,
    expires_at timestamptz not null,
    completed_at timestamptz
);

create table factors (
    id uuid primary key,
    account_id uuid not null references accounts (id),
    kind text not null check (kind in ('totp', 'passkey')),
    name text not null default '',
    -- TOTP: the sealed base32 secret and the last accepted time step (replay protection).
    sealed_totp_secret bytea,
    last_totp_step bigint,
    -- Passkey.
    credential_id bytea unique,
    public_key bytea,
    sign_count bigint,
    suspended boolean not null default false,
    -- A TOTP enrolment is pending until confirmed with a code.
    confirmed_at timestamptz,
    created_at timestamptz not null default now(),
    last_used_at timestamptz,
    removed_at timestamptz
);
create index factors_by_account on factors (account_id) where removed_at is null;

create table recovery_codes (
    account_id uuid not null references accounts (id),
    code_hash bytea not null,
    used_at timestamptz,
    primary key (account_id, code_hash)
);

create table password_resets (
    token_hash bytea primary key,
    account_id uuid not null references accounts (id),
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    used_at timestamptz
);

create table external_identities (
    provider text not null,
    subject text not null,
    account_id uuid not null references accounts (id),
    linked_at timestamptz not null default now(),
    primary key (provider, subject)
);

create table external_nonces (
    nonce text primary key,
    provider text not null,
    expires_at timestamptz not null,
    used_at timestamptz
);

create table security_events (
    id uuid primary key,
    account_id uuid not null references accounts (id),
    kind text not null,
    occurred_at timestamptz not null default now(),
    ip_address text not null default '',
    device_id text not null default '',
    session_id text not null default '',
    actor text not null,
    details jsonb not null default '{}'
);
create index security_events_by_account on security_events (account_id, occurred_at desc, id desc);

-- Forced credential resets: resumable jobs that walk accounts in id order.
create table reset_jobs (
    id uuid primary key,
    reason text not null,
    all_accounts boolean not null,
    account_ids uuid[] not null default '{}',
    total bigint not null,
    processed bigint not null default 0,
    -- Accounts up to this id are done.
    cursor_id uuid,
    created_by text not null,
    created_at timestamptz not null default now(),
    finished_at timestamptz
);
