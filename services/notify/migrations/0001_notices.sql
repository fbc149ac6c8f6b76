-- A notice is what a caller asked to send; a delivery is one channel of it.
-- Both are stored before SendNotice returns, so an accepted notice is never lost.
create table notices (
    id uuid primary key,
    -- mamoru.notify.v1.NoticeKind number.
    kind smallint not null,
    -- Certificate principal that sent it; idempotency keys are scoped to it.
    caller text not null,
    idempotency_key text not null,
    -- Exactly what the caller named: the group account or the wallet's payer ID.
    account_id uuid,
    payer_id uuid,
    -- Typed parameters of the kind, as JSON (see grpc_api.params_of).
    params jsonb not null,
    -- Merged into recent notices of the same kind by the rate limit: recorded, not sent.
    coalesced boolean not null default false,
    created_at timestamptz not null default now(),
    unique (caller, idempotency_key)
);

-- The rate limit counts recent notices of one kind for one recipient.
create index notices_recent_by_account on notices (account_id, kind, created_at)
    where account_id is not null;
create index notices_recent_by_payer on notices (payer_id, kind, created_at)
    where payer_id is not null;

create table deliveries (
    id uuid primary key,
    -- Paging order (newest first) that never ties.
    seq bigint generated always as identity unique,
    notice_id uuid not null references notices (id),
    kind smallint not null,
    -- mamoru.notify.v1.Channel number: the one actually used once sent.
    channel smallint not null,
    status text not null check (
        status in ('pending', 'sent', 'failed', 'dead', 'coalesced', 'muted', 'no_address')
    ),
    attempts int not null default 0 check (attempts >= 0),
    -- When a pending or failed delivery may next be claimed (also the end of a lease).
    available_at timestamptz not null default now(),
    -- The claim holding the delivery, so a worker whose lease ran out cannot
    -- overwrite the outcome recorded by the worker that took it over.
    lease_token uuid,
    -- The account, as given or as identity resolved it at send time.
    account_id uuid,
    -- Addresses used, resolved at send time (comma-separated when several).
    address text not null default '',
    provider text not null default '',
    last_error text not null default '',
    -- Rendered text kept for the in-app inbox.
    subject text not null default '',
    body text not null default '',
    read_at timestamptz,
    created_at timestamptz not null default now(),
    sent_at timestamptz
);

create index deliveries_due on deliveries (available_at) where status in ('pending', 'failed');
create index deliveries_by_account on deliveries (account_id, seq);
create index deliveries_dead on deliveries (seq) where status = 'dead';
create index deliveries_by_notice on deliveries (notice_id);
create index deliveries_created on deliveries (created_at);

-- A person's muted kinds; only marketing kinds can be in it.
create table preferences (
    account_id uuid primary key,
    muted_kinds smallint[] not null default '{}',
    updated_at timestamptz not null default now()
);
