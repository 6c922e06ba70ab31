-- Tenant registry: one row per merchant; the stream reads its topics from here.
CREATE TABLE tenants (
    tenant_id    text PRIMARY KEY
                 CONSTRAINT tenant_id_format CHECK (tenant_id ~ '^[a-z][a-z0-9_]{2,62}$'),
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    currency     char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    active       boolean NOT NULL DEFAULT true
);

CREATE INDEX tenants_active_idx ON tenants (tenant_id) WHERE active;
