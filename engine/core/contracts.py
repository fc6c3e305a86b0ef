"""The messages that cross processes: tasks to workers, results back, and failure records.

JSON only, never pickle. Every message carries ``v``, the schema version; a reader refuses a version
it does not know rather than guessing. Workers import this module and ``engine.settings`` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from dsl.errors import FlowError

MESSAGE_VERSION = 1

# Error classes of the language (see docs: "Error classes").
ERROR_CLASSES = ("timeout", "network", "http.4xx", "http.429", "http.5xx", "invalid_input", "handler")


# ``received``, ``started`` and ``heartbeat`` report progress (they renew the task's lease and
# change no run); ``completed`` and ``failed`` end the attempt.
PROGRESS_STATUSES = ("received", "started", "heartbeat")
RESULT_STATUSES = (*PROGRESS_STATUSES, "completed", "failed")


class MessageError(FlowError, ValueError):
    """A message could not be decoded: wrong version, missing field or not JSON."""


def _check_version(data: Mapping[str, Any], kind: str) -> None:
    version = data.get("v")
    if version != MESSAGE_VERSION:
        raise MessageError(
            f"{kind} message has version {version!r}; this process reads version {MESSAGE_VERSION}"
        )


def _load(body: bytes | str | Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        data = body
    else:
        try:
            data = json.loads(body)
        except (ValueError, TypeError) as exc:
            raise MessageError(f"{kind} message is not JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise MessageError(f"{kind} message must be a JSON object")
    _check_version(data, kind)
    return data


@dataclass(frozen=True)
class Failure:
    """A failure as a structured record that crosses processes and is stored with the task.

    ``type`` is the error class (``timeout``, ``network``, ``http.503``, ``invalid_input``,
    ``handler`` ...); ``retryable`` says whether the handler thinks another attempt may succeed;
    the retry policy of the step decides with the error class.
    """

    type: str
    message: str
    retryable: bool = True
    details: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "retryable": self.retryable,
            "details": self.details,
            "traceback": self.traceback,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Failure":
        return cls(
            type=str(data.get("type") or "handler"),
            message=str(data.get("message") or ""),
            retryable=bool(data.get("retryable", True)),
            details=dict(data.get("details") or {}),
            traceback=data.get("traceback"),
        )


@dataclass(frozen=True)
class TaskMessage:
    """One attempt of one task, sent to the queue of its task type."""

    task_id: str
    task_type: str
    attempt: int
    fencing_token: int
    payload: dict[str, Any]
    idempotency_key: str
    run_id: str | None = None
    step: str | None = None
    item: int | None = None
    timeout: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": MESSAGE_VERSION,
            "task_id": self.task_id,
            "task_type": self.task_type,
            "attempt": self.attempt,
            "fencing_token": self.fencing_token,
            "payload": self.payload,
            "idempotency_key": self.idempotency_key,
            "run_id": self.run_id,
            "step": self.step,
            "item": self.item,
            "timeout": self.timeout,
        }

    def encode(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def decode(cls, body: bytes | str | Mapping[str, Any]) -> "TaskMessage":
        data = _load(body, "task")
        try:
            return cls(
                task_id=str(data["task_id"]),
                task_type=str(data["task_type"]),
                attempt=int(data["attempt"]),
                fencing_token=int(data["fencing_token"]),
                payload=dict(data["payload"]),
                idempotency_key=str(data["idempotency_key"]),
                run_id=data.get("run_id"),
                step=data.get("step"),
                item=data.get("item"),
                timeout=data.get("timeout"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"task message is missing or has a bad field: {exc}") from None


@dataclass(frozen=True)
class ResultMessage:
    """What a worker reports for one attempt: ``received`` when it has held the delivery a while
    without starting it (a delivery lease), ``started`` when it begins (the coordinator marks the
    task processing and starts its lease), ``heartbeat`` while it runs (renews the lease), then
    ``completed`` with an output, or ``failed``."""

    task_id: str
    attempt: int
    fencing_token: int
    status: str  # one of RESULT_STATUSES
    output: Any = None
    error: Failure | None = None
    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    logs: tuple[dict[str, Any], ...] = ()
    received_at: float | None = None  # when the worker got the delivery (wall time)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": MESSAGE_VERSION,
            "task_id": self.task_id,
            "attempt": self.attempt,
            "fencing_token": self.fencing_token,
            "status": self.status,
            "output": self.output,
            "error": self.error.to_json() if self.error else None,
            "worker": self.worker,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "logs": list(self.logs),
            "received_at": self.received_at,
        }

    def encode(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def decode(cls, body: bytes | str | Mapping[str, Any]) -> "ResultMessage":
        data = _load(body, "result")
        status = data.get("status")
        if status not in RESULT_STATUSES:
            raise MessageError(
                f"result message has status {status!r}; expected one of {', '.join(RESULT_STATUSES)}"
            )
        try:
            return cls(
                task_id=str(data["task_id"]),
                attempt=int(data["attempt"]),
                fencing_token=int(data["fencing_token"]),
                status=status,
                output=data.get("output"),
                error=Failure.from_json(data["error"]) if data.get("error") else None,
                worker=data.get("worker"),
                started_at=data.get("started_at"),
                finished_at=data.get("finished_at"),
                logs=tuple(data.get("logs") or ()),
                received_at=data.get("received_at"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"result message is missing or has a bad field: {exc}") from None


# Topology names (see DESIGN.md "Messages").
TASK_EXCHANGE = "flow.tasks"
RESULT_QUEUE = "flow.results"
DEAD_LETTER_EXCHANGE = "flow.dead"
DEAD_LETTER_QUEUE = "flow.dead"


def task_queue_name(task_type: str) -> str:
    return f"{TASK_EXCHANGE}.{task_type}"
