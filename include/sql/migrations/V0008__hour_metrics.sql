-- The speed layer per UTC hour (issue #16): the sums of stream_slot_metrics, kept by triggers
-- in the same transaction as the slot rows (the stream's batch transaction), so /metrics over
-- hours or days in whole-hour zones reads 4 times fewer rows than from slots. Hours start at
-- whole hours of UTC (date_bin from 2000-01-01, like the slots).
CREATE TABLE stream_hour_metrics (
    tenant_id  text NOT NULL,
    hour       timestamptz NOT NULL,
    event_type text NOT NULL,
    events     bigint NOT NULL,
    amount     numeric(20, 2) NOT NULL DEFAULT 0,
    items      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, hour, event_type)
);

CREATE FUNCTION hour_metrics_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO stream_hour_metrics AS h (tenant_id, hour, event_type, events, amount, items)
        SELECT tenant_id, date_bin('1 hour', slot, timestamptz '2000-01-01 00:00:00+00'),
               event_type, sum(events), sum(amount), sum(items)
        FROM new_rows GROUP BY 1, 2, 3
        ON CONFLICT (tenant_id, hour, event_type) DO UPDATE SET
            events = h.events + excluded.events, amount = h.amount + excluded.amount,
            items = h.items + excluded.items;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO stream_hour_metrics AS h (tenant_id, hour, event_type, events, amount, items)
        SELECT n.tenant_id, date_bin('1 hour', n.slot, timestamptz '2000-01-01 00:00:00+00'),
               n.event_type, sum(n.events - o.events), sum(n.amount - o.amount),
               sum(n.items - o.items)
        FROM new_rows n JOIN old_rows o USING (tenant_id, slot, event_type) GROUP BY 1, 2, 3
        ON CONFLICT (tenant_id, hour, event_type) DO UPDATE SET
            events = h.events + excluded.events, amount = h.amount + excluded.amount,
            items = h.items + excluded.items;
    ELSE
        UPDATE stream_hour_metrics h SET events = h.events - d.events,
               amount = h.amount - d.amount, items = h.items - d.items
        FROM (SELECT tenant_id, date_bin('1 hour', slot, timestamptz '2000-01-01 00:00:00+00')
                     AS hour, event_type, sum(events) AS events, sum(amount) AS amount,
                     sum(items) AS items
              FROM old_rows GROUP BY 1, 2, 3) d
        WHERE h.tenant_id = d.tenant_id AND h.hour = d.hour AND h.event_type = d.event_type;
        DELETE FROM stream_hour_metrics h USING (SELECT DISTINCT tenant_id FROM old_rows) t
        WHERE h.tenant_id = t.tenant_id AND h.events = 0 AND h.amount = 0 AND h.items = 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER hour_metrics_insert AFTER INSERT ON stream_slot_metrics
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION hour_metrics_add();
CREATE TRIGGER hour_metrics_update AFTER UPDATE ON stream_slot_metrics
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hour_metrics_add();
CREATE TRIGGER hour_metrics_delete AFTER DELETE ON stream_slot_metrics
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION hour_metrics_add();
-- A TRUNCATE of the slots (tests, a reset) empties the hours too.
CREATE FUNCTION hour_metrics_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE stream_hour_metrics;
    RETURN NULL;
END
$$;
CREATE TRIGGER hour_metrics_truncate AFTER TRUNCATE ON stream_slot_metrics
    FOR EACH STATEMENT EXECUTE FUNCTION hour_metrics_truncate();

INSERT INTO stream_hour_metrics (tenant_id, hour, event_type, events, amount, items)
SELECT tenant_id, date_bin('1 hour', slot, timestamptz '2000-01-01 00:00:00+00'), event_type,
       sum(events), sum(amount), sum(items)
FROM stream_slot_metrics GROUP BY 1, 2, 3;

GRANT SELECT ON stream_hour_metrics TO lakehouse_api;
ALTER TABLE stream_hour_metrics ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stream_hour_metrics TO lakehouse_api
    USING (tenant_id = current_setting('lakehouse.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('lakehouse.tenant_id', true));
