-- WatchContactChanges: every committed change to what GetRegisteredContacts answers
-- (an account's verified contacts, language, display name, status) is announced on
-- the channel identity_contact_changes with the account's id as payload. NOTIFY is
-- sent at commit, never for a rolled-back change, and repeated payloads in one
-- transaction are sent once. Changes of other columns (code attempts, sign-in
-- counters, password state) fire nothing.
create function announce_contact_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        perform pg_notify('identity_contact_changes', old.account_id::text);
        return old;
    end if;
    perform pg_notify('identity_contact_changes', new.account_id::text);
    if tg_op = 'UPDATE' and old.account_id is distinct from new.account_id then
        perform pg_notify('identity_contact_changes', old.account_id::text);
    end if;
    return new;
end
$$;

create function announce_account_change() returns trigger
language plpgsql as $$
begin
    perform pg_notify('identity_contact_changes', new.id::text);
    return new;
end
$$;

-- An unverified contact is seen only by the look-up of its own verification code,
-- which is never kept, so adding one announces nothing.
create trigger contacts_added after insert on contacts
    for each row when (new.verified)
    execute function announce_contact_change();

create trigger contacts_changed
    after update of account_id, kind, address, verified, is_primary, removed_at on contacts
    for each row when (
        (old.account_id, old.kind, old.address, old.verified, old.is_primary, old.removed_at)
        is distinct from
        (new.account_id, new.kind, new.address, new.verified, new.is_primary, new.removed_at)
    )
    execute function announce_contact_change();

create trigger contacts_deleted after delete on contacts
    for each row execute function announce_contact_change();

create trigger accounts_contact_facts_changed
    after update of status, language, display_name on accounts
    for each row when (
        (old.status, old.language, old.display_name)
        is distinct from (new.status, new.language, new.display_name)
    )
    execute function announce_account_change();
