-- The wallet's double-entry ledger. The database itself enforces the money
-- invariants, so a bug or a hand-written UPDATE cannot break them:
--   * every journal entry's postings sum to zero (deferred constraint trigger),
--   * postings and entries are append-only,
--   * a wallet balance never goes below zero (CHECK on the balance column).

-- kind: one wallet account per wallet, one per merchant, and one system
-- account per clearing or expense purpose.
--
-- Only wallet accounts keep a stored balance (maintained by a trigger on
-- postings): they need one for the non-negative CHECK and for limits, and a
-- wallet's own row is only touched by its own payer. Every other account is
-- shared by everybody (one merchant's many stores, the card clearing account
-- for every top-up), so updating a single balance row would serialise all of
-- them; their balance is the sum of their postings, appended without locks.
-- Reconcile therefore compares stored and summed balances for wallets and
-- proves the whole ledger sums to zero.
create table ledger_accounts (
    id uuid primary key,
    kind text not null check (kind in (
        'wallet', 'merchant', 'card_clearing', 'cash_clearing', 'points_clearing',
        'compensation_expense', 'payout_clearing'
    )),
    currency text not null default 'JPY' check (currency = 'JPY'),
    balance bigint not null default 0,
    created_at timestamptz not null default now(),
    constraint wallet_balance_never_negative check (kind <> 'wallet' or balance >= 0),
    constraint only_wallets_store_a_balance check (kind = 'wallet' or balance = 0)
);

-- The system accounts, with fixed identifiers so every replica agrees.
insert into ledger_accounts (id, kind) values
    ('00000000-0000-0000-0000-00000000c001', 'card_clearing'),
    ('00000000-0000-0000-0000-00000000c002', 'cash_clearing'),
    ('00000000-0000-0000-0000-00000000c003', 'points_clearing'),
    ('00000000-0000-0000-0000-00000000c004', 'compensation_expense'),
    ('00000000-0000-0000-0000-00000000c005', 'payout_clearing');

create table journal_entries (
    id uuid primary key,
    kind text not null check (kind in (
        'top_up', 'payment', 'refund', 'compensation', 'payout', 'top_up_reversal'
    )),
    -- The wallet whose statement shows the entry.
    wallet_id uuid not null,
    -- The payment a refund belongs to, or the movement a compensation makes good.
    related_entry_id uuid references journal_entries (id),
    counterparty text not null default '',
    -- For compensation and reversal entries: the risk case they settle.
    case_id uuid,
    created_at timestamptz not null default now()
);

create index journal_entries_by_wallet on journal_entries (wallet_id, created_at desc, id desc);

create table postings (
    id bigint generated always as identity primary key,
    entry_id uuid not null references journal_entries (id),
    account_id uuid not null references ledger_accounts (id),
    amount bigint not null check (amount <> 0),
    -- For wallet accounts: the wallet's balance right after this posting.
    balance_after bigint,
    created_at timestamptz not null default now()
);

create index postings_by_entry on postings (entry_id);
create index postings_by_account on postings (account_id);

-- A wallet's stored balance moves with its postings in the same statement, so
-- no code path can post without updating it or update it without posting.
-- The update also takes the wallet's row lock, so balance_after follows commit order.
create function apply_posting_to_wallet_balance() returns trigger
language plpgsql as $$
begin
    update ledger_accounts set balance = balance + new.amount
    where id = new.account_id and kind = 'wallet'
    returning balance into new.balance_after;
    return new;
end;
$$;

create trigger postings_move_wallet_balance
    before insert on postings
    for each row execute function apply_posting_to_wallet_balance();

-- Checked at commit, once every posting of the entry is written.
create function require_balanced_entry() returns trigger
language plpgsql as $$
declare
    total bigint;
    lines int;
begin
    select coalesce(sum(amount), 0), count(*) into total, lines
    from postings where entry_id = new.entry_id;
    if total <> 0 or lines < 2 then
        raise exception 'journal entry % is unbalanced: % postings summing to %',
            new.entry_id, lines, total
            using errcode = 'check_violation';
    end if;
    return null;
end;
$$;

create constraint trigger postings_balance_per_entry
    after insert on postings
    deferrable initially deferred
    for each row execute function require_balanced_entry();

create function refuse_ledger_rewrite() returns trigger
language plpgsql as $$
begin
    raise exception 'the ledger is append-only: % on % is refused', tg_op, tg_table_name
        using errcode = 'insufficient_privilege';
end;
$$;

create trigger postings_are_append_only
    before update or delete on postings
    for each row execute function refuse_ledger_rewrite();

create trigger journal_entries_are_append_only
    before update or delete on journal_entries
    for each row execute function refuse_ledger_rewrite();

-- A payer's wallet; its id is also its ledger account's id.
create table wallets (
    id uuid primary key references ledger_accounts (id),
    -- The pairwise payer ID from identity's wallet token; no password, email or phone here.
    payer_id text not null unique,
    status text not null default 'active' check (status in ('active', 'frozen', 'closed')),
    frozen_reason text not null default '',
    created_at timestamptz not null default now(),
    closed_at timestamptz,
    -- Wind-down: when the holder was told how to claim the balance.
    wind_down_notified_at timestamptz
);

