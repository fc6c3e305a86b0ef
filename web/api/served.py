"""Which dotted step types (Python functions, plugins) of a deploy no worker serves: the deploy
answers a warning for each, so a step type that would wait forever in its queue is seen at once.

On RabbitMQ the answer is the consumer count of each task queue (a passive declare); ``flow up``,
whose workers are threads of the same process on the in-memory broker, tells the app the task
types its worker consumes. Anywhere else (``flow serve`` on the in-memory broker, a broker that
cannot be reached) nobody can know, and nothing is said.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dsl.types import is_plugin_type
from engine.store import dashboard as queries
from web.api.context import services

WARNING_CODE = "W510"


def dotted_task_types(specs: Iterable[Any]) -> dict[str, tuple[str, set[str]]]:
    """``{task type: (step type, {workflow names})}`` of the dotted steps (and undo actions) of ``specs``."""
    found: dict[str, tuple[str, set[str]]] = {}
    for spec in specs:
        for step in (*spec.steps, *spec.on_failure):
            pairs = [(step.type, step.task_type)]
            if step.compensate is not None and step.compensate.type:
                pairs.append((step.compensate.type, step.compensate.task_type))
            for step_type, task_type in pairs:
                if task_type and is_plugin_type(step_type):
                    found.setdefault(task_type, (step_type, set()))[1].add(spec.name)
    return found


def unserved_warnings(specs: Iterable[Any]) -> list[dict[str, Any]]:
    """``unserved`` for the app's broker and workers."""
    flow = services()
    return unserved(specs, flow.settings.broker_url, flow.served_task_types)


def unserved(specs: Iterable[Any], broker_url: str, served_task_types: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """A warning per dotted step type of ``specs`` whose queue has no consumer (none when unknown).

    ``served_task_types``: what the workers of this process consume, when they are in this process.
    """
    wanted = dotted_task_types(specs)
    if not wanted:
        return []
    if served_task_types is not None:
        served = set(served_task_types)
        missing = [t for t in wanted if t not in served]
    elif broker_url.startswith("memory"):
        return []
    else:
        reading = queries.broker_queues(broker_url, sorted(wanted))
        if reading["status"] != "up":
            return []
        missing = [t for t in wanted if not (reading["queues"].get(t) or {}).get("consumers")]
    return [{
        "code": WARNING_CODE, "step_type": wanted[t][0], "task_type": t, "workflows": sorted(wanted[t][1]),
        "message": f"no worker serves step type {wanted[t][0]} (queue {t} has no consumer): its steps will wait "
                   f"until one does; start one with `flow worker --import MODULE`",
    } for t in sorted(missing)]
