from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from include.settings import DEV_ADMIN_TOKEN, Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("LAKEHOUSE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env file


def test_dev_defaults_are_accepted_in_dev() -> None:
    settings = Settings()
    assert settings.env == "dev"
    assert settings.admin_token.get_secret_value() == DEV_ADMIN_TOKEN
    assert settings.pg_port == 5433


@pytest.mark.parametrize("env", ["test", "prod"])
def test_dev_admin_token_is_refused_outside_dev(env: str) -> None:
    with pytest.raises(ValidationError, match="LAKEHOUSE_ADMIN_TOKEN"):
        Settings(env=env, pg_password="s3cret-pg")


def test_dev_pg_password_is_refused_outside_dev() -> None:
    with pytest.raises(ValidationError, match="LAKEHOUSE_PG_PASSWORD"):
        Settings(env="prod", admin_token="s3cret-token", api_pg_password="s3cret-api")


def test_dev_api_role_password_is_refused_outside_dev() -> None:
    with pytest.raises(ValidationError, match="LAKEHOUSE_API_PG_PASSWORD"):
        Settings(env="prod", admin_token="s3cret-token", pg_password="pw")


def test_real_secrets_are_accepted_outside_dev() -> None:
    settings = Settings(env="prod", admin_token="t0ken", pg_password="pw", api_pg_password="ap")
    assert settings.admin_token.get_secret_value() == "t0ken"
    assert "lakehouse_api:ap@" in settings.api_pg_dsn


def test_environment_variables_with_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKEHOUSE_PG_PORT", "6543")
    monkeypatch.setenv("LAKEHOUSE_DEMO_TENANTS", '["alpha_shop", "beta_shop"]')
    settings = Settings()
    assert settings.pg_port == 6543
    assert settings.demo_tenants == ["alpha_shop", "beta_shop"]
    assert "port=6543" in settings.pg_dsn


def test_dotenv_file_is_read(tmp_path: object) -> None:
    from pathlib import Path

    Path(".env").write_text("LAKEHOUSE_GENERATOR_RATE=12.5\n")
    assert Settings().generator_rate == 12.5


def test_topic_template_needs_the_tenant_placeholder() -> None:
    with pytest.raises(ValidationError, match="tenant_id"):
        Settings(topic_template="persistent://public/default/events")


def test_secrets_are_not_shown_in_repr() -> None:
    assert DEV_ADMIN_TOKEN not in repr(Settings())
