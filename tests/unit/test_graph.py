"""DAG rendering: SVG is well-formed and complete, DOT and Mermaid have the expected shape."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from dsl.graph import layers, render
from dsl.spec import Compensation, ForEach, StepSpec, WorkflowSpec

SVG = "{http://www.w3.org/2000/svg}"
LIT = {"op": "lit", "value": True}


def step(name: str, *deps: str, **kw: object) -> StepSpec:
    return StepSpec(name=name, type=str(kw.pop("type", "http")), task_type="http_request",
                    depends_on=tuple(deps), **kw)  # type: ignore[arg-type]


SAGA = WorkflowSpec(
    name="order_saga",
    steps=(
        step("validate", compensate=Compensation(none_reason="read-only")),
        step("totals", type="aggregate"),
        step("review", "validate", when=LIT),
        step("charge", "review", compensate=Compensation(type="http", task_type="http_request")),
        step("reserve", "review", for_each=ForEach("line", {"op": "name", "name": "params"})),
        step("ship", "charge", "reserve", allow_failure=True),
    ),
    on_failure=(step("alert"), step("page", "alert")),
)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_svg_is_well_formed_and_has_every_step() -> None:
    root = parse(render(SAGA, "svg"))
    assert root.tag == f"{SVG}svg"
    nodes = root.findall(f".//{SVG}g[@class]")
    steps = {g.get("data-step") for g in nodes if "node" in g.get("class", "").split()}
    assert steps == {s.name for s in SAGA.steps + SAGA.on_failure}
    edges = root.findall(f".//{SVG}path[@class='edge']")
    assert len(edges) == 5 + 1  # sum of depends_on, main and on-failure
    assert {(e.get("data-from"), e.get("data-to")) for e in edges} >= {("charge", "ship"), ("alert", "page")}


def test_svg_marks_fan_out_conditions_compensations_and_the_failure_lane() -> None:
    svg = render(SAGA, "svg")
    root = parse(svg)
    texts = {g.get("data-step"): " ".join(t.text or "" for t in g.iter(f"{SVG}text"))
             for g in root.iter(f"{SVG}g") if g.get("data-step")}
    assert "×n" in texts["reserve"]
    assert "?" in texts["review"]
    assert "undo: http" in texts["charge"]
    assert "undo: none" in texts["validate"]
    assert "on failure" in svg


def test_failure_lane_is_below_the_main_graph() -> None:
    root = parse(render(SAGA, "svg"))
    y = {g.get("data-step"): float(g.find(f"{SVG}rect").get("y")) for g in root.iter(f"{SVG}g") if g.get("data-step")}
    assert min(y["alert"], y["page"]) > max(y[s.name] for s in SAGA.steps)


def test_layers_follow_the_longest_path() -> None:
    names = [[s.name for s in layer] for layer in layers(SAGA.steps)]
    assert names[0] == ["validate", "totals"]
    assert names[1] == ["review"]
    assert sorted(names[2]) == ["charge", "reserve"]
    assert names[3] == ["ship"]


def test_barycenter_ordering_removes_a_crossing() -> None:
    steps = (step("a"), step("b"), step("from_b", "b"), step("from_a", "a"))
    assert [s.name for s in layers(steps)[1]] == ["from_a", "from_b"]


def test_statuses_colour_nodes_with_css_classes() -> None:
    statuses = {"validate": "completed", "charge": "failed", "reserve": "running",
                "ship": "pending", "review": "skipped", "totals": "compensated"}
    root = parse(render(SAGA, "svg", statuses=statuses))
    classes = {g.get("data-step"): g.get("class") for g in root.iter(f"{SVG}g") if g.get("data-step")}
    for name, status in statuses.items():
        assert classes[name] == f"node status-{status}"
    assert classes["alert"] == "node"
    style = root.find(f"{SVG}style").text or ""
    assert ".status-completed rect.box{fill:#d3f4dc" in style
    assert ".status-failed rect.box" in style and ".status-compensated rect.box" in style


HOSTILE = '<script>alert("x")</script>&\x01\'"]]>'


def test_hostile_names_are_escaped_everywhere() -> None:
    spec = WorkflowSpec(name=HOSTILE, steps=(step(HOSTILE, type="acme.<b>"), step("next", HOSTILE)))
    svg = render(spec, "svg", statuses={HOSTILE: 'failed" onload="x'})
    root = parse(svg)
    assert "<script>" not in svg
    names = [g.get("data-step") for g in root.iter(f"{SVG}g") if g.get("data-step")]
    assert names[0].startswith('<script>alert("x")</script>&')
    failed = [g for g in root.iter(f"{SVG}g") if g.get("data-step") == names[0]][0]
    assert failed.get("class") == "node status-failedonloadx"

    dot = render(spec, "dot")
    assert '\\"x\\"' in dot and "\x01" not in dot
    mermaid = render(spec, "mermaid")
    assert "<script>" not in mermaid and '("x")' not in mermaid and "#quot;" in mermaid


def test_dot_shape() -> None:
    dot = render(SAGA, "dot", statuses={"ship": "failed"})
    assert dot.startswith('digraph "order_saga" {') and dot.rstrip().endswith("}")
    assert len(re.findall(r'^\s*"[^"]+" -> "[^"]+";$', dot, re.M)) == 6
    assert "subgraph cluster_on_failure" in dot
    assert re.search(r'"ship" \[label="ship\\nhttp !", fillcolor="#fbd5d5"', dot)
    assert dot.count("{") == dot.count("}")


def test_mermaid_shape() -> None:
    text = render(SAGA, "mermaid", statuses={"validate": "completed"})
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert len([line for line in lines if "-->" in line]) == 6
    assert 's4["reserve<br/>http ×n"]' in text
    assert 'subgraph on_failure ["on failure"]' in text and "  end" in lines
    assert "classDef completed" in text and "class s0 completed" in text


def test_an_empty_workflow_renders() -> None:
    spec = WorkflowSpec(name="empty", steps=())
    parse(render(spec, "svg"))
    assert render(spec, "mermaid") == "flowchart TD\n"


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="use one of: svg, dot, mermaid"):
        render(SAGA, "png")
