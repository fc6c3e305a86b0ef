"""``Client``: deploy workflows, start runs, follow them and act on them, over Flow's JSON API.

    from flow import Client

    client = Client()                       # FLOW_URL / FLOW_API_TOKEN, else http://127.0.0.1:3030
    client.deploy("workflows/hello.flow")
    run = client.start("hello", {"name": "Ada"}, idempotency_key="hello-ada")
    print(run.result(timeout=60))           # the output, or RunFailedError with the run's error

The requests, their retry rules and the parsing of the answers are in ``flow._api``; this module
only sends them with httpx. ``flow.async_client.AsyncClient`` is its twin for asyncio.
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable

import httpx

from flow import _api
from flow._api import BATCH_LIMIT, Call, Retries
from flow.errors import (
    APIConnectionError,
    APIStatusError,
    BatchStartError,
    NotFoundError,
    NoWorkerWarning,
    PayloadTooLargeError,
    WaitTimeoutError,
)
from flow.records import DeadLetter, DeployedVersion, Page
from flow.runs import Run, RunDocument

__all__ = ["Client", "DeadLetters"]

RunRef = str | RunDocument


def _run_id(run: RunRef) -> str:
    return run.id if isinstance(run, RunDocument) else str(run)


class Client:
    """A synchronous client of one Flow server.

    Parameters:
        url: the server, e.g. ``http://flow.internal:3030`` (``/api`` may be included); default
            ``FLOW_URL``, else ``http://127.0.0.1:3030``.
        token: an API token, sent as ``Authorization: Bearer``; default ``FLOW_API_TOKEN``. The
            embedded default server needs none.
        timeout: seconds for each request (a held ``wait`` gets its hold on top).
        retries: attempts of a retry-safe request (reads, deploys, starts with an idempotency key)
            after a connection error or a 503, or a ``Retries`` with the backoff too. Other requests
            are sent once: the server may have acted on them before the connection broke.
        headers: extra headers for every request.
        transport: an httpx transport (``httpx.MockTransport`` in tests, a proxy ...).

    Use it as a context manager, or call ``close()``, to release its connections.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 10.0,
                 retries: int | Retries = 3, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = _api.base_url(url)
        self.retries = retries if isinstance(retries, Retries) else Retries(attempts=max(1, retries))
        all_headers = {"Accept": "application/json", "User-Agent": "flow-client", **(headers or {})}
        token = _api.api_token(token)
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=all_headers,
                                  transport=transport)
        self.dead_letters = DeadLetters(self)
        # None: not known yet whether the server has the batch endpoint.
        self._batch_supported: bool | None = None
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.base_url}>"

    # --- sending ------------------------------------------------------------------------------------

    def _send(self, call: Call) -> Any:
        """Send ``call``, retrying it when it is retry-safe; the decoded answer.

        Raises:
            APIStatusError: (a subclass of) the server's error answer.
            APIConnectionError: no answer, after the allowed retries.
        """
        attempts = self.retries.attempts if call.retry_safe else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.request(
                    call.method, call.path, params=call.params, json=call.json, headers=call.headers,
                    timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT)
            except httpx.TransportError as exc:
                if attempt < attempts:
                    self._sleep(self.retries.delay(attempt))
                    continue
                raise APIConnectionError(f"{call.method} {self.base_url}{call.path}: {exc or type(exc).__name__}",
                                         method=call.method, url=self.base_url + call.path) from exc
            status = response.status_code
            if status == 503 and attempt < attempts and status not in call.answers:
                self._sleep(self.retries.delay(attempt))
                continue
            if status not in call.answers:
                _api.raise_for_answer(status, response.text, response.headers)
            return _api.decode(response.text)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _run(self, call: Call) -> Run:
        return Run(self._send(call), self)

    def _run_document(self, run_id: str) -> dict[str, Any]:
        return dict(self._send(_api.get_run(run_id)))

    # --- workflows ----------------------------------------------------------------------------------

    def deploy(self, path_or_source: str | os.PathLike[str], *, filename: str | None = None,
               step_types: Any = None) -> list[DeployedVersion]:
        """Deploy the workflows of a ``.flow`` file (or source text, or a ``.json`` definition of the task API).

        Deploying unchanged source stores nothing and answers the existing versions
        (``created`` False). The schedules the source declares are registered.

        Parameters:
            path_or_source: a path (``Path`` or a one-line string naming a file) or the source itself.
            filename: the name diagnostics show; default the file's name.
            step_types: Python step types to check the config of dotted steps against: ``StepType``
                objects, modules that declare them, or a manifest (``flow steps export``).

        Returns:
            One ``DeployedVersion`` per workflow of the source.

        Raises:
            CompileError: the source does not compile; ``diagnostics`` lists every one.
            FileNotFoundError: a path that does not exist.

        Warns:
            NoWorkerWarning: a dotted step type of the source that no worker serves.
        """
        answer = self._send(_api.deploy(path_or_source, filename, _api.step_types_manifest(step_types)))
        for message in _api.deploy_warnings(answer):
            warnings.warn(message, NoWorkerWarning, stacklevel=2)
        return [DeployedVersion.from_json(v) for v in answer["versions"]]

    def check(self, source: str, *, filename: str | None = None) -> dict[str, Any]:
        """Compile ``source`` on the server without storing it: ``{"ok", "diagnostics", "workflows"}``."""
        return dict(self._send(_api.check(source, filename)))

    # --- starting runs --------------------------------------------------------------------------------

    def start(self, workflow: str, params: Mapping[str, Any] | None = None, *,
              idempotency_key: str | None = None, version: int | None = None) -> Run:
        """Start a run of ``workflow``.

        Parameters:
            params: the workflow's params (checked against its typed params).
            idempotency_key: a repeated start with the same key returns the same run instead of
                starting another; with a key, a start is also retried after a connection error.
            version: a version to pin; default the latest.

        Raises:
            InvalidParamsError: params that do not fit; ``problems`` lists every one.
            NotFoundError: no such workflow or version.
            ConflictError: the key was used for a different start.
        """
        return self._run(_api.start(workflow, params, idempotency_key, version))

    def start_many(self, workflow: str, params_list: Iterable[Mapping[str, Any]], *,
                   idempotency_keys: Sequence[str | None] | None = None, version: int | None = None,
                   return_exceptions: bool = False) -> list[Run | APIStatusError]:
        """Start one run per params with the batch endpoint (1,000 runs a request); on a server
        without it, one start per item.

        Parameters:
            idempotency_keys: one key (or None) per params, as for ``start``.
            return_exceptions: like ``asyncio.gather``: put each item's error in the list instead of
                raising ``BatchStartError``.

        Returns:
            One entry per params, in order: the ``Run`` (or, with ``return_exceptions``, the error).

        Raises:
            BatchStartError: some items could not be started; ``results`` has every outcome, so
                the runs that did start are not lost.
            ValueError: not as many idempotency keys as params.
        """
        items = _api.batch_items(params_list, idempotency_keys)
        results: list[Run | APIStatusError] = []
        for first in range(0, len(items), BATCH_LIMIT):
            results.extend(self._start_chunk(workflow, items[first:first + BATCH_LIMIT], version))
        if not return_exceptions and any(isinstance(r, Exception) for r in results):
            raise BatchStartError(results)
        return results

    def _start_chunk(self, workflow: str, chunk: Sequence[_api.BatchItem],
                     version: int | None) -> list[Run | APIStatusError]:
        refusal: APIStatusError | None = None
        if self._batch_supported is not False:
            try:
                answer = self._send(_api.start_batch(workflow, chunk, version))
            except PayloadTooLargeError:
                if len(chunk) == 1:
                    raise
                half = len(chunk) // 2  # over the API's 1 MiB: send it in two halves
                return (self._start_chunk(workflow, chunk[:half], version)
                        + self._start_chunk(workflow, chunk[half:], version))
            except APIStatusError as exc:
                if not _api.batch_unsupported(exc):
                    raise
                refusal = exc
            else:
                self._batch_supported = True
                return [r if isinstance(r, APIStatusError) else Run(r, self)
                        for r in _api.batch_results(answer, len(chunk))]
        results: list[Run | APIStatusError] = []
        for item in chunk:
            missing = next((r for r in results if isinstance(r, NotFoundError)), None)
            if missing is not None:  # no such workflow or version: the same answer for every item
                results.append(missing)
                continue
            try:
                results.append(self.start(workflow, item.params, idempotency_key=item.idempotency_key,
                                          version=version))
            except APIStatusError as exc:
                results.append(exc)
        if refusal is not None and (refusal.status_code == 405 or any(isinstance(r, Run) for r in results)):
            self._batch_supported = False  # the route is missing (not the workflow): stop asking
        return results

    # --- following runs -------------------------------------------------------------------------------

    def get(self, run: RunRef) -> Run:
        """The run with this id, every step and attempt.

        Raises:
            NotFoundError: no such run.
        """
        return Run(self._run_document(_run_id(run)), self)

    def list(self, *, workflow: str | None = None, status: str | None = None,
             since: dt.datetime | str | None = None, until: dt.datetime | str | None = None,
             page_size: int = 50, limit: int | None = None,
             search: Mapping[str, Any] | None = None) -> Iterator[Run]:
        """The runs, newest first, fetched a page at a time as the iteration goes on.

        Parameters:
            workflow: only this workflow's runs.
            status: only runs in this status.
            since, until: created at or after ``since`` and before ``until`` (a naive datetime is UTC).
            page_size: runs per request (1-500).
            limit: stop after this many runs; default all.
            search: business keys of the workflow's ``search`` clause, e.g. ``{"order": 4711}``;
                all must match (values compare as text: ``4711``, ``true``).
        """
        count = 0
        for page in self.list_pages(workflow=workflow, status=status, since=since, until=until,
                                    page_size=page_size if limit is None else max(1, min(page_size, limit)),
                                    search=search):
            for run in page:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield run

    def list_pages(self, *, workflow: str | None = None, status: str | None = None,
                   since: dt.datetime | str | None = None, until: dt.datetime | str | None = None,
                   page_size: int = 50, cursor: str | None = None,
                   search: Mapping[str, Any] | None = None) -> Iterator[Page[Run]]:
        """The pages of ``list``, each with its ``next_cursor`` (to resume a listing later)."""
        while True:
            answer = self._send(_api.list_runs(workflow=workflow, status=status, since=since, until=until,
                                               page_size=page_size, cursor=cursor, search=search))
            cursor = answer.get("next_cursor")
            yield Page([Run(doc, self) for doc in answer.get("runs", [])], cursor)
            if not cursor:
                return

    def wait(self, run: RunRef, timeout: float | None = None) -> Run:
        """Wait until the run is terminal (see ``Run.wait``)."""
        handle = run if isinstance(run, Run) else self.get(run)
        return handle.wait(timeout)

    def _wait(self, run: RunDocument, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else self._clock() + timeout
        document, polls = run.document, 0
        while document["status"] not in _api.TERMINAL_STATUSES:
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(RunDocument(document), float(timeout or 0))
            asked = self._clock()
            document = dict(self._send(_api.get_run(run.id, _api.hold_seconds(remaining))))
            if document["status"] in _api.TERMINAL_STATUSES:
                break
            # A server that does not hold answers at once: poll again after a growing pause.
            pause = _api.poll_delay(polls) - (self._clock() - asked)
            polls += 1
            if deadline is not None:
                pause = min(pause, deadline - self._clock())
            if pause > 0:
                self._sleep(pause)
        return document

    def logs(self, run: RunRef) -> builtins.list[dict[str, Any]]:
        """The log entries of the run's tasks, oldest first (``level``, ``message``, ``data`` ...)."""
        return list(self._send(_api.run_logs(_run_id(run)))["logs"])

    # --- acting on runs -------------------------------------------------------------------------------

    def cancel(self, run: RunRef) -> Run:
        """Cancel a run.

        Raises:
            IllegalTransitionError: the run has finished already.
        """
        return self._run(_api.run_command(_run_id(run), "cancel"))

    def retry(self, run: RunRef) -> Run:
        """Retry a failed run from its failed step.

        Raises:
            IllegalTransitionError: the run is not failed.
        """
        return self._run(_api.run_command(_run_id(run), "retry"))

    def compensate(self, run: RunRef) -> Run:
        """Compensate a run: undo its completed steps in reverse order.

        Raises:
            IllegalTransitionError: the run's status does not allow it.
        """
        return self._run(_api.run_command(_run_id(run), "compensate"))

    def approve(self, run: RunRef, step: str, approved: bool = True, *, comment: str | None = None,
                item: int | None = None) -> Run:
        """Answer a waiting ``approval`` step; ``approved=False`` rejects it (the step completes
        either way, with output ``{approved, by, comment}``).

        Parameters:
            item: answer one item of a fan-out approval; default every waiting item.

        Raises:
            NotFoundError: no such run, or no approval step of that name.
            ConflictError: the step is not waiting for an answer.
        """
        return self._run(_api.approve(_run_id(run), step, approved, comment, item))

    def reject(self, run: RunRef, step: str, *, comment: str | None = None, item: int | None = None) -> Run:
        """``approve(run, step, False, ...)``."""
        return self.approve(run, step, False, comment=comment, item=item)

    def health(self) -> dict[str, Any]:
        """``GET /api/health``: ``{"status": "ok"|"down", "checks": {...}}`` (a 503 is an answer)."""
        return dict(self._send(_api.health()))


class DeadLetters:
    """``client.dead_letters``: tasks that ran out of attempts."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, *, include_closed: bool = False, limit: int = 100) -> builtins.list[DeadLetter]:
        """The open dead letters, newest first (also the requeued and discarded ones with
        ``include_closed``)."""
        answer = self._client._send(_api.dead_letters(include_closed, limit))
        return [DeadLetter.from_json(d) for d in answer["dead_letters"]]

    def get(self, letter_id: str) -> DeadLetter:
        """One dead letter. Raises ``NotFoundError``."""
        return DeadLetter.from_json(self._client._send(_api.dead_letter(letter_id)))

    def requeue(self, letter: str | DeadLetter) -> DeadLetter:
        """Run the task again with fresh attempts. Raises ``ConflictError`` when already closed."""
        letter_id = letter.id if isinstance(letter, DeadLetter) else letter
        return DeadLetter.from_json(self._client._send(_api.dead_letter(letter_id, "requeue")))

    def discard(self, letter: str | DeadLetter) -> None:
        """Close the dead letter without running the task. Raises ``ConflictError`` when already closed."""
        letter_id = letter.id if isinstance(letter, DeadLetter) else letter
        self._client._send(_api.dead_letter(letter_id, "discard"))
