"""On the embedded default without FLOW_API_TOKEN (a laptop), the dashboard opens without a login,
as the API does; with a token configured, it asks for one."""

from __future__ import annotations

from pathlib import Path

from engine.settings import Settings
from web import create_app


def _app(tmp_path: Path, **extra: object):
    settings = Settings(database_url=f"sqlite:///{tmp_path}/flow.db", broker_url="memory://",
                        data_dir=str(tmp_path), secret_key="k", **extra)
    from engine.store import db

    db.upgrade(settings.database_url)
    return create_app({"TESTING": True}, settings=settings)


def test_laptop_sees_the_dashboard_without_logging_in(tmp_path: Path) -> None:
    client = _app(tmp_path).test_client()
    page = client.get("/")
    assert page.status_code == 200
    assert b"local" in page.data  # signed in as the local admin


def test_a_configured_token_turns_the_login_on(tmp_path: Path) -> None:
    client = _app(tmp_path, api_token="secret-token").test_client()
    page = client.get("/")
    assert page.status_code == 303
    assert "/login" in page.headers["Location"]
