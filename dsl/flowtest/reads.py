"""Which fields of each step's output a workflow reads (pure; over the spec's expression trees).

``steps.charge.output.body.id`` read anywhere in the workflow, or ``self.output.body.id`` in
charge's own `compensate`, is the read ``(charge, ("body", "id"))``: what a mock of charge must
give. Reads through computed keys stop at the computed key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dsl.spec import StepSpec, WorkflowSpec

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Read:
    step: str  # whose output is read
    path: Path  # the keys read below the output
    reader: str  # who reads it: a step's name, or "the workflow's output"
    # Through `self.output` (a compensation): a fan-out step's item output, not the list of them.
    own: bool = False


def output_reads(spec: WorkflowSpec) -> list[Read]:
    """Every read of a step's output in ``spec`` (the longest chain of each expression)."""
    found: list[Read] = []
    for step in (*spec.steps, *spec.on_failure):
        found.extend(_step_reads(step))
    if spec.output is not None:
        found.extend(Read(s, p, "the workflow's output") for s, p, _ in _chains(spec.output, None))
    return found


def _step_reads(step: StepSpec) -> Iterator[Read]:
    trees: list[Any] = [*step.config.values(), step.when]
    if step.for_each is not None:
        trees += [step.for_each.items, step.for_each.where, step.for_each.concurrency]
    for tree in trees:
        for read_step, path, _ in _chains(tree, None):
            yield Read(read_step, path, f"step `{step.name}`")
    if step.compensate is not None:
        for tree in step.compensate.config.values():
            for read_step, path, own in _chains(tree, step.name):
                yield Read(read_step, path, f"the compensation of `{step.name}`", own)


def _chains(tree: Any, self_step: str | None) -> Iterator[tuple[str, Path, bool]]:
    """``(step, path)`` of each maximal member chain below `steps.X.output` (or `self.output`)."""
    if isinstance(tree, list):
        for element in tree:
            yield from _chains(element, self_step)
        return
    if not isinstance(tree, dict):
        return
    chain = _chain(tree)
    if chain is not None:
        root, keys = chain
        if root == "steps" and len(keys) >= 2 and keys[1] == "output" and isinstance(keys[0], str):
            yield keys[0], keys[2:], False
            return
        if root == "self" and self_step is not None and keys[:1] == ("output",):
            yield self_step, keys[1:], True
            return
    for value in tree.values():
        if isinstance(value, (dict, list)):
            yield from _chains(value, self_step)


def _chain(tree: dict[str, Any]) -> tuple[str, Path] | None:
    """``name.k1[k2]...`` as ``(name, (k1, k2, ...))`` when every key is a constant."""
    keys: list[str | int] = []
    node = tree
    while True:
        op = node.get("op")
        if op == "get":
            keys.append(node["key"])
            node = node["obj"]
        elif op == "index" and isinstance(node.get("index"), dict) and node["index"].get("op") == "lit" \
                and isinstance(node["index"].get("value"), (str, int)):
            keys.append(node["index"]["value"])
            node = node["obj"]
        elif op == "name":
            return node["name"], tuple(reversed(keys))
        else:
            return None
