"""The data_processing handler: each operation, lambdas from the evaluator, limits and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.contracts import TaskMessage
from engine.settings import Settings
from workers.handlers import data
from workers.handler_api import HandlerError, TaskContext

SETTINGS = Settings(database_url="sqlite://", broker_url="memory://")


def item(*path: str) -> dict[str, Any]:
    node: dict[str, Any] = {"op": "name", "name": "item"}
    for key in path:
        node = {"op": "get", "obj": node, "key": key}
    return node


def lit(value: Any) -> dict[str, Any]:
    return {"op": "lit", "value": value}


def lam(body: dict[str, Any]) -> dict[str, Any]:
    """A deferred lambda as the coordinator sends it."""
    return {"$expr": {"op": "lambda", "param": "item", "body": body}}


def run(payload: dict[str, Any], secrets: dict[str, str] | None = None) -> Any:
    message = TaskMessage("t", "data_processing", 1, 1, payload, "k")
    return data.handle(TaskContext(message=message, settings=SETTINGS, payload=payload, secrets=secrets or {}))


def failure(payload: dict[str, Any]):
    with pytest.raises(HandlerError) as caught:
        run(payload)
    return caught.value.failure


ORDERS = [
    {"id": 1, "region": "eu", "amount": 10, "status": "paid"},
    {"id": 2, "region": "us", "amount": 5, "status": "open"},
    {"id": 3, "region": "eu", "amount": 7.5, "status": "paid"},
    {"id": 4, "region": "us", "amount": None, "status": "paid"},
]


def test_transform_maps_each_item() -> None:
    body = {"op": "binary", "operator": "*", "left": item("amount"), "right": lit(2)}
    out = run({"operation": "transform", "input": ORDERS[:3], "map": lam(body)})
    assert out == [20, 10, 15.0]


def test_transform_builds_objects() -> None:
    body = {"op": "object", "entries": [["key", item("id")], ["where", item("region")]]}
    out = run({"operation": "transform", "input": ORDERS[:2], "map": lam(body)})
    assert out == [{"key": 1, "where": "eu"}, {"key": 2, "where": "us"}]


def test_transform_error_names_the_item() -> None:
    body = {"op": "binary", "operator": "*", "left": item("region"), "right": lit(2)}
    f = failure({"operation": "transform", "input": ORDERS, "map": lam(body)})
    assert f.type == "invalid_input" and not f.retryable
    assert "item 0" in f.message and "map" in f.message


def test_lambda_can_use_a_deferred_secret() -> None:
    body = {"op": "binary", "operator": "+", "left": item("region"),
            "right": {"op": "get", "obj": {"op": "name", "name": "secrets"}, "key": "SUFFIX"}}
    out = run({"operation": "transform", "input": ORDERS[:1], "map": lam(body)}, secrets={"SUFFIX": "-x"})
    assert out == ["eu-x"]


def test_filter_keeps_matching_items_in_order() -> None:
    where = {"op": "binary", "operator": "==", "left": item("status"), "right": lit("paid")}
    out = run({"operation": "filter", "input": ORDERS, "where": lam(where)})
    assert [o["id"] for o in out] == [1, 3, 4]


SCHEMA = {
    "type": "object",
    "required": ["id", "amount"],
    "properties": {"id": {"type": "integer"}, "amount": {"type": "number", "minimum": 0}},
}


def test_validate_drop_splits_valid_and_invalid() -> None:
    out = run({"operation": "validate", "input": ORDERS, "schema": SCHEMA, "on_invalid": "drop"})
    assert [o["id"] for o in out["valid"]] == [1, 2, 3]
    assert out["invalid"] == [
        {"item": ORDERS[3], "errors": [{"path": "$.amount", "message": "None is not of type 'number'"}]}
    ]


def test_validate_fail_lists_the_first_errors_with_paths() -> None:
    bad = [{"id": "x", "amount": -1}, {"amount": 1}]
    f = failure({"operation": "validate", "input": bad, "schema": SCHEMA})
    assert f.type == "invalid_input" and not f.retryable
    assert "2 of 2 items are invalid" in f.message
    assert "item 0 at $.amount" in f.message and "item 0 at $.id" in f.message
    assert "'id' is a required property" in f.message
    assert f.details["errors"][0]["index"] == 0


def test_validate_all_valid_with_fail() -> None:
    out = run({"operation": "validate", "input": ORDERS[:3], "schema": SCHEMA, "on_invalid": "fail"})
    assert out == {"valid": ORDERS[:3], "invalid": []}


def test_validate_refuses_a_bad_schema() -> None:
    f = failure({"operation": "validate", "input": [], "schema": {"type": "nonsense"}})
    assert f.type == "invalid_input" and "schema" in f.message


def test_aggregate_groups_in_first_seen_order() -> None:
    metrics = {"total": "sum(amount)", "mean": "avg(amount)", "n": "count()", "priced": "count(amount)",
               "low": "min(amount)", "high": "max(amount)"}
    out = run({"operation": "aggregate", "input": ORDERS, "group_by": ["region"], "metrics": metrics})
    assert out == [
        {"region": "eu", "total": 17.5, "mean": 8.75, "n": 2, "priced": 2, "low": 7.5, "high": 10},
        {"region": "us", "total": 5, "mean": 5.0, "n": 2, "priced": 1, "low": 5, "high": 5},
    ]


def test_aggregate_by_two_fields_and_without_groups() -> None:
    out = run({"operation": "aggregate", "input": ORDERS, "group_by": ["region", "status"], "metrics": {"n": "count()"}})
    assert out == [
        {"region": "eu", "status": "paid", "n": 2},
        {"region": "us", "status": "open", "n": 1},
        {"region": "us", "status": "paid", "n": 1},
    ]
    assert run({"operation": "aggregate", "input": [], "metrics": {"n": "count()"}}) == [{"n": 0}]


@pytest.mark.parametrize("metric", ["median(amount)", "sum()", "sum(amount", 3])
def test_aggregate_refuses_unknown_metrics(metric: Any) -> None:
    f = failure({"operation": "aggregate", "input": ORDERS, "metrics": {"m": metric}})
    assert f.type == "invalid_input" and "sum(f)" in f.message


def test_aggregate_sum_of_text_is_invalid() -> None:
    f = failure({"operation": "aggregate", "input": ORDERS, "metrics": {"m": "sum(region)"}})
    assert "string" in f.message


def test_batch_splits_into_lists() -> None:
    assert run({"operation": "batch", "input": [1, 2, 3, 4, 5], "size": 2}) == [[1, 2], [3, 4], [5]]
    assert run({"operation": "batch", "input": [], "size": 3}) == []


@pytest.mark.parametrize("size", [0, -1, "2", True, 1.5, None])
def test_batch_needs_a_positive_size(size: Any) -> None:
    assert failure({"operation": "batch", "input": [1], "size": size}).type == "invalid_input"


def test_sort_by_field_stable_and_desc() -> None:
    out = run({"operation": "sort", "input": ORDERS, "by": "region"})
    assert [o["id"] for o in out] == [1, 3, 2, 4]
    out = run({"operation": "sort", "input": ORDERS, "by": "amount", "desc": True})
    assert [o["id"] for o in out] == [1, 3, 2, 4]  # null sorts first, so last when descending


def test_sort_by_lambda() -> None:
    by = lam({"op": "unary", "operator": "-", "arg": item("id")})
    assert [o["id"] for o in run({"operation": "sort", "input": ORDERS, "by": by})] == [4, 3, 2, 1]


def test_sort_mixed_types_has_a_total_order() -> None:
    out = run({"operation": "sort", "input": ["b", 2, None, True, [1], {"a": 1}, 1.5, "a"]})
    assert out == [None, True, 1.5, 2, "a", "b", [1], {"a": 1}]


def test_seed_free_form_operation_is_a_clear_failure() -> None:
    f = failure({"operation": "process_order", "orderId": "123"})
    assert f.type == "invalid_input" and not f.retryable
    assert "process_order" in f.message
    for name in ("transform", "filter", "validate", "aggregate", "batch", "sort"):
        assert name in f.message


def test_input_must_be_a_list() -> None:
    assert "must be a list" in failure({"operation": "batch", "input": {"a": 1}, "size": 1}).message


def test_input_over_one_mib_is_refused() -> None:
    big = ["x" * 1024] * 1100
    f = failure({"operation": "batch", "input": big, "size": 10})
    assert f.type == "invalid_input" and f.details["limit"] == 1 << 20


def test_output_over_one_mib_is_refused() -> None:
    grow = lam({"op": "binary", "operator": "+", "left": item(), "right": lit("y" * 400_000)})
    f = failure({"operation": "transform", "input": ["a" * 200_000, "b" * 200_000], "map": grow})
    assert "output" in f.message and f.details["limit"] == 1 << 20
