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

-- The additive answer of every hour that starts on a quarter hour (UTC hours, and the hours of
-- half- and quarter-hour zones), one row: event types in order, their counts, and the measures
-- /metrics shows. Rewritten from stream_slot_metrics, by triggers on it, for the four hours
-- holding each slot a statement changed: an hourly series reads one row per bucket.
CREATE TABLE stream_hour_answers (
    tenant_id  text NOT NULL,
    hour       timestamptz NOT NULL,
    types      text[] NOT NULL,
    events     bigint[] NOT NULL,
    total      bigint NOT NULL,
    orders     bigint NOT NULL,
    revenue    numeric(20, 2) NOT NULL,
    refunds    numeric(20, 2) NOT NULL,
    items_sold bigint NOT NULL,
    PRIMARY KEY (tenant_id, hour)
);

-- What stream_hour_answers must hold, derived from the slots (the definition; the trigger
-- below is its incremental upkeep).
CREATE VIEW stream_hour_answers_derived WITH (security_invoker = true) AS
SELECT s.tenant_id, h.hour, array_agg(s.event_type ORDER BY s.event_type) AS types,
       array_agg(s.events ORDER BY s.event_type) AS events, sum(s.events)::bigint AS total,
       coalesce(sum(s.events) FILTER (WHERE s.event_type = 'purchase'), 0)::bigint AS orders,
       coalesce(sum(s.amount) FILTER (WHERE s.event_type = 'purchase'), 0) AS revenue,
       coalesce(sum(s.amount) FILTER (WHERE s.event_type = 'refund'), 0) AS refunds,
       coalesce(sum(s.items) FILTER (WHERE s.event_type = 'purchase'), 0)::bigint AS items_sold
FROM (SELECT DISTINCT tenant_id, slot - k * interval '15 minutes' AS hour
      FROM stream_slot_metrics CROSS JOIN generate_series(0, 3) AS k) h
CROSS JOIN LATERAL (
    SELECT m.tenant_id, m.event_type, sum(m.events)::bigint AS events, sum(m.amount) AS amount,
           sum(m.items)::bigint AS items
    FROM stream_slot_metrics m
    WHERE m.tenant_id = h.tenant_id AND m.slot >= h.hour AND m.slot < h.hour + interval '1 hour'
    GROUP BY m.tenant_id, m.event_type
    HAVING sum(m.events) <> 0
) s
GROUP BY s.tenant_id, h.hour;

CREATE FUNCTION hour_answers_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM stream_hour_answers a
    USING (SELECT DISTINCT c.tenant_id, c.slot - k * interval '15 minutes' AS hour
           FROM changed c CROSS JOIN generate_series(0, 3) AS k) t
    WHERE a.tenant_id = t.tenant_id AND a.hour = t.hour;
    INSERT INTO stream_hour_answers
    SELECT t.tenant_id, t.hour, array_agg(s.event_type ORDER BY s.event_type),
           array_agg(s.events ORDER BY s.event_type), sum(s.events),
           coalesce(sum(s.events) FILTER (WHERE s.event_type = 'purchase'), 0),
           coalesce(sum(s.amount) FILTER (WHERE s.event_type = 'purchase'), 0),
           coalesce(sum(s.amount) FILTER (WHERE s.event_type = 'refund'), 0),
           coalesce(sum(s.items) FILTER (WHERE s.event_type = 'purchase'), 0)
    FROM (SELECT DISTINCT c.tenant_id, c.slot - k * interval '15 minutes' AS hour
          FROM changed c CROSS JOIN generate_series(0, 3) AS k) t
    CROSS JOIN LATERAL (
        SELECT m.event_type, sum(m.events)::bigint AS events, sum(m.amount) AS amount,
               sum(m.items)::bigint AS items
        FROM stream_slot_metrics m
        WHERE m.tenant_id = t.tenant_id AND m.slot >= t.hour
          AND m.slot < t.hour + interval '1 hour'
        GROUP BY m.event_type
        HAVING sum(m.events) <> 0
    ) s
    GROUP BY t.tenant_id, t.hour;
    RETURN NULL;
END
$$;
CREATE TRIGGER hour_answers_insert AFTER INSERT ON stream_slot_metrics
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION hour_answers_refresh();
CREATE TRIGGER hour_answers_update AFTER UPDATE ON stream_slot_metrics
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION hour_answers_refresh();
CREATE TRIGGER hour_answers_delete AFTER DELETE ON stream_slot_metrics
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION hour_answers_refresh();

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
    -- DELETE, not TRUNCATE: the same TRUNCATE statement may list these tables too.
    DELETE FROM stream_hour_metrics;
    DELETE FROM stream_hour_answers;
    RETURN NULL;
END
$$;
CREATE TRIGGER hour_metrics_truncate AFTER TRUNCATE ON stream_slot_metrics
    FOR EACH STATEMENT EXECUTE FUNCTION hour_metrics_truncate();

INSERT INTO stream_hour_metrics (tenant_id, hour, event_type, events, amount, items)
SELECT tenant_id, date_bin('1 hour', slot, timestamptz '2000-01-01 00:00:00+00'), event_type,
       sum(events), sum(amount), sum(items)
FROM stream_slot_metrics GROUP BY 1, 2, 3;

INSERT INTO stream_hour_answers SELECT * FROM stream_hour_answers_derived;

GRANT SELECT ON stream_hour_metrics, stream_hour_answers, stream_hour_answers_derived
    TO lakehouse_api;
ALTER TABLE stream_hour_answers ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stream_hour_answers TO lakehouse_api
    USING (tenant_id = current_setting('lakehouse.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('lakehouse.tenant_id', true));
ALTER TABLE stream_hour_metrics ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stream_hour_metrics TO lakehouse_api
    USING (tenant_id = current_setting('lakehouse.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('lakehouse.tenant_id', true));
