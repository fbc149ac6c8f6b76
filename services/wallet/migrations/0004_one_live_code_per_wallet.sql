-- A wallet has at most one live code of each purpose: a new code voids the last.
-- The database now refuses a second one, so two codes issued at once cannot both
-- stay live. Any such pair left from before keeps only its newest code.
update one_time_codes c set status = 'voided'
where c.status = 'active' and exists (
    select 1 from one_time_codes n
    where n.wallet_id = c.wallet_id and n.purpose = c.purpose and n.status = 'active'
      and (n.created_at, n.id) > (c.created_at, c.id)
);

drop index one_time_codes_by_wallet;
create unique index one_time_codes_live_by_wallet on one_time_codes (wallet_id, purpose)
    where status = 'active';
