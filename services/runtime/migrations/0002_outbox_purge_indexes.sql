-- The hourly purge looks for rows past the retention. Without an index it reads
-- the whole table each time, though it usually finds nothing. Delivered rows are
-- indexed by when they were delivered (pending and dead ones, which the purge
-- never deletes, stay out of the index), and processed records by when.
--
-- Building an index holds the table's writes until it is built, and a migration
-- runs in a transaction, where CONCURRENTLY is not allowed. On a large outbox an
-- operator builds them first without holding writes, and this file then finds
-- them there:
--   create index concurrently outbox_delivered_at on outbox (delivered_at)
--       where state = 'delivered';
--   create index concurrently processed_messages_at on processed_messages (processed_at);
-- A concurrent build that fails leaves an invalid index of that name, which this
-- file would keep: drop it first (select indexrelid::regclass from pg_index where
-- not indisvalid).
create index if not exists outbox_delivered_at on outbox (delivered_at)
    where state = 'delivered';
create index if not exists processed_messages_at on processed_messages (processed_at);
