-- Which identifiers each device tried, per bucket, for "distinct accounts per device":
-- one device id trying many accounts is a signal even when it rotates addresses.
create table device_identifiers (
    device_id text not null,
    bucket bigint not null,
    identifier text not null,
    primary key (device_id, bucket, identifier)
);
create index device_identifiers_by_age on device_identifiers (bucket);
