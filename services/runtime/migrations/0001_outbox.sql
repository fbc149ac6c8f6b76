-- Transactional outbox: a service writes the message in the same transaction as
-- the change it announces; OutboxRelay delivers it afterwards, at least once.
create table outbox (
    id bigint generated always as identity primary key,
    topic text not null check (topic <> ''),
    -- Receivers deduplicate on this key, so it is unique across topics.
    idempotency_key text not null unique check (idempotency_key <> ''),
    payload jsonb not null,
    -- pending: waiting or being delivered; delivered: done; dead: gave up,
    -- kept for an operator to inspect and requeue.
    state text not null default 'pending' check (state in ('pending', 'delivered', 'dead')),
    attempts int not null default 0 check (attempts >= 0),
    -- When a pending row may next be claimed: now for a new row, the retry
    -- time after a failure, or the end of the lease while a relay delivers it.
    available_at timestamptz not null default now(),
    -- Which claim holds the lease, so a relay whose lease ran out cannot
    -- overwrite the outcome of the relay that took the row over.
    lease_token uuid,
    last_error text,
    created_at timestamptz not null default now(),
    delivered_at timestamptz
);

create index outbox_due on outbox (available_at, id) where state = 'pending';
create index outbox_dead on outbox (id) where state = 'dead';

-- Receivers record each message they applied, in the transaction that applies
-- it, so a redelivery changes nothing.
create table processed_messages (
    idempotency_key text primary key,
    processed_at timestamptz not null default now()
);
