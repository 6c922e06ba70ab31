from __future__ import annotations

import pytest

from include.tenants import InvalidTenantIdError, Tenant, topic_for, validate_tenant_id

TEMPLATE = "persistent://public/default/{tenant_id}.events"


@pytest.mark.parametrize("tenant_id", ["abc", "acme_shop", "a1_2", "z" + "9" * 62])
def test_valid_tenant_ids_are_accepted(tenant_id: str) -> None:
    assert validate_tenant_id(tenant_id) == tenant_id


@pytest.mark.parametrize(
    "tenant_id",
    [
        "",
        "ab",
        "Acme",
        "1acme",
        "_acme",
        "acme-shop",
        "acme shop",
        "acme.shop",
        "a" * 64,
        "acme/../other",
        "acme\n",
        "ümlaut",
    ],
)
def test_invalid_tenant_ids_are_refused_with_a_clear_error(tenant_id: str) -> None:
    with pytest.raises(InvalidTenantIdError, match=r"invalid tenant id .*pattern"):
        validate_tenant_id(tenant_id)


def test_topic_comes_from_the_template() -> None:
    assert topic_for("acme_shop", TEMPLATE) == "persistent://public/default/acme_shop.events"


def test_topic_for_refuses_an_invalid_tenant() -> None:
    with pytest.raises(InvalidTenantIdError):
        topic_for("Evil/Topic", TEMPLATE)


def test_tenant_model_validates_id_and_currency() -> None:
    with pytest.raises(ValueError, match="invalid tenant id"):
        Tenant(tenant_id="X", display_name="x", currency="USD")
    with pytest.raises(ValueError, match="currency"):
        Tenant(tenant_id="acme_shop", display_name="Acme", currency="usd")
