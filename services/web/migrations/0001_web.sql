-- Browser sessions: the cookie holds a random id; only its SHA-256 is stored, and
-- what the session holds (the person's tokens, the browser's device key) is sealed.

create table browser_sessions (
    id_hash bytea primary key,
    sealed bytea not null,
    expires_at timestamptz not null,
    updated_at timestamptz not null default now()
);

create index browser_sessions_expiry on browser_sessions (expires_at);
