from __future__ import annotations

import psycopg
import pytest

from include.db import connect
from include.settings import Settings
from include.tenants import InvalidTenantIdError, list_tenants, register_tenant


def test_registration_is_idempotent_and_the_first_registration_wins(platform: Settings) -> None:
    with connect(platform) as conn:
        first = register_tenant(conn, "registry_shop", "Registry Shop", "EUR")
        again = register_tenant(conn, "registry_shop", "Renamed", "USD")
        count = conn.execute(
            "SELECT count(*) FROM tenants WHERE tenant_id = 'registry_shop'"
        ).fetchone()
    assert first == again
    assert (again.display_name, again.currency, again.active) == ("Registry Shop", "EUR", True)
    assert again.created_at is not None
    assert count == (1,)


def test_invalid_tenant_ids_never_reach_the_database(platform: Settings) -> None:
    with connect(platform) as conn, pytest.raises(InvalidTenantIdError):
        register_tenant(conn, "Bad Tenant", "x", "USD")


def test_the_database_refuses_invalid_ids_on_its_own(platform: Settings) -> None:
    with connect(platform) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO tenants (tenant_id, display_name, currency) VALUES ('X-1', 'x', 'USD')"
        )


def test_inactive_tenants_are_listed_only_on_request(platform: Settings) -> None:
    with connect(platform) as conn:
        register_tenant(conn, "sleepy_shop", "Sleepy", "USD")
        conn.execute("UPDATE tenants SET active = false WHERE tenant_id = 'sleepy_shop'")
        conn.commit()
        active = {t.tenant_id for t in list_tenants(conn)}
        every = {t.tenant_id for t in list_tenants(conn, active_only=False)}
    assert "sleepy_shop" not in active and "sleepy_shop" in every
