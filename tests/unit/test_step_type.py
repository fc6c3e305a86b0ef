"""Python step types without a broker: what ``@step_type`` declares, the config schema the compiler
gets, and how the worker's handler calls the function and turns its exceptions into failures."""

from __future__ import annotations

import asyncio
import time
import types
from typing import Any, Literal

import pytest

import dsl
from engine.core.contracts import TaskMessage
from engine.settings import Settings
from flow import NonRetryable, Retryable, StepType, step_type
from flow.steps import declared_in, json_schema, manifest
from workers.python_steps import handler_for
from workers.handler_api import HandlerError, InvalidInput, TaskContext


@step_type("billing.charge", config={"amount": int, "currency": str})
def charge(ctx: Any, amount: int, currency: str = "EUR") -> dict[str, Any]:
    """Charge a card."""
    ctx.logger.info("charging %s %s", amount, currency, customer="c-1")
    return {"charged": amount, "currency": currency, "key": ctx.idempotency_key, "attempt": ctx.attempt,
            "run": ctx.run_id, "step": ctx.step}


def task(payload: dict[str, Any], *, attempt: int = 1, timeout: float | None = None,
         task_type: str = "billing.charge") -> TaskContext:
    message = TaskMessage("t1", task_type, attempt, 1, payload, "key-t1-1", run_id="r1", step="pay", timeout=timeout)
    return TaskContext(message=message, settings=Settings(database_url="sqlite://", broker_url="memory://"),
                       payload=payload, deadline=None if timeout is None else time.monotonic() + timeout)


# --- declaring ----------------------------------------------------------------------------------------


def test_the_decorator_declares_without_registering_and_keeps_the_function_callable() -> None:
    assert isinstance(charge, StepType)
    assert (charge.name, charge.task_type, charge.required) == ("billing.charge", "billing.charge", {"amount"})
    assert charge.description == "Charge a card."
    assert charge.describe()["config_schema"] == {
        "type": "object", "properties": {"amount": {"type": "integer"}, "currency": {"type": "string"}},
        "additionalProperties": False, "required": ["amount"],
    }


def test_config_comes_from_the_annotations_when_not_given() -> None:
    @step_type("shop.ship", task_type="shipping")
    def ship(ctx: Any, lines: list[dict[str, Any]], carrier: Literal["dhl", "ups"] = "dhl",
             note: str | None = None) -> None: ...

    schema = ship.config_schema()
    assert ship.task_type == "shipping" and schema["required"] == ["lines"]
    assert schema["properties"] == {
        "lines": {"type": "array", "items": {"type": "object", "additionalProperties": {}}},
        "carrier": {"enum": ["dhl", "ups"]},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    }


