-- The speed layer per 15-minute slot: the same sums as stream_minute_metrics, kept by the
-- streaming job in the same transaction, so /metrics over hours or days in any time zone reads
-- 15 times fewer rows. Slots start at 2000-01-01 00:00 UTC plus whole multiples of 15 minutes,
-- like session_slots (include/warehouse/rollups.py).
CREATE TABLE stream_slot_metrics (
    tenant_id  text NOT NULL,
    slot       timestamptz NOT NULL,
    event_type text NOT NULL,
    events     bigint NOT NULL,
    amount     numeric(20, 2) NOT NULL DEFAULT 0,
    items      bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, slot, event_type)
);
COMMENT ON COLUMN stream_slot_metrics.amount IS 'sum of order.total_amount (purchase: revenue, refund: refunded)';
COMMENT ON COLUMN stream_slot_metrics.items IS 'sum of item quantities';

INSERT INTO stream_slot_metrics (tenant_id, slot, event_type, events, amount, items)
SELECT tenant_id,
       date_bin('15 minutes', minute, timestamptz '2000-01-01 00:00:00+00'),
       event_type, sum(events), sum(amount), sum(items)
FROM stream_minute_metrics
GROUP BY 1, 2, 3;

GRANT SELECT ON stream_slot_metrics TO lakehouse_api;
ALTER TABLE stream_slot_metrics ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stream_slot_metrics TO lakehouse_api
    USING (tenant_id = current_setting('lakehouse.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('lakehouse.tenant_id', true));

-- Exact distinct counts without hashing every key at query time. For each key (a session, a
-- session's purchases, a customer) and each 15-minute slot it was active in, the previous slot
-- it was active in ('-infinity' for its first). A key is counted once in a window [a, b) by its
-- first active slot there: the row with a <= slot < b and prev_slot < a. activity_counts keeps
-- those rows counted per (slot, kind, prev_slot), so the distinct counts of every bucket and of
-- the whole range come from one scan of a window's counts (sessions repeat the same prev_slot).
CREATE INDEX session_slots_session_idx ON session_slots (tenant_id, session_id);

CREATE TABLE activity_slots (
    tenant_id text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('session', 'purchasing', 'customer')),
    key       text NOT NULL,
    slot      timestamptz NOT NULL,
    prev_slot timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, kind, key, slot)
);

CREATE TABLE activity_counts (
    tenant_id text NOT NULL,
    slot      timestamptz NOT NULL,
    kind      text NOT NULL,
    prev_slot timestamptz NOT NULL,
    n         bigint NOT NULL,
    PRIMARY KEY (tenant_id, slot, kind, prev_slot)
);

-- What activity_slots must hold, derived from session_slots (security_invoker: row-level
-- security of session_slots applies to whoever reads it).
CREATE VIEW activity_slots_derived WITH (security_invoker = true) AS
SELECT tenant_id, kind, key, slot,
       coalesce(lag(slot) OVER (PARTITION BY tenant_id, kind, key ORDER BY slot),
                '-infinity') AS prev_slot
FROM (
    SELECT DISTINCT tenant_id, 'session' AS kind, session_id AS key, slot
    FROM session_slots WHERE session_id <> ''
    UNION ALL
    SELECT DISTINCT tenant_id, 'purchasing', session_id, slot
    FROM session_slots WHERE session_id <> '' AND purchased
    UNION ALL
    SELECT DISTINCT tenant_id, 'customer', customer_id, slot
    FROM session_slots WHERE customer_id <> ''
) active;

-- Recompute the rows of the given sessions and customers of a tenant from session_slots (after
-- the loader added slots or an erasure removed some) and move their counts. Idempotent. Counts
-- that drop to 0 stay until maintenance deletes them; they add nothing.
CREATE FUNCTION refresh_activity_slots(tenant text, sessions text[], customers text[])
RETURNS void LANGUAGE sql VOLATILE AS $$
    WITH gone AS (
        DELETE FROM activity_slots a
        WHERE a.tenant_id = tenant
          AND ((a.kind IN ('session', 'purchasing') AND a.key = ANY (sessions))
               OR (a.kind = 'customer' AND a.key = ANY (customers)))
        RETURNING a.slot, a.kind, a.prev_slot
    )
    INSERT INTO activity_counts AS c (tenant_id, slot, kind, prev_slot, n)
    SELECT tenant, slot, kind, prev_slot, -count(*) FROM gone GROUP BY 2, 3, 4
    ON CONFLICT (tenant_id, slot, kind, prev_slot) DO UPDATE SET n = c.n + excluded.n;

    WITH added AS (
        INSERT INTO activity_slots (tenant_id, kind, key, slot, prev_slot)
        SELECT d.tenant_id, d.kind, d.key, d.slot, d.prev_slot FROM activity_slots_derived d
        WHERE d.tenant_id = tenant AND d.kind IN ('session', 'purchasing')
          AND d.key = ANY (sessions)
        UNION ALL
        SELECT d.tenant_id, d.kind, d.key, d.slot, d.prev_slot FROM activity_slots_derived d
        WHERE d.tenant_id = tenant AND d.kind = 'customer' AND d.key = ANY (customers)
        RETURNING slot, kind, prev_slot
    )
    INSERT INTO activity_counts AS c (tenant_id, slot, kind, prev_slot, n)
    SELECT tenant, slot, kind, prev_slot, count(*) FROM added GROUP BY 2, 3, 4
    ON CONFLICT (tenant_id, slot, kind, prev_slot) DO UPDATE SET n = c.n + excluded.n;
$$;

INSERT INTO activity_slots (tenant_id, kind, key, slot, prev_slot)
SELECT tenant_id, kind, key, slot, prev_slot FROM activity_slots_derived;
INSERT INTO activity_counts (tenant_id, slot, kind, prev_slot, n)
SELECT tenant_id, slot, kind, prev_slot, count(*) FROM activity_slots GROUP BY 1, 2, 3, 4;

GRANT SELECT, INSERT, DELETE ON activity_slots TO lakehouse_api;
GRANT SELECT, INSERT, UPDATE ON activity_counts TO lakehouse_api;
GRANT SELECT ON activity_slots_derived TO lakehouse_api;
GRANT EXECUTE ON FUNCTION refresh_activity_slots(text, text[], text[]) TO lakehouse_api;
ALTER TABLE activity_slots ENABLE ROW LEVEL SECURITY;
ALTER TABLE activity_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON activity_slots TO lakehouse_api
    USING (tenant_id = current_setting('lakehouse.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('lakehouse.tenant_id', true));
CREATE POLICY tenant_isolation ON activity_counts TO lakehouse_api
    USING (tenant_id = current_setting('lakehouse.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('lakehouse.tenant_id', true));
