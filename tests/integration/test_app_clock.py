"""The web app's schedule store reads the clock of the ``Store`` it is given (it used to read the
system clock whatever ``Store(clock=...)`` said)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from engine.settings import Settings
from engine.store import Store, db
from web import create_app

TOKEN = "clock-test-token"
FROZEN = datetime(2031, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def test_the_schedules_api_fires_on_the_store_clock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flow.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    store = Store(engine, clock=FROZEN.timestamp)
    app = create_app({"TESTING": True}, settings=Settings(database_url=url, broker_url="memory://",
                                                          api_token=TOKEN), store=store)
    client = app.test_client()

    answer = client.post("/api/scheduler/tasks/recurring", json={"type": "data_processing", "cronExpression": "0 * * * *"},
                         headers={"Authorization": f"Bearer {TOKEN}"})

    assert answer.status_code == 201, answer.get_json()
    # The next top of the hour after the store's frozen 05:06:07, not after the machine's now.
    assert answer.get_json()["next_fire_at"] == "2031-03-04T06:00:00+00:00"
    engine.dispose()
