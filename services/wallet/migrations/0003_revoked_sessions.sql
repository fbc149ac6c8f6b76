-- Sessions identity revoked, kept for good: identity announces a revocation only
-- for a while, and a wallet that was away longer must still refuse what the
-- session made (a hold, a cash code, a payout account) once it returns.
create table revoked_sessions (
    session_id text primary key,
    recorded_at timestamptz not null default now()
);
