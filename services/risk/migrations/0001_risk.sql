-- Risk's own state: the policy and its audit trail, rule overrides, sliding-window
-- counters shared by every replica, decisions, outcomes (the event log that victim
-- queries run over), alerts and cases.

-- One row: the current policy. Its version only grows; replicas poll it.
create table policy (
    id smallint primary key default 1 check (id = 1),
    version bigint not null default 0,
    document jsonb not null default '{}',
    updated_at timestamptz not null default now()
);
insert into policy (id) values (1);

-- Who changed a policy switch or a rule, when and why. Never updated or deleted.
create table policy_changes (
    change_id uuid primary key,
    actor text not null,
    reason text not null check (reason <> ''),
    change jsonb not null,
    policy_version bigint not null,
    changed_at timestamptz not null default now()
);
create index policy_changes_newest on policy_changes (changed_at desc, change_id);

-- Operators' overrides of the rules defined in code; revision tells replicas to reload.
create sequence rule_revisions;
create table rules (
    rule_id text primary key,
    enabled boolean not null,
    thresholds jsonb not null,
    verdict text not null,
    auto_action text not null default '',
    revision bigint not null default nextval('rule_revisions'),
    updated_at timestamptz not null default now()
);

-- Sliding-window counters in 10-second buckets. The global dimension is spread
-- over a few shards so that every sign-in in the country does not queue on one row.
create table counters (
    dimension text not null,
    key text not null,
    bucket bigint not null,
    shard smallint not null default 0,
    attempts integer not null default 0,
    failures integer not null default 0,
    unknown_attempts integer not null default 0,
    primary key (dimension, key, bucket, shard)
);
create index counters_by_age on counters (bucket);

-- Which identifiers each IP tried, per bucket, for "distinct accounts per IP".
create table ip_identifiers (
    ip text not null,
    bucket bigint not null,
    identifier text not null,
    primary key (ip, bucket, identifier)
);
create index ip_identifiers_by_age on ip_identifiers (bucket);

-- The last successful sign-in and the last credential change of each account.
create table account_state (
    account_id text primary key,
    last_login_at timestamptz,
    last_login_ip text,
    last_login_country text,
    last_credential_change_at timestamptz
);

-- Devices each account has signed in from, to tell a new device from a usual one.
create table account_devices (
    account_id text not null,
    device_id text not null,
    first_seen_at timestamptz not null,
    primary key (account_id, device_id)
);

-- Sessions reported by identity, so money movements can be tied to an account.
create table sessions (
    session_id text primary key,
    account_id text not null,
    ip text not null,
    device_id text not null,
    started_at timestamptz not null
);

-- The last completed top-up of each wallet and whether it came from a new device.
create table wallet_state (
    wallet_id text primary key,
    last_top_up_at timestamptz not null,
    last_top_up_from_new_device boolean not null
);

-- Every decision with its inputs and reasons.
create table decisions (
    decision_id uuid primary key,
    kind text not null,
    verdict text not null,
    score integer not null,
    reasons jsonb not null,
    inputs jsonb not null,
    country_code text not null default '',
    account_id text not null default '',
    ip text not null default '',
    decided_at timestamptz not null
);
create index decisions_newest on decisions (decided_at desc, decision_id);
create index decisions_by_account on decisions (account_id, decided_at desc) where account_id <> '';
create index decisions_by_ip on decisions (ip, decided_at desc) where ip <> '';

-- What happened after decisions: the event log victim queries run over.
create table outcomes (
    outcome_id uuid primary key,
    outcome text not null,
    decision_id text not null default '',
    account_id text not null default '',
    wallet_id text not null default '',
    payer_id text not null default '',
    session_id text not null default '',
    ip text not null default '',
    device_id text not null default '',
    amount_minor bigint not null default 0,
    currency text not null default '',
    movement_id text not null default '',
    identifier_hash text not null default '',
    occurred_at timestamptz not null,
    recorded_at timestamptz not null default now()
);
-- A retried report of the same money movement is stored once.
create unique index outcomes_one_per_movement on outcomes (outcome, movement_id) where movement_id <> '';
create index outcomes_logins on outcomes (occurred_at) where outcome = 'login_succeeded';
create index outcomes_by_session on outcomes (session_id) where session_id <> '';

create table alerts (
    alert_id uuid primary key,
    rule_id text not null,
    status text not null default 'open',
    evidence jsonb not null,
    auto_action_taken text not null default '',
    notes jsonb not null default '[]',
    raised_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index alerts_newest on alerts (raised_at desc, alert_id);

create table cases (
    case_id uuid primary key,
    idempotency_key text unique,
    status text not null default 'open',
    source text not null,
    account_id text not null default '',
    wallet_id text not null default '',
    alert_id text not null default '',
    movement_id text not null default '',
    assignee text not null default '',
    notes jsonb not null default '[]',
    indicators jsonb,
    opened_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index cases_newest on cases (opened_at desc, case_id);
