-- The hourly purge looks for rows past the retention. Without an index it reads
-- the whole table each time, though it usually finds nothing. Block-range indexes
-- answer it from a few pages: rows are written (and delivered) in time order, so
-- a block's range of times is narrow, and keeping one costs almost nothing per write.
create index outbox_delivered_ranges on outbox using brin (delivered_at)
    with (autosummarize = on);
create index processed_messages_ranges on processed_messages using brin (processed_at)
    with (autosummarize = on);
