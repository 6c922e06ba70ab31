-- Streaming job state (issue #3): exactly-once bookkeeping and the real-time speed layer.

-- Every event key the stream has counted, with the micro-batch that counted it first. A key is
-- inserted in the same transaction as the aggregates it adds to, so a duplicate that arrives
-- after any in-memory window is still counted once. The batch columns let a replayed batch
-- find exactly the events it made new.
CREATE TABLE stream_event_keys (
    tenant_id     text NOT NULL,
    event_id      uuid NOT NULL,
    app_id        text NOT NULL,
    batch_id      bigint NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX stream_event_keys_batch_idx ON stream_event_keys (app_id, batch_id);

-- One row per committed micro-batch; its presence makes a replay skip the PostgreSQL side.
CREATE TABLE stream_batches (
    app_id           text NOT NULL,
    batch_id         bigint NOT NULL,
    committed_at     timestamptz NOT NULL DEFAULT now(),
    input_rows       integer NOT NULL,
    valid_rows       integer NOT NULL,
    new_events       integer NOT NULL,
    quarantined_rows integer NOT NULL,
    end_offset       jsonb NOT NULL,
    PRIMARY KEY (app_id, batch_id)
);

-- Per tenant, minute of event time and event type: counts, order amounts, items.
CREATE TABLE stream_minute_metrics (
    tenant_id  text NOT NULL,
    minute     timestamptz NOT NULL,
    event_type text NOT NULL,
    events     bigint NOT NULL,
    amount     numeric(20, 2) NOT NULL DEFAULT 0,
    items      bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, minute, event_type)
);
COMMENT ON COLUMN stream_minute_metrics.amount IS 'sum of order.total_amount (purchase: revenue, refund: refunded)';
COMMENT ON COLUMN stream_minute_metrics.items IS 'sum of item quantities';

-- The streaming job's last sign of life, for the API and Airflow.
CREATE TABLE stream_heartbeat (
    job             text PRIMARY KEY,
    app_id          text NOT NULL,
    batch_id        bigint NOT NULL,
    updated_at      timestamptz NOT NULL,
    input_rows      integer NOT NULL,
    rows_per_second double precision NOT NULL,
    lag_seconds     double precision
);