-- Same key and body: the first result. Same key, other body: refused.
create table idempotency_keys (
    scope text not null,
    key text not null,
    request_hash text not null,
    -- Null while a two-step operation (a card charge) is still in progress.
    result jsonb,
    created_at timestamptz not null default now(),
    primary key (scope, key)
);

create table funding_sources (
    id uuid primary key,
    wallet_id uuid not null references wallets (id),
    processor_token text not null,
    brand text not null,
    last4 text not null,
    created_at timestamptz not null default now(),
    removed_at timestamptz,
    -- Null until the first completed top-up: lower limits and a recent step-up until then.
    first_top_up_at timestamptz
);

create index funding_sources_by_wallet on funding_sources (wallet_id) where removed_at is null;

-- Every top-up attempt; pending and completed ones count toward the limits,
-- so parallel requests cannot exceed them while a card charge is in flight.
create table top_ups (
    id uuid primary key,
    wallet_id uuid not null references wallets (id),
    channel text not null check (channel in ('card', 'cash_register', 'atm', 'points')),
    amount bigint not null check (amount > 0),
    funding_source_id uuid references funding_sources (id),
    status text not null check (status in ('pending', 'completed', 'failed')),
    entry_id uuid references journal_entries (id),
    processor_charge_id text,
    session_id text not null default '',
    idempotency_key text not null,
    created_at timestamptz not null default now()
);

-- A failed attempt frees its key: the retry is a new attempt.
create unique index top_ups_idempotency on top_ups (wallet_id, idempotency_key)
    where status <> 'failed';
create index top_ups_by_entry on top_ups (entry_id);

create index top_ups_for_limits on top_ups (wallet_id, created_at) where status <> 'failed';

create table merchants (
    id uuid primary key references ledger_accounts (id),
    name text not null,
    category text not null check (category ~ '^[0-9]{4}$'),
    -- sha256 of the key its store systems present; the key itself is shown once.
    key_hash bytea not null unique,
    created_at timestamptz not null default now()
);

create table stores (
    id uuid primary key,
    merchant_id uuid not null references merchants (id),
    store_code text not null,
    name text not null,
    created_at timestamptz not null default now(),
    unique (merchant_id, store_code)
);

-- One-time codes shown as barcodes: payment codes and cash top-up codes. Only
-- a hash is kept, so a database reader cannot spend a live code.
create table one_time_codes (
    id uuid primary key,
    code_hash bytea not null,
    purpose text not null check (purpose in ('payment', 'cash_top_up')),
    wallet_id uuid not null references wallets (id),
    device_id text not null,
    session_id text not null default '',
    channel text,
    status text not null check (status in ('active', 'used', 'voided')),
    expires_at timestamptz not null,
    created_at timestamptz not null default now()
);

create unique index one_time_codes_live on one_time_codes (code_hash) where status = 'active';
create index one_time_codes_by_wallet on one_time_codes (wallet_id, purpose)
    where status = 'active';

create table authorizations (
    id uuid primary key,
    wallet_id uuid not null references wallets (id),
    merchant_id uuid not null references merchants (id),
    store_id uuid not null references stores (id),
    amount bigint not null check (amount > 0),
    device_id text not null,
    session_id text not null default '',
    status text not null check (status in ('held', 'captured', 'voided')),
    hold_expires_at timestamptz not null,
    created_at timestamptz not null default now()
);

create index authorizations_held on authorizations (wallet_id) where status = 'held';

create table payments (
    entry_id uuid primary key references journal_entries (id),
    wallet_id uuid not null references wallets (id),
    merchant_id uuid not null references merchants (id),
    store_id uuid not null references stores (id),
    authorization_id uuid references authorizations (id),
    amount bigint not null check (amount > 0),
    refunded bigint not null default 0,
    created_at timestamptz not null default now(),
    constraint refund_never_exceeds_payment check (refunded >= 0 and refunded <= amount)
);

-- One line per unauthorized movement made good; a movement is settled once.
create table compensation_lines (
    movement_id uuid primary key references journal_entries (id),
    case_id uuid not null,
    wallet_id uuid not null references wallets (id),
    amount bigint not null check (amount > 0),
    method text not null check (method in ('card_refund', 'wallet_credit')),
    status text not null check (status in ('pending', 'paid')),
    compensation_entry_id uuid references journal_entries (id),
    reason text not null,
    created_at timestamptz not null default now()
);

create index compensation_lines_by_case on compensation_lines (case_id);

create table payout_accounts (
    wallet_id uuid primary key references wallets (id),
    bank_code text not null check (bank_code ~ '^[0-9]{4}$'),
    branch_code text not null check (branch_code ~ '^[0-9]{3}$'),
    account_number text not null check (account_number ~ '^[0-9]{7}$'),
    holder_name text not null,
    updated_at timestamptz not null default now()
);

create table payouts (
    entry_id uuid primary key references journal_entries (id),
    wallet_id uuid not null references wallets (id),
    amount bigint not null check (amount > 0),
    bank_code text not null,
    branch_code text not null,
    account_number text not null,
    holder_name text not null,
    created_at timestamptz not null default now()
);
