"""A canary secret used in headers and bodies of a run, end to end with real processes: it reaches
the target, and never appears in the logs, the database (tasks, task_logs, outbox, dead letters,
runs), the API's answers or the broker's messages (a copy of every message is consumed)."""

from __future__ import annotations

import time
import uuid

import kombu
import pytest
import sqlalchemy as sa

from engine.core import contracts
from engine.runtime import topology
from engine.settings import Settings
from tests.faults.harness import Cluster
from tests.http_sink import Sink
from web import create_app

pytestmark = pytest.mark.integration

CANARY = f"canary-{uuid.uuid4().hex}"
FLOW = """
flow 1
workflow canary(base: string) {
  defaults { retry { attempts: 1 } }
  step a: http {
    method: "POST"  url: "${params.base}/s1"
    headers: { Authorization: "Bearer ${secrets.CANARY}", "X-Api-Key": secrets.CANARY }
    body: { run: workflow.run_id, token: secrets.CANARY, nested: { t: "x-${secrets.CANARY}-y" } }
    compensate none "sink"
  }
  step b: http {
    after a
    method: "POST"  url: "${params.base}/fail"
    headers: { Authorization: "Bearer ${secrets.CANARY}" }
    body: { run: workflow.run_id, token: secrets.CANARY }
    compensate none "sink"
  }
}
"""


def test_canary_secret_never_leaks(postgres_url: str, amqp_url: str) -> None:
    sink = Sink().start()
    c = Cluster(coordinators=1, workers=1, env={"FLOW_STEP_SECRET_CANARY": CANARY, "FLOW_LOG_FORMAT": "json"})
    seen: list[str] = []
    try:
        # A copy of every message: tasks and results (flow.tasks) and dead letters (flow.dead).
        with kombu.Connection(c.broker_url) as conn:
            channel = conn.channel()
            topology.task_exchange().bind(channel).declare()
            topology.dead_letter_exchange().bind(channel).declare()
            spy = kombu.Queue("canary-spy", exchange=topology.task_exchange(), routing_key="http_request",
                              channel=channel, auto_delete=False)
            spy.declare()
            spy.bind_to(exchange=contracts.TASK_EXCHANGE, routing_key=contracts.RESULT_QUEUE)
            spy.bind_to(exchange=contracts.DEAD_LETTER_EXCHANGE, routing_key="")
            c.deploy(FLOW)
            c.start()
            (run_id,) = c.start_runs("canary", [{"base": sink.url}])
            c.wait_terminal([run_id], 60)
            time.sleep(1.0)
            while (message := spy.get(no_ack=True)) is not None:
                seen.append(message.body if isinstance(message.body, str) else message.body.decode("utf-8", "replace"))
        assert c.statuses([run_id])[run_id] == "failed"
        # It was used: the target got it in the header and the body
        first = [r for r in sink.snapshot() if r.path == "/s1"]
        assert first and first[0].body["token"] == CANARY
        assert len(seen) >= 4, "the spy saw the tasks and the results"
        for body in seen:
            assert CANARY not in body, "the canary is in a broker message"
        with c.store.engine.connect() as conn:
            for table in ("tasks", "task_logs", "outbox", "dead_letters", "runs", "workflow_versions"):
                dump = "\n".join(str(tuple(row)) for row in conn.execute(sa.text(f"SELECT * FROM {table}")))
                assert CANARY not in dump, f"the canary is in {table}"
            letters = conn.execute(sa.text("SELECT count(*) FROM dead_letters")).scalar_one()
        assert letters == 1
        app = create_app({"TESTING": True}, settings=Settings(
            database_url=c.database_url, broker_url="memory://", api_token="t",
            secrets={"CANARY": CANARY}))
        client = app.test_client()
        auth = {"Authorization": "Bearer t"}
        for path in (f"/api/runs/{run_id}", f"/api/runs/{run_id}/logs", "/api/runs", "/api/dead-letters",
                     "/api/dead_letters", "/api/tasks"):
            response = client.get(path, headers=auth)
            assert response.status_code < 500
            assert CANARY not in response.get_data(as_text=True), f"the canary is in {path}"
    finally:
        c.close()
        sink.stop()
    logs = c.log_text()
    assert logs, "the processes logged something"
    assert CANARY not in logs, "the canary is in the process logs"
