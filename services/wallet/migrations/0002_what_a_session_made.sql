-- A revoked session's live codes and holds are voided by session: find them
-- without reading every live code and hold.
create index one_time_codes_live_by_session on one_time_codes (session_id)
    where status = 'active';
create index authorizations_held_by_session on authorizations (session_id)
    where status = 'held';

-- Where payouts go is set in a session and, like its codes, ends with it: a
-- session thief's bank account must not outlive the owner taking it back.
alter table payout_accounts add column session_id text not null default '';
create index payout_accounts_by_session on payout_accounts (session_id);
