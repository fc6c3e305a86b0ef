"""``AsyncClient``: the asyncio twin of ``flow.Client``, method for method.

    async with AsyncClient() as client:
        run = await client.start("hello", {"name": "Ada"})
        print(await run.result(timeout=60))

Requests, retry rules and answers come from ``flow._api``, as for the sync client; only the sending
(``httpx.AsyncClient``) and the sleeping (``asyncio.sleep``) differ.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import os
import time
import warnings
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Awaitable, Callable

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
from flow.runs import AsyncRun, RunDocument

__all__ = ["AsyncClient", "AsyncDeadLetters"]

RunRef = str | RunDocument


def _run_id(run: RunRef) -> str:
    return run.id if isinstance(run, RunDocument) else str(run)


class AsyncClient:
    """An asyncio client of one Flow server; the parameters are those of ``flow.Client`` (with an
    ``httpx.AsyncBaseTransport``). Use ``async with``, or ``await aclose()``."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 10.0,
                 retries: int | Retries = 3, headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = _api.base_url(url)
        self.retries = retries if isinstance(retries, Retries) else Retries(attempts=max(1, retries))
        all_headers = {"Accept": "application/json", "User-Agent": "flow-client", **(headers or {})}
        token = _api.api_token(token)
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=all_headers,
                                       transport=transport)
        self.dead_letters = AsyncDeadLetters(self)
        self._batch_supported: bool | None = None
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._clock: Callable[[], float] = time.monotonic

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncClient {self.base_url}>"

    async def _send(self, call: Call) -> Any:
        attempts = self.retries.attempts if call.retry_safe else 1
        for attempt in range(1, attempts + 1):
            try:
                response = await self._http.request(
                    call.method, call.path, params=call.params, json=call.json, headers=call.headers,
                    timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT)
            except httpx.TransportError as exc:
                if attempt < attempts:
                    await self._sleep(self.retries.delay(attempt))
                    continue
                raise APIConnectionError(f"{call.method} {self.base_url}{call.path}: {exc or type(exc).__name__}",
                                         method=call.method, url=self.base_url + call.path) from exc
            status = response.status_code
            if status == 503 and attempt < attempts and status not in call.answers:
                await self._sleep(self.retries.delay(attempt))
                continue
            if status not in call.answers:
                _api.raise_for_answer(status, response.text, response.headers)
            return _api.decode(response.text)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run(self, call: Call) -> AsyncRun:
        return AsyncRun(await self._send(call), self)

    async def _run_document(self, run_id: str) -> dict[str, Any]:
        return dict(await self._send(_api.get_run(run_id)))

    async def deploy(self, path_or_source: str | os.PathLike[str], *, filename: str | None = None,
                     step_types: Any = None) -> builtins.list[DeployedVersion]:
        """See ``Client.deploy``."""
        answer = await self._send(_api.deploy(path_or_source, filename, _api.step_types_manifest(step_types)))
        for message in _api.deploy_warnings(answer):
            warnings.warn(message, NoWorkerWarning, stacklevel=2)
        return [DeployedVersion.from_json(v) for v in answer["versions"]]

    async def check(self, source: str, *, filename: str | None = None) -> dict[str, Any]:
        """See ``Client.check``."""
        return dict(await self._send(_api.check(source, filename)))

    async def start(self, workflow: str, params: Mapping[str, Any] | None = None, *,
                    idempotency_key: str | None = None, version: int | None = None) -> AsyncRun:
        """See ``Client.start``."""
        return await self._run(_api.start(workflow, params, idempotency_key, version))

    async def start_many(self, workflow: str, params_list: Iterable[Mapping[str, Any]], *,
                         idempotency_keys: Sequence[str | None] | None = None, version: int | None = None,
                         return_exceptions: bool = False) -> builtins.list[AsyncRun | APIStatusError]:
        """See ``Client.start_many``."""
        items = _api.batch_items(params_list, idempotency_keys)
        results: builtins.list[AsyncRun | APIStatusError] = []
        for first in range(0, len(items), BATCH_LIMIT):
            results.extend(await self._start_chunk(workflow, items[first:first + BATCH_LIMIT], version))
        if not return_exceptions and any(isinstance(r, Exception) for r in results):
            raise BatchStartError(results)
        return results

    async def _start_chunk(self, workflow: str, chunk: Sequence[_api.BatchItem],
                           version: int | None) -> builtins.list[AsyncRun | APIStatusError]:
        refusal: APIStatusError | None = None
        if self._batch_supported is not False:
            try:
                answer = await self._send(_api.start_batch(workflow, chunk, version))
            except PayloadTooLargeError:
                if len(chunk) == 1:
                    raise
                half = len(chunk) // 2
                return (await self._start_chunk(workflow, chunk[:half], version)
                        + await self._start_chunk(workflow, chunk[half:], version))
            except APIStatusError as exc:
                if not _api.batch_unsupported(exc):
                    raise
                refusal = exc
            else:
                self._batch_supported = True
                return [r if isinstance(r, APIStatusError) else AsyncRun(r, self)
                        for r in _api.batch_results(answer, len(chunk))]
        results: builtins.list[AsyncRun | APIStatusError] = []
        for item in chunk:
            missing = next((r for r in results if isinstance(r, NotFoundError)), None)
            if missing is not None:  # no such workflow or version: the same answer for every item
                results.append(missing)
                continue
            try:
                results.append(await self.start(workflow, item.params, idempotency_key=item.idempotency_key,
                                                version=version))
            except APIStatusError as exc:
                results.append(exc)
        if refusal is not None and (refusal.status_code == 405 or any(isinstance(r, AsyncRun) for r in results)):
            self._batch_supported = False
        return results

    async def get(self, run: RunRef) -> AsyncRun:
        """See ``Client.get``."""
        return AsyncRun(await self._run_document(_run_id(run)), self)

    async def list(self, *, workflow: str | None = None, status: str | None = None,
                   since: dt.datetime | str | None = None, until: dt.datetime | str | None = None,
                   page_size: int = 50, limit: int | None = None,
                   search: Mapping[str, Any] | None = None) -> AsyncIterator[AsyncRun]:
        """See ``Client.list``: ``async for run in client.list(...)``."""
        count = 0
        async for page in self.list_pages(workflow=workflow, status=status, since=since, until=until,
                                          page_size=page_size if limit is None else max(1, min(page_size, limit)),
                                    search=search):
            for run in page:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield run

    async def list_pages(self, *, workflow: str | None = None, status: str | None = None,
                         since: dt.datetime | str | None = None, until: dt.datetime | str | None = None,
                         page_size: int = 50, cursor: str | None = None,
                         search: Mapping[str, Any] | None = None) -> AsyncIterator[Page[AsyncRun]]:
        """See ``Client.list_pages``."""
        while True:
            answer = await self._send(_api.list_runs(workflow=workflow, status=status, since=since,
                                                     until=until, page_size=page_size, cursor=cursor,
                                                     search=search))
            cursor = answer.get("next_cursor")
            yield Page([AsyncRun(doc, self) for doc in answer.get("runs", [])], cursor)
            if not cursor:
                return

    async def wait(self, run: RunRef, timeout: float | None = None) -> AsyncRun:
        """See ``Run.wait``."""
        handle = run if isinstance(run, AsyncRun) else await self.get(run)
        return await handle.wait(timeout)

    async def _wait(self, run: RunDocument, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else self._clock() + timeout
        document, polls = run.document, 0
        while document["status"] not in _api.TERMINAL_STATUSES:
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(RunDocument(document), float(timeout or 0))
            asked = self._clock()
            document = dict(await self._send(_api.get_run(run.id, _api.hold_seconds(remaining))))
            if document["status"] in _api.TERMINAL_STATUSES:
                break
            pause = _api.poll_delay(polls) - (self._clock() - asked)
            polls += 1
            if deadline is not None:
                pause = min(pause, deadline - self._clock())
            if pause > 0:
                await self._sleep(pause)
        return document

    async def logs(self, run: RunRef) -> builtins.list[dict[str, Any]]:
        """See ``Client.logs``."""
        return builtins.list((await self._send(_api.run_logs(_run_id(run))))["logs"])

    async def cancel(self, run: RunRef) -> AsyncRun:
        """See ``Client.cancel``."""
        return await self._run(_api.run_command(_run_id(run), "cancel"))

    async def retry(self, run: RunRef) -> AsyncRun:
        """See ``Client.retry``."""
        return await self._run(_api.run_command(_run_id(run), "retry"))

    async def compensate(self, run: RunRef) -> AsyncRun:
        """See ``Client.compensate``."""
        return await self._run(_api.run_command(_run_id(run), "compensate"))

    async def approve(self, run: RunRef, step: str, approved: bool = True, *, comment: str | None = None,
                      item: int | None = None) -> AsyncRun:
        """See ``Client.approve``."""
        return await self._run(_api.approve(_run_id(run), step, approved, comment, item))

    async def reject(self, run: RunRef, step: str, *, comment: str | None = None,
                     item: int | None = None) -> AsyncRun:
        """See ``Client.reject``."""
        return await self.approve(run, step, False, comment=comment, item=item)

    async def health(self) -> dict[str, Any]:
        """See ``Client.health``."""
        return dict(await self._send(_api.health()))


class AsyncDeadLetters:
    """``client.dead_letters`` of an ``AsyncClient``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self, *, include_closed: bool = False, limit: int = 100) -> builtins.list[DeadLetter]:
        answer = await self._client._send(_api.dead_letters(include_closed, limit))
        return [DeadLetter.from_json(d) for d in answer["dead_letters"]]

    async def get(self, letter_id: str) -> DeadLetter:
        return DeadLetter.from_json(await self._client._send(_api.dead_letter(letter_id)))

    async def requeue(self, letter: str | DeadLetter) -> DeadLetter:
        letter_id = letter.id if isinstance(letter, DeadLetter) else letter
        return DeadLetter.from_json(await self._client._send(_api.dead_letter(letter_id, "requeue")))

    async def discard(self, letter: str | DeadLetter) -> None:
        letter_id = letter.id if isinstance(letter, DeadLetter) else letter
        await self._client._send(_api.dead_letter(letter_id, "discard"))
