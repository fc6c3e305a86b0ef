"""Flow from Python code: the client of the JSON API, and step types written as Python functions.

    from flow import Client

    with Client() as client:                     # FLOW_URL / FLOW_API_TOKEN
        client.deploy("workflows/hello.flow")
        run = client.start("hello", {"name": "Ada"})
        print(run.result(timeout=60))

``AsyncClient`` is the asyncio twin; ``@step_type`` declares a step type implemented by a function
(run by ``flow worker --import MODULE``). See ``docs/client.md`` and ``docs/python-steps.md``.

Importing ``flow`` loads httpx and nothing of the server (no Flask, SQLAlchemy or kombu). The
``flow`` command (``flow.cli``) also lives here, above the engine, the workers and the web app, which
it composes; nothing below imports this package.
"""

from flow._api import Retries
from flow.async_client import AsyncClient
from flow.client import Client
from flow.errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    BatchStartError,
    CompileError,
    ConflictError,
    FlowError,
    IllegalTransitionError,
    InvalidParamsError,
    NoWorkerWarning,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RunFailedError,
    ServerError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    WaitTimeoutError,
)
from flow.records import DeadLetter, DeployedVersion, Page
from flow.runs import AsyncRun, Run, RunDocument
from flow.steps import NonRetryable, Retryable, StepContext, StepType, step_type

__all__ = [
    "Client", "AsyncClient", "Run", "AsyncRun", "RunDocument", "DeployedVersion", "DeadLetter", "Page",
    "Retries", "step_type", "StepType", "StepContext", "Retryable", "NonRetryable",
    "FlowError", "APIConnectionError", "APIStatusError", "BadRequestError", "AuthenticationError",
    "PermissionDeniedError", "NotFoundError", "ConflictError", "IllegalTransitionError",
    "PayloadTooLargeError", "UnprocessableEntityError", "InvalidParamsError", "CompileError",
    "ServerError", "ServiceUnavailableError", "RunFailedError", "WaitTimeoutError", "BatchStartError",
    "NoWorkerWarning",
]
