-- Operators' sign-ins, the console's record of every change an operator made
-- through it, failed sign-ins (to slow guessing) and forced resets it started.

create table console_sessions (
    session_hash bytea primary key,
    operator text not null,
    csrf_token text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null
);
create index console_sessions_expiry on console_sessions (expires_at);

create table console_sign_in_failures (
    operator text not null,
    failed_at timestamptz not null default now()
);
create index console_sign_in_failures_by_name on console_sign_in_failures (operator, failed_at);

create table console_actions (
    action_id bigint generated always as identity primary key,
    operator text not null,
    action text not null,
    target text not null,
    reason text not null,
    outcome text not null,
    acted_at timestamptz not null default now()
);
create index console_actions_newest on console_actions (acted_at desc);

create table console_resets (
    job_id text primary key,
    operator text not null,
    reason text not null,
    scope text not null,
    processed bigint not null default 0,
    total bigint not null default 0,
    done boolean not null default false,
    failure text not null default '',
    started_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
