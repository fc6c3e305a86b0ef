"""Topological order and cycle detection over step dependencies (pure, iterative)."""

from __future__ import annotations

import heapq
from typing import Mapping, Sequence


def topo_order(names: Sequence[str], deps: Mapping[str, Sequence[str]]) -> list[str]:
    """``names`` ordered dependencies first, ties in the order given; steps in a cycle go last."""
    index = {name: i for i, name in enumerate(names)}
    waiting = {name: {d for d in deps.get(name, ()) if d in index} for name in names}
    users: dict[str, list[str]] = {name: [] for name in names}
    for name, ds in waiting.items():
        for d in ds:
            users[d].append(name)
    ready = [index[n] for n, ds in waiting.items() if not ds]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for user in users[name]:
            waiting[user].discard(name)
            if not waiting[user]:
                heapq.heappush(ready, index[user])
    placed = set(order)
    return order + [n for n in names if n not in placed]


def find_cycle(names: Sequence[str], deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One dependency cycle as a path ``[a, b, a]`` (a depends on b ...), or ``None``."""
    known = set(names)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in names:
        if state.get(root):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            name, i = stack.pop()
            if i == 0:
                state[name] = 1
                path.append(name)
            children = [d for d in deps.get(name, ()) if d in known]
            if i < len(children):
                stack.append((name, i + 1))
                child = children[i]
                if state.get(child) == 1:
                    return path[path.index(child):] + [child]
                if not state.get(child):
                    stack.append((child, 0))
            else:
                state[name] = 2
                path.pop()
    return None
