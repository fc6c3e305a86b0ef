"""The task API's JSON workflow definitions compile to specs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dsl.task_definitions import TaskDefinitionError, compile_task_definition
from dsl.spec import Retry, WorkflowSpec

# The "Order Processing Workflow" of the original task API's README, verbatim.
ORDER_PROCESSING: dict[str, Any] = {
    "name": "Order Processing Workflow",
    "definition": {
        "initialTask": {
            "type": "http_request",
            "payload": {"method": "POST", "url": "/api/orders/validate"},
        },
        "transitions": {
            "http_request": {"type": "data_processing", "payload": {"operation": "process_order"}},
        },
    },
}


def test_order_processing_example() -> None:
    spec = compile_task_definition(ORDER_PROCESSING)

    assert spec.name == "Order Processing Workflow"
    assert [s.name for s in spec.steps] == ["http_request", "data_processing"]
    first, second = spec.steps
    assert (first.type, first.task_type, first.depends_on) == ("http", "http_request", ())
    assert first.config == {
        "method": {"op": "lit", "value": "POST"},
        "url": {"op": "lit", "value": "/api/orders/validate"},
    }
    assert (second.type, second.task_type) == ("data_processing", "data_processing")
    assert second.depends_on == ("http_request",)
    assert second.config == {"operation": {"op": "lit", "value": "process_order"}}
    assert first.retry == Retry()


def test_the_shipped_json_example_is_the_readme_example() -> None:
    path = Path(__file__).parents[2] / "workflows" / "order_processing.json"
    assert json.loads(path.read_text()) == ORDER_PROCESSING


def test_spec_survives_json() -> None:
    spec = compile_task_definition(ORDER_PROCESSING)
    assert WorkflowSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_longer_chain_with_compensation_and_retries() -> None:
    definition = {
        "name": "chain",
        "definition": {
            "initialTask": {"type": "http_request", "payload": {"url": "https://a.example/x"}},
            "transitions": {
                "http_request": {"type": "data_processing", "payload": {"operation": "sum"}, "maxRetries": 0},
                "data_processing": {"type": "compensation", "payload": {"undo": ["x", 1]}},
                "unused": {"type": "data_processing"},
            },
        },
    }
    spec = compile_task_definition(definition)
    assert [(s.name, s.depends_on) for s in spec.steps] == [
        ("http_request", ()),
        ("data_processing", ("http_request",)),
        ("compensation", ("data_processing",)),
    ]
    assert spec.steps[1].retry.attempts == 1
    assert spec.steps[2].config == {"undo": {"op": "lit", "value": ["x", 1]}}


def test_a_single_task_without_transitions() -> None:
    spec = compile_task_definition({"name": "one", "definition": {"initialTask": {"type": "data_processing"}}})
    assert [(s.name, s.config) for s in spec.steps] == [("data_processing", {})]


def test_cycles_are_errors_naming_the_transition() -> None:
    definition = {
        "name": "loop",
        "definition": {
            "initialTask": {"type": "http_request", "payload": {"url": "https://a.example"}},
            "transitions": {
                "http_request": {"type": "data_processing"},
                "data_processing": {"type": "http_request", "payload": {"url": "https://b.example"}},
            },
        },
    }
    with pytest.raises(TaskDefinitionError) as info:
        compile_task_definition(definition)
    assert info.value.path == "$.definition.transitions.http_request"
    assert "http_request -> data_processing -> http_request" in str(info.value)


def _broken(edit: Any) -> dict[str, Any]:
    definition = copy.deepcopy(ORDER_PROCESSING)
    edit(definition)
    return definition


@pytest.mark.parametrize(
    "definition, path, words",
    [
        ([], "$", "is not of type 'object'"),
        (_broken(lambda d: d.pop("name")), "$", "'name' is a required property"),
        (_broken(lambda d: d.update(name="")), "$.name", "should be non-empty"),
        (_broken(lambda d: d["definition"].pop("initialTask")), "$.definition", "'initialTask' is a required"),
        (_broken(lambda d: d["definition"]["initialTask"].update(type=3)), "$.definition.initialTask.type",
         "is not of type 'string'"),
        (_broken(lambda d: d["definition"]["initialTask"].update(type="x y")), "$.definition.initialTask.type",
         "does not match"),
        (_broken(lambda d: d["definition"]["initialTask"].update(payload=[1])),
         "$.definition.initialTask.payload", "is not of type 'object'"),
        (_broken(lambda d: d["definition"]["transitions"]["http_request"].pop("type")),
         "$.definition.transitions.http_request", "'type' is a required property"),
        (_broken(lambda d: d["definition"]["initialTask"]["payload"].pop("url")),
         "$.definition.initialTask.payload", "needs a 'url'"),
        (_broken(lambda d: d["definition"]["initialTask"]["payload"].update(verb="GET")),
         "$.definition.initialTask.payload", "unknown http_request payload key 'verb'"),
    ],
)
def test_invalid_definitions_name_the_json_path(definition: Any, path: str, words: str) -> None:
    with pytest.raises(TaskDefinitionError) as info:
        compile_task_definition(definition)
    assert info.value.path == path
    assert words in str(info.value)
    assert str(info.value).startswith(f"{path}: ")
