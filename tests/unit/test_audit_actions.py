"""Every mutating endpoint of the API and the dashboard is an audited action, or says why not."""

from __future__ import annotations

from pathlib import Path

from engine.settings import Settings
from web import create_app
from web.audit import ACTIONS, NOT_ACTIONS


def test_every_mutating_endpoint_is_audited(tmp_path: Path) -> None:
    app = create_app({"TESTING": True}, settings=Settings(
        database_url=f"sqlite:///{tmp_path / 'flow.db'}", broker_url="memory://", data_dir=str(tmp_path)))
    mutating = {rule.endpoint for rule in app.url_map.iter_rules()
                if rule.methods and rule.methods - {"GET", "HEAD", "OPTIONS"}}
    assert mutating - set(ACTIONS) - NOT_ACTIONS == set(), "add the endpoint to web.audit.ACTIONS"
    assert set(ACTIONS) - mutating == set(), "ACTIONS names an endpoint that no longer exists"
    app.extensions["flow"].db.dispose()
