-- Failed sign-ins count per name and client address: someone guessing from one
-- address cannot lock an operator out of the console from their own.
alter table console_sign_in_failures add column client text not null default '';
drop index console_sign_in_failures_by_name;
create index console_sign_in_failures_by_name_and_client
    on console_sign_in_failures (operator, client, failed_at);
