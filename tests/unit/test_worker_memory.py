"""The worker on kombu's in-memory transport (the embedded default of ``flow up``)."""

from __future__ import annotations

import threading
import time

import kombu

from engine.runtime import topology
from engine.core.contracts import ResultMessage, TaskMessage
from engine.settings import Settings
from workers.consumer import Worker


def test_worker_runs_tasks_on_the_memory_transport() -> None:
    url = "memory://"
    worker = Worker(Settings(database_url="sqlite://", broker_url=url), ["noop", "data_processing"], concurrency=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert worker.consuming.wait(5)
        with kombu.Connection(url) as conn:
            producer = kombu.Producer(conn.default_channel, exchange=topology.task_exchange())
            tasks = [TaskMessage(f"t{i}", "noop", 1, 1, {"output": i}, f"k{i}") for i in range(3)]
            tasks.append(TaskMessage("d", "data_processing", 1, 1, {"operation": "batch", "input": [1, 2, 3], "size": 2}, "kd"))
            for message in tasks:
                producer.publish(message.encode(), routing_key=message.task_type, content_type="application/json")
            got: list[ResultMessage] = []

            def on_message(message: kombu.Message) -> None:
                got.append(ResultMessage.decode(message.body))
                message.ack()

            with kombu.Consumer(conn.default_channel, queues=[topology.results_queue()], on_message=on_message):
                deadline = time.monotonic() + 10
                while len([r for r in got if r.status != "started"]) < 4 and time.monotonic() < deadline:
                    try:
                        conn.drain_events(timeout=0.1)
                    except TimeoutError:
                        pass
        final = {r.task_id: r for r in got if r.status != "started"}
        # `started` is only sent for a task still running after 50 ms; these finish at once.
        assert {r.task_id for r in got if r.status == "started"} <= {"t0", "t1", "t2", "d"}
        assert {k: r.output for k, r in final.items()} == {"t0": 0, "t1": 1, "t2": 2, "d": [[1, 2], [3]]}
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()
