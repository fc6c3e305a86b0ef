"""The ``data_processing`` handler: transform, filter, validate, aggregate, batch, sort.

The payload is the step config, already evaluated by the coordinator, plus ``operation`` (the step
type). Per-element expressions (``map``, ``where``, ``by``) arrive as deferred lambdas
``{"$expr": {"op": "lambda", ...}}`` and are evaluated here with ``dsl.evaluator.call_lambda``.
Inputs and outputs are capped at 1 MiB of JSON (DESIGN guarantee 7).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from workers.handler_api import InvalidInput, TaskContext
from workers.handlers import data_ops

MAX_BYTES = 1 << 20

OPERATIONS: dict[str, Callable[[Mapping[str, Any], list[Any], Mapping[str, Any]], Any]] = {
    "transform": data_ops.transform,
    "filter": data_ops.filter_items,
    "validate": data_ops.validate,
    "aggregate": data_ops.aggregate,
    "batch": data_ops.batch,
    "sort": data_ops.sort,
}


def handle(task: TaskContext) -> Any:
    """Run the payload's ``operation`` on its ``input`` list; see the module docstring."""
    payload = task.payload
    operation = payload.get("operation")
    run = OPERATIONS.get(operation) if isinstance(operation, str) else None
    if run is None:
        # The task API's free-form tasks ({"operation": "process_order", ...}) land here: say what exists.
        raise InvalidInput(
            f"data_processing: unknown operation {operation!r}; "
            f"known operations: {', '.join(OPERATIONS)}",
            operation=operation,
            known=list(OPERATIONS),
        )
    items = payload.get("input")
    if not isinstance(items, list):
        raise InvalidInput(
            f"{operation}: 'input' must be a list, not {data_ops.type_name(items)}", operation=operation
        )
    _check_size(items, f"{operation}: the input")
    output = run(payload, items, {"secrets": dict(task.secrets)})
    _check_size(output, f"{operation}: the output")
    task.log("info", f"{operation}: {len(items)} items in", items_out=_count(output))
    return output


def _check_size(value: Any, what: str) -> None:
    try:
        size = len(json.dumps(value, separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not JSON: {exc}") from None
    if size > MAX_BYTES:
        raise InvalidInput(
            f"{what} is {size} bytes of JSON, over the limit of {MAX_BYTES}; split it with a batch "
            "step or a for each",
            size=size,
            limit=MAX_BYTES,
        )


def _count(output: Any) -> int | None:
    if isinstance(output, list):
        return len(output)
    if isinstance(output, Mapping) and isinstance(output.get("valid"), list):
        return len(output["valid"])
    return None

