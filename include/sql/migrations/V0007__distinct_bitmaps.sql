-- Exact distinct counts as roaring bitmaps (issue #16, include/warehouse/distinct.py).
--
-- Every session and customer of a tenant gets a small integer id in first-seen order
-- (distinct_ids; distinct_id_next holds the next free id per tenant and kind). For each kind
-- ('session', 'purchasing': sessions with a purchase, 'customer') distinct_pieces keeps the
-- ids active in aligned blocks of minutes: level 0 = 1 minute, 1 = 15 minutes, 2 = 1 hour,
-- 3.. = 2, 4, 8 ... 256 hours, each block starting at a whole multiple of its size counted
-- from 2000-01-01 00:00 UTC (start_minute is minutes since then); 11, 12, 13 = hours starting
-- 15, 30, 45 minutes past a UTC hour (quarter- and half-hour zones); 14..37 = days starting at
-- UTC hour 0..23 (the local days of whole-hour zones). A minute-aligned range is the
-- union of a few dozen blocks; cardinality is the block's own distinct count, so a bucket that
-- is exactly one block needs no bitmap at all. The load writes them in its transaction, the
-- erasure corrects them in its own; maintenance can rebuild every piece from events.
CREATE TABLE distinct_ids (
    tenant_id text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('session', 'customer')),
    key       text NOT NULL,
    id        integer NOT NULL CHECK (id >= 0),
    PRIMARY KEY (tenant_id, kind, key)
);

CREATE TABLE distinct_id_next (
    tenant_id text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('session', 'customer')),
    next_id   integer NOT NULL,
    PRIMARY KEY (tenant_id, kind)
);

CREATE TABLE distinct_pieces (
    tenant_id    text NOT NULL,
    level        smallint NOT NULL CHECK (level BETWEEN 0 AND 37),
    start_minute integer NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('session', 'purchasing', 'customer')),
    cardinality  integer NOT NULL,
    bitmap       bytea NOT NULL,
    PRIMARY KEY (tenant_id, level, start_minute, kind)
);
-- Serialized roaring bitmaps are already compact: store them without pglz.
ALTER TABLE distinct_pieces ALTER COLUMN bitmap SET STORAGE EXTERNAL;

-- The API erases customers in its own transaction, so it corrects the pieces itself.
GRANT SELECT, INSERT, UPDATE, DELETE ON distinct_ids, distinct_id_next, distinct_pieces
    TO lakehouse_api;
ALTER TABLE distinct_ids ENABLE ROW LEVEL SECURITY;
ALTER TABLE distinct_id_next ENABLE ROW LEVEL SECURITY;
ALTER TABLE distinct_pieces ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON distinct_ids TO lakehouse_api
    USING (tenant_id = current_setting('lakehouse.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('lakehouse.tenant_id', true));
CREATE POLICY tenant_isolation ON distinct_id_next TO lakehouse_api
    USING (tenant_id = current_setting('lakehouse.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('lakehouse.tenant_id', true));
CREATE POLICY tenant_isolation ON distinct_pieces TO lakehouse_api
    USING (tenant_id = current_setting('lakehouse.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('lakehouse.tenant_id', true));

-- Data versions for the API's response cache: every writer of something /metrics reads
-- notifies channel 'lakehouse_data' at commit with the tenant whose answers changed ('*': every
-- tenant's, for the global freshness fields). PostgreSQL folds equal notifications of one
-- transaction into one.
CREATE FUNCTION notify_tenant_data() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lakehouse_data', t) FROM (SELECT DISTINCT tenant_id AS t FROM changed) c;
    RETURN NULL;
END
$$;
CREATE FUNCTION notify_all_data() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lakehouse_data', '*');
    RETURN NULL;
END
$$;

CREATE TRIGGER notify_minute_insert AFTER INSERT ON stream_minute_metrics
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_tenant_data();
CREATE TRIGGER notify_minute_update AFTER UPDATE ON stream_minute_metrics
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_tenant_data();
CREATE TRIGGER notify_minute_delete AFTER DELETE ON stream_minute_metrics
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_tenant_data();
CREATE TRIGGER notify_slot_insert AFTER INSERT ON stream_slot_metrics
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_tenant_data();
CREATE TRIGGER notify_slot_update AFTER UPDATE ON stream_slot_metrics
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_tenant_data();
CREATE TRIGGER notify_slot_delete AFTER DELETE ON stream_slot_metrics
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_tenant_data();
CREATE TRIGGER notify_pieces_insert AFTER INSERT ON distinct_pieces
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_tenant_data();
CREATE TRIGGER notify_pieces_update AFTER UPDATE ON distinct_pieces
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_tenant_data();
CREATE TRIGGER notify_pieces_delete AFTER DELETE ON distinct_pieces
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_tenant_data();
CREATE TRIGGER notify_erased AFTER INSERT ON erased_customers
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_tenant_data();
-- Freshness (speed_layer_updated_at, batch_loaded_at, newest event) and currency.
CREATE TRIGGER notify_heartbeat AFTER INSERT OR UPDATE OR DELETE ON stream_heartbeat
    FOR EACH STATEMENT EXECUTE FUNCTION notify_all_data();
CREATE TRIGGER notify_watermarks AFTER INSERT OR UPDATE OR DELETE ON load_watermarks
    FOR EACH STATEMENT EXECUTE FUNCTION notify_all_data();
CREATE TRIGGER notify_tenants AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION notify_all_data();
CREATE TRIGGER notify_events_truncate AFTER TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_all_data();
CREATE TRIGGER notify_minute_truncate AFTER TRUNCATE ON stream_minute_metrics
    FOR EACH STATEMENT EXECUTE FUNCTION notify_all_data();
CREATE TRIGGER notify_pieces_truncate AFTER TRUNCATE ON distinct_pieces
    FOR EACH STATEMENT EXECUTE FUNCTION notify_all_data();

-- The pieces and ids derive from events: emptying events empties them (tests, a reset).
CREATE FUNCTION distinct_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- DELETE, not TRUNCATE: the same TRUNCATE statement may list these tables too.
    DELETE FROM distinct_pieces;
    DELETE FROM distinct_ids;
    DELETE FROM distinct_id_next;
    RETURN NULL;
END
$$;
CREATE TRIGGER distinct_truncate AFTER TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION distinct_truncate();
