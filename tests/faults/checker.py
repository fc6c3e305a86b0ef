"""One checker for every fault scenario: reads the database and the sink, reports the figures.

- ``lost``: runs not in a terminal status after the fault (and the recovery wait);
- ``double_completions``: a task completed more than once (two "attempt N completed" log lines,
  or two task rows for one step/item of a run);
- ``replays``: requests the sink saw again under a key it had already answered (at-least-once
  execution, harmless: the target answers from its cache);
- ``double_effects``: one step of one run had its effect twice, under *different* keys (the real
  double effect the idempotency keys exist to prevent);
- ``illegal``: broken invariants of the state machine (a terminal run with a task in flight, a
  completed run with a step not completed, a completed task without finished_seq, a dead letter
  whose task is not failed, a chain step whose effect came before its dependency's, messages
  left in the outbox once everything is quiet);
- ``recovery_s``: seconds from the end of the fault until every run was terminal.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

TERMINAL = {"completed", "failed", "cancelled", "compensated", "compensation_failed"}


@dataclass
class Report:
    scenario: str
    runs: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    unexpected: int = 0
    double_completions: int = 0
    replays: int = 0
    double_effects: int = 0
    illegal: list[str] = field(default_factory=list)
    recovery_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (f"[{self.scenario}] runs={self.runs} statuses={dict(self.statuses)} lost={self.lost} "
                f"unexpected={self.unexpected} double_completions={self.double_completions} "
                f"replays={self.replays} double_effects={self.double_effects} "
                f"illegal={len(self.illegal)} recovery={self.recovery_s:.2f}s {extra}").rstrip()

    def assert_clean(self) -> None:
        problems = []
        if self.lost:
            problems.append(f"{self.lost} runs lost")
        if self.unexpected:
            problems.append(f"{self.unexpected} runs ended in an unexpected status")
        if self.double_completions:
            problems.append(f"{self.double_completions} double completions")
        if self.double_effects:
            problems.append(f"{self.double_effects} double effects")
        if self.illegal:
            problems.append(f"illegal: {self.illegal[:5]}")
        assert not problems, f"{self.line()}\n" + "\n".join(problems)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(
    engine: sa.Engine,
    sink: Any,
    run_ids: list[str],
    scenario: str,
    *,
    expected: set[str] | frozenset[str] = frozenset({"completed"}),
    recovery_s: float = 0.0,
    chain_paths: tuple[str, ...] = (),
    quiet: bool = True,
) -> Report:
    """The figures of ``run_ids``; ``chain_paths`` are the sink paths of a chain, in order."""
    report = Report(scenario, runs=len(run_ids), recovery_s=recovery_s)
    ids = list(run_ids)
    with engine.connect() as conn:
        runs = {r.id: dict(r._mapping) for r in conn.execute(
            sa.text("SELECT id, status FROM runs WHERE id = ANY(:ids)"), {"ids": ids})}
        tasks = [dict(r._mapping) for r in conn.execute(sa.text(
            "SELECT id, run_id, kind, step, item, status, attempt, finished_seq, finished_at "
            "FROM tasks WHERE run_id = ANY(:ids)"), {"ids": ids})]
        completions = conn.execute(sa.text(
            "SELECT task_id, attempt, count(*) AS n FROM task_logs WHERE run_id = ANY(:ids) "
            "AND message LIKE 'attempt % completed' GROUP BY task_id, attempt"), {"ids": ids}).all()
        letters = conn.execute(sa.text(
            "SELECT d.task_id, t.status FROM dead_letters d JOIN tasks t ON t.id = d.task_id "
            "WHERE d.run_id = ANY(:ids) AND d.requeued_at IS NULL"), {"ids": ids}).all()
        outbox = conn.execute(sa.text("SELECT count(*) FROM outbox")).scalar_one()
    report.statuses = dict(Counter(r["status"] for r in runs.values()))
    report.lost = sum(1 for r in ids if runs.get(r, {}).get("status") not in TERMINAL)
    report.unexpected = sum(1 for r in ids if runs.get(r, {}).get("status") in TERMINAL - set(expected))
    # Double completions: a task completed twice, or a step/item with two task rows.
    report.double_completions = sum(1 for c in completions if c.n > 1)
    per_step = Counter((t["run_id"], t["kind"], t["step"], t["item"]) for t in tasks)
    report.double_completions += sum(n - 1 for n in per_step.values() if n > 1)
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task in tasks:
        by_run[task["run_id"]].append(task)
        if task["status"] in ("completed", "compensated") and task["finished_seq"] is None:
            report.illegal.append(f"task {task['id']} completed without finished_seq")
    for run_id, run in runs.items():
        in_flight = [t for t in by_run[run_id] if t["status"] in ("pending", "processing", "retrying")]
        if run["status"] in TERMINAL and in_flight:
            report.illegal.append(f"run {run_id} is {run['status']} with {len(in_flight)} tasks in flight")
        if run["status"] == "completed":
            bad = [t for t in by_run[run_id] if t["kind"] == "step" and t["status"] not in ("completed", "skipped")]
            if bad:
                report.illegal.append(f"run {run_id} completed with step {bad[0]['step']} {bad[0]['status']}")
    for letter in letters:
        if letter.status != "failed":
            report.illegal.append(f"dead letter of task {letter.task_id}, which is {letter.status}")
    if quiet and outbox:
        report.illegal.append(f"{outbox} messages left in the outbox")
    # The sink: replays and double effects.
    wanted = set(ids)
    requests = [r for r in sink.snapshot() if isinstance(r.body, dict) and r.body.get("run") in wanted]
    report.replays = sum(1 for r in requests if r.replay)
    effects = Counter((r.path, r.body["run"]) for r in requests if not r.replay)
    report.double_effects = sum(n - 1 for (path, _), n in effects.items() if n > 1 and path != "/poison")
    doubled = {(p, run) for (p, run), n in effects.items() if n > 1 and p != "/poison"}
    if doubled:  # which keys, to tell a retry (next attempt) from a redelivery
        keys = sorted(f"{r.path} {r.key}" for r in requests if not r.replay and (r.path, r.body["run"]) in doubled)
        report.extra["double_effect_keys"] = keys
        task_ids = sorted({k.split(" ", 1)[1].rsplit(":", 1)[0] for k in keys})
        with engine.connect() as conn:  # what each attempt of those tasks went through
            rows = conn.execute(sa.text(
                "SELECT task_id, level, message, data FROM task_logs WHERE task_id = ANY(:ids) ORDER BY id"
            ), {"ids": task_ids}).all()
        report.extra["double_effect_logs"] = [f"{r.task_id[:8]} {r.level}: {r.message} {r.data}" for r in rows]
    if chain_paths:
        first: dict[tuple[str, str], float] = {}
        for r in requests:
            if not r.replay:
                first.setdefault((r.path, r.body["run"]), r.at)
        for run_id in ids:
            times = [first.get((p, run_id)) for p in chain_paths]
            known = [t for t in times if t is not None]
            if known != sorted(known):
                report.illegal.append(f"run {run_id}: chain effects out of dependency order")
    return report
