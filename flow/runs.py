"""Runs as the client sees them: the API's run document, and a handle to wait for and act on it.

``Run`` (from ``Client``) and ``AsyncRun`` (from ``AsyncClient``) hold the last run document the
client received and update it in place when they fetch a newer one (``refresh``, ``wait``, ``cancel``
...), the way Celery's ``AsyncResult`` shows the current state. The document's fields are read-only
properties; ``document`` is the whole JSON.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Mapping

from flow._api import TERMINAL_STATUSES, parse_time
from flow.errors import RunFailedError

if TYPE_CHECKING:
    from flow.async_client import AsyncClient
    from flow.client import Client

__all__ = ["RunDocument", "Run", "AsyncRun", "TERMINAL_STATUSES"]


class RunDocument:
    """The fields of a run document (``GET /api/runs/ID``), without I/O."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document: dict[str, Any] = dict(document)

    @property
    def document(self) -> dict[str, Any]:
        """The run document as the API answered it (``steps`` with their attempts, ``items`` ...)."""
        return self._document

    @property
    def id(self) -> str:
        return str(self._document["id"])

    @property
    def workflow(self) -> str:
        return str(self._document.get("workflow") or "")

    @property
    def version(self) -> int | None:
        return self._document.get("version")

    @property
    def status(self) -> str:
        """``pending running completed failed cancelled compensating compensated compensation_failed``."""
        return str(self._document["status"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._document.get("params") or {})

    @property
    def output(self) -> Any:
        """The workflow's output (None until the run has completed)."""
        return self._document.get("output")

    @property
    def error(self) -> dict[str, Any] | None:
        """The run's error record (``type``, ``message``, ``step`` ...), or None."""
        return self._document.get("error")

    @property
    def steps(self) -> list[dict[str, Any]]:
        """One entry per step, in the workflow's order: ``name``, ``status``, ``attempts``, ``output``
        ``error``, ``task_id`` ... (fan-out steps list ``items``)."""
        return list(self._document.get("steps") or [])

    def step(self, name: str) -> dict[str, Any]:
        """The step named ``name``.

        Raises:
            KeyError: the workflow has no such step (or it has not run, for an ``on failure`` step).
        """
        for step in self.steps:
            if step.get("name") == name:
                return step
        raise KeyError(name)

    @property
    def created_at(self) -> dt.datetime | None:
        return parse_time(self._document.get("created_at"))

    @property
    def started_at(self) -> dt.datetime | None:
        return parse_time(self._document.get("started_at"))

    @property
    def finished_at(self) -> dt.datetime | None:
        return parse_time(self._document.get("finished_at"))

    @property
    def done(self) -> bool:
        """Whether the run is in a terminal status (it will not change by itself any more)."""
        return self.status in TERMINAL_STATUSES

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def _outcome(self) -> Any:
        if self.status != "completed":
            raise RunFailedError(self)
        return self.output

    def _update(self, document: Mapping[str, Any]) -> None:
        self._document = dict(document)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.workflow} {self.status}>"


class Run(RunDocument):
    """A run, bound to the ``Client`` that fetched it."""

    def __init__(self, document: Mapping[str, Any], client: "Client") -> None:
        super().__init__(document)
        self._client = client

    def refresh(self) -> "Run":
        """Fetch the current document; returns ``self``."""
        self._update(self._client._run_document(self.id))
        return self

    def wait(self, timeout: float | None = None) -> "Run":
        """Block until the run is terminal; returns ``self``, updated.

        The server holds the request until the run ends (``?wait=``); an older server is polled with
        backoff (0.1 s doubling to 2 s).

        Parameters:
            timeout: seconds to wait at most; None waits as long as it takes.

        Raises:
            WaitTimeoutError: the run is not terminal after ``timeout`` seconds.
        """
        self._update(self._client._wait(self, timeout))
        return self

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run, then return its output.

        Raises:
            RunFailedError: the run ended otherwise than ``completed``; it carries the error record.
            WaitTimeoutError: the run is not terminal after ``timeout`` seconds.
        """
        return self.wait(timeout)._outcome()

    def cancel(self) -> "Run":
        """Cancel the run (see ``Client.cancel``)."""
        self._update(self._client.cancel(self.id).document)
        return self

    def retry(self) -> "Run":
        """Retry the failed run from its failed step (see ``Client.retry``)."""
        self._update(self._client.retry(self.id).document)
        return self

    def compensate(self) -> "Run":
        """Undo the run's completed steps (see ``Client.compensate``)."""
        self._update(self._client.compensate(self.id).document)
        return self

    def approve(self, step: str, approved: bool = True, *, comment: str | None = None,
                item: int | None = None) -> "Run":
        """Answer the waiting approval step ``step`` (see ``Client.approve``)."""
        self._update(self._client.approve(self.id, step, approved, comment=comment, item=item).document)
        return self

    def logs(self) -> list[dict[str, Any]]:
        """The log entries of the run's tasks, oldest first."""
        return self._client.logs(self.id)


class AsyncRun(RunDocument):
    """A run, bound to the ``AsyncClient`` that fetched it; the twin of ``Run`` with coroutines."""

    def __init__(self, document: Mapping[str, Any], client: "AsyncClient") -> None:
        super().__init__(document)
        self._client = client

    async def refresh(self) -> "AsyncRun":
        """Fetch the current document; returns ``self``."""
        self._update(await self._client._run_document(self.id))
        return self

    async def wait(self, timeout: float | None = None) -> "AsyncRun":
        """Wait until the run is terminal; returns ``self``, updated (see ``Run.wait``).

        Raises:
            WaitTimeoutError: the run is not terminal after ``timeout`` seconds.
        """
        self._update(await self._client._wait(self, timeout))
        return self

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the run, then return its output (see ``Run.result``).

        Raises:
            RunFailedError: the run ended otherwise than ``completed``.
            WaitTimeoutError: the run is not terminal after ``timeout`` seconds.
        """
        return (await self.wait(timeout))._outcome()

    async def cancel(self) -> "AsyncRun":
        self._update((await self._client.cancel(self.id)).document)
        return self

    async def retry(self) -> "AsyncRun":
        self._update((await self._client.retry(self.id)).document)
        return self

    async def compensate(self) -> "AsyncRun":
        self._update((await self._client.compensate(self.id)).document)
        return self

    async def approve(self, step: str, approved: bool = True, *, comment: str | None = None,
                      item: int | None = None) -> "AsyncRun":
        run = await self._client.approve(self.id, step, approved, comment=comment, item=item)
        self._update(run.document)
        return self

    async def logs(self) -> list[dict[str, Any]]:
        return await self._client.logs(self.id)
