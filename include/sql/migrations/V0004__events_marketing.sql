-- Schema version 2 of the event contract adds the marketing block; silver gained these columns
-- by Delta schema evolution, PostgreSQL gains them here.
ALTER TABLE events
    ADD COLUMN marketing_campaign   text,
    ADD COLUMN marketing_utm_source text,
    ADD COLUMN marketing_utm_medium text;

-- Staging tables of the loader: unlogged (a crash loses them, and a load restages anyway),
-- unpartitioned, without keys, refilled by every load.
CREATE UNLOGGED TABLE load_staging_events (LIKE events INCLUDING DEFAULTS);
CREATE UNLOGGED TABLE load_staging_event_items (LIKE event_items INCLUDING DEFAULTS);
