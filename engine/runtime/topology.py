"""The broker topology: kombu declarations of the exchanges and queues (no connection, no I/O).

The names are the contracts' (``engine.core.contracts``); the declarations live here because they
are kombu objects. The coordinator (``engine.runtime.messaging``) and the workers declare the same
entities from these functions.
"""

from __future__ import annotations

from typing import Any

import kombu

from engine.core.contracts import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    RESULT_QUEUE,
    TASK_EXCHANGE,
    task_queue_name,
)

# Topology: pure kombu declarations (no connection). Coordinator and workers declare the same
# entities with the same arguments, because RabbitMQ refuses a redeclaration whose arguments differ.
# The results queue is bound on the ``flow.tasks`` exchange with routing key ``flow.results`` (so
# ``flow.results`` is a reserved name that no task type may take); one exchange carries both ways.
# Dead letters go to a fanout exchange so that every rejected task lands in one queue whatever its
# routing key was; the original key stays in the ``x-death`` header for requeueing.

def task_exchange() -> kombu.Exchange:
    """The durable direct exchange that carries tasks (routing key = task type) and results."""
    return kombu.Exchange(TASK_EXCHANGE, type="direct", durable=True)


def dead_letter_exchange() -> kombu.Exchange:
    """The fanout exchange that receives tasks rejected without requeue (undecodable, given up)."""
    return kombu.Exchange(DEAD_LETTER_EXCHANGE, type="fanout", durable=True)


def _queue_arguments(quorum: bool, dead_letter: bool) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    if dead_letter:
        arguments["x-dead-letter-exchange"] = DEAD_LETTER_EXCHANGE
    if quorum:
        # Quorum queues are replicated across the cluster; they must be durable and non-exclusive.
        arguments["x-queue-type"] = "quorum"
    return arguments


def task_queue(task_type: str, *, quorum: bool = False) -> kombu.Queue:
    """The durable queue ``flow.tasks.<task_type>``, dead-lettering to ``flow.dead``."""
    return kombu.Queue(
        task_queue_name(task_type),
        exchange=task_exchange(),
        routing_key=task_type,
        durable=True,
        queue_arguments=_queue_arguments(quorum, dead_letter=True),
    )


def results_queue(quorum: bool = False) -> kombu.Queue:
    """The durable queue ``flow.results``, bound on ``flow.tasks`` with routing key ``flow.results``."""
    return kombu.Queue(
        RESULT_QUEUE,
        exchange=task_exchange(),
        routing_key=RESULT_QUEUE,
        durable=True,
        queue_arguments=_queue_arguments(quorum, dead_letter=False),
    )


def dead_letter_queue(quorum: bool = False) -> kombu.Queue:
    """The durable queue ``flow.dead`` that holds every dead-lettered task for inspection/requeue."""
    return kombu.Queue(
        DEAD_LETTER_QUEUE,
        exchange=dead_letter_exchange(),
        routing_key="",
        durable=True,
        queue_arguments=_queue_arguments(quorum, dead_letter=False),
    )
