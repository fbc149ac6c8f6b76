-- A revoked session's live codes and holds are voided by session: find them
-- without reading every live code and hold.
create index one_time_codes_live_by_session on one_time_codes (session_id)
    where status = 'active';
create index authorizations_held_by_session on authorizations (session_id)
    where status = 'held';
