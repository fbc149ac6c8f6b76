-- Partners, their credentials and grants; idempotency; payments made through
-- the gateway; webhook subscriptions and their delivery log; rate windows.

create table partners (
    partner_id uuid primary key,
    name text not null,
    status text not null default 'active' check (status in ('active', 'revoked')),
    scopes text[] not null,
    requests_per_minute int not null check (requests_per_minute > 0),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- A client secret (argon2id hash) or a public key (JWK) for private_key_jwt.
-- Rotation: at most two live of each kind, enforced by the use case.
create table partner_credentials (
    credential_id uuid primary key,
    partner_id uuid not null references partners,
    kind text not null check (kind in ('secret', 'key')),
    secret_hash text,
    public_jwk jsonb,
    created_at timestamptz not null default now(),
    revoked_at timestamptz,
    check ((kind = 'secret') = (secret_hash is not null)),
    check ((kind = 'key') = (public_jwk is not null))
);
create index partner_credentials_live on partner_credentials (partner_id) where revoked_at is null;

-- Merchants the gateway may act for: their wallet key, sealed.
create table merchants (
    merchant_id uuid primary key,
    name text not null,
    sealed_key bytea not null
);

create table stores (
    store_id uuid primary key,
    merchant_id uuid not null references merchants,
    store_code text not null,
    name text not null
);
create index stores_of_merchant on stores (merchant_id);

-- A grant of a merchant to a partner: every store (no rows in partner_store_grants)
-- or only the listed ones.
create table partner_grants (
    partner_id uuid not null references partners,
    merchant_id uuid not null references merchants,
    primary key (partner_id, merchant_id)
);
create table partner_store_grants (
    partner_id uuid not null,
    merchant_id uuid not null,
    store_id uuid not null references stores,
    primary key (partner_id, store_id),
    foreign key (partner_id, merchant_id) references partner_grants on delete cascade
);

-- RFC 7523: an assertion's jti is accepted once per client while it is valid.
create table assertion_jtis (
    partner_id uuid not null,
    jti text not null,
    expires_at timestamptz not null,
    primary key (partner_id, jti)
);
create index assertion_jtis_expiry on assertion_jtis (expires_at);

-- Idempotency-Key per partner: the body's hash, then the first final answer.
create table idempotency_keys (
    partner_id uuid not null,
    idempotency_key text not null,
    operation text not null,
    body_hash text not null,
    status_code int,
    response jsonb,
    created_at timestamptz not null default now(),
    primary key (partner_id, idempotency_key)
);
create index idempotency_keys_age on idempotency_keys (created_at);

-- Payments and authorizations made through the gateway, for reads and lists.
create table payments (
    payment_id text primary key,
    partner_id uuid not null,
    merchant_id uuid not null,
    store_id uuid not null,
    authorization_id text not null default '',
    movement_id text not null default '',
    status text not null check (status in ('authorized', 'captured', 'voided')),
    amount_minor bigint not null,
    currency text not null,
    refunded_minor bigint not null default 0,
    occurred_at timestamptz not null,
    hold_expires_at timestamptz,
    updated_at timestamptz not null default now()
);
create index payments_of_store on payments (store_id, partner_id, occurred_at desc, payment_id);

create table webhook_subscriptions (
    subscription_id uuid primary key,
    partner_id uuid not null references partners,
    url text not null,
    events text[] not null,
    sealed_secret bytea not null,
    active boolean not null default true,
    created_at timestamptz not null default now()
);
create index webhook_subscriptions_of_partner on webhook_subscriptions (partner_id);

create table webhook_deliveries (
    delivery_id uuid primary key,
    subscription_id uuid not null references webhook_subscriptions,
    partner_id uuid not null,
    event_id uuid not null,
    event_type text not null,
    payload jsonb not null,
    state text not null default 'pending' check (state in ('pending', 'delivered', 'failed')),
    attempts int not null default 0,
    last_status int,
    last_error text not null default '',
    created_at timestamptz not null default now(),
    last_attempt_at timestamptz,
    delivered_at timestamptz
);
create index webhook_deliveries_of_partner on webhook_deliveries (partner_id, created_at desc);

-- What operators changed, by whom and when (python -m services.gateway.admin).
create table admin_log (
    entry_id bigserial primary key,
    at timestamptz not null default now(),
    actor text not null,
    action text not null,
    subject text not null,
    detail jsonb not null default '{}'
);

-- Fixed one-minute windows shared by every replica.
create table rate_windows (
    partner_id uuid not null,
    window_start timestamptz not null,
    requests int not null,
    primary key (partner_id, window_start)
);
