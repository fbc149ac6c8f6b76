-- A device is known by the key it holds, never by a string it sends.
--
-- devices.device_id and accounts.registration_device_id hold from now on the RFC 7638
-- thumbprint of a device key proven with a signed proof; sessions, challenges and
-- ceremonies hold that thumbprint, or 'unproven:' and the label the client sent.
-- Devices registered before were only client-chosen strings that anyone could copy:
-- they are no longer devices, and sessions or registrations tied to them keep none
-- of a known device's privileges.

alter table devices add column public_jwk jsonb;
update devices set removed_at = now() where removed_at is null;
alter table devices
    add constraint devices_live_have_a_key check (removed_at is not null or public_jwk is not null);

update accounts set registration_device_id = null where registration_device_id is not null;
-- A session or pending challenge of a device that proved nothing keeps its label,
-- marked as one (as identity records such devices from now on), never as a key.
update sessions set device_id = 'unproven:' || left(device_id, 100)
    where device_id <> '';
update challenges set device_id = 'unproven:' || left(device_id, 100)
    where device_id <> '';

-- Proofs already used, so a copied one proves nothing on any replica. A row is kept
-- until the proof would be too old anyway.
create table device_proofs (
    thumbprint text not null,
    jti text not null,
    expires_at timestamptz not null,
    primary key (thumbprint, jti)
);
create index device_proofs_by_expiry on device_proofs (expires_at);
