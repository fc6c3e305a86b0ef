"""The Celery side of the benchmark: one no-op task, configured from the environment.

``BENCH_BROKER`` (amqp URL), ``BENCH_BACKEND`` (``db+postgresql://...`` or ``rpc://``) and
``BENCH_QUEUE`` (so that the two backends' workers never take each other's tasks). Late acks,
prefork workers (the pool and concurrency are given on the worker's command line).
"""

from __future__ import annotations

import os

from celery import Celery


def make_app(broker: str, backend: str, queue: str) -> Celery:
    """A Celery app with the benchmark's settings and its ``bench.noop`` task."""
    app = Celery("bench", broker=broker, backend=backend)
    app.conf.update(
        task_acks_late=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        database_table_schemas={},
    )

    @app.task(name="bench.noop", shared=False)
    def noop(value: object = None, *args: object) -> object:
        """Return ``value``: the Celery twin of Flow's ``noop`` step."""
        return value

    return app


app = make_app(
    os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    os.environ.get("BENCH_BACKEND", "rpc://"),
    os.environ.get("BENCH_QUEUE", "bench"),
)
