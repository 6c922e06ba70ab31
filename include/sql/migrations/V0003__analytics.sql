-- Analytics tables that the load_postgres DAG fills from the lake (issue #4): one row per
-- distinct event of silver, one per item line of event_items.
--
-- Both are range-partitioned by event time, one partition per month. The loader creates the
-- partitions a load needs (late events land in their own month) and maintain_postgres creates
-- the coming ones and drops those past retention. A primary key of a partitioned table must
-- contain the partition key; an event's event_time never changes, so (tenant_id, event_id,
-- event_time) identifies an event as well as (tenant_id, event_id) does.
CREATE TABLE events (
    tenant_id                     text        NOT NULL,
    event_id                      uuid        NOT NULL,
    event_time                    timestamptz NOT NULL,
    schema_version                smallint    NOT NULL,
    event_type                    text        NOT NULL,
    session_id                    text,
    customer_customer_id          text,
    customer_email                text,
    customer_country              text,
    customer_segment              text,
    device_type                   text,
    device_os                     text,
    device_browser                text,
    device_ip                     text,
    order_order_id                text,
    order_total_amount            numeric(18, 2),
    order_currency                text,
    order_payment_method          text,
    ml_context_model_version      text,
    ml_context_model_scores       jsonb,
    processing_flags_pii_contains boolean,
    processing_flags_gdpr_consent boolean,
    lineage_source                text,
    lineage_producer_id           text,
    lineage_produced_at           timestamptz,
    lineage_trace_id              text,
    item_count                    integer,
    topic                         text,
    message_id                    text,
    publish_time                  timestamptz,
    ingest_time                   timestamptz,
    loaded_at                     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id, event_time)
) PARTITION BY RANGE (event_time);

CREATE INDEX events_tenant_time_idx ON events (tenant_id, event_time);

CREATE TABLE event_items (
    tenant_id   text           NOT NULL,
    event_id    uuid           NOT NULL,
    line_number integer        NOT NULL,
    event_date  date           NOT NULL,
    event_type  text           NOT NULL,
    sku         text           NOT NULL,
    category    text,
    quantity    bigint         NOT NULL,
    unit_price  numeric(18, 2) NOT NULL,
    loaded_at   timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id, line_number, event_date)
) PARTITION BY RANGE (event_date);

CREATE INDEX event_items_tenant_date_idx ON event_items (tenant_id, event_date);

-- How far each analytics table has been loaded: the Delta version of its source table,
-- written in the same transaction as the rows.
CREATE TABLE load_watermarks (
    target        text        PRIMARY KEY,
    source_table  text        NOT NULL,
    delta_version bigint      NOT NULL,
    rows_loaded   bigint      NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per load that committed, for operators and the benchmark.
CREATE TABLE load_runs (
    run_id        bigserial   PRIMARY KEY,
    target        text        NOT NULL,
    from_version  bigint,
    to_version    bigint      NOT NULL,
    files         integer     NOT NULL,
    staged_rows   bigint      NOT NULL,
    inserted_rows bigint      NOT NULL,
    started_at    timestamptz NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now()
);
