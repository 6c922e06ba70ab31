-- The analytics API (issue #5): tokens, usage, GDPR erasure, per-tenant quarantine counts, and
-- the role the API connects as, confined to one tenant per transaction by row-level security.

-- Quarantined messages per tenant, day of ingestion and reason, counted by the streaming sink
-- in the same transaction as its batch (so exactly once, like the minute metrics).
CREATE TABLE stream_quarantine_counts (
    tenant_id  text NOT NULL,
    day        date NOT NULL,
    reason     text NOT NULL,
    messages   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day, reason)
);

-- The fraud detector's threshold is a per-tenant choice.
ALTER TABLE tenants
    ADD COLUMN fraud_score_threshold double precision NOT NULL DEFAULT 0.9
        CHECK (fraud_score_threshold BETWEEN 0 AND 1);

-- API tokens: only a SHA-256 of the secret is stored (secrets are 256 random bits, so a slow
-- password hash adds nothing). Tenant tokens are bound to one tenant.
CREATE TABLE api_tokens (
    token_id    uuid PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    role        text NOT NULL CHECK (role IN ('admin', 'tenant')),
    tenant_id   text,  -- no foreign key: dev tokens are seeded before their tenants register
    name        text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    dev         boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz,
    CONSTRAINT tenant_role_has_tenant CHECK ((role = 'tenant') = (tenant_id IS NOT NULL))
);
CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id);

-- API requests per tenant and day, for cost allocation (flushed from memory every few seconds).
CREATE TABLE api_usage (
    tenant_id text NOT NULL,
    day       date NOT NULL,
    requests  bigint NOT NULL,
    PRIMARY KEY (tenant_id, day)
);

-- Customers erased under GDPR. Only a hash of the customer id is kept for good: loads and
-- replays skip these customers' events, so erased data never comes back.
CREATE TABLE erased_customers (
    tenant_id     text NOT NULL,
    customer_hash bytea NOT NULL,
    erased_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_hash)
);

-- Events of erased customers (their item lines carry no customer id, only the event id).
CREATE TABLE erased_events (
    tenant_id text NOT NULL,
    event_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

-- One row per erasure request. customer_id is kept only until the request completes. Not under
-- row-level security: an admin looks a request up by id alone; tenant reads filter by tenant.
CREATE TABLE erasure_requests (
    request_id      uuid PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants (tenant_id),
    customer_hash   bytea NOT NULL,
    customer_id     text,
    status          text NOT NULL
                    CHECK (status IN ('lake_pending', 'lake_running', 'completed', 'failed')),
    postgres_rows   bigint NOT NULL,
    lake_rows       bigint,
    archive_rows    bigint,
    dag_run_id      text,
    detail          text,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);
CREATE INDEX erasure_requests_open_idx ON erasure_requests (requested_at)
    WHERE status IN ('lake_pending', 'lake_running');

-- Exact distinct counts for /metrics without scanning events: one row per (session, customer)
-- pair per 15-minute slot it was active in ('' for a missing id; slots align with every real
-- time zone offset), kept by the loader in the same transaction as the events.
CREATE TABLE session_slots (
    tenant_id   text NOT NULL,
    slot        timestamptz NOT NULL,
    session_id  text NOT NULL,
    customer_id text NOT NULL,
    purchased   boolean NOT NULL,
    PRIMARY KEY (tenant_id, slot, session_id, customer_id)
);
CREATE INDEX session_slots_customer_idx ON session_slots (tenant_id, customer_id);

-- The API's role: it owns nothing, so row-level security always applies to it. Its password is
-- set at start-up from configuration (LAKEHOUSE_API_PG_PASSWORD), never here.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lakehouse_api') THEN
        CREATE ROLE lakehouse_api NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO lakehouse_api', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO lakehouse_api;

-- Tenant data: readable only inside a transaction that named its tenant.
GRANT SELECT, DELETE ON events, event_items, session_slots TO lakehouse_api;
GRANT SELECT ON stream_minute_metrics, stream_quarantine_counts TO lakehouse_api;
GRANT SELECT, INSERT, UPDATE ON api_usage TO lakehouse_api;
GRANT SELECT, INSERT ON erased_customers, erased_events TO lakehouse_api;
GRANT SELECT, INSERT, UPDATE ON erasure_requests TO lakehouse_api;
-- Platform metadata the API manages as admin.
GRANT SELECT, INSERT ON tenants TO lakehouse_api;
GRANT SELECT, INSERT, UPDATE ON api_tokens TO lakehouse_api;
GRANT SELECT ON stream_heartbeat, load_watermarks TO lakehouse_api;

DO $$
DECLARE
    target text;
BEGIN
    FOREACH target IN ARRAY ARRAY[
        'events', 'event_items', 'session_slots', 'stream_minute_metrics',
        'stream_quarantine_counts', 'api_usage', 'erased_customers', 'erased_events'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', target);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I TO lakehouse_api '
            'USING (tenant_id = current_setting(''lakehouse.tenant_id'', true)) '
            'WITH CHECK (tenant_id = current_setting(''lakehouse.tenant_id'', true))',
            target
        );
    END LOOP;
END
$$;
