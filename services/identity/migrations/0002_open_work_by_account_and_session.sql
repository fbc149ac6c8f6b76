-- A revocation or a credential change closes what was begun and not finished:
-- found by account or by session, not by reading every challenge, ceremony and
-- reset link ever made (abandoned sign-ins leave many behind).
create index challenges_open_by_account on challenges (account_id)
    where completed_at is null;
create index challenges_open_by_session on challenges (session_id)
    where completed_at is null;
create index ceremonies_open_by_session on ceremonies (session_id)
    where completed_at is null;
create index password_resets_unused_by_account on password_resets (account_id)
    where used_at is null;