@pytest.mark.parametrize(("name", "config", "message"), [
    ("charge", None, "use a dotted name"),
    ("billing.charge", {"amount": int, "cents": int}, "has no parameter for config cents"),
    ("billing.charge", {"currency": str}, "parameter amount of .* is not in config and has no default"),
])
def test_mistakes_in_a_declaration_are_reported_when_it_is_made(name: str, config: Any, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        step_type(name, config=config)(lambda ctx, amount, currency="EUR": None)


def test_a_function_without_a_context_parameter_is_refused() -> None:
    with pytest.raises(TypeError, match="must take the context as its first parameter"):
        step_type("a.b")(lambda *, x: None)


def test_json_schema_of_python_types() -> None:
    assert json_schema(float) == {"type": "number"}
    assert json_schema(bool) == {"type": "boolean"}
    assert json_schema(dict) == {"type": "object"}
    assert json_schema(list[int]) == {"type": "array", "items": {"type": "integer"}}
    assert json_schema(complex) == {}  # no JSON counterpart: not checked


def test_a_module_declares_its_step_types_and_the_manifest_lets_the_compiler_check_them() -> None:
    module = types.ModuleType("myapp_steps")
    module.charge, module.alias, module.other = charge, charge, 3  # type: ignore[attr-defined]
    assert declared_in(module) == [charge]

    source = ('flow 1\nworkflow pay() {\n  step a: billing.charge { amount: "ten", curency: "EUR" }\n'
              '  step b: billing.charge { currency: "EUR" }\n}\n')
    without = dsl.compile_source(source, "pay.flow")
    with_manifest = dsl.compile_source(source, "pay.flow", manifest(declared_in(module)))

    assert [d.code for d in without.diagnostics] == ["W505", "W505"]
    assert sorted(d.code for d in with_manifest.diagnostics) == ["E302", "E303", "E320"]


def test_the_manifest_refuses_two_functions_for_one_step_type() -> None:
    twin = step_type("billing.charge")(lambda ctx, amount: None)
    with pytest.raises(ValueError, match="declared twice"):
        manifest([charge, twin])


# --- running --------------------------------------------------------------------------------------------


def test_the_handler_passes_the_context_and_config_and_keeps_the_logs() -> None:
    context = task({"amount": 5})

    output = handler_for(charge)(context)

    assert output == {"charged": 5, "currency": "EUR", "key": "key-t1-1", "attempt": 1, "run": "r1", "step": "pay"}
    assert [(e["level"], e["message"], e["data"]) for e in context.logs] == [
        ("info", "charging 5 EUR", {"customer": "c-1"})]


def test_missing_or_unknown_config_fails_without_calling_the_function() -> None:
    called: list[int] = []
    step = step_type("a.b")(lambda ctx, x: called.append(x))

    with pytest.raises(InvalidInput, match="missing config x; unknown config y"):
        handler_for(step)(task({"y": 1}, task_type="a.b"))
    assert called == []


def test_retryable_carries_its_delay_and_non_retryable_is_final() -> None:
    @step_type("a.flaky")
    def flaky(ctx: Any, mode: str) -> None:
        if mode == "later":
            raise Retryable("rate limited", delay=30)
        raise NonRetryable("card declined")

    with pytest.raises(HandlerError) as later:
        handler_for(flaky)(task({"mode": "later"}, task_type="a.flaky"))
    with pytest.raises(HandlerError) as never:
        handler_for(flaky)(task({"mode": "never"}, task_type="a.flaky"))

    assert (later.value.failure.type, later.value.failure.retryable) == ("handler", True)
    assert later.value.failure.details["retry_after"] == 30.0
    assert "Retryable: rate limited" == later.value.failure.message and later.value.failure.traceback
    assert (never.value.failure.type, never.value.failure.retryable) == ("non_retryable", False)
    assert never.value.failure.details == {"exception": "flow.steps.NonRetryable"}


def test_any_other_exception_propagates_for_the_worker_to_record() -> None:
    step = step_type("a.bug")(lambda ctx: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        handler_for(step)(task({}, task_type="a.bug"))


def test_an_async_function_runs_and_is_cancelled_at_its_deadline() -> None:
    @step_type("a.slow")
    async def slow(ctx: Any, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    assert handler_for(slow)(task({"seconds": 0.01}, task_type="a.slow", timeout=5)) == "slept 0.01"
    started = time.monotonic()
    with pytest.raises(HandlerError) as caught:
        handler_for(slow)(task({"seconds": 30}, task_type="a.slow", timeout=0.2))
    assert caught.value.failure.type == "timeout" and time.monotonic() - started < 5


def test_the_context_knows_its_deadline() -> None:
    seen: dict[str, Any] = {}
    step = step_type("a.ctx")(lambda ctx: seen.update(remaining=ctx.remaining(), deadline=ctx.deadline))

    handler_for(step)(task({}, task_type="a.ctx", timeout=60))

    assert 50 < seen["remaining"] <= 60 and seen["deadline"].tzinfo is not None


def test_dotted_step_types_retry_handler_failures_unless_the_policy_lists_its_errors() -> None:
    source = ('flow 1\nworkflow w() {\n  step a: billing.charge { amount: 1 }\n  step b: transform { input: [1], map: item }\n'
              '  step c: billing.charge { amount: 1, retry { attempts: 2, errors: ["timeout"] } }\n}\n')
    steps = {s.name: s for s in dsl.compile_source(source, "w.flow", manifest([charge])).specs[0].steps}

    assert "handler" in steps["a"].retry.errors
    assert "handler" not in steps["b"].retry.errors  # built-in handlers classify their own failures
    assert steps["c"].retry.errors == ("timeout",)


def test_the_deploy_warning_names_each_step_type_no_worker_serves() -> None:
    from web.api.served import unserved

    source = ('flow 1\nworkflow w() {\n  step a: billing.charge { amount: 1 }\n  step b: mail.send { }\n'
              '  step c: transform { input: [1], map: item }\n}\n')
    specs = dsl.compile_source(source, "w.flow").specs

    [warning] = unserved(specs, "memory://", served_task_types={"billing.charge", "data_processing"})

    assert (warning["code"], warning["step_type"], warning["workflows"]) == ("W510", "mail.send", ["w"])
    assert unserved(specs, "memory://") == []  # nobody can tell on the in-memory broker of another process
