"""Draw a workflow's DAG as SVG (laid out here, in pure Python), Graphviz DOT or Mermaid.

Layout: a step's layer is the longest dependency path from a source; steps in a layer are ordered
by the mean position of their dependencies (a few barycenter sweeps), which removes most crossings
of the small graphs workflows are. ``on failure`` steps get their own lane under the main graph.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dsl.spec import StepSpec, WorkflowSpec

FORMATS = ("svg", "dot", "mermaid")

# Fill and stroke per status; the dashboard relies on the CSS classes `status-<name>` too.
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "completed": ("#d3f4dc", "#1f8a3b"),
    "failed": ("#fbd5d5", "#c62828"),
    "running": ("#d6e6fb", "#1e63c4"),
    "processing": ("#d6e6fb", "#1e63c4"),
    "retrying": ("#fff0c8", "#b7791f"),
    "pending": ("#ececec", "#777777"),
    "skipped": ("#f7f7f7", "#bbbbbb"),
    "cancelled": ("#f1f1f1", "#999999"),
    "compensated": ("#e7dcf7", "#6b3fa0"),
}
_DEFAULT_COLOURS = ("#ffffff", "#444444")

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN, LANE_GAP = 190, 56, 36, 60, 24, 56
MAX_LABEL = 26

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class _Box:
    step: StepSpec
    x: float
    y: float


def render(spec: WorkflowSpec, fmt: str, statuses: Mapping[str, str] | None = None) -> str:
    """Render ``spec`` as ``svg``, ``dot`` or ``mermaid``.

    Parameters:
        statuses: step name → status (``completed``, ``failed``, …) to colour the steps.
    Raises:
        ValueError: ``fmt`` is not one of ``FORMATS``.
    """
    statuses = statuses or {}
    if fmt == "svg":
        return _svg(spec, statuses)
    if fmt == "dot":
        return _dot(spec, statuses)
    if fmt == "mermaid":
        return _mermaid(spec, statuses)
    raise ValueError(f"unknown graph format {fmt!r}; use one of: {', '.join(FORMATS)}")


def badges(step: StepSpec) -> str:
    """The short marks of a step: ``?`` (when), ``×n`` (fan-out), ``!`` (allow_failure)."""
    marks = []
    if step.when is not None:
        marks.append("?")
    if step.for_each is not None:
        marks.append("×n")
    if step.allow_failure:
        marks.append("!")
    return " ".join(marks)


def _compensation(step: StepSpec) -> str | None:
    if step.compensate is None:
        return None
    return "undo: none" if step.compensate.is_none else f"undo: {step.compensate.type}"


def _edges(steps: Sequence[StepSpec]) -> list[tuple[str, str]]:
    names = {s.name for s in steps}
    return [(dep, s.name) for s in steps for dep in s.depends_on if dep in names]


# --- layout -------------------------------------------------------------------------------------

def layers(steps: Sequence[StepSpec]) -> list[list[StepSpec]]:
    """Steps grouped by longest path from a source, each layer ordered to reduce crossings."""
    by_name = {s.name: s for s in steps}
    depth: dict[str, int] = {}

    def layer_of(name: str, visiting: frozenset[str]) -> int:
        if name not in depth:
            deps = [d for d in by_name[name].depends_on if d in by_name and d not in visiting]
            inner = visiting | {name}
            depth[name] = 1 + max((layer_of(d, inner) for d in deps), default=-1)
        return depth[name]

    for step in steps:
        layer_of(step.name, frozenset())
    grouped: list[list[StepSpec]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for step in steps:
        grouped[depth[step.name]].append(step)
    position = {s.name: i for layer in grouped for i, s in enumerate(layer)}
    for _ in range(3):
        for layer in grouped[1:]:
            def barycenter(s: StepSpec) -> float:
                deps = [position[d] for d in s.depends_on if d in position]
                return sum(deps) / len(deps) if deps else position[s.name]

            layer.sort(key=barycenter)
            position.update({s.name: i for i, s in enumerate(layer)})
    return grouped


def _place(grouped: list[list[StepSpec]], top: float, width: float) -> list[_Box]:
    boxes = []
    for row, layer in enumerate(grouped):
        row_width = len(layer) * BOX_W + (len(layer) - 1) * GAP_X
        left = (width - row_width) / 2
        for col, step in enumerate(layer):
            boxes.append(_Box(step, left + col * (BOX_W + GAP_X), top + row * (BOX_H + GAP_Y)))
    return boxes


# --- SVG ----------------------------------------------------------------------------------------

def _x(text: str) -> str:
    """XML-escape ``text`` for element content and double-quoted attributes."""
    text = _XML_INVALID.sub("\ufffd", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _css() -> str:
    rules = [
        ".node rect.box{stroke-width:1.5}",
        ".node text{font:12px sans-serif;fill:#222}",
        ".node text.name{font-weight:bold;font-size:13px}",
        ".badge rect{fill:#fff;stroke:#6b3fa0;stroke-dasharray:3 2}",
        ".badge text{font:10px sans-serif;fill:#6b3fa0}",
        ".edge{fill:none;stroke:#888;stroke-width:1.3}",
        ".lane text{font:italic 12px sans-serif;fill:#c62828}",
        ".lane line{stroke:#c62828;stroke-dasharray:6 4}",
    ]
    for status, (fill, stroke) in {"": _DEFAULT_COLOURS, **STATUS_COLOURS}.items():
        selector = f".status-{status}" if status else ".node"
        rules.append(f"{selector} rect.box{{fill:{fill};stroke:{stroke}}}")
    return "".join(rules)


def _node_svg(box: _Box, status: str | None) -> str:
    step = box.step
    status_class = f" status-{re.sub(r'[^a-z_]', '', status.lower())}" if status else ""
    kind = step.type + (f"  {badges(step)}" if badges(step) else "")
    cx = box.x + BOX_W / 2
    parts = [
        f'<g class="node{status_class}" data-step="{_x(step.name)}">',
        f"<title>{_x(step.name)}: {_x(step.type)}{' (' + _x(status) + ')' if status else ''}</title>",
        f'<rect class="box" x="{box.x:.1f}" y="{box.y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="8"/>',
        f'<text class="name" x="{cx:.1f}" y="{box.y + 23:.1f}" text-anchor="middle">{_x(_short(step.name))}</text>',
        f'<text class="type" x="{cx:.1f}" y="{box.y + 42:.1f}" text-anchor="middle">{_x(_short(kind))}</text>',
    ]
    comp = _compensation(step)
    if comp:
        bx, by = box.x + BOX_W - 74, box.y - 9
        parts.append(
            f'<g class="badge"><rect x="{bx:.1f}" y="{by:.1f}" width="80" height="16" rx="4"/>'
            f'<text x="{bx + 40:.1f}" y="{by + 12:.1f}" text-anchor="middle">{_x(_short(comp))}</text></g>'
        )
    parts.append("</g>")
    return "".join(parts)


def _edge_svg(src: _Box, dst: _Box) -> str:
    x1, y1 = src.x + BOX_W / 2, src.y + BOX_H
    x2, y2 = dst.x + BOX_W / 2, dst.y - 2
    mid = (y1 + y2) / 2
    return (
        f'<path class="edge" data-from="{_x(src.step.name)}" data-to="{_x(dst.step.name)}" '
        f'd="M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}" '
        'marker-end="url(#arrow)"/>'
    )


def _svg(spec: WorkflowSpec, statuses: Mapping[str, str]) -> str:
    main, failure = layers(spec.steps), layers(spec.on_failure)
    widest = max((len(layer) for layer in main + failure), default=1)
    width = 2 * MARGIN + widest * BOX_W + (widest - 1) * GAP_X
    boxes = _place(main, MARGIN + 10, width)
    main_height = len(main) * (BOX_H + GAP_Y) - GAP_Y if main else 0
    lane_top = MARGIN + 10 + main_height + LANE_GAP
    failure_boxes = _place(failure, lane_top + 24, width)
    height = (lane_top + 24 + len(failure) * (BOX_H + GAP_Y) - GAP_Y if failure else lane_top - LANE_GAP)
    height += MARGIN
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow-graph" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{_x("workflow " + spec.name)}">',
        f"<title>{_x(spec.name)}</title>",
        f"<style>{_css()}</style>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#888"/></marker></defs>',
    ]
    for group, steps in ((boxes, spec.steps), (failure_boxes, spec.on_failure)):
        at = {b.step.name: b for b in group}
        out.extend(_edge_svg(at[a], at[b]) for a, b in _edges(steps))
        out.extend(_node_svg(b, statuses.get(b.step.name)) for b in group)
    if failure:
        y = lane_top - LANE_GAP / 2
        out.append(
            f'<g class="lane"><line x1="{MARGIN}" y1="{y:.1f}" x2="{width - MARGIN:.0f}" y2="{y:.1f}"/>'
            f'<text x="{MARGIN}" y="{y + 18:.1f}">on failure</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --- DOT and Mermaid ----------------------------------------------------------------------------

def _label(step: StepSpec) -> list[str]:
    lines = [step.name, step.type + (f" {badges(step)}" if badges(step) else "")]
    comp = _compensation(step)
    return lines + [comp] if comp else lines


def _dot_str(text: str) -> str:
    text = _XML_INVALID.sub("\ufffd", text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n").replace("\r", "") + '"'


def _dot(spec: WorkflowSpec, statuses: Mapping[str, str]) -> str:
    out = [f"digraph {_dot_str(spec.name)} {{", "  rankdir=TB;",
           '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="sans-serif"];']

    def nodes(steps: Sequence[StepSpec], indent: str) -> None:
        for step in steps:
            fill, stroke = STATUS_COLOURS.get(statuses.get(step.name, ""), _DEFAULT_COLOURS)
            style = ', style="rounded,filled,dashed"' if step.allow_failure else ""
            out.append(f'{indent}{_dot_str(step.name)} [label={_dot_str(chr(10).join(_label(step)))}, '
                       f'fillcolor="{fill}", color="{stroke}"{style}];')
        out.extend(f"{indent}{_dot_str(a)} -> {_dot_str(b)};" for a, b in _edges(steps))

    nodes(spec.steps, "  ")
    if spec.on_failure:
        out.append('  subgraph cluster_on_failure {\n    label="on failure"; style=dashed; color="#c62828";')
        nodes(spec.on_failure, "    ")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def _mermaid_text(text: str) -> str:
    text = _XML_INVALID.sub("\ufffd", text)
    for raw, entity in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, entity)
    return text.replace("\n", " ")


def _mermaid(spec: WorkflowSpec, statuses: Mapping[str, str]) -> str:
    ids = {s.name: f"s{i}" for i, s in enumerate(spec.steps + spec.on_failure)}
    out = ["flowchart TD"]

    def nodes(steps: Sequence[StepSpec], indent: str) -> None:
        for step in steps:
            label = "<br/>".join(_mermaid_text(line) for line in _label(step))
            out.append(f'{indent}{ids[step.name]}["{label}"]')
        out.extend(f"{indent}{ids[a]} --> {ids[b]}" for a, b in _edges(steps))

    nodes(spec.steps, "  ")
    if spec.on_failure:
        out.append('  subgraph on_failure ["on failure"]')
        nodes(spec.on_failure, "    ")
        out.append("  end")
    used = {statuses[n] for n in ids if statuses.get(n) in STATUS_COLOURS}
    for status in sorted(used):
        fill, stroke = STATUS_COLOURS[status]
        out.append(f"  classDef {status} fill:{fill},stroke:{stroke}")
    for name, node_id in ids.items():
        if statuses.get(name) in used:
            out.append(f"  class {node_id} {statuses[name]}")
    return "\n".join(out) + "\n"
